"""The servers the benchmark measures beside ours, each a child process on a free port.

Each prints `port N` on stdout once it serves; the rest of its output goes to a temporary file,
shown when it fails to start. They are the bare floor (bare_server.py, answers copied from our
running server), the straight-line peer (straight_line.py) and Triton (triton_peer.py, under
.venv-triton).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
PEERS = ("straight-line", "triton")


@dataclass
class Peer:
    name: str
    process: subprocess.Popen[str]
    port: int
    start_s: float  # from launch until it printed its port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` (Triton takes seconds)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start(name: str, command: list[str], timeout: float = 60) -> Peer:
    """Run `command` and wait for its `port N` line; stopped and reported if none comes in time
    (Triton takes about 4 s here; one start in about 30 hung, see triton_peer.py)."""
    # Lives as long as the process, which writes to it; closed when garbage-collected.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    peer = Peer(name, process, 0, 0.0)
    # Stopping it ends the loop below with EOF, so a hung start-up cannot block us; SIGTERM
    # first, so that PyTriton removes its workspace.
    timer = threading.Timer(timeout, peer.stop, kwargs={"timeout": 15})
    timer.start()
    try:
        for line in process.stdout:
            log.write(line)  # PyTriton prints tritonserver's log on stdout
            if line.startswith("port "):
                elapsed = time.monotonic() - started
                # Whatever it prints later goes to its log, so a full pipe never blocks it.
                drain = threading.Thread(target=shutil.copyfileobj, args=(process.stdout, log))
                drain.daemon = True
                drain.start()
                peer.port, peer.start_s = int(line.split()[1]), elapsed
                return peer
    finally:
        timer.cancel()
    peer.stop(timeout=15)
    log.seek(0)
    tail = "".join(log.readlines()[-30:])
    raise SystemExit(f"{name} did not start (exit {process.returncode}):\n{tail}")


def bare(source: str, model: str) -> Peer:
    """benchmarks/bare_server.py serving `model`'s answers copied from the server at `source`."""
    script = str(BENCHMARKS / "bare_server.py")
    return start("bare", [sys.executable, script, "--source", source, "--model", model])


def missing(names: list[str]) -> str | None:
    """Why one of the named peers cannot be started here, or None."""
    if "triton" in names and not TRITON_PYTHON.exists():
        return f"--peers triton needs {TRITON_PYTHON.parent.parent.name}: run `make triton-peer`"
    return None


def peer(name: str, model: str, version: int) -> Peer:
    """One of PEERS serving model_store/<model>/<version>/model.onnx."""
    model_args = ["--model", model, "--version", str(version)]
    if name == "straight-line":
        return start(name, [sys.executable, str(BENCHMARKS / "straight_line.py"), *model_args])
    if name == "triton":
        return start(name, [str(TRITON_PYTHON), str(BENCHMARKS / "triton_peer.py"), *model_args])
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
