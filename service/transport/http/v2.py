"""KServe V2 over HTTP/REST, the routes Triton serves and `tritonclient.http` and
`perf_analyzer -i http` call: JSON ↔ the engine, nothing more (the body's codec is `codec`)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from service.domain.engine import Engine
from service.domain.lifecycle import ModelControl
from service.domain.preprocess import sanitised
from service.errors import InvalidInput, ServingError
from service.store.registry import ModelVersion
from service.transport import kserve
from service.transport.http.codec import (
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
    InferRequest,
    encode_response,
    parse_json,
    parse_request,
)
from service.transport.http.common import (
    HttpConfig,
    HttpRefusal,
    Route,
    json_answer,
    reached_engine,
    read_body,
)

# Bodies up to this size are parsed on the event loop; larger ones on a thread.
INLINE_PARSE_BYTES = 64 * 1024
# What an infer body may be declared as: JSON, JSON + binary tensors, nothing, or what curl's
# `-d` says by default.
BODY_TYPES = frozenset({JSON_TYPE, BINARY_TYPE, "application/x-www-form-urlencoded", ""})
MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"
REPOSITORY_MODEL = "/v2/repository/models/{model}"


def check_content_type(request: web.Request) -> None:
    declared = request.headers.get("Content-Type", "")
    if request.content_type not in BODY_TYPES and declared:
        raise HttpRefusal(
            415,
            f"Content-Type: {request.content_type} is not accepted; send {JSON_TYPE} (with "
            f"{HEADER_LENGTH} for binary tensors)",
        )


class V2Routes:
    def __init__(self, engine: Engine, config: HttpConfig, control: ModelControl) -> None:
        self.engine = engine
        self.config = config
        self.control = control

    def routes(self) -> list[Route]:
        routes = [
            Route("GET", "/v2", self.server_metadata, "server_metadata"),
            Route("GET", "/v2/health/live", self.live, "health_live"),
            Route("GET", "/v2/health/ready", self.ready, "health_ready"),
            Route("GET", "/v2/repository/index", self.index, "repository_index"),
            Route("POST", "/v2/repository/index", self.index, "repository_index_post"),
            Route("POST", REPOSITORY_MODEL + "/load", self.load, "repository_load"),
            Route("POST", REPOSITORY_MODEL + "/unload", self.unload, "repository_unload"),
            # Before MODEL, which would take "stats" for a model's name.
            Route("GET", "/v2/models/stats", self.statistics, "statistics_all"),
        ]
        for path, suffix in ((MODEL, ""), (VERSION, "_version")):
            routes += [
                Route("GET", path, self.model_metadata, "model_metadata" + suffix),
                Route("GET", path + "/ready", self.model_ready, "model_ready" + suffix),
                Route("GET", path + "/config", self.model_config, "model_config" + suffix),
                Route("GET", path + "/stats", self.statistics, "statistics" + suffix),
                Route("POST", path + "/infer", self.infer, "infer" + suffix, api="v2_http"),
            ]
        return routes

    # ---- health and metadata ----------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return json_answer({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        """200 when ready; 400 otherwise, as the KServe V2 REST protocol says (a 4xx is false)."""
        ready = self.engine.ready
        return json_answer({"ready": ready}, status=200 if ready else 400)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_answer(kserve.server_metadata())

    def _model(self, request: web.Request) -> ModelVersion:
        info = request.match_info
        return self.engine.model(info["model"], info.get("version"))

    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_answer(kserve.model_metadata(self.engine, self._model(request)))

    async def model_ready(self, request: web.Request) -> web.Response:
        info = request.match_info
        try:
            self._model(request)
        except ServingError:
            return json_answer({"name": info["model"], "ready": False}, status=400)
        return json_answer({"name": info["model"], "ready": True})

    async def model_config(self, request: web.Request) -> web.Response:
        return json_answer(kserve.model_config(self.engine, self._model(request)))

    async def statistics(self, request: web.Request) -> web.Response:
        one = "model" in request.match_info
        models = [self._model(request)] if one else self.engine.models()
        return json_answer(kserve.statistics(self.engine, models))

    async def index(self, request: web.Request) -> web.Response:
        ready_only = False
        if request.method == "POST" and request.can_read_body:
            body = await read_body(request, self.config.body_timeout_s)
            if body.strip():
                value = parse_json(body).get("ready", False)
                if not isinstance(value, bool):
                    raise InvalidInput(f"ready: expected true or false, got {value!r}")
                ready_only = value
        return json_answer(kserve.repository_index(self.engine, ready_only))

    # ---- model control -------------------------------------------------------------------

    async def _parameters(self, request: web.Request) -> list[str]:
        """The names of the body's `parameters` (an empty body or `{}` has none)."""
        if not request.can_read_body:
            return []
        body = await read_body(request, self.config.body_timeout_s)
        if not body.strip():
            return []
        parameters = parse_json(body).get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInput(f"parameters: expected an object, got {parameters!r}")
        return list(parameters)

    async def load(self, request: web.Request) -> web.Response:
        kserve.check_repository_request("", await self._parameters(request))
        await self.control.load(request.match_info["model"])
        return web.Response()

    async def unload(self, request: web.Request) -> web.Response:
        parameters = await self._parameters(request)
        kserve.check_repository_request("", parameters, kserve.UNLOAD_PARAMETERS)
        await self.control.unload(request.match_info["model"])
        return web.Response()

    # ---- inference ---------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        check_content_type(request)
        body = await read_body(request, self.config.body_timeout_s)
        header_length = request.headers.get(HEADER_LENGTH)
        parsed: InferRequest
        if len(body) > INLINE_PARSE_BYTES:
            parsed = await asyncio.to_thread(parse_request, body, header_length)
        else:
            parsed = parse_request(body, header_length)
        deadline = None
        if parsed.timeout_us:
            deadline = time.monotonic() + parsed.timeout_us / 1e6
        info = request.match_info
        reached_engine(request)
        with self.engine.admit(
            info["model"],
            info.get("version"),
            parsed.count,
            parsed.outputs,
            rows_field="inputs[0].shape",
            outputs_field="outputs",
        ) as admitted:
            rows = sanitised(parsed.count, parsed.data)
            result = await self.engine.run(admitted, rows, deadline)
        model = admitted.model
        answer, json_length = encode_response(parsed, model.name, model.version, result)
        if json_length is None:
            return web.Response(body=answer, content_type=JSON_TYPE)
        response = web.Response(body=answer, content_type=BINARY_TYPE)
        response.headers[HEADER_LENGTH] = str(json_length)
        return response


def routes(engine: Engine, config: HttpConfig, control: ModelControl) -> list[Route]:
    return V2Routes(engine, config, control).routes()
