"""The requests a phase sends: MNIST test images as V2 raw tensors or digits.v1 PNGs.

Requests are built once, before any phase starts, so building them costs no measured time.
"""

from __future__ import annotations

import gzip
import io
import os
from itertools import cycle
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from digits_client._proto.digits.v1 import digits_pb2
from digits_client._proto.inference import grpc_service_pb2 as v2
from PIL import Image

Api: TypeAlias = Literal["v2", "digits"]
APIS: tuple[Api, ...] = ("v2", "digits")
# Distinct requests per (model, API); they are sent round-robin.
POOL = 64
MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def load_images(data_dir: Path | None, count: int) -> tuple[npt.NDArray[np.uint8], str]:
    """MNIST test images [N,28,28], or seeded noise strokes when MNIST is not at hand.

    Returns the images and where they came from, for the report. The file is read here, not
    through `training.data`: the load test is a client tool and imports nothing of training or
    the server (nor verifies checksums: these images are only load).
    """
    where = data_dir or default_data_dir()
    try:
        return _idx_images(where / MNIST_TEST_IMAGES, count), f"MNIST test images from {where}"
    except (OSError, EOFError, ValueError) as exc:
        rng = np.random.default_rng(0)
        noise = np.zeros((count, 28, 28), np.uint8)
        noise[:, 6:22, 10:18] = rng.integers(128, 256, (count, 16, 8), dtype=np.uint8)
        return noise, f"synthetic images (MNIST unavailable: {exc})"


def default_data_dir() -> Path:
    """As training's: `DIGITS_DATA_DIR` if set, else `../shared/datasets/mnist`."""
    env = os.environ.get("DIGITS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/mnist"


def _idx_images(path: Path, count: int) -> npt.NDArray[np.uint8]:
    """The first `count` images of a gzipped IDX file of 28x28 unsigned bytes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b"\x00\x00\x08\x03" or raw[8:16] != (28).to_bytes(4, "big") * 2:
        raise ValueError(f"{path}: not an IDX file of 28x28 images")
    images = np.frombuffer(raw, np.uint8, offset=16)
    if images.size % (28 * 28):
        raise ValueError(f"{path}: truncated")
    return np.ascontiguousarray(images.reshape(-1, 28, 28)[:count])


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def v2_request(model: str, images: npt.NDArray[np.uint8]) -> v2.ModelInferRequest:
    """No outputs named: the server returns its defaults, as perf_analyzer asks."""
    pixels = (images.astype(np.float32) / 255.0).reshape(len(images), 1, 28, 28)
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    return request


def digits_request(model: str, encoded: list[bytes]) -> digits_pb2.ClassifyRequest:
    return digits_pb2.ClassifyRequest(
        model=model, images=[digits_pb2.Image(encoded=data) for data in encoded]
    )


class Workload:
    """A round-robin source of requests for each (model, API) pair."""

    def __init__(self, images: npt.NDArray[np.uint8], batch_size: int) -> None:
        self.batch_size = batch_size
        self.images = images
        self.pngs = [png_bytes(image) for image in images]

    def _rows(self, k: int) -> list[int]:
        n = len(self.images)
        return [(k * self.batch_size + i) % n for i in range(self.batch_size)]

    def requests(self, model: str, api: Api) -> cycle[Any]:
        pool: list[Any] = []
        for k in range(POOL):
            rows = self._rows(k)
            if api == "v2":
                pool.append(v2_request(model, self.images[rows]))
            else:
                pool.append(digits_request(model, [self.pngs[i] for i in rows]))
        return cycle(pool)
