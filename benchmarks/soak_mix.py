"""What `benchmarks/soak.py` sends and how it reads the server: the request mix (valid and
invalid V2 and digits.v1 calls), one call's outcome as a status name, the server's memory."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service._proto.digits.v1 import digits_pb2  # noqa: E402
from service._proto.inference import grpc_service_pb2 as v2  # noqa: E402
from training.data import load_split  # noqa: E402

EXPECTED = {"valid": {"OK"}, "invalid": {"INVALID_ARGUMENT", "NOT_FOUND"}}


def rss_mib(pid: int) -> float:
    """Resident memory of the server: the process and its children (a server with --workers)."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mib(int(child))
    return total


def v2_request(model: str, images: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    return request


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(255 - pixels).resize((112, 112)).save(out, format="PNG")
    return out.getvalue()


class Mix:
    """The requests of the soak, made once: (kind, rpc name, message)."""

    def __init__(self) -> None:
        test = load_split(ROOT.parent / "shared" / "datasets" / "mnist", "test").images[:64]
        pixels = (test.astype(np.float32) / 255)[:, None]
        bad_shape = v2.ModelInferRequest(model_name="convnet")
        bad_shape.inputs.add(name="image", datatype="FP32", shape=[1, 1, 27, 28])
        bad_shape.raw_input_contents.append(pixels[0, :, :27].tobytes())
        self.items: list[tuple[str, str, object]] = [
            *(("valid", "v2", v2_request("convnet", pixels[i : i + 1])) for i in range(40)),
            *(("valid", "v2", v2_request("mlp", pixels[i : i + 4])) for i in range(10)),
            *(
                (
                    "valid",
                    "digits",
                    digits_pb2.ClassifyRequest(
                        model="convnet",
                        include_not_digit=True,
                        images=[digits_pb2.Image(encoded=png(test[i]))],
                    ),
                )
                for i in range(10)
            ),
            ("invalid", "v2", bad_shape),
            ("invalid", "v2", v2_request("lenet", pixels[:1])),
            (
                "invalid",
                "digits",
                digits_pb2.ClassifyRequest(images=[digits_pb2.Image(encoded=png(test[0])[:60])]),
            ),
            (
                "invalid",
                "digits",
                digits_pb2.ClassifyRequest(
                    images=[digits_pb2.Image(pixels=digits_pb2.Pixels(data=[float("nan")] * 784))]
                ),
            ),
        ]
        # About one request in six is invalid.
        self.weights = [1.0] * 60 + [2.5] * 4


async def call(stubs: dict[str, object], rpc: str, message: object, timeout: float) -> str:
    method = stubs[rpc].ModelInfer if rpc == "v2" else stubs[rpc].Classify  # type: ignore[attr-defined]
    try:
        await method(message, timeout=timeout)
        return "OK"
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNAVAILABLE and "stopped before" in (err.details() or ""):
            return "UNAVAILABLE:accepted-then-dropped"  # queued, then the grace period ran out
        return err.code().name
