"""The feature frame: stage-dwell, activity and segment features of opportunities as of times.

One function serves training snapshots, batch scoring and the API: it takes the tables, the
(opportunity, as_of) points to describe, and what was learned at training time (the spec and
the point-in-time statistics). Every per-row fact comes from an as-of join that reads only
rows at or before the point's time, so later rows cannot move a feature.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from features import asof, catalogue
from features.catalogue import TYPE_WINDOWS, WINDOWS
from features.pit_stats import MISSING, PointInTimeStats
from features.stages import StageOrder
from features.table_index import group_cumsum
from features.tables import NOT_SEGMENTS, TS_DTYPE, Tables
from features.times import DAY_NS, NAT, from_ns, ns, to_utc

log = logging.getLogger(__name__)
MAX_ACTIVITY_TYPES = 8
OTHER = "other"

Progress = Callable[[str], None]


@dataclass
class FeatureSpec:
    """What the features are, fixed at training time so serving builds the same columns. Never
    modified once made, so what derives from it is computed once (it is read on every request)."""

    stage_config: dict
    segment_columns: list[str]
    activity_types: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    shrinkage: float = 20.0
    field_history: bool = False  # the close-date and amount features (specs made before them: False)
    filled_at_close: list[str] = field(default_factory=list)  # columns the CRM fills when a deal closes: never read (`filled_at_close`)

    @cached_property
    def stages(self) -> StageOrder:
        from features.settings import StageConfig

        return StageOrder(StageConfig(**self.stage_config))

    @property
    def categorical(self) -> list[str]:
        return ["stage", *self.segment_columns]

    @property
    def stat_keys(self) -> list[str]:
        return [*self.segment_columns, *(k for k in ("owner_id", "account_id") if k not in self.filled_at_close)]

    @property
    def features(self) -> dict[str, catalogue.Feature]:
        """The catalogue's entries for this vocabulary by column, in column order (kept by the
        catalogue, not on the spec, which stays plain data to pickle)."""
        return catalogue.entries(tuple(self.segment_columns), tuple(self.activity_types), tuple(self.stat_keys), self.field_history)

    @cached_property
    def columns(self) -> list[str]:
        return list(self.features)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls(**json.loads(text))


def _most_frequent(counts: pd.Series, k: int) -> list[str]:
    """The k most frequent values, ties by name: the same whatever order the rows came in (a
    whole export or its partitions)."""
    ranked = counts.rename_axis("value").reset_index(name="n").sort_values(["n", "value"], ascending=[False, True], kind="stable")
    return ranked["value"].iloc[:k].tolist()


def make_spec(tables: Tables, stages: StageOrder, segment_columns: list[str], type_counts: pd.Series | None = None) -> FeatureSpec:
    """Learn the vocabulary (activity types, category levels) from the training tables;
    `type_counts`: the activity types' counts when the activities are not in `tables` (a
    partitioned export's first pass). The most frequent types, ties by name."""
    leaky = filled_at_close(tables, stages, [*segment_columns, "owner_id", "account_id"])
    present = [c for c in segment_columns if c in tables.opportunities.columns and c not in leaky]
    if type_counts is None:
        type_counts = tables.activities["type"].astype(str).str.strip().str.lower().value_counts()
    activity_types = [t for t in _most_frequent(type_counts, MAX_ACTIVITY_TYPES) if t and t != OTHER]
    categories = {"stage": list(stages.open)}
    for col in present:
        levels = tables.opportunities[col].dropna().astype(str).value_counts()
        categories[col] = sorted(_most_frequent(levels, 200)) + [MISSING]
    return FeatureSpec(stages.config.model_dump(), present, activity_types, categories, field_history=True, filled_at_close=leaky)


FILLED_OPEN, FILLED_CLOSED, FILLED_MIN_OPEN = 0.5, 0.05, 20


def filled_at_close(tables: Tables, stages: StageOrder, columns: list[str]) -> list[str]:
    """The columns a CRM fills in when a deal closes (Maven's account, Salesforce's loss-reason
    fields): empty for most deals open at the export's end, filled for nearly every closed one.
    The export holds today's values, so such a column tells which deals were still open at the
    end: a model learning from it would be judged on what it could not have known, and learn to
    call every deal without one dead. Found from the export (at least FILLED_MIN_OPEN open
    deals, more than FILLED_OPEN of them empty, at most FILLED_CLOSED of the closed ones) and
    never read; training says which."""
    from features.stays import final_states

    opps = tables.opportunities.drop_duplicates("opportunity_id").set_index("opportunity_id")
    state = final_states(tables.stage_history, stages)["state"].reindex(opps.index)
    still_open, closed = (state == "open").to_numpy(), state.isin(["won", "lost"]).to_numpy()
    if still_open.sum() < FILLED_MIN_OPEN or not closed.any():
        return []
    found = []
    for col in columns:
        if col in opps.columns:
            empty = opps[col].isna().to_numpy()
            if empty[still_open].mean() > FILLED_OPEN and empty[closed].mean() <= FILLED_CLOSED:
                found.append(col)
    return found


def segment_columns(settings, tables: Tables) -> list[str]:
    """The configured segment columns; without any, the text columns of the opportunities that
    look like segments (2 to 50 distinct values), and the log says which were taken."""
    if settings.segments.columns:
        return list(settings.segments.columns)
    opps = tables.opportunities
    skip = NOT_SEGMENTS | {"account_id", "owner_id"}
    found = [c for c in opps.columns if c not in skip and opps[c].dtype == object and 2 <= opps[c].nunique() <= 50]
    if found:
        log.warning("no [segments] columns in the config: using %s", ", ".join(found))
    return found


def open_points(tables: Tables, stages: StageOrder, as_of: pd.Timestamp) -> pd.DataFrame:
    """The (opportunity, as_of) points of every opportunity open at as_of."""
    as_of = to_utc(as_of)
    opps = tables.opportunities.loc[tables.opportunities["created_at"] <= as_of, ["opportunity_id"]]
    points = opps.assign(as_of=pd.Series(as_of, index=opps.index, dtype=TS_DTYPE)).reset_index(drop=True)
    state = state_arrays(tables, stages, Points.of(tables, points))
    return points[state["is_open"]].reset_index(drop=True)


@dataclass(frozen=True)
class Points:
    """(opportunity, as_of) points as arrays: ids, their codes in the tables' index, ns times."""

    ids: np.ndarray
    code: np.ndarray
    time: np.ndarray

    @classmethod
    def of(cls, tables: Tables, points: pd.DataFrame) -> Points:
        ids = points["opportunity_id"].to_numpy(dtype=object)
        return cls(ids, tables.index.codes(ids), ns(points["as_of"]))

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, mask: np.ndarray) -> Points:
        return Points(self.ids[mask], self.code[mask], self.time[mask])


def _days(later: np.ndarray, earlier: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Days between ns times, NaN where not valid (the division pandas does for Timedeltas)."""
    return np.where(valid, (later - np.where(valid, earlier, 0)) / DAY_NS, np.nan)


def _history_paths(tables: Tables, stages: StageOrder) -> dict[str, np.ndarray]:
    """Per stage-history row: its stage index and the opportunity's path up to and including it."""
    ix = tables.index
    index_of = stages.index_of_names(ix.hist_stages)
    code = ix.hist_stage_code
    idx = np.where(code >= 0, index_of[np.maximum(code, 0)], np.nan) if len(index_of) else np.full(len(code), np.nan)
    start = ix.hist_start
    n = len(idx)
    first = np.arange(n) == start
    prev = np.concatenate([[np.nan], idx[:-1]]) if n else idx
    is_open = (idx >= 0) & (idx < stages.n_open)
    back = ~first & is_open & (prev >= 0) & (idx < prev)
    reopen = ~first & is_open & ((prev < 0) | (prev == stages.won_index))
    # running maximum within each opportunity: lift each opportunity above the previous ones
    lift = (np.cumsum(first) - 1) * float(stages.n_open + 2)
    furthest = np.maximum.accumulate(np.where(idx >= 0, idx, -1.0) + lift) - lift if n else idx
    return {
        "index_now": idx,
        "changes": np.arange(n) - start,
        "moves_back": group_cumsum(back.astype(np.int64), start),
        "reopened": group_cumsum(reopen.astype(np.int64), start),
        "furthest": np.where(furthest < 0, -np.inf, furthest),
    }


STATE_COLUMNS = ["index_now", "changes", "moves_back", "reopened", "furthest"]


def state_arrays(tables: Tables, stages: StageOrder, points: Points) -> dict[str, np.ndarray]:
    """Per point: the stage it was in at its time and its path so far (arrays; entered_at in ns
    with `hit` saying where the opportunity had entered any stage by then)."""
    ix = tables.index
    pos = ix.hist_rows.last_at_or_before(points.code, points.time)
    hit = pos >= 0
    paths = _history_paths(tables, stages)
    state = {col: asof.take_array(paths[col], pos) for col in STATE_COLUMNS}
    names = np.append(ix.hist_stages, None)
    stage_code = ix.hist_stage_code[np.maximum(pos, 0)] if len(pos) and len(ix.hist_stage_code) else np.full(len(pos), -1)
    state["stage_now"] = names[np.where(hit, stage_code, -1)]
    state["entered_at"] = np.where(hit, ix.hist_time[np.maximum(pos, 0)] if len(ix.hist_time) else 0, NAT)
    state["hit"] = hit
    state["is_open"] = (state["index_now"] >= 0) & (state["index_now"] < stages.n_open)
    return state


def stage_state(tables: Tables, stages: StageOrder, points: pd.DataFrame) -> pd.DataFrame:
    """Per point: the stage the opportunity was in at as_of and its path so far."""
    state = state_arrays(tables, stages, Points.of(tables, points))
    frame = pd.DataFrame({col: state[col] for col in ["stage_now", *STATE_COLUMNS, "is_open"]}, index=range(len(points)))
    frame.insert(0, "entered_at", from_ns(state["entered_at"]))
    return frame


def _stage_features(tables: Tables, stages: StageOrder, points: Points, state: dict, stats: PointInTimeStats, out: dict) -> None:
    ix = tables.index
    rows = ix.opportunity_rows(points.code)
    has_row = rows >= 0
    created = ix.opp_created[np.maximum(rows, 0)] if len(ix.opp_created) else np.zeros(len(points), dtype=np.int64)
    out["stage"] = np.where(state["is_open"], state["stage_now"], None)
    index = state["index_now"].astype("float64")
    out["stage_progress"] = stages.progress(index)
    days_in = _days(points.time, state["entered_at"], state["hit"])
    out["days_in_stage"] = days_in
    typical = stats.typical_dwell(state["stage_now"], points.time)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["dwell_ratio"] = days_in / np.maximum(typical, 0.5)
    age = _days(points.time, created, has_row)
    out["age_days"] = age
    out["stage_changes"] = state["changes"].astype("float64")
    out["moves_back"] = state["moves_back"].astype("float64")
    furthest = np.minimum(state["furthest"].astype("float64"), stages.n_open - 1)
    out["furthest_progress"] = stages.progress(furthest)
    out["stage_velocity"] = furthest / np.maximum(age, 1.0) * 30.0
    out["reopened"] = state["reopened"].astype("float64")


def _activity_features(tables: Tables, spec: FeatureSpec, points: Points, out: dict) -> None:
    ix = tables.index
    n = len(points)
    if len(ix.act_time) == 0:  # the activities table is optional: counts are zero, recencies unknown
        zero = [f"activities_{w}d" for w in WINDOWS] + [f"{t}_{w}d" for t in spec.activity_types for w in TYPE_WINDOWS]
        for col in [*zero, "distinct_contacts", "activity_trend"]:
            out[col] = np.zeros(n)
        for col in ("days_since_activity", "days_since_inbound", "inbound_share"):
            out[col] = np.full(n, np.nan)
        return
    start = ix.act_start

    def running(flags: np.ndarray) -> np.ndarray:  # per activity row: its opportunity's flagged rows so far
        return group_cumsum(flags.astype(np.int64), start)

    def at(counts: np.ndarray, pos: np.ndarray) -> np.ndarray:  # the count at the point's last row, 0 before any
        return np.where(pos >= 0, counts[np.maximum(pos, 0)], 0).astype("float64")

    pos = {w: ix.act_rows.last_at_or_before(points.code, points.time - w * DAY_NS) for w in (0, *sorted({*WINDOWS, 60}))}
    now = pos[0]
    every = np.arange(len(start)) - start + 1
    total = at(every, now)
    for w in WINDOWS:
        out[f"activities_{w}d"] = total - at(every, pos[w])
    for t in spec.activity_types:  # one type's counts at a time: each is an array per activity
        counts = running(ix.act_kind == (ix.act_kinds.index(t) if t in ix.act_kinds else -2))
        c = at(counts, now)
        for w in TYPE_WINDOWS:
            out[f"{t}_{w}d"] = c - at(counts, pos[w])
    hit = now >= 0
    out["days_since_activity"] = _days(points.time, ix.act_time[np.maximum(now, 0)], hit)
    # the last inbound row at or before the point's last row, if it is the same opportunity's
    last_in = np.maximum.accumulate(np.where(ix.act_inbound, np.arange(len(start)), -1))[np.maximum(now, 0)]
    inbound_hit = hit & (last_in >= 0) & (last_in >= start[np.maximum(now, 0)])
    out["days_since_inbound"] = _days(points.time, ix.act_time[np.maximum(last_in, 0)], inbound_hit)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["inbound_share"] = np.where(total > 0, at(running(ix.act_inbound), now) / np.maximum(total, 1), np.nan)
    out["distinct_contacts"] = at(running(ix.act_new_contact), now)
    out["activity_trend"] = out["activities_30d"] - (at(every, pos[30]) - at(every, pos[60]))


def _field_features(tables: Tables, points: Points, out: dict) -> dict[str, np.ndarray]:
    """Close date and amount as known at each point, from the field history (NaN without one):
    days to the expected close (negative once past it), how often and by how many days it was
    pushed, and the amount then with its change since the first recorded value."""
    ix = tables.index
    close = ix.close.rows.last_at_or_before(points.code, points.time)
    hit = close >= 0
    at = np.maximum(close, 0)
    pick = lambda values: np.where(hit, values[at], np.nan) if len(values) else np.full(len(points), np.nan)  # noqa: E731
    out["days_to_close"] = (pick(ix.close.value) - points.time) / DAY_NS
    out["close_date_pushes"] = pick(ix.close.pushes)
    out["close_date_days_pushed"] = pick(ix.close.pushed_days)
    amount = ix.amount.rows.last_at_or_before(points.code, points.time)
    a_hit, a_at = amount >= 0, np.maximum(amount, 0)
    now = np.where(a_hit, ix.amount.value[a_at], np.nan) if len(ix.amount.value) else np.full(len(points), np.nan)
    first = np.where(a_hit, ix.amount.first[a_at], np.nan) if len(ix.amount.value) else np.full(len(points), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["amount_change"] = np.log1p(now) - np.log1p(first)
    return {"amount_at": now}


def _segment_features(tables: Tables, spec: FeatureSpec, points: Points, stats: PointInTimeStats, out: dict, amount_at: np.ndarray | None = None) -> None:
    ix = tables.index
    for col in spec.segment_columns:
        out[col] = ix.opportunity_values(col, points.code)
    current = ix.opportunity_values("amount", points.code).astype("float64")
    # the amount known at the point when the field history has it, else the export's value
    out["log_amount"] = np.log1p(np.where(np.isnan(amount_at), current, amount_at) if amount_at is not None else current)
    prior = stats.global_rate(points.time)
    for key in spec.stat_keys:
        out[f"win_rate_{key}"] = stats.win_rate(key, ix.opportunity_values(key, points.code), points.time, prior)


def feature_arrays(
    tables: Tables, points: Points, spec: FeatureSpec, stats: PointInTimeStats, state: dict | None = None, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """The features of each point as arrays, in spec.columns order; `state` (from `state_arrays`)
    when the caller already has it."""
    out = computed(tables, points, spec, stats, state, progress)
    return {c: out[c] if c in spec.categorical else np.asarray(out[c], dtype="float64") for c in spec.columns}


def computed(
    tables: Tables, points: Points, spec: FeatureSpec, stats: PointInTimeStats, state: dict | None = None, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Every feature the computations make, by name: the catalogue's columns exactly (a test
    holds the two together)."""
    step = progress or (lambda _msg: None)
    out: dict[str, np.ndarray] = {}
    step("stage and dwell features")
    _stage_features(tables, spec.stages, points, state if state is not None else state_arrays(tables, spec.stages, points), stats, out)
    step("activity features")
    _activity_features(tables, spec, points, out)
    known = _field_features(tables, points, out) if spec.field_history else {}
    step("segment features")
    _segment_features(tables, spec, points, stats, out, known.get("amount_at"))
    return out


def model_matrix(features: dict[str, np.ndarray], spec: FeatureSpec) -> np.ndarray:
    """What the boosters read: numbers as they are, categoricals as their code among the
    training levels (unknown or missing level: NaN), the encoding LightGBM applies to the
    pandas frame it was trained on, without a DataFrame in between."""
    n = len(next(iter(features.values()))) if features else 0
    matrix = np.empty((n, len(spec.columns)), dtype="float64")
    for j, col in enumerate(spec.columns):
        values = features[col]
        if col in spec.categorical:
            code = {level: float(i) for i, level in enumerate(spec.categories.get(col, []))}
            missing = code.get(MISSING, np.nan) if col != "stage" else np.nan
            matrix[:, j] = [missing if v is None or v != v else code.get(str(v), np.nan) for v in values]
        else:
            matrix[:, j] = values
    return matrix


def build_features(
    tables: Tables,
    points: pd.DataFrame,
    spec: FeatureSpec,
    stats: PointInTimeStats,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Features of each (opportunity_id, as_of) point; columns: the points, then spec.columns."""
    points = points[["opportunity_id", "as_of"]].reset_index(drop=True)
    points["as_of"] = points["as_of"].astype(TS_DTYPE)
    features = feature_arrays(tables, Points.of(tables, points), spec, stats, progress=progress)
    # copy=False: the arrays become the frame's columns as they are, not a copy of every feature
    frame = pd.DataFrame({c: pd.Series(features.pop(c), dtype=object if c in spec.categorical else "float64", copy=False) for c in spec.columns}, copy=False)
    return pd.concat([points, frame], axis=1)


def features_as_of(
    tables: Tables, stages: StageOrder, segments: list[str], as_of: pd.Timestamp, progress: Progress | None = None
) -> tuple[pd.DataFrame, FeatureSpec]:
    """The feature frame of the deals open at as_of, with a vocabulary and statistics learned
    from what was known then (what `oppscore features` writes)."""
    t = to_utc(as_of)
    known = tables.as_of(t, stages)
    spec = make_spec(known, stages, segments)
    (progress or (lambda _m: None))("point-in-time statistics")
    stats = PointInTimeStats(spec.stat_keys).fit(known, stages)
    return build_features(tables, open_points(tables, stages, t), spec, stats, progress=progress), spec
