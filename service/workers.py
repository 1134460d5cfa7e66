"""Several server processes on one gRPC port (`--workers N`), for machines where one Python
event loop is the bottleneck.

The parent loads no model. It picks the port (a free one for port 0), starts N children
(`python -m service` with the same settings) that each bind it with SO_REUSEPORT, so the kernel
spreads incoming *connections* across them, and waits for each to report ready. The children
write their Prometheus samples to files in a private directory, and the parent serves `/metrics`
as their sum. On SIGTERM/SIGINT the parent passes the signal on and exits once every child has
drained. A child that dies is not restarted: the parent stops the others and exits non-zero, so
the orchestrator restarts the whole server rather than leaving it half-sized.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from service.settings import Settings

log = logging.getLogger(__name__)

# Set by the parent in each child's environment; not settings: nobody else should set them.
WORKER_ENV = "DIGITS_SERVING_WORKER"
READY_FD_ENV = "DIGITS_SERVING_READY_FD"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    """What a child learns from its environment: its index, and where to say it is ready."""

    index: int
    ready_fd: int

    @classmethod
    def from_environment(cls) -> WorkerRole | None:
        if WORKER_ENV not in os.environ:
            return None
        return cls(int(os.environ[WORKER_ENV]), int(os.environ[READY_FD_ENV]))

    def report_ready(self, grpc_port: int) -> None:
        with os.fdopen(self.ready_fd, "w") as pipe:
            pipe.write(f"{grpc_port}\n")


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    ready: asyncio.Future[int]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: fixes port 0 to a number the children can share,
    and holds it until they listen on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _close(*sockets: socket.socket | None) -> None:
    for sock in sockets:
        if sock is not None:
            sock.close()


def serve_summed_metrics(path: Path, host: str, port: int) -> tuple[object, int]:
    """`/metrics` as the sum of every child's samples; returns the server and its port."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_address[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_args(
    settings: Settings, argv: list[str], grpc_port: int, http_port: int | None
) -> list[str]:
    """The parent's own flags (the environment passes on by itself), with the ports fixed and one
    worker per child: the last of a repeated flag wins, and flags win over DIGITS_* variables.

    Unless set explicitly, the cores are shared out instead of each child taking them all: N
    children with one onnxruntime thread per core each, spinning while idle, would take turns
    on the cores that their event loops need (measured: slower than one process)."""
    args = [*argv, "--grpc-port", str(grpc_port), "--workers", "1"]
    if http_port is not None:
        args += ["--http-port", str(http_port)]
    if "intra_op_threads" not in settings.model_fields_set:
        cores = len(os.sched_getaffinity(0))
        args += ["--intra-op-threads", str(max(1, cores // settings.workers))]
    if "spin_wait" not in settings.model_fields_set:
        args.append("--no-spin-wait")
    return args


async def _read_ready(fd: int) -> int:
    """The port a child reports on its pipe; raises EOFError if it closed without one."""
    line = await asyncio.to_thread(_read_line, fd)
    if not line:
        raise EOFError
    return int(line)


def _read_line(fd: int) -> str:
    with os.fdopen(fd, "r") as pipe:
        return pipe.readline().strip()


async def supervise(settings: Settings, argv: list[str]) -> int:
    """Run `settings.workers` children of `python -m service argv...` until a signal or a
    child's death; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    metrics_dir = Path(tempfile.mkdtemp(prefix="digits-metrics-"))
    reserved = reserve_port(settings.host, settings.grpc_port)
    grpc_port = reserved.getsockname()[1]
    reserved_http = reserve_port(settings.host, settings.http_port) if settings.allow_http else None
    http_port = reserved_http.getsockname()[1] if reserved_http else None
    children: list[_Child] = []
    metrics_server = None
    try:
        for index in range(settings.workers):
            read_fd, write_fd = os.pipe()
            env = {
                **os.environ,
                WORKER_ENV: str(index),
                READY_FD_ENV: str(write_fd),
                METRICS_DIR_ENV: str(metrics_dir),
            }
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    *_child_args(settings, argv, grpc_port, http_port),
                ],
                env=env,
                pass_fds=(write_fd,),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call, no locks
            )
            os.close(write_fd)
            children.append(_Child(index, process, asyncio.ensure_future(_read_ready(read_fd))))
        if not await _all_ready(children, stop):
            return 0 if stop.is_set() else 1  # a signal before serving is a clean stop
        _close(reserved, reserved_http)
        metrics_server, metrics_port = serve_summed_metrics(
            metrics_dir, settings.host, settings.metrics_port
        )
        ports = f"gRPC port {grpc_port}" + (f", HTTP port {http_port}" if http_port else "")
        log.info(
            "serving with %d workers (pids %s) on %s, metrics on port %d",
            len(children),
            ", ".join(str(c.process.pid) for c in children),
            ports,
            metrics_port,
        )
        died = await _until_stop_or_death(children, stop)
        if died is not None:
            log.error(
                "worker %d (pid %d) exited with status %s; stopping the others",
                died.index,
                died.process.pid,
                died.process.returncode,
            )
        statuses = await _stop_all(children, settings.grace_period_s + 5, metrics_dir)
        # Killed children have negative statuses: any status but 0 is a failure.
        return 1 if died is not None or any(statuses) else 0
    finally:
        _close(reserved, reserved_http)
        for child in children:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
        if metrics_server is not None:
            metrics_server.shutdown()  # type: ignore[attr-defined]
            metrics_server.server_close()  # type: ignore[attr-defined]
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _all_ready(children: list[_Child], stop: asyncio.Event) -> bool:
    """Wait until every child reported ready; False if one failed or a signal came first."""
    stopping = asyncio.ensure_future(stop.wait())
    pending: set[asyncio.Future[Any]] = {c.ready for c in children}
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending | {stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopping in done:
                log.info("stopped before serving")
                return False
            pending.discard(stopping)
            for future in done:
                if future.exception() is not None:
                    failed = next(c for c in children if c.ready is future)
                    failed.process.wait()
                    log.error(
                        "worker %d (pid %d) failed to start (status %s)",
                        failed.index,
                        failed.process.pid,
                        failed.process.returncode,
                    )
                    return False
        return True
    finally:
        stopping.cancel()
        for child in children:
            child.ready.cancel()


async def _until_stop_or_death(children: list[_Child], stop: asyncio.Event) -> _Child | None:
    """Wait for a signal (None) or for a child to exit on its own (that child)."""
    while not stop.is_set():
        for child in children:
            if child.process.poll() is not None:
                return child
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return None


async def _stop_all(children: list[_Child], timeout: float, metrics_dir: Path) -> list[int]:
    """SIGTERM every live child (each drains on its own), SIGKILL what outlives `timeout`."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            await asyncio.to_thread(child.process.wait, max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop in %.0f s; killing it", child.index, timeout)
            child.process.kill()
            child.process.wait()
        multiprocess.mark_process_dead(child.process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    return [child.process.returncode for child in children]
