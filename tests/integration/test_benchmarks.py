"""The benchmark scripts still run and report what the README says they do (no speed checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ROOT


def test_server_vs_inprocess_with_the_bare_floor_reports_every_run(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "server_vs_inprocess.py"),
         "--model", "mlp", "--seconds", "0.5", "--concurrency", "1", "4", "--floor",
         "--json", str(report)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bare gRPC server" in done.stdout
    (repetition,) = json.loads(report.read_text())["repetitions"]
    assert repetition["ceiling"] > 0
    runs = repetition["runs"]
    assert [run["concurrency"] for run in runs] == [1, 4]
    for run in runs:
        for measured in (run, run["bare"]):
            assert measured["errors"] == {}
            assert measured["requests_per_s"] > 0
            assert 0 < measured["p50_ms"] <= measured["p99_ms"]
