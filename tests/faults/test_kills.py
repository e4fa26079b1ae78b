"""A training process killed (SIGKILL) at each step of train → register → export → alias,
twice in a row: the service's view never breaks. After each kill the export is a whole bundle;
once the next start has reconciled (what train, promote and serve do first), alias and export
agree, load, and score as before (as the new champion, once the alias had moved), no copy is
left behind and no run stays RUNNING."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.loading import write_export
from features.settings import SegmentConfig, Settings, settings_toml
from features.stages import StageOrder
from scoring.champion_folder import load_exported
from scoring.score import score_open
from scoring.store import champion_version, load_champion, reconcile_export
from training.pipeline import train
from training.registry import experiment, log_and_register, versions
from training.runs import scratch, sweep_dead_runs

DRIVER = Path(__file__).with_name("die_at.py")
ROOT = Path(__file__).resolve().parents[2]
BEFORE_ALIAS = ["trained", "logged", "registered", "exporting", "swapping", "exported"]


@pytest.fixture(scope="module")
def replay(small, tmp_path_factory) -> tuple[Path, Path, object]:
    """The small export on disk and one training result, pickled for the killed processes."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "export"
    write_export(small.tables, data)
    (data / "oppscore.toml").write_text(settings_toml(small.stages, small.segments), encoding="utf-8")
    settings = Settings(segments=SegmentConfig(columns=small.segments))
    result = train(small.tables, StageOrder(small.stages), settings, workdir=root)
    cached = root / "result.pickle"
    cached.write_bytes(pickle.dumps(result))
    return data, cached, result


def _settings(tmp_path: Path, small) -> Settings:
    return Settings(home=tmp_path / ".oppscore", champion_dir=tmp_path / "models" / "champion", segments=SegmentConfig(columns=small.segments))


def _run(step: str, cached: Path, data: Path, settings: Settings) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OPPSCORE_HOME": str(settings.home),
        "OPPSCORE_CHAMPION_DIR": str(settings.champion_dir),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, str(DRIVER), step, str(cached), "train", "--data", str(data)],
        env=env, capture_output=True, text=True, timeout=300, cwd=settings.home.parent,
    )


def _scores(bundle, tables) -> pd.DataFrame:
    return score_open(bundle, tables, tables.end, with_factors=False)


@pytest.mark.parametrize("step", [*BEFORE_ALIAS, "aliased"])
def test_killed_twice_at_a_step_leaves_a_consistent_champion(step, replay, small, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, cached, result = replay
    settings = _settings(tmp_path, small)
    first = log_and_register(result, small.tables, settings, "first")
    before = _scores(load_champion(settings).bundle, small.tables)

    for _ in range(2):
        done = _run(step, cached, data, settings)
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        whole = load_exported(settings.champion_dir)  # a whole bundle at every instant
        assert whole.version in versions(settings)

    repaired = reconcile_export(settings)
    exp_id = experiment(settings)
    sweep_dead_runs(settings, exp_id)  # the second run swept the first; this sweeps the second
    runs = mlflow.search_runs([exp_id])
    assert (runs["status"] == "RUNNING").sum() == 0
    assert (runs["status"] == "FAILED").sum() == (0 if step == "trained" else 2)
    if step == "exported":  # the export had gone ahead of the alias
        assert "re-exported" in repaired

    champion = champion_version(settings)
    from_registry = load_champion(settings).bundle
    from_export = load_champion(settings, prefer_registry=False).bundle
    assert from_export.version == from_registry.version == champion
    pd.testing.assert_frame_equal(_scores(from_export, small.tables), _scores(from_registry, small.tables))
    if step in BEFORE_ALIAS:
        assert champion == first.version
        pd.testing.assert_frame_equal(_scores(from_registry, small.tables), before)
    else:
        assert champion == versions(settings)[-1] != first.version
    assert not list(settings.champion_dir.parent.glob(".champion.*"))
    with scratch(settings):  # the next run's scratch folder sweeps what the killed ones left
        pass
    assert not list((settings.home / "scratch").iterdir()), list((settings.home / "scratch").iterdir())


@pytest.mark.parametrize("store", ["made before", "fresh"])
def test_two_trains_at_once_promote_one_champion(replay, small, tmp_path, monkeypatch, store) -> None:
    """Both gates read the champion while holding the lock: the first finds none and promotes,
    the second compares with it (the same data: nothing new) and says so. Without the lock both
    would read "no champion" during the gate's pause and both promote. On a fresh home, the two
    first MLflow calls made the store's tables at once, and one died ("table already exists")."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data, cached, _ = replay
    settings = _settings(tmp_path, small)
    if store == "made before":
        experiment(settings)
    env = {**os.environ, "OPPSCORE_HOME": str(settings.home), "OPPSCORE_CHAMPION_DIR": str(settings.champion_dir), "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    both = [
        subprocess.Popen(
            [sys.executable, str(DRIVER), "slow-gate", str(cached), "train", "--data", str(data)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    lines = [line for out in outputs for line in out.splitlines()]
    champion = champion_version(settings)
    assert versions(settings) == ["1", "2"] and champion in ("1", "2")
    assert sorted(line for line in lines if line.startswith("gate read")) == [f"gate read champion {champion}", "gate read champion None"], outputs
    assert sorted(line for line in lines if line.startswith("champion")) == ["champion unchanged", f"champion: version {champion}"], outputs
    assert any("the first version becomes champion" in line for line in lines), outputs
    assert any(f"champion v{champion} was trained on these same data" in line for line in lines), outputs
    assert load_champion(settings, prefer_registry=False).bundle.version == champion
