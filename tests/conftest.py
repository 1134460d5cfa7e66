"""Shared fixtures: the datasets beside the project and the committed model store."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
MODEL_STORE = ROOT / "model_store"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = DATASETS / "mnist"
    if not (path / "SHA256SUMS").is_file():
        pytest.fail(f"{path}: MNIST is expected beside the project (../shared/datasets/mnist)")
    return path


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return DATASETS / "fashion-mnist"


@pytest.fixture(scope="session")
def model_store() -> Path:
    return MODEL_STORE
