"""onnxruntime sessions: provider choice (CUDA when usable, else CPU) and the blocking run call.

This is the only module that imports onnxruntime. Whether to try CUDA is decided before a
session is made (`service.store.device`): asking onnxruntime-gpu for the CUDA provider on a
machine without a driver logs a page of library errors, so we ask the driver first. The start-up
line then says what the first real session uses, and why it is the CPU when it is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.names import REQUIRED_OUTPUTS, FloatArray
from service.store.device import (
    CPU,
    CUDA,
    Driver,
    Placement,
    Plan,
    cuda_library_error,
    placement,
    plan,
    probe_driver,
)

log = logging.getLogger(__name__)

PROVIDER_DIR = Path(ort.__file__).parent / "capi"

# Timed single-image runs per session when warm-up compares the one-thread session with the pool.
WARM_UP_RUNS = 20
# The pool is kept only when it runs one image at most this share of the one thread's time.
POOL_MUST_WIN = 0.9

_plan: Plan | None = None
_first: Placement | None = None


def choose_device(device: str, device_id: int) -> Plan:
    """Decide once per process; when CUDA is to be tried, its libraries are loaded first."""
    global _plan  # noqa: PLW0603 - one decision per process
    if _plan is None:
        available = ort.get_available_providers()
        asks_driver = device != "cpu" and CUDA in available
        _plan = plan(device, device_id, available, probe_driver() if asks_driver else Driver())
        if _plan.try_cuda and (missing := preload_cuda_libraries()):
            log.debug("onnxruntime.preload_dlls: %s", missing)
    return _plan


def preload_cuda_libraries() -> str:
    """Load CUDA and cuDNN from the pip wheels (onnxruntime-gpu's [cuda,cudnn] extras), where
    the provider finds them; a machine-wide CUDA is found without this. Older onnxruntime has
    no preload_dlls. Returns what it printed about the libraries it could not load."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            preload()
        except Exception as exc:  # a failed preload leaves it to the session to say more
            print(f"preload_dlls failed: {exc}")
    return " ".join(printed.getvalue().split())


def open_session(
    path: Path, options: ort.SessionOptions, chosen: Plan, device_id: int
) -> tuple[ort.InferenceSession, Placement]:
    """A session with the plan's providers, and what it really uses."""
    # Plain FP32, as on the CPU: TF32 would round the inputs of convolutions and matrix products
    # to a 10-bit mantissa.
    cuda = (CUDA, {"device_id": str(device_id), "use_tf32": "0"})
    providers = [cuda, CPU] if chosen.try_cuda else [CPU]
    session = ort.InferenceSession(str(path), options, providers=providers)
    used = session.get_providers()
    fell_back = chosen.try_cuda and used[0] != CUDA
    return session, placement(chosen, used, cuda_library_error(PROVIDER_DIR) if fell_back else "")


def report(where: Path, device: str, placed: Placement) -> None:
    """The start-up line, once per process, for the first session; a later session that does
    not run where the first one does is named."""
    global _first  # noqa: PLW0603 - one start-up line per process
    if _first is None:
        _first = placed
        if device == "cuda" and not placed.on_cuda:
            log.warning("device: %s; device=cuda was asked for, serving on the CPU", placed.line())
        else:
            log.info("device: %s", placed.line())
    elif placed != _first:
        log.warning("%s: device: %s (the first model's: %s)", where, placed.line(), _first.line())


def session_options(
    intra_op_threads: int, inter_op_threads: int, spin_wait: bool
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if spin_wait else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    # Errors reach us as exceptions; onnxruntime's own warnings would only repeat them.
    options.log_severity_level = 3
    return options


class OnnxModel:
    """One loaded graph. `run` blocks, for the model's own thread; with `inline`, `run_inline`
    is for the event loop's thread (see service.domain.inline)."""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "auto",
        device_id: int = 0,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        spin_wait: bool = True,
        inline: bool = False,
    ) -> None:
        self.path = path
        chosen = choose_device(device, device_id)
        options = session_options(intra_op_threads, inter_op_threads, spin_wait)
        self.session, self.placement = open_session(path, options, chosen, device_id)
        report(path, device, self.placement)
        self.provider = self.placement.providers[0]
        self.device = self.placement.kind
        """"CUDA" or "CPU"."""
        self.device_name = self.placement.name
        """What clients are told: "CPU" or "CUDA:0 NVIDIA H200"."""
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = {
            o.name: [d if isinstance(d, int) else -1 for d in o.shape]
            for o in self.session.get_outputs()
        }
        # A cheap batch on the loop's thread should wake no other thread: a CPU session of its
        # own with one thread (a tiny model's run is shorter than waking a pool thread).
        self.inline_session = self.session
        if inline and self.device == "CPU" and intra_op_threads != 1:
            self.inline_session = ort.InferenceSession(
                str(path), session_options(1, 1, spin_wait=False), providers=[CPU]
            )

    def run(self, batch: FloatArray, outputs: frozenset[str]) -> dict[str, FloatArray]:
        return self._run(self.session, batch, outputs, None)

    def run_inline(
        self, batch: FloatArray, outputs: frozenset[str], interrupt: ort.RunOptions, cheap: bool
    ) -> dict[str, FloatArray]:
        """On the event loop's thread: a `cheap` batch on the one-thread session, a lone
        request's on the model's own (its run replaces the thread's one for one).
        `interrupt` (from `interrupt()`): setting its `terminate` makes the run raise soon,
        between two of the graph's operators."""
        session = self.inline_session if cheap else self.session
        return self._run(session, batch, outputs, interrupt)

    def warm_up(self) -> None:
        """Run once (each session), so the first request pays no initialisation; then, with a
        one-thread session beside the pooled one, keep the pool only if it runs one image clearly
        faster.

        A model whose operators are too small to split (the mlp) gains nothing from the pool's
        threads, and they cost the machine CPU: they spin, waiting for work, on cores that gRPC
        and the clients need (at 32 concurrent requests for mlp v3, the pool's second thread
        used 0.9 ms of CPU per request, more than the event loop's thread). Such a model runs
        every batch on the one thread."""
        zeros = np.zeros((1, 1, 28, 28), np.float32)
        everything = frozenset(self.output_names)
        for session in {id(s): s for s in (self.session, self.inline_session)}.values():
            self._run(session, zeros, everything, None)
        if self.inline_session is self.session:
            return
        pooled, single = self._least_seconds(self.session, self.inline_session, rows=zeros)
        if pooled > POOL_MUST_WIN * single:
            self.session = self.inline_session
            log.info(
                "%s: one onnxruntime thread (one image in %.0f µs, %.0f µs on the pool)",
                self.path, single * 1e6, pooled * 1e6,
            )  # fmt: skip

    def _least_seconds(self, *sessions: ort.InferenceSession, rows: FloatArray) -> list[float]:
        """Per session, the least of a few timed runs: the model's own cost (waits only ever
        add to it). The sessions take turns, so that a busy moment falls on all of them."""
        outputs = frozenset(REQUIRED_OUTPUTS)  # what a request gets when it names none
        least = [float("inf")] * len(sessions)
        for _ in range(WARM_UP_RUNS):
            for i, session in enumerate(sessions):
                started = time.perf_counter()
                self._run(session, rows, outputs, None)
                least[i] = min(least[i], time.perf_counter() - started)
        return least

    def _run(
        self,
        session: ort.InferenceSession,
        batch: FloatArray,
        outputs: frozenset[str],
        interrupt: ort.RunOptions | None,
    ) -> dict[str, FloatArray]:
        names = [n for n in self.output_names if n in outputs]
        values = session.run(names, {self.input_name: batch}, interrupt)
        return dict(zip(names, values, strict=True))

    @staticmethod
    def interrupt() -> ort.RunOptions:
        """A fresh flag for one `run`; an interrupted run is the caller's to report, so
        onnxruntime's own error line is silenced."""
        options = ort.RunOptions()
        options.log_severity_level = 4
        return options
