"""Model control at run time, under load: versions added, changed, broken, removed (poll) and
models unloaded and loaded (explicit), with every call answered as expected at its moment."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ROOT, ServerProcess, scrape, wait_for

IMAGE = reference.test_images(1, offset=7)


def probabilities(version: int) -> np.ndarray:
    """What the committed mlp `version` answers for IMAGE."""
    values = reference.run("mlp", IMAGE, ["probabilities"], version)["probabilities"]
    return np.asarray(values[0])


def copy_version(store: Path, source: int, target: int, corrupt: bool = False) -> None:
    """The committed mlp/`source` appears in `store` as mlp/`target`, at once (a rename)."""
    staging = store / "mlp" / f".incoming-{target}"
    staging.mkdir()
    shutil.copy(ROOT / "model_store" / "mlp" / str(source) / "model.onnx", staging)
    manifest = json.loads(
        (ROOT / "model_store" / "mlp" / str(source) / "manifest.json").read_text()
    )
    manifest["version"] = target
    (staging / "manifest.json").write_text(json.dumps(manifest))
    if corrupt:
        with (staging / "model.onnx").open("ab") as onnx:
            onnx.write(b"\0")
    staging.rename(store / "mlp" / str(target))


def replace_version(store: Path, source: int, target: int) -> None:
    """mlp/`target`'s two files become those of the committed mlp/`source`, one after the
    other (as an operator's copy does): for a moment the files disagree."""
    version_dir = store / "mlp" / str(target)
    onnx = version_dir / ".model.onnx"
    shutil.copy(ROOT / "model_store" / "mlp" / str(source) / "model.onnx", onnx)
    os.replace(onnx, version_dir / "model.onnx")
    manifest = json.loads(
        (ROOT / "model_store" / "mlp" / str(source) / "manifest.json").read_text()
    )
    manifest["version"] = target
    staged = version_dir / ".manifest.json"
    staged.write_text(json.dumps(manifest))
    os.replace(staged, version_dir / "manifest.json")


@dataclass
class Answer:
    sent: float  # time.monotonic() when the call went out
    code: str
    version: int = 0
    probabilities: np.ndarray | None = None


@dataclass
class Load:
    """Closed-loop callers on the newest mlp, half on V2 and half on digits.v1, on a thread of
    their own; every answer is recorded per caller, in order."""

    address: str
    callers: int = 6
    answers: list[list[Answer]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.answers = [[] for _ in range(self.callers)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            classify = digits_pb2_grpc.DigitsStub(channel).Classify
            request = v2.ModelInferRequest(model_name="mlp")
            request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
            request.raw_input_contents.append(IMAGE.tobytes())
            ask = digits_pb2.ClassifyRequest(model="mlp")
            ask.images.add().pixels.data.extend(IMAGE.reshape(784).tolist())

            async def caller(index: int) -> None:
                answers = self.answers[index]
                while not self._stop.is_set():
                    sent = time.monotonic()
                    try:
                        if index % 2:
                            got = await classify(ask, timeout=30)
                            values = np.array(got.results[0].probabilities, np.float32)
                            answer = Answer(sent, "OK", int(got.version), values)
                        else:
                            out = await infer(request, timeout=30)
                            values = np.frombuffer(out.raw_output_contents[0], "<f4")
                            answer = Answer(sent, "OK", int(out.model_version), values)
                    except grpc.aio.AioRpcError as err:
                        answer = Answer(sent, err.code().name)
                    answers.append(answer)

            await asyncio.gather(*(caller(i) for i in range(self.callers)))

    def latest(self) -> list[Answer]:
        """Each caller's last answer (all callers have answered at least once)."""
        wait_for(lambda: all(self.answers), timeout=30)
        return [answers[-1] for answers in self.answers]

    def settle_on(self, matches: Callable[[Answer], bool], timeout: float = 20) -> float:
        """Wait until every caller's answers to calls sent from now on match; returns now."""
        start = time.monotonic()

        def settled() -> bool:
            return all(
                any(a.sent >= start for a in answers) and matches(answers[-1])
                for answers in self.answers
            )

        wait_for(settled, timeout=timeout, interval=0.05)
        return start

    def stop(self) -> list[list[Answer]]:
        self._stop.set()
        self._thread.join(60)
        return self.answers


def is_model(version: int, source: int) -> Callable[[Answer], bool]:
    """The answer came from version `version` holding the committed mlp/`source`."""
    expected = probabilities(source)

    def matches(answer: Answer) -> bool:
        return (
            answer.code == "OK"
            and answer.version == version
            and answer.probabilities is not None
            and np.allclose(answer.probabilities, expected, atol=1e-5)
        )

    return matches


def index(server: ServerProcess) -> dict[tuple[str, str], tuple[str, str]]:
    with grpc.insecure_channel(server.address) as channel:
        response = v2_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
            v2.RepositoryIndexRequest(), timeout=10
        )
    return {(m.name, m.version): (m.state, m.reason) for m in response.models}


def health(server: ServerProcess, service: str) -> str:
    with grpc.insecure_channel(server.address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def counter(server: ServerProcess, name: str, version: str) -> float:
    labels = (("model", "mlp"), ("version", version))
    return scrape(server).get((name, labels), 0.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A model store holding the committed mlp/1 only."""
    (tmp_path / "mlp").mkdir()
    copy_version(tmp_path, 1, 1)
    yield tmp_path


def test_poll_picks_up_added_changed_broken_and_removed_versions_under_load(store: Path) -> None:
    server = ServerProcess(
        "--model-control-mode", "poll", "--repository-poll-secs", "0.2", store=store
    )
    load = Load(server.address)
    try:
        assert all(is_model(1, 1)(a) for a in load.latest())
        # A new version takes the traffic once it is loaded and warm.
        copy_version(store, 2, 2)
        load.settle_on(is_model(2, 2))
        assert index(server)[("mlp", "2")] == ("READY", "")
        # Its files change (the mlp/3 graph under the number 2): the new copy takes over.
        replace_version(store, 3, 2)
        load.settle_on(is_model(2, 3))
        # A broken newer version is refused with its reason; version 2 keeps serving.
        copy_version(store, 3, 3, corrupt=True)
        # Listed as LOADING while it is read and checked, then refused.
        wait_for(
            lambda: index(server).get(("mlp", "3"), ("LOADING", ""))[0] != "LOADING", timeout=20
        )
        state, reason = index(server)[("mlp", "3")]
        assert state == "UNAVAILABLE" and "sha256" in reason
        load.settle_on(is_model(2, 3))
        # Removed: the newest is version 1 again (the broken 3 never served).
        shutil.rmtree(store / "mlp" / "2")
        shutil.rmtree(store / "mlp" / "3")
        load.settle_on(is_model(1, 1))
        assert ("mlp", "3") not in index(server)  # its directory is gone: nothing to report
    finally:
        answers = load.stop()
        server.stop()
    # Every call answered OK, and each caller saw the versions in the order they came.
    stages = [is_model(1, 1), is_model(2, 2), is_model(2, 3), is_model(1, 1)]
    for calls in answers:
        stage = 0
        for answer in calls:
            assert answer.code == "OK", answer
            while not stages[stage](answer):
                stage += 1
                assert stage < len(stages), (answer.version, answer.probabilities)
        assert stage == len(stages) - 1
    assert "Traceback" not in server.log


def test_poll_counts_loads_failures_and_unloads(store: Path) -> None:
    server = ServerProcess(
        "--model-control-mode", "poll", "--repository-poll-secs", "0.2", store=store
    )
    try:
        assert counter(server, "digits_model_loads_total", "1") == 1
        copy_version(store, 2, 2)
        copy_version(store, 3, 3, corrupt=True)
        wait_for(lambda: counter(server, "digits_model_load_failures_total", "3") == 1, timeout=20)
        wait_for(lambda: counter(server, "digits_model_loads_total", "2") == 1)
        time.sleep(1)  # several polls: a version that failed as it is is not retried
        assert counter(server, "digits_model_load_failures_total", "3") == 1
        shutil.rmtree(store / "mlp" / "2")
        wait_for(lambda: counter(server, "digits_model_unloads_total", "2") == 1, timeout=20)
        samples = scrape(server)
        assert samples[("digits_model_versions_loaded", (("model", "mlp"),))] == 1
        assert "model mlp/3 not loaded: model.onnx sha256" in server.log
    finally:
        server.stop()


def test_a_version_policy_chooses_what_serves(store: Path) -> None:
    copy_version(store, 2, 2)
    copy_version(store, 3, 3)
    policy = {"version_policy": {"specific": {"versions": [1, 3]}}}
    (store / "mlp" / "config.json").write_text(json.dumps(policy))
    server = ServerProcess(
        "--model-control-mode", "poll", "--repository-poll-secs", "0.2", store=store
    )
    try:
        served = {v for (name, v), (state, _) in index(server).items() if state == "READY"}
        assert served == {"1", "3"}
        (store / "mlp" / "config.json").write_text(
            '{"version_policy": {"latest": {"num_versions": 1}}}'
        )
        wait_for(
            lambda: {v for (_, v), (s, _) in index(server).items() if s == "READY"} == {"3"},
            timeout=20,
        )
        (store / "mlp" / "config.json").write_text('{"version_policy": {"latest": {}}}')
        time.sleep(1)  # a broken policy changes nothing, and says why
        assert {v for (_, v), (s, _) in index(server).items() if s == "READY"} == {"3"}
        assert "num_versions" in index(server)[("mlp", "")][1]
    finally:
        server.stop()


def test_explicit_unload_and_load_under_load(store: Path) -> None:
    copy_version(store, 2, 2)
    server = ServerProcess("--model-control-mode", "explicit", "--load-model", "mlp", store=store)
    load = Load(server.address)
    grpc_client = triton_grpc.InferenceServerClient(server.address)
    http_client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        assert all(is_model(2, 2)(a) for a in load.latest())
        before_unload = time.monotonic()
        grpc_client.unload_model("mlp")
        unloaded = time.monotonic()
        load.settle_on(lambda a: a.code == "NOT_FOUND")
        assert not grpc_client.is_model_ready("mlp")
        assert health(server, "mlp") == "NOT_SERVING"
        assert index(server)[("mlp", "2")] == ("UNAVAILABLE", "unloaded")
        before_load = time.monotonic()
        http_client.load_model("mlp")
        load.settle_on(is_model(2, 2))
        assert grpc_client.is_model_ready("mlp")
        assert health(server, "mlp") == "SERVING"
    finally:
        answers = load.stop()
        grpc_client.close()
        http_client.close()
        server.stop()
    # A call sent a moment before the unload may still reach the server after it: 20 ms.
    for calls in answers:
        for answer in calls:
            if answer.sent < before_unload - 0.02:
                assert is_model(2, 2)(answer), answer  # in flight at the unload: finished
            elif unloaded < answer.sent < before_load:
                assert answer.code == "NOT_FOUND", answer
            else:
                assert answer.code == "NOT_FOUND" or is_model(2, 2)(answer), answer


def test_explicit_load_refuses_a_broken_version_and_the_old_keeps_serving(store: Path) -> None:
    server = ServerProcess("--model-control-mode", "explicit", store=store)
    client = triton_grpc.InferenceServerClient(server.address)
    http_client = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        assert client.is_server_ready()  # nothing loaded yet, and ready to be asked
        assert not client.is_model_ready("mlp")
        client.load_model("mlp")
        assert client.is_model_ready("mlp", "1")
        copy_version(store, 3, 2, corrupt=True)
        with pytest.raises(InferenceServerException) as refused:
            client.load_model("mlp")
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "version 2" in refused.value.message() and "sha256" in refused.value.message()
        assert client.is_model_ready("mlp", "1") and not client.is_model_ready("mlp", "2")
        with pytest.raises(InferenceServerException) as missing:
            client.load_model("lenet")
        assert missing.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as missing_http:
            http_client.load_model("lenet")
        assert missing_http.value.status() == "404"
        # Fixed: the next load takes it.
        shutil.rmtree(store / "mlp" / "2")
        copy_version(store, 3, 2)
        http_client.load_model("mlp")
        assert client.is_model_ready("mlp", "2")
    finally:
        client.close()
        http_client.close()
        server.stop()


def test_load_and_unload_need_explicit_mode(store: Path) -> None:
    server = ServerProcess(store=store)
    client = triton_grpc.InferenceServerClient(server.address)
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model("mlp")
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "--model-control-mode explicit" in refused.value.message()
        assert client.is_model_ready("mlp")
    finally:
        client.close()
        server.stop()
