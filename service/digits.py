"""`digits.v1.Digits`, the friendly API: images in, digits out. Protobuf ↔ domain, nothing more."""

from __future__ import annotations

import asyncio

import numpy as np

from service._proto.digits.v1 import digits_pb2 as pb
from service._proto.digits.v1 import digits_pb2_grpc as pb_grpc
from service.batching import FloatArray
from service.engine import Engine
from service.errors import InvalidInput, NotFound
from service.preprocess import ImageLimits, decode_image, from_pixels
from service.registry import ModelVersion
from service.v2 import PLATFORM, Context, deadline_of

DEFAULT_MODEL = "convnet"
# Below this many encoded bytes a request is decoded on the event loop; above, on a thread.
INLINE_DECODE_BYTES = 64 * 1024


def decode_images(images: list[pb.Image], limits: ImageLimits) -> FloatArray:
    rows = np.empty((len(images), 1, 28, 28), dtype=np.float32)
    for i, image in enumerate(images):
        source = image.WhichOneof("source")
        if source == "encoded":
            rows[i, 0] = decode_image(image.encoded, index=i, limits=limits)
        elif source == "pixels":
            rows[i, 0] = from_pixels(image.pixels.data, index=i)
        else:
            raise InvalidInput(f"images[{i}]: set either 'encoded' or 'pixels'")
    return rows


def layer_names(model: ModelVersion, asked: list[str]) -> list[str]:
    """Short names ("conv1") or "*" → graph output names ("layer.conv1"), in model order."""
    available = model.layers
    if "*" in asked:
        return available
    names = []
    for i, name in enumerate(asked):
        full = name if name.startswith("layer.") else f"layer.{name}"
        if full not in available:
            short = ", ".join(n.removeprefix("layer.") for n in available)
            raise NotFound(f"layers[{i}]: model '{model.name}' has no layer '{name}' ({short})")
        names.append(full)
    return [n for n in available if n in names]


def tensor_infos(shapes: dict[str, list[int]], per_image: bool = False) -> list[pb.TensorInfo]:
    return [
        pb.TensorInfo(name=name, dtype="float32", shape=shape[1:] if per_image else shape)
        for name, shape in shapes.items()
    ]


def model_info(model: ModelVersion, engine: Engine) -> pb.ModelInfo:
    manifest = model.manifest
    layers = {n.removeprefix("layer."): model.outputs[n] for n in model.layers}
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        versions=sorted(engine.registry.models[model.name]),
        architecture=manifest.get("architecture", ""),
        parameters=int(manifest.get("parameters", 0)),
        test_accuracy=float(manifest.get("metrics", {}).get("test_accuracy", 0.0)),
        not_digit_threshold=model.not_digit_threshold,
        inputs=tensor_infos({i["name"]: i["shape"] for i in manifest["inputs"]}),
        outputs=tensor_infos(model.outputs),
        layers=tensor_infos(layers, per_image=True),
        ready=engine.ready,
        platform=PLATFORM,
        device=model.runtime.device_name,
    )


class DigitsServicer(pb_grpc.DigitsServicer):
    def __init__(self, engine: Engine, limits: ImageLimits) -> None:
        self.engine = engine
        self.limits = limits

    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        engine = self.engine
        model = engine.model(request.model or DEFAULT_MODEL, request.version)
        images = list(request.images)
        engine.check_rows(len(images), "images")
        layers = layer_names(model, list(request.layers))
        engine.check_room(model, len(images))
        encoded_bytes = sum(len(image.encoded) for image in images)
        if encoded_bytes > INLINE_DECODE_BYTES:
            rows = await asyncio.to_thread(decode_images, images, self.limits)
        else:
            rows = decode_images(images, self.limits)

        wanted = frozenset(["logits", *layers] if request.include_logits else layers)
        result = await engine.infer(model, rows, wanted, deadline_of(context))

        probabilities = result["probabilities"]
        top2 = np.sort(probabilities, axis=1)[:, -2:]
        digits = probabilities.argmax(axis=1)
        threshold = model.not_digit_threshold
        response = pb.ClassifyResponse(model=model.name, version=model.version)
        for i in range(len(images)):
            out = response.results.add(
                digit=int(digits[i]),
                confidence=float(top2[i, 1]),
                probabilities=probabilities[i].tolist(),
                top2_margin=float(top2[i, 1] - top2[i, 0]),
            )
            if request.include_not_digit:
                score = float(result["not_digit"][i])
                out.not_digit.score = score
                out.not_digit.threshold = threshold
                out.not_digit.is_digit = score <= threshold
            if request.include_logits:
                out.logits.extend(result["logits"][i].tolist())
            for name in layers:
                value = result[name][i]
                out.layers.add(
                    name=name.removeprefix("layer."), shape=value.shape, data=value.tobytes()
                )
        return response

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        registry = self.engine.registry
        return pb.ListModelsResponse(
            models=[model_info(registry.get(name), self.engine) for name in sorted(registry.models)]
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.ModelInfo:
        model = self.engine.model(request.name or DEFAULT_MODEL, request.version)
        return model_info(model, self.engine)
