"""HubSpot's deals export (Deals → Export: CSV or XLSX, "all properties"), or an API export of
the same properties → the canonical tables, one pipeline at a time.

| canonical | HubSpot (export column, or API property) |
|---|---|
| opportunity_id | Record ID (hs_object_id) |
| created_at | Create Date (createdate) |
| amount | Amount (amount); none: 0, flagged in `amount_missing` |
| owner_id | Deal owner (hubspot_owner_id) |
| account_id | Associated Company (IDs) / Company name, when exported |
| expected_close_date | Close Date (closedate) |
| deal_type, lead_source | Deal Type (dealtype), Original Source Type (hs_analytics_source) |
| stage_history | every `Date entered "<stage> (<pipeline>)"` (hs_date_entered_<stage id>) that is filled, in time order |
| loss_reason | Closed Lost Reason (closed_lost_reason) |
| activities | the activities export (`--engagements FILE`): Activity date, Activity type, Call/Email direction, one row per associated deal; tasks once completed |

Several pipelines: each has its own stages and order, so one import reads one pipeline
(`--pipeline NAME`, default the one with the most deals) and the report lists the others;
import each into its own folder (one `oppscore.toml` per pipeline). Stage order is the order of
the "Date entered" columns, which HubSpot writes in the pipeline's display order. Won and lost
come from "Is Closed Won" / "Is closed" (hs_is_closed_won, hs_is_closed) when exported, else from
the stage names, and the report says which.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from crm.reading import key, read_csv
from crm.salesforce_import import Imported
from features.errors import ExportInvalid, InputInvalid, Problem
from features.settings import StageConfig
from features.stages import LOST_WORDS, WON_WORDS
from features.tables import TS_DTYPE, Tables

_ENTERED = re.compile(r'^date entered "?(.+?) \((.+)\)"?$', re.IGNORECASE)
TRUE = {"true", "yes", "1"}


def _read(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The export as text, and its column names as HubSpot wrote them."""
    if path.suffix.lower() in (".xlsx", ".xls"):
        frame = pd.read_excel(path, dtype=str)
        names = [str(c) for c in frame.columns]
        frame.columns = [key(c) for c in names]
        frame.attrs["names"] = dict(zip(frame.columns, names, strict=True))
        return frame.where(frame.notna(), None), names
    frame = read_csv(path)
    return frame, list(frame.attrs["names"].values())


_ENGAGEMENT_COLUMNS = {
    "deal": ["associateddealids", "associateddeal", "associateddeals", "dealids"],
    "time": ["activitydate", "hstimestamp", "timestamp", "createdate"],
    "type": ["activitytype", "engagementtype", "type", "hsengagementtype"],
    "direction": ["calldirection", "emaildirection", "hscalldirection", "hsemaildirection"],
    "contact": ["associatedcontactids", "associatedcontact"],
    "status": ["taskstatus", "hstaskstatus"],
}


def _engagements(path: Path, deals: pd.Series, report: dict) -> pd.DataFrame:
    """HubSpot's activities export (calls, e-mails, meetings, notes, tasks) → activities of the
    deals they are associated with (several deal ids in one cell, ';'-separated); tasks only once
    completed."""
    frame = read_csv(path)
    col = {k: next((a for a in v if a in frame.columns), None) for k, v in _ENGAGEMENT_COLUMNS.items()}
    missing = [k for k in ("deal", "time", "type") if col[k] is None]
    if missing:
        expected = {"deal": "Associated Deal IDs", "time": "Activity date", "type": "Activity type"}
        raise ExportInvalid([Problem(path.name, "line 1", expected[m], "no such column", f"a column named {expected[m]!r} (required)") for m in missing])
    when = pd.to_datetime(frame[col["time"]].str.strip(), utc=True, errors="coerce", format="mixed")
    bad = when.isna() & frame[col["time"]].notna()
    if bad.any():
        raise ExportInvalid([Problem(path.name, f"line {i + 2}", frame.attrs["names"][col["time"]], repr(frame.at[i, col["time"]]), "a date or date-time") for i in np.flatnonzero(bad.to_numpy())[:50]])
    kind = frame[col["type"]].fillna("activity").str.strip().str.lower()
    done = ~kind.eq("task") | (frame[col["status"]].fillna("").str.upper().eq("COMPLETED") if col["status"] else True)
    direction = frame[col["direction"]].fillna("").str.upper() if col["direction"] else pd.Series("", index=frame.index)
    rows = pd.DataFrame({
        "opportunity_id": frame[col["deal"]].fillna("").str.split(";"),
        "occurred_at": when.dt.as_unit("ns").astype(TS_DTYPE),
        "type": kind,
        "direction": np.where(direction.str.contains("INBOUND|INCOMING"), "inbound", np.where(direction.str.contains("OUTBOUND|EMAIL"), "outbound", None)),
        "contact_id": frame[col["contact"]].str.split(";").str[0] if col["contact"] else None,
    })[done.to_numpy() & when.notna().to_numpy()].explode("opportunity_id")
    rows["opportunity_id"] = rows["opportunity_id"].str.strip()
    linked = rows["opportunity_id"].isin(set(deals))
    report["engagements"] = {"rows read": len(frame), "on a deal of this pipeline": int(linked.sum()), "open tasks left out": int((~done).sum())}
    return rows[linked].reset_index(drop=True)


def import_hubspot(src: Path, pipeline: str | None = None, engagements: Path | None = None) -> Imported:
    path = _deals_file(Path(src))
    frame, names = _read(path)
    col = _columns(frame, path)
    report: dict[str, object] = {"deals in file": len(frame)}
    chosen, deals = _pipeline(frame, col, pipeline, report)
    entered = _entered_columns(names, chosen)
    dates = _Dates(path, frame, deals)
    ids = deals[col["recordid"]].str.strip()
    created = dates(col["createdate"])
    current = deals[col["dealstage"]].str.strip()
    history = _history(ids, created, current, entered, dates)
    if dates.problems:
        raise ExportInvalid(dates.problems)
    stages = [s for s, _ in entered] or list(dict.fromkeys(history["stage"]))
    won_names, lost_names, said = _outcome_stages(deals, current, stages)
    won = next(iter(sorted(won_names)), "Closed won")
    lost = next(iter(sorted(lost_names)), "Closed lost")
    open_names = [s for s in stages if s not in won_names and s not in lost_names]
    if not open_names:
        raise InputInvalid(f"{path.name}: pipeline {chosen!r} has no open stage")
    history["stage"] = history["stage"].replace({s: won for s in won_names} | {s: lost for s in lost_names})
    amount_raw = pd.to_numeric(deals[col["amount"]], errors="coerce") if col["amount"] else pd.Series(np.nan, index=deals.index)
    opportunities = _opportunities(deals, col, ids, created, amount_raw, history, dates)
    state = history.groupby("opportunity_id")["stage"].last()
    report.update({"won": int((state == won).sum()), "lost": int((state == lost).sum()), "open": int((~state.isin([won, lost])).sum()),
                   "deals created at a later stage": int((history.groupby("opportunity_id")["stage"].first() != open_names[0]).sum()),
                   "deals without an amount (amount 0, amount_missing = yes)": int(amount_raw.isna().sum())})
    config = StageConfig(open=open_names, won=won, lost=lost)
    segments = [c for c in ("deal_type", "lead_source") if opportunities[c].notna().any() and opportunities[c].nunique() >= 2]
    header = f"Written by `oppscore import hubspot` from {path} (pipeline {chosen!r})\nstage order: the export's Date entered columns\n" + "\n".join(said)
    activities = _engagements(Path(engagements), ids, report) if engagements is not None else None
    return Imported(Tables(opportunities, history, activities), config, segments, report, header, said)


def _deals_file(src: Path) -> Path:
    """The deals export: the file given, or the .csv/.xlsx in the folder whose name holds 'deal'."""
    path = src if src.is_file() else next((p for p in sorted(src.iterdir()) if p.suffix.lower() in (".csv", ".xlsx") and "deal" in p.name.lower()), None) if src.is_dir() else None
    if path is None:
        raise InputInvalid(f"{src}: no HubSpot deals export (a .csv or .xlsx whose name holds 'deal', or the file itself)")
    return path


def _columns(frame: pd.DataFrame, path: Path) -> dict[str, str | None]:
    """Each field's column, by its export label's key or its API name; the required ones must be there."""
    need = {"recordid": "Record ID", "createdate": "Create Date", "dealstage": "Deal Stage"}
    aliases = {"recordid": ["recordid", "hsobjectid"], "createdate": ["createdate"], "dealstage": ["dealstage"], "pipeline": ["pipeline"],
               "amount": ["amount"], "closedate": ["closedate"], "dealowner": ["dealowner", "hubspotownerid"]}
    col = {k: next((a for a in v if a in frame.columns), None) for k, v in aliases.items()}
    missing = [label for k, label in need.items() if col[k] is None]
    if missing:
        raise ExportInvalid([Problem(path.name, "line 1", m, "no such column", f"a column named {m!r} (required)") for m in missing])
    return col


def _pipeline(frame: pd.DataFrame, col: dict, pipeline: str | None, report: dict) -> tuple[str, pd.DataFrame]:
    """The pipeline imported (the one asked, else the largest) and its deals."""
    pipelines = frame[col["pipeline"]].fillna("(none)") if col["pipeline"] else pd.Series("(default)", index=frame.index)
    counts = pipelines.value_counts()
    chosen = pipeline or str(counts.index[0])
    if chosen not in counts.index:
        raise InputInvalid(f"--pipeline: found {chosen!r}, expected one of {', '.join(map(str, counts.index))}")
    report["pipelines"] = {str(k): int(v) for k, v in counts.items()}
    report["pipeline imported"] = chosen
    return chosen, frame[pipelines == chosen].reset_index(drop=True)


def _entered_columns(names: list[str], chosen: str) -> list[tuple[str, str]]:
    """(stage, column key) of the pipeline's "Date entered" columns, in HubSpot's order; else the
    API's hs_date_entered_ columns."""
    entered = []
    for name in names:
        m = _ENTERED.match(name.strip())
        if m and m.group(2) == chosen:
            entered.append((m.group(1), key(name)))
    return entered or [(n.removeprefix("hs_date_entered_"), key(n)) for n in names if n.startswith("hs_date_entered_")]


class _Dates:
    """A date column of the deals parsed, each unreadable cell a Problem naming its line and
    column (the first 50 of a column)."""

    def __init__(self, path: Path, frame: pd.DataFrame, deals: pd.DataFrame) -> None:
        self.path, self.frame, self.deals = path, frame, deals
        self.problems: list[Problem] = []

    def __call__(self, c: str) -> pd.Series:
        text = self.deals[c].str.strip()
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        for i in np.flatnonzero((parsed.isna() & text.notna()).to_numpy())[:50]:
            self.problems.append(Problem(self.path.name, f"line {i + 2}", self.frame.attrs["names"].get(c, c), repr(self.deals.at[i, c]), "a date or date-time"))
        return parsed.dt.as_unit("ns").astype(TS_DTYPE)


def _history(ids: pd.Series, created: pd.Series, current: pd.Series, entered: list[tuple[str, str]], dates: _Dates) -> pd.DataFrame:
    """A stage row per Date entered cell; a deal with none is in its current stage since its creation."""
    rows = [pd.DataFrame({"opportunity_id": ids, "stage": stage, "entered_at": dates(c)}) for stage, c in entered]
    history = pd.concat(rows, ignore_index=True).dropna(subset=["entered_at"]) if rows else pd.DataFrame(columns=["opportunity_id", "stage", "entered_at"])
    without = ~ids.isin(history["opportunity_id"])
    history = pd.concat([history, pd.DataFrame({"opportunity_id": ids[without], "stage": current[without], "entered_at": created[without]})], ignore_index=True)
    return history.sort_values(["opportunity_id", "entered_at"], kind="stable").reset_index(drop=True)


def _outcome_stages(deals: pd.DataFrame, current: pd.Series, stages: list[str]) -> tuple[set[str], set[str], list[str]]:
    """The won and lost stage names: from Is Closed Won / Is closed where the export has them,
    else by their names; and how they were found, in words."""
    won_flag, closed_flag = (key("Is Closed Won"), key("Is closed")) if key("Is Closed Won") in deals else ("hsisclosedwon", "hsisclosed")
    if won_flag in deals.columns and closed_flag in deals.columns:
        won_now = deals[won_flag].fillna("").str.lower().isin(TRUE)
        closed_now = deals[closed_flag].fillna("").str.lower().isin(TRUE)
        won_names = set(current[won_now]) or {s for s in stages if WON_WORDS.search(s)}
        lost_names = set(current[closed_now & ~won_now]) or {s for s in stages if LOST_WORDS.search(s) and s not in won_names}
        return won_names, lost_names, ["won and lost stages from Is Closed Won / Is closed"]
    won_names = {s for s in stages if WON_WORDS.search(s)}
    lost_names = {s for s in stages if LOST_WORDS.search(s) and s not in won_names}
    return won_names, lost_names, ["no Is Closed Won / Is closed columns: won and lost stages recognised by their names"]


def _opportunities(deals: pd.DataFrame, col: dict, ids: pd.Series, created: pd.Series, amount_raw: pd.Series, history: pd.DataFrame, dates: _Dates) -> pd.DataFrame:
    """The contract's opportunities; created when first seen: the Create Date, or a stage
    entered before it (edited after the fact)."""
    opportunities = pd.DataFrame({
        "opportunity_id": ids, "created_at": created, "amount": amount_raw.fillna(0.0),
        "amount_missing": np.where(amount_raw.isna(), "yes", None).astype(object),
        "owner_id": deals[col["dealowner"]] if col["dealowner"] else None,
        "expected_close_date": dates(col["closedate"]) if col["closedate"] else pd.NaT,
        "deal_type": deals[key("Deal Type")] if key("Deal Type") in deals else (deals["dealtype"] if "dealtype" in deals else None),
        "lead_source": deals[key("Original Source Type")] if key("Original Source Type") in deals else None,
        "loss_reason": deals[key("Closed Lost Reason")] if key("Closed Lost Reason") in deals else None,
        "account_id": deals[key("Associated Company (IDs)")] if key("Associated Company (IDs)") in deals else None,
    })
    created_first = history.groupby("opportunity_id")["entered_at"].min()
    opportunities["created_at"] = opportunities[["created_at"]].assign(first=opportunities["opportunity_id"].map(created_first)).min(axis=1)
    return opportunities
