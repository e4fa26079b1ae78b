"""The champion's export on disk, the bundle a service falls back to when the registry is away,
and the lock that serialises everything that moves the champion.

A kill at any instant leaves a whole bundle to load: the new copy is written beside the live
one and flushed to disk, then swapped in by renames, and the previous one is removed only once
the new one is in place (`models/champion/`, or `.champion.previous/` between the two renames).
The registry's alias is the record; the export follows it (`scoring.store.reconcile_export`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from features.errors import BundleInvalid, OppscoreError
from scoring.bundle import Bundle

LOCK_WAIT_SECONDS = 600.0
MARKER = "bundle.json"  # written last by Bundle.save: a folder with it is a whole bundle


class Busy(OppscoreError):
    """Another process holds the champion lock for longer than we wait."""


@contextmanager
def champion_lock(home: Path, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Held while the champion moves (gate, export, alias) or its export is repaired, so two
    trains never both compare with the same champion and the last writer never wins blindly.
    The operating system releases it when its holder dies, even by SIGKILL. It serialises
    processes sharing one OPPSCORE_HOME; trains on other machines against one tracking server
    are not serialised by it."""
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(home / "champion.lock", timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"another oppscore process has held {home / 'champion.lock'} for {wait:.0f} s (a train or promote still running?)") from None
    try:
        yield
    finally:
        lock.release()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Contents before names: a rename that survives a power cut must not point at empty files."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(folder)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.new-"


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def remove_orphans(target: Path) -> list[Path]:
    """Copies a killed export left beside the target; call with the champion lock held."""
    found = sorted(target.parent.glob(_staging_prefix(target) + "*")) if target.parent.exists() else []
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


def export_atomically(bundle_dir: Path, target: Path) -> None:
    """Replace `target` with a copy of `bundle_dir`; call with the champion lock held."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(target)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
    _fsync_tree(staging)
    previous = _previous(target)
    if (target / MARKER).exists():  # the live copy is whole: the older one may go, then it steps aside
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    elif target.exists():  # not a bundle (an earlier kill cannot leave this; a hand edit can)
        shutil.rmtree(target)
    # else the live copy is `previous` (a kill fell between the renames): it stays until the new one is in
    os.replace(staging, target)
    _fsync(target.parent)
    shutil.rmtree(previous, ignore_errors=True)


def load_exported(target: Path) -> Bundle:
    """The exported bundle, or the previous one if an export was killed between its renames."""
    target = Path(target)
    for folder in (target, _previous(target)):
        if (folder / MARKER).exists():
            return Bundle.load(folder)
    raise BundleInvalid(f"{target}: no exported bundle (train one with `oppscore train`)")
