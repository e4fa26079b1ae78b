"""Commands on exports: generate, import (and --into), partition, validate, features."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from engines.runner import EngineOptions
from features.errors import InputInvalid
from features.loading import table_path, write_export
from features.settings import project_name, settings_toml
from features.tables import TABLE_NAMES
from features.times import utc_now
from oppscore.commands.base import DEFAULT_ENGINE, AsOfOpt, ConfigOpt, DataOpt, TableOutOpt, _as_of, _export_span, _settings, _show_report, _where, app, engine_options, load_export
from oppscore.console import out, show_table, steps


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
    from crm.hubspot_import import import_hubspot
    from crm.maven_import import import_maven
    from crm.salesforce_import import import_salesforce, save_source

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


def _import_into(src: Path, into: Path) -> None:
    """`crm.salesforce_merge`, with its progress and what it changed on the terminal."""
    from crm.salesforce_merge import merge_into

    with steps("import salesforce --into") as step:
        done = merge_into(src, into, step)
    show_table([{"object": name, **counts} for name, counts in done.changes.items()], title=f"merged from {src}")
    show_table([{"table": name, "before": done.before.get(name, 0), "after": done.after.get(name, 0), "change": f"{done.after.get(name, 0) - done.before.get(name, 0):+,}"}
                for name in TABLE_NAMES], title=f"{into}: rows per table")
    if done.proposed is not None:
        out.print(f"[yellow]the stages changed[/yellow] with this export: {into / 'oppscore.toml'} is kept as it is; the stages as imported now are in {done.proposed}")
    out.print(f"merged {src} into {into}; next: oppscore score --data {into} --out scores.csv")


@app.command()
def partition(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="folder for part-00000/ … and the oppscore.toml")],
    n: Annotated[int, typer.Option("--partitions", min=1, help="how many partitions (by a hash of opportunity_id)")] = 8,
    config: ConfigOpt = None,
) -> None:
    """Split an export by opportunity into partitions for --engine dask: each a complete export of its deals."""

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
