"""The committed graphs run with onnxruntime on the CPU, for measuring them: a leaf that
evaluation, the not-a-digit figures and training's own checks share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

FloatArray = npt.NDArray[np.float32]


def session(onnx_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def to_input(images: npt.NDArray[np.uint8]) -> FloatArray:
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def run(
    sess: ort.InferenceSession,
    images: npt.NDArray[np.uint8],
    outputs: tuple[str, ...] = ("probabilities", "not_digit"),
    batch: int = 1000,
) -> dict[str, FloatArray]:
    """Run the graph over uint8 images in batches; returns the named outputs, concatenated."""
    parts: dict[str, list[FloatArray]] = {name: [] for name in outputs}
    for i in range(0, len(images), batch):
        got = sess.run(list(outputs), {"image": to_input(images[i : i + batch])})
        for name, value in zip(outputs, got, strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}
