"""`POST /v1/classify`, the friendly image route: a PNG or JPEG in, digits.v1's answer as JSON;
`GET /v1/models`, digits.v1's ListModels: every version served, with its layers; and
`GET /v1/models/{name}/connections?version=N`, the weights between its small dense layers (the
mlp's 16x16 and 10x16, `weights[target_unit][source_unit]`; none for the convnet).

    curl --data-binary @seven.png 'localhost:8000/v1/classify?model=mlp&layers=hidden1'

The body is one image (`image/png`, `image/jpeg`, `application/octet-stream`, curl's default
type or none), or several as `multipart/form-data` parts. digits.v1's options are query
parameters: `model`, `version`, `layers` (comma-separated, `*` for all, `input` for the prepared
28x28 image), `include_logits`, `include_not_digit` (on unless `false`), and `layer_data` (`list`
of numbers, the default, or `base64` of little-endian float32, smaller and faster for large
layers).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from service.domain.classify import INPUT_LAYER, Ask, classify
from service.domain.engine import Engine
from service.domain.preprocess import decode_image
from service.errors import InvalidInput
from service.names import LAYER_PREFIX, LOGITS, NOT_DIGIT, PROBABILITIES, FloatArray
from service.transport.http.common import (
    HttpConfig,
    HttpRefusal,
    Route,
    body_timeout,
    json_answer,
    query_flag,
    reached_engine,
    read_body,
)

# A body declared as one of these is one image (its bytes say which kind); curl's
# `--data-binary` says application/x-www-form-urlencoded unless told otherwise.
IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "application/octet-stream", "application/x-www-form-urlencoded", ""}
)
MULTIPART = "multipart/form-data"


def _version(request: web.Request) -> int:
    value = request.query.get("version", "0") or "0"
    if not value.isdigit():
        raise InvalidInput(f"query parameter version: expected a version number, got {value!r}")
    return int(value)


def _layers(request: web.Request) -> list[str]:
    return [
        name.strip()
        for value in request.query.getall("layers", [])
        for name in value.split(",")
        if name.strip()
    ]


def _tensor(name: str, value: FloatArray, as_base64: bool) -> dict[str, Any]:
    data: Any
    if as_base64:
        data = base64.b64encode(value.astype("<f4", copy=False).tobytes()).decode()
    else:
        data = value.ravel().tolist()
    return {"name": name, "shape": list(value.shape), "data": data}


class ClassifyRoute:
    def __init__(self, engine: Engine, config: HttpConfig) -> None:
        self.engine = engine
        self.config = config

    async def _images(self, request: web.Request) -> tuple[list[bytes], list[str]]:
        """The encoded images and the field that names each in errors."""
        kind = request.content_type if request.headers.get("Content-Type") else ""
        if kind == MULTIPART:
            return await self._parts(request)
        if kind not in IMAGE_TYPES:
            raise HttpRefusal(
                415,
                f"Content-Type: {kind} is not accepted; send a PNG or JPEG body (image/png, "
                f"image/jpeg) or {MULTIPART} with one part per image",
            )
        return [await read_body(request, self.config.body_timeout_s)], ["body"]

    async def _parts(self, request: web.Request) -> tuple[list[bytes], list[str]]:
        images: list[bytes] = []
        fields: list[str] = []
        limit = self.config.max_body_bytes
        total = 0
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if not isinstance(part, BodyPartReader):
                        raise InvalidInput(f"part {len(images)}: nested multipart is not accepted")
                    data = bytearray()
                    while chunk := await part.read_chunk():
                        total += len(chunk)
                        if total > limit:
                            raise web.HTTPRequestEntityTooLarge(limit, total)
                        data += chunk
                    images.append(bytes(data))
                    fields.append(
                        f"parts[{len(fields)}] ({part.name or part.filename or 'unnamed'})"
                    )
        except TimeoutError:
            raise body_timeout(self.config.body_timeout_s) from None
        except ValueError as exc:  # a malformed multipart body (boundary, headers)
            raise InvalidInput(f"body: not valid {MULTIPART} ({exc})") from None
        return images, fields

    async def classify(self, request: web.Request) -> web.Response:
        ask = Ask(
            model=request.query.get("model", ""),
            version=_version(request),
            layers=_layers(request),
            include_logits=query_flag(request, "include_logits", False),
        )
        include_not_digit = query_flag(request, "include_not_digit", True)
        layer_data = request.query.get("layer_data", "list")
        if layer_data not in ("list", "base64"):
            raise InvalidInput(
                f"query parameter layer_data: 'list' or 'base64', got {layer_data!r}"
            )
        as_base64 = layer_data == "base64"
        images, fields = await self._images(request)
        limits = self.config.limits

        def decode() -> FloatArray:
            rows = np.empty((len(images), 1, 28, 28), dtype=np.float32)
            for i, (image, field) in enumerate(zip(images, fields, strict=True)):
                rows[i, 0] = decode_image(image, index=i, limits=limits, field=field)
            return rows

        reached_engine(request)  # classify admits before its first await
        done = await classify(self.engine, ask, len(images), sum(map(len, images)), decode)
        model, outputs, decided = done.model, done.outputs, done.decisions
        results = []
        for i in range(len(images)):
            result: dict[str, Any] = {
                "digit": int(decided.digits[i]),
                "confidence": float(decided.confidence[i]),
                "probabilities": outputs[PROBABILITIES][i].tolist(),
                "top2_margin": float(decided.margin[i]),
            }
            if include_not_digit:
                result["not_digit"] = {
                    "score": float(outputs[NOT_DIGIT][i]),
                    "threshold": model.not_digit_threshold,
                    "is_digit": bool(decided.is_digit[i]),
                }
            if ask.include_logits:
                result["logits"] = outputs[LOGITS][i].tolist()
            layers = [_tensor(INPUT_LAYER, done.rows[i], as_base64)] if done.with_input else []
            layers += [
                _tensor(name.removeprefix(LAYER_PREFIX), outputs[name][i], as_base64)
                for name in done.layers
            ]
            if layers:
                result["layers"] = layers
            results.append(result)
        return json_answer({"model": model.name, "version": model.version, "results": results})

    async def models(self, request: web.Request) -> web.Response:
        """Every version served, as digits.v1's ModelInfo says it (layer shapes per image)."""
        engine = self.engine
        return json_answer(
            {
                "models": [
                    {
                        "name": model.name,
                        "version": model.version,
                        "versions": engine.versions(model),
                        "architecture": model.manifest.architecture,
                        "parameters": model.manifest.parameters,
                        "test_accuracy": model.manifest.metrics.test_accuracy,
                        "not_digit_threshold": model.not_digit_threshold,
                        "layers": [
                            {
                                "name": name.removeprefix(LAYER_PREFIX),
                                "shape": model.outputs[name][1:],
                            }
                            for name in model.layers
                        ],
                        "device": model.device_name,
                        "connections": [
                            [link.source, link.target] for link in model.manifest.connections
                        ],
                    }
                    for model in engine.models()
                ]
            }
        )

    async def connections(self, request: web.Request) -> web.Response:
        model = self.engine.model(request.match_info["name"], _version(request))
        return json_answer(
            {
                "model": model.name,
                "version": model.version,
                "connections": [link.model_dump() for link in model.manifest.connections],
            }
        )


def routes(engine: Engine, config: HttpConfig) -> list[Route]:
    route = ClassifyRoute(engine, config)
    return [
        Route("POST", "/v1/classify", route.classify, "classify", api="digits_http"),
        Route("GET", "/v1/models", route.models, "models"),
        Route("GET", "/v1/models/{name}/connections", route.connections, "connections"),
    ]
