"""Each protective limit, at its edge (served) and just past it (refused with a precise status)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ServerProcess, inflight, wait_for

MAX_MESSAGE = 64 * 1024
MAX_IMAGES = 4
MAX_ENCODED = 4000
MAX_PIXELS = 200 * 200


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    server = ServerProcess(
        "--models",
        '["mlp"]',
        "--max-message-bytes",
        str(MAX_MESSAGE),
        "--max-images-per-request",
        str(MAX_IMAGES),
        "--max-queue-size",
        "64",
        "--max-encoded-image-bytes",
        str(MAX_ENCODED),
        "--max-image-pixels",
        str(MAX_PIXELS),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def channel(limited: ServerProcess) -> Iterator[grpc.Channel]:
    # The client may send more than the server accepts: the server's limit is under test.
    with grpc.insecure_channel(
        limited.address, options=[("grpc.max_send_message_length", 1 << 24)]
    ) as channel:
        yield channel


def classify(channel: grpc.Channel, images: list[digits_pb2.Image]) -> grpc.StatusCode:
    request = digits_pb2.ClassifyRequest(model="mlp", images=images)
    try:
        digits_pb2_grpc.DigitsStub(channel).Classify(request, timeout=10)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def encoded(side: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(side)
    pixels = (
        rng.integers(0, 256, (side, side), dtype=np.uint8)
        if noise
        else np.zeros((side, side), np.uint8)
    )
    pixels[side // 4 : 3 * side // 4, side // 2] = 255  # a stroke, so there is ink
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_images_per_request(channel: grpc.Channel) -> None:
    pixel = digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.0] * 784))
    assert classify(channel, [pixel] * MAX_IMAGES) == grpc.StatusCode.OK
    assert classify(channel, [pixel] * (MAX_IMAGES + 1)) == grpc.StatusCode.INVALID_ARGUMENT
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    for n, code in (
        (MAX_IMAGES, grpc.StatusCode.OK),
        (MAX_IMAGES + 1, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        request = v2.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="image", datatype="FP32", shape=[n, 1, 28, 28])
        request.raw_input_contents.append(reference.test_images(n).tobytes())
        try:
            stub.ModelInfer(request, timeout=10)
            got = grpc.StatusCode.OK
        except grpc.RpcError as err:
            got = err.code()
        assert got == code, n


def test_encoded_bytes(channel: grpc.Channel) -> None:
    small = encoded(28)
    assert len(small) <= MAX_ENCODED
    assert classify(channel, [digits_pb2.Image(encoded=small)]) == grpc.StatusCode.OK
    big = encoded(120, noise=True)
    assert MAX_ENCODED < len(big) < MAX_MESSAGE
    assert classify(channel, [digits_pb2.Image(encoded=big)]) == grpc.StatusCode.INVALID_ARGUMENT


def test_decoded_pixels(channel: grpc.Channel) -> None:
    at_edge, past_edge = encoded(200), encoded(201)
    assert max(len(at_edge), len(past_edge)) <= MAX_ENCODED
    assert classify(channel, [digits_pb2.Image(encoded=at_edge)]) == grpc.StatusCode.OK
    assert (
        classify(channel, [digits_pb2.Image(encoded=past_edge)]) == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_message_size(channel: grpc.Channel) -> None:
    """A message over --max-message-bytes is refused by gRPC itself, before any parsing."""
    pixel = digits_pb2.Image(pixels=digits_pb2.Pixels(data=[0.5] * 784))
    fits = digits_pb2.ClassifyRequest(model="mlp", images=[pixel] * MAX_IMAGES)
    assert fits.ByteSize() < MAX_MESSAGE
    padding = digits_pb2.Image(encoded=b"\0" * MAX_MESSAGE)
    assert classify(channel, [padding]) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert classify(channel, list(fits.images)) == grpc.StatusCode.OK


def test_concurrent_rpcs() -> None:
    """With --max-concurrent-rpcs 1, a second call while one runs is refused at once."""
    server = ServerProcess(
        "--models", '["convnet"]', "--max-concurrent-rpcs", "1", "--max-batch-size", "1"
    )
    try:
        slow = v2.ModelInferRequest(model_name="convnet")
        images = reference.test_images(512)
        slow.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
        slow.raw_input_contents.append(images.tobytes())
        quick = v2.ModelInferRequest(model_name="convnet")
        quick.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
        quick.raw_input_contents.append(images[:1].tobytes())
        with grpc.insecure_channel(server.address) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            running = stub.ModelInfer.future(slow, timeout=60)
            wait_for(lambda: inflight(server, "convnet") >= 1 or running.done())
            codes = []
            while not running.done() and len(codes) < 200:
                try:
                    stub.ModelInfer(quick, timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as err:
                    codes.append(err.code())
            assert running.result().outputs  # the running call was not disturbed
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
            stub.ModelInfer(quick, timeout=10)  # and once it is done, calls are served again
    finally:
        server.stop()
