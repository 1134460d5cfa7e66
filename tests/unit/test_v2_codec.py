"""The V2 input codec: header checks before any pixel is touched, and non-finite pixels."""

from __future__ import annotations

import numpy as np
import pytest

from service._proto.inference import grpc_service_pb2 as pb
from service.domain.preprocess import sanitised
from service.errors import InvalidInput
from service.transport.v2 import checked_input


def request(images: np.ndarray, shape: list[int] | None = None) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="mlp")
    message.inputs.add(name="image", datatype="FP32", shape=shape or list(images.shape))
    message.raw_input_contents.append(images.astype("<f4").tobytes())
    return message


def test_non_finite_pixels_become_the_nearest_bound_and_nan_becomes_zero() -> None:
    values = np.array([np.nan, np.inf, -np.inf, -0.5, 0.25, 1.5], dtype=np.float32)
    images = np.zeros((1, 1, 28, 28), dtype=np.float32)
    images.flat[:6] = values
    pixels = sanitised(*checked_input(request(images)))
    assert pixels.dtype == np.float32 and pixels.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(pixels.flat[:6], [0.0, 1.0, 0.0, 0.0, 0.25, 1.0])
    assert not pixels.flat[6:].any()


def test_typed_contents_decode_like_raw_bytes() -> None:
    images = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    typed = pb.ModelInferRequest(model_name="mlp")
    tensor = typed.inputs.add(name="image", datatype="FP32", shape=[2, 1, 28, 28])
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    np.testing.assert_array_equal(
        sanitised(*checked_input(typed)), sanitised(*checked_input(request(images)))
    )


def test_header_checks_name_the_field_before_decoding() -> None:
    images = np.zeros((3, 1, 28, 28), dtype=np.float32)
    with pytest.raises(InvalidInput, match=r"inputs\[0\].shape: expected \[N,1,28,28\]"):
        checked_input(request(images, shape=[3, 28, 28]))
    with pytest.raises(InvalidInput, match=r"raw_input_contents\[0\]: shape \[4, 1, 28, 28\]"):
        checked_input(request(images, shape=[4, 1, 28, 28]))
    count, raw = checked_input(request(images))
    assert count == 3 and isinstance(raw, bytes)
