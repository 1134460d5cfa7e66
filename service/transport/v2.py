"""KServe V2 / Triton `inference.GRPCInferenceService`: protobuf ↔ numpy, nothing more.

Inputs arrive as `raw_input_contents` (what tritonclient and perf_analyzer send) or as typed
`contents.fp32_contents`; outputs always go back as `raw_output_contents`, which is all that
tritonclient reads. Pixels are sanitised by `service.domain.preprocess.sanitised`; metadata,
config, statistics and the index are `service.transport.kserve`'s, parsed into protobuf.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service._proto.inference import model_config_pb2 as mc
from service.domain.engine import Engine
from service.domain.lifecycle import ModelControl
from service.domain.preprocess import sanitised
from service.errors import InvalidInput, ServingError
from service.transport import kserve
from service.transport.common import Context, deadline_of
from service.transport.kserve import DEFAULT_OUTPUTS, PIXELS, check_image_tensor
from service.transport.stream import StreamClosed, Streams, answer_stream


def checked_input(request: pb.ModelInferRequest) -> tuple[int, Any]:
    """Validate the one `image` input without touching its pixels → (images, raw bytes or
    fp32 values). Cheap, so a request the queue cannot take is refused before any decoding."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"inputs: expected exactly one input 'image', got {len(request.inputs)}")
    tensor = request.inputs[0]
    n = check_image_tensor(tensor.name, tensor.datatype, tensor.shape, "inputs[0]")
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput("raw_input_contents: expected one entry, for input 'image'")
        raw = request.raw_input_contents[0]
        if len(raw) != n * PIXELS * 4:
            raise InvalidInput(
                f"raw_input_contents[0]: shape {list(tensor.shape)} needs {n * PIXELS * 4} bytes "
                f"of FP32, got {len(raw)}"
            )
        return n, raw
    values = tensor.contents.fp32_contents
    if len(values) != n * PIXELS:
        raise InvalidInput(
            f"inputs[0].contents.fp32_contents: shape {list(tensor.shape)} needs {n * PIXELS} "
            f"values, got {len(values)}"
        )
    return n, values


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine, control: ModelControl) -> None:
        self.engine = engine
        self.control = control
        self.streams = Streams()  # App.stop ends them once gRPC's shutdown has begun

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.engine.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        try:
            self.engine.model(request.name, request.version)
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        metadata = kserve.server_metadata()
        return pb.ServerMetadataResponse(name=metadata["name"], version=metadata["version"])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self.engine.model(request.name, request.version)
        return ParseDict(kserve.model_metadata(self.engine, model), pb.ModelMetadataResponse())

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        model = self.engine.model(request.name, request.version)
        config = kserve.model_config(self.engine, model)
        return pb.ModelConfigResponse(config=ParseDict(config, mc.ModelConfig()))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        return await self._infer(request, deadline_of(context))

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        count, data = checked_input(request)
        names = [o.name for o in request.outputs] or list(DEFAULT_OUTPUTS)
        with self.engine.admit(
            request.model_name,
            request.model_version,
            count,
            names,
            rows_field="inputs[0].shape",
            outputs_field="outputs",
        ) as admitted:
            result = await self.engine.run(admitted, sanitised(count, data), deadline)
        model = admitted.model
        response = pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        for name in names:
            value = result[name]
            response.outputs.add(name=name, datatype="FP32", shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, with its id; see `service.transport.stream`."""
        deadline = deadline_of(context)

        async def infer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
            return await self._infer(request, deadline)

        try:
            async for response in answer_stream(
                request_iterator, infer, self._record_stream, self.streams
            ):
                yield response
        except StreamClosed as closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(closed))

    def _record_stream(self, model: str, code: str, seconds: float) -> None:
        """A stream's request in the request metrics, under the `v2_stream` api."""
        metrics = self.engine.metrics
        label = model if model in self.engine.known_models else "unknown"
        metrics.requests.labels(label, "v2_stream", code).inc()
        metrics.request_duration.labels(label, "v2_stream").observe(seconds)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self.engine.model(request.name, request.version)]
        else:
            models = self.engine.models()
        return ParseDict(kserve.statistics(self.engine, models), pb.ModelStatisticsResponse())

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        index = kserve.repository_index(self.engine, ready_only=request.ready)
        return ParseDict({"models": index}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        kserve.check_repository_request(request.repository_name, list(request.parameters))
        await self.control.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        kserve.check_repository_request(
            request.repository_name, list(request.parameters), kserve.UNLOAD_PARAMETERS
        )
        await self.control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
