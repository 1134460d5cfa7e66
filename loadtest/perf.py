"""Triton's own perf_analyzer with the load test's settings, for comparing with Triton.

One perf_analyzer run per model and concurrency (closed loop), and one per model at the open
loop's rate with Poisson arrivals. perf_analyzer speaks only the V2 API and sends its own random
tensors; the server clips them to [0,1].
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SUMMARY = re.compile(r"^(Concurrency|Request Rate): .*throughput: .*$", re.MULTILINE)


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart even on a CPU machine; the pip package provides it.

    tritonclient shares one connection among up to 6 concurrent contexts; one each lets a
    server with --workers see the load spread (the kernel balances connections, not calls)."""
    env = {"TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT": "1", **os.environ}
    try:
        runtime = importlib.import_module("nvidia.cuda_runtime")
    except ImportError:
        return env
    lib = Path(next(iter(runtime.__path__))) / "lib"
    path = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = f"{lib}:{path}" if path else str(lib)
    return env


def find_binary() -> str | None:
    return shutil.which("perf_analyzer", path=str(Path(sys.executable).parent)) or shutil.which(
        "perf_analyzer"
    )


def commands(
    binary: str,
    target: str,
    models: Sequence[str],
    concurrency: Sequence[int],
    rate: float,
    batch_size: int,
    duration_s: float,
) -> list[list[str]]:
    # Three measurement windows per run; a busy machine is never "stable", so do not wait for it.
    window_ms = max(500, round(duration_s * 1000 / 3))
    common = [
        "-u",
        target,
        "-i",
        "grpc",
        "-b",
        str(batch_size),
        "--measurement-interval",
        str(window_ms),
        "--max-trials",
        "3",
        "--stability-percentage",
        "1000",
    ]
    runs = []
    for model in models:
        runs += [
            [binary, "-m", model, *common, "--concurrency-range", f"{c}:{c}"] for c in concurrency
        ]
        if rate > 0:
            runs.append(
                [
                    binary,
                    "-m",
                    model,
                    *common,
                    "--request-rate-range",
                    f"{rate:g}:{rate:g}",
                    "--request-distribution",
                    "poisson",
                ]
            )
    return runs


def run_all(runs: list[list[str]], timeout_s: float) -> int:
    """Each run's full output, then one summary line per run; non-zero if any run failed."""
    env, summary, status = perf_analyzer_env(), [], 0
    for command in runs:
        print("$ " + " ".join(command), flush=True)
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            print(f"perf_analyzer did not finish in {timeout_s:g} s", flush=True)
            status = 1
            continue
        print(done.stdout + done.stderr, flush=True)
        model = command[command.index("-m") + 1]
        found = SUMMARY.search(done.stdout)
        summary.append(f"{model:<8} " + (found[0] if found else f"failed (exit {done.returncode})"))
        status = status or (done.returncode != 0)
    print("perf_analyzer summary:\n  " + "\n  ".join(summary), flush=True)
    return int(status)
