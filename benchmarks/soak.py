"""Soak, overload and shutdown under load, against a server started here on 127.0.0.1.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 32] [--json out.json]
    .venv/bin/python benchmarks/soak.py --phases overload     # one phase only

1. Soak: `--concurrency` workers send a mix for `--minutes`: valid V2 convnet requests, valid
   digits.v1 PNGs, and invalid requests (wrong shape, unknown model, corrupt image). Reports the
   server's resident memory after `--warmup-s` (60 s) and at the end, answers by status code
   (anything but OK for valid and INVALID_ARGUMENT / NOT_FOUND for invalid is unexpected), and
   p99 per window.
2. Overload: requests of `--overload-images` convnet images each, so that the server (not this
   Python client) is what saturates. A closed loop measures the rate the server sustains; then an
   open loop with Poisson arrivals offers 3x that rate against the bounded queue: how much is
   shed with RESOURCE_EXHAUSTED, how fast a refusal comes back, and the p99 of what is accepted.
   The offered rate actually achieved is reported, so a client that could not keep up shows.
3. Shutdown: SIGTERM while the workers run; every request the server accepted must be answered
   OK, and the server must exit 0. Calls that reach it after draining began are refused as new
   work (UNAVAILABLE); an accepted call dropped when the grace period ran out says so in its
   message and counts as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.closed_loop import closed_loop  # noqa: E402
from benchmarks.soak_mix import EXPECTED, Mix, call, rss_mib, v2_request  # noqa: E402
from loadtest.server import LocalServer  # noqa: E402
from service._proto.digits.v1 import digits_pb2_grpc  # noqa: E402
from service._proto.inference import grpc_service_pb2 as v2  # noqa: E402
from service._proto.inference import grpc_service_pb2_grpc as v2_grpc  # noqa: E402
from training.data import load_split  # noqa: E402


async def soak(
    target: str, pid: int, minutes: float, concurrency: int, window: float, warmup_s: float
) -> dict[str, Any]:
    mix = Mix()
    codes: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    windows: list[dict[str, float]] = []
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stubs = {
            "v2": v2_grpc.GRPCInferenceServiceStub(channel),
            "digits": digits_pb2_grpc.DigitsStub(channel),
        }
        end = time.monotonic() + minutes * 60
        rng = random.Random(0)
        warm_rss: float | None = None

        async def worker() -> None:
            while time.monotonic() < end:
                kind, rpc, message = rng.choices(mix.items, mix.weights)[0]
                started = time.perf_counter()
                code = await call(stubs, rpc, message, 10)
                latencies.append(time.perf_counter() - started)
                codes[f"{kind}:{code}"] += 1
                if code not in EXPECTED[kind]:
                    unexpected[f"{kind}:{code}"] += 1

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        started = time.monotonic()
        while not all(t.done() for t in tasks):
            await asyncio.sleep(window)
            done, latencies[:] = latencies[:], []
            if warm_rss is None and time.monotonic() - started >= warmup_s:
                warm_rss = rss_mib(pid)  # allocator arenas, buffers and caches have grown
            windows.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "requests_per_s": len(done) / window,
                    "p50_ms": float(np.percentile(done, 50) * 1e3) if done else float("nan"),
                    "p99_ms": float(np.percentile(done, 99) * 1e3) if done else float("nan"),
                    "rss_mib": rss_mib(pid),
                }
            )
            print(
                f"  t={windows[-1]['t_s']:>6}s {windows[-1]['requests_per_s']:7.0f}/s "
                f"p99 {windows[-1]['p99_ms']:6.1f} ms  rss {windows[-1]['rss_mib']:.1f} MiB",
                flush=True,
            )
        await asyncio.gather(*tasks)
    end_rss = rss_mib(pid)
    sustained = float(np.median([w["requests_per_s"] for w in windows[1:] or windows]))
    return {
        "minutes": minutes,
        "concurrency": concurrency,
        "codes": dict(codes),
        "unexpected": dict(unexpected),
        "rss_mib_after_warmup": warm_rss,
        "rss_mib_end": end_rss,
        "rss_growth": (end_rss - warm_rss) / warm_rss if warm_rss else None,
        "sustained_requests_per_s": sustained,
        "windows": windows,
    }


async def overload(
    target: str, request: v2.ModelInferRequest, rate: float, seconds: float
) -> dict[str, Any]:
    """Poisson arrivals at `rate`/s; answers by code, latency of accepted and of refused."""
    codes: Counter[str] = Counter()
    accepted: list[float] = []
    refused: list[float] = []
    rng = random.Random(1)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)

        async def one() -> None:
            started = time.perf_counter()
            try:
                await stub.ModelInfer(request, timeout=10)
                codes["OK"] += 1
                accepted.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused.append(time.perf_counter() - started)

        tasks = []
        began = time.monotonic()
        end = began + seconds
        next_at = began
        while next_at < end:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tasks.append(asyncio.ensure_future(one()))
        offered = len(tasks) / (time.monotonic() - began)
        await asyncio.gather(*tasks)

    def ms(values: list[float], p: float) -> float | None:
        return float(np.percentile(values, p) * 1e3) if values else None

    total = sum(codes.values())
    return {
        "rate": rate,
        "offered_per_s": offered,
        "seconds": seconds,
        "codes": dict(codes),
        "shed_share": codes["RESOURCE_EXHAUSTED"] / total if total else 0.0,
        "accepted_per_s": codes["OK"] / seconds,
        "accepted_p50_ms": ms(accepted, 50),
        "accepted_p99_ms": ms(accepted, 99),
        "accepted_max_ms": ms(accepted, 100),
        "refused_p99_ms": ms(refused, 99),
    }


async def shutdown_under_load(server: LocalServer, concurrency: int) -> dict[str, Any]:
    """Requests sent before SIGTERM must all be answered OK; later ones may be refused."""
    mix = Mix()
    valid = [m for m in mix.items if m[0] == "valid"]
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    signalled = False
    async with grpc.aio.insecure_channel(server.target) as channel:
        stubs = {
            "v2": v2_grpc.GRPCInferenceServiceStub(channel),
            "digits": digits_pb2_grpc.DigitsStub(channel),
        }
        stop = asyncio.Event()

        async def worker(i: int) -> None:
            while not stop.is_set():
                _, rpc, message = valid[i % len(valid)]
                sent_before = not signalled
                code = await call(stubs, rpc, message, 30)
                (before if sent_before else after)[code] += 1

        tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
        await asyncio.sleep(3)
        server.process.send_signal(signal.SIGTERM)
        signalled = True
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
    exit_code = server.process.wait(60)
    # Refused as new work (UNAVAILABLE: the call reached the server after draining began, even if
    # the client sent it just before the signal) is not lost; anything else that is not OK is.
    lost = {c: n for c, n in before.items() if c not in {"OK", "UNAVAILABLE"}}
    return {
        "sent_before_sigterm": dict(before),
        "sent_after_sigterm": dict(after),
        "lost": lost,
        "exit_code": exit_code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", default="soak,overload,shutdown", help="comma-separated")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per p99 window")
    parser.add_argument(
        "--warmup-s", type=float, default=60.0, help="resident memory growth counts from here"
    )
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument(
        "--overload-images", type=int, default=16, help="convnet images per overload request"
    )
    parser.add_argument("--queue", type=int, default=128, help="the server's --max-queue-size")
    parser.add_argument("--server-args", default="", help="more flags for the server")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    server = LocalServer(
        ROOT / "model_store",
        [
            "--max-queue-size",
            str(args.queue),
            "--max-images-per-request",
            str(args.queue),
            *args.server_args.split(),
        ],
    )
    report: dict[str, dict[str, Any]] = {}
    try:
        if "soak" in phases:
            print(f"soak: {args.minutes} min at concurrency {args.concurrency}", flush=True)
            report["soak"] = asyncio.run(
                soak(
                    server.target,
                    server.process.pid,
                    args.minutes,
                    args.concurrency,
                    args.window,
                    args.warmup_s,
                )
            )
        if "overload" in phases:
            test = load_split(ROOT.parent / "shared" / "datasets" / "mnist", "test").images
            images = (test[: args.overload_images].astype(np.float32) / 255)[:, None]
            request = v2_request("convnet", images)
            closed = asyncio.run(
                closed_loop(server.target, request, 8, args.overload_seconds / 2, warmup=3)
            )
            rate = 3 * closed["requests_per_s"]
            print(
                f"overload: sustained {closed['requests_per_s']:.1f} requests/s of "
                f"{args.overload_images} images (p99 {closed['p99_ms']:.0f} ms); offering "
                f"{rate:.0f}/s for {args.overload_seconds} s",
                flush=True,
            )
            report["overload"] = {
                "images_per_request": args.overload_images,
                "queue_rows": args.queue,
                "sustained": closed,
                **asyncio.run(overload(server.target, request, rate, args.overload_seconds)),
            }
        if "shutdown" in phases:
            print("shutdown under load", flush=True)
            report["shutdown"] = asyncio.run(shutdown_under_load(server, args.concurrency))
    finally:
        server.stop()
    summary = {
        name: {k: v for k, v in part.items() if k != "windows"} for name, part in report.items()
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    soaked = report.get("soak", {})
    stopped = report.get("shutdown", {})
    ok = (
        not soaked.get("unexpected")
        and not stopped.get("lost")
        and stopped.get("exit_code", 0) == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
