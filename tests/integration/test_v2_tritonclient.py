"""KServe V2 through the real tritonclient.grpc against the real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.settings import Settings
from tests.integration import reference
from tests.integration.server import ServerProcess

MODELS = ["convnet", "mlp"]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.address)


def infer(
    client: grpcclient.InferenceServerClient,
    model: str,
    images: np.ndarray,
    outputs: list[str] | None = None,
    version: str = "",
) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    return client.infer(model, [tensor], model_version=version, outputs=requested)


def test_server_is_live_and_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata().name == "digits-serving"


def runs_on_cuda(server: ServerProcess) -> bool:
    """What the server's start-up line says its sessions use."""
    (line,) = [line for line in server.lines if "service.store.runtime: device:" in line]
    return "device: CUDA:" in line


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_and_config_speak_triton(
    server: ServerProcess, client: grpcclient.InferenceServerClient, model: str
) -> None:
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    assert meta.platform == "onnxruntime_onnx"
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("image", "FP32", [-1, 1, 28, 28])
    ]
    assert [(o.name, list(o.shape)) for o in meta.outputs] == [
        ("probabilities", [-1, 10]),
        ("logits", [-1, 10]),
        ("not_digit", [-1]),
    ]
    config = client.get_model_config(model, as_json=True)["config"]
    on_cuda = runs_on_cuda(server)
    defaults = Settings().on_cuda() if on_cuda else Settings()
    assert config["max_batch_size"] == defaults.max_batch_size
    (instances,) = config["instance_group"]
    assert (instances["kind"], instances.get("gpus")) == (
        ("KIND_GPU", [0]) if on_cuda else ("KIND_CPU", None)
    )
    assert config["input"][0]["dims"] == ["1", "28", "28"]


@pytest.mark.parametrize("model", MODELS)
def test_infer_equals_direct_onnxruntime(
    client: grpcclient.InferenceServerClient, model: str
) -> None:
    images = reference.test_images(8)
    result = infer(client, model, images)
    expected = reference.run(model, images, ["probabilities", "logits", "not_digit"])
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-5, atol=1e-6)
    labels = reference.mnist_test().labels[:8]
    assert (result.as_numpy("probabilities").argmax(1) == labels).mean() >= 0.75


@pytest.mark.parametrize("model", MODELS)
def test_layer_outputs_are_served_by_name(
    client: grpcclient.InferenceServerClient, model: str
) -> None:
    layers = [
        o["name"]
        for o in reference.manifest(model)["outputs"]  # type: ignore[attr-defined]
        if o["name"].startswith("layer.")
    ]
    images = reference.test_images(3, offset=100)
    result = infer(client, model, images, outputs=layers)
    expected = reference.run(model, images, layers)
    for name in layers:
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=1e-5, atol=1e-5)
    assert result.as_numpy("probabilities") is None  # only what was asked for


def test_non_finite_pixels_get_finite_answers(client: grpcclient.InferenceServerClient) -> None:
    images = np.full((2, 1, 28, 28), np.nan, dtype=np.float32)
    images[1] = np.inf
    result = infer(client, "mlp", images)
    for name in ("probabilities", "logits", "not_digit"):
        assert np.isfinite(result.as_numpy(name)).all(), name


def test_a_version_can_be_named(client: grpcclient.InferenceServerClient) -> None:
    result = infer(client, "mlp", reference.test_images(1), version="1")
    assert result.get_response().model_version == "1"


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ([2, 1, 28, 27], "FP32", "inputs[0].shape"),
        ([2, 784], "FP32", "inputs[0].shape"),
        ([1, 1, 28, 28], "FP16", "inputs[0].datatype"),
        ([1, 1, 28, 28], "INT32", "inputs[0].datatype"),
    ],
)
def test_bad_input_answers_invalid_argument_naming_the_field(
    client: grpcclient.InferenceServerClient, shape: list[int], dtype: str, message: str
) -> None:
    numpy_dtype = {"FP32": np.float32, "FP16": np.float16, "INT32": np.int32}[dtype]
    tensor = grpcclient.InferInput("image", shape, dtype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=numpy_dtype))
    with pytest.raises(InferenceServerException) as err:
        client.infer("mlp", [tensor])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in err.value.message()


def test_wrong_byte_count_answers_invalid_argument(server: ServerProcess) -> None:
    """tritonclient checks sizes itself, so this request is built with its raw protobuf stub."""
    request = service_pb2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="image", datatype="FP32", shape=[2, 1, 28, 28])
    request.raw_input_contents.append(np.zeros((1, 1, 28, 28), np.float32).tobytes())
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents[0]: shape [2, 1, 28, 28] needs 6272 bytes" in err.value.details()


@pytest.mark.parametrize(
    ("model", "version", "output", "message"),
    [
        ("resnet", "", None, "model 'resnet' is not served"),
        ("mlp", "99", None, "has no version 99"),
        ("mlp", "", "layer.conv1", "outputs[0]: model 'mlp' has no output 'layer.conv1'"),
    ],
)
def test_unknown_names_answer_not_found(
    client: grpcclient.InferenceServerClient,
    model: str,
    version: str,
    output: str | None,
    message: str,
) -> None:
    with pytest.raises(InferenceServerException) as err:
        infer(client, model, reference.test_images(1), [output] if output else None, version)
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert message in err.value.message()


def test_statistics_and_repository_index(client: grpcclient.InferenceServerClient) -> None:
    infer(client, "mlp", reference.test_images(4))
    stats = client.get_inference_statistics("mlp", as_json=True)["model_stats"]
    assert int(stats[0]["inference_count"]) >= 4
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {("mlp", "READY"), ("convnet", "READY")}
