"""Where the sessions run, and why: the CUDA driver asked through ctypes, the CUDA provider's
libraries checked, and the words of the one start-up line.

The decision is made of plain inputs (what was asked, what this onnxruntime build offers, what
the driver answers) so that every branch can be tested on a machine without a GPU; only
`service.store.runtime` turns it into sessions. No onnxruntime import here, and no new dependency:
the driver's own C API answers the questions nvidia-smi would.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# The CUDA provider's own library (links CUDA, cuBLAS, cuRAND) and the cuDNN it opens later,
# when it makes its first convolution: onnxruntime-gpu 1.19 and newer are built for cuDNN 9.
PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
CUDNN_LIBRARY = "libcudnn.so.9"
GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    ordinal: int
    name: str
    total_memory: int
    """Bytes, as cuDeviceTotalMem_v2 reports them."""

    def __str__(self) -> str:
        return f"CUDA:{self.ordinal} {self.name}"


@dataclass(frozen=True)
class Driver:
    """What the CUDA driver answered: its devices, or why it could not be asked."""

    gpus: tuple[Gpu, ...] = ()
    version: str = ""
    """The CUDA version the driver supports, e.g. "13.0"."""
    error: str = ""


@dataclass(frozen=True)
class Plan:
    """Whether to ask onnxruntime for the CUDA provider; when not, the reason."""

    try_cuda: bool
    reason: str = ""
    gpu: Gpu | None = None


@dataclass(frozen=True)
class Placement:
    """What a real session uses (its `get_providers()`), and the start-up line's words."""

    providers: tuple[str, ...]
    gpu: Gpu | None
    reason: str = ""
    """Why the CPU, when it is the CPU."""

    @property
    def on_cuda(self) -> bool:
        return self.gpu is not None

    @property
    def kind(self) -> str:
        """ "CUDA" or "CPU": Triton's instance kind, the metrics' and the logs' word."""
        return "CUDA" if self.on_cuda else "CPU"

    @property
    def name(self) -> str:
        """The device clients are told about: "CPU" or "CUDA:0 NVIDIA H200"."""
        return str(self.gpu) if self.gpu else "CPU"

    def line(self) -> str:
        providers = ", ".join(self.providers)
        if self.gpu is not None:
            memory = self.gpu.total_memory / GIB
            return f"{self.gpu} ({memory:.1f} GiB); sessions use {providers}"
        return f"CPU ({self.reason}); sessions use {providers}"


def plan(device: str, device_id: int, available: Sequence[str], driver: Driver) -> Plan:
    """`device` is the setting (auto, cuda, cpu); `available` onnxruntime's providers."""
    if device == "cpu":
        return Plan(False, "device=cpu was asked for")
    if CUDA not in available:
        return Plan(False, "this onnxruntime build has no CUDA provider (the CPU build)")
    if driver.error:
        return Plan(False, driver.error)
    if device_id >= len(driver.gpus):
        return Plan(
            False, f"no CUDA device {device_id}: the driver reports {len(driver.gpus)} device(s)"
        )
    return Plan(True, gpu=driver.gpus[device_id])


def placement(chosen: Plan, used: Sequence[str], library_error: str = "") -> Placement:
    """The session's providers `used` against the plan; `library_error` is what
    `cuda_library_error` found when CUDA was asked for and the session came back without it."""
    if not chosen.try_cuda:
        return Placement(tuple(used), None, chosen.reason)
    if used and used[0] == CUDA:
        return Placement(tuple(used), chosen.gpu)
    why = library_error or "onnxruntime's log above says why"
    return Placement(
        tuple(used), None, f"onnxruntime was asked for CUDA, the session has only {CPU}: {why}"
    )


class _DriverCallFailed(Exception):
    pass


def probe_driver() -> Driver:
    """Ask libcuda.so.1 (the driver, not the toolkit) for its devices, names and memory."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return Driver(error=f"no NVIDIA driver: {exc}")

    def call(name: str, *args: object) -> None:
        if status := getattr(libcuda, name)(*args):
            raise _DriverCallFailed(
                f"the CUDA driver answered {name} with {error_name(libcuda, status)}"
            )

    version, count = ctypes.c_int(0), ctypes.c_int(0)
    gpus = []
    try:
        call("cuInit", 0)
        call("cuDriverGetVersion", ctypes.byref(version))
        call("cuDeviceGetCount", ctypes.byref(count))
        for ordinal in range(count.value):
            handle, memory = ctypes.c_int(0), ctypes.c_size_t(0)
            name = ctypes.create_string_buffer(256)
            call("cuDeviceGet", ctypes.byref(handle), ordinal)
            call("cuDeviceGetName", name, len(name), handle)
            call("cuDeviceTotalMem_v2", ctypes.byref(memory), handle)
            gpus.append(Gpu(ordinal, name.value.decode(errors="replace"), memory.value))
    except _DriverCallFailed as exc:
        return Driver(error=str(exc))
    major, minor = divmod(version.value, 1000)
    return Driver(tuple(gpus), f"{major}.{minor // 10}")


def error_name(libcuda: ctypes.CDLL, status: int) -> str:
    """CUDA_ERROR_NO_DEVICE (100), say, from the driver's own table."""
    name = ctypes.c_char_p()
    if libcuda.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value:
        return f"{name.value.decode()} ({status})"
    return f"error {status}"


def cuda_library_error(provider_dir: Path) -> str:
    """Why the CUDA provider could not start, as far as loading its libraries tells: the
    dynamic loader's own message for the provider library (it names the first missing CUDA
    library) or for cuDNN; empty when both load."""
    provider = provider_dir / PROVIDER_LIBRARY
    if not provider.is_file():
        return f"{PROVIDER_LIBRARY} is not in {provider_dir}"
    for library in (str(provider), CUDNN_LIBRARY):
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            return f"{Path(library).name} could not be loaded: {exc}"
    return ""
