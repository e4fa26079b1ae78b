"""MLflow runs that do not stay RUNNING when their process dies.

A run ends FAILED on any exception, and on SIGTERM or SIGINT (the CLI turns those into
SystemExit). SIGKILL cannot be caught: every run holds a lock file for its lifetime, which the
operating system releases when the process dies, and the next run sweeps: a RUNNING run of
this machine whose lock it can take has no live owner, and is marked FAILED.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from filelock import FileLock, Timeout
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from features.settings import Settings

log = logging.getLogger(__name__)
HOST_TAG = "oppscore.host"
GRACE_SECONDS = 120.0  # a run younger than this without a lock file may still be taking it


def _lock_path(settings: Settings, run_id: str) -> Path:
    return settings.home / "runs" / f"{run_id}.lock"


def sweep_dead_runs(settings: Settings, experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this machine whose process is gone; their ids."""
    client = MlflowClient()
    running = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'",
    )
    dead = []
    for run in running:
        path = _lock_path(settings, run.info.run_id)
        if path.exists():
            lock = FileLock(path, timeout=0)
            try:
                lock.acquire()
            except Timeout:
                continue  # its process is alive
            lock.release()
        elif time.time() - run.info.start_time / 1000 < GRACE_SECONDS:
            continue
        client.set_tag(run.info.run_id, "oppscore.ended", "its process died (found by the next run's sweep)")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        path.unlink(missing_ok=True)
        dead.append(run.info.run_id)
    if dead:
        log.warning("marked %d run(s) FAILED whose process had died: %s", len(dead), ", ".join(dead))
    return dead


@contextmanager
def tracked_run(settings: Settings, experiment_id: str, run_name: str) -> Iterator[mlflow.ActiveRun]:
    sweep_dead_runs(settings, experiment_id)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        path = _lock_path(settings, run.info.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, timeout=0)
        lock.acquire()
        mlflow.set_tag(HOST_TAG, socket.gethostname())
        try:
            yield run
        finally:
            lock.release()
            path.unlink(missing_ok=True)


@contextmanager
def scratch(settings: Settings) -> Iterator[Path]:
    """A folder for a run's files in passing (its plots, the bundle before it is logged), under
    OPPSCORE_HOME: removed when the run ends, and, when its process was killed (no `finally`
    runs then), by the next run, which finds its lock free; a temporary folder elsewhere would
    stay behind after every killed train."""
    import shutil
    import uuid

    root = settings.home / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        lock = FileLock(other / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # its run is alive
        lock.release()
        shutil.rmtree(other, ignore_errors=True)
        log.info("removed %s, left by a run whose process died", other.name)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    lock = FileLock(folder / ".lock", timeout=0)
    lock.acquire()
    try:
        yield folder
    finally:
        lock.release()
        shutil.rmtree(folder, ignore_errors=True)


def exit_on_termination() -> None:
    """SIGTERM (a container stop, `kill`) unwinds like Ctrl-C: the run ends FAILED, the lock is
    released, nothing half-written is promoted."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    if sys.platform != "win32":
        signal.signal(signal.SIGHUP, _exit)
