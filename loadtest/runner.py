"""The two loops, with grpc.aio on one channel, each phase bounded in time.

Closed loop: `concurrency` workers, each sends a request, waits for the answer, sends the next;
the offered load adapts to the server's speed, which gives throughput. Open loop: requests leave
at Poisson arrival times at `rate` per second whatever the server does, which gives latency under
a given load. Its latency is measured from the scheduled arrival, so a client that falls behind
shows up as latency instead of being hidden (coordinated omission). Outstanding requests are
capped; an arrival beyond the cap is not sent and is counted as `client_overload`.

At a phase's time limit (plus a short grace for answers on their way) or on Ctrl-C, what is
still in flight is cancelled and counted as `cancelled`, not as an error.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import grpc
import numpy as np
from digits_client._proto.digits.v1 import digits_pb2_grpc
from digits_client._proto.inference import grpc_service_pb2_grpc as v2_grpc

from loadtest.server import ServerFigures
from loadtest.workload import Api

Mode = Literal["closed", "open"]
Call = Callable[..., Awaitable[Any]]
# Answers already on their way when a phase ends get this long before they are cancelled.
GRACE_S = 1.0
PROGRESS_INTERVAL_S = 0.2
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Phase:
    model: str
    api: Api
    mode: Mode
    concurrency: int | None = None
    rate: float | None = None

    @property
    def load(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"{self.rate:g}/s"

    @property
    def label(self) -> str:
        return f"{self.model} {self.api} {self.mode} {self.load}"


@dataclass
class PhaseResult:
    phase: Phase
    batch_size: int
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)  # OK answers only
    codes: Counter[str] = field(default_factory=Counter)  # every answer, OK included
    client_overload: int = 0
    cancelled: int = 0
    interrupted: bool = False
    server: ServerFigures | None = None

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    @property
    def ok(self) -> int:
        return self.codes["OK"]

    @property
    def unexpected(self) -> dict[str, int]:
        """Codes that fail the run. Under the open loop a full queue is the server shedding load
        as documented; under the closed loop the client bounds what is queued, so it is not."""
        expected = {"OK"} | ({"RESOURCE_EXHAUSTED"} if self.phase.mode == "open" else set())
        return {code: n for code, n in self.codes.items() if code not in expected}


def open_channel(target: str, own_connection: bool = False) -> grpc.aio.Channel:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if own_connection:
        # grpc shares one TCP connection among channels to a target unless told not to; a
        # server with --workers spreads connections, not calls, over its processes.
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(target, options=options)


def rpc(channel: grpc.aio.Channel, api: Api) -> Call:
    if api == "v2":
        return v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    return digits_pb2_grpc.DigitsStub(channel).Classify


class Progress:
    """A one-line `\\r` bar on a terminal; elsewhere one line per finished phase."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.live = stream.isatty()
        self.index = 0

    def tick(self, result: PhaseResult, elapsed: float, duration: float) -> None:
        if not self.live:
            return
        done = min(1.0, elapsed / duration) if duration > 0 else 1.0
        bar = "#" * round(done * 20)
        rate = result.requests / elapsed if elapsed > 0 else 0.0
        errors = result.requests - result.ok
        line = (
            f"\r[{self.index}/{self.total}] {result.phase.label:<28} [{bar:<20}] "
            f"{min(elapsed, duration):4.1f}/{duration:g}s {result.requests:>7} req "
            f"{rate:>7.0f}/s  not OK {errors}"
        )
        self.stream.write(line + "\x1b[K")
        self.stream.flush()

    def done(self, result: PhaseResult) -> None:
        p50 = np.percentile(result.latencies_s, 50) * 1e3 if result.latencies_s else float("nan")
        rate = result.ok / result.duration_s if result.duration_s > 0 else 0.0
        line = (
            f"[{self.index}/{self.total}] {result.phase.label:<28} {result.requests:>7} req "
            f"{rate:>7.0f} ok/s  p50 {p50:.2f} ms  not OK {result.requests - result.ok}"
        )
        self.stream.write(("\r" + line + "\x1b[K\n") if self.live else line + "\n")
        self.stream.flush()


class Runner:
    """Runs phases over its channels (calls take turns on them); `stop` (set on Ctrl-C) ends
    the current phase early."""

    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        stop: asyncio.Event,
        progress: Progress,
        duration_s: float,
        timeout_s: float,
        max_outstanding: int,
        seed: int = 0,
    ) -> None:
        self.channels = channels
        self.stop = stop
        self.progress = progress
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.max_outstanding = max_outstanding
        self.rng = np.random.default_rng(seed)

    async def run(self, phase: Phase, requests: Iterator[Any], batch_size: int) -> PhaseResult:
        result = PhaseResult(phase, batch_size)
        calls = [rpc(channel, phase.api) for channel in self.channels]
        started = time.monotonic()
        end = started + self.duration_s
        ticker = asyncio.create_task(self._tick(result, started))
        try:
            if phase.mode == "closed":
                assert phase.concurrency is not None
                await self._closed(calls, requests, phase.concurrency, end, result)
            else:
                assert phase.rate is not None
                await self._open(calls, requests, phase.rate, end, result)
        finally:
            ticker.cancel()
            result.duration_s = time.monotonic() - started
            result.interrupted = self.stop.is_set()
        return result

    async def _tick(self, result: PhaseResult, started: float) -> None:
        while True:
            self.progress.tick(result, time.monotonic() - started, self.duration_s)
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def _one(self, call: Call, request: Any, sent: float, result: PhaseResult) -> None:
        try:
            await call(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            result.codes[exc.code().name] += 1
        except asyncio.CancelledError:
            result.cancelled += 1
            raise
        else:
            result.latencies_s.append(time.monotonic() - sent)
            result.codes["OK"] += 1

    async def _closed(
        self,
        calls: list[Call],
        requests: Iterator[Any],
        concurrency: int,
        end: float,
        result: PhaseResult,
    ) -> None:
        async def worker(call: Call) -> None:
            while time.monotonic() < end and not self.stop.is_set():
                await self._one(call, next(requests), time.monotonic(), result)

        workers = {asyncio.create_task(worker(calls[i % len(calls)])) for i in range(concurrency)}
        await self._settle(workers, end)

    async def _open(
        self,
        calls: list[Call],
        requests: Iterator[Any],
        rate: float,
        end: float,
        result: PhaseResult,
    ) -> None:
        inflight: set[asyncio.Task[None]] = set()
        turns = itertools.cycle(calls)
        arrival = time.monotonic()
        while not self.stop.is_set():
            arrival += float(self.rng.exponential(1.0 / rate))
            if arrival >= end:
                break
            if await self._sleep_until(arrival):
                break
            if len(inflight) >= self.max_outstanding:
                result.client_overload += 1
                continue
            task = asyncio.create_task(self._one(next(turns), next(requests), arrival, result))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        await self._settle(set(inflight), end)

    async def _sleep_until(self, when: float) -> bool:
        """Sleep in short steps so Ctrl-C is seen at once even at a low rate; True if stopped."""
        while (left := when - time.monotonic()) > 0 and not self.stop.is_set():
            await asyncio.sleep(min(left, 0.1))
        return self.stop.is_set()

    async def _settle(self, tasks: set[asyncio.Task[None]], end: float) -> None:
        """Wait for `tasks` until the phase's limit or Ctrl-C, then cancel the rest."""
        stopped = asyncio.create_task(self.stop.wait())
        try:
            while tasks and not self.stop.is_set():
                left = end + GRACE_S - time.monotonic()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(
                    {*tasks, stopped}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                tasks -= done
        finally:
            stopped.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
