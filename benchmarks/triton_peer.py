"""Triton Inference Server as a peer: the same ONNX model behind Triton's dynamic batcher.

    make triton-peer
    .venv-triton/bin/python benchmarks/triton_peer.py --model convnet

Serves `model_store/<model>/<version>/model.onnx` through PyTriton (the `tritonserver` binary
bundled in nvidia-pytriton): Triton receives the KServe V2 calls, its dynamic batcher (max batch
size 64, no queue delay, as ours by default) forms batches, and the batch is run here by one
onnxruntime CPU session. gRPC listens on a free port of 127.0.0.1, and `port N` is printed on
stdout when the model is ready; HTTP and metrics get free ports of their own. Runs under
.venv-triton (made from /usr/bin/python3: the Python-backend stub links Debian's libpython3.11),
not the project's venv.

Start-up takes 3.5-4 s here (tritonserver, then the Python-backend stub connecting back to this
process). One start in about 30 hung: its workspace had the model's config and server sockets
but no data socket (PyTriton's tensor store never came up); peers.start gives up after 60 s.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch  # type: ignore[import-not-found]
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # type: ignore[import-not-found]
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("probabilities", "logits", "not_digit")
MAX_BATCH_SIZE = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session(model_path: Path) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def infer_function(sess: Any) -> Any:
    """A batch of images [N,1,28,28] → the model's outputs, per image (not_digit as [N,1])."""

    @batch  # type: ignore[untyped-decorator]
    def infer(image: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        pixels = np.clip(np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        results = sess.run(list(OUTPUTS), {"image": pixels.astype(np.float32, copy=False)})
        out = dict(zip(OUTPUTS, results, strict=True))
        out["not_digit"] = out["not_digit"].reshape(-1, 1)
        return out

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--version", type=int, default=2)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    args = parser.parse_args()
    # PyTriton's and tritonserver's own logs go to stderr; stdout carries only `port N`.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # SIGTERM as SIGINT: PyTriton's serve() then stops tritonserver and removes its workspace.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    grpc_port = free_port()
    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        http_address="127.0.0.1",
        http_port=free_port(),
        metrics_address="127.0.0.1",
        metrics_port=free_port(),
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    sess = session(args.model_store / args.model / str(args.version) / "model.onnx")
    # No token: perf_analyzer reads ModelStatistics, which PyTriton restricts by default.
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as t:
        t.bind(
            model_name=args.model,
            model_version=args.version,
            infer_func=infer_function(sess),
            inputs=[Tensor(name="image", dtype=np.float32, shape=(1, 28, 28))],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                Tensor(name="logits", dtype=np.float32, shape=(10,)),
                Tensor(name="not_digit", dtype=np.float32, shape=(1,)),
            ],
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
        )
        print(f"port {grpc_port}", flush=True)
        t.serve()


if __name__ == "__main__":
    main()
