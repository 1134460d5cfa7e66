"""A typed Python client for digits.v1: images in, plain dataclasses out, no grpc imports needed.

    with DigitsClient("localhost:8001") as client:
        [result] = client.classify(["seven.png"], model="mlp")
        print(result.digit, result.confidence, result.is_digit)

`AsyncDigitsClient` has the same methods as coroutines (`async with`, `await client.classify`).
Every gRPC failure surfaces as `DigitsError(code, message)`, e.g. code "NOT_FOUND". The two share
their channel set-up (`_Connection`) and every message conversion (`digits_client.messages`);
what is left twice is each method's call, blocking in one and awaited in the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from digits_client._proto.digits.v1 import digits_pb2 as pb
from digits_client._proto.digits.v1 import digits_pb2_grpc as pb_grpc
from digits_client.messages import (
    DEFAULT_MODEL,
    Classification,
    DigitsError,
    FloatArray,
    ImageInput,
    ModelSummary,
    classification,
    classify_request,
    health_status,
    model_summary,
    translated_errors,
    unknown_service,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TARGET",
    "AsyncDigitsClient",
    "Classification",
    "DigitsClient",
    "DigitsError",
    "FloatArray",
    "ImageInput",
    "ModelSummary",
    "Security",
]

DEFAULT_TARGET = "localhost:8001"
# The health stubs' HealthStub declares no methods, so the one call is made by its path.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


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


class _Connection:
    """A channel to `target` (from `_module`: grpc or grpc.aio), the digits.v1 stub, the health
    check and what every call sends along: its timeout and the token."""

    _module: ClassVar[Any]

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
        self._channel = security.channel(self._module, target)
        self._stub = pb_grpc.DigitsStub(self._channel)
        self._health_check = self._channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )


class DigitsClient(_Connection):
    """Blocking client; use as a context manager or call `close()`."""

    _module: ClassVar[Any] = grpc

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
            return unknown_service(error)

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


class AsyncDigitsClient(_Connection):
    """asyncio client with DigitsClient's methods as coroutines; `async with` or `await close()`.

    Create it inside the event loop that will use it.
    """

    _module: ClassVar[Any] = grpc.aio

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
            return unknown_service(error)

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
