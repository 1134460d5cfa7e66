"""Export a trained network to ONNX and write its manifest into the model store."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.store.manifest import Manifest, sha256_file
from training.models import MLP, ConvNet, Exported, count_parameters

OPSET = 18
INPUT_NAME = "image"


def export_onnx(
    model: ConvNet | MLP,
    path: Path,
    temperature: float = 1.0,
    not_digit: tuple[str, float, float] | None = None,
    scorer: torch.nn.Module | None = None,
) -> list[str]:
    """Write `model` as ONNX with a dynamic batch dimension; returns the output names."""
    wrapper = Exported(model, temperature, not_digit, scorer).eval()
    names = wrapper.output_names()
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        wrapper,
        (torch.zeros(2, 1, 28, 28),),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=names,
        dynamic_shapes={"image": {0: batch}},
        opset_version=OPSET,
        external_data=False,
        optimize=True,
    )
    assert program is not None
    program.save(str(path), external_data=False)
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model, full_check=True)
    return names


def tensor_specs(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of the graph as {name, dtype, shape}, -1 for the batch dimension."""
    graph = onnx.load(str(onnx_path)).graph

    def spec(value: Any) -> dict[str, Any]:
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        return {"name": value.name, "dtype": str(np.dtype(dtype)), "shape": shape}

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime-gpu", "onnxruntime", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    *,
    name: str,
    version: int,
    model: ConvNet | MLP,
    onnx_path: Path,
    metrics: dict[str, Any],
    not_digit_threshold: float,
    training: dict[str, Any],
) -> Manifest:
    """The manifest the server reads back; pydantic checks it here, before it is written."""
    inputs, outputs = tensor_specs(onnx_path)
    return Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "architecture": model.architecture,
            "parameters": count_parameters(model),
            "layers": list(model.layer_names),
            "inputs": inputs,
            "outputs": outputs,
            "metrics": metrics,
            "not_digit_threshold": not_digit_threshold,
            "onnx_sha256": sha256_file(onnx_path),
            "training": {**training, "libraries": library_versions()},
        }
    )
