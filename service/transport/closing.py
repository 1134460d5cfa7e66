"""The last moments before the gRPC server stops: every call that arrives ends UNAVAILABLE.

gRPC core cancels the calls it has received but not yet handed to a handler when its shutdown
begins, and clients see CANCELLED (grpc/grpc#41785), which retry policies do not retry. Under
load such calls always exist: they queue in core while the event loop is busy. So the server
does not start gRPC's shutdown while clients are still sending. After the drain it *holds*
every new call in its handler instead of answering it: a closed-loop client whose call is held
sends nothing more, and once no call has arrived for `quiet` seconds, core's queue is empty.
Then the shutdown starts (core sends GOAWAY, so further calls are refused and end UNAVAILABLE
on the client) and the held calls are answered UNAVAILABLE, inside the shutdown's grace.

    gate = ClosingGate()
    await gate.hold()         # in a handler, once gate.closing: waits, then raises Unavailable
    await gate.settle()       # the server: close, then wait until the arrivals stop
    gate.release()            # once gRPC's shutdown has begun
"""

from __future__ import annotations

import asyncio
import time

from service.errors import Unavailable

MESSAGE = "server is shutting down"


class ClosingGate:
    def __init__(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        self.quiet = quiet  # no arrival for this long: core has nothing queued
        self.limit = limit  # open-loop traffic never pauses: stop waiting after this long
        self.closing = False
        self.held = 0
        self._last_arrival = 0.0
        self._released = asyncio.Event()

    async def hold(self) -> None:
        """Wait until the shutdown has begun, then refuse: raises `Unavailable` always."""
        self._last_arrival = time.monotonic()
        self.held += 1
        try:
            await self._released.wait()
        finally:
            self.held -= 1
        raise Unavailable(MESSAGE)

    async def settle(self, limit: float | None = None) -> None:
        """Start holding calls; return once none has arrived for `quiet` s (or after `limit`)."""
        self.closing = True
        self._last_arrival = now = time.monotonic()
        deadline = now + (self.limit if limit is None else min(limit, self.limit))
        while True:
            now = time.monotonic()
            quiet_until = self._last_arrival + self.quiet
            if now >= quiet_until or now >= deadline:
                return
            await asyncio.sleep(min(quiet_until, deadline) - now)

    def release(self) -> None:
        self._released.set()
