"""Hostile input against the real server: random and mutated requests on both parsed paths.

Every request must get a status within its deadline, never INTERNAL or UNKNOWN (OK is fine when
the random input happens to be valid), and afterwards the server must still answer a well-formed
request exactly as onnxruntime does directly.

`make test` runs 100 derandomized examples per path (about 5 s in all). A longer, random run by
hand, with a tally of the status codes that came back:

    DIGITS_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/integration/test_fuzz.py \
        --hypothesis-show-statistics
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from service._proto.digits.v1 import digits_pb2, digits_pb2_grpc
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ServerProcess

EXAMPLES = int(os.environ.get("DIGITS_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="DIGITS_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMEOUT = 10.0  # per call: a hang shows as DEADLINE_EXCEEDED, which fails the property
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
INFER = "/inference.GRPCInferenceService/ModelInfer"
CLASSIFY = "/digits.v1.Digits/Classify"
PIXELS = 28 * 28

# Numbers a parser trips on: zero, negatives, the edges of int64, past the image limit.
dims = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 1, 2, 28, 1025, 2**31, 2**62, 2**63 - 1]),
    st.integers(-3, 40),
)
names = st.one_of(
    st.sampled_from(["", "image", "probabilities", "layer.conv1"]), st.text(max_size=8)
)


def mostly(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """`good` four times in five: most requests must get past the lookups into the parsers."""
    return st.integers(0, 4).flatmap(lambda roll: hostile if roll == 0 else good)


models = mostly(st.sampled_from(["convnet", "mlp"]), st.sampled_from(["", "nope"]) | names)
versions = mostly(st.just(""), st.sampled_from(["1", "2", "0", "-1", "9" * 30]) | names)
outputs = mostly(
    st.sampled_from(["probabilities", "logits", "not_digit", "layer.conv1", "layer.hidden1"]),
    names,
)
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The call's status; `--hypothesis-show-statistics` shows how often each came back."""
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        field = re.split(r"[:' ]", exc.details() or "")[0]
        event(f"{code.name}: {field}")
        return code
    event("OK")
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> grpc.Channel:
    return grpc.insecure_channel(server.address)


def noise(draw: st.DrawFn, count: int) -> np.ndarray:
    """`count` float32s: uniform in [0,1] or wider, with a few hostile values dropped in."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    low, high = draw(st.sampled_from([(0.0, 1.0), (-2.0, 3.0), (-1e38, 1e38)]))
    data = rng.uniform(low, high, count).astype(np.float32)
    for _ in range(draw(st.integers(0, 3)) if count else 0):
        data[draw(st.integers(0, count - 1))] = draw(floats)
    return data


def mnist_digit() -> np.ndarray:
    return reference.test_images(1, offset=7)[0, 0]


def encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray((mnist_digit() * 255).astype(np.uint8)).resize((56, 56)).save(out, format=fmt)
    return out.getvalue()


VALID_IMAGES = (encoded("PNG"), encoded("JPEG"))


@st.composite
def infer_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(
        model_name=draw(models),
        model_version=draw(versions),
        id=draw(st.text(max_size=4)),
    )
    n = 1
    for _ in range(draw(mostly(st.just(1), st.sampled_from([0, 2])))):
        tensor = request.inputs.add(
            name=draw(mostly(st.just("image"), names)),
            datatype=draw(mostly(st.just("FP32"), st.sampled_from(["FP16", "BYTES", ""]) | names)),
        )
        # Mostly a nearly valid shape, so the parser gets past its first checks.
        n = draw(mostly(st.integers(1, 2), dims))
        shape = draw(mostly(st.just([n, 1, 28, 28]), st.lists(dims, max_size=5)))
        tensor.shape.extend(shape)
        if draw(st.booleans()):
            count = abs(n) * PIXELS if 0 < abs(n) <= 2 else draw(st.integers(0, 3 * PIXELS))
            count = max(0, count + draw(mostly(st.just(0), st.sampled_from([-1, 1]))))
            tensor.contents.fp32_contents.extend(noise(draw, count).tolist())
    for _ in range(draw(st.integers(0, 2))):
        # Right size for the shape, or off; random float32 bits (NaN, inf, denormals included).
        wrong = st.sampled_from([4 * PIXELS, 4 * PIXELS - 1, 0, 3, 8 * PIXELS])
        size = draw(mostly(st.just(4 * PIXELS * n if 0 < n <= 2 else 0), wrong))
        seed = draw(st.integers(0, 2**32 - 1))
        request.raw_input_contents.append(np.random.default_rng(seed).bytes(size))
    for name in draw(st.lists(outputs, max_size=3)):
        request.outputs.add(name=name)
    for key in draw(st.lists(st.text(max_size=6), max_size=3)):
        parameter = request.parameters[key]
        kind = draw(st.sampled_from(["bool", "int", "str"]))
        if kind == "bool":
            parameter.bool_param = draw(st.booleans())
        elif kind == "int":
            parameter.int64_param = draw(dims)
        else:
            parameter.string_param = draw(st.text(max_size=6))
    return request


def mutated(data: bytes, draw: st.DrawFn) -> bytes:
    """A few flips, truncations and insertions of an encoded image."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(buffer) - 1)))
        action = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if action == "flip" and buffer:
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del buffer[at:]
        elif action == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del buffer[at : at + draw(st.integers(1, 16))]
    return bytes(buffer)


@st.composite
def images(draw: st.DrawFn) -> digits_pb2.Image:
    kind = draw(st.sampled_from(["random", "mutated", "valid", "pixels", "empty"]))
    if kind == "random":
        return digits_pb2.Image(encoded=draw(st.binary(max_size=256)))
    if kind == "mutated":
        return digits_pb2.Image(encoded=mutated(draw(st.sampled_from(VALID_IMAGES)), draw))
    if kind == "valid":
        return digits_pb2.Image(encoded=draw(st.sampled_from(VALID_IMAGES)))
    if kind == "empty":
        return digits_pb2.Image()
    count = draw(st.sampled_from([PIXELS, PIXELS, 0, PIXELS - 1, PIXELS + 1, 3]))
    return digits_pb2.Image(pixels=digits_pb2.Pixels(data=noise(draw, count).tolist()))


@st.composite
def classify_requests(draw: st.DrawFn) -> digits_pb2.ClassifyRequest:
    return digits_pb2.ClassifyRequest(
        model=draw(models),
        version=draw(mostly(st.just(0), st.sampled_from([1, 2, -1]) | dims)),
        images=draw(mostly(st.lists(images(), min_size=1, max_size=3), st.just([]))),
        include_not_digit=draw(st.booleans()),
        include_logits=draw(st.booleans()),
        layers=draw(
            st.lists(mostly(st.sampled_from(["*", "conv1", "hidden1"]), names), max_size=2)
        ),
    )


def mutated_bytes(message: Any) -> st.SearchStrategy[bytes]:
    """Random bytes, or a serialized valid request with bytes flipped, cut or inserted."""

    @st.composite
    def strategy(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            return draw(st.binary(max_size=512))
        return mutated(message.SerializeToString(), draw)

    return strategy()


def well_formed_infer() -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(reference.test_images(1).tobytes())
    return request


def well_formed_classify() -> digits_pb2.ClassifyRequest:
    return digits_pb2.ClassifyRequest(
        model="convnet", images=[digits_pb2.Image(encoded=VALID_IMAGES[0])]
    )


@FUZZ
@given(request=infer_requests())
def test_v2_infer_survives_random_requests(
    channel: grpc.Channel, request: v2.ModelInferRequest
) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    assert code_of(lambda: stub.ModelInfer(request, timeout=TIMEOUT)) not in BAD


@FUZZ
@given(request=classify_requests())
def test_classify_survives_random_requests(
    channel: grpc.Channel, request: digits_pb2.ClassifyRequest
) -> None:
    stub = digits_pb2_grpc.DigitsStub(channel)
    assert code_of(lambda: stub.Classify(request, timeout=TIMEOUT)) not in BAD


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize(
    ("method", "valid"), [(INFER, well_formed_infer), (CLASSIFY, well_formed_classify)]
)
def test_raw_bytes_answer_invalid_argument_or_ok(
    channel: grpc.Channel, method: str, valid: Callable[[], Any], data: st.DataObject
) -> None:
    payload = data.draw(mutated_bytes(valid()))
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    assert code_of(lambda: call(payload, timeout=TIMEOUT)) not in BAD


def test_undecodable_bytes_answer_invalid_argument(channel: grpc.Channel) -> None:
    """Regression: grpc itself answered UNKNOWN with the DecodeError text, logging a traceback."""
    for method in (INFER, CLASSIFY):
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("request: not a valid message")


def test_server_answers_correctly_after_the_fuzzing(channel: grpc.Channel) -> None:
    images = reference.test_images(1)
    response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        well_formed_infer(), timeout=TIMEOUT
    )
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(1, 10)
    expected = reference.run("mlp", images, ["probabilities"])["probabilities"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    answer = digits_pb2_grpc.DigitsStub(channel).Classify(well_formed_classify(), timeout=TIMEOUT)
    assert answer.results[0].digit == int(reference.mnist_test().labels[7])
