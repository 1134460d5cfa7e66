"""`manifest.json`, typed: what training writes beside each `model.onnx` and the server reads back.

A leaf (pydantic only, nothing of ours), so training imports it without importing the server:

    manifest = Manifest.read(version_dir / "manifest.json")   # ManifestError names the field
    manifest.write(path)

Figures training adds over time (calibration, the not-a-digit score's description) ride along in
`metrics` and `training` as they are; the fields the server relies on are typed and checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ManifestError(Exception):
    """The files of a model version disagree with each other or with the contract."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Literal["float32"]
    shape: list[int]  # -1 for the batch


class Figures(BaseModel):
    """Measured by training on data it did not train on; more keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    test_accuracy: float = Field(ge=0, le=1)
    test_images: int = Field(ge=0)


# The target of the last connection: the graph's logits, before the temperature divides them.
OUTPUT_UNITS = "output"


class Connection(BaseModel):
    """The weights from one layer's units to the next's, `weights[target_unit][source_unit]`,
    and the target units' biases: target = activation(weights @ source + bias). What the
    playground draws between the mlp's 16-unit layers, as the lesson behind it does. Only small
    dense layers carry them (the mlp's 16x16 and 10x16)."""

    model_config = ConfigDict(extra="forbid")

    source: str  # a layer: "hidden1"
    target: str  # a layer, or OUTPUT_UNITS
    weights: list[list[float]]
    bias: list[float]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    architecture: str
    parameters: int = Field(ge=0)
    layers: list[str]  # short names, in the order they run: "conv1", "hidden1"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]  # in graph order
    metrics: Figures
    not_digit_threshold: float = Field(ge=0, le=1)
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training: dict[str, Any]  # the recipe, the data's checksums, library versions
    connections: list[Connection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _connections_join_layers(self) -> Manifest:
        """Each connection joins known layers with one row and one bias per target unit, all
        rows as long; the registry checks the unit counts against the graph's outputs."""
        for i, link in enumerate(self.connections):
            for end in (link.source, link.target):
                if end not in self.layers and end != OUTPUT_UNITS:
                    raise ValueError(f"connections.{i}: {end!r} is not one of the layers")
            widths = {len(row) for row in link.weights}
            if len(widths) != 1 or len(link.bias) != len(link.weights):
                raise ValueError(
                    f"connections.{i}: weights must be rows of one length, one per bias"
                )
        return self

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ManifestError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
        try:
            return cls.model_validate(json.loads(text))
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                raise ManifestError(f"{path.name}: {describe(exc)}") from exc
            raise ManifestError(f"{path.name} is not valid JSON ({exc})") from exc

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def describe(error: ValidationError) -> str:
    """Each problem as `field.path: message`, e.g. `outputs.2.shape: Input should be a list`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'manifest'}: {problem['msg']}"
        for problem in error.errors()
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
