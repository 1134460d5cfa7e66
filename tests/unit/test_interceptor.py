"""The interceptor counts a failed call before its status goes out.

A client that scrapes /metrics right after its error must see the call counted, so the count
has to be taken before `context.abort` sends the status, not after it raised. Through a real
server that order is a race (tests/integration/test_serving.py sees it only now and then), so
here a stand-in context checks the count at the moment the status would go out."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from service.errors import InvalidInput
from service.metrics import Metrics
from service.transport.interceptor import ErrorInterceptor

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class Details(grpc.HandlerCallDetails):
    method = MODEL_INFER
    invocation_metadata = ()


class Request:
    model_name = "mlp"


class Context:
    """What `ErrorInterceptor` uses of a servicer context; `abort` notes the metrics it saw."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.seen_at_abort: tuple[float | None, float | None] | None = None
        self.status: grpc.StatusCode | None = None

    def counted(self) -> tuple[float | None, float | None]:
        sample = self.metrics.registry.get_sample_value
        labels = {"model": "mlp", "api": "v2", "code": "INVALID_ARGUMENT"}
        return sample("digits_requests_total", labels), sample(
            "digits_inflight_requests", {"model": "mlp"}
        )

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.seen_at_abort, self.status = self.counted(), code
        raise aio.AbortError()

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def time_remaining(self) -> float | None:
        return None


def test_a_failed_call_is_counted_before_its_status_is_sent() -> None:
    async def failing(request: Any, context: Any) -> Any:
        raise InvalidInput("image: expected float32")

    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return grpc.unary_unary_rpc_method_handler(failing)

    metrics = Metrics()
    context = Context(metrics)

    async def main() -> None:
        handler = await ErrorInterceptor(metrics, {"mlp"}).intercept_service(
            continuation, Details()
        )
        assert handler is not None and handler.unary_unary is not None
        with pytest.raises(aio.AbortError):
            await handler.unary_unary(Request(), context)  # type: ignore[arg-type]

    asyncio.run(main())
    assert context.status == grpc.StatusCode.INVALID_ARGUMENT
    assert context.seen_at_abort == (1.0, 0.0)  # counted, and no longer in flight
    assert context.counted() == (1.0, 0.0)  # and only once
