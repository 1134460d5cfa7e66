"""The layout's import rules, read from the source (see docs/architecture.md): each part imports
only what lies below it, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "service": ROOT / "service",
    "digits_client": ROOT / "client" / "digits_client",
    "loadtest": ROOT / "loadtest",
    "training": ROOT / "training",
}


def module_name(path: Path, package: str) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join([package, *parts]).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    found = {}
    for package, where in PACKAGES.items():
        for path in where.rglob("*.py"):
            if "_proto" not in path.parts:
                found[module_name(path, package)] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module `path` imports, absolute, at any depth (function-level ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


ALL = modules()
IMPORTS = {name: imports(path, name) for name, path in ALL.items()}


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(importer_prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in IMPORTS.items()
        if under(name, *importer_prefixes)
        for target in targets
        if under(target, *forbidden)
    )


BELOW_TRANSPORT = (
    "service.domain",
    "service.store",
    "service.names",
    "service.errors",
    "service.loop",
    "service.metrics",
)


@pytest.mark.parametrize(
    ("importers", "forbidden"),
    [
        (
            BELOW_TRANSPORT,
            ("grpc", "aiohttp", "google.protobuf", "service._proto", "service.transport"),
        ),
        # The HTTP port speaks JSON: no protobuf, no gRPC servicer.
        (("service.transport.http",), ("grpc", "service._proto", "google.protobuf")),
        (("service.domain",), ("onnxruntime", "service.app")),
        (("service.store",), ("service.domain", "service.app")),
        (("service.transport",), ("onnxruntime", "service.app")),
        (("service",), ("training", "digits_client", "loadtest", "torch")),
        (("loadtest",), ("service", "training", "onnxruntime", "torch")),
        (("digits_client",), ("service", "training", "loadtest", "onnxruntime", "torch")),
    ],
)
def test_each_part_imports_only_what_lies_below_it(
    importers: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    assert offenders(importers, forbidden) == []


def test_only_the_runtime_imports_onnxruntime_in_the_server() -> None:
    users = {
        name
        for name, targets in IMPORTS.items()
        if under(name, "service") and any(under(t, "onnxruntime") for t in targets)
    }
    assert users == {"service.store.runtime"}


def test_no_module_imports_in_a_cycle() -> None:
    graph = {
        name: {t for t in targets if t in ALL and t != name} for name, targets in IMPORTS.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_leaves_import_nothing_of_ours() -> None:
    leaves = ("service.names", "service.errors", "service.store.manifest")
    assert offenders(leaves, ("service", "digits_client", "loadtest", "training")) == []


def test_training_reaches_the_server_only_for_the_manifest() -> None:
    reached = {
        target
        for name, targets in IMPORTS.items()
        if under(name, "training")
        for target in targets
        if under(target, "service") and not under(target, "service.store.manifest")
    }
    assert reached <= {"service", "service.store"}  # the packages on the way to it
