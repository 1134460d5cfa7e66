"""Bearer-token authentication: `Tokens` judges a call's `authorization` header, for gRPC (the
interceptor here, placed before the ErrorInterceptor) and HTTP (its middleware) alike.

A call must carry `authorization: Bearer <token>` matching one configured token, else it is
refused before its request is deserialised or counted: no header → UNAUTHENTICATED (HTTP 401), a
wrong token → PERMISSION_DENIED (HTTP 403). Health and reflection stay open, so probes need no
token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from service.transport.common import Context, MethodHandler

# The stubs' generics are not subscriptable at run time.

OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
MISSING = ("UNAUTHENTICATED", "missing bearer token")
INVALID = ("PERMISSION_DENIED", "invalid token")


def bearer_token(header: str | bytes | None) -> bytes | None:
    """The token of an `authorization: Bearer <token>` header value; None if there is none."""
    if header is None:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode()
    return None


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization" and (token := bearer_token(value)) is not None:
            return token
    return None


class Tokens:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [token.encode() for token in tokens]
        if not self._tokens:
            raise ValueError("token authentication needs at least one token")

    def accepts(self, presented: bytes) -> bool:
        """Compare against every token, each in constant time, and never stop early: the time
        taken says nothing about which token, or how much of one, matched."""
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched

    def refusal(self, presented: bytes | None) -> tuple[str, str] | None:
        """(status code name, message) when the call may not pass; None when it may."""
        if presented is None:
            return MISSING
        if not self.accepts(presented):
            return INVALID
        return None


def _refusal(handler: MethodHandler, code_name: str, message: str) -> MethodHandler:
    """A handler of the same kind as `handler` that aborts; no deserialiser, so the request
    bytes are never parsed."""

    code = grpc.StatusCode[code_name]

    async def abort(request: Any, context: Context) -> Any:
        await context.abort(code, message)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(abort)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.stream_stream_rpc_method_handler(abort)


class AuthInterceptor(aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens = Tokens(tokens)

    def accepts(self, presented: bytes) -> bool:
        return self.tokens.accepts(presented)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        refused = self.tokens.refusal(_bearer(handler_call_details.invocation_metadata))
        return handler if refused is None else _refusal(handler, *refused)
