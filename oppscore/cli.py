"""The `oppscore` command: thin functions over the library; exit 1 on bad input, 2 on misuse.

"Now" is read here, once per command, and passed down; the project's own errors (and only
those) become a message and exit code 1, in one place (`_Commands.invoke`).
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import logging
import shlex
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from typer.core import TyperGroup

from engines.runner import EngineOptions
from features.errors import InputInvalid, ModelNotFound, NotEnoughData, OppscoreError
from features.loading import find_table, table_path, write_export
from features.settings import Settings, load_settings, project_name, settings_toml
from features.tables import TABLE_NAMES
from features.times import to_utc, utc_now
from oppscore.console import console, out, setup_logging, show_table, steps


class _Commands(TyperGroup):
    """Every command's user-fixable failure (an `OppscoreError`) becomes its message and exit 1;
    anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except OppscoreError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True)  # a message may hold [brackets] (a config section)
            raise typer.Exit(1) from None


def load_export(folder: Path, settings: Settings, now: pd.Timestamp):
    """`features.contract.load_export`, imported when a command reads an export: pandera's
    import is a third of a command's start-up, and `--help` reads none."""
    from features.contract import load_export as read

    return read(folder, settings, now)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help="Opportunity scoring for CRM pipelines.")
log = logging.getLogger("oppscore")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="oppscore.toml to use (default: the --data folder's, else ./oppscore.toml, else stages inferred from the data)")]
DataOpt = Annotated[Path, typer.Option("--data", help="export folder with opportunities, stage_history, activities")]
def _when(text: str) -> datetime:
    """A time option in ISO 8601; a typo is named with the forms that are read."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"found {text!r}, expected a date or a time in ISO 8601: 2026-06-01, 2026-06-01T09:00 or 2026-06-01T09:00:00Z (naive = UTC)") from None


def _period_form(text: str) -> str:
    """--period in one of the forms read; anything else is misuse (exit 2), named with them."""
    import re

    from analytics.forecast import PERIOD_PATTERN, PERIODS_SAID

    if not re.fullmatch(PERIOD_PATTERN, text.strip()):
        raise typer.BadParameter(f"found {text!r}, expected {PERIODS_SAID}")
    return text.strip()


AsOfOpt = Annotated[datetime | None, typer.Option("--as-of", parser=_when, metavar="TIME", help="the time to look from, e.g. 2026-06-01 or 2026-06-01T09:00:00 (default: the export's end, the newest time in it; naive = UTC)")]
STALE_DAYS = 14  # an export older than this, looked at as of its end, is said to be
TableOutOpt = Annotated[Path, typer.Option("--out", help=".csv, .parquet or .json; with --engine dask also a folder (one Parquet file per partition)")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this process) or dask (a cluster: --scheduler, DASK_SCHEDULER_ADDRESS, or a local one)")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="tcp://host:8786 of an existing Dask scheduler (default: DASK_SCHEDULER_ADDRESS, else a LocalCluster)")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="LocalCluster workers (without a scheduler)")]
MemoryOpt = Annotated[str, typer.Option("--memory-limit", help="per LocalCluster worker; beyond it a worker spills to disk")]
DEFAULT_ENGINE = EngineOptions()
_ENGINE_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(DEFAULT_ENGINE, name), annotation=option)
    for name, option in (("engine", EngineOpt), ("scheduler", SchedulerOpt), ("workers", WorkersOpt), ("memory_limit", MemoryOpt))
]


def engine_options(command: Callable) -> Callable:
    """The four engine options, declared once for every command that reads partitions: the
    command itself takes one `engine: EngineOptions` and hands it on."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "engine"]

    @functools.wraps(command)
    def with_options(*args, **kwargs):
        options = EngineOptions(**{p.name: kwargs.pop(p.name, p.default) for p in _ENGINE_OPTIONS})
        return command(*args, engine=options, **kwargs)

    with_options.__signature__ = signature.replace(parameters=[*kept, *_ENGINE_OPTIONS])
    with_options.__annotations__ = {p.name: p.annotation for p in with_options.__signature__.parameters.values()}
    return with_options


def _partitioned(data: Path, engine: EngineOptions) -> bool:
    from features.partitions import partitions

    return engine.engine != "local" or partitions(data) != [data]


def _settings(config: Path | None, data: Path | None = None) -> Settings:
    """The config given, else the data folder's oppscore.toml, else ./oppscore.toml."""
    if config is None and data is not None and (data / "oppscore.toml").exists():
        config = data / "oppscore.toml"
    return load_settings(config)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    setup_logging(verbose)


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the export to")],
    n: Annotated[int, typer.Option(min=1, help="number of opportunities")] = 2000,
    seed: int = 0,
    stages: Annotated[str, typer.Option(help="stage names: en or zh")] = "en",
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    logging_style: Annotated[str, typer.Option("--logging", help="live; after-the-fact (deals created at late stages, won within days, lost ones lingering); late-losses (after-the-fact, and losses recorded weeks to months late, many in bulk clean-ups); or young-org (an org's first nine months: volume growing, a base rate moving up to 2x a month, stale deals never closed)")] = "live",
    span_days: Annotated[int, typer.Option("--span-days", min=1, help="days over which the deals are created, up to the export's end")] = 730,
    force: Annotated[bool, typer.Option("--force", help="write into a folder that already holds files (they are replaced)")] = False,
) -> None:
    """Write a synthetic CRM export with known signal, and its oppscore.toml (with a project
    name from the folder: its own model, champion and score history)."""
    from features.synthetic import generate as make

    if stages not in ("en", "zh"):
        raise InputInvalid(f"--stages: found {stages!r}, expected en or zh")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise InputInvalid(f"--out {out_dir}: the folder already holds files (another export?); pick an empty folder, or add --force to replace them")
    with steps("generate") as step:
        step("simulating pipelines")
        made = make(n=n, seed=seed, stages=stages, logging=logging_style, span_days=span_days)
        step("writing")
        write_export(made.tables, out_dir, fmt)
        (out_dir / "oppscore.toml").write_text(settings_toml(made.stages, made.segments, project=project_name(out_dir)), encoding="utf-8")
    t = made.tables
    out.print(f"wrote {len(t.opportunities):,} opportunities, {len(t.stage_history):,} stage rows and {len(t.activities):,} activities to {out_dir}, "
              f"and its oppscore.toml (project {project_name(out_dir)!r})")
    out.print(f"next: `oppscore validate --data {out_dir}`, then `oppscore train --data {out_dir}`")


@app.command("import")
def import_(
    kind: Annotated[str, typer.Argument(help="the export's source: salesforce, hubspot or maven")],
    src: Annotated[Path, typer.Argument(help="the folder of the source export")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder to write the canonical tables to")] = None,
    into: Annotated[Path | None, typer.Option("--into", help="salesforce: a folder imported before; SRC (a newer export, or only the rows changed since) is merged into it")] = None,
    attach_account_tasks: Annotated[bool, typer.Option(help="salesforce: attach tasks on an account to that account's deals")] = False,
    pipeline: Annotated[str | None, typer.Option(help="hubspot: the pipeline to import (default: the one with the most deals)")] = None,
    engagements: Annotated[Path | None, typer.Option(help="hubspot: the activities export (calls, e-mails, meetings, notes, tasks) with deal associations")] = None,
) -> None:
    """Convert a known CRM export into the canonical tables (and an oppscore.toml); with
    --into, merge a newer Salesforce export into a folder imported before."""
    from features.adapters.hubspot import import_hubspot
    from features.adapters.maven import import_maven
    from features.adapters.salesforce import import_salesforce, save_source

    importers = {
        "salesforce": lambda: import_salesforce(src, attach_account_tasks=attach_account_tasks),
        "hubspot": lambda: import_hubspot(src, pipeline=pipeline, engagements=engagements),
        "maven": lambda: import_maven(src),
    }
    if kind not in importers:
        raise InputInvalid(f"KIND: found {kind!r}, expected one of: {', '.join(importers)}")
    if (out_dir is None) == (into is None):
        raise typer.BadParameter("give --out (a new import) or --into (merge into an earlier one), one of the two", param_hint="--out/--into")
    if into is not None:
        if kind != "salesforce":
            raise InputInvalid(f"--into: merging is for Salesforce exports (record ids say which row replaces which); re-import the {kind} export whole with --out")
        _import_into(src, into)
        return
    with steps(f"import {kind}") as step:
        step("reading")
        imported = importers[kind]()
        step("writing")
        write_export(imported.tables, out_dir)
        if kind == "salesforce":
            save_source(imported.source, out_dir, {"attach_account_tasks": attach_account_tasks}, imported.tables)
        (out_dir / "oppscore.toml").write_text(settings_toml(imported.stages, imported.segments, header=getattr(imported, "header", ""), project=project_name(out_dir)), encoding="utf-8")
    _show_report(imported.report, f"import {kind}: what was kept and dropped")
    for note in getattr(imported, "notes", []):
        out.print(note)
    out.print(f"wrote the canonical tables and oppscore.toml to {out_dir}; next: oppscore validate --data {out_dir}")


def _show_report(report: dict, title: str) -> None:
    rows = []
    for name, value in report.items():
        if isinstance(value, dict):
            rows += [{"": f"{name}: {k}", "value": v} for k, v in value.items()] or [{"": name, "value": "none"}]
        else:
            rows.append({"": name, "value": value})
    show_table(rows, title=title)


def _import_into(src: Path, into: Path) -> None:
    """A newer export merged into an imported folder: the objects kept there with the newer
    rows laid over (by record id; deleted rows honoured), converted again, and the tables
    replaced only once the new ones are written; the folder's own oppscore.toml is kept."""
    import tomllib
    from concurrent.futures import ThreadPoolExecutor

    from features.adapters.salesforce import commit_source, import_objects, load_source, merge, read_objects, stage_source
    from features.settings import StageConfig

    with steps("import salesforce --into") as step, ThreadPoolExecutor(1) as background:
        step("reading what was imported before")
        older, kept = load_source(into)
        options, before = kept["options"], kept.get("rows", {})
        step(f"reading {src}")
        newer = read_objects(src, delta=True)
        step("merging")
        merged, changes = merge(older, newer)
        staged = background.submit(stage_source, merged, into, options)  # Parquet written by Arrow beside the conversion (two cores)
        step("converting")
        try:
            imported = import_objects(merged, f"{into} (merged with {src})", **options)
        except BaseException:
            shutil.rmtree(staged.result(), ignore_errors=True)
            raise
        step("writing")
        fresh = into / ".into.new"
        if fresh.exists():
            shutil.rmtree(fresh)
        write_export(imported.tables, fresh)
        for name in TABLE_NAMES:
            stale = find_table(into, name)
            made = find_table(fresh, name)
            if made is not None:
                made.replace(into / made.name)
            if stale is not None and (made is None or stale.name != made.name):
                stale.unlink()
        shutil.rmtree(fresh)
        commit_source(staged.result(), imported.tables)
    after = {name: len(imported.tables.frame(name)) for name in TABLE_NAMES}
    show_table([{"object": name, **counts} for name, counts in changes.items()], title=f"merged from {src}")
    show_table([{"table": name, "before": before.get(name, 0), "after": after.get(name, 0), "change": f"{after.get(name, 0) - before.get(name, 0):+,}"} for name in TABLE_NAMES],
               title=f"{into}: rows per table")
    config_path = into / "oppscore.toml"
    proposed = settings_toml(imported.stages, imported.segments, header=imported.header, project=project_name(into))
    if not config_path.exists():
        config_path.write_text(proposed, encoding="utf-8")
    else:
        try:
            kept = tomllib.loads(config_path.read_text(encoding="utf-8")).get("stages")
            same = kept is not None and StageConfig(**kept).model_dump() == imported.stages.model_dump()
        except (tomllib.TOMLDecodeError, ValueError):  # a config the user broke: the tables are merged, its stages cannot be compared
            same = False
        if not same:
            (into / "oppscore.imported.toml").write_text(proposed, encoding="utf-8")
            out.print(f"[yellow]the stages changed[/yellow] with this export: {into / 'oppscore.toml'} is kept as it is; the stages as imported now are in {into / 'oppscore.imported.toml'}")
    out.print(f"merged {src} into {into}; next: oppscore score --data {into} --out scores.csv")


@app.command()
def partition(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for part-00000/ … and the oppscore.toml")],
    n: Annotated[int, typer.Option("--partitions", min=1, help="how many partitions (by a hash of opportunity_id)")] = 8,
    config: ConfigOpt = None,
) -> None:
    """Split an export by opportunity into partitions for --engine dask: each a complete export of its deals."""
    import shutil

    from features.partitions import split_export

    settings = _settings(config, data)
    with steps("partition") as step:
        step("loading")
        validated = load_export(data, settings, utc_now())
        step("writing")
        folders = split_export(validated.tables, out_dir, n)
    source = config or data / "oppscore.toml"
    if source.exists():
        shutil.copyfile(source, out_dir / "oppscore.toml")
    out.print(f"wrote {len(folders)} partitions of {len(validated.tables.opportunities):,} opportunities to {out_dir}; next: `oppscore score --data {out_dir} --out scores/ --engine dask`")


@app.command()
def validate(data: DataOpt, config: ConfigOpt = None) -> None:
    """Check an export against the contract; list every problem (exit 1) or summarise it."""

    settings = _settings(config, data)
    with steps("validate"):
        validated = load_export(data, settings, utc_now())
    from features.contract import recording_warnings, summary

    info = summary(validated)
    counts = info.pop("stage counts")
    show_table([{"": k, "value": v} for k, v in info.items()], title=f"{data}: valid")
    show_table([{"stage": k, "rows": v} for k, v in counts.items()])
    for said in recording_warnings(validated.tables, validated.stages):
        out.print(f"[yellow]warning:[/yellow] {escape(said)}")
    out.print(f"next: `oppscore train --data {data}`")


def _as_of(given: datetime | None, span: tuple[pd.Timestamp, pd.Timestamp], now: pd.Timestamp) -> pd.Timestamp:
    """--as-of, else the export's end: what it knew when it was taken. Looked at as of today, an
    export taken weeks ago makes every deal look stalled (nothing recorded since); said when
    today is STALE_DAYS past it. Before the first deal nothing was open (InputInvalid); after
    the export's end, every deal looks quiet since (said)."""
    start, end = span
    if given is None:
        if now - end > pd.Timedelta(days=STALE_DAYS):
            log.warning("as of the export's end, %s, %d days before today (nothing after it is in the export); `--as-of` picks another time", f"{end:%Y-%m-%d %H:%M} UTC", (now - end).days)
        return end
    t = to_utc(given)
    if t < start:
        raise InputInvalid(f"--as-of {t:%Y-%m-%d %H:%M} UTC: before the export's first deal (created {start:%Y-%m-%d %H:%M} UTC): nothing was open then; "
                           f"pick a time from {start:%Y-%m-%d} to {end:%Y-%m-%d}")
    if t > end:
        log.warning("--as-of %s is %d days after the export's end (%s): the export knows nothing after it, so every deal looks as if nothing happened since "
                    "(no activity, no stage change); a newer export scores what really happened", f"{t:%Y-%m-%d %H:%M} UTC", (t - end).days, f"{end:%Y-%m-%d %H:%M} UTC")
    return t


@app.command()
@engine_options
def features(
    data: DataOpt,
    out_file: TableOutOpt,
    as_of: AsOfOpt = None,
    config: ConfigOpt = None,
    engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """The feature frame of the opportunities open at --as-of."""
    from engines import partitioned
    from engines.runner import runner
    from features.loading import write_table

    settings = _settings(config, data)
    now = utc_now()
    if out_file.suffix:
        table_path(out_file)
    with steps("features") as step, runner(engine, progress=step) as run:
        t = _as_of(as_of, _export_span(run, data, settings, now), now)
        folder = out_file if not out_file.suffix else None
        spec, frame = partitioned.features(run, data, settings, now, t, out_dir=folder)
        if folder is None:
            step("writing")
            write_table(frame, out_file)
    rows = frame if isinstance(frame, int) else len(frame)
    out.print(f"{rows:,} open opportunities as of {t:%Y-%m-%d %H:%M} UTC, {len(spec.columns)} features → {out_file}{_where(data, engine)}")


def _export_span(run, data: Path, settings: Settings, now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """When the export's first deal was created and its newest time (every command's default as-of)."""
    from engines import partitioned

    span = partitioned.export_span(run, data, settings, now)
    if span is None:
        raise NotEnoughData(f"--data {data}: no opportunity in any partition")
    return span


def _where(data: Path, engine: EngineOptions) -> str:
    """Said after a result of a partitioned export or another engine; nothing for a whole export here."""
    return f" ({engine.engine} engine)" if _partitioned(data, engine) else ""


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


@app.command()
@engine_options
def score(
    data: DataOpt,
    out_file: TableOutOpt,
    as_of: AsOfOpt = None,
    shadow: Annotated[str | None, typer.Option("--shadow", help="a registered version that scores beside the champion: its scores are recorded for `oppscore monitor` (default: [serving] shadow)")] = None,
    record_past_end: Annotated[bool, typer.Option("--record-past-end", help="record the run in the score history even when --as-of lies after the export's end")] = False,
    config: ConfigOpt = None,
    engine: EngineOptions = DEFAULT_ENGINE,
) -> None:
    """Score every open opportunity with the champion; highest win probability first. Each run
    is recorded in the score history with the drift it measured (`oppscore monitor`); a run as
    of a time after the export's end is not (what it says is not what the export knew), unless
    --record-past-end."""
    from engines import partitioned
    from engines.runner import runner
    from features.loading import write_table
    from scoring.history import RunFacts
    from scoring.store import load_champion, load_version

    settings = _settings(config, data)
    shadow = shadow or settings.serving.shadow
    folder = out_file if not out_file.suffix else None  # a folder: one Parquet file per partition, for exports too large to gather
    if folder is None:
        table_path(out_file)  # before any work: a command that fails on its output records nothing
    now = utc_now()
    with steps("score") as step, runner(engine, progress=step) as run:
        step("loading")
        ids, span = partitioned.opportunities(run, data, settings, now)
        if span is None:
            raise NotEnoughData(f"--data {data}: no opportunity in any partition")
        loaded = load_champion(settings)
        shadow_bundle = None
        if shadow is not None and str(shadow) != str(loaded.version):
            step(f"loading shadow v{shadow}")
            shadow_bundle = load_version(settings, str(shadow))
        at = _as_of(as_of, span, now)
        past_end = at > span[1] and not record_past_end
        step("reading score history")
        history, previous = _history_for(settings, ids, at)
        step("scoring")
        done = partitioned.score(run, data, settings, now, at, loaded.bundle, out_dir=folder, previous=previous, shadow=shadow_bundle)
    show_table([{"opportunities": k, "count": v} for k, v in done.counts.items() if v], title=f"{len(ids):,} opportunities in the export, as of {at:%Y-%m-%d %H:%M} UTC{_where(data, engine)}")
    if done.unknown_stages:
        out.print(f"[yellow]not scored:[/yellow] {done.counts['in a stage the model does not know']} deals in stages champion v{loaded.version} was not trained on: {', '.join(done.unknown_stages[:10])}; retrain on this export (`oppscore train --data {data}`)")
    if done.rows == 0:
        raise NotEnoughData(f"--data {data}: no opportunity was open at {at:%Y-%m-%d %H:%M} UTC in a stage the model knows; nothing scored, {out_file} not written")
    facts = RunFacts.of(loaded.bundle, drift=done.drift)
    if past_end:
        history = None  # what it says is not what the export knew: not a run for the track record
    if done.table is not None:
        write_table(done.table.drop(columns=["factors"]).assign(as_of=done.table["as_of"].astype(str)), out_file)
        recorded = _record(history, done.table, now, loaded.version, facts)  # only once the scores are written
    else:
        from features.partitions import partitions

        recorded = _record_files(history, partitioned.outs(partitions(data), folder), now, loaded.version, facts)  # this run's files, not an older run's left in the folder
    if done.shadow is not None:
        kept = _record(history, done.shadow, now, str(shadow), RunFacts.of(shadow_bundle, role="shadow"))
        out.print(f"shadow v{shadow} scored the same {len(done.shadow):,} deals: " + (f"{kept:,} scores recorded beside the champion's" if kept is not None else "not recorded (the score history did not answer)"))
    elif shadow is not None:
        out.print(f"shadow v{shadow} is the champion: nothing scored beside it")
    _say_drift(done.drift, settings)
    if done.table is not None:
        _say_top_and_moved(done.table)
    kept = "not kept in the score history (--as-of is after the export's end; --record-past-end keeps it)" if past_end else _kept(recorded)
    out.print(f"scored {done.rows:,} open opportunities with champion v{loaded.version} (from the {loaded.source}) → {out_file}; {kept}")
    out.print(f"next: `oppscore serve --data {data}` shows them on the managers' page")


def _say_top_and_moved(table: pd.DataFrame) -> None:
    """The ten highest, and the deals whose score moved 5 points or more since the last run."""
    from scoring.explain import changes_in_words

    show_table(
        [{"opportunity": r.opportunity_id, "stage": r.stage, "win": r.win_probability, "stall": "not known" if r.stall_risk != r.stall_risk else r.stall_risk, "grade": r.grade,
          "change": "new" if r.previous_score != r.previous_score else f"{r.score_change:+.0f}", "top reason": r.top_factors[0]["sentence"] if r.top_factors else ""}
         for r in table.head(10).itertuples()],
        title=f"top 10 of {len(table):,}",
    )
    changed = table[table["score_change"].abs() >= 5].sort_values("score_change", key=abs, ascending=False)
    if len(changed):
        show_table([{"opportunity": r.opportunity_id, "score": r.score, "change": f"{r.score_change:+.0f}", "why": changes_in_words(r.why_changed)} for r in changed.head(10).itertuples()],
                   title=f"moved 5 points or more since the last run: {len(changed):,}")


def _history_for(settings: Settings, ids, at: pd.Timestamp):
    """The score history and each deal's last recorded score; no history and no previous score
    when its database does not answer: the scores are worth having without the change since
    the last run."""
    from scoring.database import DatabaseUnavailable
    from scoring.history import PREVIOUS_COLUMNS, ScoreHistory

    try:
        history = ScoreHistory.of(settings)
        return history, history.previous(ids, at)
    except DatabaseUnavailable as exc:
        log.warning("score history skipped: %s", exc)
        return None, pd.DataFrame(columns=PREVIOUS_COLUMNS, index=pd.Index([], dtype=object, name="opportunity_id"))  # every deal new


def _kept(recorded: int | None) -> str:
    return f"{recorded:,} scores kept in the score history" if recorded is not None else "[yellow]the score history was skipped[/yellow] (its database did not answer: see the warning above)"


def _say_drift(measured: dict, settings: Settings) -> None:
    """One line when this run's pipeline drifted from the training reference or a family went
    silent: seen at the run, not only in `oppscore monitor`."""
    if not measured:
        return
    from scoring.drift import drifted as drifted_features
    from scoring.drift import silent

    feats = measured["features"]
    drifted = drifted_features(measured, settings.monitor.psi_alert)
    quiet = silent(measured, settings.monitor.silent_share)
    if quiet:
        out.print(f"[yellow]went silent:[/yellow] {', '.join(quiet[:5])} carry no values in this pipeline, where training saw them: is the feed still arriving? (`oppscore monitor`)")
    if drifted:
        shown = ", ".join(f"{c} (PSI {feats[c]['psi']:.2f})" for c in drifted[:4])
        out.print(f"[yellow]drift:[/yellow] {shown} against the training reference (`oppscore monitor`)")


def _record(history, scored: pd.DataFrame, now: pd.Timestamp, version: str, run=None) -> int | None:
    from scoring.database import DatabaseUnavailable

    if history is None:
        return None
    try:
        return history.record(scored, now, version, "batch", run)
    except DatabaseUnavailable as exc:
        log.warning("score history skipped: %s", exc)
        return None


OutOpt = Annotated[Path | None, typer.Option("--out", help=".json, .csv or .html (a report with plots); default: the terminal")]


def _record_files(history, files: list[Path], now: pd.Timestamp, version: str, run) -> int | None:
    """The scores written per partition, recorded as one run a file at a time (a folder is for
    exports too large to gather)."""
    from scoring.database import DatabaseUnavailable

    if history is None:
        return None

    def pieces():
        for file in files:
            scored = pd.read_parquet(file, columns=["opportunity_id", "as_of", "stage", "win_probability", "stall_risk", "score", "grade", "factors"])
            scored["as_of"] = pd.to_datetime(scored["as_of"], utc=True, format="ISO8601")
            scored["factors"] = scored["factors"].map(lambda text: json.loads(text) if isinstance(text, str) else text)
            yield scored

    try:
        return history.record_pieces(pieces(), now, version, "batch", run)
    except DatabaseUnavailable as exc:
        log.warning("score history skipped: %s (none of this run's scores were recorded)", exc)
        return None


CRMS = ("salesforce", "hubspot")


@app.command("export-scores")
def export_scores(
    crm: Annotated[str, typer.Argument(help="the CRM: salesforce or hubspot")],
    scores: Annotated[Path, typer.Option("--scores", help="the scores `oppscore score --out F` wrote (.csv, .parquet or .json)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the upsert file and the field definitions")],
    push: Annotated[bool, typer.Option("--push", help="also write them into the CRM (Salesforce: SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN; HubSpot: HUBSPOT_ACCESS_TOKEN)")] = False,
    config: ConfigOpt = None,
) -> None:
    """Scores as the CRM's own upsert file with the fields' definitions, optionally pushed; the
    rows a push could not write are listed by record id and reason (and the exit code is 1)."""
    from scoring.crm import hubspot, salesforce
    from scoring.crm.scores_file import read_scores

    if crm not in CRMS:
        raise InputInvalid(f"CRM: found {crm!r}, expected one of: {', '.join(CRMS)}")
    settings = _settings(config)
    frame = read_scores(scores)
    module = salesforce if crm == "salesforce" else hubspot
    written = module.write_files(frame, settings.crm, out_dir, scores.name)
    out.print(f"wrote {len(frame):,} scores for {crm} → {written[0]}; the fields' definitions beside it ({len(written) - 1} files)")
    if crm == "salesforce":
        project = shlex.quote(str(out_dir / "salesforce-metadata"))  # sf reads sfdx-project.json from the folder it runs in
        out.print(f"deploy the fields once: `cd {project} && sf project deploy start --source-dir force-app --target-org ORG`, "
                  f"then assign the permission set {salesforce.PERMISSION_SET} to the user who upserts")
    else:
        out.print(f"create the properties once: POST {out_dir / 'property-group.json'} to /crm/v3/properties/deals/groups and {out_dir / 'properties.json'} to /crm/v3/properties/deals/batch/create")
    if not push:
        return
    pushed = _push(crm, settings, frame, module)
    out.print(f"{crm}: {pushed.written:,} of {pushed.sent:,} records written ({pushed.reference})")
    if len(pushed.failed):
        failures = out_dir / "push-failures.csv"
        pushed.failed.to_csv(failures, index=False)
        show_table([{"record": r.record_id, "why": r.error} for r in pushed.failed.head(20).itertuples()], title=f"{len(pushed.failed):,} records not written (all in {failures})")
        raise typer.Exit(1)


def _refresh(url: str, token, client_id: str | None, secret):
    """The OAuth refresh grant, when its refresh token and client id are in the environment."""
    from scoring.crm.calls import Refresh

    if token is None or not client_id:
        return None
    return Refresh(url, token.get_secret_value(), client_id, secret.get_secret_value() if secret is not None else None)


def _push(crm: str, settings: Settings, frame: pd.DataFrame, module):
    from scoring.crm.hubspot import BatchUpdate
    from scoring.crm.salesforce import BulkApi

    with steps(f"push to {crm}") as step:
        if crm == "salesforce":
            if not settings.salesforce_instance_url or settings.salesforce_access_token is None:
                raise InputInvalid("--push to Salesforce needs SALESFORCE_INSTANCE_URL (https://yourorg.my.salesforce.com) and SALESFORCE_ACCESS_TOKEN in the environment "
                                   "(`sf org display --target-org ORG --json` prints both)")
            rows = module.upsert_frame(frame, settings.crm)
            refresh = _refresh(f"{settings.salesforce_instance_url.rstrip('/')}/services/oauth2/token", settings.salesforce_refresh_token,
                               settings.salesforce_client_id, settings.salesforce_client_secret)
            api = BulkApi(settings.salesforce_instance_url, settings.salesforce_access_token.get_secret_value(), settings.crm.salesforce_api_version,
                          settings.crm.poll_seconds, settings.crm.push_timeout_seconds, refresh)
        else:
            if settings.hubspot_access_token is None:
                raise InputInvalid("--push to HubSpot needs HUBSPOT_ACCESS_TOKEN in the environment (a private app's token with the crm.objects.deals.write scope)")
            rows = module.import_frame(frame, settings.crm, empty_reasons="")  # a batch update empties the property with ""
            refresh = _refresh(f"{settings.crm.hubspot_base_url.rstrip('/')}/oauth/v1/token", settings.hubspot_refresh_token,
                               settings.hubspot_client_id, settings.hubspot_client_secret)
            api = BatchUpdate(settings.crm.hubspot_base_url, settings.hubspot_access_token.get_secret_value(), refresh=refresh)
        return api.push(rows, progress=step)


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
    """Conversion, dwell, stalled deals, loss reasons, activities that go with progress, segments, won-back deals."""
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


def _realised_gate(settings: Settings, data: Path, version: str, champion: str) -> None:
    """Refuse a promotion the realised outcomes do not support, saying the figures."""
    from analytics.track_record import compare

    record = _track_record(settings, data)
    got = compare(record.scores, version, champion)
    if not got["pairs"]:
        raise NotEnoughData(f"--realised {data}: no resolved score of v{version} beside one of champion v{champion} on the same deal and date; score with `--shadow {version}` and wait for outcomes")
    v, c = got["version"], got["champion"]
    low, high = got["gap_90"] or (float("nan"), float("nan"))
    show_table([{"version": f"v{version}", "auc": v["auc"], "log loss": v["log_loss"], "ece": v["ece"]}, {"version": f"champion v{champion}", "auc": c["auc"], "log loss": c["log_loss"], "ece": c["ece"]}],
               title=f"realised on the same {got['pairs']:,} resolved scores of {got['deals']:,} deals")
    if not got["better_beyond_doubt"]:
        raise NotEnoughData(f"v{version} did not beat champion v{champion} beyond doubt on realised outcomes: log loss {v['log_loss']:.4f} against {c['log_loss']:.4f} "
                            f"(gap 90 % interval {low:+.4f} to {high:+.4f}); not promoted (promote without --realised to move it anyway)")
    out.print(f"v{version} beat champion v{champion} on realised outcomes: log loss {v['log_loss']:.4f} against {c['log_loss']:.4f} (gap 90 % interval {low:+.4f} to {high:+.4f})")


def _track_record(settings: Settings, data: Path):
    from analytics.track_record import track_record
    from scoring.database import DatabaseUnavailable
    from scoring.history import ScoreHistory

    validated = load_export(data, settings, utc_now())
    try:
        history = ScoreHistory.of(settings)
        runs, scores, forecasts = history.runs(), history.scores(), history.forecasts()
    except DatabaseUnavailable as exc:
        raise NotEnoughData(f"the track record needs the score history: {exc}") from None
    return track_record(runs, scores, forecasts, validated.tables, validated.stages, settings.monitor)


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


def _record_forecast(settings: Settings, f, version: str | None) -> None:
    """Every forecast is recorded, for its track record once its period has passed."""
    from scoring.database import DatabaseUnavailable
    from scoring.history import ScoreHistory

    try:
        ScoreHistory.of(settings).record_forecast(f.methods, utc_now(), f.as_of, f.period, f.open_deals, version, "batch")
    except DatabaseUnavailable as exc:
        log.warning("forecast not recorded in the score history: %s", exc)


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
    from analytics.forecast import backtest, backtest_summary, in_order, parse_period, verdict
    from analytics.forecast import forecast as run_forecast
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
    methods = replayed.in_order(f.methods) if replayed.enough else in_order(f.methods, summary)  # the replayed record first: out of sample
    said = replayed.said(methods, window) + [f"in today's backtest: {line}" if replayed.enough else line for line in verdict(summary)]
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
    from scoring.database import DatabaseUnavailable
    from scoring.history import ScoreHistory

    try:
        forecasts = ScoreHistory.of(settings).forecasts()
    except DatabaseUnavailable as exc:
        log.warning("the replayed record could not be read: %s", exc)
        forecasts = pd.DataFrame()
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


def _serve(settings: Settings, host: str, port: int, workers: int, data: Path | None) -> None:
    import os

    import uvicorn

    # MLflow retries an unreachable server with backoff for minutes by default; a service that
    # can fall back to its exported bundle should find out in seconds (an operator may override)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # the export is made to follow the registry by each worker's model holder, in the background:
    # a registry that hangs must not keep the service from listening (serving.holder)
    if not settings.api_keys:
        key, where = _api_key(settings)
        os.environ["OPPSCORE_API_KEYS"] = key
        settings = settings.model_copy(update={"api_keys": [key]})
        console.print(f"[yellow]no OPPSCORE_API_KEYS set:[/yellow] the key is [bold]{key}[/bold] ({where})")
    _say_other_champions(settings)
    if workers > 1:  # each worker builds its own app from the environment
        # one thread per worker: LightGBM's OpenMP threads in every worker would contend for the
        # same cores and spin while they wait (an operator's own OMP_NUM_THREADS is kept)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ["OPPSCORE_SERVE_CONFIG"] = str(settings.config_path or "")
        if data is not None:
            os.environ["OPPSCORE_SERVE_DATA"] = str(data)
        with _metrics_across_workers(workers):
            uvicorn.run("serving.main:app_from_environment", factory=True, host=host, port=port, workers=workers, log_level="warning", http=PROTOCOL)
        return
    from serving.app import create_app
    from serving.protocol import DeadlineProtocol

    DeadlineProtocol.seconds = settings.serving.request_seconds
    uvicorn.run(create_app(settings, data=data), host=host, port=port, log_level="warning", http=DeadlineProtocol)


def _say_other_champions(settings: Settings) -> None:
    """Started under a project with no champion while other projects have one (trained on an
    export whose config names its project, then `serve` without `--data`): name them and the
    command that serves each, rather than leave the service waiting for a model that will not come.
    Asked of a local registry only: a remote one is the service's to ask, in the background."""
    from scoring.store import champion_version, registry_file
    from training.registry import other_champions

    if registry_file(settings) is None or settings.champion_dir.exists():
        return
    try:
        if champion_version(settings) is not None:
            return
    except Exception:  # noqa: BLE001 - the service will say what it finds
        return
    others = other_champions(settings)
    if others:
        out.print(f"[yellow]no champion for {settings.model_name}[/yellow] (this project: {settings.project.name or 'none named'}); champions of other projects here:")
        for c in others:
            how = f"`oppscore serve --data {shlex.quote(c.data)}`" if c.data and Path(c.data).is_dir() else f"`oppscore serve --config DIR/oppscore.toml` (the export's config naming {c.model_name.removeprefix('oppscore-')})"
            out.print(f"  {c.model_name} v{c.version}, trained on {c.data or 'an export'}: {how}")


PROTOCOL = "serving.protocol:DeadlineProtocol"  # uvicorn's HTTP protocol, with a deadline for a request to arrive


@contextmanager
def _metrics_across_workers(workers: int):
    """Under several workers, each writes its Prometheus figures to one folder that a scrape
    reads whole (prometheus_client's multiprocess mode), made empty for this run and removed
    after it; an operator's own PROMETHEUS_MULTIPROC_DIR is used as it is."""
    import os
    import tempfile

    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="oppscore-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


class DbAction(StrEnum):
    upgrade = "upgrade"
    status = "status"


@app.command("db")
def db(action: Annotated[DbAction, typer.Argument(help="upgrade: bring the schema up to date; status: the revision it is at")] = DbAction.status, config: ConfigOpt = None) -> None:
    """The score history's and events' database (OPPSCORE_DATABASE_URL, or SQLite under the home):
    `upgrade` brings its schema to the latest revision, once, under a lock that holds across
    processes (run it before a team's services start on a shared PostgreSQL; each process also
    does it once at start). A database an older oppscore left half-migrated is repaired, or
    named with what to do."""
    from scoring.database import Database
    from scoring.history import database_of

    settings = _settings(config)
    where = settings.database_url or settings.history_url
    if action is DbAction.status and settings.database_url is None and not (settings.home / "history.db").exists():
        out.print(f"no database yet at {where}: `oppscore score`, `oppscore serve` or `oppscore db upgrade` makes it")
        return
    database = database_of(settings) if action is DbAction.upgrade else Database(settings.history_url)
    out.print(f"{_safe_url(database.engine)}: schema at revision {database.head()}" + (" (brought up to date)" if action is DbAction.upgrade else ""))


def _safe_url(engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    data: Annotated[Path | None, typer.Option("--data", help="an export to show managers at / (optional)")] = None,
    config: ConfigOpt = None,
) -> None:
    """The HTTP service: POST /v1/score for the CRM, a page for managers at /."""

    if (holder := _port_holder(host, port)) is not None:
        raise InputInvalid(f"--port {port}: {host}:{port} is in use by {holder}; stop it or pass --port")
    settings = _settings(config, data)
    out.print(f"oppscore on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    _serve(settings, host, port, workers, data)


def _port_holder(host: str, port: int) -> str | None:
    """None when (host, port) can be bound; else who holds it, as far as this user may see."""
    import socket

    import psutil

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"process {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return "another process"


def _demo_request(validated, bundle) -> dict:
    """A representative open deal: the one whose score sits at the median of the open pipeline,
    sent as the page sees it (its record, stage history, activities and field history as of the
    export's end), so the curl answers the score the page shows (tested)."""
    from scoring.score import score_open

    tables = validated.tables
    scored = score_open(bundle, tables, tables.end, with_factors=False)
    pick = scored.iloc[(scored["score"] - scored["score"].median()).abs().argsort().iloc[0]]
    return {"as_of": tables.end.isoformat(), "opportunities": [_deal_payload(tables, pick["opportunity_id"], bundle.spec.segment_columns)]}


def _deal_payload(tables, oid: str, segments: list[str]) -> dict:
    """One deal of an export as POST /v1/score takes it: everything the export holds of it."""
    opp = tables.opportunities.set_index("opportunity_id").loc[oid]
    record = {"opportunity_id": oid, "created_at": opp["created_at"].isoformat(), "amount": float(opp["amount"])}
    for col in ("account_id", "owner_id", "team", *segments):
        if col in opp and isinstance(opp[col], str):
            record[col] = opp[col]
    if "expected_close_date" in opp and pd.notna(opp["expected_close_date"]):
        record["expected_close_date"] = pd.Timestamp(opp["expected_close_date"]).isoformat()
    hist = tables.stage_history[tables.stage_history["opportunity_id"] == oid]
    record["stage_history"] = [{"stage": st, "entered_at": t.isoformat()} for st, t in zip(hist["stage"], hist["entered_at"], strict=True)]
    acts = tables.activities[tables.activities["opportunity_id"] == oid]
    record["activities"] = [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items() if k != "opportunity_id" and isinstance(v, (str, pd.Timestamp))}
                            for row in acts.to_dict("records")]
    changes = tables.field_history[tables.field_history["opportunity_id"] == oid]
    record["field_history"] = [{"field": f, "value": v, "changed_at": t.isoformat()} for f, v, t in zip(changes["field"], changes["value"], changes["changed_at"], strict=True)]
    return record


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--folder", help="where the demo export is written")] = Path("demo-data"),
    n: Annotated[int, typer.Option(min=200)] = 3000,
    host: str = "127.0.0.1",
    port: int = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="stop after training (for scripts)")] = False,
) -> None:
    """The main job on embedded defaults: demo data, training, the champion, the service on localhost.
    Run again, it reuses the champion and the key when the data did not change."""
    import json

    from features.synthetic import generate as make
    from scoring.store import champion_version, load_version

    if not no_serve and (holder := _port_holder(host, port)) is not None:
        raise InputInvalid(f"--port {port}: {host}:{port} is in use by {holder}; stop it (an earlier `make demo`?) or pass --port")
    with steps("demo data") as step:
        step("generating")
        made = make(n=n, seed=0)
        write_export(made.tables, folder)
        (folder / "oppscore.toml").write_text(settings_toml(made.stages, made.segments), encoding="utf-8")
    settings = _settings(None, folder)
    current = champion_version(settings)
    champion = load_version(settings, current) if current is not None else None
    if champion is not None and champion.metadata.get("data_fingerprint") == made.tables.fingerprint():
        out.print(f"champion v{current} was trained on these same demo data: reusing it (`oppscore train --data {folder}` retrains)")
        validated = load_export(folder, settings, utc_now())
    else:
        validated = _train_and_register(folder, settings, None, title="demo training")  # what it trained on: the export's tables
        champion = load_version(settings, champion_version(settings))
    _demo_replay(folder, settings)
    out.print(f"next: `oppscore score --data {folder} --out scores.csv`, or the page and the API below")
    if no_serve:
        return
    key, where = _api_key(settings)
    settings = settings.model_copy(update={"api_keys": [key]})
    body = json.dumps(_demo_request(validated, champion), ensure_ascii=False)
    # plain echo, not rich: the curl line must stay one line to be pasted
    typer.echo(f"\nThe service: http://{host}:{port}/  (managers' page; API docs at /docs)")
    typer.echo(f"API key: {key}  ({where})")
    typer.echo(f"Try:\n  curl -s -X POST http://{host}:{port}/v1/score -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'\n")
    _serve(settings, host, port, 1, folder)


DEMO_REPLAY_MONTHS = 6


def _demo_replay(folder: Path, settings: Settings) -> None:
    """The demo's track record from its own history: its last six months replayed (once; run
    again, what is recorded is kept), so the page shows how the scores did from the first load."""
    from scoring.history import ScoreHistory
    from training import replay as replaying

    with steps("demo replay") as step:
        step("loading")
        validated = load_export(folder, settings, utc_now())
        tables = validated.tables
        since = tables.end - pd.DateOffset(months=DEMO_REPLAY_MONTHS)
        replaying.replay(tables, validated.stages, settings, ScoreHistory.of(settings), replaying.dates(tables, validated.stages, "month", since=since), utc_now(), progress=step)


def _api_key(settings: Settings) -> tuple[str, str]:
    """The key to serve with: OPPSCORE_API_KEYS' first, else one kept under OPPSCORE_HOME
    (made once, readable by this user only), so a second demo or serve keeps the same key."""
    import secrets

    if settings.api_keys:
        return settings.api_keys[0].get_secret_value(), "from OPPSCORE_API_KEYS"
    kept = settings.home / "api_key"
    if kept.exists():
        return kept.read_text(encoding="utf-8").strip(), f"kept in {kept}"
    settings.home.mkdir(parents=True, exist_ok=True)
    key = "osk_" + secrets.token_urlsafe(24)
    kept.touch(mode=0o600)
    kept.write_text(key, encoding="utf-8")
    return key, f"made once and kept in {kept}; set OPPSCORE_API_KEYS to choose your own"


if __name__ == "__main__":
    app()
