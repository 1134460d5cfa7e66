"""`ModelStreamInfer`: KServe V2 inference over one bidirectional stream (Triton's extension).

Each request message is answered by one response message carrying the request's `id` (what
perf_analyzer and tritonclient's stream callbacks match on), in the order the answers are ready:
the requests of a stream run concurrently, so they batch with each other and with everyone
else's. A request that fails is answered with its `error_message` (and its id) and the stream
stays open. When the client cancels the stream, its requests still queued are dropped.

While the server drains, a stream's new requests are refused (UNAVAILABLE, in the stream) like
any other new work; once gRPC's shutdown begins, `Streams.close_all` ends every open stream: it
answers what has finished and then raises `StreamClosed`, which the servicer turns into an
UNAVAILABLE status, so the client reconnects to another server instead of waiting out the grace.

    streams = Streams()
    async for response in answer_stream(requests, infer, record, streams):
        yield response
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from service._proto.inference import grpc_service_pb2 as pb
from service.errors import ServingError
from service.transport.closing import MESSAGE as CLOSED
from service.transport.interceptor import INTERNAL_MESSAGE

log = logging.getLogger(__name__)

Infer = Callable[[pb.ModelInferRequest], Awaitable[pb.ModelInferResponse]]
Record = Callable[[str, str, float], None]  # (model asked for, status code name, seconds)
_END, _CLOSE = object(), object()  # the client closed its side; the server is stopping


class StreamClosed(Exception):
    """The server stopped while the stream was open; the client should reconnect elsewhere."""


class Streams:
    """The open streams' answer queues, so that a stopping server can end each one."""

    def __init__(self) -> None:
        self._open: set[asyncio.Queue[Any]] = set()
        self.closed = False

    def open(self) -> asyncio.Queue[Any]:
        answers: asyncio.Queue[Any] = asyncio.Queue()
        if self.closed:
            answers.put_nowait(_CLOSE)
        self._open.add(answers)
        return answers

    def forget(self, answers: asyncio.Queue[Any]) -> None:
        self._open.discard(answers)

    def close_all(self) -> None:
        self.closed = True
        for answers in self._open:
            answers.put_nowait(_CLOSE)


async def answer_stream(
    requests: AsyncIterator[Any], infer: Infer, record: Record, streams: Streams
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    answers = streams.open()
    running: set[asyncio.Task[None]] = set()

    async def answer(request: Any) -> None:
        started = time.monotonic()
        if not isinstance(request, pb.ModelInferRequest):  # bytes that did not parse
            message = getattr(request, "message", "request: not a valid message")
            answers.put_nowait(pb.ModelStreamInferResponse(error_message=message))
            record("", "INVALID_ARGUMENT", time.monotonic() - started)
            return
        try:
            response = pb.ModelStreamInferResponse(infer_response=await infer(request))
            code = "OK"
        except ServingError as exc:
            response = failed(request, str(exc))
            code = exc.code
        except Exception:
            log.exception("unexpected error in a ModelStreamInfer request")
            response, code = failed(request, INTERNAL_MESSAGE), "INTERNAL"
        answers.put_nowait(response)
        record(request.model_name, code, time.monotonic() - started)

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.ensure_future(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(set(running))
        finally:
            answers.put_nowait(_END)  # the client closed its side: answer what is left, end

    reader = asyncio.ensure_future(read())
    try:
        while (response := await answers.get()) is not _END:
            if response is _CLOSE:
                reader.cancel()  # no more requests; the engine has drained, so these end soon
                if running:
                    await asyncio.wait(set(running))
                while not answers.empty():
                    if isinstance(finished := answers.get_nowait(), pb.ModelStreamInferResponse):
                        yield finished
                raise StreamClosed(CLOSED)
            yield response
    finally:
        # The client went away (or the stream ended): drop what is still queued or running.
        streams.forget(answers)
        reader.cancel()
        for task in list(running):
            task.cancel()


def failed(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )
