"""The images' exact start command, run outside a container: ENTRYPOINT + CMD and ENV as the
Dockerfiles write them (ports moved to 0, the venv and /app mapped to this checkout). It must
serve, pass the image's HEALTHCHECK and the chart's `helm test` commands, and exit 0 on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.chart import CHART, env, helm_test_pod, render
from tests.deploy.dockerfile import DOCKERFILES, ROOT, Dockerfile, Instruction, parse

READY = re.compile(r"serving \S.* on gRPC port (\d+), (?:HTTP port \d+, )?metrics on port (\d+)")


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Stands in for the image's /opt/venv/bin: `python` and the `digits` console script.

    `make install` installs the project, so `digits` is beside python; a venv without it gets a
    three-line `digits` that runs the same entry point.
    """
    here = Path(sys.executable).parent
    if (here / "digits").is_file():
        return str(here)
    path = tmp_path_factory.mktemp("venv-bin")
    digits = path / "digits"
    digits.write_text(
        f"#!{sys.executable}\nfrom digits_client.cli import main\nraise SystemExit(main())\n"
    )
    digits.chmod(0o755)
    return f"{here}:{path}"


def image_environment(dockerfile: Dockerfile, venv_bin: str) -> dict[str, str]:
    """The final stage's ENV on top of this machine's (less any DIGITS_* already set here)."""
    workdir = dockerfile.final.last("WORKDIR")
    assert workdir is not None
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    image = dockerfile.env()
    # /opt/venv is this checkout's venv, with the package importable as the image installs it;
    # /app holds what the Dockerfile copies there from the repository root.
    image["PATH"] = image["PATH"].replace("/opt/venv/bin", venv_bin)
    image["PATH"] = image["PATH"].replace("$PATH", base["PATH"])
    image["PYTHONPATH"] = str(ROOT)
    image["DIGITS_MODEL_STORE"] = image["DIGITS_MODEL_STORE"].replace(workdir.args, str(ROOT))
    # Free ports instead of 8000-8002, and only this machine's loopback.
    image.update(
        DIGITS_GRPC_PORT="0", DIGITS_HTTP_PORT="0", DIGITS_METRICS_PORT="0", DIGITS_HOST="127.0.0.1"
    )
    return {**base, **image}


class Started:
    def __init__(self, argv: list[str], environment: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv,
            env=environment,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.grpc_port = self.metrics_port = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if (match := READY.search(line)) and not self.ready.is_set():
                self.grpc_port, self.metrics_port = int(match[1]), int(match[2])
                self.ready.set()
        self.ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture(params=DOCKERFILES)
def started(
    request: pytest.FixtureRequest, tmp_path: Path, venv_bin: str
) -> Iterator[tuple[Dockerfile, Started, dict[str, str]]]:
    dockerfile = parse(request.param)
    entrypoint, cmd = dockerfile.final.last("ENTRYPOINT"), dockerfile.final.last("CMD")
    assert entrypoint is not None and cmd is not None
    environment = image_environment(dockerfile, venv_bin)
    # The image's /app holds no source: the service must not come from the cwd.
    server = Started(entrypoint.exec_form() + cmd.exec_form(), environment, tmp_path)
    try:
        yield dockerfile, server, environment
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def run(argv: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def test_image_command_serves_passes_checks_and_exits_0_on_sigterm(
    started: tuple[Dockerfile, Started, dict[str, str]],
) -> None:
    dockerfile, server, environment = started
    assert server.ready.wait(120), "no ready line in 120 s:\n" + server.log
    assert server.process.poll() is None and server.grpc_port > 0, server.log
    target = f"127.0.0.1:{server.grpc_port}"

    # The image's HEALTHCHECK, as Docker would run it (its target comes from DIGITS_TARGET).
    healthcheck = dockerfile.final.last("HEALTHCHECK")
    assert healthcheck is not None
    argv = Instruction("HEALTHCHECK", healthcheck.args.split(" CMD ", 1)[1]).exec_form()
    result = run(argv, {**environment, "DIGITS_TARGET": target})
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"digits_build_info" in response.read()

    # The chart's `helm test` pod: its commands, with its ConfigMap's files from the chart.
    pod = helm_test_pod(render())["spec"]
    [health] = pod["initContainers"]
    in_cluster = health["command"][health["command"].index("--target") + 1]
    health_argv = [target if word == in_cluster else word for word in health["command"]]
    result = run(health_argv, environment)
    assert result.returncode == 0, result.stdout + result.stderr
    [classify] = pod["containers"]
    files = str(CHART / "files") + "/"
    pod_env = {k: v.replace("/helm-test/", files) for k, v in env(classify).items()}
    argv = [word.replace("/helm-test/", files) for word in classify["command"]]
    result = run(argv, {**environment, **pod_env, "DIGITS_TARGET": target})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reads the sample 7 as 7" in result.stdout

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0, server.log
    assert "SIGTERM received" in server.log and "stopped" in server.log
