"""Server throughput and latency against in-process onnxruntime, in one run on one machine.

    .venv/bin/python benchmarks/server_vs_inprocess.py [--model convnet] [--seconds 5]

Starts a server on free ports (or uses --target), then measures in the same run:
  - in-process onnxruntime: single-image latency, and batch-32 throughput (the ceiling, measured
    before and after the server's runs; the ratio uses their mean);
  - the server through the KServe V2 API: single-image requests at each concurrency, from
    Python grpc.aio (--connections TCP connections) or Triton's perf_analyzer (--client), and
    with --over http stream, the same through HTTP and streaming gRPC (perf_analyzer only);
  - with --floor, the same client against benchmarks/bare_server.py: grpc.aio answering from a
    cache, the floor under any Python gRPC server on this machine;
  - with --peers, the same client against other servers of the same model file, each right
    after ours at each concurrency: straight-line (benchmarks/straight_line.py, onnxruntime
    called in the handler) and triton (benchmarks/triton_peer.py; `make triton-peer` first).
The load generator shares the machine with the server, as a client on the same host would. Each
server's CPU per request (its processes' CPU time over a run, `benchmarks.cpu`) is reported
beside its throughput: on a shared machine it varies far less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.closed_loop import closed_loop  # noqa: E402
from benchmarks.cpu import with_cpu  # noqa: E402
from benchmarks.drivers import (  # noqa: E402
    PerfAnalyzerFailed,
    drive_perf_analyzer,
    in_process,
    single_image_request,
    summary,
)
from tests.integration.server import ServerProcess  # noqa: E402


def drive_client(
    args: argparse.Namespace, target: str, concurrency: int, pid: int | None = None
) -> dict[str, Any]:
    """One run of the load generator; with the server's `pid`, its CPU per request too."""
    if args.client == "perf_analyzer":
        return with_cpu(
            pid,
            lambda: drive_perf_analyzer(
                target, args.model, args.version, concurrency, args.seconds
            ),
        )
    # Named, so our server answers with the version the peers and in-process run serve.
    request = single_image_request(args.model, args.version)
    return with_cpu(
        pid,
        lambda: asyncio.run(
            closed_loop(target, request, concurrency, args.seconds, args.connections)
        ),
    )


def measure(
    args: argparse.Namespace,
    target: str,
    model_path: Path,
    bare: str | None,
    others: dict[str, str],
    http_target: str = "",
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One repetition: the ceiling before; at each concurrency the server, then the server over
    each protocol of `--over`, the bare floor and each peer in `others` (name → target); the
    ceiling after. Each run's ratio is to the mean of this repetition's two ceilings, and each
    protocol's and peer's to the server's run just before. `pids` (target → process) adds the
    CPU each server used per request."""
    pids = pids or {}
    before = in_process(model_path, args.seconds)
    runs: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        run = drive_client(args, target, concurrency, pids.get(target))
        run["over"] = {}
        for protocol in args.over:
            where = http_target if protocol == "http" else target
            measured = drive_perf_analyzer(
                where, args.model, args.version, concurrency, args.seconds, protocol
            )
            measured["over_grpc"] = measured["requests_per_s"] / run["requests_per_s"]
            run["over"][protocol] = measured
        if bare:
            run["bare"] = drive_client(args, bare, concurrency)
        run["peers"] = {
            name: drive_client(args, t, concurrency, pids.get(t)) for name, t in others.items()
        }
        for measured in run["peers"].values():
            measured["ours_over_peer"] = run["requests_per_s"] / measured["requests_per_s"]
        runs.append(run)
    after = in_process(model_path, args.seconds)
    ceiling = (before["batch32_images_per_s"] + after["batch32_images_per_s"]) / 2
    single_p50 = (before["single_p50_ms"] + after["single_p50_ms"]) / 2
    for run in runs:
        run["vs_batch32"] = run["requests_per_s"] / ceiling
        run["p50_over_in_process_ms"] = run["p50_ms"] - single_p50
    return {"in_process": {"before": before, "after": after}, "ceiling": ceiling, "runs": runs}


def print_peers(
    concurrencies: list[int], names: list[str], repetitions: list[dict[str, Any]]
) -> None:
    print(
        "peers, same client, each right after ours; ours ÷ peer is of requests/s; "
        "CPU: the server's CPU ms per request, ours / peer's:"
    )
    print(
        f"{'concurrency':>11} {'peer':<13} {'ours req/s':>18} {'p50/p99 ms':>12} "
        f"{'peer req/s':>18} {'p50/p99 ms':>12} {'ours ÷ peer':>18} {'CPU ms':>11}"
    )
    for i, concurrency in enumerate(concurrencies):
        runs = [r["runs"][i] for r in repetitions]
        for name in names:
            measured = [r["peers"][name] for r in runs]
            print(
                f"{concurrency:>11} {name:<13} "
                f"{summary([r['requests_per_s'] for r in runs], '.0f'):>18} {latency(runs):>12} "
                f"{summary([m['requests_per_s'] for m in measured], '.0f'):>18} "
                f"{latency(measured):>12} "
                f"{summary([m['ours_over_peer'] for m in measured], '.2f'):>18} "
                f"{cpu_ms(runs)}/{cpu_ms(measured)}"
            )


def cpu_ms(runs: list[dict[str, Any]]) -> str:
    """Median server CPU ms per request, or "-" where it was not measured (--target)."""
    measured = [r["server_cpu_ms"] for r in runs if "server_cpu_ms" in r]
    return f"{statistics.median(measured):.2f}" if measured else "-"


def latency(runs: list[dict[str, Any]]) -> str:
    """Median p50 / p99 in ms."""
    p50 = statistics.median(r["p50_ms"] for r in runs)
    p99 = statistics.median(r["p99_ms"] for r in runs)
    return f"{p50:.2f}/{p99:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--version", type=int, help="default: the newest in model_store")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--repeat", type=int, default=1, help="repetitions; medians and ranges are reported"
    )
    parser.add_argument(
        "--connections", type=int, default=1, help="client TCP connections (for --workers)"
    )
    parser.add_argument(
        "--client",
        choices=["python", "perf_analyzer"],
        default="python",
        help="load generator: grpc.aio in this process, or Triton's perf_analyzer",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure benchmarks/bare_server.py (gRPC alone, answers from a cache)",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=peers.PEERS,
        default=[],
        help="also measure these servers of the same model file, right after ours each time",
    )
    parser.add_argument(
        "--over",
        nargs="+",
        choices=["http", "stream"],
        default=[],
        help="also measure the server over HTTP or streaming gRPC (needs --client perf_analyzer)",
    )
    parser.add_argument("--target", help="an already running server (default: start one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-args", default="", help="extra flags for the started server")
    args = parser.parse_args()
    if problem := peers.missing(args.peers):
        parser.error(problem)
    if args.over and (args.client != "perf_analyzer" or args.target):
        parser.error("--over needs --client perf_analyzer and a server this run starts")
    if args.version is None:
        versions = (ROOT / "model_store" / args.model).iterdir()
        args.version = max(int(p.name) for p in versions if p.name.isdigit())

    model_path = ROOT / "model_store" / args.model / str(args.version) / "model.onnx"
    server = (
        None if args.target else ServerProcess("--models", args.model, *args.server_args.split())
    )
    target = args.target or (server.address if server else "")
    with contextlib.ExitStack() as stack:
        if server:
            stack.callback(server.stop)
        bare = stack.enter_context(peers.bare(target, args.model)) if args.floor else None
        started = [
            stack.enter_context(peers.peer(name, args.model, args.version))
            for name in dict.fromkeys(args.peers)
        ]
        for peer in started:
            print(f"{peer.name} serving on port {peer.port}, started in {peer.start_s:.1f} s")
        others = {peer.name: peer.target for peer in started}
        pids = {peer.target: peer.process.pid for peer in started}
        if server:
            pids[target] = server.process.pid
        try:
            repetitions = [
                measure(
                    args,
                    target,
                    model_path,
                    bare.target if bare else None,
                    others,
                    f"127.0.0.1:{server.http_port}" if server else "",
                    pids,
                )
                for _ in range(args.repeat)
            ]
        except PerfAnalyzerFailed as exc:
            raise SystemExit(str(exc)) from None

    client = (
        "perf_analyzer" if args.client == "perf_analyzer" else f"{args.connections} connection(s)"
    )
    print(
        f"model {args.model} v{args.version}; server flags: {args.server_args or '(defaults)'}; "
        f"client: {client}; {args.repeat} repetition(s): median [min-max]"
    )
    ceilings = [r["ceiling"] for r in repetitions]
    singles = [p["single_p50_ms"] for r in repetitions for p in r["in_process"].values()]
    print(
        f"in-process onnxruntime: single image p50 {summary(singles, '.3f')} ms, "
        f"batch 32 {summary(ceilings, '.0f')} images/s"
    )
    print(
        f"{'concurrency':>11} {'req/s':>18} {'vs batch32':>20} {'p50 ms':>8} "
        f"{'p50 - in-process':>16} {'p99 ms':>8} {'errors':>6} {'CPU ms/req':>10}"
    )
    for i, concurrency in enumerate(args.concurrency):
        runs = [r["runs"][i] for r in repetitions]
        print(
            f"{concurrency:>11} {summary([r['requests_per_s'] for r in runs], '.0f'):>18} "
            f"{summary([r['vs_batch32'] for r in runs], '.1%'):>20} "
            f"{statistics.median(r['p50_ms'] for r in runs):>8.3f} "
            f"{statistics.median(r['p50_over_in_process_ms'] for r in runs):>16.3f} "
            f"{statistics.median(r['p99_ms'] for r in runs):>8.3f} "
            f"{sum(sum(r['errors'].values()) for r in runs):>6} {cpu_ms(runs):>10}"
        )
    if args.floor:
        print("bare gRPC server (answers from a cache), same client; server p50 - bare p50:")
        print(
            f"{'concurrency':>11} {'req/s':>18} {'p50 ms':>8} {'p99 ms':>8} {'server - bare':>14}"
        )
        for i, concurrency in enumerate(args.concurrency):
            runs = [r["runs"][i] for r in repetitions]
            bares = [r["bare"] for r in runs]
            print(
                f"{concurrency:>11} {summary([b['requests_per_s'] for b in bares], '.0f'):>18} "
                f"{statistics.median(b['p50_ms'] for b in bares):>8.3f} "
                f"{statistics.median(b['p99_ms'] for b in bares):>8.3f} "
                f"{statistics.median(r['p50_ms'] - r['bare']['p50_ms'] for r in runs):>14.3f}"
            )
    if args.over:
        print("the server over other protocols, same client; ÷ gRPC is of requests/s:")
        print(
            f"{'concurrency':>11} {'protocol':>8} {'req/s':>18} {'p50/p99 ms':>12} {'÷ gRPC':>18}"
        )
        for i, concurrency in enumerate(args.concurrency):
            runs = [r["runs"][i] for r in repetitions]
            for protocol in args.over:
                over = [r["over"][protocol] for r in runs]
                p50 = statistics.median(o["p50_ms"] for o in over)
                p99 = statistics.median(o["p99_ms"] for o in over)
                print(
                    f"{concurrency:>11} {protocol:>8} "
                    f"{summary([o['requests_per_s'] for o in over], '.0f'):>18} "
                    f"{f'{p50:.2f}/{p99:.1f}':>12} "
                    f"{summary([o['over_grpc'] for o in over], '.2f'):>18}"
                )
    if others:
        print_peers(args.concurrency, list(others), repetitions)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        start_s = {peer.name: peer.start_s for peer in started}
        report = {"settings": settings, "start_s": start_s, "repetitions": repetitions}
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
