"""The one place where domain errors become gRPC status codes, and requests are counted.

Servicers raise `ServingError`s; this interceptor turns each into its status code with the
error's message, and anything else into INTERNAL with a fixed message (the traceback goes to the
log, never to the client). For the inference RPCs it also records the request metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from service.errors import ServingError
from service.metrics import Children, Metrics
from service.names import DEFAULT_MODEL
from service.transport.closing import ClosingGate
from service.transport.common import Context, MethodHandler

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server logged the details"
# Streaming RPCs whose servicer takes a message that did not parse as a `Malformed`.
STREAM_METHODS = frozenset({"/inference.GRPCInferenceService/ModelStreamInfer"})
# Inference RPCs → the `api` label, the request field naming the model, and its default.
INFERENCE_METHODS = {
    "/inference.GRPCInferenceService/ModelInfer": ("v2", "model_name", ""),
    "/digits.v1.Digits/Classify": ("digits", "model", DEFAULT_MODEL),
}

Handler = Callable[[Any, Context], Awaitable[Any]]


class Malformed:
    """Stands in for a request whose bytes did not parse; the handler answers INVALID_ARGUMENT.

    Left to grpc, a parse failure answers UNKNOWN with the exception's text and logs a
    traceback per request: a client sending garbage must not fill the log.
    """

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or whatever a parser raises on hostile bytes
            return Malformed(f"request: not a valid message ({type(exc).__name__})")

    return deserialize


def _code(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, ServingError):
        return grpc.StatusCode[exc.code]
    return grpc.StatusCode.INTERNAL


class ErrorInterceptor(aio.ServerInterceptor):
    """Also the door of the stopping server: while `gate.closing`, every call is held by the
    gate and then refused UNAVAILABLE (see `service.transport.closing`)."""

    def __init__(self, metrics: Metrics, models: set[str], gate: ClosingGate | None = None) -> None:
        self.metrics = metrics
        self.gate = gate or ClosingGate()
        # Label values come from this set only (the names the server has served; it grows as
        # models load): a client cannot grow the metrics' cardinality.
        self.models = models
        # Wrapped handlers are built once per method, not per call.
        self._wrapped: dict[str, MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is not None and method in STREAM_METHODS and handler.stream_stream:
            # Its servicer answers a message that did not parse in the stream, as an error.
            wrapped = grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
            return wrapped
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, inner: Handler) -> Handler:
        api_field = INFERENCE_METHODS.get(method)
        gate = self.gate

        async def guarded(
            request: Any, context: Context, before_abort: Callable[[str], None] | None = None
        ) -> Any:
            """`before_abort(code name)` runs before the status goes out: once the client has
            its answer, whatever it does next (a scrape of /metrics) must see the call counted."""
            try:
                if gate.closing:
                    await gate.hold()
                if isinstance(request, Malformed):
                    code, message = grpc.StatusCode.INVALID_ARGUMENT, request.message
                else:
                    return await inner(request, context)
            except ServingError as exc:
                code, message = _code(exc), str(exc)
            except (aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
            if before_abort is not None:
                before_abort(code.name)
            try:
                await context.abort(code, message)
            except aio.AbortError:
                raise
            except Exception:
                # The call ended first (its deadline passed, the client left): there is no one
                # to answer. Ended as a cancellation, grpc notes it at debug level, not with a
                # traceback per call (a client giving up early is normal).
                raise asyncio.CancelledError from None

        if api_field is None:
            return guarded
        api, model_field, default_model = api_field
        metrics, models = self.metrics, self.models
        inflights = Children(metrics.inflight.labels)
        durations = Children(lambda m: metrics.request_duration.labels(m, api))
        requests = Children(lambda m, code: metrics.requests.labels(m, api, code))

        async def counted(request: Any, context: Context) -> Any:
            model = getattr(request, model_field, "") or default_model
            if model not in models or isinstance(request, Malformed):
                model = "unknown"
            started = time.monotonic()
            inflight = inflights[model]
            inflight.inc()
            recorded = False

            def record(code: str) -> None:
                nonlocal recorded
                if recorded:
                    return
                recorded = True
                inflight.dec()
                requests[(model, code)].inc()
                durations[model].observe(time.monotonic() - started)

            code = "OK"  # an answer is counted before the handler returns it
            try:
                return await guarded(request, context, record)
            except asyncio.CancelledError:
                # gRPC cancels the handler both when the client goes away and at its deadline.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = "DEADLINE_EXCEEDED" if expired else "CANCELLED"
                raise
            except aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            finally:
                record(code)  # no-op when counted before the abort

        return counted
