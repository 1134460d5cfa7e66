"""The model store on disk: good versions load, broken ones are skipped with their reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import NotFound
from service.store.registry import load_registry

STORE = Path(__file__).resolve().parents[2] / "model_store"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """mlp v1 copied as v1, v2 (fine) and v3..v8, each broken in its own way."""
    root = tmp_path / "store"
    for version in range(1, 9):
        target = root / "mlp" / str(version)
        shutil.copytree(STORE / "mlp" / "1", target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["version"] = version
        (target / "manifest.json").write_text(json.dumps(manifest))
    broken = root / "mlp"
    # v3: the ONNX file changed on disk after the manifest was written.
    with (broken / "3" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    # v4: manifest is not JSON.
    (broken / "4" / "manifest.json").write_text("{not json")
    # v5: model.onnx missing.
    (broken / "5" / "model.onnx").unlink()
    # v6: the manifest declares an output the graph lacks.
    manifest = json.loads((broken / "6" / "manifest.json").read_text())
    manifest["outputs"].append({"name": "layer.extra", "dtype": "float32", "shape": [-1, 3]})
    (broken / "6" / "manifest.json").write_text(json.dumps(manifest))
    # v7: a connection into a layer the model does not have.
    manifest = json.loads((broken / "7" / "manifest.json").read_text())
    manifest["connections"][0]["target"] = "hidden3"
    (broken / "7" / "manifest.json").write_text(json.dumps(manifest))
    # v8: hidden1 -> hidden2 weights one source unit short of the graph's 16.
    manifest = json.loads((broken / "8" / "manifest.json").read_text())
    manifest["connections"][0]["weights"] = [
        row[:15] for row in manifest["connections"][0]["weights"]
    ]
    (broken / "8" / "manifest.json").write_text(json.dumps(manifest))
    (root / "mlp" / "notes").mkdir()  # not a version: ignored
    return root


def test_broken_versions_are_skipped_with_a_reason(store: Path) -> None:
    registry = load_registry(store, device="cpu")
    assert sorted(registry.models["mlp"]) == [1, 2]
    reasons = {f.version: f.reason for f in registry.failures.values()}
    assert "sha256" in reasons["3"]
    assert "not valid JSON" in reasons["4"]
    assert "needs both manifest.json and model.onnx" in reasons["5"]
    assert "differ from the graph" in reasons["6"]
    assert "connections.0: 'hidden3' is not one of the layers" in reasons["7"]
    assert (
        "connections.0: weights are 16x15, the graph's hidden2 x hidden1 units are 16x16"
        in (reasons["8"])
    )


def test_newest_version_is_the_default_and_versions_can_be_named(store: Path) -> None:
    registry = load_registry(store, device="cpu")
    assert registry.get("mlp").version == 2
    assert registry.get("mlp", "1").version == 1
    with pytest.raises(NotFound, match="no version 3"):
        registry.get("mlp", 3)
    with pytest.raises(NotFound, match="'lenet' is not served"):
        registry.get("lenet")


def test_loaded_model_runs_and_returns_only_what_was_asked(store: Path) -> None:
    model = load_registry(store, device="cpu").get("mlp")
    out = model.runtime.run(np.zeros((2, 1, 28, 28), np.float32), frozenset({"layer.hidden2"}))
    assert list(out) == ["layer.hidden2"]
    assert out["layer.hidden2"].shape == (2, 16)
    assert model.runtime.device == "CPU"
