"""The closing gate holds late calls until gRPC's shutdown has begun, then refuses them."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.errors import Unavailable
from service.transport.closing import ClosingGate


def test_a_held_call_is_refused_only_once_released() -> None:
    async def scenario() -> None:
        gate = ClosingGate(quiet=0.01)
        settling = asyncio.ensure_future(gate.settle())
        await asyncio.sleep(0)
        assert gate.closing
        held = asyncio.ensure_future(gate.hold())
        await asyncio.sleep(0.05)
        assert not held.done() and gate.held == 1
        await settling
        gate.release()
        with pytest.raises(Unavailable, match="shutting down"):
            await held
        assert gate.held == 0

    asyncio.run(scenario())


def test_settle_waits_for_a_quiet_moment_after_the_last_arrival() -> None:
    async def scenario() -> tuple[float, float]:
        gate = ClosingGate(quiet=0.05, limit=5)
        started = time.monotonic()
        settling = asyncio.ensure_future(gate.settle())
        held = []
        for _ in range(4):  # arrivals 30 ms apart keep it from settling
            await asyncio.sleep(0.03)
            held.append(asyncio.ensure_future(gate.hold()))
        await asyncio.sleep(0)
        last = time.monotonic()
        await settling
        gate.release()
        await asyncio.gather(*held, return_exceptions=True)
        return last - started, time.monotonic() - last

    until_last, after_last = asyncio.run(scenario())
    assert until_last >= 0.12
    assert 0.04 <= after_last < 1.0


def test_settle_gives_up_at_its_limit_when_arrivals_never_stop() -> None:
    async def scenario() -> float:
        gate = ClosingGate(quiet=0.05, limit=0.2)
        started = time.monotonic()
        settling = asyncio.ensure_future(gate.settle())
        held = []
        while not settling.done():
            held.append(asyncio.ensure_future(gate.hold()))
            await asyncio.sleep(0.01)
        gate.release()
        await asyncio.gather(*held, return_exceptions=True)
        return time.monotonic() - started

    assert 0.19 <= asyncio.run(scenario()) < 1.0
