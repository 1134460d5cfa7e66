"""`make load-test` drives a server it starts itself and writes a report that tools can read.

No speed thresholds: the test machine is shared; these check that the tool works and what it
writes, not how fast the server is.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from tests.integration.server import ROOT, ServerProcess, scrape, wait_for

MAKE = ["make", "--no-print-directory", "--assume-old=.venv/.installed"]
QUICK = ["--quick", "--start-server", "--models", "mlp", "--concurrency", "1", "4", "--rate", "50"]
PHASE_KEYS = {
    "model",
    "api",
    "mode",
    "concurrency",
    "rate",
    "batch_size",
    "duration_s",
    "interrupted",
    "requests",
    "ok",
    "requests_per_s",
    "images_per_s",
    "latency_ms",
    "codes",
    "errors",
    "unexpected",
    "shed",
    "client_overload",
    "cancelled",
    "server",
}
SERVER_KEYS = {
    "batches",
    "mean_batch_size",
    "queue_ms_mean",
    "inference_ms_mean",
    "request_ms_mean",
    "requests",
}


def only_report(out: Path) -> dict[str, Any]:
    [path] = out.glob("load-*.json")
    assert path.with_suffix(".png").is_file()
    with Image.open(path.with_suffix(".png")) as png:
        png.verify()
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def succeeds(command: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_make_load_test_writes_a_report_of_successful_phases(tmp_path: Path) -> None:
    # --assume-old: the test's own environment is installed already; never pip from a test.
    args = " ".join([*QUICK, "--out", str(tmp_path)])
    result = succeeds([*MAKE, "load-test", f"LOAD_ARGS={args}", f"PY={sys.executable}"])
    assert "req/s" in result.stdout and "p99 ms" in result.stdout  # the table

    report = only_report(tmp_path)
    assert report["failed"] is False and report["interrupted"] is False
    assert report["server_started"] is True
    assert report["settings"]["concurrency"] == [1, 4]
    phases = report["phases"]
    expected = [
        (api, mode, load)
        for api in ("v2", "digits")
        for mode, load in (("closed", 1), ("closed", 4), ("open", 50.0))
    ]
    assert [
        (p["api"], p["mode"], p["concurrency"] if p["mode"] == "closed" else p["rate"])
        for p in phases
    ] == expected
    for phase in phases:
        assert set(phase) == PHASE_KEYS
        assert phase["model"] == "mlp"
        assert phase["requests"] > 0
        assert phase["ok"] == phase["requests"], phase["codes"]
        assert phase["errors"] == {} and phase["unexpected"] == {}
        latency = phase["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        server = phase["server"]
        assert set(server) == SERVER_KEYS
        # Every answer the client got was counted by the server within the same phase.
        assert server["requests"]["OK"] >= phase["ok"]
        assert server["batches"] > 0 and server["mean_batch_size"] >= 1


def test_ctrl_c_ends_the_phase_writes_the_partial_report_and_exits_130(
    server: ServerProcess, tmp_path: Path
) -> None:
    ok = ("digits_requests_total", (("api", "v2"), ("code", "OK"), ("model", "mlp")))
    before = scrape(server).get(ok, 0.0)
    args = [
        *("--target", server.address),
        *("--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics"),
        *("--models", "mlp", "--apis", "v2", "--concurrency", "1", "--rate", "0"),
        *("--duration", "60", "--out", str(tmp_path)),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Past the 5 warm-up requests: the one 60 s phase is under way.
        wait_for(lambda: scrape(server).get(ok, 0.0) - before > 50, timeout=30)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stdout + stderr
    assert "interrupted" in stdout
    report = only_report(tmp_path)
    assert report["interrupted"] is True and report["failed"] is False
    assert report["server_started"] is False and report["target"] == server.address
    [phase] = report["phases"]
    assert phase["interrupted"] is True and phase["duration_s"] < 60
    assert phase["ok"] > 0 and phase["unexpected"] == {}
    assert server.process.poll() is None  # a server it did not start keeps serving


def test_load_test_over_several_connections_to_workers_counts_every_answer(
    tmp_path: Path,
) -> None:
    args = [*QUICK, "--apis", "v2", "--connections", "4", "--server-args=--workers 2"]
    succeeds([sys.executable, "-m", "loadtest", *args, "--out", str(tmp_path)])
    report = only_report(tmp_path)
    assert report["settings"]["connections"] == 4
    for phase in report["phases"]:
        assert phase["requests"] > 0 and phase["ok"] == phase["requests"], phase["codes"]
        # /metrics of a server with workers is their sum: the client's answers are all there.
        assert phase["server"]["requests"]["OK"] >= phase["ok"]
