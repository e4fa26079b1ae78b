"""The data contract of DESIGN.md, checked once at the boundary.

Every problem is collected before anything is raised, so one run lists all that must be fixed,
each with its table, row, column, the value found and what was expected. Values are coerced
here (keeping the original text for the message); pandera then checks the typed frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features import asof
from features.errors import ExportInvalid, Problem
from features.loading import RawTable, read_raw
from features.settings import Settings, StageConfig
from features.stages import StageOrder, infer_stage_config
from features.stays import final_states
from features.tables import (
    ACTIVITIES,
    FIELD_HISTORY,
    NOT_SEGMENTS,
    OPPORTUNITIES,
    OPTIONAL_TABLES,
    REQUIRED,
    STAGE_HISTORY,
    TABLE_NAMES,
    TIMESTAMPS,
    TRACKED_FIELDS,
    TS_DTYPE,
    Columns,
    Tables,
    columns_of,
    empty,
)
from features.times import NAT, from_ns

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = pd.Timedelta(minutes=5)  # clock skew between the CRM and us
NOT_CHECKED_FOR_FUTURE = {"expected_close_date"}  # a close date is expected to lie ahead
_TS_MIN, _TS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


@dataclass(frozen=True)
class Validated:
    tables: Tables
    stages: StageOrder
    notes: list[str]


Locator = Callable[[int], str]


def _locator(raw: RawTable) -> Locator:
    return lambda i: f"{raw.unit} {raw.where(i)}"


def _show(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return "an empty value"
    return repr(str(value))


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def rows(self, table: str, locate: Locator, index: pd.Index | np.ndarray, column: str | None, found: pd.Series | np.ndarray | list, expected: str) -> None:
        for i, value in zip(index, found, strict=True):
            self.problems.append(Problem(table, locate(int(i)), column, _show(value), expected, int(i)))

    def table(self, table: str, found: str, expected: str, column: str | None = None) -> None:
        self.problems.append(Problem(table, None, column, found, expected))


def _coerce(raw: RawTable, out: _Collector, locate: Locator) -> pd.DataFrame | None:
    """Typed copy of a table; unparseable values are reported and become missing."""
    frame = raw.frame
    missing = [c for c in REQUIRED[raw.name] if c not in frame.columns]
    for col in missing:
        out.table(raw.label, "no such column", f"a column named {col!r} (required)", column=col)
    if missing:
        return None
    if frame.empty and raw.name not in OPTIONAL_TABLES:
        out.table(raw.label, "no rows", "at least one row")
        return None
    typed = frame.reset_index(drop=True)  # a copy, indexed by row position: what locators read
    for col in typed.columns:
        if col not in TIMESTAMPS[raw.name] and col != "amount":
            typed[col] = typed[col].astype("object").where(typed[col].notna(), None)
            typed[col] = typed[col].map(lambda v: v if v is None else str(v).strip() or None)
    for col in TIMESTAMPS[raw.name]:
        if col not in typed.columns:
            continue
        parsed = pd.to_datetime(typed[col], utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna() & typed[col].notna()
        if bad.any():
            out.rows(raw.label, locate, typed.index[bad], col, typed.loc[bad, col], "an ISO 8601 timestamp")
        beyond = parsed.notna() & ((parsed > _TS_MAX) | (parsed < _TS_MIN))
        if beyond.any():
            expected = "a time not after now" if col not in NOT_CHECKED_FOR_FUTURE else "a timestamp between 1678 and 2261"
            out.rows(raw.label, locate, typed.index[beyond], col, parsed[beyond].astype(str), expected)
            parsed = parsed.where(~beyond)
        typed[col] = parsed.astype(TS_DTYPE)
    if "amount" in typed.columns:
        amount = pd.to_numeric(typed["amount"], errors="coerce")
        bad = amount.isna() & typed["amount"].notna()
        if bad.any():
            out.rows(raw.label, locate, typed.index[bad], "amount", typed.loc[bad, "amount"], "a number ≥ 0")
        typed["amount"] = amount.astype("float64")
    return typed


def _schema(table: str) -> pa.DataFrameSchema:
    """Per-column rules of a file: required values present, amounts not negative."""
    ts = lambda: pa.Column(TS_DTYPE, nullable=False)  # noqa: E731
    if table == OPPORTUNITIES:
        return pa.DataFrameSchema(
            {
                "opportunity_id": pa.Column(object, nullable=False),
                "created_at": ts(),
                "amount": pa.Column("float64", pa.Check(lambda s: s >= 0, error="a number ≥ 0"), nullable=False),
            }
        )
    if table == STAGE_HISTORY:
        return pa.DataFrameSchema({"opportunity_id": pa.Column(object, nullable=False), "stage": pa.Column(object, nullable=False), "entered_at": ts()})
    if table == FIELD_HISTORY:
        return pa.DataFrameSchema(
            {
                "opportunity_id": pa.Column(object, nullable=False),
                "field": pa.Column(object, pa.Check.isin(TRACKED_FIELDS, error=f"one of {', '.join(TRACKED_FIELDS)}"), nullable=False),
                "value": pa.Column(object, nullable=True),
                "changed_at": ts(),
            }
        )
    return pa.DataFrameSchema({"opportunity_id": pa.Column(object, nullable=False), "occurred_at": ts(), "type": pa.Column(object, nullable=False)})


_CHECK_TEXT = {"not_nullable": "a value (the column is required)"}


def _run_schema(schema: pa.DataFrameSchema, frame: pd.DataFrame, label: str, locate: Locator, out: _Collector, already: set[tuple[int, str]]) -> None:
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for case in cases.itertuples(index=False):
            if case.index is None or pd.isna(case.index):
                continue
            i, col = int(case.index), str(case.column)
            if (i, col) in already:  # an unparseable value is reported once, not again as empty
                continue
            expected = _CHECK_TEXT.get(str(case.check), str(case.check))
            out.rows(label, locate, pd.Index([i]), col, [frame.at[i, col]], expected)


def _field_values(fields: pd.DataFrame, label: str, locate: Locator, out: _Collector) -> None:
    """An amount must be a number ≥ 0 and a close date an ISO 8601 date; probability and
    forecast category are kept as the CRM wrote them."""
    for field, parse, expected in (
        ("amount", lambda v: pd.to_numeric(v, errors="coerce").where(lambda x: x >= 0), "a number ≥ 0 (the new amount)"),
        ("expected_close_date", lambda v: pd.to_datetime(v, utc=True, errors="coerce", format="ISO8601"), "an ISO 8601 date (the new close date)"),
    ):
        mine = fields["field"].eq(field) & fields["value"].notna()
        bad = mine & parse(fields["value"].where(mine)).isna()
        if bad.any():
            out.rows(label, locate, fields.index[bad], "value", fields.loc[bad, "value"], expected)


def _stamps(values: np.ndarray) -> list[pd.Timestamp]:
    return [pd.Timestamp(v, tz="UTC") for v in values]


def _future_times(typed: dict[str, Columns | None], now: pd.Timestamp | None, report) -> None:
    """Times after now (beyond a small tolerance); none checked when `now` is None (events: a
    time after now is kept and counts from its time on)."""
    if now is None:
        return
    latest = (now + FUTURE_TOLERANCE).value
    for name, columns in typed.items():
        for col in TIMESTAMPS[name] if columns is not None else []:
            if col in columns and col not in NOT_CHECKED_FOR_FUTURE:
                late = columns[col] > latest  # NaT is the smallest value, never late
                if late.any():
                    found = pd.Series(from_ns(columns[col][late])).astype(str)
                    report(name, late, col, found, f"a time not after now ({now:%Y-%m-%d %H:%M} UTC)")


def _unknown_stages(hist: Columns, stage_names: list[str], report) -> None:
    codes, names = asof.factorize(hist["stage"])
    known = np.array([n in stage_names for n in names] + [True])  # the last: missing, reported elsewhere
    unknown = ~known[codes]
    if unknown.any():
        report(STAGE_HISTORY, unknown, "stage", hist["stage"][unknown], f"a stage named in the config ({', '.join(stage_names)})")


def _rules(
    typed: dict[str, Columns | None], stage_names: list[str] | None, now: pd.Timestamp,
    labels: dict[str, str], locators: dict[str, Locator], out: _Collector,
) -> None:
    """Rules across rows and tables, for files and API requests alike. On arrays: the API runs
    them on every request, where pandas' fixed cost per operation would dominate."""

    def report(name: str, mask: np.ndarray, column: str, found: list | np.ndarray, expected: str) -> None:
        out.rows(labels[name], locators[name], np.flatnonzero(mask), column, found, expected)

    _future_times(typed, now, report)
    opps, hist, acts = typed[OPPORTUNITIES], typed[STAGE_HISTORY], typed[ACTIVITIES]
    if hist is not None and stage_names:
        _unknown_stages(hist, stage_names, report)
    if opps is None:
        return
    known_ids = asof.Codebook(opps["opportunity_id"])
    codes = known_ids.codes_of_rows
    first_row = np.full(len(known_ids), -1, dtype=np.int64)
    first_row[codes[::-1]] = np.arange(len(codes))[::-1]  # reversed: the first row of an id wins
    dup = (codes >= 0) & (first_row[codes] != np.arange(len(codes)))
    if dup.any():
        report(OPPORTUNITIES, dup, "opportunity_id", opps["opportunity_id"][dup], "a unique opportunity_id (this one appears on an earlier row)")
    created = opps["created_at"]

    def created_of(columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """Each row's opportunity's created_at (ns), and whether its opportunity is known."""
        at = known_ids.codes(columns["opportunity_id"])
        found = at >= 0
        return np.where(found, created[first_row[np.maximum(at, 0)]] if len(created) else 0, NAT), found

    for name, columns in ((STAGE_HISTORY, hist), (ACTIVITIES, acts), (FIELD_HISTORY, typed.get(FIELD_HISTORY))):
        if columns is None:
            continue
        _, found = created_of(columns)
        unknown = ~found & pd.notna(columns["opportunity_id"])
        if unknown.any():
            report(name, unknown, "opportunity_id", columns["opportunity_id"][unknown], "an opportunity_id listed in opportunities")
    if hist is None:
        return
    when, _ = created_of(hist)
    entered = hist["entered_at"]
    early = (entered != NAT) & (when != NAT) & (entered < when)
    if early.any():
        for i, value, c in zip(np.flatnonzero(early), _stamps(entered[early]), _stamps(when[early]), strict=True):
            exp = f"a time at or after the opportunity's created_at ({c:%Y-%m-%d %H:%M:%S} UTC)"
            out.problems.append(Problem(labels[STAGE_HISTORY], locators[STAGE_HISTORY](int(i)), "entered_at", repr(str(value)), exp, int(i)))
    if acts is not None and len(acts["opportunity_id"]):
        act_when, _ = created_of(acts)
        occurred = acts["occurred_at"]
        early = (occurred != NAT) & (act_when != NAT) & (occurred < act_when - pd.Timedelta(days=365).value)
        # activities a little before creation are normal (the first call creates the deal); a year before is a data error
        if early.any():
            report(ACTIVITIES, early, "occurred_at", _stamps(occurred[early]), "a time no more than a year before the opportunity's created_at")
    with_history = np.zeros(len(known_ids) + 1, dtype=bool)
    with_history[known_ids.codes(hist["opportunity_id"])] = True  # unknown ids (-1) mark the spare last slot
    without = (codes >= 0) & ~with_history[codes]
    if without.any():
        report(OPPORTUNITIES, without, "opportunity_id", opps["opportunity_id"][without], "at least one stage_history row for this opportunity")


def validate_raw(
    raw: dict[str, RawTable | None],
    stages: StageConfig | None,
    now: pd.Timestamp,
    locators: dict[str, Locator] | None = None,
) -> Validated:
    """Typed, checked tables, or ExportInvalid listing every problem; `now`: no time may lie
    after it (the caller's clock)."""
    out = _Collector()
    typed: dict[str, pd.DataFrame | None] = {}
    labels: dict[str, str] = {}
    locs: dict[str, Locator] = {}
    unparseable: dict[str, set[tuple[int, str]]] = {}
    for name in TABLE_NAMES:
        table = raw.get(name)
        if table is None:
            if name not in OPTIONAL_TABLES:
                out.table(name, "no file", f"{name}.csv or {name}.parquet in the export folder")
            typed[name] = None
            labels[name] = name
            continue
        labels[name] = table.label
        locs[name] = (locators or {}).get(name) or _locator(table)
        before = len(out.problems)
        typed[name] = _coerce(table, out, locs[name])
        unparseable[name] = {(p.row, p.column) for p in out.problems[before:] if p.row is not None}
    notes: list[str] = []
    config = stages
    hist = typed[STAGE_HISTORY]
    if config is None and hist is not None:
        try:
            config, message = infer_stage_config(hist.dropna(subset=["stage", "entered_at"]))
            notes.append(message)
        except ValueError as exc:
            out.table(labels[STAGE_HISTORY], str(exc), "at least an open, a won and a lost stage", column="stage")
    stage_names = StageOrder(config).names if config else None
    if typed[FIELD_HISTORY] is not None:
        _field_values(typed[FIELD_HISTORY], labels[FIELD_HISTORY], locs[FIELD_HISTORY], out)
    for name in TABLE_NAMES:
        if typed[name] is not None:
            _run_schema(_schema(name), typed[name], labels[name], locs[name], out, unparseable.get(name, set()))
    _rules({name: columns_of(f, name) if f is not None else None for name, f in typed.items()}, stage_names, now, labels, locs, out)
    if out.problems:
        raise ExportInvalid(out.problems)
    acts = typed[ACTIVITIES] if typed[ACTIVITIES] is not None else empty(ACTIVITIES)
    tables = Tables(typed[OPPORTUNITIES], typed[STAGE_HISTORY], acts, typed[FIELD_HISTORY])
    return Validated(tables, StageOrder(config), notes)


def rule_problems(columns: dict[str, Columns | None], stage_names: list[str] | None, now: pd.Timestamp | None, locators: dict[str, Locator]) -> list[Problem]:
    """The rules across rows and tables, on arrays whose types a schema has already checked;
    every problem, none raised (events are checked against their deal before and after).
    `now` None: no time is too late."""
    out = _Collector()
    _rules(columns, stage_names, now, {name: name for name in TABLE_NAMES}, locators, out)
    return out.problems


def validate_columns(columns: dict[str, Columns], stages: StageConfig, now: pd.Timestamp, locators: dict[str, Locator]) -> Validated:
    """Checked tables from arrays whose types, required values and ranges a schema has already
    checked (the API's pydantic models): only the rules across rows and tables run."""
    order = StageOrder(stages)
    problems = rule_problems(columns, order.names, now, locators)
    if problems:
        raise ExportInvalid(problems)
    return Validated(Tables.of_columns(columns[OPPORTUNITIES], columns[STAGE_HISTORY], columns[ACTIVITIES], columns.get(FIELD_HISTORY)), order, [])


def load_export(folder: Path, settings: Settings, now: pd.Timestamp) -> Validated:
    """Read and check an export folder; raises ExportInvalid."""
    raw = read_raw(Path(folder))
    validated = validate_raw(raw, settings.stages, now=now)
    _configured_columns_exist(validated.tables, settings)
    for note in validated.notes:
        log.warning(note)
    return validated


def _configured_columns_exist(tables, settings: Settings) -> None:
    """A `[segments]` column that the opportunities table does not have is a mistake in the
    config (a typo, a custom field under another name), not a segment to skip in silence."""
    have = list(tables.opportunities.columns)
    missing = [c for c in settings.segments.columns if c not in have]
    if missing:
        where = str(settings.config_path) if settings.config_path is not None else "settings"
        usable = [c for c in have if c not in NOT_SEGMENTS]
        raise ExportInvalid([Problem(where, "[segments]", "columns", repr(c), f"a column of the opportunities table: one of {', '.join(usable) or 'none (it has no column beyond the ids and times)'}")
                             for c in missing])


def _in_pipeline_order(counts: pd.Series, order: StageOrder) -> dict[str, int]:
    """Counts by stage in the pipeline's order (open stages, won, lost), any other name after."""
    names = [*order.open, order.config.won, order.config.lost]
    return {str(k): int(counts[k]) for k in [*(n for n in names if n in counts.index), *(n for n in counts.index if n not in names)]}


def summary(validated: Validated) -> dict[str, object]:
    """The one-screen picture of a valid export."""
    t = validated.tables
    order = validated.stages
    state = final_states(t.stage_history, order)["state"]
    won, lost = int((state == "won").sum()), int((state == "lost").sum())
    return {
        "opportunities": len(t.opportunities),
        "stage_history rows": len(t.stage_history),
        "activities rows": len(t.activities),
        "from": str(t.opportunities["created_at"].min()),
        "to": str(t.end),
        "open": len(state) - won - lost,
        "won": won,
        "lost": lost,
        "stages": " > ".join(order.open) + f" | won: {order.config.won} | lost: {order.config.lost}",
        "stage counts": _in_pipeline_order(t.stage_history["stage"].value_counts(), order),
    }


CLEAN_UP, CLEAN_UP_TIMES = 10, 4  # deals closed lost on one day, and times a usual day's, from which a day is a clean-up


def recording_warnings(tables: Tables, stages: StageOrder, end: pd.Timestamp | None = None) -> list[str]:
    """What an export says of how its CRM is kept, where that misleads a naive reading: no loss
    recorded at all, losses recorded in bulk clean-ups, and open deals older than any deal was
    when it was won (most likely lost, not yet recorded). Closed deals then look mostly won."""
    state = final_states(tables.stage_history, stages)
    won, lost, open_ = (int((state["state"] == k).sum()) for k in ("won", "lost", "open"))
    said = []
    if lost == 0 and won + open_ > 0:
        said.append(f"no deal is recorded lost ({won} won, {open_} open): closed deals look like wins. Win probabilities here need no loss record "
                    "(a deal not won within the label's horizon counts as not won), but stage weights and the funnel read recorded losses.")
    closes = tables.stage_history[tables.stage_history["stage"] == stages.config.lost]
    per_day = closes["entered_at"].dt.floor("D").value_counts()
    bulk = per_day[per_day >= max(CLEAN_UP, CLEAN_UP_TIMES * per_day.median())] if len(per_day) else per_day  # far above a usual day's losses
    if lost and bulk.sum() >= 0.2 * lost:
        days = ", ".join(f"{d:%Y-%m-%d} ({n})" for d, n in bulk.sort_index().head(5).items()) + (f" and {len(bulk) - 5} more days" if len(bulk) > 5 else "")
        said.append(f"{int(bulk.sum())} of {lost} losses were recorded in clean-ups ({days}): losses are recorded late, "
                    "so at any past date closed deals looked more won than they were.")
    created = tables.opportunities.set_index("opportunity_id")["created_at"]
    won_age = (state.loc[state["state"] == "won", "entered_at"] - created.reindex(state.index[state["state"] == "won"])).dt.days
    if won >= 5 and open_:
        oldest = int(won_age.max())
        age_now = ((end if end is not None else tables.end) - created.reindex(state.index[state["state"] == "open"])).dt.days
        stale = int((age_now > oldest).sum())
        if stale >= max(5, 0.2 * open_):
            said.append(f"{stale} of the {open_} open deals are older than any deal was when it was won ({oldest} days): most likely lost and not recorded yet.")
    return said
