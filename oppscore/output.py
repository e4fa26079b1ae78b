"""Analytics output by the extension of --out: .json, .csv (one file per table), .html (a
report with plots); without --out, tables on the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analytics import report
from oppscore.console import show_table


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso", force_ascii=False))


def write(title: str, tables: dict[str, pd.DataFrame], out: Path | None, sections: Callable[[], list[tuple[str, str]]]) -> None:
    if out is None:
        for name, frame in tables.items():
            show_table(frame.head(25).to_dict("records"), title=name.replace("_", " "))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".json":
        out.write_text(json.dumps({k: _records(v) for k, v in tables.items()}, ensure_ascii=False, indent=1), encoding="utf-8")
    elif suffix == ".csv":
        for name, frame in tables.items():
            frame.to_csv(out.with_name(f"{out.stem}_{name}.csv"), index=False)
    elif suffix == ".html":
        out.write_text(report.page(title, sections()), encoding="utf-8")
    else:
        raise ValueError(f"--out: found {out.suffix!r}, expected .json, .csv or .html")
