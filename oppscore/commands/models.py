"""Commands on models: train, evaluate, promote, replay."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape

from engines.runner import EngineOptions
from features.errors import InputInvalid, NotEnoughData
from features.settings import Settings
from features.times import to_utc, utc_now
from oppscore.commands.base import DEFAULT_ENGINE, ConfigOpt, DataOpt, _partitioned, _settings, _track_record, _when, _where, app, engine_options, load_export
from oppscore.console import out, show_table, steps


def _comparison(metrics: dict) -> None:
    for target, rows in metrics.items():
        shown = []
        for name, m in rows.items():
            auc = m.get("interval_90", {}).get("auc")
            loss = m.get("interval_90", {}).get("log_loss")
            shown.append({
                "model": name, "auc": m["auc"], "auc 90 % interval": f"{auc[0]:.3f}–{auc[1]:.3f}" if auc else "n/a",
                "log_loss": m["log_loss"], "log loss 90 % interval": f"{loss[0]:.3f}–{loss[1]:.3f}" if loss else "n/a",
                "ece": m["ece"], "rows": m["rows"],
            })
        show_table(shown, title=f"{target}: rolling-origin backtest, pooled over folds (the served model as 'model')")


@app.command()
@engine_options
def train(
    data: DataOpt,
    cutoff: Annotated[datetime | None, typer.Option(parser=_when, metavar="TIME", help="backtest only at fold dates from then on (default: as far back as the data allow)")] = None,
    config: ConfigOpt = None,
    engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """Train both models, backtest them at past dates as known then beside the baselines, register, and promote if better."""

    settings = _settings(config, data)
    _train_and_register(data, settings, to_utc(cutoff) if cutoff else None, engine)


def _said_after_training(result, registered, data: Path, where: str = "") -> None:
    if result.metrics:
        _comparison(result.metrics)
    for line in result.report.get("said", []):
        out.print(escape(line))  # plain text: "[project] name = ..." is not markup
    out.print(escape(f"registered version {registered.version} (run {registered.run_id}){where}; {registered.reason}"))
    out.print(f"champion: version {registered.version}" if registered.promoted else "champion unchanged")
    out.print(f"next: `oppscore score --data {data} --out scores.csv`, or `oppscore serve --data {data}` for the API and the managers' page")


def _train_and_register(data: Path, settings: Settings, cutoff: pd.Timestamp | None, engine: EngineOptions = DEFAULT_ENGINE, title: str = "train"):
    """Read, train, log, register, gate; print the comparison. Returns what was trained on (its
    `tables` the export's)."""
    from engines.runner import runner
    from training.pipeline import train as fit
    from training.registry import log_and_register
    from training.runs import exit_on_termination, scratch

    exit_on_termination()
    with steps(title) as step, runner(engine, progress=step) as run:
        step("loading")
        source, stages = _training_data(run, data, settings, engine)
        with scratch(settings) as tmp:
            result = fit(source, stages, settings, cutoff, workdir=tmp, progress=step)
            step("logging to MLflow")
            registered = log_and_register(result, source, settings, str(data))
    _said_after_training(result, registered, data, _where(data, engine))
    return source


def _training_data(run, data: Path, settings: Settings, engine: EngineOptions):
    """(training data, stage order): a whole export on this machine is read once and held whole,
    its snapshot matrix built in place (`training.data.WholeExport`); partitions, or any export on
    Dask, are read where they are, the snapshots built per partition and the booster fitted there
    on a cluster (`training.partitioned.PartitionedExport`). One training run either way (`training.pipeline`)."""
    if not _partitioned(data, engine):
        from training.data import WholeExport

        validated = load_export(data, settings, utc_now())
        return WholeExport(validated.tables), validated.stages
    from training.partitioned import PartitionedExport

    source = PartitionedExport(run, data, settings, utc_now())
    return source, source.stages


@app.command()
def evaluate(
    data: DataOpt,
    versions: Annotated[list[str] | None, typer.Option("--version", help="versions to compare (default: all)")] = None,
    cutoff: Annotated[datetime | None, typer.Option(parser=_when, metavar="TIME", help="evaluate only at backtest dates from then on")] = None,
    config: ConfigOpt = None,
) -> None:
    """Compare registered versions on the same backtest dates of an export (from --cutoff)."""
    from scoring.store import champion_version, load_version
    from training.pipeline import backtest_points, evaluate_on
    from training.registry import versions as all_versions

    settings = _settings(config, data)
    validated = load_export(data, settings, utc_now())
    chosen = versions or all_versions(settings)
    if not chosen:
        raise InputInvalid("no registered versions: run `oppscore train` first")
    champ = champion_version(settings)
    held = backtest_points(validated.tables, validated.stages, settings, to_utc(cutoff) if cutoff else None)
    rows = []
    with steps("evaluate") as step:
        for v in chosen:
            step(f"version {v}")
            m = evaluate_on(load_version(settings, v), validated.tables, held)
            rows.append({"version": v + (" (champion)" if v == champ else ""), **{f"{t} {k}": m[t][k] for t in m for k in ("auc", "log_loss", "ece")}})
    show_table(rows, title=f"backtest dates from {held.points['as_of'].min():%Y-%m-%d}: {len(held.points)} open deal-dates, outcomes as known at the data's end")
    out.print("A version trained on these data has seen these outcomes; compare versions trained on the same data, or on data that ended before these dates.")
    where = f" --config {settings.config_path}" if settings.config_path is not None else ""
    out.print(f"next: `oppscore promote VERSION{where}` makes a version the champion")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the version to make champion (an older one rolls back)")],
    force: Annotated[bool, typer.Option("--force", help="also when it reads other stages, segments or activity types than the champion")] = False,
    realised: Annotated[Path | None, typer.Option("--realised", metavar="DIR", help="only if VERSION did better than the champion on realised outcomes: the scores both recorded of the same deals (VERSION as a shadow), judged against this export")] = None,
    config: ConfigOpt = None,
) -> None:
    """Move the champion alias by hand and export that version to models/champion; with
    --realised, only when the version beat the champion on the outcomes of their recorded scores."""
    from scoring.store import champion_version
    from training.registry import promote as move

    settings = _settings(config, realised)
    before = champion_version(settings)
    if realised is not None and before is not None and before != str(version):
        _realised_gate(settings, realised, str(version), before)
    move(settings, version, force=force)
    out.print(f"champion: version {version}" + (" (it already was; its export is in place)" if before == str(version) else f" (was {before})" if before else ""))
    out.print(f"next: `oppscore serve` picks it up within {settings.serving.reload_seconds:.0f} s; `oppscore evaluate --data DIR` compares versions")


def _realised_gate(settings: Settings, data: Path, version: str, champion: str) -> None:
    """`training.promotion.realised_gate`, its figures on the terminal; a promotion they do not support is refused."""
    from training.promotion import realised_gate

    got = realised_gate(_track_record(settings, data), version, champion, str(data))
    v, c = got.figures["version"], got.figures["champion"]
    low, high = got.gap_90
    show_table([{"version": f"v{version}", "auc": v["auc"], "log loss": v["log_loss"], "ece": v["ece"]}, {"version": f"champion v{champion}", "auc": c["auc"], "log loss": c["log_loss"], "ece": c["ece"]}],
               title=f"realised on the same {got.pairs:,} resolved scores of {got.deals:,} deals")
    said = f"log loss {v['log_loss']:.4f} against {c['log_loss']:.4f} (gap 90 % interval {low:+.4f} to {high:+.4f})"
    if not got.better:
        raise NotEnoughData(f"v{version} did not beat champion v{champion} beyond doubt on realised outcomes: {said}; not promoted (promote without --realised to move it anyway)")
    out.print(f"v{version} beat champion v{champion} on realised outcomes: {said}")


@app.command()
def replay(
    data: DataOpt,
    every: Annotated[str, typer.Option("--every", help="month or week")] = "month",
    since: Annotated[datetime | None, typer.Option("--since", parser=_when, metavar="TIME", help="the first date (default: the first by which 10 wins were recorded)")] = None,
    until: Annotated[datetime | None, typer.Option("--until", parser=_when, metavar="TIME", help="the last date (default: the export's end)")] = None,
    config: ConfigOpt = None,
) -> None:
    """The track record made from history: at each past date, train as `train` would on the export
    as it was known then, score the deals open then and forecast the next month, beside the
    baselines replayed the same way; recorded in the score history for `monitor`, /v1/monitor
    and the page. Nothing replayed is registered: no replayed model becomes champion. Run again,
    it carries on where it stopped."""
    from scoring.history import ScoreHistory
    from training import replay as replaying

    if every not in replaying.EVERY:
        raise typer.BadParameter(f"found {every!r}, expected one of {', '.join(replaying.EVERY)}", param_hint="--every")
    settings = _settings(config, data)
    now = utc_now()
    with steps("replay") as step:
        step("loading")
        validated = load_export(data, settings, now)
        when = replaying.dates(validated.tables, validated.stages, every, to_utc(since) if since else None, to_utc(until) if until else None)
        if not when:
            raise NotEnoughData(f"--data {data}: no {every} start between --since and --until to replay")
        made = replaying.replay(validated.tables, validated.stages, settings, ScoreHistory.of(settings), when, now, progress=step)
    record = _track_record(settings, data)
    rows = record.replayed[record.replayed["resolved"] > 0]
    show_table([{"date": f"{r.as_of:%Y-%m-%d}", "method": r.method, "deals": r.resolved, "won within H": r.won, "predicted": r.mean_predicted, "won": r.share_won,
                 "predicted ÷ won": r.ratio} for r in rows.itertuples()], title=f"replayed {len(when)} dates ({len(made)} now); resolved deals")
    out.print(escape(record.verdict["reasons"][-1]))
    out.print(f"next: `oppscore monitor --data {data} --out track-record.html` for the plots, or `oppscore serve --data {data}` for the page")
