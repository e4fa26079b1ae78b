"""Read an export folder (CSV or Parquet) and write result tables by their extension."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from features.errors import ExportInvalid, InputInvalid, Problem
from features.tables import FIELD_HISTORY, TABLE_NAMES


class RawTable:
    """A table as read from its file, every value kept as text, with where each row came from."""

    def __init__(self, name: str, frame: pd.DataFrame, path: Path | None) -> None:
        self.name = name
        self.frame = frame
        self.path = path

    @property
    def label(self) -> str:
        return self.path.name if self.path is not None else self.name

    def where(self, index: int) -> int:
        """Line in a CSV (header = 1), row in anything else (first = 1)."""
        return int(index) + (2 if self.path is not None and self.path.suffix == ".csv" else 1)

    @property
    def unit(self) -> str:
        return "line" if self.path is not None and self.path.suffix == ".csv" else "row"


def find_table(folder: Path, name: str) -> Path | None:
    for ext in (".parquet", ".csv"):
        path = folder / f"{name}{ext}"
        if path.exists():
            return path
    return None


_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


def parse_csv(source: Path | str, label: str) -> pd.DataFrame:
    """A CSV file (a path, or its text) with every value as text, empty as missing. A row that
    cannot be read (more fields than the header, a quote never closed, bytes that are not
    UTF-8) is a Problem naming the file and line, never a parser's traceback."""
    try:
        return pd.read_csv(io.StringIO(source) if isinstance(source, str) else source, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except pd.errors.ParserError as exc:
        said = str(exc)
        if m := _FIELDS.search(said):
            raise ExportInvalid([Problem(label, f"line {m.group(2)}", None, f"{m.group(3)} fields", f"{m.group(1)} fields, as the header line has (a comma inside a value needs quotes)")]) from None
        if m := _OPEN_QUOTE.search(said):
            raise ExportInvalid([Problem(label, f"line {int(m.group(1)) + 1}", None, "a quote opened and never closed (the file ends inside it)",
                                         "every quoted value closed (a cut-off or truncated file?)")]) from None
        raise ExportInvalid([Problem(label, None, None, f"a file the CSV reader could not read ({said.splitlines()[-1][:200]})", "comma-separated text with a header line")]) from None
    except UnicodeDecodeError as exc:
        raise ExportInvalid([Problem(label, f"byte {exc.start}", None, f"bytes that are not UTF-8 ({exc.object[exc.start:exc.start + 4]!r})", "UTF-8 text (save the export as CSV, UTF-8)")]) from None


def read_raw(folder: Path) -> dict[str, RawTable | None]:
    """Every table of the export as text; a missing optional table is None."""
    if not folder.is_dir():
        raise InputInvalid(f"{folder}: not a folder (expected an export folder holding opportunities.csv, stage_history.csv, activities.csv)")
    out: dict[str, RawTable | None] = {}
    for name in TABLE_NAMES:
        path = find_table(folder, name)
        if path is None:
            out[name] = None
            continue
        if path.suffix == ".csv":
            frame = parse_csv(path, path.name)
        else:
            try:
                frame = pd.read_parquet(path)
            except (pa.ArrowException, OSError) as exc:
                raise ExportInvalid([Problem(path.name, None, None, f"a file the Parquet reader could not read ({str(exc).splitlines()[0][:200]})", "a Parquet file")]) from None
        out[name] = RawTable(name, frame, path)
    return out


TABLE_FORMATS = (".csv", ".parquet", ".json")


def table_path(out: Path) -> Path:
    """`out` if its extension is one `write_table` writes, else InputInvalid naming it: checked
    before any work, so a command that fails on its output leaves nothing behind."""
    if out.suffix.lower() not in TABLE_FORMATS:
        raise InputInvalid(f"--out {out}: unknown output format {out.suffix!r}, expected {', '.join(TABLE_FORMATS)}")
    return out


def write_table(frame: pd.DataFrame, out: Path) -> None:
    """Write by extension; lists and dicts in cells (reasons, what changed) become JSON text in
    CSV and Parquet, whose columns hold one type (a reason's value is a number or a text)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix in (".parquet", ".csv"):
        flat = frame.copy()
        for col in flat.columns:
            if flat[col].map(lambda v: isinstance(v, (list, dict))).any():
                flat[col] = flat[col].map(lambda v: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (list, dict)) else v)
        if suffix == ".parquet":
            flat.to_parquet(out, index=False)
        else:
            flat.to_csv(out, index=False)
    elif suffix == ".json":
        out.write_text(frame.to_json(orient="records", date_format="iso", force_ascii=False, indent=1), encoding="utf-8")
    else:
        raise InputInvalid(f"{out}: unknown output format {suffix!r}, expected .csv, .parquet or .json")


def _as_arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A table as Arrow with every time as 2026-01-31T09:30:00Z, formatted by Arrow in C++
    (pandas' `strftime` and `to_csv` take a Python step per value: seconds on the millions of
    rows of an activity table). Numbers and booleans are spelled as pandas spells them (58990.0,
    True), so a category read back as text is the one a model learnt; a column of mixed Python
    types is written as its text."""
    columns = {}
    for col in frame.columns:
        values = frame[col]
        if pd.api.types.is_float_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            columns[str(col)] = pa.array(values.astype(object).map(lambda v: None if v is None or v != v else repr(v.item() if hasattr(v, "item") else v)), type=pa.string())
            continue
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            whole = pc.cast(pa.array(values.dt.tz_convert("UTC").dt.floor("s")), pa.timestamp("s", tz="UTC"))
            columns[str(col)] = pc.strftime(whole, format="%Y-%m-%dT%H:%M:%SZ")
            continue
        try:
            columns[str(col)] = pa.array(values, from_pandas=True)
            if not (pa.types.is_string(columns[str(col)].type) or pa.types.is_large_string(columns[str(col)].type) or pa.types.is_null(columns[str(col)].type)):
                raise pa.ArrowTypeError("not text")  # numbers or booleans in an object column: as pandas writes them
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[str(col)] = pa.array(values.map(lambda v: None if v is None or v != v else str(v)), type=pa.string(), from_pandas=True)
    return pa.table(columns)


def write_export(tables, folder: Path, fmt: str = "csv") -> None:
    """Write canonical tables as an export folder (ISO 8601 timestamps)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        frame = getattr(tables, name)
        if name == FIELD_HISTORY and frame.empty:
            continue  # optional: a folder without it means "no field history"
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            pa_csv.write_csv(_as_arrow_table(frame), folder / f"{name}.csv")
