"""Prometheus collectors, registered on a registry the caller owns (one per server, or per test)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Request latency: from 100 µs (the mlp in-process) to 10 s (a deep queue under overload).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Children(dict[Any, Any]):
    """A metric's label children by their label values (a tuple for several), each made on
    first use and kept: `labels()` costs more than the update itself."""

    def __init__(self, labels: Callable[..., Any]) -> None:
        super().__init__()
        self._labels = labels

    def __missing__(self, key: Any) -> Any:
        child = self[key] = self._labels(*key) if isinstance(key, tuple) else self._labels(key)
        return child


def _version(*dists: str) -> str:
    """The first of these distributions that is installed (the CPU image has onnxruntime)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "digits_requests",
            "Requests answered, by model, API and gRPC status code.",
            ["model", "api", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "digits_request_duration_seconds",
            "Time from request received to answer sent.",
            ["model", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "digits_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "digits_inference_duration_seconds",
            "Time the runtime took for one batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "digits_batch_size",
            "Images in each batch given to the runtime.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "digits_inflight_requests",
            "Requests received and not yet answered.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",  # with --workers: the sum over live workers
        )
        self.predictions = Counter(
            "digits_predictions",
            "Images classified, by predicted label or not_digit.",
            ["model", "label"],
            registry=r,
        )
        self.model_loads = Counter(
            "digits_model_loads",
            "Model versions loaded and put into service (at start and at run time).",
            ["model", "version"],
            registry=r,
        )
        self.model_load_failures = Counter(
            "digits_model_load_failures",
            "Model versions that failed to load (the log and RepositoryIndex say why).",
            ["model", "version"],
            registry=r,
        )
        self.model_unloads = Counter(
            "digits_model_unloads",
            "Model versions taken out of service (replaced, removed or unloaded).",
            ["model", "version"],
            registry=r,
        )
        self.versions_loaded = Gauge(
            "digits_model_versions_loaded",
            "Versions of each model in service now.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.build_info = Gauge(
            "digits_build_info",
            "Versions this server runs with (value is always 1).",
            ["version", "onnxruntime", "grpcio", "python"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(
            _version("digits-serving"),
            _version("onnxruntime-gpu", "onnxruntime"),
            _version("grpcio"),
            platform.python_version(),
        ).set(1)


def serve_metrics(metrics: Metrics, host: str, port: int) -> tuple[object, int]:
    """Start `/metrics` on a daemon thread; returns the server (to shut down) and its port."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, int(server.server_address[1])
