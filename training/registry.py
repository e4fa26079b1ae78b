"""Writing to MLflow: the run, the registered version, the champion alias and its export.

Order matters for safety: a run is logged and a version registered only after training has
finished; the alias moves only after that; the export swaps in atomically last. A failure at
any point leaves the previous champion serving and its export whole.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import ModelNotFound
from features.settings import Settings
from features.tables import Tables
from scoring import pyfunc_model
from scoring.bundle import Bundle, export_atomically
from scoring.store import ALIAS, BUNDLE_ARTIFACT, champion_version, load_version, missing, use_tracking
from training.pipeline import TrainResult, evaluate_on

log = logging.getLogger(__name__)
GATE_TARGETS = ("win", "stall")
TOLERANCE = 0.002  # log-loss a challenger may lose on one target if it gains more on the other


@dataclass
class Registered:
    run_id: str
    version: str
    promoted: bool
    reason: str
    champion_metrics: dict | None


def experiment(settings: Settings) -> str:
    use_tracking(settings)
    found = mlflow.get_experiment_by_name(settings.experiment)
    if found is not None:
        return found.experiment_id
    location = settings.artifact_root if settings.mlflow_tracking_uri is None else None
    return mlflow.create_experiment(settings.experiment, artifact_location=location)


def _flat(prefix: str, values: dict) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        key = f"{prefix}.{k}".replace(" ", "_").replace("(", "").replace(")", "").replace("-", "_")
        if isinstance(v, dict):
            out.update(_flat(key, v))
        elif isinstance(v, (int, float)) and v == v:
            out[key] = float(v)
    return out


def gate(result: TrainResult, tables: Tables, settings: Settings) -> tuple[bool, str, dict | None]:
    """A challenger takes the alias only by beating the champion on the same held-out rows."""
    current = champion_version(settings)
    if current is None:
        return True, "no champion yet", None
    champion = load_version(settings, current)
    theirs = evaluate_on(champion, tables, result.held_out)
    ours = {t: result.metrics[t][next(iter(result.metrics[t]))] for t in GATE_TARGETS}
    gains = {t: theirs[t]["log_loss"] - ours[t]["log_loss"] for t in GATE_TARGETS}
    better = sum(gains.values()) > 0 and all(g > -TOLERANCE for g in gains.values())
    words = ", ".join(f"{t} log loss {ours[t]['log_loss']:.4f} vs champion v{current} {theirs[t]['log_loss']:.4f}" for t in GATE_TARGETS)
    return better, ("beats the champion: " if better else "does not beat the champion: ") + words, theirs


def log_and_register(result: TrainResult, tables: Tables, settings: Settings, data_label: str) -> Registered:
    exp_id = experiment(settings)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M}") as run:
        mlflow.log_params({k: v for k, v in result.params.items() if not isinstance(v, (dict, list))})
        mlflow.log_params({f"split.{k}": v for k, v in result.split.describe().items()})
        mlflow.log_param("data", data_label)
        mlflow.log_metrics({f"count.{k}": float(v) for k, v in result.counts.items()})
        mlflow.log_metrics(_flat("held_out", result.metrics))
        for path in result.plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        for name, frame in result.slices.items():
            mlflow.log_table(frame, artifact_file=f"slices/{name}.json")
        promote_now, reason, champion_metrics = gate(result, tables, settings)
        if champion_metrics:
            mlflow.log_metrics(_flat("champion_on_same_period", champion_metrics))
        mlflow.set_tag("gate", reason)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / BUNDLE_ARTIFACT
            result.bundle.save(folder)
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
    if promote_now:
        promote(settings, version)
    return Registered(run.info.run_id, version, promote_now, reason, champion_metrics)


def promote(settings: Settings, version: str) -> Bundle:
    """Move the alias (by hand this also rolls back) and export that version for offline serving."""
    use_tracking(settings)
    client = MlflowClient()
    try:
        client.get_model_version(settings.model_name, str(version))
    except MlflowException as exc:
        if missing(exc):
            raise ModelNotFound(f"VERSION: no version {version!r} of model {settings.model_name!r}") from None
        raise
    bundle = load_version(settings, str(version))
    with tempfile.TemporaryDirectory() as tmp:
        bundle.save(Path(tmp) / "b")  # saved with its version in the metadata
        client.set_registered_model_alias(settings.model_name, ALIAS, str(version))
        export_atomically(Path(tmp) / "b", settings.champion_dir)
    log.info("version %s is now %s; exported to %s", version, ALIAS, settings.champion_dir)
    return bundle


def versions(settings: Settings) -> list[str]:
    use_tracking(settings)
    found = MlflowClient().search_model_versions(f"name='{settings.model_name}'")
    return sorted((str(v.version) for v in found), key=int)
