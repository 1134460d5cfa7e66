"""What the model store holds on disk: each model's versions, chosen by its version policy.

    <store>/<model>/<version>/model.onnx, manifest.json
    <store>/<model>/config.json     optional: {"version_policy": {"latest": {"num_versions": 1}}}

The policy takes Triton's names: `{"all": {}}` (the default: every version), `{"latest":
{"num_versions": N}}` (the N highest) or `{"specific": {"versions": [1, 3]}}`. A version is
seen by the files' size and modification time (its `Fingerprint`), so watching the store costs a
few `stat` calls; whether the files are right is for loading to check (sha256, I/O).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.store.manifest import ManifestError

CONFIG_FILE = "config.json"
FILES = ("model.onnx", "manifest.json")


class _Latest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_versions: int = Field(ge=1)


class _Specific(BaseModel):
    model_config = ConfigDict(extra="forbid")
    versions: list[int] = Field(min_length=1)


class VersionPolicy(BaseModel):
    """Exactly one of `all`, `latest`, `specific`; none given means `all`."""

    model_config = ConfigDict(extra="forbid")
    all: dict[str, object] | None = None
    latest: _Latest | None = None
    specific: _Specific | None = None

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        given = [k for k in ("all", "latest", "specific") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of all, latest, specific, not {' and '.join(given)}")
        if self.all:
            raise ValueError("all takes no fields: {}")
        return self

    @property
    def kind(self) -> Literal["all", "latest", "specific"]:
        return "latest" if self.latest else "specific" if self.specific else "all"

    def choose(self, versions: list[int]) -> list[int]:
        """The versions this policy serves out of those on disk, ascending."""
        ordered = sorted(versions)
        if self.latest is not None:
            return ordered[-self.latest.num_versions :]
        if self.specific is not None:
            wanted = set(self.specific.versions)
            return [v for v in ordered if v in wanted]
        return ordered


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version_policy: VersionPolicy = VersionPolicy()


def read_policy(model_dir: Path) -> VersionPolicy:
    """The model's version policy from its `config.json`; `all` when there is none."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return VersionPolicy()
    try:
        return _Config.model_validate(json.loads(path.read_text())).version_policy
    except (OSError, ValueError, ValidationError) as exc:
        raise ManifestError(f"{path.name}: {_first_error(exc)}") from None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else error["msg"]
    return str(exc)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Size and modification time of a version's files: a copy or an edit changes it."""

    stats: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, version_dir: Path) -> Fingerprint:
        """A missing file counts as (-1, -1): a version being copied in changes again."""
        stats = []
        for name in FILES:
            try:
                st = (version_dir / name).stat()
                stats.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append((-1, -1))
        return cls(tuple(stats))


@dataclass(frozen=True, slots=True)
class Listing:
    """One model in the store: the versions its policy chooses, each with its fingerprint."""

    name: str
    versions: dict[int, Fingerprint]  # chosen by the policy
    on_disk: frozenset[int]  # every version directory
    policy: VersionPolicy


def model_names(store: Path) -> list[str]:
    """The model directories of the store, by name."""
    if not store.is_dir():
        raise ManifestError(f"model store {store} is not a directory")
    return sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_model(store: Path, name: str) -> Listing:
    """Raises ManifestError for a bad `config.json`; a model directory that is gone lists no
    versions."""
    model_dir = store / name
    if not model_dir.is_dir():
        return Listing(name, {}, frozenset(), VersionPolicy())
    policy = read_policy(model_dir)
    on_disk: dict[int, Fingerprint] = {}
    for version_dir in model_dir.iterdir():
        if version_dir.is_dir() and version_dir.name.isdigit() and int(version_dir.name) > 0:
            on_disk[int(version_dir.name)] = Fingerprint.of(version_dir)
    chosen = {v: on_disk[v] for v in policy.choose(list(on_disk))}
    return Listing(name, chosen, frozenset(on_disk), policy)
