"""The straight-line peer: the simplest KServe V2 server that could serve the model.

    .venv/bin/python benchmarks/straight_line.py --model convnet [--version 2]

A grpc.aio server on a free port of 127.0.0.1 (it prints `port N` when ready) that loads
`model_store/<model>/<version>/model.onnx` into one onnxruntime CPU session and calls
`session.run` inside the async ModelInfer handler: no batching, no threads of its own, no
metrics, no interceptor. It answers what tritonclient and perf_analyzer call (ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer) the way the
real server does, so the benchmark's clients drive both alike.
"""

# ruff: noqa: N802  (the servicer's methods carry the protocol's RPC names)

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import numpy as np
import onnxruntime as ort
from grpc import aio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bare_server import serve  # noqa: E402
from service._proto.inference import grpc_service_pb2 as v2  # noqa: E402
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc  # noqa: E402
from service._proto.inference import model_config_pb2 as mc  # noqa: E402

Context: TypeAlias = "aio.ServicerContext[Any, Any]"
OUTPUTS = ("probabilities", "logits", "not_digit")  # what a request naming no outputs gets
MAX_BATCH_SIZE = 64  # declared as ours does, so perf_analyzer sends [1,1,28,28]


class StraightLine(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, name: str, version: int, model_path: Path) -> None:
        self.name, self.version = name, str(version)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        # Per-image dims of each output, the batch dimension left out: [10] or [] (not_digit).
        self.dims = {o.name: [int(d) for d in o.shape[1:]] for o in self.session.get_outputs()}

    async def check_model(self, name: str, context: Context) -> None:
        if name != self.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{name}'")

    async def ServerLive(self, request: v2.ServerLiveRequest, context: Context) -> Any:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: v2.ServerReadyRequest, context: Context) -> Any:
        return v2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: v2.ModelReadyRequest, context: Context) -> Any:
        return v2.ModelReadyResponse(ready=request.name == self.name)

    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: Context) -> Any:
        return v2.ServerMetadataResponse(name="straight-line", version="1")

    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: Context) -> Any:
        await self.check_model(request.name, context)
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=self.name,
            versions=[self.version],
            platform="onnxruntime_onnx",
            inputs=[tensor(name="image", datatype="FP32", shape=[-1, 1, 28, 28])],
            outputs=[tensor(name=n, datatype="FP32", shape=[-1, *self.dims[n]]) for n in OUTPUTS],
        )

    async def ModelConfig(self, request: v2.ModelConfigRequest, context: Context) -> Any:
        await self.check_model(request.name, context)
        outputs = [
            # A per-image scalar is declared Triton's way: dims [1], reshaped to [].
            mc.ModelOutput(
                name=n,
                data_type=mc.TYPE_FP32,
                dims=self.dims[n] or [1],
                reshape=None if self.dims[n] else mc.ModelTensorReshape(shape=[]),
            )
            for n in OUTPUTS
        ]
        config = mc.ModelConfig(
            name=self.name,
            platform="onnxruntime_onnx",
            max_batch_size=MAX_BATCH_SIZE,
            input=[mc.ModelInput(name="image", data_type=mc.TYPE_FP32, dims=[1, 28, 28])],
            output=outputs,
        )
        return v2.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: v2.ModelInferRequest, context: Context) -> Any:
        await self.check_model(request.model_name, context)
        if len(request.inputs) != 1 or request.inputs[0].name != "image":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected one input 'image'")
        tensor = request.inputs[0]
        if request.raw_input_contents:
            flat = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        else:
            flat = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        shape = list(tensor.shape)
        if (
            tensor.datatype != "FP32"
            or len(shape) != 4
            or shape[1:] != [1, 28, 28]
            or not 1 <= shape[0] <= MAX_BATCH_SIZE
            or flat.size != shape[0] * 28 * 28
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected FP32 [N,1,28,28] with N <= {MAX_BATCH_SIZE} and matching contents",
            )
        names = [o.name for o in request.outputs] or list(OUTPUTS)
        unknown = sorted(set(names) - set(self.dims))
        if unknown:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown outputs {unknown}")
        # The same fair minimum as ours: NaN and -inf → 0, +inf → 1, then [0,1].
        pixels = np.clip(np.nan_to_num(flat, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        results = self.session.run(names, {"image": pixels.reshape(shape)})
        response = v2.ModelInferResponse(
            model_name=self.name, model_version=self.version, id=request.id
        )
        for name, value in zip(names, results, strict=True):
            response.outputs.add(name=name, datatype="FP32", shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    args = parser.parse_args()
    model_path = args.model_store / args.model / str(args.version) / "model.onnx"
    # ModelStreamInfer, ModelStatistics and the repository RPCs stay unimplemented.
    servicer = StraightLine(args.model, args.version, model_path)  # type: ignore[abstract]
    asyncio.run(serve(servicer))


if __name__ == "__main__":
    main()
