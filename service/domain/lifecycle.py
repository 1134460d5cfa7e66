"""Model control at run time: load, reload and unload model versions without dropping a call.

- `none`: the store is read once, at start.
- `poll`: `poll()` runs every `--repository-poll-secs` and applies what changed in the store.
- `explicit`: `load(name)` and `unload(name)`, on request (RepositoryModelLoad/Unload).

Every change to a model goes one way (`_sync`): list the versions its policy chooses, load,
check and warm the new or changed ones on a thread while the old ones serve, then publish the
model's new set of versions in one step (`Engine.publish`); a version retired there finishes the
calls that hold it first. A version that fails to load is refused with its reason (the log,
RepositoryIndex) and nothing it would replace is retired: the old copy keeps serving, and so do
versions the policy would have let go. Poll retries a failed version once its files change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from service.domain.engine import Engine
from service.errors import FailedPrecondition, NotFound, Unavailable
from service.metrics import Metrics
from service.store.manifest import ManifestError
from service.store.registry import ModelVersion, load_versions
from service.store.repository import Listing, list_model, model_names

log = logging.getLogger(__name__)

Mode = Literal["none", "poll", "explicit"]
UNLOADED = "unloaded"  # the reason RepositoryIndex gives for an explicitly unloaded version


class ModelControl:
    def __init__(
        self,
        engine: Engine,
        store: Path,
        mode: Mode,
        *,
        only: Iterable[str] = (),
        grace: float,
        load_options: dict[str, Any],
        on_change: Callable[[str, bool], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.mode = mode
        self.only = frozenset(only)
        self.grace = grace
        self.load_options = load_options
        self.on_change = on_change  # (model, serving now): per-model health
        self._lock = asyncio.Lock()  # one change at a time, whoever asks
        self._metrics: Metrics = engine.metrics
        for model in engine.registry.all():
            self._metrics.model_loads.labels(model.name, str(model.version)).inc()
        for name, versions in engine.registry.models.items():
            self._metrics.versions_loaded.labels(name).set(len(versions))
        for failure in engine.registry.failures.values():
            self._metrics.model_load_failures.labels(failure.name, failure.version).inc()

    # ---- what the RPCs and the poll loop call --------------------------------------------

    async def load(self, name: str) -> None:
        """Load `name` from the store, or reload it: new and changed versions come in, removed
        ones go. Raises NotFound (no such model in the store) or FailedPrecondition (some
        version did not load; the message says why, and the old versions keep serving)."""
        self._check_explicit("load")
        if not (self.store / name).is_dir() or (self.only and name not in self.only):
            raise NotFound(f"model '{name}' is not in the model store")
        async with self._lock:
            self._check_not_stopping()
            failed = await self._sync(name, retry=True)
        if failed:
            raise FailedPrecondition(f"model '{name}' not fully loaded: {'; '.join(failed)}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name`; calls holding one finish on it first."""
        self._check_explicit("unload")
        served = self.engine.registry.models.get(name)
        if served is None and not (self.store / name).is_dir():
            raise NotFound(f"model '{name}' is not served (and not in the model store)")
        async with self._lock:
            self._check_not_stopping()
            served = self.engine.registry.models.get(name, {})
            await self._publish(name, {}, served)
            for version in served:
                self.engine.registry.failed(name, version, UNLOADED)
            log.info("model %s unloaded (%d versions)", name, len(served))

    async def poll(self) -> None:
        """Apply every change in the store since the last look."""
        async with self._lock:
            if self.engine.draining:
                return
            try:
                names = set(model_names(self.store)) | set(self.engine.registry.models)
            except ManifestError as exc:
                log.error("model store not read: %s", exc)
                return
            for name in sorted(names):
                if not self.only or name in self.only:
                    await self._sync(name, retry=False)

    async def run_polling(self, interval: float) -> None:
        """`poll()` every `interval` seconds until cancelled; an unexpected error is logged
        and the next poll goes on."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll()
            except Exception:
                log.exception("polling the model store failed")

    # ---- one model: the store's choice → loaded, checked, warmed → published -------------

    async def _sync(self, name: str, retry: bool) -> list[str]:
        """Bring `name` in line with the store; returns the reasons of versions that failed."""
        registry = self.engine.registry
        try:
            listing = list_model(self.store, name)
        except ManifestError as exc:  # a bad config.json: change nothing
            if retry or (name, "") not in registry.failures:
                log.error("model %s not loaded: %s", name, exc)
                self._metrics.model_load_failures.labels(name, "").inc()
            registry.failed(name, "", str(exc))
            return [str(exc)]
        registry.failures.pop((name, ""), None)
        served = registry.models.get(name, {})
        wanted = [v for v in listing.versions if self._needs_load(name, v, listing, served, retry)]
        registry.loading.update((name, v) for v in wanted)
        try:
            loaded, failures = await asyncio.to_thread(
                load_versions, self.store, name, wanted, **self.load_options
            )
        finally:
            registry.loading.difference_update((name, v) for v in wanted)
        registry.record(loaded.values(), failures.values())
        failed = list(failures)
        if self.engine.draining:  # the server began to stop while this loaded: serve nothing new
            return []
        for version in failed:
            self._metrics.model_load_failures.labels(name, str(version)).inc()
        for key in [k for k in registry.failures if k[0] == name and k[1]]:
            if int(key[1]) not in listing.on_disk:  # its directory is gone: nothing to report
                registry.failures.pop(key)
        versions = self._choose(listing, served, loaded, failed)
        if versions != served:
            await self._publish(name, versions, served)
        return [f"version {v}: {failures[v].reason}" for v in failed]

    def _needs_load(
        self,
        name: str,
        version: int,
        listing: Listing,
        served: dict[int, ModelVersion],
        retry: bool,
    ) -> bool:
        fingerprint = listing.versions[version]
        current = served.get(version)
        if current is not None and current.fingerprint == fingerprint:
            return False
        failure = self.engine.registry.failures.get((name, str(version)))
        if failure is not None and failure.reason == UNLOADED:
            return retry  # an unloaded version comes back by an explicit load only
        # A version that failed as it is now: poll tries again once its files change.
        return retry or failure is None or failure.fingerprint != fingerprint

    @staticmethod
    def _choose(
        listing: Listing,
        served: dict[int, ModelVersion],
        loaded: dict[int, ModelVersion],
        failed: list[int],
    ) -> dict[int, ModelVersion]:
        """The versions to serve: the policy's choice as loaded; while any of it failed, also
        what served before (except versions whose directory is gone)."""
        versions = {
            v: loaded.get(v) or served[v] for v in listing.versions if v in loaded or v in served
        }
        if failed:
            for version, model in served.items():
                if version in listing.on_disk:
                    versions.setdefault(version, model)
        return dict(sorted(versions.items()))

    async def _publish(
        self, name: str, versions: dict[int, ModelVersion], served: dict[int, ModelVersion]
    ) -> None:
        self.engine.publish(name, versions, self.grace)
        metrics = self._metrics
        for version, model in versions.items():
            if served.get(version) is not model:
                metrics.model_loads.labels(name, str(version)).inc()
        for version, model in served.items():
            if versions.get(version) is not model:
                metrics.model_unloads.labels(name, str(version)).inc()
        metrics.versions_loaded.labels(name).set(len(versions))
        log.info("model %s serves versions %s", name, ", ".join(map(str, versions)) or "none")
        if self.on_change is not None:
            await self.on_change(name, bool(versions))

    def _check_explicit(self, what: str) -> None:
        if self.mode != "explicit":
            raise FailedPrecondition(
                f"model {what} needs --model-control-mode explicit (this server runs '{self.mode}')"
            )

    def _check_not_stopping(self) -> None:
        if self.engine.draining:
            raise Unavailable("server is shutting down")
