"""What every command shares: the app and its error policy, the common options, settings and time."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from typer.core import TyperGroup

from engines.runner import EngineOptions
from features.errors import InputInvalid, NotEnoughData, OppscoreError
from features.settings import Settings, load_settings
from features.times import to_utc, utc_now
from oppscore.console import console, setup_logging, show_table


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


def _show_report(report: dict, title: str) -> None:
    rows = []
    for name, value in report.items():
        if isinstance(value, dict):
            rows += [{"": f"{name}: {k}", "value": v} for k, v in value.items()] or [{"": name, "value": "none"}]
        else:
            rows.append({"": name, "value": value})
    show_table(rows, title=title)


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


OutOpt = Annotated[Path | None, typer.Option("--out", help=".json, .csv or .html (a report with plots); default: the terminal")]


def _track_record(settings: Settings, data: Path):
    """The track record of this project's score history against the export in `data`."""
    from analytics.track_record import of_history
    from scoring.history import ScoreHistory

    validated = load_export(data, settings, utc_now())
    return of_history(ScoreHistory.of(settings), validated.tables, validated.stages, settings.monitor)
