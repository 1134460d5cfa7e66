"""A typed Python client for digits.v1: images in, plain dataclasses out, no grpc imports needed.

    with DigitsClient("localhost:8001") as client:
        [result] = client.classify(["seven.png"], model="mlp")
        print(result.digit, result.confidence, result.is_digit)

`AsyncDigitsClient` has the same methods as coroutines (`async with`, `await client.classify`).
Every gRPC failure surfaces as `DigitsError(code, message)`, e.g. code "NOT_FOUND".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from digits_client._proto.digits.v1 import digits_pb2 as pb
from digits_client._proto.digits.v1 import digits_pb2_grpc as pb_grpc

DEFAULT_TARGET = "localhost:8001"
DEFAULT_MODEL = "convnet"
FloatArray: TypeAlias = npt.NDArray[np.float32]
ImageInput: TypeAlias = bytes | str | Path | npt.NDArray[Any]
# The health stubs' HealthStub declares no methods, so the one call is made by its path.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


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


@dataclass(frozen=True)
class Security:
    """How to reach a server that has TLS or token auth on; all optional.

    `tls_ca`: the CA that signed the server's certificate (turns TLS on); `tls_cert`/`tls_key`:
    this client's certificate for mutual TLS; `token`: sent as `authorization: Bearer <token>`.
    """

    tls_ca: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    token: str | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls_ca is None:
            return None

        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca),
            private_key=read(self.tls_key),
            certificate_chain=read(self.tls_cert),
        )

    def channel(self, module: Any, target: str) -> Any:
        """A channel from `module` (grpc or grpc.aio): secure when a CA is given."""
        credentials = self.credentials()
        if credentials is None:
            return module.insecure_channel(target)
        return module.secure_channel(target, credentials)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class DigitsClient:
    """Blocking client; use as a context manager or call `close()`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 10.0,
        security: Security | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        security = security or Security()
        self._metadata = security.metadata
        self._channel: grpc.Channel = security.channel(grpc, target)
        self._stub = pb_grpc.DigitsStub(self._channel)
        self._health_check = self._channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    def classify(
        self,
        images: Sequence[ImageInput],
        *,
        model: str = DEFAULT_MODEL,
        version: int = 0,
        not_digit: bool = True,
        layers: Sequence[str] = (),
        logits: bool = False,
    ) -> list[Classification]:
        """Classify images with one model version; `layers=["*"]` returns every layer."""
        request = classify_request(images, model, version, not_digit, layers, logits)
        with translated_errors():
            response = self._stub.Classify(request, timeout=self.timeout, metadata=self._metadata)
        return [classification(result) for result in response.results]

    def models(self) -> list[ModelSummary]:
        """Every model in the server's store, each at its newest version, sorted by name."""
        with translated_errors():
            response = self._stub.ListModels(
                pb.ListModelsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [model_summary(info) for info in response.models]

    def model(self, name: str = DEFAULT_MODEL, version: int = 0) -> ModelSummary:
        """One model version; 0 means the newest."""
        request = pb.GetModelRequest(name=name, version=version)
        with translated_errors():
            return model_summary(
                self._stub.GetModel(request, timeout=self.timeout, metadata=self._metadata)
            )

    def health(self, service: str = "") -> str:
        """Status name: "SERVING", "NOT_SERVING", or "SERVICE_UNKNOWN" for an unknown service."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            return health_status(
                self._health_check(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.RpcError as error:
            failure = digits_error(error)
            if failure.code == "NOT_FOUND":
                return "SERVICE_UNKNOWN"
            raise failure from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDigitsClient:
    """asyncio client with DigitsClient's methods as coroutines; `async with` or `await close()`.

    Create it inside the event loop that will use it.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 10.0,
        security: Security | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        security = security or Security()
        self._metadata = security.metadata
        self._channel: grpc.aio.Channel = security.channel(grpc.aio, target)
        self._stub = pb_grpc.DigitsStub(self._channel)
        self._health_check = self._channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    async def classify(
        self,
        images: Sequence[ImageInput],
        *,
        model: str = DEFAULT_MODEL,
        version: int = 0,
        not_digit: bool = True,
        layers: Sequence[str] = (),
        logits: bool = False,
    ) -> list[Classification]:
        """Classify images with one model version; `layers=["*"]` returns every layer."""
        request = classify_request(images, model, version, not_digit, layers, logits)
        with translated_errors():
            response = await self._stub.Classify(
                request, timeout=self.timeout, metadata=self._metadata
            )
        return [classification(result) for result in response.results]

    async def models(self) -> list[ModelSummary]:
        """Every model in the server's store, each at its newest version, sorted by name."""
        with translated_errors():
            response = await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [model_summary(info) for info in response.models]

    async def model(self, name: str = DEFAULT_MODEL, version: int = 0) -> ModelSummary:
        """One model version; 0 means the newest."""
        request = pb.GetModelRequest(name=name, version=version)
        with translated_errors():
            return model_summary(
                await self._stub.GetModel(request, timeout=self.timeout, metadata=self._metadata)
            )

    async def health(self, service: str = "") -> str:
        """Status name: "SERVING", "NOT_SERVING", or "SERVICE_UNKNOWN" for an unknown service."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            return health_status(
                await self._health_check(request, timeout=self.timeout, metadata=self._metadata)
            )
        except grpc.RpcError as error:
            failure = digits_error(error)
            if failure.code == "NOT_FOUND":
                return "SERVICE_UNKNOWN"
            raise failure from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
