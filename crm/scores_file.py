"""The scores a write-back reads: `oppscore score`'s output as written (CSV, Parquet or JSON),
checked for what the CRM's fields need."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import ExportInvalid, InputInvalid, Problem

NEEDED = ["opportunity_id", "as_of", "win_probability", "stall_risk", "score", "grade", "top_factors"]
SEPARATOR = "; "
ELLIPSIS = "…"


def read_scores(path: Path) -> pd.DataFrame:
    """The score table, one row per opportunity; a missing column or a value out of range is a
    problem naming its row (the n-th score, header not counted) and column."""
    if not path.is_file():
        raise InputInvalid(f"--scores {path}: no such file (the output of `oppscore score --out F`)")
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda: pd.read_csv(path, dtype={"opportunity_id": str, "grade": str}, keep_default_na=False, na_values=[""]),
        ".parquet": lambda: pd.read_parquet(path),
        ".json": lambda: pd.read_json(path, orient="records", dtype={"opportunity_id": str, "grade": str}, convert_dates=False),
    }
    if suffix not in readers:
        raise InputInvalid(f"--scores {path}: unknown format {suffix!r}, expected the .csv, .parquet or .json that `oppscore score` wrote")
    try:
        frame = readers[suffix]()
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' parser errors and Arrow's are ValueErrors
        raise InputInvalid(f"--scores {path}: not a {suffix[1:]} file of scores that can be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    missing = [c for c in NEEDED if c not in frame.columns]
    if missing:
        raise ExportInvalid([Problem(path.name, "header", c, "no such column", "the columns `oppscore score` writes") for c in missing])
    problems: list[Problem] = []

    def check(col: str, bad: pd.Series, expected: str) -> None:
        for i in np.flatnonzero(bad.to_numpy())[:50]:
            value = frame[col].iloc[i]
            problems.append(Problem(path.name, f"row {i + 1}", col, repr(value.item() if hasattr(value, "item") else value), expected))

    for col in ("win_probability", "stall_risk"):
        values = pd.to_numeric(frame[col], errors="coerce")
        unknown = frame[col].isna() if col == "stall_risk" else pd.Series(False, index=frame.index)  # an empty stall risk: not known
        check(col, ~values.between(0, 1) & ~unknown, "a probability in [0, 1]" + (" or empty (not known)" if col == "stall_risk" else ""))
        frame[col] = values
    score = pd.to_numeric(frame["score"], errors="coerce")
    check("score", ~score.between(1, 99) | (score % 1 != 0), "a whole score from 1 to 99")
    check("grade", ~frame["grade"].isin(["A", "B", "C", "D"]), "a grade A, B, C or D")
    check("opportunity_id", frame["opportunity_id"].isna() | frame["opportunity_id"].astype(str).str.strip().eq(""), "the opportunity's id")
    check("opportunity_id", frame["opportunity_id"].duplicated(keep="first"), "each opportunity once")
    as_of = pd.to_datetime(frame["as_of"], utc=True, errors="coerce", format="ISO8601")
    check("as_of", as_of.isna(), "an ISO 8601 time")
    if problems:
        raise ExportInvalid(problems)
    frame["score"] = score.astype(int)
    frame["as_of"] = as_of
    frame["opportunity_id"] = frame["opportunity_id"].astype(str).str.strip()
    frame["top_factors"] = frame["top_factors"].map(_factors)
    return frame.reset_index(drop=True)


def _factors(value) -> list[dict]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if value is None or (isinstance(value, float) and value != value):
        return []
    return list(value)


def utf16_length(text: str) -> int:
    """Characters as Salesforce counts a field's length (UTF-16 code units: an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def reasons_text(factors: list[dict], length: int) -> str:
    """The reasons' sentences in order, as many whole ones as fit in `length`; a first sentence
    longer than the field is cut at a word and ends with an ellipsis, never mid-character."""
    sentences = [str(f.get("sentence") or f.get("feature") or "").strip() for f in factors]
    out = ""
    for s in (s for s in sentences if s):
        candidate = s if not out else out + SEPARATOR + s
        if utf16_length(candidate) <= length:
            out = candidate
        elif not out:
            return _cut(s, length)
        else:
            break
    return out


def _cut(sentence: str, length: int) -> str:
    """As many whole words as fit with an ellipsis; a first word too long loses characters."""
    cut = ""
    for word in sentence.split(" "):
        longer = word if not cut else f"{cut} {word}"
        if utf16_length(longer + ELLIPSIS) > length:
            break
        cut = longer
    if not cut:
        cut = sentence
        while cut and utf16_length(cut + ELLIPSIS) > length:
            cut = cut[:-1]
    return cut.rstrip(" ,;") + ELLIPSIS


def crm_values(scores: pd.DataFrame, names: dict[str, str], reasons_length: int, empty_reasons: str = "") -> dict[str, pd.Series]:
    """Each output as the CRMs take it, under its field (or property) name: percentages 0–100
    with two decimals, the whole score, the grade, the reasons within their length (`empty_reasons`
    where there are none) and the time scored in UTC with milliseconds."""
    reasons = scores["top_factors"].map(lambda f: reasons_text(f, reasons_length))
    return {
        names["win_probability"]: (scores["win_probability"] * 100).round(2).map("{:.2f}".format),
        names["stall_risk"]: (scores["stall_risk"] * 100).round(2).map(lambda v: "" if v != v else f"{v:.2f}"),  # not known: left empty
        names["score"]: scores["score"].astype(int).astype(str),
        names["grade"]: scores["grade"].astype(str),
        names["reasons"]: reasons.where(reasons != "", empty_reasons),
        names["scored_at"]: scores["as_of"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
