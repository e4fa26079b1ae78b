"""The track record as a user runs it: scoring runs with a shadow version and a forecast are
recorded; `oppscore monitor` judges them (terminal, JSON, HTML) and logs the champion's
realised figures to its MLflow run; `promote --realised` refuses a version that did not beat
the champion on realised outcomes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from oppscore.cli import app

runner = CliRunner()


def test_score_with_a_shadow_forecast_monitor_and_promote_on_realised_outcomes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert runner.invoke(app, ["generate", "--out", "crm", "--n", "1200", "--seed", "5"]).exit_code == 0
    assert runner.invoke(app, ["train", "--data", "crm"]).exit_code == 0
    # v2 learned from the export as known nine months before the dates it scores: the realised
    # gate must refuse it (a cutoff at those dates made a fair rival, whose level is theirs)
    second = runner.invoke(app, ["train", "--data", "crm", "--cutoff", "2025-06-01"])
    assert second.exit_code == 0 and "registered version 2" in second.output, second.output
    for at in ("2026-03-01", "2026-03-15", "2026-04-01", "2026-04-15"):
        scored = runner.invoke(app, ["score", "--data", "crm", "--out", "scores.csv", "--as-of", at, "--shadow", "2"])
        assert scored.exit_code == 0, scored.output
        assert "shadow v2 scored the same" in scored.output and "from the registry" in scored.output
    assert runner.invoke(app, ["forecast", "--data", "crm", "--period", "2026-05", "--as-of", "2026-04-01", "--backtest", "0"]).exit_code == 0

    watched = runner.invoke(app, ["monitor", "--data", "crm", "--out", "track.json"])
    assert watched.exit_code == 0, watched.output
    record = json.loads(Path("track.json").read_text(encoding="utf-8"))
    assert record["scores"]["runs"] == 8 and record["scores"]["resolved"] > 0
    assert {"champion", "shadow"} == set(record["realised"])
    assert record["forecasts"]["judged"] and all(f["actual"] is not None for f in record["forecasts"]["judged"])
    assert record["verdict"]["status"] in ("no reason to retrain", "retrain recommended", "check the data", "too early to tell")
    assert "logged to the MLflow run of v1" in watched.output

    from mlflow import MlflowClient

    from features.settings import load_settings

    settings = load_settings(Path("crm") / "oppscore.toml")
    run_id = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version(settings.model_name, "1").run_id
    assert "realised_log_loss" in MlflowClient(tracking_uri=settings.tracking_uri).get_run(run_id).data.metrics

    html = runner.invoke(app, ["monitor", "--data", "crm", "--out", "track.html", "--no-log"])
    assert html.exit_code == 0 and "<img" in Path("track.html").read_text(encoding="utf-8")

    refused = runner.invoke(app, ["promote", "2", "--realised", "crm"])
    assert refused.exit_code == 1 and "not promoted" in refused.output, refused.output
    assert "champion: version 2" not in refused.output
