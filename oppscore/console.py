"""Terminal output for the CLI: logging through rich, and progress for long steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
out = Console()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def steps(title: str) -> Iterator:
    """A spinner naming the current step; logs each step's time when it ends."""
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

        yield step
    log.info("%s done in %.1fs", title, time.perf_counter() - started)


def show_table(rows: list[dict], title: str | None = None) -> None:
    if not rows:
        return
    table = Table(title=escape(title) if title else None)
    for col in rows[0]:
        table.add_column(escape(str(col)))
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else escape(str(v)) for v in row.values()))
    out.print(table)
