"""The client distribution alone: `pip install ./client` into a fresh virtual environment gives
a working `digits` command, with nothing of the server (no onnxruntime) importable there."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.integration.server import ROOT, ServerProcess

SEVEN = ROOT / "deploy" / "helm" / "digits-serving" / "files" / "seven.png"


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("client")
    # Built from a copy: pip's build leaves build/ and *.egg-info beside the sources it reads.
    sources = scratch / "client"
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "client", sources, ignore=skip)
    where = scratch / "venv"
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    install = [python, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    subprocess.run([*install, str(sources)], check=True, timeout=300)
    return where


def test_the_client_installs_without_the_server(client_venv: Path) -> None:
    python = str(client_venv / "bin" / "python")
    for absent in ("onnxruntime", "service", "pydantic_settings", "prometheus_client"):
        found = subprocess.run(
            [python, "-c", f"import {absent}"], check=False, capture_output=True, cwd="/"
        )
        assert found.returncode != 0, f"{absent} is importable beside the client"
    subprocess.run([python, "-c", "import digits_client.cli"], check=True, cwd="/")


def test_the_installed_digits_command_talks_to_a_real_server(
    client_venv: Path, tmp_path: Path
) -> None:
    digits = str(client_venv / "bin" / "digits")
    server = ServerProcess()
    try:
        target = ["--target", server.address]

        def run(*args: str) -> str:
            done = subprocess.run(
                [digits, *target, *args],
                check=False,
                capture_output=True,
                text=True,
                cwd=tmp_path,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert run("health").strip() == "SERVING"
        assert "convnet" in run("models")
        classified = run("classify", str(SEVEN))
        assert " 7 " in classified, classified
        out = tmp_path / "layers.png"
        assert f"wrote {out}" in run("inspect", str(SEVEN), "--out", str(out))
        assert out.stat().st_size > 10_000
    finally:
        server.stop()
