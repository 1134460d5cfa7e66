"""Phase results → a JSON-able report and the table printed at the end of a run."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.runner import PhaseResult

REPORT_VERSION = 1
PERCENTILES = (50, 90, 99)
# Short names keep the table's error column narrow.
SHORT_CODES = {
    "RESOURCE_EXHAUSTED": "EXHAUSTED",
    "DEADLINE_EXCEEDED": "DEADLINE",
    "INVALID_ARGUMENT": "INVALID",
}


def latency_ms(latencies_s: list[float]) -> dict[str, float | None]:
    figures: dict[str, float | None] = {f"p{p}": None for p in PERCENTILES}
    if not latencies_s:
        return figures | {"max": None, "mean": None}
    ms = np.asarray(latencies_s) * 1e3
    figures = {f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES}
    return figures | {"max": float(ms.max()), "mean": float(ms.mean())}


def phase_summary(result: PhaseResult) -> dict[str, Any]:
    phase = result.phase
    seconds = result.duration_s or math.inf
    return {
        "model": phase.model,
        "api": phase.api,
        "mode": phase.mode,
        "concurrency": phase.concurrency,
        "rate": phase.rate,
        "batch_size": result.batch_size,
        "duration_s": round(result.duration_s, 3),
        "interrupted": result.interrupted,
        "requests": result.requests,
        "ok": result.ok,
        "requests_per_s": result.ok / seconds,
        "images_per_s": result.ok * result.batch_size / seconds,
        "latency_ms": latency_ms(result.latencies_s),
        "codes": dict(sorted(result.codes.items())),
        "errors": {code: n for code, n in sorted(result.codes.items()) if code != "OK"},
        "unexpected": dict(sorted(result.unexpected.items())),
        "shed": result.codes["RESOURCE_EXHAUSTED"] if phase.mode == "open" else 0,
        "client_overload": result.client_overload,
        "cancelled": result.cancelled,
        "server": asdict(result.server) if result.server else None,
    }


def build(
    results: list[PhaseResult],
    *,
    settings: dict[str, Any],
    target: str,
    server_started: bool,
    images: str,
    skipped: list[dict[str, str]],
    failures: list[str],
    interrupted: bool,
    started: datetime,
) -> dict[str, Any]:
    phases = [phase_summary(result) for result in results]
    # A run that measured nothing fails, unless Ctrl-C came first.
    nothing = not phases and not interrupted
    failed = bool(failures) or nothing or any(phase["unexpected"] for phase in phases)
    return {
        "version": REPORT_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
        "target": target,
        "server_started": server_started,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "images": images,
        "settings": settings,
        "skipped": skipped,
        "failures": failures,
        "interrupted": interrupted,
        "failed": failed,
        "phases": phases,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _errors(phase: dict[str, Any]) -> str:
    parts = [f"{SHORT_CODES.get(code, code)}:{n}" for code, n in phase["errors"].items()]
    if phase["client_overload"]:
        parts.append(f"overload:{phase['client_overload']}")
    return " ".join(parts) or "0"


COLUMNS = (
    ("model", "<"),
    ("api", "<"),
    ("load", ">"),
    ("req/s", ">"),
    ("img/s", ">"),
    ("p50 ms", ">"),
    ("p90 ms", ">"),
    ("p99 ms", ">"),
    ("max ms", ">"),
    ("errors", "<"),
    ("batch", ">"),
    ("queue ms", ">"),
    ("infer ms", ">"),
    ("server ms", ">"),
)


def table(report: dict[str, Any]) -> str:
    """Client-side figures, then the server's own means over the same phase."""
    rows = []
    for phase in report["phases"]:
        lat, server = phase["latency_ms"], phase["server"] or {}
        load = f"c={phase['concurrency']}" if phase["mode"] == "closed" else f"{phase['rate']:g}/s"
        load += "*" if phase["interrupted"] else ""
        batch = server.get("mean_batch_size")
        rows.append(
            (
                phase["model"],
                phase["api"],
                load,
                f"{phase['requests_per_s']:.0f}",
                f"{phase['images_per_s']:.0f}",
                *(_ms(lat[key]) for key in ("p50", "p90", "p99", "max")),
                _errors(phase),
                "-" if batch is None else f"{batch:.1f}",
                _ms(server.get("queue_ms_mean")),
                _ms(server.get("inference_ms_mean")),
                _ms(server.get("request_ms_mean")),
            )
        )
    widths = [
        max(len(name), *(len(row[i]) for row in rows)) if rows else len(name)
        for i, (name, _) in enumerate(COLUMNS)
    ]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(cells, COLUMNS, widths, strict=True)
        ).rstrip()

    header = line(tuple(name for name, _ in COLUMNS))
    return "\n".join([header, "-" * len(header), *(line(row) for row in rows)])


def footnote(report: dict[str, Any]) -> str:
    settings = report["settings"]
    notes = [
        f"target {report['target']}"
        + (" (started for this run)" if report["server_started"] else "")
        + f", {settings['batch_size']} image(s) per request, {settings['duration_s']:g} s per "
        f"phase, {report['machine']['cpus']} CPUs; latency percentiles of OK answers.",
        "batch, queue ms, infer ms: the server's mean batch size, queue wait and model time per "
        "batch (per model, all APIs); server ms: its mean time per request of this API.",
    ]
    notes += [f"skipped {s['model']}: {s['reason']}" for s in report["skipped"]]
    notes += [f"FAILED: {failure}" for failure in report["failures"]]
    if report["interrupted"]:
        notes.append("interrupted (*): the report covers the phases run so far.")
    return "\n".join(notes)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
