"""Score history: each run recorded, the previous score found, the change explained by the
factors that moved; the same on PostgreSQL as on SQLite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from scoring.explain import changes_in_words
from scoring.history import ScoreHistory
from scoring.score import score_open


def _two_runs(history: ScoreHistory, bundle, tables, first: pd.Timestamp, second: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = tables.opportunities["opportunity_id"].to_numpy()
    one = score_open(bundle, tables, first, previous=history.previous(ids, first))
    history.record(one, first, bundle.version, "batch")
    two = score_open(bundle, tables, second, previous=history.previous(ids, second))
    history.record(two, second, bundle.version, "batch")
    return one, two


def _check(history: ScoreHistory, trained, medium) -> None:
    tables = medium.tables
    first, second = tables.end - pd.Timedelta(days=60), tables.end - pd.Timedelta(days=30)
    one, two = _two_runs(history, trained.bundle, tables, first, second)
    assert one["previous_score"].isna().all() and one["why_changed"].isna().all()  # nothing recorded before
    both = two.merge(one[["opportunity_id", "score"]], on="opportunity_id", suffixes=("", "_first"))
    assert len(both) > 20
    np.testing.assert_array_equal(both["previous_score"], both["score_first"])
    np.testing.assert_array_equal(both["score_change"], both["score"] - both["score_first"])
    new = two[~two["opportunity_id"].isin(one["opportunity_id"])]
    assert new["previous_score"].isna().all()
    moved = both[both["score_change"].abs() >= 5]
    assert len(moved) > 0
    for r in moved.itertuples():
        points = [c["points"] for c in r.why_changed]
        assert points and all(c["sentence"] for c in r.why_changed)
        assert abs(points[0]) == max(abs(p) for p in points)  # the biggest mover first
        assert any(np.sign(p) == np.sign(r.score_change) for p in points), r.why_changed  # something moved it the way it went
        assert f"({points[0]:+.0f})".replace("-", "−") in changes_in_words(r.why_changed)
    with history.engine.connect() as c:
        assert c.execute(sa.text("select count(*) from scores")).scalar() == len(one) + len(two)
    again = history.previous(tables.opportunities["opportunity_id"].to_numpy(), second)  # before the second run: the first
    assert set(again.index) == set(one["opportunity_id"])


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from scoring.database import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_score_history_on_sqlite(tmp_path, trained, medium) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    _check(ScoreHistory(url, "oppscore"), trained, medium)
    ScoreHistory(url, "oppscore")  # opening again migrates nothing and loses nothing
    with sa.create_engine(url).connect() as c:
        assert c.execute(sa.text("select version_num from oppscore_schema_version")).scalar() == _head()
        assert c.execute(sa.text("select count(*) from scores")).scalar() > 0


def test_score_history_is_per_project(tmp_path, trained, medium) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    ours, theirs = ScoreHistory(url, "oppscore-a"), ScoreHistory(url, "oppscore-b")
    tables = medium.tables
    at = tables.end - pd.Timedelta(days=30)
    ours.record(score_open(trained.bundle, tables, at, previous=ours.previous([], at)), at, "1", "batch")
    assert theirs.previous(tables.opportunities["opportunity_id"].to_numpy(), tables.end).empty


def test_a_bad_database_url_is_a_clear_error(tmp_path) -> None:
    from features.errors import ConfigInvalid

    with pytest.raises(ConfigInvalid, match="OPPSCORE_DATABASE_URL"):
        ScoreHistory("nosuchdb://x", "oppscore")


def test_score_history_on_postgresql(postgres_url, trained, medium) -> None:
    history = ScoreHistory(postgres_url, "oppscore")
    with history.engine.begin() as c:
        c.execute(sa.text("delete from scores"))
    _check(history, trained, medium)


def test_nothing_open_with_history_is_an_empty_table_with_the_change_columns(trained, medium) -> None:
    from scoring.score import CHANGE_COLUMNS

    before_any = medium.tables.opportunities["created_at"].min() - pd.Timedelta(days=1)
    empty = score_open(trained.bundle, medium.tables, before_any, previous=pd.DataFrame(columns=["score", "win_probability", "factors", "as_of"]))
    assert empty.empty and set(CHANGE_COLUMNS) <= set(empty.columns)


def _at_revision_0001_with_scores(url: str) -> None:
    """A history as the first revision left it: two runs' scores, no runs table."""
    from alembic import command
    from alembic.config import Config

    from scoring.database import MIGRATIONS

    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as c:
        for table in ("event_counts", "events", "forecasts", "runs", "scores", "oppscore_schema_version"):
            c.execute(sa.text(f"drop table if exists {table}"))
    with engine.begin() as c:
        config.attributes["connection"] = c
        command.upgrade(config, "0001")
        for opp, scored_at, version in (("a", "2026-01-01", "3"), ("b", "2026-01-01", "3"), ("a", "2026-01-08", "4")):
            c.execute(sa.text("insert into scores (model_name, opportunity_id, scored_at, as_of, source, model_version, win_probability, stall_risk, score, grade, factors) "
                              "values ('oppscore', :opp, :at, :at, 'batch', :v, 0.2, 0.1, 20, 'C', '{}')"), {"opp": opp, "at": pd.Timestamp(scored_at, tz="UTC").to_pydatetime(), "v": version})
    engine.dispose()


def _upgraded_keeps_every_score(url: str) -> None:
    from scoring.database import Database

    _at_revision_0001_with_scores(url)
    database = Database(url)  # a new handle (a process's own is brought up to date once): as a process started after the upgrade shipped
    database.upgrade()
    history = ScoreHistory(database, "oppscore")
    runs, scores = history.runs(), history.scores()
    assert len(scores) == 3 and scores["run_id"].notna().all() and (scores["role"] == "champion").all()
    assert list(runs["model_version"]) == ["3", "4"] and list(runs["scored"]) == [2, 1] and runs["horizon_days"].isna().all()
    assert set(history.previous(["a", "b"], pd.Timestamp("2026-02-01", tz="UTC")).index) == {"a", "b"}


def test_the_track_record_revision_keeps_the_scores_recorded_before_it_on_sqlite(tmp_path) -> None:
    _upgraded_keeps_every_score(f"sqlite:///{tmp_path / 'old.db'}")


def test_the_track_record_revision_keeps_the_scores_recorded_before_it_on_postgresql(postgres_url) -> None:
    _upgraded_keeps_every_score(postgres_url)
