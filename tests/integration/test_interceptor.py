"""Error mapping through a real grpc.aio server: domain errors keep their code and message,
anything else becomes INTERNAL with a fixed message and a logged traceback."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc import aio

from service.errors import InvalidInput, NotFound, QueueFull, ServingError
from service.metrics import Metrics
from service.transport.interceptor import INTERNAL_MESSAGE, ErrorInterceptor

FAILURES: dict[str, Exception] = {
    "invalid": InvalidInput("images[2].encoded: not a PNG or JPEG"),
    "missing": NotFound("model 'x' is not served"),
    "full": QueueFull("queue of model mlp-v1 is full"),
    "bug": ZeroDivisionError("secret internal detail"),
}


async def handler(request: bytes, context: aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    failure = FAILURES.get(request.decode())
    if failure is not None:
        raise failure
    return b"ok:" + request


async def call_all() -> dict[str, tuple[grpc.StatusCode, str]]:
    server = aio.server(interceptors=[ErrorInterceptor(Metrics(), {"mlp"})])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo",
                {
                    "Call": grpc.unary_unary_rpc_method_handler(handler),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results = {}
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Echo/Call")
            for key in [*FAILURES, "fine"]:
                try:
                    reply = await call(key.encode(), timeout=5)
                    results[key] = (grpc.StatusCode.OK, reply.decode())
                except aio.AioRpcError as err:
                    results[key] = (err.code(), err.details() or "")
    finally:
        await server.stop(None)
    return results


def test_errors_map_to_status_codes_and_bugs_leak_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="service.transport.interceptor"):
        results = asyncio.run(call_all())
    for key, failure in FAILURES.items():
        if isinstance(failure, ServingError):
            assert results[key] == (grpc.StatusCode[failure.code], str(failure))
    assert results["bug"] == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert results["fine"] == (grpc.StatusCode.OK, "ok:fine")
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
