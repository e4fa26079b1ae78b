"""Reading a CRM's own export files: names in any case, encodings as real exports have them,
and column names as the CRM's API or a warehouse copy (snake_case) spells them.

Salesforce's Data Export writes UTF-8, but files that went through a spreadsheet come back as
Windows-1252, and real exports hold both in one file (a Latin-1 file with a few UTF-8 cells
pasted in). Each byte sequence that is valid UTF-8 is read as UTF-8 and every other byte as
Windows-1252, so "Diseño Propuesta" comes out right either way, never as mojibake.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import ExportInvalid, Problem
from features.loading import parse_csv

_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def _windows_1252(exc: UnicodeDecodeError) -> tuple[str, int]:
    """Decode the bytes UTF-8 refused as Windows-1252 (the five it leaves undefined as Latin-1)."""
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(b) if b in _CP1252_UNDEFINED else bytes([b]).decode("cp1252") for b in bad), exc.end


codecs.register_error("oppscore_cp1252", _windows_1252)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def key(name: str) -> str:
    """A column name's comparable form: `StageName`, `stage_name` and `STAGENAME` agree."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def find(folder: Path, *names: str) -> Path | None:
    """The file of any of these names (e.g. "Opportunity.csv"), whatever its case."""
    wanted = {n.lower() for n in names}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.name.lower() in wanted:
            return path
    return None


def read_csv(path: Path, fields: Collection[str] | None = None, keep: Callable[[str], bool] = lambda name: False, line_column: str | None = None) -> pd.DataFrame:
    """Every value as text (empty: missing); with `line_column`, each record's line in the file
    (header = 1) in that column.

    `fields`: the columns the caller reads, as the CRM's API spells them (`StageName`). Each is
    found by its exact name, else by its comparable form (`stage_name`, `STAGENAME`) when one
    column alone has it, and comes under that form (`stagename`); two candidates and no exact
    name are a problem naming both. Other columns are dropped unless `keep(name)` (custom fields),
    which keeps them under their own names: `Budget_Confirmed__c` and `BudgetConfirmed__c` stay
    two columns. Control or NUL bytes in a field read are a problem naming line and column (a
    binary or UTF-16 file); in any other column they are dropped, and counted per column in
    `attrs["control bytes dropped"]` (rich-text fields hold them in real exports).

    `fields` None: the caller reads every column, each under its comparable form (the first of
    several with the same form; the others keep their own names)."""
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF16_LE) or raw.startswith(codecs.BOM_UTF16_BE):
        raise ExportInvalid([Problem(path.name, "line 1", None, "a UTF-16 file", "UTF-8 or Windows-1252 text (save the export as CSV, UTF-8)")])
    text = raw.decode("utf-8-sig", errors="oppscore_cp1252")
    frame = parse_csv(text, path.name)
    written = [str(c) for c in frame.columns]  # pandas has made repeated names unique ("Name", "Name.1")
    lines = _record_lines(text, len(frame))
    names, problems = _resolve(path.name, written, fields)
    read = set(names) if fields is not None else set(written)
    kept = [c for c in written if c in read or keep(c)]
    frame = frame[kept]
    dropped: dict[str, int] = {}
    for col in kept:
        values = frame[col].dropna()
        bad = values[values.str.contains(_CONTROL)]
        if bad.empty:
            continue
        if col in read:
            for i, value in bad.head(20).items():
                problems.append(Problem(path.name, f"line {lines[int(i)]}", col, repr(value[:40]), "text (no control or NUL bytes: is this a binary or UTF-16 file?)"))
        else:
            frame[col] = frame[col].str.replace(_CONTROL, "", regex=True)
            dropped[col] = len(bad)
    if problems:
        raise ExportInvalid(problems)
    final = _unique(kept, names, written)
    frame.columns = final
    frame.attrs["names"] = dict(zip(final, kept, strict=True))  # what the CRM called each column, for messages
    if line_column is not None:
        frame[line_column] = lines
    frame.attrs["control bytes dropped"] = dropped
    return frame


def _resolve(file: str, written: list[str], fields: Collection[str] | None) -> tuple[dict[str, str], list[Problem]]:
    """Which written column each read field is, as {written name: comparable form}."""
    by_key: dict[str, list[str]] = {}
    for name in written:
        by_key.setdefault(key(name), []).append(name)
    if fields is None:
        return {names[0]: k for k, names in by_key.items()}, []
    chosen, problems = {}, []
    for field in fields:
        candidates = by_key.get(key(field), [])
        exact = [c for c in candidates if c == field]
        if exact or len(candidates) == 1:
            chosen[(exact or candidates)[0]] = key(field)
        elif candidates:
            problems.append(Problem(file, "line 1", " and ".join(candidates), f"{len(candidates)} columns that read as {field}", f"one column named {field}"))
    return chosen, problems


def _unique(kept: list[str], names: dict[str, str], written: list[str]) -> list[str]:
    """Each kept column's name: its comparable form when read, else its own; a column kept under
    its own name that a read column took as its form (`amount` beside `Amount`) gets its
    position, so no two columns are alike."""
    taken = set(names.values())
    out = []
    for col in kept:
        name = names.get(col) or (col if col not in taken else f"{col} (column {written.index(col) + 1})")
        taken.add(name)
        out.append(name)
    return out


def _record_lines(text: str, rows: int) -> np.ndarray:
    """The line each record starts on (header = line 1): counted by the csv module when a quoted
    value spans lines (rich text), else one line a record."""
    if text.count("\n") - (0 if text.endswith("\n") else -1) == rows + 1:
        return np.arange(rows) + 2
    reader = csv.reader(io.StringIO(text))
    starts, at = [], 1
    for row in reader:
        if row:  # pandas skips blank lines
            starts.append(at)
        at = reader.line_num + 1
    return np.asarray(starts[1 : rows + 1], dtype=np.int64)


def original(frame: pd.DataFrame, col: str) -> str:
    """A column's name as the file spells it."""
    return frame.attrs.get("names", {}).get(col, col)
