"""The dynamic batcher against a fake runtime that computes real, row-identifying outputs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.batch_types import BatcherStats, BatchingConfig
from service.domain.batching import DynamicBatcher
from service.errors import DeadlineExceeded, InvalidInput, ModelFailed, QueueFull, Unavailable
from service.names import FloatArray

OUTPUTS = ("ident", "double", "rowsum")
POISON = -1.0  # a row with this id makes the fake model raise


class FakeModel:
    """Outputs identify each row: `ident` is the row's id, `double` and `rowsum` derive from it.

    With a gate, every call blocks until the gate opens, so requests pile up deterministically.
    """

    def __init__(self, gate: threading.Event | None = None, bad_rows: bool = False) -> None:
        self.gate = gate
        self.bad_rows = bad_rows
        self.entered = threading.Event()
        self.batches: list[list[float]] = []  # ids of the rows in each batch, in order

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    @property
    def seen(self) -> set[float]:
        return {i for b in self.batches for i in b}

    def __call__(self, batch: FloatArray, wanted: frozenset[str]) -> dict[str, FloatArray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never opened the gate"
        ids = batch[:, 0, 0, 0].copy()
        self.batches.append(ids.tolist())
        if POISON in ids:
            raise RuntimeError("poisoned batch")
        out = {
            "ident": ids,
            "double": batch[:, 0, 0, :4] * 2,
            "rowsum": batch.reshape(len(batch), -1).sum(axis=1, dtype=np.float32),
        }
        if self.bad_rows:
            out["ident"] = ids[:-1]
        return {k: v for k, v in out.items() if k in wanted}


def image_rows(first_id: int, n: int) -> FloatArray:
    """n rows whose every pixel is the row's id, ids first_id, first_id+1, ..."""
    ids = np.arange(first_id, first_id + n, dtype=np.float32)
    return np.broadcast_to(ids[:, None, None, None], (n, 1, 28, 28)).copy()


def check_result(result: dict[str, FloatArray], rows: FloatArray, wanted: frozenset[str]) -> None:
    assert set(result) == wanted
    ids = rows[:, 0, 0, 0]
    if "ident" in result:
        np.testing.assert_array_equal(result["ident"], ids)
    if "double" in result:
        np.testing.assert_array_equal(result["double"], np.repeat(ids[:, None] * 2, 4, axis=1))
    if "rowsum" in result:
        np.testing.assert_allclose(result["rowsum"], ids * 784, rtol=1e-6)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` while letting the event loop run."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition never held"
        await asyncio.sleep(0.001)


def run(
    body: Callable[[DynamicBatcher, FakeModel], Awaitable[None]],
    model: FakeModel | None = None,
    **config: Any,
) -> tuple[DynamicBatcher, FakeModel]:
    """Run `body` against a started batcher, then stop it; returns both for checks after."""
    model = model or FakeModel()
    batcher = DynamicBatcher(model, BatchingConfig(**config), name="test")

    async def main() -> None:
        batcher.start()
        try:
            await body(batcher, model)
        finally:
            if model.gate is not None:
                model.gate.set()
            await batcher.stop(grace=5)

    asyncio.run(main())
    return batcher, model


async def hold_runtime(batcher: DynamicBatcher, model: FakeModel) -> asyncio.Task[Any]:
    """Start a one-row request (id 10_000) that occupies the runtime until the gate opens."""
    task = asyncio.create_task(batcher.submit(image_rows(10_000, 1), frozenset({"ident"})))
    await asyncio.to_thread(model.entered.wait, 5)
    return task


def test_concurrent_mixed_sizes_each_get_exactly_their_rows_and_outputs() -> None:
    sizes = [1, 150, 7, 64, 65, 3, 128, 1, 33, 2]
    wanted = [frozenset(OUTPUTS[: 1 + i % 3]) | {OUTPUTS[i % 3]} for i in range(len(sizes))]
    requests = [image_rows(1000 * i, n) for i, n in enumerate(sizes)]

    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        results = await asyncio.gather(
            *(batcher.submit(r, w) for r, w in zip(requests, wanted, strict=True))
        )
        for result, rows, w in zip(results, requests, wanted, strict=True):
            check_result(result, rows, w)

    batcher, model = run(body, max_batch_size=64)
    assert max(model.sizes) <= 64
    assert sum(model.sizes) == sum(sizes)
    stats = batcher.stats
    assert (stats.requests_succeeded, stats.rows_inferred) == (len(sizes), sum(sizes))
    assert stats.batches_executed == len(model.sizes)


def test_requests_queued_while_the_runtime_is_busy_merge_into_one_batch() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        tasks = [
            asyncio.create_task(batcher.submit(image_rows(i, 1), frozenset({"ident"})))
            for i in range(10)
        ]
        await until(lambda: batcher.queued_rows == 10)
        assert model.gate is not None
        model.gate.set()
        for i, result in enumerate(await asyncio.gather(*tasks)):
            assert result["ident"].tolist() == [i]
        await first

    _, model = run(body, FakeModel(threading.Event()))
    assert model.sizes == [1, 10]


def test_lone_request_runs_at_once_in_a_batch_of_one() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        result = await batcher.submit(image_rows(5, 1), frozenset({"rowsum"}))
        check_result(result, image_rows(5, 1), frozenset({"rowsum"}))

    _, model = run(body, max_queue_delay=0.0)
    assert model.sizes == [1]


def test_queue_delay_waits_for_the_batch_to_fill_but_no_longer() -> None:
    delay = 0.05

    async def partial(batcher: DynamicBatcher, model: FakeModel) -> None:
        start = time.monotonic()
        await asyncio.gather(
            *(batcher.submit(image_rows(i, 1), frozenset({"ident"})) for i in (1, 2))
        )
        assert time.monotonic() - start >= delay

    _, model = run(partial, max_batch_size=4, max_queue_delay=delay)
    assert model.sizes == [2]

    async def full(batcher: DynamicBatcher, model: FakeModel) -> None:
        start = time.monotonic()
        await asyncio.gather(
            *(batcher.submit(image_rows(i, 1), frozenset({"ident"})) for i in range(4))
        )
        assert time.monotonic() - start < 2.5  # well short of the 5 s delay: the batch filled

    _, model = run(full, max_batch_size=4, max_queue_delay=5.0)
    assert model.sizes == [4]


def test_full_queue_raises_queue_full_and_spares_the_queued_requests() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        queued = [
            asyncio.create_task(batcher.submit(image_rows(i * 10, 4), frozenset({"ident"})))
            for i in (1, 2)
        ]
        await until(lambda: batcher.queued_rows == 8)
        with pytest.raises(QueueFull):
            await batcher.submit(image_rows(99, 1), frozenset({"ident"}))
        with pytest.raises(QueueFull):
            batcher.check_room(1)  # what callers ask before decoding a request
        batcher.check_room(0)
        assert batcher.queued_rows == 8
        assert model.gate is not None
        model.gate.set()
        for i, task in zip((1, 2), queued, strict=True):
            check_result(await task, image_rows(i * 10, 4), frozenset({"ident"}))
        await first

    batcher, model = run(body, FakeModel(threading.Event()), max_queue_size=8)
    assert 99 not in model.seen
    assert batcher.stats.requests_rejected == 2


def test_expired_deadline_answers_deadline_exceeded_and_never_reaches_the_model() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(image_rows(1, 1), frozenset({"ident"}), time.monotonic() - 1)
        first = await hold_runtime(batcher, model)
        deadline = time.monotonic() + 0.02
        late = asyncio.create_task(batcher.submit(image_rows(2, 3), frozenset({"ident"}), deadline))
        on_time = asyncio.create_task(batcher.submit(image_rows(7, 1), frozenset({"ident"})))
        await until(lambda: batcher.queued_rows == 4 and time.monotonic() > deadline)
        assert model.gate is not None
        model.gate.set()
        with pytest.raises(DeadlineExceeded):
            await late
        assert (await on_time)["ident"].tolist() == [7]
        await first

    batcher, model = run(body, FakeModel(threading.Event()))
    assert model.seen.isdisjoint({1, 2, 3, 4})
    assert model.sizes == [1, 1]
    assert batcher.stats.requests_expired == 2


def test_cancelled_waiting_request_is_never_computed() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        gone = asyncio.create_task(batcher.submit(image_rows(1, 5), frozenset({"ident"})))
        stays = asyncio.create_task(batcher.submit(image_rows(9, 1), frozenset({"ident"})))
        await until(lambda: batcher.queued_rows == 6)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.queued_rows == 1  # its queue space is free at once
        assert model.gate is not None
        model.gate.set()
        assert (await stays)["ident"].tolist() == [9]
        await first

    batcher, model = run(body, FakeModel(threading.Event()))
    assert model.seen.isdisjoint(range(1, 6))
    assert batcher.stats.requests_cancelled == 1


def test_cancelled_request_waiting_for_a_batch_to_fill_is_never_computed() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        gone = asyncio.create_task(batcher.submit(image_rows(1, 1), frozenset({"ident"})))
        await until(lambda: batcher.queued_rows == 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        rows = image_rows(10, 4)
        check_result(await batcher.submit(rows, frozenset({"ident"})), rows, frozenset({"ident"}))

    _, model = run(body, max_batch_size=4, max_queue_delay=5.0)
    assert model.batches == [[10, 11, 12, 13]]


def test_model_failure_fails_only_that_batch(caplog: pytest.LogCaptureFixture) -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        poisoned = [
            asyncio.create_task(batcher.submit(image_rows(i, 1), frozenset({"ident"})))
            for i in (-1, 3)
        ]
        await until(lambda: batcher.queued_rows == 2)
        assert model.gate is not None
        model.gate.set()
        for task in poisoned:
            with pytest.raises(ModelFailed, match=r"^inference failed$"):
                await task
        assert (await first)["ident"].tolist() == [10_000]
        assert (await batcher.submit(image_rows(4, 2), frozenset({"ident"})))["ident"].tolist() == [
            4,
            5,
        ]

    with caplog.at_level(logging.ERROR, logger="service.domain.batching"):
        batcher, model = run(body, FakeModel(threading.Event()))
    assert model.sizes == [1, 2, 2]
    assert any(r.exc_info and "poisoned" in str(r.exc_info[1]) for r in caplog.records)
    assert (batcher.stats.requests_failed, batcher.stats.requests_succeeded) == (2, 2)


def test_wrong_row_count_from_the_model_is_a_model_failure() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        with pytest.raises(ModelFailed):
            await batcher.submit(image_rows(1, 3), frozenset({"ident"}))

    run(body, FakeModel(bad_rows=True))


def test_stop_finishes_running_and_queued_work_then_refuses_new_requests() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        queued = [
            asyncio.create_task(batcher.submit(image_rows(i, 2), frozenset({"ident"})))
            for i in (1, 3)
        ]
        await until(lambda: batcher.queued_rows == 4)
        stopping = asyncio.create_task(batcher.stop(grace=None))
        await asyncio.sleep(0)  # one turn: stop() has begun refusing
        with pytest.raises(Unavailable, match="shutting down"):
            await batcher.submit(image_rows(50, 1), frozenset({"ident"}))
        assert not stopping.done()
        assert model.gate is not None
        model.gate.set()
        await stopping
        assert (await first)["ident"].tolist() == [10_000]
        assert [(await t)["ident"].tolist() for t in queued] == [[1, 2], [3, 4]]

    _, model = run(body, FakeModel(threading.Event()))
    assert 50 not in model.seen


def test_stop_past_its_grace_fails_what_is_left_with_unavailable() -> None:
    gate = threading.Event()

    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        first = await hold_runtime(batcher, model)
        queued = asyncio.create_task(batcher.submit(image_rows(1, 1), frozenset({"ident"})))
        await until(lambda: batcher.queued_rows == 1)
        await batcher.stop(grace=0.01)
        for task in (first, queued):
            with pytest.raises(Unavailable, match="stopped before this request ran"):
                await task

    _, model = run(body, FakeModel(gate))
    assert 1 not in model.seen


def test_submit_refuses_bad_rows_and_a_batcher_not_started() -> None:
    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        for rows in (np.zeros((0, 1, 28, 28), np.float32), np.zeros((1, 28, 28), np.float32)):
            with pytest.raises(InvalidInput, match="image"):
                await batcher.submit(rows, frozenset({"ident"}))
        with pytest.raises(InvalidInput, match="image"):
            await batcher.submit(image_rows(1, 1).astype(np.float64), frozenset({"ident"}))
        fresh = DynamicBatcher(model)
        with pytest.raises(Unavailable, match="not ready"):
            await fresh.submit(image_rows(1, 1), frozenset({"ident"}))
        await fresh.stop()

    _, model = run(body)
    assert model.sizes == []


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[float], float]] = []

    def on_batch(self, size: int, queue_seconds: Sequence[float], infer_seconds: float) -> None:
        self.calls.append((size, list(queue_seconds), infer_seconds))


def test_observer_sees_every_batch_with_one_queue_time_per_request() -> None:
    observer = RecordingObserver()
    model = FakeModel()
    sizes = [3, 100, 1, 40]

    async def main() -> BatcherStats:
        batcher = DynamicBatcher(model, BatchingConfig(max_batch_size=32), observer=observer)
        batcher.start()
        await asyncio.gather(
            *(batcher.submit(image_rows(0, n), frozenset({"ident"})) for n in sizes)
        )
        await batcher.stop(grace=5)
        return batcher.stats

    stats = asyncio.run(main())
    assert [c[0] for c in observer.calls] == model.sizes
    assert sum(len(c[1]) for c in observer.calls) == len(sizes)
    assert all(q >= 0 for c in observer.calls for q in c[1])
    assert stats.compute_ns == pytest.approx(
        sum(c[2] for c in observer.calls) * 1e9, abs=len(model.sizes)
    )
    assert stats.queue_ns == pytest.approx(
        sum(sum(c[1]) for c in observer.calls) * 1e9, abs=len(model.sizes)
    )


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 150), min_size=1, max_size=12),
    picks=st.lists(st.sets(st.sampled_from(OUTPUTS), min_size=1), min_size=12, max_size=12),
    max_batch_size=st.sampled_from([1, 7, 64]),
    max_queue_delay=st.sampled_from([0.0, 0.001]),
)
def test_every_request_gets_exactly_its_rows_whatever_the_mix(
    sizes: list[int], picks: list[set[str]], max_batch_size: int, max_queue_delay: float
) -> None:
    requests = [image_rows(1000 * i, n) for i, n in enumerate(sizes)]
    wanted = [frozenset(p) for p in picks[: len(sizes)]]

    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        results = await asyncio.gather(
            *(batcher.submit(r, w) for r, w in zip(requests, wanted, strict=True))
        )
        for result, rows, w in zip(results, requests, wanted, strict=True):
            check_result(result, rows, w)

    _, model = run(
        body, max_batch_size=max_batch_size, max_queue_delay=max_queue_delay, max_queue_size=2000
    )
    assert max(model.sizes) <= max_batch_size
    assert sum(model.sizes) == sum(sizes)


def test_request_cancelled_before_the_loop_sees_it_leaves_the_batcher_serving() -> None:
    """The loop wakes for a request whose caller was cancelled in the same turn: it finds only
    a finished request in the queue, and must go back to waiting, not crash."""

    async def body(batcher: DynamicBatcher, model: FakeModel) -> None:
        task = asyncio.create_task(batcher.submit(image_rows(1, 1), frozenset({"ident"})))
        await asyncio.sleep(0)  # the request is queued and the loop woken, not yet run
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await asyncio.wait_for(batcher.submit(image_rows(2, 1), frozenset({"ident"})), 5)
        check_result(result, image_rows(2, 1), frozenset({"ident"}))

    batcher, model = run(body)
    assert 1 not in model.seen
    assert batcher.stats.requests_cancelled == 1
