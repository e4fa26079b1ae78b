"""A Salesforce Data Export (Setup → Data Export: one `<Object>.csv` per object), or Data Loader
/ warehouse copies of the same objects → the canonical tables.

Field mapping (API names; snake_case copies such as Fivetran's are read the same):

| canonical | Salesforce |
|---|---|
| opportunities.opportunity_id | Opportunity.Id as written (15 or 18 characters), matched across files by its 15-character prefix |
| opportunities.created_at | Opportunity.CreatedDate (or the first OpportunityHistory row, when earlier) |
| opportunities.amount | Opportunity.Amount ÷ the rate of Opportunity.CurrencyIsoCode (DatedConversionRate at CloseDate, else CurrencyType); none: 0, flagged in `amount_missing` |
| opportunities.amount_original, currency | Opportunity.Amount, CurrencyIsoCode, as given |
| opportunities.account_id, owner_id | AccountId, OwnerId, as written |
| opportunities.team | the owner's role: User.UserRoleId → UserRole.Name |
| opportunities.industry, country, account_type | Account.Industry, BillingCountry, Type |
| opportunities.lead_source, type | LeadSource, Type |
| opportunities.expected_close_date | CloseDate |
| opportunities.`<custom>__c` | custom fields with 2–50 values (listed in the report; opt in through [segments]) |
| stage_history | OpportunityHistory rows whose StageName differs from the deal's previous row (the first row: the stage it was created at) |
| field_history | OpportunityHistory Amount / CloseDate / Probability / ForecastCategory whenever they change, and OpportunityFieldHistory rows of those fields |
| activities | completed Tasks at CompletedDateTime (else ActivityDate, never a future due date) and Events at StartDateTime whose WhatId is an opportunity; type from TaskSubtype / EventSubtype / Type; direction from CallType |

Won and lost come from IsWon / IsClosed (OpportunityStage, else the deals), never from stage
names; several closed-won (or closed-lost) stages become one, said in the report. Stage order
from OpportunityStage.SortOrder, else Opportunity.StageSortOrder, else inferred;
`configured_weights` from DefaultProbability, else the most common Probability per stage.
Rows with IsDeleted = 1 are dropped; the null id 000000000000000AAA is missing. Only the fields
in FIELDS (and Opportunity's custom fields) are read: a NUL or control byte in any other column
is dropped and counted, in one of these it is an error naming file, line and column.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crm.reading import find, key, original, read_csv
from features.errors import ExportInvalid, InputInvalid, Problem
from features.settings import StageConfig
from features.stages import infer_stage_config
from features.tables import TABLE_NAMES, TS_DTYPE, Tables

NULL_ID = "000000000000000AAA"
OPPORTUNITY_PREFIX = "006"
REQUIRED_FILES = ("Opportunity.csv", "OpportunityHistory.csv")
TRUE = {"1", "true", "yes", "y"}
SEGMENTS = ["team", "industry", "country", "account_type", "lead_source", "type"]


@dataclass
class Imported:
    tables: Tables
    stages: StageConfig
    segments: list[str]
    report: dict[str, object]
    header: str = ""  # comment lines for oppscore.toml: where each value came from
    notes: list[str] = field(default_factory=list)
    source: dict[str, pd.DataFrame] = field(default_factory=dict)  # the objects as read, kept beside the tables for `import --into`


# What is read of each object (API names; found by exact name first, see `reading.read_csv`):
# every other column is left unread, custom fields (`…__c`) of Opportunity aside.
FIELDS = {
    "Opportunity": ["Id", "IsDeleted", "AccountId", "StageName", "Amount", "Probability", "CloseDate", "Type", "LeadSource", "IsClosed", "IsWon",
                    "OwnerId", "CreatedDate", "CurrencyIsoCode", "StageSortOrder"],
    "OpportunityHistory": ["Id", "OpportunityId", "CreatedDate", "StageName", "Amount", "CloseDate", "Probability", "ForecastCategory", "IsDeleted"],
    "OpportunityStage": ["MasterLabel", "IsClosed", "IsWon", "SortOrder", "DefaultProbability", "IsDeleted"],
    "OpportunityFieldHistory": ["Id", "OpportunityId", "Field", "CreatedDate", "NewValue", "IsDeleted"],
    "CurrencyType": ["IsoCode", "ConversionRate", "IsCorporate", "IsDeleted"],
    "DatedConversionRate": ["Id", "IsoCode", "ConversionRate", "StartDate", "NextStartDate", "IsDeleted"],
    "User": ["Id", "UserRoleId", "IsDeleted"],
    "UserRole": ["Id", "Name", "IsDeleted"],
    "Account": ["Id", "Type", "Industry", "BillingCountry", "IsDeleted"],
    "Task": ["Id", "WhatId", "WhoId", "OwnerId", "Status", "IsClosed", "ActivityDate", "CompletedDateTime", "TaskSubtype", "Type", "CallType", "IsDeleted"],
    "Event": ["Id", "WhatId", "WhoId", "OwnerId", "StartDateTime", "ActivityDateTime", "EventSubtype", "Type", "CallType", "IsDeleted"],
}


def _custom(name: str) -> bool:
    return name.endswith("__c")


# How a newer export's row replaces an older one (`merge`): by record id, else by the object's
# natural key; rows without either are kept once each.
MERGE_KEYS = {"OpportunityStage": "masterlabel", "CurrencyType": "isocode"}


def read_objects(folder: Path, delta: bool = False) -> dict[str, pd.DataFrame]:
    """Every object of FIELDS the export folder holds, as read (deleted rows included, each row
    with its `_file` and `_line`): what an import converts and keeps for the next `--into`.
    A delta (`delta`: the rows changed since an earlier export) may lack the required files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputInvalid(f"{folder}: not a folder (expected a Salesforce Data Export folder with Opportunity.csv and OpportunityHistory.csv)")
    missing = [name for name in REQUIRED_FILES if find(folder, name) is None]
    if missing and not delta:
        raise InputInvalid(f"{folder}: not a Salesforce export, missing {', '.join(missing)} (file names in any case)")
    objects = {}
    for name in FIELDS:
        path = find(folder, f"{name}.csv")
        if path is not None:
            frame = read_csv(path, FIELDS[name], keep=_custom if name == "Opportunity" else lambda _c: False, line_column="_line")
            control = frame.attrs["control bytes dropped"]
            objects[name] = frame.assign(_file=path.name)
            objects[name].attrs["control bytes dropped"] = control
    if not objects:
        raise InputInvalid(f"{folder}: no Salesforce object file in it (expected files such as Opportunity.csv, OpportunityHistory.csv, Task.csv)")
    return objects


def merge(older: dict[str, pd.DataFrame], newer: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, int]]]:
    """The export as it stands after `newer`: each of its rows replaces the older row with the same
    record id (a row marked IsDeleted replaces it too, and the import then drops it), the others
    are added; older rows it does not name stay. With what was added, changed, deleted and
    resent unchanged, per object."""
    merged, changes = {}, {}
    for name in FIELDS:
        old, new = older.get(name), newer.get(name)
        if new is None or old is None:
            if new is not None or old is not None:
                merged[name] = old if new is None else new
            if new is not None:
                changes[name] = {"added": len(new), "changed": 0, "deleted": int(_flag(new, "isdeleted").sum()), "unchanged": 0}
            continue
        by = MERGE_KEYS.get(name, "id")
        content = [c for c in new.columns if c not in ("_file", "_line")]
        if by not in old.columns or by not in new.columns:  # no key: rows are facts, each kept once
            both = pd.concat([old, new], ignore_index=True)
            merged[name] = both[~both.duplicated(subset=[c for c in both.columns if c not in ("_file", "_line")])].reset_index(drop=True)
            changes[name] = {"added": len(merged[name]) - len(old), "changed": 0, "deleted": 0, "unchanged": len(both) - len(merged[name])}
            continue
        new = new.drop_duplicates(by, keep="last").reset_index(drop=True)
        old_keys, new_keys = old[by].to_numpy(dtype=object), new[by].to_numpy(dtype=object)
        index, positions = pd.Index(old_keys, dtype=object), np.arange(len(old))
        if not index.is_unique:  # an id twice in the older export: its last row stands
            last = pd.Series(positions).groupby(old_keys).last()
            index, positions = pd.Index(last.index.to_numpy(dtype=object), dtype=object), last.to_numpy()
        hit = index.get_indexer(new_keys)
        at = np.where(hit >= 0, positions[np.maximum(hit, 0)], -1)
        known = at >= 0
        prior_rows = old.iloc[at[known]].reset_index(drop=True)
        shared = [c for c in content if c != by and c in old.columns]
        prior, now = prior_rows[shared].astype(object), new.loc[known, shared].reset_index(drop=True).astype(object)
        same = np.zeros(len(new), dtype=bool)
        same[np.flatnonzero(known)] = ((prior == now) | (prior.isna() & now.isna())).all(axis=1).to_numpy()
        was_deleted = np.zeros(len(new), dtype=bool)
        if "isdeleted" in old.columns:
            was_deleted[np.flatnonzero(known)] = _flag(prior_rows, "isdeleted").to_numpy()
        deleted = _flag(new, "isdeleted").to_numpy() & ~was_deleted
        changes[name] = {"added": int((~known).sum()), "changed": int((known & ~same & ~deleted).sum()), "deleted": int(deleted.sum()), "unchanged": int(same.sum())}
        merged[name] = pd.concat([old[~_isin(old[by], new[by])], new], ignore_index=True)
    for frame in merged.values():  # rows at one instant are taken in this order (the older export's first), as a file of the merged rows would give them
        frame["_line"] = np.arange(len(frame)) + 2
    return merged, changes


SOURCE = Path(".source") / "salesforce"  # inside an imported folder: the objects it was made from


def save_source(objects: dict[str, pd.DataFrame], folder: Path, options: dict, tables: Tables) -> None:
    """Keep the objects an import read beside its tables (Parquet, one file per object), with the
    import's options and its tables' row counts, so that a newer export can be merged in later
    (`import --into`)."""
    staged = stage_source(objects, folder, options)
    commit_source(staged, tables)


def stage_source(objects: dict[str, pd.DataFrame], folder: Path, options: dict) -> Path:
    """The objects written to a folder beside the kept ones (`commit_source` swaps it in), so
    that a failure before the swap leaves the previous source whole."""
    fresh = Path(folder) / SOURCE.with_name(SOURCE.name + ".new")
    if fresh.exists():
        shutil.rmtree(fresh)
    fresh.mkdir(parents=True)
    for name, frame in objects.items():
        frame.to_parquet(fresh / f"{name}.parquet", index=False)
    (fresh / "options.json").write_text(json.dumps(options), encoding="utf-8")
    return fresh


def commit_source(fresh: Path, tables: Tables) -> None:
    options = json.loads((fresh / "options.json").read_text(encoding="utf-8"))
    counts = {name: len(tables.frame(name)) for name in TABLE_NAMES}
    (fresh / "import.json").write_text(json.dumps({"kind": "salesforce", "options": options, "rows": counts}), encoding="utf-8")
    target = fresh.with_name(SOURCE.name)
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    if old.exists():
        shutil.rmtree(old)


def load_source(folder: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """The objects `save_source` kept in an imported folder, and what it said of them (the
    import's options, the rows of each canonical table)."""
    target = Path(folder) / SOURCE
    if not (target / "import.json").exists():
        raise InputInvalid(f"--into {folder}: no Salesforce import kept there ({SOURCE} is missing); import a full export into it first "
                           f"(`oppscore import salesforce FULL_EXPORT --out {folder}`), then merge newer ones with --into")
    objects = {}
    for path in sorted(target.glob("*.parquet")):
        objects[path.stem] = pd.read_parquet(path)
    return objects, json.loads((target / "import.json").read_text(encoding="utf-8"))


def _isin(values: pd.Series, among) -> pd.Series:
    """`values.isin(among)` by a hash of Python strings: pandas' Arrow-backed strings test
    membership element by element: seconds on a million tasks."""
    return pd.Series(values.to_numpy(dtype=object), index=values.index, dtype=object).isin(pd.Index(np.asarray(among, dtype=object), dtype=object))


class _Source:
    """One export's objects: each object's rows, deleted rows dropped, counts kept for the report."""

    def __init__(self, objects: dict[str, pd.DataFrame], label: str) -> None:
        self.objects = objects
        self.folder = label
        self.read: dict[str, dict[str, int]] = {}
        self.control: dict[str, int] = {}  # "file: column" → values whose control bytes were dropped

    def table(self, name: str, required: list[str] | None = None) -> pd.DataFrame | None:
        frame = self.objects.get(name)
        if frame is None:
            return None
        file = frame["_file"].iloc[0] if len(frame) else f"{name}.csv"
        lacking = [c for c in required or [] if key(c) not in frame.columns]
        if lacking:
            raise ExportInvalid([Problem(file, "line 1", c, "no such column", f"a column named {c!r} (required)") for c in lacking])
        self.control.update({f"{file}: {col}": n for col, n in frame.attrs.get("control bytes dropped", {}).items()})
        deleted = frame["isdeleted"].fillna("0").str.lower().isin(TRUE) if "isdeleted" in frame.columns else pd.Series(False, index=frame.index)
        self.read[name] = {"rows read": len(frame), "deleted rows dropped": int(deleted.sum())}
        return frame[~deleted].reset_index(drop=True)


def _written(values: pd.Series) -> pd.Series:
    """Ids as the export writes them (15 or 18 characters), so scores join back to the CRM as
    they are; the null id and blanks are missing."""
    text = _arrow_text(values).str.strip()
    return text.where(~text.isin(["", NULL_ID]) & text.notna(), None).astype(object)


def _arrow_text(values: pd.Series) -> pd.Series:
    """Text as Arrow-backed strings, whose string methods run in C++ (object columns take a
    Python step per value: seconds on a million tasks)."""
    return values if values.dtype == "string[pyarrow]" or str(values.dtype) == "str" else values.astype(object).where(values.notna(), None).astype("str")


def _id(values: pd.Series) -> pd.Series:
    """Ids as join keys: the 15-character id (an 18-character id is its 15-character id and a
    checksum, and one file of an export may write 15 where another writes 18)."""
    written = _arrow_text(_written(values))
    return written.str[:15].where(written.notna(), None).astype(object)


def _times(frame: pd.DataFrame, col: str, problems: list[Problem], required: bool = False) -> pd.Series:
    """'2023-02-07 20:47:49', '2023-02-07T20:47:49.000Z', '…+0000' or a date, as UTC."""
    if col not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype=TS_DTYPE)
    text = frame[col].str.strip()
    text = text.str.replace(r"([+-]\d{2})(\d{2})$", r"\1:\2", regex=True)  # +0000 → +00:00
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & (text.notna() | required)
    for i in np.flatnonzero(bad.to_numpy())[:50]:
        row = frame.iloc[i]
        problems.append(Problem(row["_file"], f"line {row['_line']}", original(frame, col), repr(row[col]) if pd.notna(row[col]) else "an empty value", "a Salesforce date or date-time (2023-02-07 20:47:49, 2023-02-07T20:47:49.000Z)"))
    return parsed.dt.as_unit("ns").astype(TS_DTYPE)


def _numbers(frame: pd.DataFrame, col: str, problems: list[Problem]) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    parsed = pd.to_numeric(frame[col].str.strip(), errors="coerce")
    bad = parsed.isna() & frame[col].notna()
    for i in np.flatnonzero(bad.to_numpy())[:50]:
        row = frame.iloc[i]
        problems.append(Problem(row["_file"], f"line {row['_line']}", original(frame, col), repr(row[col]), "a number with a decimal point"))
    return parsed


def _flag(frame: pd.DataFrame, col: str) -> pd.Series:
    return frame[col].fillna("").str.strip().str.lower().isin(TRUE) if col in frame.columns else pd.Series(False, index=frame.index)


def _text(frame: pd.DataFrame, col: str) -> pd.Series:
    return frame[col].astype(object).where(frame[col].notna(), None) if col in frame.columns else pd.Series(None, index=frame.index, dtype=object)


def _rates(src: _Source, opps: pd.DataFrame, close: pd.Series, problems: list[Problem], report: dict) -> pd.Series:
    """Each deal's conversion rate to the corporate currency (1 without multi-currency)."""
    currency = _text(opps, "currencyisocode")
    if currency.isna().all():
        return pd.Series(1.0, index=opps.index)
    types = src.table("CurrencyType", ["IsoCode", "ConversionRate"])
    if types is None:
        raise InputInvalid(f"{src.folder}: Opportunity.CurrencyIsoCode is filled but there is no CurrencyType.csv to convert amounts with")
    rate = pd.Series(pd.to_numeric(types["conversionrate"], errors="coerce").to_numpy(), index=types["isocode"].str.strip())
    corporate = types.loc[_flag(types, "iscorporate"), "isocode"]
    report["corporate currency"] = corporate.iloc[0] if len(corporate) else "(not marked; rates read as given)"
    out = currency.map(rate)
    dated = src.table("DatedConversionRate", ["IsoCode", "ConversionRate", "StartDate"])
    if dated is not None and len(dated):
        start = _times(dated, "startdate", problems)
        nxt = _times(dated, "nextstartdate", problems).fillna(pd.Timestamp.max.tz_localize("UTC"))
        values = pd.to_numeric(dated["conversionrate"], errors="coerce").to_numpy()
        for i in np.flatnonzero(currency.notna().to_numpy()):
            hit = (dated["isocode"].to_numpy() == currency.iloc[i]) & (start.to_numpy() <= close.iloc[i]) & (close.iloc[i] < nxt.to_numpy()) if pd.notna(close.iloc[i]) else np.zeros(len(dated), dtype=bool)
            if hit.any():
                out.iloc[i] = values[np.flatnonzero(hit)[0]]
    unknown = currency.notna() & out.isna()
    for i in np.flatnonzero(unknown.to_numpy())[:50]:
        row = opps.iloc[i]
        problems.append(Problem(row["_file"], f"line {row['_line']}", "CurrencyIsoCode", repr(currency.iloc[i]), f"a currency listed in CurrencyType.csv ({', '.join(rate.index)})"))
    report["currencies"] = {str(c): int(n) for c, n in currency.value_counts().items()}
    return out.fillna(1.0)


def _stage_config(src: _Source, opps: pd.DataFrame, entries: pd.DataFrame, report: dict) -> tuple[StageConfig, list[str], dict[str, str]]:
    """Open stages in order, the won and lost stage, configured weights; and what was merged."""
    said: list[str] = []
    stages = src.table("OpportunityStage", ["MasterLabel"])
    names = pd.Index(entries["stage"].dropna().unique())
    rename: dict[str, str] = {}
    if stages is not None and len(stages):
        label = stages["masterlabel"].str.strip()
        number = lambda col: pd.to_numeric(stages[col], errors="coerce").to_numpy() if col in stages else np.nan  # noqa: E731
        info = pd.DataFrame({"closed": _flag(stages, "isclosed").to_numpy(), "won": _flag(stages, "iswon").to_numpy(),
                             "order": number("sortorder"), "probability": number("defaultprobability")}, index=label.to_numpy())
        info = info[~info.index.duplicated()]
        said.append("stage order, won/lost and configured_weights: OpportunityStage.csv (SortOrder, IsClosed, IsWon, DefaultProbability)")
    else:
        by_stage = pd.DataFrame({"stage": _text(opps, "stagename"), "closed": _flag(opps, "isclosed"), "won": _flag(opps, "iswon"),
                                 "order": pd.to_numeric(opps.get("stagesortorder"), errors="coerce") if "stagesortorder" in opps else np.nan,
                                 "probability": pd.to_numeric(opps.get("probability"), errors="coerce") if "probability" in opps else np.nan}).dropna(subset=["stage"])
        mode = lambda s: s.mode().iloc[0] if s.notna().any() else np.nan  # noqa: E731
        info = by_stage.groupby("stage").agg(closed=("closed", "max"), won=("won", "max"), order=("order", mode), probability=("probability", mode))
        said.append("no OpportunityStage.csv: won/lost from the deals' IsWon/IsClosed, order from Opportunity.StageSortOrder, configured_weights from the most common Probability per stage")
    won = [s for s in info.index if info.at[s, "closed"] and info.at[s, "won"] and s in names]
    lost = [s for s in info.index if info.at[s, "closed"] and not info.at[s, "won"] and s in names]
    counts = entries["stage"].value_counts()
    won_name = max(won, key=lambda s: counts.get(s, 0)) if won else "Closed Won"
    lost_name = max(lost, key=lambda s: counts.get(s, 0)) if lost else "Closed Lost"
    for group, target in ((won, won_name), (lost, lost_name)):
        for s in group:
            if s != target:
                rename[s] = target
    if rename:
        said.append("closed stages merged: " + ", ".join(f"{a} → {b}" for a, b in rename.items()))
    if not won:
        said.append(f"no won stage in the data: {won_name!r} named as the won stage")
    if not lost:
        said.append(f"no lost stage in the data (no deal was lost): {lost_name!r} named as the lost stage")
    open_names = [s for s in names if s not in won and s not in lost and s not in rename]
    order = info["order"].reindex(open_names)
    if order.notna().all() and len(open_names):
        open_names = sorted(open_names, key=lambda s: (order[s], s))
    else:
        probe = entries.rename(columns={"at": "entered_at"})[["opportunity_id", "stage", "entered_at"]]
        try:
            inferred, _ = infer_stage_config(probe)
            open_names = [s for s in inferred.open if s in open_names] + [s for s in open_names if s not in inferred.open]
        except ValueError:
            pass
        said.append("no sort order for every open stage: the order was inferred from the data")
    probability = info["probability"].reindex(open_names)
    weights = [float(p) / 100 for p in probability] if len(open_names) and probability.notna().all() else None
    if weights is not None and any(not 0 <= w <= 1 for w in weights):
        weights = None
    report["stages"] = {"open": open_names, "won": won_name, "lost": lost_name}
    if not open_names:
        raise InputInvalid(f"{src.folder}: no open stage in the export (every deal's history holds closed stages only)")
    return StageConfig(open=open_names, won=won_name, lost=lost_name, configured_weights=weights), said, rename


def import_salesforce(folder: Path, attach_account_tasks: bool = False) -> Imported:
    return import_objects(read_objects(Path(folder)), str(folder), attach_account_tasks)


def import_objects(objects: dict[str, pd.DataFrame], label: str, attach_account_tasks: bool = False) -> Imported:
    """The canonical tables of an export's objects (`read_objects`, or `merge`d ones)."""
    src = _Source(objects, label)
    problems: list[Problem] = []
    report: dict[str, object] = {}
    opps = src.table("Opportunity", ["Id", "StageName", "CreatedDate"])
    hist = src.table("OpportunityHistory", ["OpportunityId", "StageName", "CreatedDate"])
    opps = opps.assign(id_=_id(opps["id"]))
    opps = opps[opps["id_"].notna()].drop_duplicates("id_").reset_index(drop=True)
    as_written = pd.Series(_written(opps["id"]).to_numpy(), index=opps["id_"].to_numpy())  # join key → the id as the export writes it
    created = _times(opps, "createddate", problems, required=True)
    close = _times(opps, "closedate", problems)
    amount_raw = _numbers(opps, "amount", problems)
    rate = _rates(src, opps, close, problems, report)
    hist, entries = _entries(hist, opps, created, problems, report)
    if problems:
        raise ExportInvalid(problems)
    config, said, rename = _stage_config(src, opps, entries, report)
    entries["stage"] = entries["stage"].replace(rename)
    entries = entries.sort_values(["opportunity_id", "at"], kind="stable")
    entries = entries[~(entries["opportunity_id"].eq(entries["opportunity_id"].shift()) & entries["stage"].eq(entries["stage"].shift()))]
    first_at = entries.groupby("opportunity_id")["at"].min()
    given, first = pd.Series(created.to_numpy(), index=opps["id_"]), first_at.reindex(opps["id_"])
    created = given.where(given.notna() & ~(first < given), first)  # the first history row, when earlier
    first_stage = entries.groupby("opportunity_id")["stage"].first()
    report["deals created at a later stage (entered after the fact)"] = int((first_stage != config.open[0]).sum())

    account = _id(opps["accountid"]) if "accountid" in opps else pd.Series(None, index=opps.index, dtype=object)
    canonical = _opportunities(src, opps, created, close, amount_raw / rate, amount_raw, account, report)
    fields = _field_history(src, hist, opps, rate, problems)
    activities = _activities(src, set(opps["id_"]), account, opps, report, problems, attach_account_tasks, entries)
    if problems:
        raise ExportInvalid(problems)
    stage_history = entries.rename(columns={"at": "entered_at"})[["opportunity_id", "stage", "entered_at"]]
    for table in (canonical, stage_history, activities, fields):  # joined by 15-character keys, written back as the export has them
        if table is not None:
            table["opportunity_id"] = table["opportunity_id"].map(as_written)
    _counted(src, report, stage_history, config, len(canonical))
    header = "Written by `oppscore import salesforce` from " + str(src.folder) + "\n" + "\n".join(said)
    segments = [s for s in SEGMENTS if canonical[s].notna().any() and canonical[s].nunique() >= 2]
    return Imported(Tables(canonical, stage_history, activities, fields), config, segments, report, header, said, objects)


def _entries(hist: pd.DataFrame, opps: pd.DataFrame, created: pd.Series, problems: list[Problem], report: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The history rows of known deals in time order, and the stage entries among them (a row
    is an entry only when the stage changes); a deal without any history row is in its current
    stage since its creation."""
    hist = hist.assign(oid=_id(hist["opportunityid"]), at=_times(hist, "createddate", problems, required=True), stage=_text(hist, "stagename").str.strip())
    orphans = ~hist["oid"].isin(opps["id_"])
    report["OpportunityHistory rows of unknown opportunities dropped"] = int(orphans.sum())
    hist = hist[~orphans & hist["at"].notna()].sort_values(["oid", "at", "_line"], kind="stable").reset_index(drop=True)
    same_deal = hist["oid"].eq(hist["oid"].shift())
    entry = ~same_deal | hist["stage"].ne(hist["stage"].shift())
    entries = hist.loc[entry & hist["stage"].notna(), ["oid", "stage", "at"]].rename(columns={"oid": "opportunity_id"})
    report["OpportunityHistory rows that were amount or close-date edits"] = int((~entry).sum())
    without = opps.loc[~opps["id_"].isin(entries["opportunity_id"])]
    if len(without):
        extra = pd.DataFrame({"opportunity_id": without["id_"], "stage": _text(without, "stagename"), "at": created[without.index]})
        entries = pd.concat([entries, extra.dropna(subset=["stage", "at"])], ignore_index=True)
        report["deals without history rows (their current stage at creation)"] = len(without)
    return hist, entries


def _team(src: _Source, opps: pd.DataFrame) -> pd.Series:
    """Each deal's team: its owner's role name (User → UserRole), where the export has them."""
    users = src.table("User", ["Id"])
    roles = src.table("UserRole", ["Id", "Name"])
    team = pd.Series(None, index=opps.index, dtype=object)
    if users is not None and roles is not None and "userroleid" in users:
        owner = _id(opps["ownerid"]) if "ownerid" in opps else pd.Series(None, index=opps.index, dtype=object)
        role_of = pd.Series(_id(users["userroleid"]).to_numpy(), index=_id(users["id"]))
        role_name = pd.Series(_text(roles, "name").to_numpy(), index=_id(roles["id"]))
        team = owner.map(role_of).map(role_name)
    return team


def _account_fields(src: _Source) -> pd.DataFrame:
    """Industry, country and type per account id (empty without an Account file)."""
    accounts = src.table("Account", ["Id"])
    if accounts is None:
        return pd.DataFrame(index=pd.Index([], dtype=object))
    acc = pd.DataFrame({"industry": _text(accounts, "industry").to_numpy(), "country": _text(accounts, "billingcountry").to_numpy(),
                        "account_type": _text(accounts, "type").to_numpy()}, index=_id(accounts["id"]))
    return acc[~acc.index.duplicated()]


def _opportunities(src: _Source, opps: pd.DataFrame, created: pd.Series, close: pd.Series, amount: pd.Series, amount_raw: pd.Series, account: pd.Series, report: dict) -> pd.DataFrame:
    """The contract's opportunities with their segments (team, account fields, lead source,
    type) and the custom fields of a few values, each under its own name."""
    no_id = pd.Series(None, index=opps.index, dtype=object)
    team = _team(src, opps)
    acc = _account_fields(src)
    canonical = pd.DataFrame({
        "opportunity_id": opps["id_"].to_numpy(),
        "created_at": created.astype(TS_DTYPE).to_numpy(),
        "amount": amount.fillna(0.0).to_numpy(),
        "amount_missing": np.where(amount_raw.isna(), "yes", None).astype(object),
        "amount_original": amount_raw.to_numpy(),
        "currency": _text(opps, "currencyisocode").to_numpy(),
        "account_id": (_written(opps["accountid"]) if "accountid" in opps else no_id).to_numpy(),
        "owner_id": (_written(opps["ownerid"]) if "ownerid" in opps else no_id).to_numpy(),
        "team": team.to_numpy(),
        "industry": account.map(acc["industry"]).to_numpy() if "industry" in acc else None,
        "country": account.map(acc["country"]).to_numpy() if "country" in acc else None,
        "account_type": account.map(acc["account_type"]).to_numpy() if "account_type" in acc else None,
        "lead_source": _text(opps, "leadsource").to_numpy(),
        "type": _text(opps, "type").to_numpy(),
        "expected_close_date": close.to_numpy(),
    })
    custom = {}
    for raw_col in [c for c in opps.columns if _custom(c)]:  # each under its own name: Budget_Confirmed__c is not BudgetConfirmed__c
        distinct = opps[raw_col].nunique()
        if 2 <= distinct <= 50:
            name = raw_col.removesuffix("__c").lower()
            name = name if name not in canonical.columns else raw_col.lower()  # never over a standard column (Team__c beside the role's team)
            canonical[name] = _text(opps, raw_col).to_numpy()
            custom[name] = int(distinct)
    report["custom fields kept as columns (opt in through [segments] columns)"] = custom
    report["deals without an amount (amount 0, amount_missing = yes)"] = int(amount_raw.isna().sum())
    return canonical


def _counted(src: _Source, report: dict, stage_history: pd.DataFrame, config: StageConfig, imported: int) -> None:
    """The report's closing counts: control bytes dropped, deals by final state, rows read per file."""
    if src.control:
        report["control bytes dropped from columns oppscore does not read (values)"] = dict(src.control)
    state = stage_history.groupby("opportunity_id")["stage"].last()
    report["won"] = int((state == config.won).sum())
    report["lost"] = int((state == config.lost).sum())
    report["open"] = int(len(state) - report["won"] - report["lost"])
    report["opportunities imported"] = imported
    for name, counts in src.read.items():
        report[f"{name}.csv"] = counts


def _field_history(src: _Source, hist: pd.DataFrame, opps: pd.DataFrame, rate: pd.Series, problems: list[Problem]) -> pd.DataFrame:
    """Amount and close date (and probability, forecast category) each time they changed."""
    rate_of = pd.Series(rate.to_numpy(), index=opps["id_"])
    rows = []
    for col, name in (("amount", "amount"), ("closedate", "expected_close_date"), ("probability", "probability"), ("forecastcategory", "forecast_category")):
        if col not in hist.columns:
            continue
        value = hist[col].str.strip()
        changed = value.ne(value.groupby(hist["oid"]).shift()) & value.notna()
        part = hist.loc[changed, ["oid", "at"]].assign(field=name, value=value[changed])
        rows.append(part)
    extra = src.table("OpportunityFieldHistory", ["OpportunityId", "Field", "CreatedDate"])
    if extra is not None and len(extra):
        names = {"amount": "amount", "closedate": "expected_close_date", "probability": "probability", "forecastcategoryname": "forecast_category", "forecastcategory": "forecast_category"}
        field_key = extra["field"].map(key).map(names)
        mine = field_key.notna() & _id(extra["opportunityid"]).isin(opps["id_"])
        part = pd.DataFrame({"oid": _id(extra["opportunityid"])[mine], "at": _times(extra, "createddate", problems)[mine],
                             "field": field_key[mine], "value": _text(extra, "newvalue")[mine]})
        rows.append(part)
    if not rows:
        return None
    fields = pd.concat(rows, ignore_index=True).dropna(subset=["value", "at"])
    amounts = fields["field"] == "amount"
    converted = pd.to_numeric(fields.loc[amounts, "value"], errors="coerce") / fields.loc[amounts, "oid"].map(rate_of)
    fields.loc[amounts, "value"] = converted.map(lambda v: None if pd.isna(v) else repr(float(v)))
    dates = fields["field"] == "expected_close_date"
    fields.loc[dates, "value"] = pd.to_datetime(fields.loc[dates, "value"].str.strip(), utc=True, errors="coerce", format="ISO8601").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = fields.dropna(subset=["value"]).sort_values(["oid", "at"], kind="stable")
    return fields.rename(columns={"oid": "opportunity_id", "at": "changed_at"})[["opportunity_id", "field", "value", "changed_at"]].reset_index(drop=True)


def _activities(src, opp_ids, account, opps, report, problems, attach_account_tasks, entries) -> pd.DataFrame:
    """Completed tasks and events linked to an opportunity; the others counted."""
    out = []
    linked: dict[str, int] = {}
    end = entries["at"].max()
    for name, time_cols in (("Task", ("completeddatetime", "activitydate")), ("Event", ("startdatetime", "activitydatetime"))):
        frame = src.table(name, ["WhatId"])
        if frame is None:
            continue
        what = _id(frame["whatid"])
        when = pd.Series(pd.NaT, index=frame.index, dtype=TS_DTYPE)
        for col in time_cols:
            when = when.fillna(_times(frame, col, problems))
        if name == "Task":
            done = _flag(frame, "isclosed") | frame.get("status", pd.Series("", index=frame.index)).fillna("").str.lower().eq("completed")
            report["Task: open tasks (not completed) left out"] = int((~done).sum())
            when = when.where(done)
            subtype = _text(frame, "tasksubtype").fillna(_text(frame, "type")).fillna("task")
        else:
            subtype = _text(frame, "eventsubtype").fillna(_text(frame, "type")).fillna("meeting")
            subtype = subtype.where(subtype.str.lower() != "event", "meeting")
        future = when > end
        when = when.where(~future)
        on_opp = what.isin(opp_ids)
        on_account = what.notna() & ~on_opp & what.str.startswith("001")
        linked[f"{name}: on an opportunity"] = int(on_opp.sum())
        linked[f"{name}: on an account only"] = int(on_account.sum())
        linked[f"{name}: on a contact, lead or nothing"] = int((~on_opp & ~on_account).sum())
        if future.any():
            linked[f"{name}: dated after the export's last stage change (left out)"] = int(future.sum())
        direction = _text(frame, "calltype").str.lower().where(lambda d: d.isin(["inbound", "outbound"]), None)
        keep = on_opp & when.notna()
        out.append(pd.DataFrame({"opportunity_id": what[keep], "occurred_at": when[keep], "type": subtype[keep].str.strip().str.lower(),
                                 "direction": direction[keep], "owner_id": _written(frame["ownerid"])[keep] if "ownerid" in frame else None,
                                 "contact_id": _written(frame["whoid"])[keep] if "whoid" in frame else None}))
        if attach_account_tasks and on_account.any():
            open_deals = pd.DataFrame({"opportunity_id": list(opp_ids)}).assign(account=lambda d: d["opportunity_id"].map(pd.Series(account.to_numpy(), index=opps["id_"])))
            acc_rows = pd.DataFrame({"account": what[on_account & when.notna()], "occurred_at": when[on_account & when.notna()], "type": subtype[on_account & when.notna()].str.lower()})
            attached = acc_rows.merge(open_deals, on="account")
            created = pd.Series(entries.groupby("opportunity_id")["at"].min())
            attached = attached[attached["occurred_at"].to_numpy() >= attached["opportunity_id"].map(created).to_numpy()]
            out.append(attached[["opportunity_id", "occurred_at", "type"]])
            linked[f"{name}: account tasks attached to that account's deals"] = len(attached)
    report["activities by what they are linked to"] = linked
    return pd.concat(out, ignore_index=True) if out else None
