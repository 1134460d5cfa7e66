"""`ModelStreamInfer` through the real tritonclient stream API and perf_analyzer --streaming."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ServerProcess, scrape
from tests.integration.test_perf_analyzer import run_perf_analyzer

Answer = tuple[grpcclient.InferResult | None, InferenceServerException | None]


def tensor(images: np.ndarray) -> grpcclient.InferInput:
    value = grpcclient.InferInput("image", list(images.shape), "FP32")
    value.set_data_from_numpy(images)
    return value


def raw_stream(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    """ModelStreamInfer taking serialised requests as they are, bytes that do not parse too."""
    return channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=lambda raw: raw,
        response_deserializer=v2.ModelStreamInferResponse.FromString,
    )


def test_each_request_is_answered_with_its_id_and_errors_stay_in_the_stream(
    server: ServerProcess,
) -> None:
    images = reference.test_images(12)
    expected = {
        model: reference.run(model, images, ["probabilities"])["probabilities"]
        for model in ("mlp", "convnet")
    }
    answers: queue.Queue[Answer] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.address)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        sent: dict[str, tuple[str, int] | str] = {}
        for i in range(12):
            model = ("mlp", "convnet")[i % 2]
            client.async_stream_infer(model, [tensor(images[i : i + 1])], request_id=f"ok-{i}")
            sent[f"ok-{i}"] = (model, i)
        client.async_stream_infer("lenet", [tensor(images[:1])], request_id="unknown-model")
        sent["unknown-model"] = "'lenet' is not served"
        wrong = images[:1].reshape(1, 28, 28, 1)
        client.async_stream_infer("mlp", [tensor(wrong)], request_id="wrong-shape")
        sent["wrong-shape"] = "inputs[0].shape"
        client.async_stream_infer("mlp", [tensor(images[:2])], request_id="after-errors")
        sent["after-errors"] = ("mlp", -1)
        got = [answers.get(timeout=30) for _ in sent]
    finally:
        client.stop_stream()
        client.close()

    errors = [error for result, error in got if error is not None]
    assert len(errors) == 2
    messages = " | ".join(str(error) for error in errors)
    assert "'lenet' is not served" in messages and "inputs[0].shape" in messages
    answered = {result.get_response().id: result for result, error in got if result is not None}
    assert set(answered) == {k for k, v in sent.items() if isinstance(v, tuple)}
    for request_id, result in answered.items():
        model, row = sent[request_id]  # type: ignore[misc]
        probabilities = result.as_numpy("probabilities")
        want = expected[model][:2] if row == -1 else expected[model][row : row + 1]
        np.testing.assert_allclose(probabilities, want, atol=1e-5)


def test_a_message_that_does_not_parse_is_answered_in_the_stream(server: ServerProcess) -> None:
    channel = grpc.insecure_channel(server.address)
    stream = raw_stream(channel)
    good = v2.ModelInferRequest(model_name="mlp", id="good")
    good.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    good.raw_input_contents.append(reference.test_images(1).tobytes())
    try:
        responses = list(stream(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=30))
    finally:
        channel.close()
    assert len(responses) == 2
    errors = [r.error_message for r in responses if r.error_message]
    assert errors == ["request: not a valid message (DecodeError)"]
    assert [r.infer_response.id for r in responses if not r.error_message] == ["good"]


def test_stream_requests_are_counted(server: ServerProcess) -> None:
    key = ("digits_requests_total", (("api", "v2_stream"), ("code", "OK"), ("model", "mlp")))
    before = scrape(server).get(key, 0.0)
    client = grpcclient.InferenceServerClient(server.address)
    answers: queue.Queue[Answer] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(5):
            client.async_stream_infer("mlp", [tensor(reference.test_images(1))], request_id=str(i))
        assert all(answers.get(timeout=30)[1] is None for _ in range(5))
    finally:
        client.stop_stream()
        client.close()
    assert scrape(server).get(key, 0.0) - before == 5


def test_perf_analyzer_streams(server: ServerProcess) -> None:
    key = ("digits_requests_total", (("api", "v2_stream"), ("code", "OK"), ("model", "mlp")))
    before = scrape(server).get(key, 0.0)
    run_perf_analyzer(server, "-m mlp --streaming --concurrency-range 4")
    assert scrape(server).get(key, 0.0) - before >= 50


def test_sigterm_ends_an_open_stream_unavailable_without_waiting_out_the_grace() -> None:
    server = ServerProcess("--grace-period-s", "60")
    hold = threading.Event()
    request = v2.ModelInferRequest(model_name="mlp", id="one")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(reference.test_images(1).tobytes())

    def requests() -> Iterator[bytes]:
        yield request.SerializeToString()
        yield request.SerializeToString()
        hold.wait(60)  # the client keeps its side open

    channel = grpc.insecure_channel(server.address)
    try:
        stream = raw_stream(channel)
        responses = stream(requests(), timeout=60)
        first = [next(responses), next(responses)]
        assert [r.infer_response.id for r in first] == ["one", "one"]
        signalled = time.monotonic()
        server.signal()
        with pytest.raises(grpc.RpcError) as ended:
            next(responses)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert server.wait(30) == 0
        assert time.monotonic() - signalled < 10  # not the 60 s grace
        assert "Traceback" not in server.log
    finally:
        hold.set()
        channel.close()
        server.kill()


def test_a_cancelled_stream_drops_its_queued_work() -> None:
    # One image a batch, on the model's thread: 30 requests of 100 images queue for seconds.
    server = ServerProcess(
        "--models", "convnet", "--max-batch-size", "1", "--max-inline-cost-us", "0",
        "--max-lone-inline-cost-us", "0", "--max-queue-size", "10000",
    )  # fmt: skip
    request = v2.ModelInferRequest(model_name="convnet")
    request.inputs.add(name="image", datatype="FP32", shape=[100, 1, 28, 28])
    request.raw_input_contents.append(reference.test_images(100).tobytes())
    channel = grpc.insecure_channel(server.address)
    try:
        stream = raw_stream(channel)
        responses = stream(iter([request.SerializeToString()] * 30), timeout=120)
        assert not next(responses).error_message  # the first 100 rows ran
        responses.cancel()  # type: ignore[attr-defined]
        stub = v2_grpc.GRPCInferenceServiceStub(channel)

        def inferred() -> int:
            stats = stub.ModelStatistics(v2.ModelStatisticsRequest(name="convnet"), timeout=5)
            return int(stats.model_stats[0].inference_count)

        time.sleep(1.0)
        settled = inferred()
        time.sleep(1.0)
        assert inferred() == settled < 3000  # nothing more runs for the stream that went away
    finally:
        channel.close()
        server.kill()
