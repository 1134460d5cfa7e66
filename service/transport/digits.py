"""`digits.v1.Digits`, the friendly API: images in, digits out. Protobuf ↔ domain, nothing more."""

from __future__ import annotations

import numpy as np

from service._proto.digits.v1 import digits_pb2 as pb
from service._proto.digits.v1 import digits_pb2_grpc as pb_grpc
from service.domain.classify import INPUT_LAYER, Ask, classify
from service.domain.engine import Engine
from service.domain.preprocess import ImageLimits, decode_image, from_pixels
from service.errors import InvalidInput
from service.names import DEFAULT_MODEL, LAYER_PREFIX, LOGITS, NOT_DIGIT, PROBABILITIES, FloatArray
from service.store.registry import ModelVersion
from service.transport.common import PLATFORM, Context, deadline_of


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


def tensor_infos(shapes: dict[str, list[int]], per_image: bool = False) -> list[pb.TensorInfo]:
    return [
        pb.TensorInfo(name=name, dtype="float32", shape=shape[1:] if per_image else shape)
        for name, shape in shapes.items()
    ]


def model_info(model: ModelVersion, engine: Engine) -> pb.ModelInfo:
    manifest = model.manifest
    layers = {n.removeprefix(LAYER_PREFIX): model.outputs[n] for n in model.layers}
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        versions=engine.versions(model),
        architecture=manifest.architecture,
        parameters=manifest.parameters,
        test_accuracy=manifest.metrics.test_accuracy,
        not_digit_threshold=model.not_digit_threshold,
        inputs=tensor_infos({i.name: i.shape for i in manifest.inputs}),
        outputs=tensor_infos(model.outputs),
        layers=tensor_infos(layers, per_image=True),
        ready=engine.ready,
        platform=PLATFORM,
        device=model.device_name,
    )


class DigitsServicer(pb_grpc.DigitsServicer):
    def __init__(self, engine: Engine, limits: ImageLimits) -> None:
        self.engine = engine
        self.limits = limits

    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        images = list(request.images)
        ask = Ask(
            model=request.model,
            version=request.version,
            layers=list(request.layers),
            include_logits=request.include_logits,
            deadline=deadline_of(context),
        )
        encoded_bytes = sum(len(image.encoded) for image in images)
        done = await classify(
            self.engine, ask, len(images), encoded_bytes, lambda: decode_images(images, self.limits)
        )
        model, result, decided = done.model, done.outputs, done.decisions
        probabilities = result[PROBABILITIES]
        response = pb.ClassifyResponse(model=model.name, version=model.version)
        for i in range(len(images)):
            out = response.results.add(
                digit=int(decided.digits[i]),
                confidence=float(decided.confidence[i]),
                probabilities=probabilities[i].tolist(),
                top2_margin=float(decided.margin[i]),
            )
            if request.include_not_digit:
                out.not_digit.score = float(result[NOT_DIGIT][i])
                out.not_digit.threshold = model.not_digit_threshold
                out.not_digit.is_digit = bool(decided.is_digit[i])
            if request.include_logits:
                out.logits.extend(result[LOGITS][i].tolist())
            if done.with_input:
                row = done.rows[i]
                out.layers.add(name=INPUT_LAYER, shape=row.shape, data=row.tobytes())
            for name in done.layers:
                value = result[name][i]
                out.layers.add(
                    name=name.removeprefix(LAYER_PREFIX), shape=value.shape, data=value.tobytes()
                )
        return response

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[model_info(model, self.engine) for model in self.engine.newest()]
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.ModelInfo:
        model = self.engine.model(request.name or DEFAULT_MODEL, request.version)
        return model_info(model, self.engine)
