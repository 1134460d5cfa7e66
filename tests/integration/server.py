"""Start the real server as a subprocess on free ports, the way an operator runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"on gRPC port (\d+), metrics on port (\d+)")


class ServerProcess:
    """`python -m service --grpc-port 0 --metrics-port 0 ...`; ports are read from its log."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> None:
        command = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.grpc_port = self.metrics_port = 0
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log)

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if (match := READY.search(line)) and not self._ready.is_set():
                self.grpc_port, self.metrics_port = int(match[1]), int(match[2])
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

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

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.wait(30)
            finally:
                self.kill()
        return self.process.returncode


def wait_for(condition: object, timeout: float = 10, interval: float = 0.01) -> None:
    """Poll `condition()` until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def inflight(server: ServerProcess, model: str) -> float:
    return scrape(server).get(("digits_inflight_requests", (("model", model),)), 0.0)
