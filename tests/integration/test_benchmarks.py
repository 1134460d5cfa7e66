"""The benchmark scripts still run and report what the README says they do (no speed checks),
and the peers they measure ours against answer what ours answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks import cpu, peers
from service._proto.inference import grpc_service_pb2 as v2
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc
from tests.integration import reference
from tests.integration.server import ROOT, ServerProcess


def run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "server_vs_inprocess.py"),
         "--model", "mlp", "--seconds", "0.5", "--concurrency", "1", "4", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def assert_measured(measured: dict[str, object]) -> None:
    assert measured["errors"] == {}
    assert isinstance(measured["requests_per_s"], float) and measured["requests_per_s"] > 0
    p50, p99 = measured["p50_ms"], measured["p99_ms"]
    assert isinstance(p50, float) and isinstance(p99, float) and 0 < p50 <= p99


def test_server_vs_inprocess_with_the_bare_floor_reports_every_run(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    done = run_benchmark("--floor", "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bare gRPC server" in done.stdout
    (repetition,) = json.loads(report.read_text())["repetitions"]
    assert repetition["ceiling"] > 0
    runs = repetition["runs"]
    assert [run["concurrency"] for run in runs] == [1, 4]
    for run in runs:
        assert_measured(run)
        assert_measured(run["bare"])


def test_server_vs_inprocess_with_the_straight_line_peer_reports_ours_over_peer(
    tmp_path: Path,
) -> None:
    report = tmp_path / "bench.json"
    done = run_benchmark("--peers", "straight-line", "--repeat", "2", "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    header, *rows = done.stdout.split("ours / peer's:\n")[1].splitlines()
    assert header.split()[:2] == ["concurrency", "peer"]
    assert [row.split()[:2] for row in rows] == [["1", "straight-line"], ["4", "straight-line"]]
    written = json.loads(report.read_text())
    assert written["start_s"]["straight-line"] > 0
    assert len(written["repetitions"]) == 2
    for repetition in written["repetitions"]:
        for run in repetition["runs"]:
            measured = run["peers"]["straight-line"]
            assert_measured(measured)
            assert measured["ours_over_peer"] == pytest.approx(
                run["requests_per_s"] / measured["requests_per_s"]
            )
            # Both servers answered every request with some CPU, and not with more cores than
            # this machine has.
            for server in (run, measured):
                assert 0 < server["server_cores"] <= (os.cpu_count() or 1) + 0.5
                assert server["server_cpu_ms"] == pytest.approx(
                    server["server_cores"] / server["requests_per_s"] * 1e3
                )


def test_ab_measures_each_server_in_turns_with_its_cpu_per_request() -> None:
    """Ours with its defaults, ours from a checkout (this one) and a peer, two rounds."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--model", "mlp",
         "--concurrency", "1", "--rounds", "2", "--seconds", "0.5",
         "--server=", f"--server=@{ROOT} --max-inline-cost-us 0", "--server", "straight-line"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[1] for row in rows] == ["(defaults)", f"@{ROOT}", "straight-line"]
    for row in rows:
        cpu_ms = float(row[-4])  # median CPU ms per request, then its range and the ratio
        assert 0 < cpu_ms < 100
    assert rows[0][-2] == "1.00"  # the first server's ratio to itself


def test_handler_cost_reports_both_handlers_per_call() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "handler_cost.py"), "--model", "mlp",
         "--concurrency", "1", "4", "--calls", "200", "--rounds", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "4"]
    for row in rows:
        ours, theirs, gap = (float(row[i]) for i in (1, 3, 5))  # medians, each with its range
        assert ours > 0 and theirs > 0
        assert abs(gap) < ours + theirs


def test_tree_cpu_seconds_counts_the_descendants_of_a_process() -> None:
    """Triton's work is done two processes below the one the benchmark starts."""
    burn = "import time; end = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    spawn = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burn!r}])\n"
        "time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", spawn])
    try:
        deadline = time.monotonic() + 20
        while cpu.tree_cpu_seconds(parent.pid) < 0.4:  # the parent alone burns ~0.05 s
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def infer(
    target: str, model: str, images: np.ndarray, outputs: list[str], version: str = ""
) -> v2.ModelInferResponse:
    request = v2.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="image", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.astype(np.float32).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    with grpc.insecure_channel(target) as channel:
        response: v2.ModelInferResponse = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=30
        )
    return response


def tensors(response: v2.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        out.name: np.frombuffer(raw, dtype="<f4").reshape(list(out.shape))
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


@pytest.fixture(scope="module")
def straight_line() -> Iterator[peers.Peer]:
    # The version the server answers with by default: the newest.
    with peers.peer("straight-line", "convnet", reference.newest("convnet")) as peer:
        yield peer


def test_straight_line_peer_answers_what_the_server_answers(
    server: ServerProcess, straight_line: peers.Peer
) -> None:
    images = np.random.default_rng(3).random((3, 1, 28, 28), dtype=np.float32)
    images[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]  # sanitised alike: 0, 1, 0
    names = ["probabilities", "not_digit"]
    ours = tensors(infer(server.address, "convnet", images, names))
    theirs = tensors(infer(straight_line.target, "convnet", images, names))
    assert list(theirs) == names
    for name in names:
        assert theirs[name].shape == ours[name].shape
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-5, atol=1e-6)


def test_straight_line_peer_refuses_an_unknown_model_and_a_wrong_shape(
    straight_line: peers.Peer,
) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        infer(straight_line.target, "mlp", np.zeros((1, 1, 28, 28)), [])
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as wrong:
        infer(straight_line.target, "convnet", np.zeros((1, 28, 28)), [])
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.skipif(not peers.TRITON_PYTHON.exists(), reason="no .venv-triton (make triton-peer)")
def test_triton_peer_answers_what_the_server_answers(server: ServerProcess) -> None:
    images = np.random.default_rng(4).random((2, 1, 28, 28), dtype=np.float32)
    names = ["probabilities", "not_digit"]
    # The version named on both sides: unnamed, ours answers its newest whatever Triton serves.
    for version in (2, 3):
        ours = tensors(infer(server.address, "mlp", images, names, str(version)))
        with peers.peer("triton", "mlp", version) as triton:
            theirs = tensors(infer(triton.target, "mlp", images, names, str(version)))
        assert sorted(theirs) == sorted(names)
        np.testing.assert_allclose(theirs["probabilities"], ours["probabilities"], rtol=1e-5)
        # Triton declares a per-image scalar as dims [1]: [N,1] where ours answers [N].
        np.testing.assert_allclose(theirs["not_digit"].reshape(-1), ours["not_digit"], rtol=1e-5)
