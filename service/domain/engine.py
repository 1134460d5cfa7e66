"""The domain behind both APIs: find a model version, run rows through its batcher, count labels.

Servicers translate protobuf into calls here and results back; nothing here knows gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from service.domain.batching import BatchingConfig, DynamicBatcher
from service.errors import InvalidInput, NotFound, Unavailable
from service.loop import claim_quiet
from service.metrics import Metrics
from service.names import NOT_DIGIT, PROBABILITIES, FloatArray, Outputs
from service.store.registry import ModelVersion, Registry

# Always fetched, whatever the client asked: the prediction metrics need them, and they are small.
ALWAYS = frozenset({PROBABILITIES, NOT_DIGIT})
LABELS = [str(d) for d in range(10)]


@dataclass
class _PrometheusObserver:
    """Feeds one model's batch figures into the Prometheus histograms."""

    metrics: Metrics
    model: str

    def __post_init__(self) -> None:
        self._queue = self.metrics.queue_duration.labels(self.model)
        self._infer = self.metrics.inference_duration.labels(self.model)
        self._size = self.metrics.batch_size.labels(self.model)

    def on_batch(self, size: int, queue_seconds: Sequence[float], infer_seconds: float) -> None:
        for seconds in queue_seconds:
            self._queue.observe(seconds)
        self._infer.observe(infer_seconds)
        self._size.observe(size)


class Engine:
    def __init__(
        self,
        registry: Registry,
        batching: BatchingConfig,
        metrics: Metrics,
        max_images_per_request: int,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.max_images = max_images_per_request
        self.batching = batching
        self.draining = False
        self._inflight = 0  # calls inside `infer`, every model
        self.batchers: dict[tuple[str, int], DynamicBatcher] = {
            (m.name, m.version): DynamicBatcher(
                m.runtime.run,
                batching,
                name=f"{m.name}-v{m.version}",
                observer=_PrometheusObserver(metrics, m.name),
                inline=m.runtime,
                alone=self._alone,
            )
            for m in registry.all()
        }
        self._predictions = {
            name: [metrics.predictions.labels(name, label) for label in [*LABELS, NOT_DIGIT]]
            for name in registry.models
        }

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new work; let queued and running batches finish."""
        self.draining = True
        for batcher in self.batchers.values():
            await batcher.stop(grace)

    @property
    def ready(self) -> bool:
        return not self.draining and bool(self.registry.models)

    def model(self, name: str, version: int | str | None = None) -> ModelVersion:
        if self.draining:
            raise Unavailable("server is shutting down")
        return self.registry.get(name, version)

    def batcher(self, model: ModelVersion) -> DynamicBatcher:
        return self.batchers[(model.name, model.version)]

    def check_outputs(self, model: ModelVersion, names: Iterable[str], field: str) -> None:
        known = model.outputs
        for i, name in enumerate(names):
            if name not in known:
                raise NotFound(
                    f"{field}[{i}]: model '{model.name}' has no output '{name}' "
                    f"(outputs: {', '.join(known)})"
                )

    def check_rows(self, count: int, field: str) -> None:
        if count < 1:
            raise InvalidInput(f"{field}: at least one image is required")
        if count > self.max_images:
            raise InvalidInput(
                f"{field}: {count} images exceed the limit of {self.max_images} per request"
            )

    def check_room(self, model: ModelVersion, count: int) -> None:
        """Refuse now (QueueFull, Unavailable) what the queue cannot take, before decoding."""
        self.batcher(model).check_room(count)

    async def infer(
        self,
        model: ModelVersion,
        rows: FloatArray,
        outputs: frozenset[str],
        deadline: float | None,
    ) -> Outputs:
        """Rows [n,1,28,28] float32 → the named outputs with n rows (plus `ALWAYS`)."""
        self._inflight += 1
        try:
            result = await self.batcher(model).submit(rows, outputs | ALWAYS, deadline)
        finally:
            self._inflight -= 1
        self._count(model, result)
        return result

    def _alone(self) -> bool:
        """One call in the engine, the first since the loop woke, and nothing new since."""
        return self._inflight == 1 and claim_quiet()

    def _count(self, model: ModelVersion, result: Outputs) -> None:
        counters = self._predictions[model.name]
        probabilities, not_digit = result[PROBABILITIES], result[NOT_DIGIT]
        threshold = model.not_digit_threshold
        if len(probabilities) == 1:  # the common case, without numpy's per-call overhead
            label = 10 if not_digit[0] > threshold else int(probabilities[0].argmax())
            counters[label].inc()
            return
        labels = probabilities.argmax(axis=1)
        labels[not_digit > threshold] = 10
        counts = np.bincount(labels, minlength=11)
        for index in np.flatnonzero(counts):
            counters[index].inc(int(counts[index]))
