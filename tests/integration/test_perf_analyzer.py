"""Triton's own perf_analyzer (as shipped in tritonclient 2.41) drives the server unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nvidia.cuda_runtime
import pytest

from tests.integration.server import ServerProcess, scrape


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart even on a CPU machine; the pip package provides it."""
    lib = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
    path = os.environ.get("LD_LIBRARY_PATH", "")
    return {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{path}" if path else str(lib)}


def run_perf_analyzer(server: ServerProcess, args: str, protocol: str = "grpc") -> None:
    """perf_analyzer `args` against `server` over `protocol` (grpc, http), 50 requests a window;
    fails unless it reports."""
    binary = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent))
    assert binary, "perf_analyzer is installed with tritonclient[grpc]"
    # --stability-percentage 1000: a shared 2-core machine is never "stable"; the tests check
    # that perf_analyzer works unchanged, not how fast.
    common = (
        f"-u 127.0.0.1:{server.http_port if protocol == 'http' else server.grpc_port} "
        f"-i {protocol} --measurement-mode count_windows "
        "--measurement-request-count 50 --max-trials 3 --stability-percentage 1000"
    )
    result = subprocess.run(
        [binary, *args.split(), *common.split()],
        env=perf_analyzer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Throughput:" in result.stdout


@pytest.mark.parametrize(("model", "batch"), [("mlp", 1), ("convnet", 4)])
def test_perf_analyzer_runs_against_the_server(
    server: ServerProcess, model: str, batch: int
) -> None:
    ok = ("digits_requests_total", (("api", "v2"), ("code", "OK"), ("model", model)))
    before = scrape(server).get(ok, 0.0)
    run_perf_analyzer(server, f"-m {model} -b {batch} --concurrency-range 2")
    assert scrape(server).get(ok, 0.0) - before >= 50


@pytest.mark.parametrize(("model", "batch"), [("mlp", 1), ("convnet", 4)])
def test_perf_analyzer_runs_over_http(server: ServerProcess, model: str, batch: int) -> None:
    """`-i http`: the model's config and statistics as JSON, binary tensors both ways."""
    ok = ("digits_requests_total", (("api", "v2_http"), ("code", "OK"), ("model", model)))
    before = scrape(server).get(ok, 0.0)
    run_perf_analyzer(server, f"-m {model} -b {batch} --concurrency-range 2", protocol="http")
    assert scrape(server).get(ok, 0.0) - before >= 50
