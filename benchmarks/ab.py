"""Two or more servers of one model, measured in turns: the A/B run a change's figures come from.

    .venv/bin/python benchmarks/ab.py --model mlp --concurrency 32 --rounds 6 \
        --server= "--server=--max-inline-cost-us 3000" --server straight-line

Each `--server` is ours with those flags (`--server=FLAGS`; empty for the defaults), ours from
another checkout (`--server=@DIR FLAGS`: `git worktree add DIR HEAD~1` for the commit before),
or a peer's name (`straight-line`, `triton`). All start once; then each round drives every one for
`--seconds` with perf_analyzer, one after the other, in an order that alternates between
rounds. Turns seconds apart see the same machine, so the figures that compare are the
per-round ratios to the first server, given as medians with their range, beside each server's
CPU per request (`benchmarks.cpu`): on this shared machine throughput moves by tens of percent
within minutes; the pairing and the CPU figure move far less.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.cpu import with_cpu  # noqa: E402
from benchmarks.drivers import PerfAnalyzerFailed, drive_perf_analyzer, summary  # noqa: E402
from tests.integration.server import ServerProcess  # noqa: E402


def start(stack: contextlib.ExitStack, spec: str, model: str, version: int) -> tuple[str, int]:
    """(target, pid) of the server `spec` names, stopped when `stack` closes."""
    if spec in peers.PEERS:
        peer = stack.enter_context(peers.peer(spec, model, version))
        return peer.target, peer.process.pid
    flags = spec.split()
    checkout = None
    if flags and flags[0].startswith("@"):  # another checkout's server, e.g. the commit before
        checkout = Path(flags.pop(0)[1:]).resolve()
    server = ServerProcess("--models", model, *flags, checkout=checkout)
    stack.callback(server.stop)
    return server.address, server.process.pid


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--version", type=int, help="default: the newest in model_store")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--seconds", type=float, default=3.0, help="per turn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        help='ours with these flags ("" for the defaults), or a peer: ' + ", ".join(peers.PEERS),
    )
    args = parser.parse_args()
    if len(args.server) < 2:
        parser.error("name at least two --server")
    if problem := peers.missing(args.server):
        parser.error(problem)
    if args.version is None:
        versions = (ROOT / "model_store" / args.model).iterdir()
        args.version = max(int(p.name) for p in versions if p.name.isdigit())

    specs = args.server

    def drive(target: str, concurrency: int) -> dict[str, Any]:
        return drive_perf_analyzer(target, args.model, args.version, concurrency, args.seconds)

    with contextlib.ExitStack() as stack:
        started = [start(stack, spec, args.model, args.version) for spec in specs]
        # results[concurrency][server index] = one measurement per round
        results: dict[int, list[list[dict[str, Any]]]] = {
            c: [[] for _ in specs] for c in args.concurrency
        }
        try:
            for round_ in range(args.rounds):
                order = list(range(len(specs)))
                if round_ % 2:
                    order.reverse()
                for concurrency in args.concurrency:
                    for i in order:
                        target, pid = started[i]
                        results[concurrency][i].append(
                            with_cpu(pid, functools.partial(drive, target, concurrency))
                        )
        except PerfAnalyzerFailed as exc:
            raise SystemExit(str(exc)) from None

    print(
        f"model {args.model} v{args.version}, perf_analyzer, {args.seconds:g} s per turn, "
        f"{args.rounds} rounds: medians [min-max]; ÷ first is per round, of requests/s"
    )
    print(
        f"{'c':>3} {'server':<34} {'req/s':>16} {'p50/p99 ms':>12} "
        f"{'CPU ms/req':>16} {'÷ first':>17}"
    )
    for concurrency, per_server in results.items():
        first = per_server[0]
        for spec, runs in zip(specs, per_server, strict=True):
            paired = zip(runs, first, strict=True)
            ratios = [r["requests_per_s"] / f["requests_per_s"] for r, f in paired]
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            print(
                f"{concurrency:>3} {spec or '(defaults)':<34} "
                f"{summary([r['requests_per_s'] for r in runs], '.0f'):>16} "
                f"{f'{p50:.2f}/{p99:.1f}':>12} "
                f"{summary([r['server_cpu_ms'] for r in runs], '.2f'):>16} "
                f"{summary(ratios, '.2f'):>17}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
