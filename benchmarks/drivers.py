"""How the benchmarks load a model: in-process onnxruntime (the ceiling), and Triton's
perf_analyzer against a server (C++, so on a shared machine the client costs less than ours).
The Python client, grpc.aio in a closed loop, is `benchmarks.closed_loop`."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.closed_loop import percentiles  # noqa: E402
from loadtest import perf  # noqa: E402
from service._proto.inference import grpc_service_pb2 as v2  # noqa: E402


def in_process(model_path: Path, seconds: float) -> dict[str, float]:
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    one = rng.random((1, 1, 28, 28), dtype=np.float32)
    batch = rng.random((32, 1, 28, 28), dtype=np.float32)
    for _ in range(20):
        sess.run(["probabilities"], {"image": one})
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        sess.run(["probabilities"], {"image": one})
        latencies.append(time.perf_counter() - start)
    images, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        sess.run(["probabilities"], {"image": batch})
        images += 32
    return {
        "single_p50_ms": percentiles(latencies)["p50_ms"],
        "single_per_s": len(latencies) / seconds,
        "batch32_images_per_s": images / (time.monotonic() - started),
    }


def summary(values: list[float], fmt: str) -> str:
    """Median, with the range when there was more than one repetition."""
    median = format(statistics.median(values), fmt)
    if len(values) == 1:
        return median
    return f"{median} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def single_image_request(model: str, version: int | None = None) -> v2.ModelInferRequest:
    image = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    request = v2.ModelInferRequest(model_name=model, model_version=str(version or ""))
    request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(image.tobytes())
    for name in ("probabilities", "not_digit"):
        request.outputs.add(name=name)
    return request


PERF_FIGURE = re.compile(r"(Throughput|p50 latency|p90 latency|p99 latency): ([\d.]+)")


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer is missing, failed, ran past its time or printed no throughput."""


# perf_analyzer's flags for each way of reaching the server (`--over`).
PROTOCOL_FLAGS = {
    "grpc": ["-i", "grpc"],
    "stream": ["-i", "grpc", "--streaming"],
    "http": ["-i", "http"],
}


def drive_perf_analyzer(
    target: str, model: str, version: int, concurrency: int, seconds: float, protocol: str = "grpc"
) -> dict[str, Any]:
    """Triton's perf_analyzer (C++) as the load generator: less client CPU on a shared machine.
    It sends random FP32 tensors and asks for every output in the model's metadata. `protocol`:
    unary gRPC, streaming gRPC (ModelStreamInfer) or HTTP (`target` is then the HTTP port)."""
    binary = perf.find_binary()
    if binary is None:
        raise PerfAnalyzerFailed("perf_analyzer not found (pip install 'tritonclient[grpc]')")
    window_ms = max(500, round(seconds * 1000 / 3))
    command = [
        binary, "-m", model, "-x", str(version), "-u", target, *PROTOCOL_FLAGS[protocol],
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(window_ms), "--max-trials", "3",
        "--stability-percentage", "1000",
    ]  # fmt: skip
    # One connection per context (see perf_analyzer_env), so --workers see the load spread.
    env = perf.perf_analyzer_env()
    limit = 60 + 10 * seconds  # three windows and its start; a hung run must not stall us
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        raise PerfAnalyzerFailed(f"perf_analyzer ran past {limit:g} s: {command}") from None
    figures = dict(PERF_FIGURE.findall(done.stdout))
    if done.returncode != 0 or "Throughput" not in figures:
        raise PerfAnalyzerFailed(f"perf_analyzer failed:\n{done.stdout}{done.stderr}")
    return {
        "concurrency": concurrency,
        "requests_per_s": float(figures["Throughput"]),
        "errors": {},  # perf_analyzer stops at the first error
        **{f"p{p}_ms": float(figures[f"p{p} latency"]) / 1e3 for p in (50, 90, 99)},
    }
