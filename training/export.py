"""Export a trained network to ONNX and write its manifest into the model store.

    python -m training.export --add-connections model_store/mlp/1 ...

adds the `connections` (the dense weights between small layers) to the manifests of versions
exported before manifests carried them, reading the weights from each version's graph.
"""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.store.manifest import Connection, Manifest, sha256_file
from training.models import MLP, MODELS, ConvNet, Exported, count_parameters

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


def connections(onnx_path: Path, pairs: tuple[tuple[str, str], ...]) -> list[Connection]:
    """The weights from `source` to `target` for each pair, as the graph holds them: the
    initializers `model.<target>.weight` ([target units, source units]) and `.bias`."""
    initializers = {i.name: i for i in onnx.load(str(onnx_path)).graph.initializer}

    def array(name: str) -> list[Any]:
        values: list[Any] = onnx.numpy_helper.to_array(initializers[name]).tolist()
        return values

    return [
        Connection(
            source=source,
            target=target,
            weights=array(f"model.{target}.weight"),
            bias=array(f"model.{target}.bias"),
        )
        for source, target in pairs
    ]


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
            "connections": connections(onnx_path, model.connections),
        }
    )


def add_connections(version_dir: Path) -> None:
    """Give an exported version's manifest the connections its model class declares."""
    path = version_dir / "manifest.json"
    manifest = Manifest.read(path)
    pairs = MODELS[manifest.name].connections
    found = connections(version_dir / "model.onnx", pairs)
    Manifest.model_validate({**manifest.model_dump(), "connections": found}).write(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    parser.add_argument("--add-connections", nargs="+", type=Path, metavar="VERSION_DIR")
    args = parser.parse_args(argv)
    for version_dir in args.add_connections or []:
        add_connections(version_dir)
        print(f"{version_dir}: connections added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
