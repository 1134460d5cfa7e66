"""KServe V2 / Triton `inference.GRPCInferenceService`: protobuf ↔ numpy, nothing more.

Inputs arrive as `raw_input_contents` (what tritonclient and perf_analyzer send) or as typed
`contents.fp32_contents`; outputs always go back as `raw_output_contents`, which is all that
tritonclient reads. Non-finite pixels (perf_analyzer's random data has them) become 0 and every
pixel is clipped to [0,1], so the answer is always finite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

import grpc
import numpy as np

from service._proto.inference import grpc_service_pb2 as pb
from service._proto.inference import grpc_service_pb2_grpc as pb_grpc
from service._proto.inference import model_config_pb2 as mc
from service.domain.engine import Engine
from service.errors import InvalidInput, ServingError
from service.names import INPUT_NAME, INPUT_SHAPE, REQUIRED_OUTPUTS, FloatArray
from service.store.registry import ModelVersion
from service.transport.common import PLATFORM, Context, deadline_of
from service.transport.stream import StreamClosed, Streams, answer_stream

PIXELS = 28 * 28
# Listed in metadata and returned when a request names no outputs; layers only when named.
DEFAULT_OUTPUTS = REQUIRED_OUTPUTS


def checked_input(request: pb.ModelInferRequest) -> tuple[int, Any]:
    """Validate the one `image` input without touching its pixels → (images, raw bytes or
    fp32 values). Cheap, so a request the queue cannot take is refused before any decoding."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"inputs: expected exactly one input 'image', got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidInput(f"inputs[0].name: expected 'image', got '{tensor.name}'")
    if tensor.datatype != "FP32":
        raise InvalidInput(f"inputs[0].datatype: expected FP32, got '{tensor.datatype}'")
    shape = list(tensor.shape)
    if len(shape) != 4 or shape[1:] != [1, 28, 28] or shape[0] < 1:
        raise InvalidInput(f"inputs[0].shape: expected [N,1,28,28] with N >= 1, got {shape}")
    n = shape[0]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput("raw_input_contents: expected one entry, for input 'image'")
        raw = request.raw_input_contents[0]
        if len(raw) != n * PIXELS * 4:
            raise InvalidInput(
                f"raw_input_contents[0]: shape {shape} needs {n * PIXELS * 4} bytes of FP32, "
                f"got {len(raw)}"
            )
        return n, raw
    values = tensor.contents.fp32_contents
    if len(values) != n * PIXELS:
        raise InvalidInput(
            f"inputs[0].contents.fp32_contents: shape {shape} needs {n * PIXELS} values, "
            f"got {len(values)}"
        )
    return n, values


def sanitised(n: int, data: Any) -> FloatArray:
    """Raw little-endian FP32 bytes or a sequence of floats → float32 [n,1,28,28] in [0,1]."""
    if isinstance(data, bytes):
        flat = np.frombuffer(data, dtype="<f4")
    else:
        flat = np.asarray(data, dtype=np.float32)
    # fmax and fmin return the number when one operand is NaN: NaN → 0, -inf → 0, +inf → 1.
    pixels: FloatArray = np.fmax(flat.reshape(n, 1, 28, 28), np.float32(0.0))
    np.fmin(pixels, np.float32(1.0), out=pixels)
    return pixels


def tensor_metadata(model: ModelVersion, name: str) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=name, datatype="FP32", shape=model.outputs[name]
    )


def model_config(model: ModelVersion, engine: Engine) -> mc.ModelConfig:
    """Triton's view of the model: the batch dimension is implicit (max_batch_size > 0)."""
    outputs = []
    for name in DEFAULT_OUTPUTS:
        dims = model.outputs[name][1:]
        # A per-image scalar is declared Triton's way: dims [1], reshaped to [].
        reshape = mc.ModelTensorReshape(shape=[]) if not dims else None
        outputs.append(
            mc.ModelOutput(name=name, data_type=mc.TYPE_FP32, dims=dims or [1], reshape=reshape)
        )
    gpu = model.gpu
    instances = (
        mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_GPU, gpus=[gpu.ordinal])
        if gpu
        else mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    )
    return mc.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=engine.batching.max_batch_size,
        input=[mc.ModelInput(name=INPUT_NAME, data_type=mc.TYPE_FP32, dims=[1, 28, 28])],
        output=outputs,
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=int(engine.batching.max_queue_delay * 1e6),
            default_queue_policy=mc.ModelQueuePolicy(max_queue_size=engine.batching.max_queue_size),
        ),
        instance_group=[instances],
    )


def _duration(count: int, ns: int) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=count, ns=ns)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.streams = Streams()  # App.stop ends them once gRPC's shutdown has begun
        try:
            self.version = metadata.version("digits-serving")
        except metadata.PackageNotFoundError:
            self.version = "unknown"

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
        return pb.ServerMetadataResponse(name="digits-serving", version=self.version)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = self.engine.model(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in self.engine.versions(model)],
            platform=PLATFORM,
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=INPUT_NAME, datatype="FP32", shape=INPUT_SHAPE
                )
            ],
            outputs=[tensor_metadata(model, name) for name in DEFAULT_OUTPUTS],
        )

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        model = self.engine.model(request.name, request.version)
        return pb.ModelConfigResponse(config=model_config(model, self.engine))

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        return await self._infer(request, deadline_of(context))

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        count, data = checked_input(request)
        names = [o.name for o in request.outputs] or list(DEFAULT_OUTPUTS)
        admitted = self.engine.admit(
            request.model_name,
            request.model_version,
            count,
            names,
            rows_field="inputs[0].shape",
            outputs_field="outputs",
        )
        rows = sanitised(count, data)
        result = await self.engine.run(admitted, rows, deadline)
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
        label = model if model in self.engine.registry.models else "unknown"
        metrics.requests.labels(label, "v2_stream", code).inc()
        metrics.request_duration.labels(label, "v2_stream").observe(seconds)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self.engine.model(request.name, request.version)]
        else:
            models = self.engine.models()
        response = pb.ModelStatisticsResponse()
        for model in models:
            stats = self.engine.stats(model)
            response.model_stats.append(
                pb.ModelStatistics(
                    name=model.name,
                    version=str(model.version),
                    last_inference=stats.last_inference_ms,
                    inference_count=stats.rows_inferred,
                    execution_count=stats.batches_executed,
                    inference_stats=pb.InferStatistics(
                        success=_duration(stats.requests_succeeded, 0),
                        fail=_duration(
                            stats.requests_failed
                            + stats.requests_expired
                            + stats.requests_rejected,
                            0,
                        ),
                        queue=_duration(stats.requests_succeeded, stats.queue_ns),
                        compute_infer=_duration(stats.batches_executed, stats.compute_ns),
                    ),
                )
            )
        return response

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        state = "READY" if self.engine.ready else "UNAVAILABLE"
        for model in self.engine.models():
            response.models.add(name=model.name, version=str(model.version), state=state)
        if not request.ready:
            for failure in self.engine.failures:
                response.models.add(
                    name=failure.name,
                    version=failure.version,
                    state="UNAVAILABLE",
                    reason=failure.reason,
                )
        return response
