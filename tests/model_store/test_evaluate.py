"""`python -m training.evaluate` on a committed model: the report and its pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.evaluate import main


def test_evaluate_prints_accuracy_and_writes_pngs(
    tmp_path: Path, mnist_dir: Path, model_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--model",
        "mlp",
        "--version",
        "1",
        "--model-store",
        str(model_store),
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mlp v1: test accuracy" in out
    assert "per class: 0:" in out
    for name in ("mlp-v1-confusion.png", "mlp-v1-mistakes.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 500 and image.height > 500
