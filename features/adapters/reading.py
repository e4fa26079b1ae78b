"""Reading a CRM's own export files: names in any case, encodings as real exports have them,
and column names as the CRM's API or a warehouse copy (snake_case) spells them.

Salesforce's Data Export writes UTF-8, but files that went through a spreadsheet come back as
Windows-1252, and real exports hold both in one file (a Latin-1 file with a few UTF-8 cells
pasted in). Each byte sequence that is valid UTF-8 is read as UTF-8 and every other byte as
Windows-1252, so "Diseño Propuesta" comes out right either way, never as mojibake.
"""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path

import pandas as pd

from features.errors import ExportInvalid, Problem

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


def read_csv(path: Path) -> pd.DataFrame:
    """Every value as text (empty: missing), columns keyed by `key`; bytes that are not text
    (a NUL, a control character: a binary or UTF-16 file) raise ExportInvalid naming the line
    and column."""
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF16_LE) or raw.startswith(codecs.BOM_UTF16_BE):
        raise ExportInvalid([Problem(path.name, "line 1", None, "a UTF-16 file", "UTF-8 or Windows-1252 text (save the export as CSV, UTF-8)")])
    text = raw.decode("utf-8-sig", errors="oppscore_cp1252")
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    problems = []
    for col in frame.columns:
        values = frame[col].dropna()
        bad = values[values.str.contains(_CONTROL)]
        for i, value in bad.head(20).items():
            problems.append(Problem(path.name, f"line {int(i) + 2}", str(col), repr(value[:40]), "text (no control or NUL bytes: is this a binary or UTF-16 file?)"))
    if problems:
        raise ExportInvalid(problems)
    names = {key(c): str(c) for c in frame.columns}
    frame.columns = list(names)
    frame.attrs["names"] = names  # what the CRM called each column, for messages
    return frame


def original(frame: pd.DataFrame, col: str) -> str:
    """A column's name as the file spells it."""
    return frame.attrs.get("names", {}).get(col, col)
