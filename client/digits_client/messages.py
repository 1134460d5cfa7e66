"""digits.v1 messages ↔ the client's plain values: what a call sends and what it gives back.

Images in (files, bytes or 28x28 arrays) become a `ClassifyRequest`; `Result` and `ModelInfo`
become frozen dataclasses; a failed call becomes `DigitsError(code, message)`. Nothing here
opens a channel: `digits_client.client` does, sync and asyncio alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from digits_client._proto.digits.v1 import digits_pb2 as pb

DEFAULT_MODEL = "convnet"
FloatArray: TypeAlias = npt.NDArray[np.float32]
ImageInput: TypeAlias = bytes | str | Path | npt.NDArray[Any]


class DigitsError(Exception):
    """A failed call: `code` is the gRPC status name ("NOT_FOUND"), `message` the server's words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays has no single truth value
class Classification:
    """One image's answer."""

    digit: int
    confidence: float
    probabilities: FloatArray
    """Ten probabilities, indexed by digit."""
    top2_margin: float
    """Best minus second-best probability; small means ambiguous."""
    not_digit: float | None = None
    """Not-a-digit score in [0, 1] (higher: less like a digit); None unless asked for."""
    is_digit: bool | None = None
    threshold: float | None = None
    logits: FloatArray | None = None
    layers: dict[str, FloatArray] = field(default_factory=dict)
    """Activations by layer name, in the order the layers run, shaped as ModelSummary.layers."""

    @property
    def runner_up(self) -> int:
        """The second most probable digit."""
        return int(np.argsort(self.probabilities)[-2])


@dataclass(frozen=True)
class ModelSummary:
    """One model version as the server describes it."""

    name: str
    version: int
    versions: tuple[int, ...]
    architecture: str
    parameters: int
    test_accuracy: float
    not_digit_threshold: float
    layers: dict[str, tuple[int, ...]]
    """Layer name → per-image activation shape, in the order the layers run."""
    ready: bool
    device: str


def image_message(image: ImageInput, index: int = 0) -> pb.Image:
    """bytes: an encoded file; str/Path: a file to read; array: 28x28 pixels (0-1 float, uint8)."""
    if isinstance(image, bytes):
        return pb.Image(encoded=image)
    if isinstance(image, str | Path):
        return pb.Image(encoded=Path(image).read_bytes())
    array = np.asarray(image)
    if array.size != 28 * 28 or array.squeeze().shape != (28, 28):
        raise ValueError(f"images[{index}]: want a 28x28 array, got shape {array.shape}")
    values = array.astype(np.float32).reshape(-1)
    if array.dtype == np.uint8:
        values /= 255.0
    return pb.Image(pixels=pb.Pixels(data=values.tolist()))


def classify_request(
    images: Sequence[ImageInput],
    model: str,
    version: int,
    not_digit: bool,
    layers: Sequence[str],
    logits: bool,
) -> pb.ClassifyRequest:
    if isinstance(images, bytes | str | Path | np.ndarray):
        raise TypeError("images: pass a sequence of images, e.g. [image]")
    return pb.ClassifyRequest(
        model=model,
        version=version,
        images=[image_message(image, i) for i, image in enumerate(images)],
        include_not_digit=not_digit,
        layers=list(layers),
        include_logits=logits,
    )


def _floats(values: Sequence[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float32)


def classification(result: pb.Result) -> Classification:
    has_not_digit = result.HasField("not_digit")
    return Classification(
        digit=result.digit,
        confidence=result.confidence,
        probabilities=_floats(result.probabilities),
        top2_margin=result.top2_margin,
        not_digit=result.not_digit.score if has_not_digit else None,
        is_digit=result.not_digit.is_digit if has_not_digit else None,
        threshold=result.not_digit.threshold if has_not_digit else None,
        logits=_floats(result.logits) if result.logits else None,
        layers={
            t.name: np.frombuffer(t.data, "<f4").reshape(tuple(t.shape)) for t in result.layers
        },
    )


def model_summary(info: pb.ModelInfo) -> ModelSummary:
    return ModelSummary(
        name=info.name,
        version=info.version,
        versions=tuple(info.versions),
        architecture=info.architecture,
        parameters=info.parameters,
        test_accuracy=info.test_accuracy,
        not_digit_threshold=info.not_digit_threshold,
        layers={t.name: tuple(t.shape) for t in info.layers},
        ready=info.ready,
        device=info.device,
    )


def digits_error(error: grpc.RpcError) -> DigitsError:
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        code, details = error.code(), error.details()
        return DigitsError(code.name if code else "UNKNOWN", details or "")
    return DigitsError("UNKNOWN", str(error))


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """grpc.RpcError → DigitsError, so callers need no grpc import."""
    try:
        yield
    except grpc.RpcError as error:
        raise digits_error(error) from None


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def unknown_service(error: grpc.RpcError) -> str:
    """A failed health check: "SERVICE_UNKNOWN" when the server has no such service (it answers
    NOT_FOUND), else the failure as a DigitsError."""
    failure = digits_error(error)
    if failure.code == "NOT_FOUND":
        return "SERVICE_UNKNOWN"
    raise failure from None
