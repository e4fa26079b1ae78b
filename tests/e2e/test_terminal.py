"""What the terminal says (issue 29): every command ends with what to do next; tables read as a
manager reads them (headings in words, percents, days to a tenth, times to the minute, stages
in the pipeline's order); a typo in a time names the forms that are read; reasons are sentences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oppscore.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("terminal") / "crm"
    done = runner.invoke(app, ["generate", "--out", str(folder), "--n", "400", "--seed", "3"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "next: `oppscore validate" in " ".join(done.output.split())
    return folder


def _said(args: list[str]) -> str:
    done = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    return done.output


def test_validate_ends_with_what_to_do_next_and_counts_stages_in_pipeline_order(export) -> None:
    said = _said(["validate", "--data", str(export)])
    assert "next: `oppscore train --data" in " ".join(said.split())
    order = [said.index(f"│ {stage}") for stage in ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation", "Closed Won", "Closed Lost")]
    assert order == sorted(order)


def test_funnel_tables_read_as_words_percents_and_minutes(export) -> None:
    said = _said(["funnel", "--data", str(export)])
    assert "moved on" in said and "won from here" in said and "moved_on" not in said
    assert re.search(r"\d{1,3}\.\d %", said)  # conversion as a percent
    assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", said)  # times to the minute, not ISO with seconds
    assert not re.search(r"\d+\.\d{3}\s", said.split("dwell")[1].split("stalled")[0])  # days to a tenth
    reasons = said.split("loss reasons")[1].split("activities")[0]
    stages = [s for s in ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation") if s in reasons]
    assert [reasons.index(s) for s in stages] == sorted(reasons.index(s) for s in stages)  # in pipeline order, not the alphabet


def test_a_typo_in_a_time_names_the_forms_read(export) -> None:
    done = runner.invoke(app, ["score", "--data", str(export), "--out", "x.csv", "--as-of", "2026-13-01"], env={"COLUMNS": "200"})
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and "2026-13-01" in said and "2026-06-01T09:00:00Z" in said


def test_reasons_are_sentences_a_manager_writes() -> None:
    from features.frame import FeatureSpec
    from scoring.explain import sentence

    spec = FeatureSpec({"open": ["A", "B"], "won": "W", "lost": "L"}, ["team"], ["call"], {"stage": ["A", "B"], "team": ["Charlie"]})
    assert sentence("team", {"team": "Charlie"}, {}, spec) == "team: Charlie"
    assert sentence("days_since_activity", {"days_since_activity": 0.2}, {}, spec) == "an activity within the last day"
    assert sentence("activities_30d", {"activities_30d": 1}, {}, spec).startswith("1 activity in the last 30 days")
    assert sentence("activities_30d", {"activities_30d": 3}, {}, spec).startswith("3 activities")
    assert sentence("moves_back", {"moves_back": 1}, {}, spec) == "moved back to an earlier stage once"
    assert sentence("call_30d", {"call_30d": 2}, {}, spec).startswith("2 calls in the last 30 days")


def test_train_and_score_say_what_they_did_and_default_to_the_exports_end(export, tmp_path, monkeypatch) -> None:
    """No MLflow signature warning on a train, log times in ISO, and a score without --as-of is
    as of the export's end (what the export knew), said, with a warning that today is far past it."""
    import pandas as pd

    from features.contract import load_export
    from features.settings import load_settings
    from features.times import utc_now

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trained = _said(["train", "--data", str(export)])
    assert "Failed to infer model signature" not in trained and not re.search(r"\b\d\d/\d\d/\d\d\b", trained)
    assert "next: `oppscore score --data" in " ".join(trained.split())
    scored = " ".join(_said(["score", "--data", str(export), "--out", "scores.csv"]).split())
    end = load_export(export, load_settings(export / "oppscore.toml"), utc_now()).tables.end
    assert f"as of {end:%Y-%m-%d %H:%M} UTC" in scored and "days before today" in scored
    assert set(pd.to_datetime(pd.read_csv("scores.csv")["as_of"], utc=True)) == {end}

    # `serve` without --data looks for the default project's champion; the export's config names
    # its own project (crm): the command says which champions there are and how to serve each
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setenv("OPPSCORE_API_KEYS", "terminal-key")  # else `serve` makes one and puts it in this process's environment, for every later test
    served = " ".join(_said(["serve", "--port", "8999"]).split())
    assert "no champion for oppscore" in served and f"oppscore-crm v1, trained on {export}: `oppscore serve --data {export}`" in served


def test_money_on_chart_axes_reads_as_money() -> None:
    from analytics.report import _money

    assert [_money(v) for v in (0, 950, 1500, 850_000, 1_200_000, 3e6)] == ["0", "950", "2k", "850k", "1.2M", "3M"]


def test_a_missing_database_driver_is_named_with_what_to_install() -> None:
    from features.errors import ConfigInvalid
    from scoring.history import ScoreHistory

    with pytest.raises(ConfigInvalid, match=r"mysql database, whose driver \(pymysql\) is not installed: pip install pymysql"):
        ScoreHistory("mysql+pymysql://oppscore@127.0.0.1/history", "oppscore")
