"""Analytics output by the extension of --out: .json, .csv (one file per table), .html (a
report with plots); without --out, tables on the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analytics import report
from features.errors import InputInvalid
from oppscore.console import SHOWN_ROWS, out, show_table


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso", force_ascii=False))


def write(title: str, tables: dict[str, pd.DataFrame], path: Path | None, sections: Callable[[], list[tuple[str, str]]], command: str = "") -> None:
    """`command`: the command line as typed, for the hint under a shortened table."""
    if path is None:
        for name, frame in tables.items():
            show_table(_records(frame.head(SHOWN_ROWS)), title=name.replace("_", " "), total=len(frame),
                       hint=f"`{command} --out tables.csv` (writes tables_{name}.csv)" if command else "--out tables.csv")
        out.print(f"{title}. Next: add `--out report.html` for the plots, or `--out tables.csv` for every row.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps({k: _records(v) for k, v in tables.items()}, ensure_ascii=False, indent=1), encoding="utf-8")
        written = [path]
    elif suffix == ".csv":
        written = [path.with_name(f"{path.stem}_{name}.csv") for name in tables]
        for file, frame in zip(written, tables.values(), strict=True):
            frame.to_csv(file, index=False)
    elif suffix == ".html":
        path.write_text(report.page(title, sections()), encoding="utf-8")
        written = [path]
    else:
        raise InputInvalid(f"--out: found {path.suffix!r}, expected .json, .csv or .html")
    out.print(f"{title}: wrote {', '.join(str(f) for f in written)}" + (" (open it in a browser)" if suffix == ".html" else ""))
