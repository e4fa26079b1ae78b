"""The `oppscore` command: thin functions over the library; exit 1 on bad input, 2 on misuse."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from features.contract import ExportInvalid, load_export, summary
from features.settings import ConfigInvalid, Settings, load_settings, settings_toml
from features.tables import to_utc
from oppscore.console import console, out, setup_logging, show_table, steps

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Opportunity scoring for CRM pipelines.")
log = logging.getLogger("oppscore")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="oppscore.toml to use (default: ./oppscore.toml, else inferred)")]
DataOpt = Annotated[Path, typer.Option("--data", help="export folder with opportunities, stage_history, activities")]
AsOfOpt = Annotated[datetime | None, typer.Option("--as-of", help="the time to look from (default: now); naive = UTC")]


class Fail(Exception):
    """Invalid input: print the message and exit 1."""


def _settings(config: Path | None, data: Path | None = None) -> Settings:
    """The config given, else the data folder's oppscore.toml, else ./oppscore.toml."""
    if config is None and data is not None and (data / "oppscore.toml").exists():
        config = data / "oppscore.toml"
    return load_settings(config)


def run(fn):
    """Turn the errors a user can fix into a message and exit code 1."""
    try:
        return fn()
    except (ExportInvalid, ConfigInvalid, Fail, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(1) from None


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
) -> None:
    """Write a synthetic CRM export with known signal, and its oppscore.toml."""
    from features.loading import write_export
    from features.synthetic import generate as make

    def go() -> None:
        if stages not in ("en", "zh"):
            raise Fail(f"--stages: found {stages!r}, expected en or zh")
        with steps("generate") as step:
            step("simulating pipelines")
            made = make(n=n, seed=seed, stages=stages)
            step("writing")
            write_export(made.tables, out_dir, fmt)
            (out_dir / "oppscore.toml").write_text(settings_toml(made.stages, made.segments), encoding="utf-8")
        t = made.tables
        log.info("wrote %d opportunities, %d stage rows, %d activities to %s", len(t.opportunities), len(t.stage_history), len(t.activities), out_dir)

    run(go)


@app.command("import")
def import_(
    kind: Annotated[str, typer.Argument(help="the export's source: maven")],
    src: Annotated[Path, typer.Argument(help="the folder of the source export")],
    out_dir: Annotated[Path, typer.Option("--out")],
) -> None:
    """Convert a known CRM export into the canonical tables (and an oppscore.toml)."""
    from features.adapters.maven import import_maven
    from features.loading import write_export

    def go() -> None:
        if kind != "maven":
            raise Fail(f"KIND: found {kind!r}, expected one of: maven")
        imported = import_maven(src)
        write_export(imported.tables, out_dir)
        (out_dir / "oppscore.toml").write_text(settings_toml(imported.stages, imported.segments), encoding="utf-8")
        show_table([{"": k, "count": v} for k, v in imported.report.items()], title=f"import {kind}")
        log.info("wrote the canonical tables to %s", out_dir)

    run(go)


@app.command()
def validate(data: DataOpt, config: ConfigOpt = None) -> None:
    """Check an export against the contract; list every problem (exit 1) or summarise it."""

    def go() -> None:
        settings = _settings(config, data)
        with steps("validate"):
            validated = load_export(data, settings)
        info = summary(validated)
        counts = info.pop("stage counts")
        show_table([{"": k, "value": v} for k, v in info.items()], title=f"{data}: valid")
        show_table([{"stage": k, "rows": v} for k, v in counts.items()])

    run(go)


@app.command()
def features(
    data: DataOpt,
    out_file: Annotated[Path, typer.Option("--out", help=".csv, .parquet or .json")],
    as_of: AsOfOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The feature frame of the opportunities open at --as-of."""
    from features.frame import build_features, make_spec, open_points
    from features.loading import write_table
    from features.pit_stats import PointInTimeStats

    def go() -> None:
        settings = _settings(config, data)
        with steps("features") as step:
            step("loading")
            validated = load_export(data, settings)
            t = to_utc(as_of) if as_of else pd.Timestamp.now(tz="UTC")
            tables = validated.tables
            step("point-in-time statistics")
            spec = make_spec(tables.as_of(t), validated.stages, settings.segments.columns)
            stats = PointInTimeStats(spec.stat_keys).fit(tables.as_of(t), validated.stages)
            points = open_points(tables, validated.stages, t)
            frame = build_features(tables, points, spec, stats, progress=step)
            step("writing")
            write_table(frame, out_file)
        log.info("%d open opportunities as of %s, %d features → %s", len(frame), t, len(spec.columns), out_file)

    run(go)


if __name__ == "__main__":
    app()
