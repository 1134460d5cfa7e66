"""The domain behind both APIs: find a model version, run rows through its batcher, count labels.

Servicers translate protobuf into calls here and results back; nothing here knows gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.domain.batching import BatcherStats, BatchingConfig, DynamicBatcher
from service.errors import InvalidInput, NotFound, Unavailable
from service.loop import claim_quiet
from service.metrics import Metrics
from service.names import NOT_DIGIT, PROBABILITIES, FloatArray, Outputs
from service.store.registry import LoadFailure, ModelVersion, Registry

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


@dataclass(frozen=True, slots=True)
class Admission:
    """A request the engine has room for: its model version, the outputs it asked for, and the
    batcher its rows go to."""

    model: ModelVersion
    outputs: frozenset[str]
    batcher: DynamicBatcher


@dataclass(frozen=True, slots=True)
class Decisions:
    """Per row: the digit, its probability, the margin over the runner-up, the verdict."""

    digits: npt.NDArray[np.intp]
    confidence: FloatArray
    margin: FloatArray
    is_digit: npt.NDArray[np.bool_]


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

    # ---- what the servicers ask: one call admits a request, one awaits its result ----------

    def admit(
        self,
        name: str,
        version: int | str | None,
        count: int,
        outputs: Iterable[str],
        *,
        rows_field: str,
        outputs_field: str,
    ) -> Admission:
        """Everything a request can be refused for before its rows are decoded: the server is
        stopping, no such model, version or output, no rows or too many, a full queue. The
        fields name where in the request the client put what is wrong."""
        model = self.model(name, version)
        self.check_rows(count, rows_field)
        names = list(outputs)
        wanted = frozenset(names)
        if not wanted <= model.outputs.keys():
            known = model.outputs
            for i, output in enumerate(names):
                if output not in known:
                    raise NotFound(
                        f"{outputs_field}[{i}]: model '{model.name}' has no output '{output}' "
                        f"(outputs: {', '.join(known)})"
                    )
        batcher = self.batchers[(model.name, model.version)]
        batcher.check_room(count)
        return Admission(model, wanted, batcher)

    async def run(self, admitted: Admission, rows: FloatArray, deadline: float | None) -> Outputs:
        """Rows [n,1,28,28] float32 → the admitted outputs with n rows (plus `ALWAYS`)."""
        self._inflight += 1
        try:
            result = await admitted.batcher.submit(rows, admitted.outputs | ALWAYS, deadline)
        finally:
            self._inflight -= 1
        self._count(admitted.model, result)
        return result

    def model(self, name: str, version: int | str | None = None) -> ModelVersion:
        if self.draining:
            raise Unavailable("server is shutting down")
        return self.registry.get(name, version)

    def models(self) -> list[ModelVersion]:
        """Every loaded version, by name then version."""
        return list(self.registry.all())

    def newest(self) -> list[ModelVersion]:
        """Each model at its newest version, by name."""
        return [self.registry.get(name) for name in sorted(self.registry.models)]

    def batcher(self, model: ModelVersion) -> DynamicBatcher:
        """The version's batcher itself, for tests and tools that watch it work."""
        return self.batchers[(model.name, model.version)]

    def versions(self, model: ModelVersion) -> list[int]:
        return sorted(self.registry.models[model.name])

    def stats(self, model: ModelVersion) -> BatcherStats:
        return self.batchers[(model.name, model.version)].stats

    @property
    def failures(self) -> list[LoadFailure]:
        return self.registry.failures

    def check_rows(self, count: int, field: str) -> None:
        if count < 1:
            raise InvalidInput(f"{field}: at least one image is required")
        if count > self.max_images:
            raise InvalidInput(
                f"{field}: {count} images exceed the limit of {self.max_images} per request"
            )

    # ---- the label decision, made here only --------------------------------------------------

    def decide(self, model: ModelVersion, result: Outputs) -> Decisions:
        """Each row's digit, its probability, the margin over the runner-up, and whether the
        not-a-digit score is within the model's threshold."""
        probabilities = result[PROBABILITIES]
        top2 = np.sort(probabilities, axis=1)[:, -2:]
        return Decisions(
            digits=probabilities.argmax(axis=1),
            confidence=top2[:, 1],
            margin=top2[:, 1] - top2[:, 0],
            is_digit=result[NOT_DIGIT] <= model.not_digit_threshold,
        )

    def _alone(self) -> bool:
        """One call in the engine, the first since the loop woke, and nothing new since."""
        return self._inflight == 1 and claim_quiet()

    def _count(self, model: ModelVersion, result: Outputs) -> None:
        """The prediction metrics: each row's digit, or `not_digit` past the threshold."""
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
