"""Commands on the pipeline: stage-weights, funnel, forecast, monitor."""

from __future__ import annotations

import html
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape

from engines.runner import EngineOptions
from features.errors import ModelNotFound, NotEnoughData
from features.settings import Settings
from features.times import to_utc, utc_now
from oppscore.commands.base import (
    DEFAULT_ENGINE,
    AsOfOpt,
    ConfigOpt,
    DataOpt,
    OutOpt,
    _as_of,
    _export_span,
    _period_form,
    _settings,
    _track_record,
    app,
    engine_options,
    load_export,
    log,
)
from oppscore.console import out, steps


@app.command("stage-weights")
@engine_options
def stage_weights(
    data: DataOpt, out_file: OutOpt = None, as_of: AsOfOpt = None, config: ConfigOpt = None, engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """Data-driven stage weights (with intervals, by dwell, per segment) beside the configured ones."""
    from analytics import report
    from engines import partitioned
    from engines.runner import runner
    from oppscore import output

    settings = _settings(config, data)
    now = utc_now()
    with steps("stage weights") as step, runner(engine, progress=step) as run:
        sw = partitioned.stage_weights(run, data, settings, now, _as_of(as_of, _export_span(run, data, settings, now), now))
    tables = {"stage_weights": sw.weights_, "by_dwell": sw.by_dwell_, "by_segment": sw.by_segment_}
    output.write(f"Stage weights as of {sw.as_of_:%Y-%m-%d}", tables, out_file, lambda: [
        ("Stage weights beside the configured ones", report.stage_weights_plot(sw.weights_) + report._table(sw.weights_)),
        ("By dwell", report.dwell_plot(sw.by_dwell_) + report._table(sw.by_dwell_, 60)),
        ("Per segment (shrunk toward the stage weight)", report._table(sw.by_segment_, 80)),
    ], command=f"oppscore stage-weights --data {data}")


@app.command()
def funnel(data: DataOpt, out_file: OutOpt = None, as_of: AsOfOpt = None, config: ConfigOpt = None) -> None:
    """Conversion, dwell (and the deals past their stage's P90 dwell), loss reasons, activities that go with progress, segments, won-back deals."""
    from analytics import report
    from analytics.funnel import funnel as build
    from features.frame import segment_columns
    from oppscore import output

    settings = _settings(config, data)
    now = utc_now()
    validated = load_export(data, settings, now)
    t = _as_of(as_of, (validated.tables.opportunities["created_at"].min(), validated.tables.end), now)
    f = build(validated.tables, validated.stages, t, segment_columns(settings, validated.tables))
    won_back = f.reopened["outcome"].value_counts().rename_axis("outcome").reset_index(name="deals")
    tables = {**f.tables(), "won_back": won_back}
    output.write(f"Funnel as of {f.as_of:%Y-%m-%d}", tables, out_file, lambda: [
        ("Stage-to-stage conversion", report.funnel_plot(f.conversion) + report._table(f.conversion)),
        ("Dwell per stage", report.dwell_quantiles_plot(f.dwell) + report._table(f.dwell)),
        (f"Open deals past their stage's P90 dwell ({len(f.past_p90_dwell)}): slower than 90 % of past stays (the stall alert is the stall model's, on the page)",
         report._table(f.past_p90_dwell)),
        ("Loss reasons by stage", report._table(f.loss_reasons, 60)),
        ("Activities per week: stays that moved on against stays that did not", report._table(f.activities, 60)),
        ("Win rate by segment, team and owner", report._table(f.by_segment, 80)),
        ("Re-opened after a loss", report._table(won_back)),
    ], command=f"oppscore funnel --data {data}")


@app.command()
def monitor(
    data: DataOpt,
    out_file: OutOpt = None,
    log_metrics: Annotated[bool, typer.Option("--log/--no-log", help="log the champion's realised figures to the MLflow run that trained it")] = True,
    config: ConfigOpt = None,
) -> None:
    """The track record: how the recorded scores and forecasts did once their deals resolved
    (outcomes as this export knows them), what drifted, and whether to retrain."""
    from analytics import report
    from oppscore import output

    settings = _settings(config, data)
    with steps("monitor") as step:
        step("reading the score history and the export")
        record = _track_record(settings, data)
    said = record.verdict
    frames = {"verdict": pd.DataFrame([{"status": said["status"], "reasons": " | ".join(said["reasons"])}])}
    for name, frame in record.tables.items():
        frames[f"by_{name}"] = frame
    frames["drift"] = record.drift.assign(as_of=record.drift["as_of"].astype(str), **{c: record.drift[c].map(", ".join) for c in ("drifted", "silent", "silent_families")}).drop(columns=["run_id", "noise"]) if len(record.drift) else record.drift
    frames["forecasts"] = record.forecast_summary
    if len(record.replayed):
        frames["replayed"] = record.replayed.assign(as_of=record.replayed["as_of"].dt.strftime("%Y-%m-%d"))
    title = f"Track record: {len(record.scores):,} recorded scores in {len(record.runs):,} runs, outcomes known at {record.known_at:%Y-%m-%d}"
    if out_file is not None and out_file.suffix.lower() == ".json":
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(record.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        out.print(f"{title}: wrote {out_file}")
    else:
        output.write(title, frames, out_file, lambda: [
            ("Verdict", "".join(f"<p>{html.escape(line)}</p>" for line in [said["status"], *said["reasons"]])),
            ("How the scores did", report.reliability_plot(record.curves) + (report.realised_plot(record.tables["month"], record.promised) if "month" in record.tables else "")
             + "".join(report._table(record.tables[k]) for k in ("model_version", "role", "month") if k in record.tables)),
            ("By stage, team and owner", "".join(report._table(record.tables[k]) for k in ("stage", "team", "owner_id") if k in record.tables)),
            ("Drift", report.drift_plot(record.drift, settings.monitor.psi_alert) + report._table(frames["drift"])),
            ("Forecasts", report._table(record.forecast_summary) + report._table(record.forecasts)),
            *([("Replayed: the record made from history (`oppscore replay`)", report.replay_plot(record.replayed) + report._table(frames["replayed"]))] if len(record.replayed) else []),
        ], command=f"oppscore monitor --data {data}")
    out.print(f"[bold]{escape(said['status'])}[/bold]: " + escape("; ".join(said["reasons"])))
    champion = record.verdict.get("realised")
    if log_metrics and champion:
        from training.registry import log_track_record

        logged = log_track_record(settings, champion["version"], {"realised_log_loss": champion["log_loss"], "realised_auc": champion["auc"]}, record.known_at)
        if logged:
            out.print(f"realised figures logged to the MLflow run of v{champion['version']}")
    out.print(f"next: `oppscore monitor --data {data} --out track-record.html` for the plots" if out_file is None else "next: `oppscore serve` shows the track record on the managers' page")


def _record_forecast(settings: Settings, f, version: str | None) -> None:
    """Every forecast is recorded, for its track record once its period has passed."""
    from scoring.history import ScoreHistory, or_said

    or_said("forecast not recorded in the score history", lambda: ScoreHistory.of(settings).record_forecast(f.methods, utc_now(), f.as_of, f.period, f.open_deals, version, "batch"), None)


@app.command()
@engine_options
def forecast(
    data: DataOpt,
    period: Annotated[str, typer.Option(help="2026-10, 2026Q4, 2026 or next-30d", callback=_period_form)],
    out_file: OutOpt = None,
    as_of: AsOfOpt = None,
    backtest_periods: Annotated[int, typer.Option("--backtest", min=0, help="past months to replay")] = 6,
    config: ConfigOpt = None,
    engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """Expected won amount in a period with a P10–P90 range, by configured weights, data-driven
    weights and the model, and how each did on past periods."""
    from analytics import report
    from analytics.forecast import backtest, backtest_summary, parse_period
    from analytics.forecast import forecast as run_forecast
    from analytics.forecast_record import ordered
    from oppscore import output
    from scoring.store import load_champion

    settings = _settings(config, data)
    try:
        bundle = load_champion(settings).bundle
    except ModelNotFound as exc:  # the weights still forecast without a model
        log.warning("no model for the forecast (%s): weights only", exc)
        bundle = None
    with steps("forecast") as step, _forecast_inputs(data, settings, bundle, engine, step) as (tables, stages, end, methods):
        window = parse_period(period, to_utc(as_of) if as_of else end)
        t = to_utc(as_of) if as_of else min(window[0], end)  # the period's start, or the data's end if earlier
        step("simulating")
        f = run_forecast(tables, stages, window, methods, as_of=t)
        step("backtest")
        bt = backtest(tables, stages, methods, periods=backtest_periods, end=end) if backtest_periods else pd.DataFrame()
        replayed = _replayed_record(settings, tables, stages, end)
    _record_forecast(settings, f, bundle.version if bundle is not None else None)
    summary = backtest_summary(bt) if len(bt) else pd.DataFrame()
    judged = ordered(f.methods, window, summary, replayed, f.level)
    methods, said = judged.methods, judged.said
    if bundle is not None and len(bt):
        said.append(f"the model's replayed periods fall within its training data (up to {pd.Timestamp(bundle.metadata['data_end']):%Y-%m-%d}): its record there is better than it will be")
    results = {"forecast": methods, "backtest": bt, "backtest_summary": summary}
    title = f"Forecast {period}: {f.open_deals} open deals as of {f.as_of:%Y-%m-%d}, pipeline {f.pipeline_amount:,.0f}"
    output.write(title, results, out_file, lambda: [
        ("Forecast", report.forecast_plot(methods, period) + report._table(methods) + "".join(f"<p>{html.escape(line)}</p>" for line in said)),
        ("Backtest", (report.backtest_plot(bt) + report._table(summary) + report._table(bt, 60)) if len(bt) else "no backtest asked for"),
    ], command=f"oppscore forecast --data {data} --period {period}")
    for line in said:
        out.print(escape(line))


def _replayed_record(settings: Settings, tables, stages, end):
    """The forecasts `oppscore replay` recorded, judged as of the export's end (none when the
    history cannot be read: the forecast goes on by its own backtest)."""
    from analytics.forecast_record import ReplayedRecord
    from scoring.history import ScoreHistory, or_said

    forecasts = or_said("the replayed record could not be read", lambda: ScoreHistory.of(settings).forecasts(), pd.DataFrame())
    return ReplayedRecord.of(forecasts, tables, stages, end)


@contextmanager
def _forecast_inputs(data: Path, settings: Settings, bundle, engine: EngineOptions, step):
    """(tables, stages, end, methods): the first pass's opportunities and stage history (all the
    weights and timing read), with the model's probabilities computed partition by partition (a
    whole export: its one partition, read once)."""
    from analytics.forecast import methods_for
    from engines import partitioned
    from engines.runner import runner
    from engines.work import stages_of

    now = utc_now()
    step("loading")
    with runner(engine, progress=step) as run:
        stages = stages_of(settings, data, now)
        outline = partitioned.first_pass(run, data, settings, now, now, with_history=True, statistics=False, stages=stages)
        if outline.end is None:
            raise NotEnoughData(f"--data {data}: no opportunity in any partition")
        methods = methods_for(stages, bundle)
        if bundle is not None:
            methods["model"] = partitioned.model_method(run, data, settings, now, bundle, stages)
        tables, end = outline.tables(), outline.end
        del outline  # its stage history, unsorted: the tables hold a sorted copy
        yield tables, stages, end, methods
