"""Writing to MLflow: the run, the registered version, the champion alias and its export.

Order matters for safety: a run is logged and a version registered only after training has
finished; the gate then compares it with the champion of that moment, under the champion lock;
a winner is exported (atomically) and the alias moves last. A kill at any point leaves the
previous champion serving and a whole export; the alias is the record the export follows.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import ModelNotFound, OppscoreError
from features.settings import Settings
from features.tables import Tables
from scoring import pyfunc_model
from scoring.bundle import Bundle
from scoring.champion_folder import champion_lock
from scoring.store import ALIAS, BUNDLE_ARTIFACT, champion_version, export_version, load_version, missing, reconcile_unlocked, registry_written, use_tracking
from training.data import TrainingData
from training.pipeline import TrainResult
from training.promotion import gate, shape_of
from training.runs import scratch, tracked_run

log = logging.getLogger(__name__)


class ShapeChanged(OppscoreError):
    """A version whose features mean something else than the champion's (another export)."""


@dataclass
class Registered:
    run_id: str
    version: str
    promoted: bool
    reason: str
    champion_metrics: dict | None


def experiment(settings: Settings) -> str:
    """The experiment's id, made when missing. The first MLflow call of a process creates a
    SQLite registry's tables and migrates them: two first trains at once in one OPPSCORE_HOME
    raced there ("table already exists"), so it runs under a lock of that home."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with FileLock(settings.home / "registry.lock", timeout=REGISTRY_LOCK_SECONDS):
        use_tracking(settings)
        found = mlflow.get_experiment_by_name(settings.experiment)
        if found is not None:
            return found.experiment_id
        # the embedded store and a database named directly keep artifacts under OPPSCORE_HOME; a
        # tracking server has its own artifact store
        served = (settings.mlflow_tracking_uri or "").split(":", 1)[0] in ("http", "https", "databricks")
        location = None if served else settings.artifact_root
        return mlflow.create_experiment(settings.experiment, artifact_location=location)


REGISTRY_LOCK_SECONDS = 300


def _flat(prefix: str, values: dict) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        key = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{prefix}.{k}").strip("_")
        if isinstance(v, dict):
            out.update(_flat(key, v))
        elif isinstance(v, (int, float)) and v == v:
            out[key] = float(v)
    return out


class _NoSignatureWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to infer model signature" not in record.getMessage()


@contextmanager
def _quiet_signature():
    """The pyfunc takes a table of opportunities with their histories as lists of records (the
    API's shape, `scoring.pyfunc_model`), from which MLflow infers no signature, and warned so
    on every train: a fact of the model, not news to whoever trains it."""
    logger, quiet = logging.getLogger("mlflow.pyfunc"), _NoSignatureWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def log_and_register(result: TrainResult, tables: Tables | TrainingData, settings: Settings, data_label: str) -> Registered:
    """Log the run and register its version; then, holding the champion lock, compare it with
    the champion of that moment and promote it if it wins (export first, alias last)."""
    exp_id = experiment(settings)
    with tracked_run(settings, exp_id, f"train {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M}") as run:
        mlflow.log_params({k: v for k, v in result.params.items() if not isinstance(v, (dict, list))})
        mlflow.log_dict(result.bundle.metadata.get("backtest", {}), "backtest.json")
        mlflow.log_dict(result.report, "data_sufficiency.json")
        mlflow.log_text("\n".join(result.report.get("said", [])), "data_sufficiency.txt")
        mlflow.log_param("data", data_label)
        mlflow.log_metrics({f"count.{k}": float(v) for k, v in result.counts.items()})
        mlflow.log_metrics(_flat("held_out", result.metrics))
        for path in result.plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        for name, frame in result.slices.items():
            mlflow.log_table(frame, artifact_file=f"slices/{name}.json")
        with scratch(settings) as tmp:
            folder = tmp / BUNDLE_ARTIFACT
            result.bundle.save(folder)
            with _quiet_signature():
                info = mlflow.pyfunc.log_model(
                    name="bundle",
                    python_model=Path(pyfunc_model.__file__),
                    artifacts={BUNDLE_ARTIFACT: str(folder)},
                    registered_model_name=settings.model_name,
                )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_model_version_tag(settings.model_name, version, "held_out", json.dumps(_flat("", result.metrics))[:4900])
        client.set_model_version_tag(settings.model_name, version, "run_id", run.info.run_id)
        client.set_model_version_tag(settings.model_name, version, "trained_until", str(tables.end))
        with champion_lock(settings.home):
            repaired = reconcile_unlocked(settings)
            if repaired:
                log.warning(repaired)
            promote_now, reason, champion_metrics = gate(result, tables, settings)
            if champion_metrics:
                mlflow.log_metrics(_flat("champion_on_same_period", champion_metrics))
            mlflow.set_tag("gate", reason)
            client.set_model_version_tag(settings.model_name, version, "gate", reason[:4900])
            if promote_now:
                _move(settings, version, load_version(settings, version))
    return Registered(run.info.run_id, version, promote_now, reason, champion_metrics)


def _move(settings: Settings, version: str, bundle: Bundle) -> None:
    """Export, then alias: a kill between the two leaves the registry's champion serving and an
    export ahead of it, which the next train, promote or serve puts back (reconcile_export)."""
    export_version(settings, bundle)
    MlflowClient().set_registered_model_alias(settings.model_name, ALIAS, str(version))
    log.debug("version %s is now %s; exported to %s", version, ALIAS, settings.champion_dir)  # the command says what moved


def promote(settings: Settings, version: str, force: bool = False) -> Bundle:
    """Move the alias (by hand this also rolls back) and export that version for offline serving;
    across a change of data shape only with `force`."""
    use_tracking(settings)
    client = MlflowClient()
    try:
        client.get_model_version(settings.model_name, str(version))
    except MlflowException as exc:
        if missing(exc):
            raise ModelNotFound(f"VERSION: no version {version!r} of model {settings.model_name!r}") from None
        raise
    bundle = load_version(settings, str(version))
    with champion_lock(settings.home):
        reconcile_unlocked(settings)
        current = champion_version(settings)
        if current is not None and current != str(version) and not force:
            before = shape_of(load_version(settings, current))
            changed = [k for k, v in shape_of(bundle).items() if before[k] != v]
            if changed:
                raise ShapeChanged(f"VERSION {version} reads other {' and '.join(changed)} than champion v{current}; add --force to switch anyway")
        _move(settings, str(version), bundle)
    return bundle


def versions(settings: Settings) -> list[str]:
    use_tracking(settings)
    found = MlflowClient().search_model_versions(f"name='{settings.model_name}'")
    return sorted((str(v.version) for v in found), key=int)


def log_track_record(settings: Settings, version: str, figures: dict[str, float], at: pd.Timestamp) -> bool:
    """The realised figures of a version, logged to the MLflow run that trained it (as metrics
    with the time they were known at: a history of them builds up run after run). False when
    the version is not in the registry."""
    use_tracking(settings)
    client = MlflowClient()
    try:
        run_id = client.get_model_version(settings.model_name, str(version)).run_id
    except MlflowException as exc:
        if missing(exc):
            return False
        raise
    stamp = int(pd.Timestamp(at).timestamp() * 1000)
    for name, value in figures.items():
        if value is not None and np.isfinite(value):
            client.log_metric(run_id, name, float(value), timestamp=stamp)
    return True


@dataclass(frozen=True)
class Champion:
    """A registered model's champion: which project it serves and the export it was trained on."""

    model_name: str
    version: str
    data: str | None  # the `--data` of the run that made it ("" or None when unknown)


def other_champions(settings: Settings) -> list[Champion]:
    """The champions of the registry's other models (other projects), for a service started
    under a project that has none (`serve` without `--data` after training on an export whose
    config names its project). Empty when the registry cannot say."""
    if not registry_written(settings):
        return []
    try:
        use_tracking(settings)
        client = MlflowClient()
        found = []
        for model in client.search_registered_models():
            version = (getattr(model, "aliases", None) or {}).get(ALIAS)
            if version is None or model.name == settings.model_name:
                continue
            run_id = client.get_model_version(model.name, str(version)).run_id
            data = client.get_run(run_id).data.params.get("data") if run_id else None
            found.append(Champion(model.name, str(version), data))
        return sorted(found, key=lambda c: c.model_name)
    except Exception as exc:  # noqa: BLE001 - a hint, never a failure
        log.debug("could not list the registry's champions: %s", exc)
        return []
