"""What a ModelInfer call costs above the transport: ours against the straight-line handler.

    .venv/bin/python benchmarks/handler_cost.py --model mlp [--concurrency 1 32] [--calls 4000]

No gRPC: in one process and one event loop, N callers each await the handler in a loop with the
same prebuilt request, and the CPU time per call is measured, taking turns between ours (the
interceptor's metrics, the servicer, the engine, the batcher and the model's sessions, built
from the default settings as `python -m service` builds them) and the straight-line peer's
handler (benchmarks/straight_line.py) on the same model file. The figures say what each server
adds to gRPC's own cost per call, and what batching saves when the calls are all there at once,
which through gRPC they are not (calls reach the handlers one at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.drivers import single_image_request, summary  # noqa: E402
from benchmarks.straight_line import StraightLine  # noqa: E402
from service.app import batching_config, runtime_options  # noqa: E402
from service.domain.engine import Engine  # noqa: E402
from service.loop import new_event_loop  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.registry import load_registry  # noqa: E402
from service.transport.interceptor import ErrorInterceptor  # noqa: E402
from service.transport.v2 import InferenceServicer  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"
Call = Callable[[], Awaitable[Any]]


class Context:
    """The little of a grpc.aio context the handlers read: no deadline, never aborted."""

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> None:
        return None

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def ours(model: str, version: int, request: Any) -> tuple[Call, Engine]:
    settings = Settings()  # type: ignore[call-arg]  # defaults, and any DIGITS_* variables
    options = {**runtime_options(settings), "device": "cpu"}
    registry = load_registry(ROOT / "model_store", only=[model], **options)
    batching = batching_config(settings)
    metrics = Metrics()
    engine = Engine(registry, batching, metrics, settings.max_images_per_request)
    servicer = InferenceServicer(engine, control=None)  # type: ignore[arg-type]  # no loading
    handler = ErrorInterceptor(metrics, engine.known_models)._wrap(METHOD, servicer.ModelInfer)
    context = Context()
    return (lambda: handler(request, context)), engine  # type: ignore[arg-type]


def straight_line(model: str, version: int, request: Any) -> Call:
    path = ROOT / "model_store" / model / str(version) / "model.onnx"
    servicer = StraightLine(model, version, path)  # type: ignore[abstract]
    context = Context()
    return lambda: servicer.ModelInfer(request, context)  # type: ignore[arg-type]


async def cpu_per_call(call: Call, concurrency: int, calls: int) -> float:
    """Microseconds of this process's CPU per call, `concurrency` callers at once."""
    for _ in range(100):
        await call()

    async def caller(count: int) -> None:
        for _ in range(count):
            await call()

    each = max(1, calls // concurrency)
    started = time.process_time()
    await asyncio.gather(*(caller(each) for _ in range(concurrency)))
    return (time.process_time() - started) / (each * concurrency) * 1e6


async def measure(args: argparse.Namespace) -> dict[int, dict[str, list[float]]]:
    request = single_image_request(args.model, args.version)
    for name in ("logits",):  # what perf_analyzer asks for: every output in the metadata
        request.outputs.add(name=name)
    call_ours, engine = ours(args.model, args.version, request)
    engine.start()
    calls = {"ours": call_ours, "straight-line": straight_line(args.model, args.version, request)}
    results: dict[int, dict[str, list[float]]] = {
        c: {name: [] for name in calls} for c in args.concurrency
    }
    try:
        for _ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, call in calls.items():
                    figure = await cpu_per_call(call, concurrency, args.calls)
                    results[concurrency][name].append(figure)
    finally:
        await engine.stop(grace=5)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--version", type=int, help="default: the newest in model_store")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, default=4000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.version is None:
        versions = (ROOT / "model_store" / args.model).iterdir()
        args.version = max(int(p.name) for p in versions if p.name.isdigit())
    loop = new_event_loop()  # ours, as the server runs it: its selector says when it is quiet
    try:
        results = loop.run_until_complete(measure(args))
    finally:
        loop.close()
    print(
        f"model {args.model} v{args.version}, no transport, {args.calls} calls per measurement, "
        f"{args.rounds} rounds: CPU µs per call, median [min-max]"
    )
    print(f"{'callers':>7} {'ours':>18} {'straight-line':>18} {'ours - straight-line':>21}")
    for concurrency, figures in results.items():
        mine, theirs = figures["ours"], figures["straight-line"]
        gap = [a - b for a, b in zip(mine, theirs, strict=True)]
        cells = [summary(values, ".0f") for values in (mine, theirs, gap)]
        print(f"{concurrency:>7} {cells[0]:>18} {cells[1]:>18} {cells[2]:>21}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
