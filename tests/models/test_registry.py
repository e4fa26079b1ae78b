"""MLflow registry: the gate keeps a worse model out, promotion rolls back, a crash changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from features.stages import StageOrder
from scoring.store import champion_version, load_champion, reconcile_export
from tests.conftest import older, weaker
from training import fitting, registry
from training.pipeline import train
from training.registry import log_and_register, promote


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_gate_keeps_a_worse_model_out_and_promote_rolls_back(trained, medium, store) -> None:
    first = log_and_register(older(trained, 240), medium.tables, store, "test")
    assert first.promoted and champion_version(store) == first.version
    assert (store.champion_dir / "bundle.json").exists()
    second = log_and_register(weaker(trained), medium.tables, store, "test")
    assert not second.promoted
    assert "does not beat the champion" in second.reason and "deal-dates after" in second.reason
    assert champion_version(store) == first.version
    promote(store, second.version)  # by hand
    assert champion_version(store) == second.version
    assert load_champion(store).bundle.version == second.version
    promote(store, first.version)  # and back
    assert champion_version(store) == first.version
    assert load_champion(store, prefer_registry=False).bundle.version == first.version


def test_gate_promotes_a_better_model_on_what_the_champion_never_saw(trained, medium, store) -> None:
    first = log_and_register(older(weaker(trained), 240), medium.tables, store, "test")
    second = log_and_register(trained, medium.tables, store, "test")
    assert second.promoted, second.reason
    assert second.reason.startswith("beats the champion: win log loss") and "stall log loss" in second.reason
    assert champion_version(store) == second.version != first.version


def test_gate_refuses_an_unfair_comparison(trained, medium, store) -> None:
    """The same data again: nothing to learn. Data that barely moved on: too few points the
    champion has not seen, and on what it saw it would look better than it is."""
    first = log_and_register(trained, medium.tables, store, "test")
    again = log_and_register(trained, medium.tables, store, "test")
    assert not again.promoted and "trained on these same data" in again.reason
    slightly = log_and_register(older(trained, 0), medium.tables, store, "test")
    assert not slightly.promoted and "are needed to compare them fairly" in slightly.reason
    assert champion_version(store) == first.version


def test_crash_mid_training_leaves_champion_and_export_intact(trained, medium, store, monkeypatch) -> None:
    log_and_register(trained, medium.tables, store, "test")
    before_version, before_export = champion_version(store), _digest(store.champion_dir)

    def boom(*args, **kwargs):
        raise MemoryError("killed while fitting")

    monkeypatch.setattr(fitting, "fit_booster", boom)
    with pytest.raises(MemoryError):
        train(medium.tables, StageOrder(medium.stages), store)
    assert champion_version(store) == before_version
    assert _digest(store.champion_dir) == before_export


@pytest.mark.parametrize("step", ["log_model", "set_model_version_tag", "set_registered_model_alias"])
def test_crash_inside_log_and_register_leaves_champion_and_export_intact(trained, medium, store, monkeypatch, step) -> None:
    """A second run dies inside `log_and_register`: while logging the bundle, after its version
    is registered, or as the alias moves. The champion, its export and its scores are as before."""
    import mlflow
    from mlflow import MlflowClient

    from scoring.score import score_open

    first = log_and_register(trained, medium.tables, store, "test")
    before_export = _digest(store.champion_dir)
    before_scores = score_open(load_champion(store).bundle, medium.tables, medium.tables.end, with_factors=False)
    better = weaker(trained)  # whatever it is, the gate is forced open
    monkeypatch.setattr(registry, "gate", lambda *a, **k: (True, "forced", None))

    def die(*args, **kwargs):
        raise KeyboardInterrupt(f"killed in {step}")

    if step == "log_model":
        monkeypatch.setattr(mlflow.pyfunc, "log_model", die)
    else:
        monkeypatch.setattr(MlflowClient, step, die)
    with pytest.raises(KeyboardInterrupt):
        log_and_register(better, medium.tables, store, "test")
    monkeypatch.undo()
    assert champion_version(store) == first.version
    runs = mlflow.search_runs(experiment_names=[store.experiment], order_by=["attributes.start_time DESC"])
    assert runs["status"].iloc[0] == "FAILED"  # the dead run is not left RUNNING
    reconcile_export(store)  # what the next train, promote or serve does first
    assert _digest(store.champion_dir) == before_export
    for prefer_registry in (True, False):
        after = score_open(load_champion(store, prefer_registry).bundle, medium.tables, medium.tables.end, with_factors=False)
        pd.testing.assert_frame_equal(after, before_scores)


def test_two_crashes_between_the_renames_keep_a_whole_bundle(trained, medium, store, monkeypatch) -> None:
    """Killed twice in a row with the old export moved aside and the new one not yet in place:
    the previous copy is never removed before a new one stands, and orphans go at the next export."""
    import scoring.champion_folder as export_mod

    first = log_and_register(trained, medium.tables, store, "test")
    second = log_and_register(weaker(trained), medium.tables, store, "test")
    real_replace = export_mod.os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt  # after the first rename of the export

    monkeypatch.setattr(export_mod.os, "replace", replace_then_die)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            promote(store, second.version)
        assert load_champion(store, prefer_registry=False).bundle.version in (first.version, second.version)
    monkeypatch.setattr(export_mod.os, "replace", real_replace)
    assert champion_version(store) == first.version  # the alias never moved: the export went first
    assert "re-exported" in reconcile_export(store)
    assert load_champion(store, prefer_registry=False).bundle.version == first.version
    assert not list(store.champion_dir.parent.glob(".champion.*"))  # no orphan, no previous


def test_unreachable_registry_serves_the_export(trained, medium, store, monkeypatch) -> None:
    first = log_and_register(trained, medium.tables, store, "test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    moved = store.model_copy(update={"mlflow_tracking_uri": "http://127.0.0.1:9"})
    loaded = load_champion(moved)
    assert loaded.source == "export" and loaded.version == first.version


def test_mlflow_tracking_on_postgresql(postgres_url, trained, medium, tmp_path, monkeypatch) -> None:
    """A team's tracking store on PostgreSQL (its own database beside score history's): train,
    register, promote and read the champion as on SQLite."""
    import sqlalchemy as sa

    from features.settings import SegmentConfig, Settings

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text("DROP DATABASE IF EXISTS mlflow_test"))
        c.execute(sa.text("CREATE DATABASE mlflow_test"))
    url = postgres_url.replace("/postgres?", "/mlflow_test?")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    team = Settings(home=tmp_path / ".oppscore", champion_dir=tmp_path / "champion", segments=SegmentConfig(columns=medium.segments), mlflow_tracking_uri=url)
    first = log_and_register(trained, medium.tables, team, "postgres")
    assert first.promoted and champion_version(team) == first.version
    assert load_champion(team).source == "registry" and load_champion(team, prefer_registry=False).bundle.version == first.version
