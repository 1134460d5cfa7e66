"""What the parent of `--workers N` passes its children."""

from __future__ import annotations

import os

from service.settings import Settings
from service.workers import _child_args


def test_children_share_the_cores_and_do_not_spin_unless_told_otherwise() -> None:
    cores = len(os.sched_getaffinity(0))
    args = _child_args(Settings(workers=2), ["--workers", "2"], 4321, 4320)
    assert args[:8] == [
        "--workers",
        "2",
        "--grpc-port",
        "4321",
        "--workers",
        "1",
        "--http-port",
        "4320",
    ]
    assert args[8:] == ["--intra-op-threads", str(max(1, cores // 2)), "--no-spin-wait"]


def test_explicit_thread_settings_pass_through_untouched() -> None:
    argv = ["--workers", "3", "--intra-op-threads", "2", "--spin-wait"]
    settings = Settings(workers=3, intra_op_threads=2, spin_wait=True)
    assert _child_args(settings, argv, 80, None) == [*argv, "--grpc-port", "80", "--workers", "1"]
