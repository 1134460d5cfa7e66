"""The domain behind both APIs: find a model version, run rows through its batcher, count labels.

Servicers translate protobuf into calls here and results back; nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.domain.batch_types import BatcherStats, BatchingConfig
from service.domain.batching import DynamicBatcher
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


class Admission:
    """A request the engine has room for: its model version, the outputs it asked for, and the
    batcher its rows go to. Used as `with engine.admit(...) as admitted:`, it holds the version
    until the call is done: a version retired meanwhile (a reload) finishes it first."""

    __slots__ = ("_release", "batcher", "model", "outputs")

    def __init__(
        self,
        model: ModelVersion,
        outputs: frozenset[str],
        batcher: DynamicBatcher,
        release: Callable[[ModelVersion], None],
    ) -> None:
        self.model, self.outputs, self.batcher, self._release = model, outputs, batcher, release

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release(self.model)


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
        self.ready_when_empty = False  # explicit model control: ready before any model loads
        # Every model name served since the start: the values the `model` metric label takes.
        self.known_models: set[str] = set(registry.models)
        self._inflight = 0  # calls inside `infer`, every model
        self._started = False
        self.batchers = {m: self._batcher_for(m) for m in registry.all()}
        self._holds: Counter[ModelVersion] = Counter()  # admissions not yet done, per version
        self._released: dict[ModelVersion, asyncio.Event] = {}  # set when a retiree's hit 0
        self._retiring: set[asyncio.Task[None]] = set()
        self._predictions: dict[str, list[Any]] = {}

    def _batcher_for(self, model: ModelVersion) -> DynamicBatcher:
        return DynamicBatcher(
            model.runtime.run,
            self.batching,
            name=f"{model.name}-v{model.version}",
            observer=_PrometheusObserver(self.metrics, model.name),
            inline=model.runtime,
            alone=self._alone,
        )

    def start(self) -> None:
        self._started = True
        for batcher in self.batchers.values():
            batcher.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new work; let queued and running batches finish."""
        self.draining = True
        for batcher in list(self.batchers.values()):
            await batcher.stop(grace)
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=grace)

    # ---- the versions served change only here (`service.domain.lifecycle` calls) ------------

    def publish(self, name: str, versions: dict[int, ModelVersion], grace: float) -> None:
        """Serve exactly `versions` of `name` from now on, in one step: their batchers start
        first, then the registry switches. A version no longer served finishes the calls that
        hold it and its queue (for up to `grace` seconds) before its batcher stops."""
        old = self.registry.models.get(name, {})
        for model in versions.values():
            if model not in self.batchers:
                batcher = self.batchers[model] = self._batcher_for(model)
                if self._started:
                    batcher.start()
        self.known_models.add(name)
        self.registry.replace(name, versions)
        for model in old.values():
            if versions.get(model.version) is not model:
                task = asyncio.get_running_loop().create_task(self._retire(model, grace))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)

    async def _retire(self, model: ModelVersion, grace: float) -> None:
        if self._holds[model]:
            released = self._released[model] = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), grace)
            self._released.pop(model, None)
        batcher = self.batchers.pop(model)
        await batcher.stop(grace)

    def _release(self, model: ModelVersion) -> None:
        holds = self._holds
        holds[model] -= 1
        if not holds[model]:
            del holds[model]
            released = self._released.get(model)
            if released is not None:
                released.set()

    @property
    def ready(self) -> bool:
        return not self.draining and (bool(self.registry.models) or self.ready_when_empty)

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
        batcher = self.batchers[model]
        batcher.check_room(count)
        self._holds[model] += 1
        return Admission(model, wanted, batcher, self._release)

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
        return self.batchers[model]

    def versions(self, model: ModelVersion) -> list[int]:
        return sorted(self.registry.models.get(model.name, {}))

    def stats(self, model: ModelVersion) -> BatcherStats:
        batcher = self.batchers.get(model)
        return batcher.stats if batcher is not None else BatcherStats()

    @property
    def failures(self) -> list[LoadFailure]:
        return list(self.registry.failures.values())

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
        counters = self._predictions.get(model.name)
        if counters is None:
            counters = self._predictions[model.name] = [
                self.metrics.predictions.labels(model.name, label) for label in [*LABELS, NOT_DIGIT]
            ]
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
