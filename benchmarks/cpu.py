"""What a server spends per request: its processes' CPU time over a run, from `/proc`.

On a shared machine throughput moves with whatever else runs (the client, a training run, the
host's other guests); the CPU a server burns per answered request moves far less, so it is the
figure that tells two servers, or two builds of ours, apart when their throughputs overlap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone, or not Linux
        return None
    return text[text.rindex(")") + 2 :].split()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and every living descendant (Triton runs as a Python
    wrapper, `tritonserver` and a backend stub per model), all their threads included."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])  # ppid
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier += children
    ticks = 0
    for member in tree:
        if fields := _stat(member):
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICKS


def with_cpu(pid: int | None, drive: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `drive` (a load generator's run, returning its figures with `requests_per_s`) and add
    the server's CPU: cores busy on average, and milliseconds per request (cores ÷ req/s; the
    client's start-up, a small part of the run, counts as load)."""
    if pid is None:
        return drive()
    cpu, wall = tree_cpu_seconds(pid), time.monotonic()
    measured = drive()
    cores = (tree_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)
    measured["server_cores"] = cores
    measured["server_cpu_ms"] = cores / measured["requests_per_s"] * 1e3
    return measured
