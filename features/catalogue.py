"""Every feature in one place: its column, its family, the reason group a manager reads, its
sentence and the direction that usually helps a deal win.

The frame's columns, the reasons (`scoring.explain`) and the data-sufficiency report read this
table, so a feature is added as its computation plus one entry here, and a test fails when a
column has no entry or an entry no column. Some entries stand for a column per value the
export has (an activity type, a segment column, a win-rate key): `entries` makes them concrete
for one vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

WINDOWS = (7, 30, 90)  # activity counts over the last w days
TYPE_WINDOWS = (30, 90)  # per activity type
FAMILIES = ("stage-dwell", "activity", "segment")


@dataclass(frozen=True)
class Reading:
    """What a sentence reads: the deal's features now, won deals' medians at its stage."""

    feature: str
    row: dict
    reference: dict

    @property
    def value(self):
        return self.row.get(self.feature)

    @property
    def missing(self) -> bool:
        v = self.value
        return v is None or (isinstance(v, float) and math.isnan(v))

    @property
    def ref(self) -> float | None:
        """Won deals' median at this stage, when known."""
        ref = self.reference.get(self.feature)
        return None if ref is None or (isinstance(ref, float) and math.isnan(ref)) else ref

    @property
    def stage(self):
        return self.row.get("stage")


Says = Callable[[Reading], str]


@dataclass(frozen=True)
class Feature:
    name: str
    family: str  # one of FAMILIES: what the sufficiency report weighs as a whole
    factor: str  # reason group: contributions are summed per factor
    says: Says
    helps: int  # +1: more of it usually helps a win, -1: less does, 0: neither in general
    says_missing: bool = False  # `says` words a missing value itself
    from_outcomes: bool = False  # a statistic of the outcomes so far: it moves as deals close, by design (drift does not flag it)

    def sentence(self, r: Reading) -> str:
        """A reason never fails on a value the export did not give (a deal without a row, a
        median that is NaN): it says the value is not known."""
        if r.missing and not self.says_missing:
            return f"{self.factor}: not known"
        return self.says(r)


def days(v: float) -> str:
    n = int(round(v))
    return "less than a day" if n < 1 else f"{n} day" + ("" if n == 1 else "s")


def times(n: float, one: str, many: str) -> str:
    """`n` things in words: 1 activity, 2 activities."""
    n = int(n or 0)
    return f"{n} {one if n == 1 else many}"


def _stage(r: Reading) -> str:
    further = r.row.get("furthest_progress", 0) > r.row.get("stage_progress", 0)
    return f"in stage {r.stage}" + (", having been further along before" if further else "")


def _time_in_stage(r: Reading) -> str:  # days in stage and the dwell ratio both read as time in the stage
    typical = Reading("days_in_stage", r.row, r.reference).ref
    return f"{days(r.row.get('days_in_stage'))} in {r.stage}" + (f"; won deals typically moved on within {days(typical)}" if typical is not None else "")


def _versus_won(text: str, r: Reading, shown: Callable[[float], str], won: str = "won deals at this stage") -> str:
    return text + (f" ({won}: {shown(r.ref)})" if r.ref is not None else "")


def _activities(window: str) -> Says:
    def says(r: Reading) -> str:
        base = f"{times(r.row.get(f'activities_{window}', 0), 'activity', 'activities')} in the last {window.removesuffix('d')} days"
        ref = Reading(f"activities_{window}", r.row, r.reference).ref
        return base + (f" (won deals at this stage: {ref:.0f})" if ref is not None else "")

    return says


def _since_activity(r: Reading) -> str:
    said = "no activity logged yet" if r.missing else ("an activity within the last day" if r.value < 1 else f"no activity for {days(r.value)}")
    return said + (f"; won deals at this stage typically had one within {days(r.ref)}" if r.ref is not None else "")


def _since_inbound(r: Reading) -> str:
    if r.missing:
        return "the customer has not reached out yet"
    return _versus_won(f"last contact from the customer {days(r.value)} ago", r, days)


def _inbound_share(r: Reading) -> str:
    return "no activities yet" if r.missing else _versus_won(f"{r.value:.0%} of activities came from the customer", r, lambda v: f"{v:.0%}", "won deals")


def _days_to_close(r: Reading) -> str:
    if r.missing:
        return "no expected close date recorded"
    return f"{days(-r.value)} past its expected close date" if r.value < 0 else f"expected to close in {days(r.value)}"


def _pushes(r: Reading) -> str:
    pushes, pushed = r.row.get("close_date_pushes"), r.row.get("close_date_days_pushed")
    if pushes is None or (isinstance(pushes, float) and math.isnan(pushes)) or not pushes:
        return "close date never pushed"
    return f"close date pushed {int(pushes)} time(s), {days(0 if pushed is None or math.isnan(pushed) else pushed)} in all"


def _amount_change(r: Reading) -> str:
    if r.missing or abs(r.value) < 1e-9:
        return "amount unchanged since it was first recorded"
    return f"amount {math.expm1(r.value):+.0%} since it was first recorded"


def _activity_type(kind: str, window: int) -> Feature:
    words = kind.replace("_", " ")
    return Feature(
        f"{kind}_{window}d", "activity", f"{words}s",
        lambda r: _versus_won(f"{times(r.value, words, words + 's')} in the last {window} days", r, lambda v: f"{v:.1f}"), +1,
    )


def _segment(column: str) -> Feature:
    words = column.replace("_", " ")
    return Feature(column, "segment", words, lambda r: f"{words}: {r.value}" if not r.missing else f"no {words} given", 0, says_missing=True)


def _win_rate(key: str) -> Feature:
    factor = {"owner_id": "owner's track record", "account_id": "account history"}.get(key, key.replace("_", " "))

    def says(r: Reading) -> str:
        label = {"owner_id": "the owner", "account_id": "the account"}.get(key, f"{key.replace('_', ' ')} {r.row.get(key, '')!s}".strip())
        return f"{label} has won {r.value:.0%} of closed deals so far"

    return Feature(f"win_rate_{key}", "segment", factor, says, +1, from_outcomes=True)


STAGE = [
    Feature("stage", "stage-dwell", "pipeline stage", _stage, 0, says_missing=True),
    Feature("stage_progress", "stage-dwell", "pipeline stage", _stage, +1),
    Feature("days_in_stage", "stage-dwell", "time in stage", _time_in_stage, -1),
    Feature("dwell_ratio", "stage-dwell", "time in stage", _time_in_stage, -1),
    Feature("age_days", "stage-dwell", "deal momentum", lambda r: _versus_won(f"open for {days(r.value)}", r, days), -1),
    Feature("stage_changes", "stage-dwell", "deal momentum", lambda r: f"{times(r.value, 'stage change', 'stage changes')} so far", 0),
    Feature("moves_back", "stage-dwell", "deal momentum", lambda r: "moved back to an earlier stage " + ("once" if int(r.value) == 1 else f"{int(r.value)} times"), -1),
    Feature("furthest_progress", "stage-dwell", "pipeline stage", _stage, +1),
    Feature("stage_velocity", "stage-dwell", "deal momentum", lambda r: _versus_won(f"advancing {r.value:.1f} stages per 30 days", r, lambda v: f"{v:.1f}", "won deals"), +1),
    Feature("reopened", "stage-dwell", "deal momentum", lambda r: "re-opened after a loss" if r.value else "never lost before", -1),
]
ACTIVITY_COUNTS = [Feature(f"activities_{w}d", "activity", "activity volume", _activities(f"{w}d"), +1) for w in WINDOWS]
ACTIVITY = [
    Feature("days_since_activity", "activity", "recent activity", _since_activity, -1, says_missing=True),
    Feature("days_since_inbound", "activity", "customer engagement", _since_inbound, -1, says_missing=True),
    Feature("inbound_share", "activity", "customer engagement", _inbound_share, +1, says_missing=True),
    Feature("distinct_contacts", "activity", "customer engagement", lambda r: _versus_won(f"{times(r.value, 'contact', 'contacts')} involved", r, lambda v: f"{v:.1f}"), +1),
    Feature("activity_trend", "activity", "activity volume", _activities("30d"), +1),
]
AMOUNT = Feature("log_amount", "segment", "deal size", lambda r: f"deal size {math.expm1(r.value):,.0f}" if not r.missing else "deal size unknown", 0, says_missing=True)
# from the field history: missing without one, never guessed from today's value
FIELD_HISTORY = [
    Feature("days_to_close", "stage-dwell", "close date", _days_to_close, 0, says_missing=True),
    Feature("close_date_pushes", "stage-dwell", "close date", _pushes, -1, says_missing=True),
    Feature("close_date_days_pushed", "stage-dwell", "close date", _pushes, -1, says_missing=True),
    Feature("amount_change", "segment", "deal size", _amount_change, 0, says_missing=True),
]


@functools.lru_cache(maxsize=64)
def entries(segment_columns: tuple[str, ...], activity_types: tuple[str, ...], stat_keys: tuple[str, ...], field_history: bool) -> dict[str, Feature]:
    """The features of one vocabulary by column, in the frame's column order (read per row
    that is explained: made once per vocabulary)."""
    made = [
        *STAGE,
        *ACTIVITY_COUNTS,
        *(_activity_type(t, w) for t in activity_types for w in TYPE_WINDOWS),
        *ACTIVITY,
        *(_segment(c) for c in segment_columns),
        AMOUNT,
        *(_win_rate(k) for k in stat_keys),
        *(FIELD_HISTORY if field_history else []),
    ]
    by_name = {f.name: f for f in made}
    if len(by_name) < len(made):
        twice = sorted({f.name for f in made if sum(g.name == f.name for g in made) > 1})
        raise ValueError(f"feature names {twice} come twice: a segment column or activity type is named like another feature; rename it in oppscore.toml")
    return by_name
