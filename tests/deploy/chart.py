"""Render the Helm chart with the helm that `make tools` puts in .tools/bin."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "digits-serving"
HELM = ROOT / ".tools" / "bin" / "helm"
# The value sets CI renders: the defaults and each ci/<name>-values.yaml.
VALUE_SETS = (
    "default",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
)
RELEASE = "digits-serving"
NAMESPACE = "serving"

Manifest = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: run `make tools` (make test does)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False
    )


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(CHART / "ci" / f"{value_set}-values.yaml")]


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)


@functools.cache
def _render(args: tuple[str, ...]) -> tuple[Manifest, ...]:
    result = template(*args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(value_set: str = "default", extra: Sequence[str] = ()) -> list[Manifest]:
    """Every object `helm template` renders, hooks (the test pod) included."""
    return list(_render((*values_args(value_set), *extra)))


def one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix or "")
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects named *{name_suffix}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def server_pod(manifests: list[Manifest]) -> Manifest:
    return one(manifests, "Deployment")["spec"]["template"]


def server_container(manifests: list[Manifest]) -> Manifest:
    [container] = server_pod(manifests)["spec"]["containers"]
    return container


def env(container: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def helm_test_pod(manifests: list[Manifest]) -> Manifest:
    return one(manifests, "Pod", "-test")
