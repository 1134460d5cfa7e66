"""Dynamic batcher, one per model, in Triton's words: max batch size, queue delay, queue size.

Requests queue their rows; batches of at most `max_batch_size` rows run the blocking `infer`
one at a time: a loop task starts one when work finds the runtime idle, and a finished batch
starts the next itself. A batch runs on the model's worker thread, or on the event loop when it
is predicted to cost less than the hand-off would (`service.domain.inline`). Each request gets back
exactly its own rows of exactly the outputs it asked for. Nothing here knows gRPC or ONNX; its
settings, counters and the runtime it calls are typed in `service.domain.batch_types`.

Longer than the project's other modules on purpose: the queue, the launch, the two places a
batch runs and the delivery share one set of invariants (each request's rows are counted once,
answered once, and dropped when its caller goes), which read best in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.domain.batch_types import (
    BatcherStats,
    BatchingConfig,
    BatchObserver,
    Infer,
    InlineRuntime,
    NullObserver,
)
from service.domain.inline import WATCHDOG, CostModel, Interrupt, Watchdog
from service.errors import DeadlineExceeded, InvalidInput, ModelFailed, QueueFull, Unavailable
from service.names import FloatArray, Outputs

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Request:
    rows: FloatArray
    outputs: frozenset[str]
    deadline: float | None
    future: asyncio.Future[Outputs]
    enqueued: float
    taken: int = 0  # rows already placed in a batch
    # When split: (first row, outputs) of the parts answered so far, in whatever order the
    # batches end (a chained inline batch is answered before the one that chained it).
    parts: list[tuple[int, Outputs]] | None = None
    answered: int = 0  # rows of those parts


# (request, first row of the request, row count) for each slice of a batch, in batch order.
_Segment = tuple[_Request, int, int]
_Outcome = tuple[Mapping[str, FloatArray] | Exception, float]


@dataclass(slots=True, eq=False)
class _Batch:
    segments: list[_Segment]
    size: int
    waits: list[float]  # queue seconds of the requests whose first rows are in this batch


class DynamicBatcher:
    def __init__(
        self,
        infer: Infer,
        config: BatchingConfig | None = None,
        *,
        name: str = "model",
        observer: BatchObserver | None = None,
        executor: ThreadPoolExecutor | None = None,
        row_shape: tuple[int, ...] = (1, 28, 28),
        inline: InlineRuntime | None = None,
        alone: Callable[[], bool] = lambda: False,
        watchdog: Watchdog = WATCHDOG,
    ) -> None:
        """Without `inline`, or with both inline costs 0, every batch runs on the worker
        thread. `alone()`: whether the server has nothing to do but the request at hand."""
        self.name = name
        self.config = config or BatchingConfig()
        self._infer = infer
        self._observer: BatchObserver = observer or NullObserver()
        self._own_executor = executor is None
        # One thread: the model runs one batch at a time, in queue order.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._row_shape = row_shape
        self._shape_error = f"image: expected float32 [N>0,{','.join(map(str, row_shape))}]"
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # untaken rows of live requests in `_queue`
        self._wake = asyncio.Event()
        self._accepting = False
        self._closed = "model is not ready"  # what `submit` answers while not accepting
        self._task: asyncio.Task[None] | None = None
        self._running: _Batch | None = None  # on the worker thread; its callers fail on abort
        self._stats = BatcherStats()
        inline_cost = max(self.config.max_inline_cost, self.config.max_lone_inline_cost)
        self._inline = inline if inline_cost > 0 else None
        self._alone = alone
        self._costs = CostModel()
        self._watchdog = watchdog
        self._watch = watchdog.watch() if self._inline else None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def stats(self) -> BatcherStats:
        return dataclasses.replace(self._stats)

    def start(self) -> None:
        """Spawn the batching loop on the running event loop; `submit` works from then on."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)
            self._accepting, self._closed = True, "server is shutting down"

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new requests, finish queued and running ones (at most `grace` seconds, then
        fail the rest with Unavailable), end the loop."""
        self._accepting = False
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._own_executor:
            self._executor.shutdown(wait=False)  # a batch still on the thread may finish alone
        if self._watch is not None:
            self._watchdog.forget(self._watch)

    def check_room(self, n: int) -> None:
        """Raise what `submit` would for `n` more rows, without queueing: lets callers refuse
        a request before paying for its decoding."""
        if not self._accepting:
            raise Unavailable(self._closed)
        if self._queued_rows + n > self.config.max_queue_size:
            self._stats.requests_rejected += 1
            raise QueueFull(f"queue of model {self.name} is full")

    async def submit(
        self, rows: FloatArray, outputs: frozenset[str], deadline: float | None = None
    ) -> Outputs:
        """Run `rows` [n, *row_shape] through the model; returns `outputs`, each with n rows.

        `deadline` is in `time.monotonic()` seconds. Raises QueueFull, DeadlineExceeded,
        ModelFailed, Unavailable or InvalidInput; cancelling the caller drops its queued rows.
        """
        if not self._accepting:
            raise Unavailable(self._closed)
        n = rows.shape[0] if rows.ndim else 0
        if n == 0 or rows.shape[1:] != self._row_shape or rows.dtype != np.float32:
            raise InvalidInput(self._shape_error)
        if not outputs:
            raise InvalidInput("outputs: ask for at least one output")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            self._stats.requests_expired += 1
            raise DeadlineExceeded("deadline exceeded before the request was queued")
        self.check_room(n)
        queued = self._queued_rows
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        request = _Request(rows, outputs, deadline, future, now)
        self._queue.append(request)
        self._queued_rows = queued + n
        # While a batch runs, its end starts the next one (`_finished`). A request alone on an
        # idle server starts its batch here: nothing could join it, and a batch run on the loop
        # answers it before the await, two turns of the loop sooner. Otherwise wake the loop
        # rather than launch from here: it runs after the other calls that arrived in this turn
        # of the event loop have queued, so they share the batch.
        if self._running is None:
            if queued == 0 and self._inline is not None and self._alone():
                self._launch(alone=True)
            elif queued == 0 or queued + n >= self.config.max_batch_size:
                self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            # Task.cancel() cancelled `future` too, so the loop skips it; free its queue space now.
            self._release(request)
            self._stats.requests_cancelled += 1
            raise

    def _release(self, request: _Request) -> None:
        """Take the request's untaken rows out of the queue count; idempotent."""
        self._queued_rows -= request.rows.shape[0] - request.taken
        request.taken = request.rows.shape[0]

    def _fail(self, request: _Request, exc: Exception) -> None:
        self._release(request)
        if not request.future.done():
            request.future.set_exception(exc)

    async def _run(self) -> None:
        # What the requests still queued or running hear if the loop ends before they ran: it
        # differs from the refusal of new work, so a client can tell accepted work was lost.
        left = "server stopped before this request ran (grace period over)"
        try:
            await self._serve()
        except Exception:
            log.exception("%s: batching loop crashed", self.name)
            self._closed = left = "model is not available"
        finally:
            # Whatever is left (grace ran out, or a bug) must not hang its callers.
            self._accepting = False
            running = self._running.segments if self._running else []
            self._running = None  # its late end (`_finished`) must not deliver or chain
            for request in [*self._queue, *(segment[0] for segment in running)]:
                self._fail(request, Unavailable(left))
            self._queue.clear()

    async def _serve(self) -> None:
        """Start a batch when the runtime is idle and the queue is ready. A batch's end starts
        the next one itself (`_finished`), so this task wakes only for work that finds the
        runtime idle, for a queue delay, and to stop."""
        while await self._wait_until_ready():
            self._launch()

    def _finished(self, batch: _Batch, outcome: _Outcome, chain: bool = True) -> None:
        """On the loop, as soon as the batch is done: the runtime is free, so give it the next
        batch (`chain`; else leave that to the loop task), then answer this one's callers."""
        if self._running is not batch:
            return  # the loop ended (grace ran out) and failed its callers already
        outputs, seconds = outcome
        self._costs.observe(batch.size, seconds)
        self._running = None
        if chain:
            if not (self._ready_now() and self._launch()):
                self._wake.set()  # the loop waits for work, a queue delay, or its stop
        elif self._queued_rows:
            self._wake.set()
        self._deliver(batch, outputs, seconds)

    def _ready_now(self) -> bool:
        """Whether a batch should start now; afterwards a non-empty queue has a live head."""
        queue = self._queue
        while queue and queue[0].future.done():  # cancelled: its task may not have run yet
            self._release(queue.popleft())
        if self._queued_rows == 0:
            return False
        delay = self.config.max_queue_delay
        if delay <= 0 or not self._accepting or self._queued_rows >= self.config.max_batch_size:
            return True
        return time.monotonic() >= queue[0].enqueued + delay

    async def _wait_until_ready(self) -> bool:
        """Wait for work (and, with a queue delay, for the batch to fill); False: time to stop."""
        while True:
            self._wake.clear()
            if self._running is not None:
                await self._wake.wait()  # `_finished` chains the next batch or wakes us
            elif self._ready_now():  # drops requests cancelled since they queued, first
                return True
            elif self._queued_rows == 0:
                self._queue.clear()  # only finished requests are left: let their rows go
                if not self._accepting:
                    return False
                await self._wake.wait()
            else:
                timeout = self._queue[0].enqueued + self.config.max_queue_delay - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    def _launch(self, alone: bool | None = None) -> _Batch | None:
        """Take up to max_batch_size live rows off the queue and start `infer` on them.
        `alone`: already known to be the server's only request (else asked when it matters)."""
        queue, cap, now = self._queue, self.config.max_batch_size, time.monotonic()
        segments: list[_Segment] = []
        waits: list[float] = []
        wanted: frozenset[str] = frozenset()
        size = 0
        while queue and size < cap:
            request = queue[0]
            if request.future.done():  # cancelled, or failed in an earlier part
                self._release(queue.popleft())
                continue
            if request.deadline is not None and request.deadline <= now:
                self._fail(queue.popleft(), DeadlineExceeded("deadline exceeded while queued"))
                self._stats.requests_expired += 1
                continue
            n, start = request.rows.shape[0], request.taken
            count = min(n - start, cap - size)
            if start == 0:
                waits.append(now - request.enqueued)
            request.taken = start + count
            if request.taken == n:
                queue.popleft()
            segments.append((request, start, count))
            size += count
            if not request.outputs <= wanted:
                wanted = wanted | request.outputs
        if not segments:
            return None
        self._queued_rows -= size
        first, start, count = segments[0]
        if len(segments) == 1 and count == first.rows.shape[0]:
            rows = np.ascontiguousarray(first.rows)  # one whole request: no copy
        else:
            rows = np.concatenate([r.rows[s : s + c] for r, s, c in segments])
        batch = self._running = _Batch(segments, size, waits)
        if self._inline is not None:
            predicted = self._costs.predict(size)
            if predicted is None:
                pass
            elif predicted <= self.config.max_inline_cost:
                self._run_inline(batch, rows, wanted, cheap=True)
                return batch
            elif (
                predicted <= self.config.max_lone_inline_cost
                and len(segments) == 1
                and (self._alone() if alone is None else alone)
            ):
                self._run_inline(batch, rows, wanted, cheap=False)
                return batch
        self._run_on_thread(batch, rows, wanted)
        return batch

    def _run_on_thread(self, batch: _Batch, rows: FloatArray, wanted: frozenset[str]) -> None:
        loop = asyncio.get_running_loop()

        def on_done(done: Future[_Outcome]) -> None:  # on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(self._finished, batch, done.result())

        self._executor.submit(self._call, rows, wanted).add_done_callback(on_done)

    def _run_inline(
        self, batch: _Batch, rows: FloatArray, wanted: frozenset[str], cheap: bool
    ) -> None:
        """Run on the loop's thread, watched, and answer at once; the next batch starts from the
        loop task, after the calls that arrived meanwhile have queued. An interrupted run goes
        to the thread."""
        assert self._inline is not None and self._watch is not None
        interrupt = self._inline.interrupt()
        self._watch.arm(interrupt, time.monotonic() + self.config.inline_limit)
        try:
            outcome = self._call(rows, wanted, (interrupt, cheap))
        finally:
            self._watch.disarm()
        if interrupt.terminate:
            result, seconds = outcome
            self._costs.overran(batch.size, seconds)  # keeps this size on the thread for now
            self._stats.inline_interrupted += 1
            log.warning(
                "%s: a batch of %d rows ran %.1f ms on the event loop (limit %.1f ms); "
                "running it on the model's thread instead",
                self.name, batch.size, seconds * 1e3, self.config.inline_limit * 1e3,
            )  # fmt: skip
            if isinstance(result, Exception):
                self._run_on_thread(batch, rows, wanted)
                return
        self._stats.batches_inline += 1
        self._finished(batch, outcome, chain=False)

    def _call(
        self, rows: FloatArray, wanted: frozenset[str], inline: tuple[Interrupt, bool] | None = None
    ) -> _Outcome:
        """Run the model (`inline`: interrupt, cheap); returns (outputs or exception, seconds)."""
        started = time.monotonic()
        try:
            if inline is None:
                outputs = self._infer(rows, wanted)
            else:
                assert self._inline is not None
                outputs = self._inline.run_inline(rows, wanted, *inline)
            for key in wanted:
                if outputs[key].shape[0] != rows.shape[0]:
                    raise ValueError(f"{key}: {outputs[key].shape[0]} rows for {len(rows)}")
        except Exception as exc:
            return exc, time.monotonic() - started
        return outputs, time.monotonic() - started

    def _deliver(
        self, batch: _Batch, outputs: Mapping[str, FloatArray] | Exception, seconds: float
    ) -> None:
        stats = self._stats
        stats.batches_executed += 1
        stats.rows_inferred += batch.size
        stats.compute_ns += int(seconds * 1e9)
        stats.queue_ns += int(sum(batch.waits) * 1e9)
        stats.last_inference_ms = time.time_ns() // 1_000_000
        try:
            self._observer.on_batch(batch.size, batch.waits, seconds)
        except Exception:
            log.exception("%s: batch observer failed", self.name)
        if isinstance(outputs, Exception):
            log.error("%s: inference failed on %d rows", self.name, batch.size, exc_info=outputs)
            for request, _, _ in batch.segments:
                if not request.future.done():
                    stats.requests_failed += 1
                    self._fail(request, ModelFailed("inference failed"))
            return
        offset = 0
        for request, start, count in batch.segments:
            end = offset + count
            future = request.future
            if future.done():  # cancelled while its rows ran
                pass
            elif count == request.rows.shape[0]:
                future.set_result({k: _rows(outputs[k], offset, end) for k in request.outputs})
                stats.requests_succeeded += 1
            else:
                # Views for now: the join below copies once all parts are in.
                parts = request.parts = request.parts or []
                parts.append((start, {k: outputs[k][offset:end] for k in request.outputs}))
                request.answered += count
                if request.answered == request.rows.shape[0]:
                    parts.sort(key=lambda part: part[0])
                    joined = {k: np.concatenate([p[k] for _, p in parts]) for k in request.outputs}
                    future.set_result(joined)
                    request.parts = None
                    stats.requests_succeeded += 1
            offset = end


def _rows(array: FloatArray, start: int, end: int) -> FloatArray:
    """A copy of rows [start, end): a view would keep the whole batch's output alive."""
    if start == 0 and end == array.shape[0]:
        return array  # the request is the whole batch: nothing to share, nothing to copy
    return array[start:end].copy()
