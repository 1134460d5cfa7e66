"""`python -m loadtest`: start or find a server, run every phase, report, exit.

Exit status: 0 when every request was answered OK (or, under the open loop only, refused with
RESOURCE_EXHAUSTED: the server shedding load as documented); 1 when any other code came back or
nothing could be measured; 2 when there is no server to drive; 130 on Ctrl-C, after the partial
report is printed and written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import grpc
from digits_client._proto.inference import grpc_service_pb2 as v2
from digits_client._proto.inference import grpc_service_pb2_grpc as v2_grpc
from digits_client.client import DigitsClient, DigitsError

from loadtest import perf, report
from loadtest.plot import draw_report
from loadtest.runner import Phase, PhaseResult, Progress, Runner, open_channel, rpc
from loadtest.server import (
    LocalServer,
    ServerError,
    default_metrics_url,
    server_figures,
    try_scrape,
)
from loadtest.workload import APIS, POOL, Workload, load_images

# 2 models x 2 APIs x (4 concurrencies + 1 open loop) = 20 phases x 2.5 s = 50 s, plus the
# server's start, warm-up and scrapes: about 60 s for the default run.
DEFAULT_DURATION_S = 2.5
QUICK = {"duration": 0.6, "concurrency": [1, 4], "rate": 50.0}
WARMUP_REQUESTS = 5
EXIT_OK, EXIT_FAILED, EXIT_NO_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 130


# Where `make serve` listens.
LOCAL_TARGET = "127.0.0.1:8001"


def serving_at(target: str, timeout: float = 1.0) -> bool:
    """Whether a server answers SERVING to a health check at `target`."""
    try:
        with DigitsClient(target, timeout=timeout) as client:
            return client.health() == "SERVING"
    except DigitsError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--target",
        metavar="HOST:PORT",
        help=f"drive this server (default: {LOCAL_TARGET} if it answers, else start one)",
    )
    add("--start-server", action="store_true", help="start a server even if one answers")
    add("--metrics-url", help="its /metrics (default: http://HOST:8002/metrics for --target)")
    add("--model-store", type=Path, default=Path("model_store"), help="for the started server")
    add("--server-args", default="", help='more flags for it, e.g. "--max-queue-delay-us 500"')
    add("--models", nargs="+", default=["convnet", "mlp"], help="absent models are skipped")
    add("--apis", nargs="+", choices=APIS, default=list(APIS))
    add("--concurrency", nargs="*", type=int, help="closed-loop sweep (default: 1 8 32 64)")
    add("--rate", type=float, help="open-loop requests/s, Poisson; 0: none (default: 200)")
    add("--duration", type=float, help=f"seconds per phase (default: {DEFAULT_DURATION_S:g})")
    add("--batch-size", type=int, default=1, help="images per request, both APIs (default: 1)")
    add("--connections", type=int, default=1, help="TCP connections (a server with --workers)")
    add("--timeout", type=float, default=5.0, help="per-request deadline, s (default: 5)")
    add("--max-outstanding", type=int, default=256, help="open-loop cap on requests in flight")
    add("--out", type=Path, default=Path("reports"), help="where the JSON and PNG go")
    add("--data-dir", type=Path, help="MNIST directory (default: ../shared/datasets/mnist)")
    add("--quick", action="store_true", help="a few seconds in all: 0.6 s phases, c=1,4, 50/s")
    add("--perf-analyzer", action="store_true", help="run Triton's perf_analyzer instead")
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = (
        QUICK if args.quick else {"duration": DEFAULT_DURATION_S, "concurrency": [1, 8, 32, 64]}
    )
    defaults = {"rate": 200.0, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.batch_size < 1 or args.duration <= 0 or any(c < 1 for c in args.concurrency):
        parser.error("--batch-size, --duration and --concurrency must be positive")
    return args


def plan(models: list[str], args: argparse.Namespace) -> list[Phase]:
    phases = []
    for model in models:
        for api in args.apis:
            phases += [Phase(model, api, "closed", concurrency=c) for c in args.concurrency]
            if args.rate > 0:
                phases.append(Phase(model, api, "open", rate=args.rate))
    return phases


async def ready_models(
    channel: grpc.aio.Channel, models: list[str]
) -> tuple[list[str], list[dict[str, str]]]:
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    ready, skipped = [], []
    for model in models:
        try:
            answer = await stub.ModelReady(v2.ModelReadyRequest(name=model), timeout=10)
        except grpc.aio.AioRpcError as exc:
            skipped.append({"model": model, "reason": f"{exc.code().name}: {exc.details()}"})
            continue
        if answer.ready:
            ready.append(model)
        else:
            skipped.append({"model": model, "reason": "not ready on the server"})
    return ready, skipped


async def models_on(target: str, models: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    async with open_channel(target) as channel:
        return await ready_models(channel, models)


async def warm_up(channel: grpc.aio.Channel, phase: Phase, requests: Any, timeout: float) -> None:
    """A few requests outside any measurement: connections, first calls, and a clear error."""
    call = rpc(channel, phase.api)
    for _ in range(WARMUP_REQUESTS):
        await call(next(requests), timeout=timeout)


async def drive(
    args: argparse.Namespace, target: str, metrics_url: str | None, workload: Workload
) -> tuple[list[PhaseResult], list[dict[str, str]], list[str], bool]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    results: list[PhaseResult] = []
    failures: list[str] = []
    try:
        async with contextlib.AsyncExitStack() as channels:
            own = args.connections > 1
            opened = [
                await channels.enter_async_context(open_channel(target, own))
                for _ in range(args.connections)
            ]
            channel = opened[0]
            try:
                await asyncio.wait_for(channel.channel_ready(), 10)
            except TimeoutError:
                raise ServerError(f"no server answers at {target}") from None
            models, skipped = await ready_models(channel, args.models)
            phases = plan(models, args)
            print(
                f"{len(phases)} phases x {args.duration:g} s on {target}"
                + (f"; skipped {', '.join(s['model'] for s in skipped)}" if skipped else ""),
                file=sys.stderr,
            )
            progress = Progress(len(phases))
            runner = Runner(
                opened, stop, progress, args.duration, args.timeout, args.max_outstanding
            )
            for (model, api), group in groupby(phases, key=lambda p: (p.model, p.api)):
                group_phases = list(group)
                requests = workload.requests(model, api)
                if stop.is_set():
                    break
                try:
                    for each in opened:
                        await warm_up(each, group_phases[0], requests, args.timeout)
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"{model} {api} warm-up: {exc.code().name}: {exc.details()}")
                    progress.index += len(group_phases)
                    continue
                for phase in group_phases:
                    if stop.is_set():
                        break
                    progress.index += 1
                    before = try_scrape(metrics_url)
                    result = await runner.run(phase, requests, args.batch_size)
                    after = try_scrape(metrics_url)
                    if before is not None and after is not None:
                        result.server = server_figures(before, after, model, api)
                    progress.done(result)
                    results.append(result)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return results, skipped, failures, stop.is_set()


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "models": args.models,
        "apis": args.apis,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "duration_s": args.duration,
        "batch_size": args.batch_size,
        "timeout_s": args.timeout,
        "max_outstanding": args.max_outstanding,
        "connections": args.connections,
        "quick": args.quick,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM outside the phases ends the run as Ctrl-C does, so a started server is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = datetime.now().astimezone()
    server: LocalServer | None = None
    try:
        if not args.target and not args.start_server and serving_at(LOCAL_TARGET):
            args.target = LOCAL_TARGET
            print(f"driving the server that answers at {LOCAL_TARGET}", file=sys.stderr)
        if args.target:
            target = args.target
            metrics_url = args.metrics_url or default_metrics_url(target)
        else:
            print(f"starting a server on {args.model_store}/ ...", file=sys.stderr)
            server = LocalServer(args.model_store, shlex.split(args.server_args))
            target, metrics_url = server.target, args.metrics_url or server.metrics_url
        if args.perf_analyzer:
            return run_perf_analyzer(args, target)
        count = min(10_000, POOL * args.batch_size)
        images, source = load_images(args.data_dir, count)
        workload = Workload(images, args.batch_size)
        results, skipped, failures, interrupted = asyncio.run(
            drive(args, target, metrics_url, workload)
        )
    except ServerError as exc:
        print(f"load test: {exc}", file=sys.stderr)
        return EXIT_NO_SERVER
    except KeyboardInterrupt:
        print("interrupted before any phase ran", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if server is not None:
            server.stop()

    summary = report.build(
        results,
        settings=settings_of(args),
        target=target,
        server_started=server is not None,
        images=source,
        skipped=skipped,
        failures=failures,
        interrupted=interrupted,
        started=started,
    )
    print(report.table(summary))
    print(report.footnote(summary))
    stem = args.out / f"load-{started:%Y%m%d-%H%M%S}"
    report.write_json(summary, stem.with_suffix(".json"))
    draw_report(summary, stem.with_suffix(".png"))
    print(f"report: {stem}.json, {stem}.png")
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def run_perf_analyzer(args: argparse.Namespace, target: str) -> int:
    binary = perf.find_binary()
    if binary is None:
        print("perf_analyzer not found (pip install 'tritonclient[grpc]')", file=sys.stderr)
        return EXIT_FAILED
    models, skipped = asyncio.run(models_on(target, args.models))
    for skip in skipped:
        print(f"skipped {skip['model']}: {skip['reason']}", file=sys.stderr)
    runs = perf.commands(
        binary,
        target,
        models,
        args.concurrency,
        args.rate,
        args.batch_size,
        args.duration,
    )
    if not runs:
        print("no model to measure", file=sys.stderr)
        return EXIT_FAILED
    return perf.run_all(runs, timeout_s=max(60.0, args.duration * 10))


if __name__ == "__main__":
    raise SystemExit(main())
