"""Terminal output for the CLI: logging through rich, and progress for long steps."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
# piped or redirected, rich would wrap to 80 columns and cut numbers: give it room instead
# (COLUMNS still wins when set)
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
MONEY_WORDS = ("amount", "value", "expected", "p10", "p50", "p90", "actual", "error", "bias", "pipeline", "won_amount")
SHOWN_ROWS = 25


def setup_logging(verbose: bool = False) -> None:
    # Dask configures its loggers when imported, in this process and in every worker it starts
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "debug" if verbose else "warning")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False, log_time_format="%Y-%m-%d %H:%M:%S")],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "git", "matplotlib", "PIL", "distributed", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def steps(title: str) -> Iterator:
    """A spinner naming the current step on a terminal (a log line per step otherwise, so a
piped or scheduled run is never silent for long); logs the total time when it ends."""
    log = logging.getLogger("oppscore")
    started = time.perf_counter()
    state = {"name": None, "t": started}

    with console.status(f"{title}…") as status:

        def step(name: str) -> None:
            now = time.perf_counter()
            if state["name"]:
                log.debug("%s: %.1fs", state["name"], now - state["t"])
            state.update(name=name, t=now)
            status.update(f"{title}: {name}…")
            if not console.is_terminal:
                log.info("%s: %s…", title, name)

        yield step
    log.info("%s done in %.1fs", title, time.perf_counter() - started)


SHARES = {"conversion", "win_rate", "win_rate_after", "weight", "low", "high", "configured", "observed", "share", "p10_p90_coverage", "positive_rate", "inbound_share"}
HEADINGS = {"moved_on": "moved on", "lost_after": "lost after", "won_after": "won after", "win_rate_after": "won from here", "median_days": "median days",
            "p75_days": "P75 days", "p90_days": "P90 days", "p10_p90_coverage": "inside P10–P90", "per_week_did_not": "per week (stayed)",
            "per_week_moved_on": "per week (moved on)", "opportunity_id": "opportunity", "entered_at": "entered", "loss_reason": "loss reason"}
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?(Z|[+-]00:?00)?")


def heading(column: str) -> str:
    """A column's name as a manager reads it: `moved_on` → "moved on"."""
    return HEADINGS.get(column, column.replace("_", " "))


def cell(column: str, value: object) -> str:
    """Money with thousands separators and no decimals, counts as integers, shares as percents,
    days to one decimal, other numbers to three; times to the minute; missing values blank."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, str) and (m := _ISO.fullmatch(value)):
        return f"{m.group(1)} {m.group(2)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape(str(value))
    if column in SHARES and 0 <= value <= 1:
        return f"{100 * value:.1f} %"
    if column == "days" or column.endswith("_days"):
        return f"{value:,.1f}"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 2):
        return f"{int(value):,}"
    if any(word in column.lower() for word in MONEY_WORDS) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"


def show_table(rows: list[dict], title: str | None = None, total: int | None = None, hint: str | None = None) -> None:
    """A table on the terminal; `total` rows there were, of which `rows` are shown, and how to
    get them all (`hint`), said under it when some were left out."""
    if not rows:
        return
    table = Table(title=escape(title) if title else None)
    for col in rows[0]:
        values = [r.get(col) for r in rows if r.get(col) is not None]
        numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)  # mixed: text may wrap
        table.add_column(escape(heading(str(col))), justify="right" if numeric else "left", no_wrap=numeric)
    for row in rows:
        table.add_row(*(cell(str(k), v) for k, v in row.items()))
    out.print(table)
    if total is not None and total > len(rows):
        out.print(f"showing {len(rows):,} of {total:,}" + (f" — {hint} for all" if hint else ""))
