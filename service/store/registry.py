"""The model store on disk → loaded models, each checked against its manifest.

A model version loads only if its `model.onnx` has the sha256 its manifest names and the graph's
inputs and outputs are the ones the manifest declares. A version that fails is logged with the
reason and left out; the others serve. The registry is read by every request and changed (at run
time, by `service.domain.lifecycle`) only by replacing a model's whole set of versions at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from service.errors import NotFound
from service.names import INPUT_NAME, INPUT_SHAPE, LAYER_PREFIX, LOGITS, REQUIRED_OUTPUTS
from service.store.device import Gpu
from service.store.manifest import OUTPUT_UNITS, Manifest, ManifestError, sha256_file
from service.store.repository import Fingerprint, list_model, model_names
from service.store.runtime import OnnxModel

log = logging.getLogger(__name__)


@dataclass(eq=False)  # by identity: a reloaded version is a new object, with its own batcher
class ModelVersion:
    name: str
    version: int
    path: Path
    manifest: Manifest
    runtime: OnnxModel
    fingerprint: Fingerprint | None = None  # of the files it was loaded from

    @cached_property
    def outputs(self) -> dict[str, list[int]]:
        """Output name → shape with -1 for the batch, in graph order."""
        return {o.name: o.shape for o in self.manifest.outputs}

    @property
    def layers(self) -> list[str]:
        return [n for n in self.outputs if n.startswith(LAYER_PREFIX)]

    @property
    def device_name(self) -> str:
        """The device clients are told about: "CPU" or "CUDA:0 NVIDIA H200"."""
        return self.runtime.placement.name

    @property
    def gpu(self) -> Gpu | None:
        """The GPU its session runs on; None on the CPU."""
        return self.runtime.placement.gpu

    @property
    def not_digit_threshold(self) -> float:
        return self.manifest.not_digit_threshold


@dataclass
class LoadFailure:
    name: str
    version: str
    reason: str
    fingerprint: Fingerprint | None = None  # of the files that failed: retried once they change


@dataclass
class Registry:
    models: dict[str, dict[int, ModelVersion]] = field(default_factory=dict)
    # (model, version) → why that version is not served; a later load that works clears it.
    failures: dict[tuple[str, str], LoadFailure] = field(default_factory=dict)
    loading: set[tuple[str, int]] = field(default_factory=set)  # (model, version) being loaded

    def replace(self, name: str, versions: dict[int, ModelVersion]) -> None:
        """Serve exactly `versions` of `name` from now on (empty: none). One assignment of a new
        mapping, never a change to the one readers hold: each sees the old set or the new."""
        models = dict(self.models)
        if versions:
            models[name] = dict(versions)
        else:
            models.pop(name, None)
        self.models = models

    def failed(
        self, name: str, version: int | str, reason: str, fingerprint: Fingerprint | None = None
    ) -> None:
        self.failures[(name, str(version))] = LoadFailure(name, str(version), reason, fingerprint)

    def record(self, loaded: Iterable[ModelVersion], failed: Iterable[LoadFailure]) -> None:
        """A load's outcome: each version that loaded clears its old failure."""
        for model in loaded:
            self.failures.pop((model.name, str(model.version)), None)
        for failure in failed:
            self.failures[(failure.name, failure.version)] = failure

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """`version` None, 0 or "" means the newest."""
        versions = self.models.get(name)
        if not versions:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model '{name}' is not served (models: {known})")
        if version in (None, 0, ""):
            return versions[max(versions)]
        try:
            number = int(version)
        except ValueError:
            raise NotFound(f"model '{name}' has no version '{version}'") from None
        if number not in versions:
            raise NotFound(f"model '{name}' has no version {number} (versions: {sorted(versions)})")
        return versions[number]

    def all(self) -> Iterable[ModelVersion]:
        for name in sorted(self.models):
            for version in sorted(self.models[name]):
                yield self.models[name][version]


def check_manifest(manifest: Manifest, runtime: OnnxModel, path: Path) -> None:
    if manifest.name != path.parent.name or str(manifest.version) != path.name:
        raise ManifestError(
            f"manifest names {manifest.name}/{manifest.version}, the directory is "
            f"{path.parent.name}/{path.name}"
        )
    inputs = [(i.name, i.shape) for i in manifest.inputs]
    if inputs != [(INPUT_NAME, INPUT_SHAPE)] or runtime.input_name != INPUT_NAME:
        raise ManifestError(f"expected one input 'image' {INPUT_SHAPE}, manifest has {inputs}")
    declared = {o.name: o.shape for o in manifest.outputs}
    if declared != runtime.output_shapes:
        raise ManifestError(
            f"manifest outputs {sorted(declared)} differ from the graph's "
            f"{sorted(runtime.output_shapes)} (or their shapes do)"
        )
    missing = [n for n in REQUIRED_OUTPUTS if n not in declared]
    if missing:
        raise ManifestError(f"graph lacks the outputs {missing}")

    def units(layer: str) -> int | None:
        shape = declared.get(LOGITS if layer == OUTPUT_UNITS else LAYER_PREFIX + layer)
        return shape[-1] if shape else None

    for i, link in enumerate(manifest.connections):
        expected = (units(link.target), units(link.source))
        if (len(link.weights), len(link.weights[0])) != expected:
            raise ManifestError(
                f"connections.{i}: weights are {len(link.weights)}x{len(link.weights[0])}, "
                f"the graph's {link.target} x {link.source} units are {expected[0]}x{expected[1]}"
            )


def load_version(path: Path, warmup: bool = True, **runtime_options: Any) -> ModelVersion:
    """Load, check and (with `warmup`) run once the version in `path`; raises ManifestError or
    the runtime's error."""
    fingerprint = Fingerprint.of(path)  # before reading: a change from here on shows later
    manifest_path, onnx_path = path / "manifest.json", path / "model.onnx"
    if not manifest_path.is_file() or not onnx_path.is_file():
        raise ManifestError("needs both manifest.json and model.onnx")
    manifest = Manifest.read(manifest_path)
    actual = sha256_file(onnx_path)
    if actual != manifest.onnx_sha256:
        raise ManifestError(
            f"model.onnx sha256 {actual[:12]}… differs from the manifest's "
            f"{manifest.onnx_sha256[:12]}…"
        )
    runtime = OnnxModel(onnx_path, **runtime_options)
    check_manifest(manifest, runtime, path)
    model = ModelVersion(path.parent.name, int(path.name), path, manifest, runtime, fingerprint)
    if warmup:
        runtime.warm_up()
    return model


def load_versions(
    store: Path, name: str, versions: Iterable[int], **options: Any
) -> tuple[dict[int, ModelVersion], dict[int, LoadFailure]]:
    """Load `versions` of model `name`: those that loaded, and why each other one did not
    (logged too). Touches no registry, so it may run on a thread while requests read one."""
    loaded: dict[int, ModelVersion] = {}
    failed: dict[int, LoadFailure] = {}
    for version in versions:
        where, path = f"{name}/{version}", store / name / str(version)
        fingerprint = Fingerprint.of(path)
        try:
            model = load_version(path, **options)
        except Exception as exc:
            log.error("model %s not loaded: %s", where, exc)
            failed[version] = LoadFailure(name, str(version), str(exc), fingerprint)
            continue
        loaded[version] = model
        log.info(
            "model %s loaded on %s (%s parameters)",
            where,
            model.runtime.device,
            f"{model.manifest.parameters:,}",
        )
    return loaded, failed


def load_registry(store: Path, only: Iterable[str] = (), **options: Any) -> Registry:
    """Load every model of the store (or those in `only`), the versions its policy chooses;
    failures are logged and recorded, not raised."""
    registry = Registry()
    wanted = set(only)
    for name in model_names(store):
        if wanted and name not in wanted:
            continue
        try:
            listing = list_model(store, name)
        except ManifestError as exc:
            log.error("model %s not loaded: %s", name, exc)
            registry.failed(name, "", str(exc))
            continue
        loaded, failed = load_versions(store, name, listing.versions, **options)
        registry.record(loaded.values(), failed.values())
        registry.replace(name, loaded)
    return registry
