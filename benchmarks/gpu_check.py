"""The steps of benchmarks/gpu_check.sh that run in Python, one subcommand each.

    python benchmarks/gpu_check.py providers  --work DIR
    python benchmarks/gpu_check.py in-process --work DIR [--seconds S] [--batches 1 8 ...]
    python benchmarks/gpu_check.py server     --work DIR [--seconds S] [--concurrency 1 8 ...]
    python benchmarks/gpu_check.py candidates --work DIR [--seconds S]
    python benchmarks/gpu_check.py report     --work DIR --out DIR

Each measuring step writes `<step>.json` into the work folder after every cell, so a step cut
short by its timeout still leaves what it measured; `report` (benchmarks/gpu_report.py) turns
the folder into one JSON and one Markdown table. Sessions are made as the server makes them
(`service.store.runtime`: same device decision, same CUDA libraries preloaded), so the provider that
in-process onnxruntime reports is the one the server uses. `--dry-run` checks that a step could
start (models, perf_analyzer, the work folder) and measures nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_report  # noqa: E402
from benchmarks.drivers import PerfAnalyzerFailed, drive_perf_analyzer  # noqa: E402
from loadtest import perf  # noqa: E402
from service.store.device import CUDA  # noqa: E402
from service.store.runtime import choose_device, open_session  # noqa: E402
from tests.integration.server import ServerProcess  # noqa: E402

MODELS = ("convnet", "mlp")
# What perf_analyzer asks the server for: every output in the model's metadata.
OUTPUTS = ["probabilities", "logits", "not_digit"]
# The batcher settings to settle on a GPU (README, GPU): the CPU defaults, the provisional GPU
# defaults, and a small queue delay with each. Concurrency 256 is where 256 differs from 64.
CANDIDATES = [(64, 0), (256, 0), (64, 100), (256, 100)]
CANDIDATE_CONCURRENCY = [1, 64, 256]


def newest_version(model: str) -> int:
    versions = (ROOT / "model_store" / model).iterdir()
    return max(int(p.name) for p in versions if p.name.isdigit())


def model_path(model: str) -> Path:
    return ROOT / "model_store" / model / str(newest_version(model)) / "model.onnx"


def write(work: Path, step: str, data: dict[str, Any]) -> None:
    """Atomically, so a step killed mid-write leaves the previous cells readable."""
    partial = work / f"{step}.json.partial"
    partial.write_text(json.dumps(data, indent=2))
    partial.replace(work / f"{step}.json")


def start_server(*flags: str) -> tuple[ServerProcess, dict[str, str]]:
    """The server as the integration tests start it, and its device and batching lines."""
    server = ServerProcess(*flags, timeout=120)
    markers = {"device": "service.store.runtime: device: ", "batching": "service.app: batching on "}
    lines = {
        key: line.split(marker, 1)[1].strip()
        for line in server.lines
        for key, marker in markers.items()
        if marker in line
    }
    if "batching" in lines:
        lines["batching"] = "batching on " + lines["batching"]
    return server, lines


def providers(args: argparse.Namespace) -> int:
    """What a session of each model uses, and what the server's start-up line says; fails
    where the driver reports a GPU but the sessions are not on CUDA."""
    chosen = choose_device("auto", 0)
    sessions = {}
    for model in MODELS:
        session, placed = open_session(model_path(model), ort.SessionOptions(), chosen, 0)
        sessions[model] = {"get_providers": session.get_providers(), "line": placed.line()}
        print(f"{model}: session.get_providers() = {session.get_providers()}; {placed.line()}")
    server, lines = start_server()
    server.stop()
    print(f"server start-up line: device: {lines.get('device', '(none)')}")
    on_cuda = all(s["get_providers"][0] == CUDA for s in sessions.values())
    result = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "plan": {"try_cuda": chosen.try_cuda, "reason": chosen.reason},
        "sessions": sessions,
        "server": lines,
        "provider": CUDA if on_cuda else "CPUExecutionProvider",
        "gpu": str(chosen.gpu) if chosen.gpu else None,
    }
    write(args.work, "providers", result)
    print(f"provider used: {result['provider']}")
    if chosen.try_cuda and not (on_cuda and "CUDA:" in lines.get("device", "")):
        print("a GPU is there but the sessions or the server do not use it", file=sys.stderr)
        return 1
    return 0


def timed(run: Callable[[], object], seconds: float) -> list[float]:
    """Each run's wall time, for `seconds` after a warm-up (the first runs of a shape pick
    their kernels on CUDA)."""
    warm_until = time.monotonic() + min(0.3, seconds)
    for _ in range(3):
        run()
    while time.monotonic() < warm_until:
        run()
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(times) < 5:
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def in_process(args: argparse.Namespace) -> int:
    """onnxruntime alone at each batch size: numpy in and out (`run`), and with I/O binding
    (input and outputs on the session's device: the device's own time, without copies)."""
    chosen = choose_device("auto", 0)
    where = "cuda" if chosen.try_cuda else "cpu"
    rng = np.random.default_rng(0)
    cells: list[dict[str, Any]] = []
    for model in args.models:
        session, placed = open_session(model_path(model), ort.SessionOptions(), chosen, 0)
        for batch in args.batches:
            images = rng.random((batch, 1, 28, 28), dtype=np.float32)
            binding = session.io_binding()
            binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(images, where))
            for name in OUTPUTS:
                binding.bind_output(name, where)
            runs: dict[str, Callable[[], object]] = {
                "run": functools.partial(session.run, OUTPUTS, {"image": images}),
                "io_binding": functools.partial(session.run_with_iobinding, binding),
            }
            for mode, run in runs.items():
                times = timed(run, args.seconds)
                cell = {
                    "model": model,
                    "batch": batch,
                    "mode": mode,
                    "provider": placed.providers[0],
                    "runs": len(times),
                    "p50_ms": statistics.median(times) * 1e3,
                    "images_per_s": batch * len(times) / sum(times),
                }
                cells.append(cell)
                print(
                    f"{model:8} batch {batch:4} {mode:10} p50 {cell['p50_ms']:8.3f} ms "
                    f"{cell['images_per_s']:10.0f} images/s ({placed.providers[0]})",
                    flush=True,
                )
                write(args.work, "in_process", {"provider": placed.providers[0], "cells": cells})
    return 0


def drive(
    target: str, models: list[str], concurrency: list[int], seconds: float, **labels: Any
) -> tuple[list[dict[str, Any]], int]:
    """perf_analyzer at each concurrency for each model; a failed cell is recorded, not fatal."""
    cells, failed = [], 0
    for model in models:
        for c in concurrency:
            cell: dict[str, Any] = {**labels, "model": model, "concurrency": c}
            try:
                cell |= drive_perf_analyzer(target, model, newest_version(model), c, seconds)
                setting = " ".join(f"{k} {v}" for k, v in labels.items())
                print(
                    f"{setting}{' ' if setting else ''}{model:8} concurrency {c:4} "
                    f"{cell['requests_per_s']:9.0f} "
                    f"requests/s, p50 {cell['p50_ms']:.3f} ms, p99 {cell['p99_ms']:.3f} ms",
                    flush=True,
                )
            except PerfAnalyzerFailed as exc:
                cell["error"] = str(exc)[-2000:]
                failed += 1
                print(f"{model} concurrency {c}: {exc}", flush=True)
            cells.append(cell)
    return cells, failed


def server(args: argparse.Namespace) -> int:
    """The server with its own defaults (on CUDA: the GPU batching defaults)."""
    process, lines = start_server()
    try:
        print(f"server: device: {lines.get('device')}; {lines.get('batching', 'CPU batching')}")
        result: dict[str, Any] = {"server": lines, "cells": []}
        cells, failed = drive(process.target, args.models, args.concurrency, args.seconds)
        result["cells"] = cells
        write(args.work, "server", result)
    finally:
        process.stop()
    return int(failed > 0)


def candidates(args: argparse.Namespace) -> int:
    """Each candidate batcher setting, given explicitly, on its own server."""
    cells: list[dict[str, Any]] = []
    failed = 0
    for batch_size, delay_us in CANDIDATES:
        flags = ("--max-batch-size", str(batch_size), "--max-queue-delay-us", str(delay_us))
        process, _lines = start_server(*flags)
        try:
            measured, failures = drive(
                process.target,
                args.models,
                args.concurrency,
                args.seconds,
                max_batch_size=batch_size,
                max_queue_delay_us=delay_us,
            )
        finally:
            process.stop()
        cells += measured
        failed += failures
        write(args.work, "candidates", {"cells": cells})
    return int(failed > 0)


def dry_run(args: argparse.Namespace) -> int:
    """What the step needs is there: the models, perf_analyzer, a writable work folder."""
    problems = [f"{m}: no {model_path(m)}" for m in MODELS if not model_path(m).is_file()]
    if args.step in ("server", "candidates") and perf.find_binary() is None:
        problems.append("perf_analyzer not found (pip install 'tritonclient[grpc]')")
    if not os.access(args.work, os.W_OK):
        problems.append(f"work folder {args.work} is not writable")
    for problem in problems:
        print(f"{args.step}: {problem}", file=sys.stderr)
    print(f"{args.step}: {'ready' if not problems else 'NOT ready'}")
    return int(bool(problems))


STEPS: dict[str, Callable[[argparse.Namespace], int]] = {
    "providers": providers,
    "in-process": in_process,
    "server": server,
    "candidates": candidates,
    "report": lambda args: gpu_report.main(args.work, args.out),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--work", type=Path, required=True, help="the steps' JSON files")
    parser.add_argument("--out", type=Path, help="report: where the JSON and Markdown go")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measured cell")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--concurrency", type=int, nargs="+", help="default: per step")
    parser.add_argument("--dry-run", action="store_true", help="check, do not measure")
    args = parser.parse_args()
    if args.concurrency is None:
        args.concurrency = CANDIDATE_CONCURRENCY if args.step == "candidates" else [1, 8, 32, 64]
    if args.step == "report" and args.out is None:
        parser.error("report needs --out")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        return dry_run(args)
    return STEPS[args.step](args)


if __name__ == "__main__":
    raise SystemExit(main())
