"""Batches on the event loop: the cost prediction, and the watchdog against a real onnxruntime
graph that is cheap for ordinary rows and runs for most of a second for a marked one."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from service.domain.batch_types import BatchingConfig
from service.domain.batching import DynamicBatcher
from service.domain.inline import CostModel
from service.loop import claim_quiet, new_event_loop
from service.store.runtime import OnnxModel


def test_cost_model_predicts_from_the_nearest_size_it_has_seen() -> None:
    costs = CostModel(window=3)
    assert costs.predict(1) is None  # nothing seen: the caller sends the batch to the thread
    costs.observe(4, 0.002)
    assert costs.predict(5) == 0.002  # same bucket (4-7)
    assert costs.predict(2) == 0.002  # a larger size's cost bounds a smaller one's
    assert costs.predict(16) == pytest.approx(0.008)  # two buckets up: scaled by 4
    costs.observe(4, 0.001)
    costs.observe(4, 0.005)  # a run that waited for a core: the least of the last three holds
    assert costs.predict(4) == 0.001
    for _ in range(3):
        costs.observe(4, 0.003)  # the model really got slower: the window forgets the fast run
    assert costs.predict(4) == 0.003
    costs.overran(4, 0.05)  # cut short by the watchdog: that is all that counts now
    assert costs.predict(4) == 0.05


def slow_graph(path: Path) -> None:
    """image [N,1,28,28] → `sums` [N]; first runs image[0,0,0,0] x 1000 products of 256x256
    matrices in a Loop, so a marked first pixel of 1.0 makes one run last most of a second."""
    w = np.full((256, 256), 1 / 256, np.float32)
    body = h.make_graph(
        [
            h.make_node("MatMul", ["a_in", "w"], ["a_out"]),
            h.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            h.make_tensor_value_info("i", TensorProto.INT64, []),
            h.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            h.make_tensor_value_info("a_in", TensorProto.FLOAT, [256, 256]),
        ],
        [
            h.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            h.make_tensor_value_info("a_out", TensorProto.FLOAT, [256, 256]),
        ],
    )
    nodes = [
        h.make_node("Slice", ["image", "zeros", "ones"], ["corner"]),
        h.make_node("Mul", ["corner", "thousand"], ["scaled"]),
        h.make_node("Cast", ["scaled"], ["trips4"], to=TensorProto.INT64),
        h.make_node("Reshape", ["trips4", "scalar"], ["trips"]),
        h.make_node("Loop", ["trips", "true", "w"], ["final"], body=body),
        h.make_node("ReduceSum", ["image", "axes"], ["sums"], keepdims=0),
    ]
    constants = [
        h.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten()),
        h.make_tensor("zeros", TensorProto.INT64, [4], [0, 0, 0, 0]),
        h.make_tensor("ones", TensorProto.INT64, [4], [1, 1, 1, 1]),
        h.make_tensor("thousand", TensorProto.FLOAT, [], [1000.0]),
        h.make_tensor("scalar", TensorProto.INT64, [0], []),
        h.make_tensor("true", TensorProto.BOOL, [], [True]),
        h.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
    ]
    graph = h.make_graph(
        nodes,
        "slow",
        [h.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [
            h.make_tensor_value_info("sums", TensorProto.FLOAT, ["N"]),
            h.make_tensor_value_info("final", TensorProto.FLOAT, [256, 256]),
        ],
        constants,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=9)
    onnx.save(model, str(path))


def test_an_overlong_inline_run_is_interrupted_and_answered_from_the_thread(
    tmp_path: Path,
) -> None:
    slow_graph(tmp_path / "slow.onnx")
    runtime = OnnxModel(tmp_path / "slow.onnx", device="cpu", inline=True)
    config = BatchingConfig(max_inline_cost=0.05, inline_limit=0.03)
    batcher = DynamicBatcher(runtime.run, config, name="slow", inline=runtime)
    sums = frozenset({"sums"})
    ordinary = np.full((1, 1, 28, 28), 0.0001, np.float32)
    marked = ordinary.copy()
    marked[0, 0, 0, 0] = 1.0

    async def main() -> tuple[float, float, np.ndarray]:
        batcher.start()
        try:
            for _ in range(4):  # the first runs on the thread and teaches the cost model
                await batcher.submit(ordinary, sums)
            assert batcher.stats.batches_inline == 3
            gaps: list[float] = []

            async def ticker() -> None:  # how long the loop went without a turn
                last = time.monotonic()
                while True:
                    await asyncio.sleep(0.002)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now

            ticking = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            started = time.monotonic()
            result = await batcher.submit(marked, sums)
            took = time.monotonic() - started
            ticking.cancel()
            return max(gaps), took, result["sums"]
        finally:
            await batcher.stop(grace=5)

    longest_gap, took, result = asyncio.run(main())
    stats = batcher.stats
    assert stats.inline_interrupted == 1
    assert stats.batches_executed == 5  # the interrupted attempt is not counted as a batch
    np.testing.assert_allclose(result, [marked.sum()], rtol=1e-5)
    started = time.monotonic()
    runtime.run(marked, sums)
    whole = time.monotonic() - started
    assert took > whole / 2  # the call lasted a whole run (on the thread), not the loop's share
    # The loop was held for the inline limit plus the watchdog's period, not for the whole run.
    assert longest_gap < 0.2, f"the event loop stalled for {longest_gap * 1e3:.0f} ms"


class CostlyModel:
    """Rows in, their sums out, taking `seconds` a call: too costly to be 'cheap' inline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.inline_calls = 0

    def __call__(self, batch: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return {"sums": batch.reshape(len(batch), -1).sum(axis=1)}

    def interrupt(self) -> SimpleNamespace:
        return SimpleNamespace(terminate=False)

    def run_inline(
        self, batch: np.ndarray, outputs: frozenset[str], interrupt: object, cheap: bool
    ) -> dict[str, np.ndarray]:
        assert not cheap
        self.inline_calls += 1
        return self(batch, outputs)


def test_a_lone_request_on_a_quiet_loop_runs_inline_and_a_crowd_does_not() -> None:
    model = CostlyModel(0.002)
    config = BatchingConfig(max_inline_cost=0.0001, max_lone_inline_cost=0.01)
    inflight = 0
    batcher = DynamicBatcher(
        model, config, name="costly", inline=model, alone=lambda: inflight == 1 and claim_quiet()
    )
    row = np.ones((1, 1, 28, 28), np.float32)

    async def call() -> None:
        nonlocal inflight
        inflight += 1
        try:
            await batcher.submit(row, frozenset({"sums"}))
        finally:
            inflight -= 1

    async def main() -> tuple[int, int]:
        batcher.start()
        try:
            await call()  # the first runs on the thread and teaches the cost model
            for _ in range(5):
                await asyncio.sleep(0.003)  # the loop waits: quiet
                await call()
            lone = model.inline_calls
            await asyncio.gather(*(call() for _ in range(8)))
            return lone, model.inline_calls - lone
        finally:
            await batcher.stop(grace=5)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        lone, crowd = runner.run(main())
    assert lone == 5
    assert crowd == 0  # eight at once: batched on the thread

    # On a loop that cannot say it is quiet, nothing is lone.
    model.inline_calls = 0
    batcher = DynamicBatcher(
        model, config, name="costly", inline=model, alone=lambda: inflight == 1 and claim_quiet()
    )

    async def plain() -> None:
        batcher.start()
        try:
            for _ in range(4):
                await call()
        finally:
            await batcher.stop(grace=5)

    asyncio.run(plain())
    assert model.inline_calls == 0


def test_a_lone_request_on_an_idle_batcher_is_answered_within_its_own_call() -> None:
    """No turn of the loop between the call and its answer: the batch starts in `submit`."""
    model = CostlyModel(0.0)
    config = BatchingConfig(max_inline_cost=0.0001, max_lone_inline_cost=0.01)
    batcher = DynamicBatcher(model, config, name="lone", inline=model, alone=lambda: True)
    row = np.ones((1, 1, 28, 28), np.float32)
    sums = frozenset({"sums"})

    async def main() -> np.ndarray:
        batcher.start()
        try:
            await batcher.submit(row, sums)  # the first runs on the thread and teaches the cost
            call = batcher.submit(row, sums)
            with pytest.raises(StopIteration) as answered:  # it returned at its first step
                call.send(None)
            result: np.ndarray = answered.value.value["sums"]
            return result
        finally:
            await batcher.stop(grace=5)

    assert asyncio.run(main()).tolist() == [784.0]
    assert model.inline_calls == 1


@pytest.mark.parametrize(
    ("pooled", "single", "keeps_pool"), [(1e-4, 1e-4, False), (5e-4, 1e-3, True)]
)
def test_warm_up_keeps_the_pool_only_when_it_runs_an_image_clearly_faster(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    model_store: Path,
    pooled: float,
    single: float,
    keeps_pool: bool,
) -> None:
    """A real graph and its two CPU sessions; the timings are given, the choice is the code's."""
    runtime = OnnxModel(model_store / "mlp" / "3" / "model.onnx", device="cpu", inline=True)
    pool, one = runtime.session, runtime.inline_session
    assert pool is not one
    monkeypatch.setattr(runtime, "_least_seconds", lambda *sessions, rows: [pooled, single])
    with caplog.at_level(logging.INFO, logger="service.store.runtime"):
        runtime.warm_up()
    assert runtime.session is (pool if keeps_pool else one)
    assert runtime.inline_session is one
    assert ("one onnxruntime thread" in caplog.text) is not keeps_pool
    answer = runtime.run(np.zeros((2, 1, 28, 28), np.float32), frozenset({"probabilities"}))
    assert answer["probabilities"].shape == (2, 10)
