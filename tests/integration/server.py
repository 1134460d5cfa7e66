"""The real server as a child process on free ports, the way an operator (or the load test) runs
it; built on the load test's `LocalServer`, so both start it the same way."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt

from loadtest import server as loadtest_server
from loadtest.server import LocalServer, Samples
from service._proto.inference import grpc_service_pb2 as v2

ROOT = Path(__file__).resolve().parents[2]
# Distinct connections: grpc shares one between channels to the same target unless told not to.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class ServerProcess(LocalServer):
    """`python -m service --grpc-port 0 --http-port 0 --metrics-port 0 ARGS...` on the committed
    model store (or `store`)."""

    def __init__(
        self,
        *args: str,
        timeout: float = 60,
        store: Path = ROOT / "model_store",
        checkout: Path | None = None,
    ) -> None:
        super().__init__(store, args, start_timeout=timeout, checkout=checkout)

    @property
    def address(self) -> str:
        return self.target

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def scrape(server: ServerProcess) -> Samples:
    """Every sample of the server's /metrics, keyed by (name, sorted labels)."""
    return loadtest_server.scrape(server.metrics_url)


def inflight(server: ServerProcess, model: str) -> float:
    return scrape(server).get(("digits_inflight_requests", (("model", model),)), 0.0)


def wait_for(condition: Callable[[], bool], timeout: float = 10, interval: float = 0.01) -> None:
    """Poll `condition()` until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


# Batches of one image, each handed to the model's thread, and a long grace: the work lasts, so
# a signal lands while it is in flight, and all of it can finish.
SLOW_DRAIN = (
    "--max-batch-size", "1", "--max-inline-cost-us", "0", "--max-lone-inline-cost-us", "0",
    "--max-queue-size", "100000", "--max-images-per-request", "1000", "--grace-period-s", "60",
)  # fmt: skip


async def sigterm_when_in_flight(
    server: ServerProcess, model: str, wanted: int, at_least: int
) -> float:
    """SIGTERM once `wanted` requests are in flight, or once at least `at_least` are and the
    count has begun to fall (a loaded machine may answer the first before the last arrive);
    returns how many were in flight."""
    # The scrape is a blocking HTTP call: made on this loop it would starve the calls this loop
    # is still sending (on a loaded machine, most of every 10 ms went to the scrape).
    deadline = time.monotonic() + 30
    polls, peak = 0, 0.0
    while True:
        accepted = await asyncio.to_thread(inflight, server, model)
        polls, peak = polls + 1, max(peak, accepted)
        if accepted >= wanted or at_least <= accepted < peak or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert accepted >= at_least, f"not in flight: at most {peak} in {polls} polls"
    server.signal(signal.SIGTERM)
    return accepted


def assert_drained(
    results: list[object], accepted: float, expected: npt.NDArray[np.float32]
) -> None:
    """Every request in flight at the signal is answered in full (`expected` probabilities);
    any that had not reached the server yet is refused as new work, with UNAVAILABLE."""
    answered = [r for r in results if isinstance(r, v2.ModelInferResponse)]
    assert len(answered) >= accepted
    for response in answered:
        got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    for refused in (r for r in results if not isinstance(r, v2.ModelInferResponse)):
        assert isinstance(refused, grpc.aio.AioRpcError), refused
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
