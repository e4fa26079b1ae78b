"""Reading models: the registry's champion, or the exported bundle when the registry is away.

Serving, the CLI and training's promotion gate read through here; only training writes
(training.registry), and serving may not import training.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from features.errors import BundleInvalid, ModelNotFound
from features.settings import Settings
from scoring.bundle import Bundle
from scoring.champion_folder import champion_lock, export_atomically, load_exported, remove_orphans

log = logging.getLogger(__name__)
ALIAS = "champion"
BUNDLE_ARTIFACT = "bundle"


@dataclass(frozen=True)
class Loaded:
    bundle: Bundle
    version: str
    source: str  # "registry" or "export"


def use_tracking(settings: Settings) -> None:
    import mlflow

    if settings.mlflow_tracking_uri is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)


def missing(exc: MlflowException) -> bool:
    """Whether MLflow says "no such model, version or alias" (as opposed to a failure)."""
    return exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def registry_file(settings: Settings) -> Path | None:
    """The SQLite file of a file-based registry (the embedded one, or a `sqlite:///` tracking
    URI); None for a tracking server or another database."""
    uri = settings.tracking_uri
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def registry_written(settings: Settings) -> bool:
    """Whether there is a registry to read: a SQLite registry's file exists (asking MLflow for
    a missing one creates it, and its folder); a server or another database is asked."""
    file = registry_file(settings)
    return file is None or file.exists()


def champion_version(settings: Settings, alias: str = ALIAS) -> str | None:
    """The version the alias points at, None when there is none; raises when the registry is
    unreachable. Reads the model's aliases rather than asking for the alias, which MLflow
    answers for a missing one with a generic "invalid parameter" error."""
    from mlflow import MlflowClient

    if not registry_written(settings):
        return None  # never written: asking MLflow would create an empty registry
    try:
        # the registry named, not set for the process: a service's reloader thread asks while
        # other code (a train, a test) may use another registry in the same process
        model = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri).get_registered_model(settings.model_name)
    except MlflowException as exc:
        if missing(exc):
            return None
        raise
    version = model.aliases.get(alias)
    return str(version) if version is not None else None


def load_version(settings: Settings, version: str) -> Bundle:
    """One registered version's bundle, from the registry the settings name (not the process's
    tracking URI: a `models:/` URI is resolved through that one, which may be unset or another
    project's, and the version then reads as missing)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="oppscore-bundle-") as tmp:  # read whole into memory, then let go (a copy per load was left in /tmp)
        try:
            source = client.get_model_version_download_uri(settings.model_name, str(version))
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=settings.tracking_uri))
        except MlflowException as exc:
            if missing(exc):
                raise ModelNotFound(f"no version {version!r} of model {settings.model_name!r} in the registry") from None
            raise
        bundle = Bundle.load(local / "artifacts" / BUNDLE_ARTIFACT)
    bundle.metadata["version"] = str(version)
    return bundle


def load_champion(settings: Settings, prefer_registry: bool = True) -> Loaded:
    """The champion from the registry; the exported bundle if the registry cannot be read."""
    if prefer_registry:
        try:
            version = champion_version(settings)
            if version is not None:
                return Loaded(load_version(settings, version), version, "registry")
            log.warning("the registry has no %r alias for %s; trying the exported bundle", ALIAS, settings.model_name)
        except Exception as exc:  # noqa: BLE001 - any registry failure means: use the export
            log.warning("model registry unreachable (%s); serving the exported bundle in %s", type(exc).__name__, settings.champion_dir)
    try:
        bundle = load_exported(settings.champion_dir)
    except BundleInvalid as exc:
        raise ModelNotFound(f"no champion model: the registry has none and {exc}") from exc
    return Loaded(bundle, bundle.version, "export")


def export_version(settings: Settings, bundle: Bundle) -> None:
    """Write `bundle` as the export; call with the champion lock held."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle.save(Path(tmp) / "b")
        export_atomically(Path(tmp) / "b", settings.champion_dir)


def reconcile_unlocked(settings: Settings) -> str:
    """`reconcile_export` for a caller already holding the champion lock."""
    removed = remove_orphans(settings.champion_dir)
    version = champion_version(settings)
    if version is None:
        return f"no champion in the registry; removed {len(removed)} leftover copies" if removed else ""
    try:
        exported = load_exported(settings.champion_dir).version
    except BundleInvalid:
        exported = None
    if exported == version:
        return f"removed {len(removed)} copies a killed export left" if removed else ""
    export_version(settings, load_version(settings, version))
    return f"the export held version {exported} while the registry's champion is {version}: re-exported version {version}"


def reconcile_export(settings: Settings) -> str:
    """Make the export follow the registry's alias, after a process was killed between moving one
    and the other, and remove what a killed export left. Returns what it did, "" when nothing.
    Raises when the registry cannot be read (then nothing is touched)."""
    with champion_lock(settings.home):
        return reconcile_unlocked(settings)
