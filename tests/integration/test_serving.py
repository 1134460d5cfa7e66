"""digits.v1, health, reflection, metrics and concurrency against the real server."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from service.store.device import plan, probe_driver
from tests.integration import reference
from tests.integration.server import ServerProcess, scrape
from training import data


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> grpc.Channel:
    return grpc.insecure_channel(server.address)


@pytest.fixture(scope="module")
def digits(channel: grpc.Channel) -> digits_pb2_grpc.DigitsStub:
    return digits_pb2_grpc.DigitsStub(channel)


def png(pixels: np.ndarray, scale: int = 10, invert: bool = True) -> bytes:
    """A big, black-on-white PNG of an MNIST digit: what a person would upload."""
    grey = (pixels * 255).astype(np.uint8)
    image = Image.fromarray(255 - grey if invert else grey).resize((28 * scale, 28 * scale))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_classify_png_uploads(digits: digits_pb2_grpc.DigitsStub) -> None:
    images = reference.test_images(20)[:, 0]
    request = digits_pb2.ClassifyRequest(
        model="mlp",
        include_not_digit=True,
        images=[digits_pb2.Image(encoded=png(image)) for image in images],
    )
    response = digits.Classify(request, timeout=10)
    assert (response.model, response.version) == ("mlp", reference.newest("mlp"))
    predicted = [r.digit for r in response.results]
    labels = reference.mnist_test().labels[:20].tolist()
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 17
    for result in response.results:
        assert result.HasField("not_digit")
        assert result.confidence == pytest.approx(max(result.probabilities))
        assert 0 <= result.top2_margin <= result.confidence


def test_classify_pixels_equals_direct_onnxruntime(digits: digits_pb2_grpc.DigitsStub) -> None:
    images = reference.test_images(4, offset=50)
    request = digits_pb2.ClassifyRequest(
        model="mlp",
        layers=["*"],
        include_logits=True,
        images=[digits_pb2.Image(pixels=digits_pb2.Pixels(data=i.ravel())) for i in images],
    )
    response = digits.Classify(request, timeout=10)
    expected = reference.run("mlp", images, ["probabilities", "logits", "layer.hidden1"])
    for i, result in enumerate(response.results):
        assert not result.HasField("not_digit")
        np.testing.assert_allclose(result.probabilities, expected["probabilities"][i], atol=1e-6)
        np.testing.assert_allclose(result.logits, expected["logits"][i], atol=1e-5)
        assert [t.name for t in result.layers] == ["hidden1", "hidden2"]
        hidden1 = np.frombuffer(result.layers[0].data, "<f4").reshape(result.layers[0].shape)
        np.testing.assert_allclose(hidden1, expected["layer.hidden1"][i], atol=1e-6)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (digits_pb2.ClassifyRequest(model="mlp"), "INVALID_ARGUMENT", "images: at least one"),
        (
            digits_pb2.ClassifyRequest(
                model="mlp",
                images=[
                    digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.5] * 784)),
                    digits_pb2.Image(encoded=b"\x89PNG\r\n\x1a\n garbage"),
                ],
            ),
            "INVALID_ARGUMENT",
            "images[1]",
        ),
        (
            digits_pb2.ClassifyRequest(
                model="mlp",
                images=[
                    digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.5] * 780)),
                ],
            ),
            "INVALID_ARGUMENT",
            "images[0].pixels",
        ),
        (
            digits_pb2.ClassifyRequest(model="mlp", images=[digits_pb2.Image()]),
            "INVALID_ARGUMENT",
            "images[0]",
        ),
        (
            digits_pb2.ClassifyRequest(
                model="mlp",
                layers=["conv9"],
                images=[
                    digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.0] * 784)),
                ],
            ),
            "NOT_FOUND",
            "layers[0]: model 'mlp' has no layer 'conv9'",
        ),
        (digits_pb2.ClassifyRequest(model="nope"), "NOT_FOUND", "model 'nope' is not served"),
        (
            digits_pb2.ClassifyRequest(model="mlp", images=[digits_pb2.Image(encoded=b"x")] * 1025),
            "INVALID_ARGUMENT",
            "images: 1025 images exceed the limit of 1024",
        ),
        (
            digits_pb2.ClassifyRequest(model="mlp", images=[digits_pb2.Image(encoded=b"GIF89a..")]),
            "INVALID_ARGUMENT",
            "images[0].encoded",
        ),
    ],
)
def test_bad_classify_requests_get_precise_status(
    digits: digits_pb2_grpc.DigitsStub,
    request_: digits_pb2.ClassifyRequest,
    code: str,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        digits.Classify(request_, timeout=10)
    assert err.value.code().name == code
    assert message in err.value.details()


def test_decompression_bomb_is_refused_and_the_server_carries_on(
    digits: digits_pb2_grpc.DigitsStub,
) -> None:
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, format="PNG")  # ~100 KB, 900 M pixels declared
    request = digits_pb2.ClassifyRequest(
        model="mlp", images=[digits_pb2.Image(encoded=bomb.getvalue())]
    )
    with pytest.raises(grpc.RpcError) as err:
        digits.Classify(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images[0].encoded" in err.value.details()
    fine = digits_pb2.ClassifyRequest(
        model="mlp",
        images=[
            digits_pb2.Image(pixels=digits_pb2.Pixels(data=reference.test_images(1)[0].ravel()))
        ],
    )
    assert digits.Classify(fine, timeout=10).results[0].digit == reference.mnist_test().labels[0]


def test_list_and_get_models(digits: digits_pb2_grpc.DigitsStub) -> None:
    listed = digits.ListModels(digits_pb2.ListModelsRequest(), timeout=10).models
    assert [m.name for m in listed] == sorted(m.name for m in listed)
    mlp = digits.GetModel(digits_pb2.GetModelRequest(name="mlp"), timeout=10)
    assert mlp.parameters == 13_002
    assert mlp.ready and mlp.device == "CPU"
    assert [(t.name, list(t.shape)) for t in mlp.layers] == [("hidden1", [16]), ("hidden2", [16])]
    assert mlp.test_accuracy == reference.manifest("mlp")["metrics"]["test_accuracy"]  # type: ignore[index]


def test_health_overall_and_per_model(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mlp", "digits.v1.Digits", "inference.GRPCInferenceService"):
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="resnet"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="digits.v1.Digits"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "digits.v1.Digits", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_metrics_count_what_was_sent(server: ServerProcess, channel: grpc.Channel) -> None:
    def value(
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
    ) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = scrape(server)
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    images = reference.test_images(3, offset=200)
    request = v2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="image", datatype="FP32", shape=[3, 1, 28, 28])
    request.raw_input_contents.append(images.tobytes())
    for _ in range(5):
        stub.ModelInfer(request, timeout=10)
    single = v2.ModelInferRequest(model_name="mlp")  # one image: counted on its own path
    single.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    single.raw_input_contents.append(images[:1].tobytes())
    stub.ModelInfer(single, timeout=10)
    bad = v2.ModelInferRequest(model_name="mlp")
    bad.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(bad, timeout=10)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("digits_requests_total", model="mlp", api="v2", code="OK") == 6
    assert delta("digits_requests_total", model="mlp", api="v2", code="INVALID_ARGUMENT") == 2
    assert delta("digits_request_duration_seconds_count", model="mlp", api="v2") == 8
    assert delta("digits_batch_size_sum", model="mlp") == 16
    # Each image counted under its own label: the digit, or not_digit past the threshold.
    direct = reference.run("mlp", images, ["probabilities", "not_digit"])
    threshold = float(reference.manifest("mlp")["not_digit_threshold"])  # type: ignore[arg-type]
    labels = [
        "not_digit" if score > threshold else str(int(row.argmax()))
        for row, score in zip(direct["probabilities"], direct["not_digit"], strict=True)
    ]
    expected = Counter({label: 5 * labels.count(label) for label in labels})
    expected[labels[0]] += 1
    for label in [*map(str, range(10)), "not_digit"]:
        assert delta("digits_predictions_total", model="mlp", label=label) == expected[label]
    assert value(after, "digits_inflight_requests", model="mlp") == 0
    assert any(name == "digits_build_info" for name, _ in after)


def test_200_concurrent_mixed_requests_each_get_their_own_rows(server: ServerProcess) -> None:
    """Sizes, models and outputs mixed; every answer equals direct onnxruntime on its rows."""
    rng = random.Random(7)
    models = ["mlp", "convnet"] if (reference.STORE / "convnet").is_dir() else ["mlp"]
    plans = []
    for i in range(200):
        model = rng.choice(models)
        layers = [
            o["name"]
            for o in reference.manifest(model)["outputs"]  # type: ignore[attr-defined]
            if o["name"].startswith("layer.")
        ]
        outputs = rng.sample(["probabilities", "logits", "not_digit", *layers], k=rng.randint(1, 3))
        count = rng.choice([1, 1, 2, 5, 17, 64, 100])
        plans.append((model, outputs, reference.test_images(count, offset=(i * 37) % 9000)))

    async def run_all() -> list[v2.ModelInferResponse]:
        async with grpc.aio.insecure_channel(
            server.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)

            async def one(
                model: str, outputs: list[str], images: np.ndarray
            ) -> v2.ModelInferResponse:
                request = v2.ModelInferRequest(model_name=model)
                request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
                request.raw_input_contents.append(images.tobytes())
                for name in outputs:
                    request.outputs.add(name=name)
                return await stub.ModelInfer(request, timeout=60)

            return await asyncio.gather(*(one(*plan) for plan in plans))

    responses = asyncio.run(run_all())
    for (model, outputs, images), response in zip(plans, responses, strict=True):
        expected = reference.run(model, images, outputs)
        assert [o.name for o in response.outputs] == outputs
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
            got = np.frombuffer(raw, "<f4").reshape(tensor.shape)
            np.testing.assert_allclose(got, expected[tensor.name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_inverted_pictures_keep_99_percent_of_direct_accuracy(
    digits: digits_pb2_grpc.DigitsStub, fmt: str
) -> None:
    """1,000 MNIST test digits as 280x280 black-on-white files, through preprocessing."""
    model = "convnet" if (reference.STORE / "convnet").is_dir() else "mlp"
    images = reference.test_images(1000, offset=3000)
    labels = reference.mnist_test().labels[3000:4000]
    direct = reference.run(model, images, ["probabilities"])["probabilities"].argmax(1) == labels

    def encode(pixels: np.ndarray) -> bytes:
        grey = Image.fromarray(255 - (pixels * 255).astype(np.uint8)).resize((280, 280))
        out = io.BytesIO()
        grey.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return out.getvalue()

    predicted: list[int] = []
    for start in range(0, 1000, 100):
        request = digits_pb2.ClassifyRequest(
            model=model,
            images=[digits_pb2.Image(encoded=encode(i[0])) for i in images[start : start + 100]],
        )
        predicted += [r.digit for r in digits.Classify(request, timeout=30).results]
    through_files = (np.array(predicted) == labels).mean()
    assert through_files >= 0.99 * direct.mean(), (through_files, direct.mean())


def test_device_choice_is_one_clear_log_line(server: ServerProcess) -> None:
    """On a machine without a GPU: one line saying so and why (what the driver probe of this
    machine says), what the sessions use, and no onnxruntime CUDA error spew."""
    device_lines = [line for line in server.lines if "service.store.runtime: device:" in line]
    assert len(device_lines) == 1, device_lines
    expected = plan("auto", 0, ort.get_available_providers(), probe_driver())
    if expected.try_cuda:  # a GPU machine: the line names the device (or the failed library)
        assert f"device: {expected.gpu}" in device_lines[0] or "asked for CUDA" in device_lines[0]
        return
    assert f"device: CPU ({expected.reason}); sessions use CPUExecutionProvider" in device_lines[0]
    assert not [line for line in server.lines if "ERROR" in line or "[E:onnxruntime" in line]
    assert "libcudart" not in server.log and "Failed to load" not in server.log


def test_not_digit_verdict_flips_where_it_should(digits: digits_pb2_grpc.DigitsStub) -> None:
    """Through preprocessing and the real service: clothing is not a digit, digits are."""
    fashion = data.load_split(reference.MNIST.parent / "fashion-mnist", "test").images[:20]
    clear = reference.test_images(20, offset=500)[:, 0]
    request = digits_pb2.ClassifyRequest(
        model="convnet",
        include_not_digit=True,
        images=[digits_pb2.Image(encoded=png(i / 255.0, invert=False)) for i in fashion]
        + [digits_pb2.Image(encoded=png(i)) for i in clear],
    )
    results = digits.Classify(request, timeout=30).results
    # convnet v2 flagged 18 or more of these 20; v3, trained on clothing as it comes but never
    # cropped and centred as the service does to an encoded image, flags 17.
    assert sum(not r.not_digit.is_digit for r in results[:20]) >= 17
    assert all(r.not_digit.is_digit for r in results[20:])
