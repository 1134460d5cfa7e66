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

from pydantic import BaseModel, ConfigDict, Field, ValidationError


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
