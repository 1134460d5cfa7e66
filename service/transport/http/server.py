"""The HTTP port on aiohttp: the routes of `v2` and `classify`, tokens, errors, metrics, drain.

aiohttp runs on the server's own event loop, so an HTTP request meets the gRPC ones in the same
batcher; its parser is llhttp (C), its body size limit applies while the body is read, and a
handler whose client goes away is cancelled (its queued rows are dropped, as with gRPC).

    http = HttpServer(engine, metrics, config, control)
    port = await http.start(host, port, ssl_context=None, reuse_port=False)
    http.draining = True      # new requests 503; answers carry `Connection: close`
    await http.settle(limit)  # requests that arrived before it reach the engine
    await http.stop(timeout)  # stop listening, let handlers finish, close connections
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from aiohttp import web

from service.domain.engine import Engine
from service.domain.lifecycle import ModelControl
from service.errors import ServingError, Unavailable
from service.metrics import Children, Metrics
from service.names import DEFAULT_MODEL
from service.transport.auth import bearer_token
from service.transport.closing import MESSAGE
from service.transport.http import classify, playground, v2
from service.transport.http.common import (
    ARRIVING,
    HTTP_STATUS,
    Handler,
    HttpConfig,
    HttpRefusal,
    error_response,
)
from service.transport.interceptor import INTERNAL_MESSAGE

log = logging.getLogger(__name__)

# An HTTP-only refusal (aiohttp's or ours) → the code name counted in the request metrics.
# Handlers have finished when the port closes (the engine drained first): the rest is sending.
SHUTDOWN_TIMEOUT_S = 1.0
CODE_OF_STATUS = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
# Routes that answer without a token: the probes and the playground's files (its page then
# calls the API, which asks for a token as usual).
OPEN_ROUTES = frozenset({"health_live", "health_ready", "playground", "playground_file"})


class HttpServer:
    def __init__(
        self, engine: Engine, metrics: Metrics, config: HttpConfig, control: ModelControl
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.config = config
        self.draining = False
        self._arriving: dict[int, web.Request] = {}  # counted, not yet the engine's
        self.app = web.Application(
            middlewares=[self._door, self._errors], client_max_size=config.max_body_bytes
        )
        # api label per route name; other routes are not counted as requests.
        self.apis: dict[str, str] = {}
        routes = [*v2.routes(engine, config, control), *classify.routes(engine, config)]
        if config.playground:
            routes += playground.routes()
        for route in routes:
            self.app.router.add_route(route.method, route.path, route.handler, name=route.name)
            if route.api is not None:
                self.apis[route.name] = route.api
        self._runner: web.AppRunner | None = None
        self._models = engine.known_models  # the `model` label's values, "unknown" besides
        self._inflight = Children(metrics.inflight.labels)
        self._durations = Children(metrics.request_duration.labels)
        self._requests = Children(metrics.requests.labels)

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool
    ) -> int:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None
        )
        await site.start()
        return int(self._runner.addresses[0][1])  # the bound port, when asked for port 0

    async def settle(self, limit: float) -> None:
        """Wait (at most `limit` s) until every inference request that arrived before the drain
        has reached the engine: one whose body was still on the wire at the signal is then
        answered, not refused. Returns at once when none is arriving."""
        deadline = time.monotonic() + limit
        while any(r.get(ARRIVING) for r in self._arriving.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        """Stop listening; answers still being sent get `SHUTDOWN_TIMEOUT_S`, then every
        connection closes."""
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- middlewares ------------------------------------------------------------------------

    @web.middleware
    async def _door(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tokens first (a refused call is not counted); while draining, new inference requests
        get 503 and every answer `Connection: close`."""
        tokens = self.config.tokens
        route = request.match_info.route.name
        if tokens is not None and route not in OPEN_ROUTES:
            refused = tokens.refusal(bearer_token(request.headers.get("Authorization")))
            if refused is not None:
                code, message = refused
                refusal = error_response(HTTP_STATUS[code], message)
                if code == "UNAUTHENTICATED":
                    refusal.headers["WWW-Authenticate"] = "Bearer"
                return refusal
        response = await handler(request)
        if self.draining:
            response.force_close()
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Domain errors → their status and `{"error": message}`; anything unexpected → 500
        with a fixed message (the traceback goes to the log). Inference routes are counted."""
        api = self.apis.get(request.match_info.route.name or "")
        started = time.monotonic()
        model = "unknown"
        if api is not None:
            asked = request.match_info.get("model") or request.query.get("model") or DEFAULT_MODEL
            model = asked if asked in self._models else "unknown"
            self._inflight[model].inc()
            request[ARRIVING] = True
            self._arriving[id(request)] = request
        code = "OK"
        response: web.StreamResponse
        try:
            if api is not None and self.draining:
                raise Unavailable(MESSAGE)  # arrived after the drain began: new work
            response = await handler(request)
        except ServingError as exc:
            code = exc.code
            response = error_response(HTTP_STATUS[code], str(exc))
        except HttpRefusal as exc:
            code = CODE_OF_STATUS[exc.status]
            response = error_response(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = CODE_OF_STATUS.get(exc.status, "INVALID_ARGUMENT")
            response = error_response(exc.status, _message(exc, self.config.max_body_bytes))
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went away; nobody to answer
            raise
        except (ConnectionError, OSError) as exc:
            code = "CANCELLED"  # the body stopped half-way: no one to answer either
            log.debug("HTTP client gone: %s", exc)
            raise
        except Exception:
            log.exception("unexpected error in HTTP %s %s", request.method, request.path)
            code = "INTERNAL"
            response = error_response(500, INTERNAL_MESSAGE)
        finally:
            if api is not None:
                self._arriving.pop(id(request), None)
                self._inflight[model].dec()
                self._requests[(model, api, code)].inc()
                self._durations[(model, api)].observe(time.monotonic() - started)
        return response


def _message(exc: web.HTTPException, max_body_bytes: int) -> str:
    """aiohttp's refusals in our words (its own texts name no field)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"body: larger than the limit of {max_body_bytes} bytes"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} not allowed here (allowed: {allowed})"
    if isinstance(exc, web.HTTPNotFound):
        return "no such route; see GET /v2 and the README's HTTP section"
    return exc.reason
