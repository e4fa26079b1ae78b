"""The partitioned path equals the whole-export path: features, scores from the same model and
stage weights, on a Dask LocalCluster of two worker processes and on the local engine, for the
demo-like export and a Chinese-stage one (1e-9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engines import partitioned
from engines.runner import runner
from features.contract import load_export
from features.frame import features_as_of, segment_columns
from features.loading import write_export
from features.partitions import partitions, split_export
from features.settings import SegmentConfig, Settings, settings_toml
from features.synthetic import generate
from features.times import utc_now
from scoring import drift
from scoring.score import score_open


def _exports(tmp_path, generated, n_parts: int):
    whole, split = tmp_path / "whole", tmp_path / "split"
    write_export(generated.tables, whole, fmt="parquet")
    split_export(generated.tables, split, n_parts)
    for folder in (whole, split):
        (folder / "oppscore.toml").write_text(settings_toml(generated.stages, generated.segments), encoding="utf-8")
    settings = Settings(stages=generated.stages, segments=SegmentConfig(columns=generated.segments))
    return whole, split, settings


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x):
            np.testing.assert_allclose(x.to_numpy(dtype=float), y.to_numpy(dtype=float), rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col)
        else:
            assert x.astype(str).tolist() == y.astype(str).tolist(), col


@pytest.mark.parametrize("engine", ["dask", "local"])
def test_features_scores_and_weights_equal_the_whole_export(engine, dask_run, tmp_path, medium, trained) -> None:
    whole, split, settings = _exports(tmp_path, medium, 3)
    assert len(partitions(split)) == 3 and partitions(whole) == [whole]
    now = utc_now()
    tables = load_export(whole, settings, now).tables
    t = tables.end - pd.Timedelta(days=20)
    expected, spec = features_as_of(tables, medium_stages := load_export(whole, settings, now).stages, segment_columns(settings, tables), t)
    with runner("local") as local:
        run = dask_run if engine == "dask" else local
        got_spec, got = partitioned.features(run, split, settings, now, t)
        assert got_spec.activity_types == spec.activity_types and got_spec.categories == spec.categories
        _same(got, expected.sort_values("opportunity_id", kind="stable").reset_index(drop=True))

        scored = partitioned.score(run, split, settings, now, t, trained.bundle, shadow=trained.bundle)
        tally: dict = {}
        want = score_open(trained.bundle, tables, t, drift_into=tally)
        _same(scored.table.drop(columns=["top_factors"]), want.drop(columns=["top_factors"]))
        assert scored.table["top_factors"].tolist() == want["top_factors"].tolist()
        assert scored.counts["scored (open)"] == len(want)
        # the partitions' drift, tallied apart and judged together, is the whole export's
        whole_drift = drift.of_run(trained.bundle, [tally])
        assert scored.drift["rows"] == whole_drift["rows"] == len(want) and scored.drift["features"].keys() == whole_drift["features"].keys()
        for col, measured in whole_drift["features"].items():
            assert scored.drift["features"][col]["psi"] == pytest.approx(measured["psi"], abs=1e-9), col
            assert scored.drift["features"][col]["quiet_now"] == pytest.approx(measured["quiet_now"], abs=1e-12), col
        assert scored.drift["score_psi"] == pytest.approx(whole_drift["score_psi"], abs=1e-9)
        _same(scored.shadow, score_open(trained.bundle, tables, t, with_factors=False))  # a shadow version scores the same deals, partition by partition

        from analytics.stage_weights import StageWeights

        weights = partitioned.stage_weights(run, split, settings, now, t)
        _same(weights.weights_, StageWeights(segment_columns(settings, tables)).fit(tables, medium_stages, t).weights_)


@pytest.mark.parametrize("engine", ["dask", "local"])
def test_forecasts_and_their_backtest_equal_the_whole_export(engine, dask_run, tmp_path, medium, trained) -> None:
    from analytics.forecast import backtest, forecast, methods_for

    whole, split, settings = _exports(tmp_path, medium, 3)
    now = utc_now()
    validated = load_export(whole, settings, now)
    t = validated.tables.end - pd.Timedelta(days=45)
    window = (t, t + pd.Timedelta(days=30))
    want = forecast(validated.tables, validated.stages, window, methods_for(validated.stages, trained.bundle), as_of=t, sims=400)
    want_bt = backtest(validated.tables, validated.stages, methods_for(validated.stages, trained.bundle), periods=2, sims=400)
    with runner("local") as local:
        run = dask_run if engine == "dask" else local
        outline = partitioned.first_pass(run, split, settings, now, now, with_history=True)
        methods = methods_for(validated.stages, trained.bundle)
        methods["model"] = partitioned.model_method(run, split, settings, now, trained.bundle, validated.stages)
        got = forecast(outline.tables(), validated.stages, window, methods, as_of=t, sims=400)
        got_bt = backtest(outline.tables(), validated.stages, methods, periods=2, sims=400, end=outline.end)
    assert outline.end == validated.tables.end
    assert (got.open_deals, got.pipeline_amount) == (want.open_deals, want.pipeline_amount)
    assert set(want.methods["method"]) == {"data-driven stage weights", "model"} | ({"configured weights"} if validated.stages.config.configured_weights else set())
    _same(got.methods, want.methods)
    _same(got_bt, want_bt)


def test_a_chinese_export_on_dask(dask_run, tmp_path) -> None:
    zh = generate(n=500, seed=5, stages="zh")
    whole, split, settings = _exports(tmp_path, zh, 2)
    now = utc_now()
    validated = load_export(whole, settings, now)
    t = validated.tables.end
    expected, _ = features_as_of(validated.tables, validated.stages, segment_columns(settings, validated.tables), t)
    _, got = partitioned.features(dask_run, split, settings, now, t)
    _same(got, expected.sort_values("opportunity_id", kind="stable").reset_index(drop=True))


def test_partitioned_output_is_written_per_partition(dask_run, tmp_path, medium, trained) -> None:
    _, split, settings = _exports(tmp_path, medium, 3)
    now = utc_now()
    t = medium.tables.end
    done = partitioned.score(dask_run, split, settings, now, t, trained.bundle, out_dir=tmp_path / "scores")
    files = sorted((tmp_path / "scores").glob("part-*.parquet"))
    assert len(files) == 3 and done.table is None
    assert sum(len(pd.read_parquet(f)) for f in files) == done.rows == done.counts["scored (open)"]


def test_the_cli_partitions_and_scores_on_an_existing_scheduler(dask_run, tmp_path, medium, trained, monkeypatch) -> None:
    """`oppscore partition`, then `oppscore score --engine dask --scheduler tcp://…` (the test's
    cluster standing in for a team's) into a folder of Parquet files, and --engine local into
    one CSV: the same scores."""
    from typer.testing import CliRunner

    from oppscore.cli import app
    from training.registry import log_and_register

    whole = tmp_path / "whole"
    write_export(medium.tables, whole, fmt="parquet")
    (whole / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPPSCORE_HOME", str(tmp_path / ".oppscore"))
    monkeypatch.setenv("OPPSCORE_CHAMPION_DIR", str(tmp_path / "champion"))
    store = Settings(home=tmp_path / ".oppscore", champion_dir=tmp_path / "champion", segments=SegmentConfig(columns=medium.segments))
    log_and_register(trained, medium.tables, store, "cli engine")
    cli = CliRunner()
    done = cli.invoke(app, ["partition", "--data", str(whole), "--out", str(tmp_path / "parts"), "--partitions", "3"])
    assert done.exit_code == 0, done.output
    at = str(medium.tables.end - pd.Timedelta(days=10))
    address = dask_run.client.scheduler.address
    on_dask = cli.invoke(app, ["score", "--data", str(tmp_path / "parts"), "--out", str(tmp_path / "scores"), "--as-of", at, "--engine", "dask", "--scheduler", address])
    assert on_dask.exit_code == 0, on_dask.output
    local = cli.invoke(app, ["score", "--data", str(tmp_path / "parts"), "--out", str(tmp_path / "scores.csv"), "--as-of", at])
    assert local.exit_code == 0, local.output
    a = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "scores").glob("*.parquet"))]).sort_values("opportunity_id").reset_index(drop=True)
    b = pd.read_csv(tmp_path / "scores.csv").sort_values("opportunity_id").reset_index(drop=True)
    assert a["opportunity_id"].tolist() == b["opportunity_id"].tolist()
    np.testing.assert_allclose(a["win_probability"], b["win_probability"], rtol=1e-9)
    nowhere = cli.invoke(app, ["score", "--data", str(tmp_path / "parts"), "--out", str(tmp_path / "x.csv"), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"])
    assert nowhere.exit_code == 1 and "no Dask scheduler answers" in " ".join(nowhere.output.split())
