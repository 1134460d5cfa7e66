"""onnxruntime sessions: provider choice (CUDA when usable, else CPU) and the blocking run call.

This is the only module that imports onnxruntime. Choosing CUDA is checked before a session is
made: asking onnxruntime-gpu for the CUDA provider on a machine without a driver logs a page of
library errors, so we look for a usable driver first and say in one line what we chose.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.names import FloatArray

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_devices() -> int:
    """How many CUDA devices the driver reports; 0 when there is no driver or no device."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@dataclass(frozen=True)
class DeviceChoice:
    providers: list[str | tuple[str, dict[str, str]]]
    description: str


_choice: DeviceChoice | None = None


def choose_device(device: str, device_id: int) -> DeviceChoice:
    """Pick providers once per process and log the decision in a single line."""
    global _choice  # noqa: PLW0603 - one decision and one log line per process
    if _choice is not None:
        return _choice
    cpu_only = DeviceChoice([CPU], "CPU")
    if device == "cpu":
        _choice = cpu_only
        log.info("device: CPU (as configured)")
    elif CUDA not in ort.get_available_providers():
        _choice = cpu_only
        log.info("device: CPU (this onnxruntime build has no CUDA provider)")
    elif (count := cuda_devices()) <= device_id:
        _choice = cpu_only
        log.info("device: CPU (no usable CUDA device %d: the driver reports %d)", device_id, count)
    else:
        options = {"device_id": str(device_id)}
        _choice = DeviceChoice([(CUDA, options), CPU], f"CUDA:{device_id}")
    if device == "cuda" and _choice is cpu_only:
        log.warning("device=cuda was asked for but is not usable; serving on the CPU")
    return _choice


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
        choice = choose_device(device, device_id)
        options = session_options(intra_op_threads, inter_op_threads, spin_wait)
        self.session = ort.InferenceSession(str(path), options, providers=choice.providers)
        used = self.session.get_providers()
        self.provider = used[0]
        self.device = "CUDA" if self.provider == CUDA else "CPU"
        if choice.description.startswith("CUDA") and self.device != "CUDA":
            log.warning("%s: CUDA provider failed to initialise; running on the CPU", path)
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
        """Run once (each session), so the first request pays no initialisation."""
        zeros = np.zeros((1, 1, 28, 28), np.float32)
        for session in {id(s): s for s in (self.session, self.inline_session)}.values():
            self._run(session, zeros, frozenset(self.output_names), None)

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
