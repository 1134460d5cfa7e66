"""A server to drive (started here on free ports, or one already running) and its /metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

READY = re.compile(r"on gRPC port (\d+), (?:HTTP port (\d+), )?metrics on port (\d+)")
# Every sample of /metrics, keyed by (name, sorted labels).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class ServerError(RuntimeError):
    """The local server did not start, or the target does not answer."""


class LocalServer:
    """`python -m service --host 127.0.0.1 --grpc-port 0 --http-port 0 --metrics-port 0 ...` as a
    child; `http_port` is 0 when the arguments turn HTTP off.

    It runs in its own session, so a Ctrl-C at the terminal reaches only the load test, which
    then ends its phase cleanly and stops the server itself (SIGTERM, then SIGKILL).
    """

    def __init__(
        self,
        model_store: Path,
        args: Sequence[str] = (),
        start_timeout: float = 120,
        checkout: Path | None = None,
    ) -> None:
        """`checkout`: run the `service` package of that directory (another commit's worktree,
        for an A/B run) instead of the installed one."""
        command = [
            sys.executable,
            "-m",
            "service",
            "--model-store",
            str(model_store),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--metrics-port",
            "0",
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=checkout,
        )
        self.lines: list[str] = []
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            started = self._ready.wait(start_timeout) and self.grpc_port
        except BaseException:  # Ctrl-C while it starts: it must not outlive us
            self.stop()
            raise
        if not started:
            self.stop()
            raise ServerError("the server did not start:\n" + "".join(self.lines[-20:]))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if (match := READY.search(line)) and not self._ready.is_set():
                self.grpc_port, self.metrics_port = int(match[1]), int(match[3])
                self.http_port = int(match[2] or 0)
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_metrics_url(target: str, port: int = 8002) -> str:
    """The metrics port beside a target's gRPC port; `make serve` uses 8001 and 8002."""
    host = target.rsplit(":", 1)[0]
    return f"http://{host}:{port}/metrics"


def scrape(url: str, timeout: float = 5) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def try_scrape(url: str | None) -> Samples | None:
    """None when there is no /metrics to read: the report then says so instead of failing."""
    if url is None:
        return None
    try:
        return scrape(url)
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass
class ServerFigures:
    """What the server saw during one phase: differences of its counters and histograms."""

    batches: int
    mean_batch_size: float | None
    queue_ms_mean: float | None
    inference_ms_mean: float | None
    request_ms_mean: float | None
    requests: dict[str, int] = field(default_factory=dict)


def _delta(before: Samples, after: Samples, name: str, labels: dict[str, str]) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _mean(
    before: Samples, after: Samples, name: str, labels: dict[str, str], scale: float
) -> float | None:
    count = _delta(before, after, f"{name}_count", labels)
    return _delta(before, after, f"{name}_sum", labels) / count * scale if count > 0 else None


def server_figures(before: Samples, after: Samples, model: str, api: str) -> ServerFigures:
    """Means over the phase. Batches are per model: they include every API's images."""
    by_model = {"model": model}
    codes = sorted(
        {
            dict(labels)["code"]
            for name, labels in after
            if name == "digits_requests_total"
            and dict(labels).get("model") == model
            and dict(labels).get("api") == api
        }
    )
    requests = {
        code: round(
            _delta(before, after, "digits_requests_total", {**by_model, "api": api, "code": code})
        )
        for code in codes
    }
    return ServerFigures(
        batches=round(_delta(before, after, "digits_batch_size_count", by_model)),
        mean_batch_size=_mean(before, after, "digits_batch_size", by_model, 1.0),
        queue_ms_mean=_mean(before, after, "digits_queue_duration_seconds", by_model, 1e3),
        inference_ms_mean=_mean(before, after, "digits_inference_duration_seconds", by_model, 1e3),
        request_ms_mean=_mean(
            before, after, "digits_request_duration_seconds", {**by_model, "api": api}, 1e3
        ),
        requests={code: n for code, n in requests.items() if n},
    )
