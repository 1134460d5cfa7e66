"""Faults: a broken model store, the runtime failing or stalling on one batch, clients that leave.

The model store faults run the real server process on a broken copy of the store. The runtime
faults run the real `App` in this process, with `OnnxModel.run` wrapped so that a batch whose
first pixel carries a marker value misbehaves: POISON feeds the real onnxruntime session a wrong
shape (a real onnxruntime error), STALL blocks on a gate until the test opens it. MNIST digits
are black in the corner, so ordinary rows never carry a marker.

A client that never reads its responses is approximated by one that fires many large-response
calls and closes its channel without awaiting any (gRPC's client core reads the socket whatever
the application does, so "never reads" needs a hand-written HTTP/2 client; not done here).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio

from loadtest.server import LocalServer, scrape
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from service.app import App
from service.settings import Settings
from service.store.manifest import sha256_file
from service.store.runtime import FloatArray, OnnxModel
from tests.integration import reference

STORE = reference.STORE
POISON = 0.25
STALL = 0.5
CONVNET_LAYERS = [f"layer.conv{i}" for i in range(1, 7)] + ["layer.fc1"]


def request_of(
    images: np.ndarray, model: str = "mlp", outputs: tuple[str, ...] = ()
) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(np.ascontiguousarray(images, np.float32).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def probabilities(response: v2.ModelInferResponse) -> np.ndarray:
    index = [o.name for o in response.outputs].index("probabilities")
    return np.frombuffer(response.raw_output_contents[index], "<f4").reshape(-1, 10)


def marked(value: float, count: int = 1) -> np.ndarray:
    images = reference.test_images(count, offset=100).copy()
    images[:, 0, 0, 0] = value
    return images


async def poll(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


async def code_of(call: aio.UnaryUnaryCall[v2.ModelInferRequest, v2.ModelInferResponse]) -> str:
    try:
        await call
    except aio.AioRpcError as exc:
        return exc.code().name
    return "OK"


# --- model store faults, real server process -----------------------------------------------


def copy_version(root: Path, model: str, source: int, version: int) -> Path:
    target = root / model / str(version)
    shutil.copytree(STORE / model / str(source), target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def broken_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """convnet/1 and mlp/1 fine; convnet/2 edited after its manifest; mlp/2 corrupt ONNX
    (its manifest agrees, so onnxruntime itself must refuse it); mlp/3 has no model.onnx."""
    root = tmp_path_factory.mktemp("store")
    copy_version(root, "convnet", 1, 1)
    with (copy_version(root, "convnet", 1, 2) / "model.onnx").open("ab") as f:
        f.write(b"\0")
    corrupt = copy_version(root, "mlp", 1, 2)
    onnx = corrupt / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:5000] + b"\x07garbage" * 64)
    manifest = json.loads((corrupt / "manifest.json").read_text())
    manifest["onnx_sha256"] = sha256_file(onnx)
    (corrupt / "manifest.json").write_text(json.dumps(manifest))
    copy_version(root, "mlp", 1, 1)
    (copy_version(root, "mlp", 1, 3) / "model.onnx").unlink()
    with LocalServer(root, ["--device", "cpu"], start_timeout=60) as server:
        yield server


def test_broken_versions_are_listed_unavailable_with_a_reason(broken_store: LocalServer) -> None:
    with grpc.insecure_channel(broken_store.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        index = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=5)
        states = {(m.name, m.version): (m.state, m.reason) for m in index.models}
        assert states[("convnet", "1")] == ("READY", "")
        assert states[("mlp", "1")] == ("READY", "")
        assert states[("convnet", "2")][0] == "UNAVAILABLE"
        assert "sha256" in states[("convnet", "2")][1]
        assert states[("mlp", "2")][0] == "UNAVAILABLE"
        assert states[("mlp", "2")][1]  # onnxruntime's own words for the corrupt graph
        assert states[("mlp", "3")] == ("UNAVAILABLE", "needs both manifest.json and model.onnx")
        ready = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True), timeout=5)
        assert {(m.name, m.version) for m in ready.models} == {("convnet", "1"), ("mlp", "1")}
        assert not stub.ModelReady(v2.ModelReadyRequest(name="mlp", version="2"), timeout=5).ready


def test_good_versions_serve_beside_broken_ones(broken_store: LocalServer) -> None:
    images = reference.test_images(3)
    with grpc.insecure_channel(broken_store.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        for model in ("mlp", "convnet"):  # the newest loaded version is 1 for both
            response = stub.ModelInfer(request_of(images, model), timeout=10)
            assert response.model_version == "1"
            expected = reference.run(model, images, ["probabilities"], version=1)
            np.testing.assert_allclose(
                probabilities(response), expected["probabilities"], atol=1e-6
            )
        with pytest.raises(grpc.RpcError) as caught:
            request = request_of(images, "mlp")
            request.model_version = "2"
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# --- runtime faults, in-process App ---------------------------------------------------------


class Faults:
    """Wraps the real `OnnxModel.run` and `run_inline`: POISON rows make onnxruntime raise,
    STALL rows wait (interruptibly, as onnxruntime's own runs are between operators: on the
    event loop the watchdog cuts one short and it reruns on the model's thread)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.stalled = threading.Event()

    def wrap(self, original: Callable[..., dict[str, FloatArray]]) -> Callable[..., Any]:
        def run(model: OnnxModel, batch: FloatArray, *args: Any) -> dict[str, FloatArray]:
            corner = batch[:, 0, 0, 0]
            if (corner == POISON).any():
                model.session.run(None, {model.input_name: batch[:, :, :27, :]})  # raises
                raise AssertionError("onnxruntime accepted a 27-row image")
            if (corner == STALL).any():
                self.stalled.set()
                interrupt = args[1] if len(args) > 1 else None
                end = time.monotonic() + 10  # bounded: a broken test must not hang the suite
                while not self.gate.wait(0.001) and time.monotonic() < end:
                    if interrupt is not None and interrupt.terminate:
                        raise RuntimeError("Exiting due to terminate flag being set to true.")
            return original(model, batch, *args)

        return run


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    wrapper = Faults()
    monkeypatch.setattr(OnnxModel, "run", wrapper.wrap(OnnxModel.run))
    monkeypatch.setattr(OnnxModel, "run_inline", wrapper.wrap(OnnxModel.run_inline))
    return wrapper


@asynccontextmanager
async def running(*models: str, **overrides: object) -> AsyncIterator[tuple[App, str]]:
    settings = Settings(
        model_store=STORE,
        models=list(models),
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        device="cpu",
        **overrides,  # type: ignore[arg-type]
    )
    app = await App.start(settings)
    try:
        yield app, f"127.0.0.1:{app.grpc_port}"
    finally:
        await app.stop(grace=1)


def test_runtime_error_fails_only_its_batch(faults: Faults) -> None:
    images = reference.test_images(10)
    expected = reference.run("mlp", images, ["probabilities"])["probabilities"]

    async def scenario() -> tuple[list[str], list[str], str]:
        async with (
            running("mlp", max_batch_size=1) as (_, target),
            aio.insecure_channel(target) as channel,
        ):
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            calls = [stub.ModelInfer(request_of(images[i : i + 1]), timeout=10) for i in range(5)]
            poisoned = stub.ModelInfer(request_of(marked(POISON)), timeout=10)
            calls += [
                stub.ModelInfer(request_of(images[i : i + 1]), timeout=10) for i in range(5, 10)
            ]
            codes = [await code_of(call) for call in calls]
            for i, call in enumerate(calls):
                np.testing.assert_allclose(
                    probabilities(await call), expected[i : i + 1], atol=1e-6
                )
            failed = await code_of(poisoned)
            details = await poisoned.details()
            after = await code_of(stub.ModelInfer(request_of(images[:3]), timeout=10))
            return codes, [failed, details or ""], after

    codes, (failed, details), after = asyncio.run(scenario())
    assert codes == ["OK"] * 10
    assert failed == "INTERNAL"
    assert details == "inference failed"  # fixed: no onnxruntime text, no traceback
    assert after == "OK"


def test_cancelled_request_is_dropped_from_the_queue(faults: Faults) -> None:
    async def scenario() -> None:
        async with running("mlp") as (app, target):
            batcher = app.engine.batcher(app.engine.model("mlp"))
            before = batcher.stats
            async with aio.insecure_channel(target) as channel:
                stub = v2_grpc.GRPCInferenceServiceStub(channel)
                slow = stub.ModelInfer(request_of(marked(STALL)), timeout=15)
                await poll(faults.stalled.is_set)
                victim = stub.ModelInfer(request_of(reference.test_images(5)), timeout=15)
                await poll(lambda: batcher.queued_rows == 5)
                victim.cancel()
                await poll(
                    lambda: batcher.stats.requests_cancelled == before.requests_cancelled + 1
                )
                assert batcher.queued_rows == 0
                faults.gate.set()
                assert await code_of(slow) == "OK"
                assert victim.cancelled()
                assert await code_of(stub.ModelInfer(request_of(reference.test_images(2)))) == "OK"
            after = batcher.stats
            # The slow row and the last two ran; the victim's five never reached the model.
            assert after.rows_inferred - before.rows_inferred == 3
            assert after.requests_succeeded - before.requests_succeeded == 2

    asyncio.run(scenario())


def test_stalled_batch_expires_what_waits_behind_it_then_recovers(faults: Faults) -> None:
    async def scenario() -> None:
        async with running("mlp") as (app, target):
            batcher = app.engine.batcher(app.engine.model("mlp"))
            before = batcher.stats
            async with aio.insecure_channel(target) as channel:
                stub = v2_grpc.GRPCInferenceServiceStub(channel)
                slow = stub.ModelInfer(request_of(marked(STALL)), timeout=15)
                await poll(faults.stalled.is_set)
                waiting = [
                    stub.ModelInfer(request_of(reference.test_images(1, offset=i)), timeout=0.3)
                    for i in range(8)
                ]
                codes = [await code_of(call) for call in waiting]
                # Their own deadlines answered them: no hang behind the stalled batch.
                assert codes == ["DEADLINE_EXCEEDED"] * 8
                await poll(lambda: batcher.queued_rows == 0)
                faults.gate.set()
                assert await code_of(slow) == "OK"
                images = reference.test_images(4)
                response = await stub.ModelInfer(request_of(images), timeout=30)
                expected = reference.run("mlp", images, ["probabilities"])["probabilities"]
                np.testing.assert_allclose(probabilities(response), expected, atol=1e-6)
            after = batcher.stats
            assert after.rows_inferred - before.rows_inferred == 5  # the expired rows never ran

    asyncio.run(scenario())


def test_a_stall_on_the_event_loop_moves_to_the_thread_and_the_server_keeps_answering(
    faults: Faults,
) -> None:
    """The mlp's batches are cheap enough to run on the event loop; one that stalls there is
    interrupted by the watchdog and finishes on the model's thread, while health checks and
    the other model answer."""
    images = reference.test_images(4)

    async def scenario() -> None:
        # A bound well above the mlp's cost even on a loaded machine (idle: ~30 us a batch).
        async with running("mlp", "convnet", max_inline_cost_us=5000) as (app, target):
            batcher = app.engine.batcher(app.engine.model("mlp"))
            async with aio.insecure_channel(target) as channel:
                stub = v2_grpc.GRPCInferenceServiceStub(channel)
                for i in range(20):  # the first batches teach the cost model, on the thread
                    await stub.ModelInfer(request_of(images[i % 4 : i % 4 + 1]), timeout=10)
                assert batcher.stats.batches_inline >= 5
                slow = stub.ModelInfer(request_of(marked(STALL)), timeout=15)
                await poll(lambda: batcher.stats.inline_interrupted == 1)
                await poll(faults.stalled.is_set)
                live = await stub.ServerLive(v2.ServerLiveRequest(), timeout=2)
                assert live.live
                response = await stub.ModelInfer(request_of(images, "convnet"), timeout=10)
                expected = reference.run("convnet", images, ["probabilities"])["probabilities"]
                np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)
                assert not slow.done()  # still stalled, on the thread now
                faults.gate.set()
                answered = await slow
                expected = reference.run("mlp", marked(STALL), ["probabilities"])["probabilities"]
                np.testing.assert_allclose(probabilities(answered), expected, atol=1e-6)

    asyncio.run(scenario())


def test_abandoned_large_responses_leave_the_server_healthy() -> None:
    """50 calls of ~200 KB responses each, then the channel closes without reading any."""
    images = reference.test_images(2)

    async def scenario() -> None:
        async with running("convnet") as (app, target):
            batcher = app.engine.batcher(app.engine.model("convnet"))
            channel = aio.insecure_channel(target)
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            request = request_of(images, "convnet", ("probabilities", *CONVNET_LAYERS))
            calls = [stub.ModelInfer(request, timeout=30) for _ in range(50)]
            await poll(lambda: batcher.stats.batches_executed > 0)
            await channel.close()
            del calls
            async with aio.insecure_channel(target) as other:
                stub = v2_grpc.GRPCInferenceServiceStub(other)
                live = await stub.ServerLive(v2.ServerLiveRequest(), timeout=5)
                assert live.live
                await poll(lambda: batcher.queued_rows == 0)
                response = await stub.ModelInfer(request_of(images, "convnet"), timeout=30)
                expected = reference.run("convnet", images, ["probabilities"])["probabilities"]
                np.testing.assert_allclose(probabilities(response), expected, atol=1e-5)
            # Every abandoned call has ended on the server too: none is left in flight.
            url = f"http://127.0.0.1:{app.metrics_port}/metrics"
            for _ in range(200):
                samples = await asyncio.to_thread(scrape, url)
                if samples[("digits_inflight_requests", (("model", "convnet"),))] == 0:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("abandoned calls are still in flight")

    asyncio.run(scenario())
