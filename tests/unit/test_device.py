"""Where the sessions run: every reason for the CPU, from the decision's inputs, and the real
driver probe, library check and CUDA fallback on this machine."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from service.settings import Settings
from service.store.device import (
    CPU,
    CUDA,
    Driver,
    Gpu,
    Plan,
    cuda_library_error,
    placement,
    plan,
    probe_driver,
)
from service.store.runtime import PROVIDER_DIR, open_session, session_options

H200 = Gpu(0, "NVIDIA H200", 143_771 * 1024**2)
ONE_GPU = Driver((H200,), "13.0")
GPU_BUILD = [CUDA, CPU]
MLP = Path(__file__).resolve().parents[2] / "model_store" / "mlp" / "3" / "model.onnx"


def test_device_cpu_is_never_cuda_even_with_a_gpu() -> None:
    chosen = plan("cpu", 0, GPU_BUILD, ONE_GPU)
    assert not chosen.try_cuda
    line = placement(chosen, [CPU]).line()
    assert line == f"CPU (device=cpu was asked for); sessions use {CPU}"


def test_the_cpu_build_of_onnxruntime_is_named() -> None:
    chosen = plan("auto", 0, [CPU], ONE_GPU)
    assert (chosen.try_cuda, chosen.reason) == (
        False,
        "this onnxruntime build has no CUDA provider (the CPU build)",
    )


def test_no_driver_says_what_the_loader_said() -> None:
    error = "no NVIDIA driver: libcuda.so.1: cannot open shared object file: No such file"
    chosen = plan("auto", 0, GPU_BUILD, Driver(error=error))
    assert not chosen.try_cuda and chosen.reason == error


def test_a_device_the_driver_does_not_have() -> None:
    chosen = plan("cuda", 1, GPU_BUILD, ONE_GPU)
    assert chosen.reason == "no CUDA device 1: the driver reports 1 device(s)"
    assert plan("auto", 0, GPU_BUILD, Driver((), "13.0")).reason.endswith("reports 0 device(s)")


def test_a_session_on_cuda_names_the_device_and_its_memory() -> None:
    chosen = plan("auto", 0, GPU_BUILD, ONE_GPU)
    assert chosen == Plan(True, gpu=H200)
    placed = placement(chosen, [CUDA, CPU])
    assert (placed.on_cuda, placed.kind, placed.name) == (True, "CUDA", "CUDA:0 NVIDIA H200")
    assert placed.line() == f"CUDA:0 NVIDIA H200 (140.4 GiB); sessions use {CUDA}, {CPU}"


def test_cuda_asked_but_the_session_came_back_cpu_names_the_library() -> None:
    missing = "libcudnn.so.9 could not be loaded: libcudnn.so.9: cannot open shared object file"
    placed = placement(plan("auto", 0, GPU_BUILD, ONE_GPU), [CPU], missing)
    assert (placed.on_cuda, placed.name) == (False, "CPU")
    assert placed.reason == f"onnxruntime was asked for CUDA, the session has only {CPU}: {missing}"
    unexplained = placement(plan("auto", 0, GPU_BUILD, ONE_GPU), [CPU])
    assert unexplained.reason.endswith("onnxruntime's log above says why")


def test_the_driver_probe_of_this_machine_is_consistent() -> None:
    driver = probe_driver()
    if driver.error:
        assert not driver.gpus
        assert driver.error.startswith(("no NVIDIA driver: ", "the CUDA driver answered "))
    else:
        assert all(gpu.name and gpu.total_memory > 0 for gpu in driver.gpus)
        assert [gpu.ordinal for gpu in driver.gpus] == list(range(len(driver.gpus)))


def test_library_check_reports_the_dynamic_loaders_message(tmp_path: Path) -> None:
    assert cuda_library_error(tmp_path) == f"libonnxruntime_providers_cuda.so is not in {tmp_path}"
    (tmp_path / "libonnxruntime_providers_cuda.so").write_bytes(b"not a shared object")
    error = cuda_library_error(tmp_path)
    assert error.startswith("libonnxruntime_providers_cuda.so could not be loaded: ")
    assert "ELF" in error or "too short" in error, error


@pytest.mark.skipif(
    CUDA not in ort.get_available_providers() or not cuda_library_error(PROVIDER_DIR),
    reason="needs onnxruntime-gpu without the CUDA libraries (a CPU machine's venv)",
)
def test_a_real_session_asked_for_cuda_falls_back_and_names_the_missing_library() -> None:
    """No driver and no CUDA libraries here: onnxruntime really is asked for CUDA."""
    session, placed = open_session(MLP, session_options(1, 1, False), Plan(True, gpu=H200), 0)
    assert session.get_providers() == [CPU] and placed.providers == (CPU,)
    assert placed.reason.startswith(f"onnxruntime was asked for CUDA, the session has only {CPU}")
    assert "could not be loaded: lib" in placed.reason


def test_gpu_batching_defaults_apply_only_where_nothing_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().max_batch_size, Settings().on_cuda().max_batch_size) == (64, 256)
    assert Settings(max_batch_size=32).on_cuda().max_batch_size == 32
    monkeypatch.setenv("DIGITS_MAX_BATCH_SIZE", "48")
    assert Settings().on_cuda().max_batch_size == 48
    assert Settings(max_queue_delay_us=250).on_cuda().max_queue_delay_us == 250
