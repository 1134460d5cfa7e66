"""Direct onnxruntime results: what the server's answers must equal."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from training import data

STORE = Path(__file__).resolve().parents[2] / "model_store"
MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"


def newest(model: str) -> int:
    return max(int(p.name) for p in (STORE / model).iterdir() if p.name.isdigit())


@functools.cache
def session(model: str, version: int | None = None) -> ort.InferenceSession:
    path = STORE / model / str(version or newest(model)) / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def manifest(model: str, version: int | None = None) -> dict[str, object]:
    path = STORE / model / str(version or newest(model)) / "manifest.json"
    result: dict[str, object] = json.loads(path.read_text())
    return result


def run(
    model: str, images: npt.NDArray[np.float32], outputs: list[str], version: int | None = None
) -> dict[str, npt.NDArray[np.float32]]:
    values = session(model, version).run(outputs, {"image": images})
    return dict(zip(outputs, values, strict=True))


@functools.cache
def mnist_test() -> data.Split:
    return data.load_split(MNIST, "test")


def test_images(count: int, offset: int = 0) -> npt.NDArray[np.float32]:
    images = mnist_test().images[offset : offset + count]
    return (images.astype(np.float32) / 255.0)[:, None, :, :]
