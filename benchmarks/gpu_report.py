"""benchmarks/gpu_check.sh's report: its work folder → gpu_check.json and gpu_check.md.

Reads what the steps left (`steps.jsonl` from the script, `run.json`, `providers.json`,
`in_process.json`, `server.json`, `candidates.json`, `conformance.xml`), whatever of it there
is, and sets the server against in-process onnxruntime by the issue's two goals: throughput at
concurrency 64 at least 80% of in-process at batch 64, and the concurrency-1 p50 within 0.3 ms
of in-process single-image latency (both against `run`, numpy in and out, as the server does).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.store.device import probe_driver

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_GOAL = 0.8
LATENCY_GOAL_MS = 0.3


def load(work: Path, name: str) -> Any:
    path = work / name
    return json.loads(path.read_text()) if path.is_file() else None


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    memory_gib = int(meminfo[1]) / 1024**2 if len(meminfo) > 1 else 0.0
    driver = probe_driver()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": models[0] if models else platform.processor(),
        "memory_gib": round(memory_gib, 1),
        "gpus": [f"{gpu} ({gpu.total_memory / 1024**3:.1f} GiB)" for gpu in driver.gpus],
        "driver": driver.error or f"CUDA {driver.version}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "commit": commit or "unknown",
    }


def conformance(work: Path) -> dict[str, Any] | None:
    path = work / "conformance.xml"
    if not path.is_file():
        return None
    suites = ET.parse(path).getroot().iter("testsuite")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, 0))
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in ET.parse(path).getroot().iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**totals, "failed": failed}


def cell(cells: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [c for c in cells if all(c.get(k) == v for k, v in match.items()) and "error" not in c]
    return found[0] if found else None


def goals(in_process: list[dict[str, Any]], server: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for model in sorted({c["model"] for c in server} & {c["model"] for c in in_process}):
        row: dict[str, Any] = {"model": model}
        c64, batch64 = (
            cell(server, model=model, concurrency=64),
            cell(in_process, model=model, batch=64, mode="run"),
        )
        if c64 and batch64:
            row["throughput_ratio"] = c64["requests_per_s"] / batch64["images_per_s"]
            row["throughput_met"] = row["throughput_ratio"] >= THROUGHPUT_GOAL
            row["c64_requests_per_s"] = c64["requests_per_s"]
            row["batch64_images_per_s"] = batch64["images_per_s"]
        c1, batch1 = (
            cell(server, model=model, concurrency=1),
            cell(in_process, model=model, batch=1, mode="run"),
        )
        if c1 and batch1:
            row["c1_p50_ms"], row["batch1_p50_ms"] = c1["p50_ms"], batch1["p50_ms"]
            row["latency_over_ms"] = c1["p50_ms"] - batch1["p50_ms"]
            row["latency_met"] = row["latency_over_ms"] <= LATENCY_GOAL_MS
        rows.append(row)
    return rows


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def perf_cells(c: dict[str, Any]) -> list[str]:
    if "error" in c:
        return ["failed", "", ""]
    return [f"{c['requests_per_s']:,.0f}", f"{c['p50_ms']:.3f}", f"{c['p99_ms']:.3f}"]


def markdown(report: dict[str, Any]) -> str:
    m, run = report["machine"], report.get("run") or {}
    on_gpu = report["provider"] == "CUDAExecutionProvider"
    title = "GPU check" if on_gpu else "GPU check: a CPU rehearsal (not GPU figures)"
    cell_s = run.get("cell_seconds", {})
    lines = [
        f"# {title}",
        "",
        f"Made by `benchmarks/gpu_check.sh` in {run.get('mode', '?')} mode (seconds per cell: "
        f"{', '.join(f'{k} {v}' for k, v in cell_s.items()) or '?'}) on {report['date']}, "
        f"commit {m['commit']}.",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, load average "
        f"{' '.join(map(str, m['load_average']))} at the end; GPU: "
        f"{', '.join(m['gpus']) or 'none'} ({m['driver']}); Python {m['python']}, "
        f"onnxruntime {report.get('onnxruntime') or '?'}.",
        "",
        f"**Provider used: {report['provider']}.** The server's start-up line: "
        f"`device: {report.get('server_line') or '(not seen)'}`",
        "",
        "## Steps",
        "",
    ]
    lines += table(
        ["step", "result", "seconds", "timeout s"],
        [
            [
                s["step"],
                "timed out" if s["timed_out"] else f"{'ok' if s['rc'] == 0 else 'failed'}",
                str(s["seconds"]),
                str(s["timeout_s"]),
            ]
            for s in report["steps"]
        ],
    )
    if conf := report.get("conformance"):
        failed = conf["failures"] + conf["errors"]
        passed = conf["tests"] - failed - conf["skipped"]
        lines += ["", f"Conformance (the tritonclient and perf_analyzer tests): {passed} passed, "
                  f"{failed} failed, {conf['skipped']} skipped."]  # fmt: skip
        lines += [f"- failed: `{name}`" for name in conf["failed"]]
    lines += ["", "## Goals", "", "Against in-process `run` (numpy in and out, as the server).", ""]
    goal_rows = []
    for g in report["goals"]:
        ratio = "not measured"
        if "throughput_ratio" in g:
            ratio = f"{g['throughput_ratio']:.0%}, {verdict(g['throughput_met'])}"
        over = "not measured"
        if "latency_over_ms" in g:
            over = f"{g['latency_over_ms']:+.3f}, {verdict(g['latency_met'])}"
        goal_rows.append([
            g["model"], f"{g.get('c64_requests_per_s', 0):,.0f}",
            f"{g.get('batch64_images_per_s', 0):,.0f}", ratio,
            f"{g.get('c1_p50_ms', 0):.3f}", f"{g.get('batch1_p50_ms', 0):.3f}", over,
        ])  # fmt: skip
    lines += table(
        ["model", "server c64 req/s", "in-process batch 64 images/s", "ratio (goal >= 80%)",
         "server c1 p50 ms", "in-process batch 1 p50 ms", "difference ms (goal <= 0.3)"],
        goal_rows,
    )  # fmt: skip
    inproc = report["in_process"]
    lines += ["", "## In-process onnxruntime", "", "`run`: numpy in and out; `io_binding`: "
              "the input and outputs bound on the session's device.", ""]  # fmt: skip
    inproc_rows = []
    for model, batch in sorted({(c["model"], c["batch"]) for c in inproc}):
        row = [model, str(batch)]
        for mode in ("run", "io_binding"):
            c = cell(inproc, model=model, batch=batch, mode=mode)
            row += [f"{c['p50_ms']:.3f}", f"{c['images_per_s']:,.0f}"] if c else ["-", "-"]
        inproc_rows.append(row)
    lines += table(
        ["model", "batch", "run p50 ms", "run images/s", "io_binding p50 ms",
         "io_binding images/s"],
        inproc_rows,
    )  # fmt: skip
    batching = report.get("batching_line") or "the CPU batching defaults"
    lines += ["", f"## The server with its own defaults ({batching})", "",
              "perf_analyzer, one image per request.", ""]  # fmt: skip
    lines += table(
        ["model", "concurrency", "requests/s", "p50 ms", "p99 ms"],
        [[c["model"], str(c["concurrency"]), *perf_cells(c)] for c in report["server"]],
    )
    lines += ["", "## Candidate batcher settings", ""]
    lines += table(
        ["max_batch_size", "max_queue_delay_us", "model", "concurrency", "requests/s", "p50 ms",
         "p99 ms"],
        [[str(c["max_batch_size"]), str(c["max_queue_delay_us"]), c["model"],
          str(c["concurrency"]), *perf_cells(c)] for c in report["candidates"]],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(work: Path, out: Path) -> int:
    steps_file = work / "steps.jsonl"
    steps = (
        [json.loads(s) for s in steps_file.read_text().splitlines()] if steps_file.exists() else []
    )
    providers = load(work, "providers.json") or {}
    measured = load(work, "in_process.json") or {}
    in_process = measured.get("cells", [])
    server = load(work, "server.json") or {}
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "run": load(work, "run.json"),
        "provider": providers.get("provider")
        or measured.get("provider", "unknown (the providers step left nothing)"),
        "onnxruntime": providers.get("onnxruntime"),
        "server_line": (server.get("server") or providers.get("server") or {}).get("device"),
        "batching_line": (server.get("server") or {}).get("batching"),
        "providers": providers,
        "steps": steps,
        "conformance": conformance(work),
        "goals": goals(in_process, server.get("cells", [])),
        "in_process": in_process,
        "server": server.get("cells", []),
        "candidates": (load(work, "candidates.json") or {}).get("cells", []),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"provider used: {report['provider']}")
    for g in report["goals"]:
        ratio = f"{g['throughput_ratio']:.2f}" if "throughput_ratio" in g else "not measured"
        over = f"{g['latency_over_ms']:+.3f} ms" if "latency_over_ms" in g else "not measured"
        print(
            f"{g['model']}: server c64 / in-process batch 64 = {ratio} (goal >= "
            f"{THROUGHPUT_GOAL}); c1 p50 - in-process batch 1 p50 = {over} "
            f"(goal <= {LATENCY_GOAL_MS} ms)"
        )
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0
