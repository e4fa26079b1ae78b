"""The bundle being served, swapped whole when the champion alias moves.

A request takes the current `Loaded` once, at its start, and uses it to the end; a reload only
rebinds the reference, so a request in flight finishes on the bundle it began with and no
request ever sees half of one bundle and half of another.
"""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass

from features.settings import Settings
from scoring.store import Loaded, champion_version, load_champion, load_version, reconcile_export, registry_written

log = logging.getLogger(__name__)
STOP_SECONDS = 15.0


@dataclass
class Status:
    loaded: Loaded | None
    registry_reachable: bool
    message: str
    loading: bool = False  # the first load still asking the registry (what /readyz says meanwhile)


class ModelHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._status = Status(None, False, "not loaded yet")
        self.on_change = lambda loaded: None  # told of every bundle swapped in (the metrics' model gauge)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def status(self) -> Status:
        return self._status

    @property
    def current(self) -> Loaded | None:
        return self._status.loaded

    def _set(self, status: Status) -> None:
        before = self._status.loaded
        self._status = status
        if status.loaded is not before:
            self.on_change(status.loaded)

    def load(self) -> Status:
        """First load: the exported bundle at once when there is one (a registry that hangs
        until its timeout must not keep a service that has a model on disk from serving), then
        the export made to follow the registry's alias (a process killed between the two leaves
        them apart) and the registry's champion; else nothing (and say why)."""
        with self._lock:
            try:
                exported = load_champion(self.settings, prefer_registry=False)
                self._set(Status(exported, False, "serving the exported bundle while the model registry is asked for its champion", loading=True))
            except Exception:  # noqa: BLE001 - none on disk: the registry is all there is
                pass
            self._reconcile()
            try:
                loaded = load_champion(self.settings)
                reachable = loaded.source == "registry" or self._registry_reachable()
                note = "" if loaded.source == "registry" else "model registry unreachable or without a champion: serving the exported bundle"
                self._set(Status(loaded, reachable, note))
            except Exception as exc:  # noqa: BLE001 - no model must not stop the service starting
                self._set(Status(None, self._registry_reachable(), f"no model to serve: {exc}"))
                log.warning(self._status.message)
        return self._status

    def _reconcile(self) -> None:
        if not registry_written(self.settings):
            return
        try:
            done = reconcile_export(self.settings)
            if done:
                log.info(done)
        except Exception as exc:  # noqa: BLE001 - the registry away: the export stays as it is
            log.warning("could not compare the export with the registry (%s); serving as they are", type(exc).__name__)

    def _registry_reachable(self) -> bool:
        if not registry_written(self.settings):
            return False  # a SQLite registry that does not exist is not reachable, and is never created here
        try:
            champion_version(self.settings)
            return True
        except Exception:  # noqa: BLE001
            return False

    def refresh(self) -> bool:
        """Swap in a new champion if the alias moved; True when it did."""
        with self._lock:
            try:
                version = champion_version(self.settings)
            except Exception as exc:  # noqa: BLE001 - keep serving what we have
                if self._status.registry_reachable:
                    log.warning("model registry unreachable (%s); keeping version %s", type(exc).__name__, self.current.version if self.current else None)
                self._set(Status(self._status.loaded, False, self._status.message))
                return False
            current = self._status.loaded
            if version is None or (current is not None and current.source == "registry" and current.version == version):
                self._set(Status(current, True, self._status.message if current is None or current.source == "export" else ""))
                return False
            bundle = load_version(self.settings, version)
            self._set(Status(Loaded(bundle, version, "registry"), True, ""))
            log.info("now serving champion version %s", version)
            return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="champion-reload", daemon=True)
            self._thread.start()

    def stop(self, wait: float = STOP_SECONDS) -> None:
        """Stop polling; wait a little for a registry call in flight (each has a timeout), so
        no thread outlives the app it served."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=wait)

    def _loop(self) -> None:
        if self.current is None:  # the first load happens here, not at start-up: /healthz answers at once
            self.load()
            gc.freeze()  # the bundle lives as long as the process: out of the collector's full passes
        while not self._stop.wait(self.settings.serving.reload_seconds):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a bad version must not kill the reloader
                log.error("could not load the new champion: %s", exc)
