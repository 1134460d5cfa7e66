"""The benchmarks' closed loop: `concurrency` callers, each sending the same V2 request again
as soon as its last one is answered, over `connections` TCP connections taken in turn."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np

from loadtest.runner import open_channel
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1e3
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 90, 99)}


async def closed_loop(
    target: str,
    request: v2.ModelInferRequest,
    concurrency: int,
    seconds: float,
    connections: int = 1,
    warmup: int = 20,
) -> dict[str, Any]:
    """Requests/s and latency percentiles of the answered calls; failed ones by status code."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    channels = [open_channel(target, own_connection=connections > 1) for _ in range(connections)]
    try:
        stubs = [v2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
        for stub in stubs:
            for _ in range(warmup):
                await stub.ModelInfer(request, timeout=10)
        end = time.monotonic() + seconds

        async def caller(stub: v2_grpc.GRPCInferenceServiceAsyncStub) -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=10)
                except grpc.aio.AioRpcError as err:
                    errors[err.code().name] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.monotonic()
        await asyncio.gather(*(caller(stubs[i % connections]) for i in range(concurrency)))
        elapsed = time.monotonic() - began
    finally:
        for channel in channels:
            await channel.close()
    return {
        "concurrency": concurrency,
        "requests_per_s": len(latencies) / elapsed,
        **percentiles(latencies),
        "errors": dict(errors),
    }
