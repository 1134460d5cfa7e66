"""The real server as a child process on free ports, the way an operator (or the load test) runs
it; built on the load test's `LocalServer`, so both start it the same way."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from service.loadtest import server as loadtest_server
from service.loadtest.server import LocalServer, Samples

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess(LocalServer):
    """`python -m service --grpc-port 0 --metrics-port 0 ARGS...` on the committed model store."""

    def __init__(self, *args: str, timeout: float = 60) -> None:
        super().__init__(ROOT / "model_store", args, start_timeout=timeout)

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
