"""The floor under any Python gRPC server here: grpc.aio answering ModelInfer from a cache.

    .venv/bin/python benchmarks/bare_server.py --source HOST:PORT --model convnet

Copies the model's metadata, config and one real ModelInfer response (every output in the
metadata, one image) from a running digits-serving server, then serves them on a free port of
127.0.0.1, printing `port N` when ready: no model, no batcher, no decoding, no metrics. Whatever
latency and CPU a client measures against it is gRPC's and the client's own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc


def copied(source: str, model: str) -> dict[str, Any]:
    with grpc.insecure_channel(source) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name=model))
        request = v2.ModelInferRequest(model_name=model)
        request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
        request.raw_input_contents.append(np.zeros((1, 1, 28, 28), np.float32).tobytes())
        for output in metadata.outputs:
            request.outputs.add(name=output.name)
        return {
            "ServerMetadata": stub.ServerMetadata(v2.ServerMetadataRequest()),
            "ModelMetadata": metadata,
            "ModelConfig": stub.ModelConfig(v2.ModelConfigRequest(name=model)),
            "ModelInfer": stub.ModelInfer(request),
        }


class Cached(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self.answers["ServerMetadata"]

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return self.answers["ModelMetadata"]

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return self.answers["ModelConfig"]

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return self.answers["ModelInfer"]


async def serve(servicer: v2_grpc.GRPCInferenceServiceServicer) -> None:
    """Serve `servicer` on a free port of 127.0.0.1, printing `port N` once it does (the
    benchmark's peers all start this way)."""
    server = aio.server()
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"port {port}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, help="a running digits-serving server")
    parser.add_argument("--model", default="convnet")
    args = parser.parse_args()
    # Only the four RPCs that perf_analyzer and the benchmark call; the rest stay unimplemented.
    asyncio.run(serve(Cached(copied(args.source, args.model))))  # type: ignore[abstract]


if __name__ == "__main__":
    main()
