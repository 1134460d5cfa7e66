"""What the HTTP routes and the server share: the error table, the body reader, JSON answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.domain.preprocess import ImageLimits
from service.errors import InvalidInput
from service.transport.auth import Tokens

# gRPC status code → HTTP status, as Google's APIs map them (google.rpc.Code).
HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 400,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "CANCELLED": 499,
    "UNAVAILABLE": 503,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "INTERNAL": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class HttpConfig:
    max_body_bytes: int
    body_timeout_s: float
    limits: ImageLimits
    tokens: Tokens | None = None
    playground: bool = False  # serve the page at `/` (`service.transport.http.playground`)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str
    api: str | None = None  # the request metrics' `api` label; None: not counted


# Set on a counted request until it reaches the engine: see `HttpServer.settle`.
ARRIVING = "digits.arriving"


def reached_engine(request: web.Request) -> None:
    """The request is the engine's now (admitted, or refused by it): the drain waits no more."""
    request[ARRIVING] = False


class HttpRefusal(Exception):
    """A refusal only HTTP has a status for (408 a slow body, 415 a content type); `str(exc)`
    is the message the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The whole body, within the size limit (413) and `timeout` seconds (408)."""
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise body_timeout(timeout) from None


def body_timeout(timeout: float) -> HttpRefusal:
    return HttpRefusal(408, f"body: not received within {timeout:g} s")


def query_flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on", ""):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"query parameter {name}: expected true or false, got {value!r}")


def json_answer(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(value, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )
