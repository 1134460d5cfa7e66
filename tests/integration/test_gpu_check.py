"""benchmarks/gpu_check.sh, the one command for a lent GPU machine: every step's command
resolves (--dry-run), and its in-process step and report run for real with tiny cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ROOT

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"
STEPS = ["index", "install", "providers", "conformance", "in-process", "server", "candidates"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_dry_run_resolves_every_step(tmp_path: Path) -> None:
    done = run(str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path / "out"))
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("== ")] == STEPS
    assert "dry run: every step resolves" in done.stdout
    assert (tmp_path / "out" / "gpu_check.log").read_text() == done.stdout


def test_in_process_step_and_report_say_which_provider_was_used(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    tiny = ["--seconds", "0.01", "--batches", "1", "64", "--models", "mlp"]
    run(sys.executable, str(GPU_CHECK), "in-process", "--work", str(work), *tiny)
    done = run(sys.executable, str(GPU_CHECK), "report", "--work", str(work), "--out", str(out))

    result = json.loads((out / "gpu_check.json").read_text())
    provider = result["in_process"][0]["provider"]
    assert f"provider used: {provider}" in done.stdout
    cells = {(c["batch"], c["mode"]): c for c in result["in_process"]}
    assert set(cells) == {(1, "run"), (1, "io_binding"), (64, "run"), (64, "io_binding")}
    assert all(c["runs"] >= 5 and c["p50_ms"] > 0 and c["images_per_s"] > 0 for c in cells.values())
    table = (out / "gpu_check.md").read_text()
    assert f"**Provider used: {provider}.**" in table
    if provider == "CPUExecutionProvider":
        assert "a CPU rehearsal (not GPU figures)" in table.splitlines()[0]
    p50 = f"{cells[(64, 'run')]['p50_ms']:.3f}"
    assert f"| mlp | 64 | {p50} |" in table
