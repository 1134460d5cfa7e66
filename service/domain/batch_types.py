"""What a dynamic batcher is told and what it tells: its settings, its counters, the observer
that hears of every batch, and the two faces of the runtime it calls (`Infer` on the model's
thread, `InlineRuntime` on the event loop). The batcher itself is `service.domain.batching`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.domain.inline import Interrupt
from service.names import FloatArray

Infer = Callable[[FloatArray, frozenset[str]], Mapping[str, FloatArray]]
"""The runtime: a float32 batch [n, 1, 28, 28] and the output names wanted → each with n rows,
in fresh arrays (callers get them or slices of them, so they must not be reused buffers)."""


class InlineRuntime(Protocol):
    """A runtime that can also run on the event loop's thread, interruptibly."""

    def interrupt(self) -> Interrupt:
        """A fresh flag for one run."""

    def run_inline(
        self, batch: FloatArray, outputs: frozenset[str], interrupt: Interrupt, cheap: bool
    ) -> Mapping[str, FloatArray]:
        """As `Infer`; raises soon after `interrupt.terminate` is set. `cheap`: the batch costs
        less than waking another thread (else it is a lone request's)."""


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    """Most rows given to the model in one call; a larger request is split across batches."""
    max_queue_delay: float = 0.0
    """Seconds a batch may wait to fill, from its oldest request; 0 runs what is queued at once."""
    max_queue_size: int = 1024
    """Most rows waiting; a request that would exceed it fails at once with QueueFull."""
    max_inline_cost: float = 0.0
    """Seconds: a batch predicted to cost at most this runs on the event loop, not the model's
    thread (0: never). Needs an interruptible runtime."""
    max_lone_inline_cost: float = 0.0
    """Seconds: the same for a batch that is one request alone on a quiet server (nothing else
    to do; see `alone`), which waits for nobody while it runs on the loop."""
    inline_limit: float = 0.01
    """Seconds an inline run may take before the watchdog interrupts it; it then reruns on the
    model's thread."""

    def __post_init__(self) -> None:
        if (
            self.max_batch_size < 1
            or self.max_queue_size < 1
            or min(
                self.max_queue_delay,
                self.max_inline_cost,
                self.max_lone_inline_cost,
                self.inline_limit,
            )
            < 0
        ):
            raise ValueError(f"invalid batching config: {self}")


class BatchObserver(Protocol):
    """Told about every batch the model ran; e.g. the Prometheus histograms implement this."""

    def on_batch(self, size: int, queue_seconds: Sequence[float], infer_seconds: float) -> None:
        """`size` rows ran in `infer_seconds` (failed or not); `queue_seconds` has one entry per
        request whose first rows are in this batch: its enqueue → this batch's start."""


class NullObserver:
    def on_batch(self, size: int, queue_seconds: Sequence[float], infer_seconds: float) -> None:
        pass


@dataclass
class BatcherStats:
    """Cumulative counters, the raw material of Triton's ModelStatistics."""

    requests_succeeded: int = 0
    requests_failed: int = 0  # the model failed on their batch
    requests_expired: int = 0  # deadline passed before their rows ran
    requests_cancelled: int = 0  # the caller went away
    requests_rejected: int = 0  # QueueFull
    rows_inferred: int = 0  # Triton's inference_count
    batches_executed: int = 0  # Triton's execution_count
    batches_inline: int = 0  # of those, run on the event loop
    inline_interrupted: int = 0  # inline runs the watchdog cut short (then run on the thread)
    queue_ns: int = 0  # summed over requests, enqueue → first batch start
    compute_ns: int = 0  # summed over batches, time inside `infer`
    last_inference_ms: int = 0  # wall clock (ms since the epoch) of the last batch's end
