"""The Dockerfiles, checked without a Docker engine: hadolint, what they copy, who they run as,
how they start, and that their pinned dependencies agree with pyproject.toml."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.dockerfile import DOCKER_DIR, DOCKERFILES, ROOT, Dockerfile, parse

HADOLINT = ROOT / ".tools" / "bin" / "hadolint"
REQUIREMENTS = {"Dockerfile": "requirements-cpu.txt", "Dockerfile.gpu": "requirements-gpu.txt"}


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse(request.param)


def copy_sources(dockerfile: Dockerfile) -> list[str]:
    """Build-context paths of every COPY/ADD that does not copy from another stage."""
    sources: list[str] = []
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            words = instruction.args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            paths = [w for w in words if not w.startswith("--")]
            sources += paths[:-1]
    return sources


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (Docker's rules: the last
    matching pattern decides, and a pattern matching a parent directory matches its files)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = (
            re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        )
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negated
    return excluded


def requirements(name: str) -> dict[str, Requirement]:
    lines = (DOCKER_DIR / name).read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in reqs}


def test_hadolint_finds_nothing(dockerfile: Dockerfile) -> None:
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} is missing: run `make tools` (make test does)")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile.path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Dockerfile) -> None:
    sources = copy_sources(dockerfile)
    assert "model_store" in sources, "the committed model store is baked in"
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.path.name}: COPY {source}: no such path"
        assert not dockerignore_excludes(source), f".dockerignore keeps out {source}"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv/bin/python", "checkpoints/convnet.pt", ".git/HEAD", "reports/x.png"):
        assert dockerignore_excludes(path), path
    assert dockerignore_excludes("service/__pycache__/app.cpython-311.pyc")
    assert not dockerignore_excludes("service/app.py")
    assert not dockerignore_excludes("model_store/convnet/1/model.onnx")


def test_images_are_multi_stage_from_pinned_bases(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    assert dockerfile.stages[0].name == "build"
    for stage in dockerfile.stages:
        assert ":" in stage.base and not stage.base.endswith(":latest"), stage.base
    assert dockerfile.final.all("COPY")[0].args.startswith("--from=build /opt/venv")


def test_final_stage_has_no_build_tools_pip_installs_or_torch(dockerfile: Dockerfile) -> None:
    final_runs = " ".join(i.args for i in dockerfile.final.all("RUN"))
    for tool in ("build-essential", "gcc", "g++", "make", "python3-dev", "python3-pip", "git"):
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", final_runs), tool
    assert "pip install" not in final_runs
    build_runs = " ".join(i.args for i in dockerfile.stages[0].all("RUN"))
    assert "pip uninstall --yes pip setuptools wheel" in build_runs, "pip leaves the venv"
    assert "torch" not in requirements(REQUIREMENTS[dockerfile.path.name])


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    assert user is not None
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) != 0
    # The chart's securityContext runs the same uid.
    values = (ROOT / "deploy" / "helm" / "digits-serving" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_entrypoint_is_exec_form_python_m_service(dockerfile: Dockerfile) -> None:
    entrypoint, cmd = dockerfile.final.last("ENTRYPOINT"), dockerfile.final.last("CMD")
    assert entrypoint is not None and cmd is not None
    # Exec form: no /bin/sh -c between the container runtime and Python, so SIGTERM reaches it.
    assert entrypoint.exec_form() == ["python", "-m", "service"]
    assert cmd.exec_form() == []
    assert dockerfile.final.last("HEALTHCHECK") is not None
    env = dockerfile.env()
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root filesystem stays quiet"
    assert env["DIGITS_MODEL_STORE"] == "/app/model_store"
    assert (env["DIGITS_GRPC_PORT"], env["DIGITS_METRICS_PORT"]) == ("8001", "8002")


def test_pinned_requirements_are_pyprojects_dependencies(dockerfile: Dockerfile) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {
        canonicalize_name(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])
    }
    pinned = requirements(REQUIREMENTS[dockerfile.path.name])
    if dockerfile.path.name == "Dockerfile":
        # The CPU image swaps in the CPU build of onnxruntime, under the GPU build's pin rule.
        declared["onnxruntime"] = declared.pop("onnxruntime-gpu")
    assert pinned.keys() == declared.keys()
    for name, requirement in pinned.items():
        [spec] = requirement.specifier
        assert spec.operator == "==", f"{name} is pinned"
        assert declared[name].specifier.contains(spec.version), f"{name}=={spec.version}"
    cpu, gpu = requirements("requirements-cpu.txt"), requirements("requirements-gpu.txt")
    assert cpu["onnxruntime"].specifier == gpu["onnxruntime-gpu"].specifier, "one version"


def test_gpu_base_image_has_the_cuda_and_cudnn_onnxruntime_gpu_was_built_for() -> None:
    base = parse("Dockerfile.gpu").final.base
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu[\d.]+", base)
    assert match, f"{base} is not a CUDA cuDNN runtime image"
    [pin] = requirements("requirements-gpu.txt")["onnxruntime-gpu"].specifier
    try:
        installed = metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here")
    if installed != pin.version:
        pytest.skip(f"installed onnxruntime-gpu {installed} is not the pinned {pin.version}")
    # Read, not imported: the package's files say what it was built for.
    spec = importlib.util.find_spec("onnxruntime")
    assert spec is not None and spec.origin is not None
    package = Path(spec.origin).parent
    info = (package / "capi" / "build_and_package_info.py").read_text()
    built_for = re.search(r"cuda_version = '(\d+)\.(\d+)", info)
    assert built_for, "onnxruntime-gpu names the CUDA it was built for"
    assert match[1] == built_for[1], f"{base}: onnxruntime-gpu was built for CUDA {built_for[1]}"
    # CUDA minor-version compatibility: a runtime at least as new as the build's minor works.
    assert int(match[2]) >= int(built_for[2])
    # The CUDA provider loads cuDNN 9 (onnxruntime's own loader names it); the -cudnn images
    # carry cuDNN 9 for their CUDA major.
    assert '"libcudnn.so.9"' in (package / "__init__.py").read_text()
