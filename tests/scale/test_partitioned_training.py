"""Training on a partitioned export: on the local engine it is the whole export's training (the
same snapshots, backtest and models, to 1e-9); on a Dask cluster the backtest is the same and
the served booster, fitted by LightGBM's Dask estimator, is within 0.005 AUC and log loss of the
single-machine one on deals neither saw (a time split: trained on the export as it stood at a
date, judged on what was open after it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engines.runner import runner
from engines.work import stages_of
from features.contract import load_export
from features.loading import write_export
from features.partitions import split_export
from features.settings import SegmentConfig, Settings, WinConfig, settings_toml
from features.stages import StageOrder
from features.times import utc_now
from tests.nested import assert_close
from training.partitioned import PartitionedExport
from training.pipeline import backtest_points, evaluate_on, train


@pytest.fixture(scope="module")
def cut(medium, tmp_path_factory):
    """The medium export as it stood 120 days before its end, whole and in 3 partitions, and
    the backtest points after that date with the outcomes known at the full export's end."""
    stages = StageOrder(medium.stages)
    # a win label of 60 days (the medium export's own is longer): backtest points after the cut whose outcome is known by the end
    settings = Settings(stages=medium.stages, segments=SegmentConfig(columns=medium.segments), win=WinConfig(horizon_days=60))
    at = medium.tables.end - pd.Timedelta(days=120)
    then = medium.tables.as_of(at, stages)
    root = tmp_path_factory.mktemp("cut")
    whole, split = root / "whole", root / "split"
    write_export(then, whole, fmt="parquet")
    split_export(then, split, 3)
    for folder in (whole, split):
        (folder / "oppscore.toml").write_text(settings_toml(medium.stages, medium.segments), encoding="utf-8")
    now = utc_now()
    tables = load_export(whole, settings, now).tables
    later = backtest_points(medium.tables, stages, settings, cutoff=at)
    return {"settings": settings, "whole": whole, "split": split, "now": now, "tables": tables, "later": later, "full": medium.tables, "single": train(tables, stages, settings)}


def _metrics_equal(a: dict, b: dict) -> None:
    for target in a:
        for name in a[target]:
            for k in ("auc", "log_loss", "brier", "rows"):
                np.testing.assert_allclose(a[target][name][k], b[target][name][k], rtol=1e-9, err_msg=f"{target} {name} {k}")


def test_on_the_local_engine_partitions_train_the_whole_exports_model(cut) -> None:
    single = cut["single"]
    with runner("local") as run:
        source = PartitionedExport(run, cut["split"], cut["settings"], cut["now"])
        got = train(source, stages_of(cut["settings"]), cut["settings"])
    assert got.counts == single.counts
    assert got.bundle.spec.columns == single.bundle.spec.columns and got.bundle.spec.categories == single.bundle.spec.categories
    _metrics_equal(got.metrics, single.metrics)
    assert got.bundle.metadata["served"] == single.bundle.metadata["served"]
    ours, theirs = evaluate_on(got.bundle, cut["full"], cut["later"]), evaluate_on(single.bundle, cut["full"], cut["later"])
    for target in ("win", "stall"):
        np.testing.assert_allclose(ours[target]["log_loss"], theirs[target]["log_loss"], rtol=1e-9)
    for ours_part, theirs_part in ((got.bundle.stage_weights, single.bundle.stage_weights), (got.bundle.grades, single.bundle.grades), (got.bundle.reference, single.bundle.reference)):
        assert_close(ours_part, theirs_part, rtol=1e-9, atol=1e-12)  # sums in another order differ in the last bit
    assert got.bundle.metadata["sufficiency"]["said"] == single.bundle.metadata["sufficiency"]["said"]


def test_on_dask_the_served_booster_is_within_0_005_of_the_single_machine_one(cut, dask_run) -> None:
    single = cut["single"]
    source = PartitionedExport(dask_run, cut["split"], cut["settings"], cut["now"])
    got = train(source, stages_of(cut["settings"]), cut["settings"])
    _metrics_equal(got.metrics, single.metrics)  # the backtest reads the same rows from the workers
    boosted = [t for t, s in got.bundle.metadata["served"].items() if s["candidate"] == "lightgbm"]
    assert boosted, "the medium export serves LightGBM for at least one target: the Dask estimator must be exercised"
    for t in boosted:
        assert got.bundle.models[t].booster is not None
    ours, theirs = evaluate_on(got.bundle, cut["full"], cut["later"]), evaluate_on(single.bundle, cut["full"], cut["later"])
    for target in ("win", "stall"):
        assert abs(ours[target]["auc"] - theirs[target]["auc"]) <= 0.005, (target, ours[target], theirs[target])
        assert abs(ours[target]["log_loss"] - theirs[target]["log_loss"]) <= 0.005, (target, ours[target], theirs[target])
    # the promotion gate scores a champion partition by partition: the same as on the whole export
    held = single.held_out
    on_parts, on_whole = evaluate_on(single.bundle, source, held), evaluate_on(single.bundle, cut["tables"], held)
    for target in ("win", "stall"):
        np.testing.assert_allclose(on_parts[target]["log_loss"], on_whole[target]["log_loss"], rtol=1e-9)


def test_the_matrix_on_the_workers_reads_like_an_array(cut, dask_run) -> None:
    from engines.matrix import PartitionedMatrix

    source = PartitionedExport(dask_run, cut["split"], cut["settings"], cut["now"])
    spec, stats = source.spec_and_stats(stages_of(cut["settings"]), cut["settings"])
    snaps = source.snapshots(stages_of(cut["settings"]), cut["settings"], spec, stats, lambda _m: None)
    with runner("local") as run:
        local = PartitionedExport(run, cut["split"], cut["settings"], cut["now"]).snapshots(stages_of(cut["settings"]), cut["settings"], spec, stats, lambda _m: None)
    assert isinstance(snaps.x, PartitionedMatrix) and snaps.x.shape == local.x.shape
    rng = np.random.default_rng(3)
    rows = rng.choice(len(local.x), size=500, replace=True)
    np.testing.assert_array_equal(snaps.x[rows], local.x[rows])
    np.testing.assert_array_equal(snaps.x[np.zeros(len(local.x), dtype=bool)], local.x[:0])
    with pytest.raises(IndexError, match="rows"):
        snaps.x[np.array([len(local.x)])]


def test_the_cli_trains_on_a_cluster_and_a_second_run_on_the_same_data_is_not_promoted(cut, dask_run, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from oppscore.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OPPSCORE_HOME", str(tmp_path / ".oppscore"))
    monkeypatch.setenv("OPPSCORE_CHAMPION_DIR", str(tmp_path / "champion"))
    cli = CliRunner()
    address = dask_run.client.scheduler.address
    first = cli.invoke(app, ["train", "--data", str(cut["split"]), "--engine", "dask", "--scheduler", address])
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert "(dask engine)" in said and "champion: version 1" in said
    again = cli.invoke(app, ["train", "--data", str(cut["split"])])  # the local engine reads the partitions too
    assert again.exit_code == 0, again.output
    assert "trained on these same data" in " ".join(again.output.split())
    week_before = f"{cut['tables'].end - pd.Timedelta(days=7):%Y-%m-%dT%H:%M}"
    scored = cli.invoke(app, ["score", "--data", str(cut["split"]), "--out", str(tmp_path / "scores.csv"), "--as-of", week_before])
    assert scored.exit_code == 0, scored.output
    first = pd.read_csv(tmp_path / "scores.csv")
    assert len(first) > 0 and f"{len(first):,} scores kept in the score history" in " ".join(scored.output.split())
    # the partitioned score keeps the history as a whole export's does: a week later, each
    # deal's change since, written per partition and recorded file by file
    (tmp_path / "later").mkdir()
    first.head(5).to_parquet(tmp_path / "later" / "part-00999.parquet")  # an older run's file left in the folder: not this run's scores
    later = cli.invoke(app, ["score", "--data", str(cut["split"]), "--out", str(tmp_path / "later"), "--engine", "dask", "--scheduler", address])
    assert later.exit_code == 0, later.output
    second = pd.concat(pd.read_parquet(f) for f in sorted((tmp_path / "later").glob("part-*.parquet")) if f.name != "part-00999.parquet")
    assert f"{len(second):,} scores kept in the score history" in " ".join(later.output.split())
    import sqlalchemy as sa

    with sa.create_engine(f"sqlite:///{tmp_path / '.oppscore' / 'history.db'}").connect() as c:
        runs = c.execute(sa.text("select scored from runs order by id")).scalars().all()
    assert runs == [len(first), len(second)]  # one run per command: a folder's files make one run, not one each
    again = second[second["opportunity_id"].isin(first["opportunity_id"])]
    assert len(again) > 0 and again["previous_score"].notna().all()
    assert (again["score_change"] == again["score"] - again["previous_score"]).all()
    before = first.set_index("opportunity_id")["score"]
    assert (again["previous_score"].to_numpy() == before.reindex(again["opportunity_id"]).to_numpy()).all()
    month = f"{cut['tables'].end:%Y-%m}"
    fc = cli.invoke(app, ["forecast", "--data", str(cut["split"]), "--period", month, "--backtest", "2", "--engine", "dask", "--scheduler", address, "--out", str(tmp_path / "forecast.json")])
    assert fc.exit_code == 0, fc.output
    import json

    methods = {row["method"] for row in json.loads((tmp_path / "forecast.json").read_text())["forecast"]}
    assert {"model", "data-driven stage weights"} <= methods


def test_statistics_are_fitted_once_and_read_again_for_other_keys(cut) -> None:
    """The daily increments behind the statistics are let go once these are fitted (every deal's:
    memory at a million deals); asked for other keys, the export is read again, and the
    statistics are those of the whole export."""
    from features.pit_stats import PointInTimeStats

    settings = cut["settings"]
    with runner("local") as run:
        source = PartitionedExport(run, cut["split"], settings, cut["now"])
        spec, stats = source.spec_and_stats(stages_of(settings), settings)
        assert source.outline.wins is None and source.outline.dwell is None
        assert source.spec_and_stats(stages_of(settings), settings)[1] is stats
        fewer = settings.model_copy(update={"segments": SegmentConfig(columns=settings.segments.columns[:1])})
        other_spec, other = source.spec_and_stats(stages_of(fewer), fewer)
    assert other_spec.stat_keys != spec.stat_keys
    whole = PointInTimeStats(other_spec.stat_keys).fit(cut["tables"], stages_of(fewer))
    opps = cut["tables"].opportunities
    at = opps["created_at"] + pd.Timedelta(days=30)
    for key in other_spec.stat_keys:
        np.testing.assert_allclose(other.win_rate(key, opps[key].to_numpy(), at), whole.win_rate(key, opps[key].to_numpy(), at), rtol=1e-12)
    first = np.full(len(opps), stages_of(fewer).open[0], dtype=object)
    np.testing.assert_allclose(other.typical_dwell(first, at), whole.typical_dwell(first, at), rtol=1e-12)


def test_each_partition_is_built_and_kept_on_its_own_worker(cut, dask_run) -> None:
    """Which rows a worker holds decides what a data-parallel booster gives: partition k is built
    on the worker at k mod n of the sorted addresses, and its heavy part stays there."""
    from engines.runner import home
    from features.partitions import partitions

    def where(part, out):
        from distributed import get_worker

        return get_worker().address, np.zeros(3)

    parts = partitions(cut["split"])
    light, heavy = dask_run.map_held(where, parts)
    workers = sorted(dask_run.client.scheduler_info()["workers"])
    assert len(workers) == 2 and len(parts) == 3
    assert light == [home(workers, k) for k in range(len(parts))]
    held = dask_run.client.who_has(heavy)
    assert [set(held[f.key]) for f in heavy] == [{home(workers, k)} for k in range(len(parts))]


def test_a_booster_fitted_again_on_the_same_rows_is_the_same_model(cut, dask_run, monkeypatch) -> None:
    """LightGBM's Dask estimator ranks its machines in the order the scheduler lists the parts,
    and the rank decides which rows set each feature's bins: the same rows gave one of two models
    at random until the machine holding partition 0 was made rank 0 every time. Gathering each
    worker's rows a block per task (as at 3M deals, where its blocks do not fit in memory
    together) gives the same model too."""
    import engines.matrix
    from training.fitting import PARAMS

    source = PartitionedExport(dask_run, cut["split"], cut["settings"], cut["now"])
    spec, stats = source.spec_and_stats(stages_of(cut["settings"]), cut["settings"])
    snaps = source.snapshots(stages_of(cut["settings"]), cut["settings"], spec, stats, lambda _m: None)
    rows = np.arange(len(snaps.x))
    x = snaps.x[rows]
    y = (x[:, 0] > np.nanmedian(x[:, 0])).astype(float)
    fitted = {snaps.x.fit_booster(rows, y, np.ones(len(rows)), PARAMS, 20, []).model_to_string().split("parameters:")[0] for _ in range(4)}
    assert len(fitted) == 1
    monkeypatch.setattr(engines.matrix, "GATHER_BYTES", 1)
    assert snaps.x.fit_booster(rows, y, np.ones(len(rows)), PARAMS, 20, []).model_to_string().split("parameters:")[0] in fitted


def test_blocks_are_gathered_in_runs_of_at_most_the_limit() -> None:
    from engines.matrix import _groups

    assert _groups([100, 100, 100, 50], 250) == [slice(0, 2), slice(2, 4)]
    assert _groups([300, 10], 250) == [slice(0, 1), slice(1, 2)]  # a block past the limit alone
    assert _groups([1, 1, 1], 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert _groups([], 250) == []
