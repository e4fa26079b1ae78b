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

import numpy as np
import pandas as pd

from features import asof
from features.pit_stats import MISSING, PointInTimeStats
from features.stages import StageOrder
from features.tables import NOT_SEGMENTS, TS_DTYPE, Tables, to_utc

log = logging.getLogger(__name__)
DAY = pd.Timedelta(days=1)
WINDOWS = (7, 30, 90)
MAX_ACTIVITY_TYPES = 8
OTHER = "other"

Progress = Callable[[str], None]


@dataclass
class FeatureSpec:
    """What the features are, fixed at training time so serving builds the same columns."""

    stage_config: dict
    segment_columns: list[str]
    activity_types: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    shrinkage: float = 20.0

    @property
    def stages(self) -> StageOrder:
        from features.settings import StageConfig

        return StageOrder(StageConfig(**self.stage_config))

    @property
    def categorical(self) -> list[str]:
        return ["stage", *self.segment_columns]

    @property
    def stat_keys(self) -> list[str]:
        return [*self.segment_columns, "owner_id", "account_id"]

    @property
    def columns(self) -> list[str]:
        stage = ["stage", "stage_progress", "days_in_stage", "dwell_ratio", "age_days", "stage_changes",
                 "moves_back", "furthest_progress", "stage_velocity", "reopened"]
        activity = [f"activities_{w}d" for w in WINDOWS]
        activity += [f"{t}_{w}d" for t in self.activity_types for w in (30, 90)]
        activity += ["days_since_activity", "days_since_inbound", "inbound_share", "distinct_contacts", "activity_trend"]
        segment = [*self.segment_columns, "log_amount"]
        segment += [f"win_rate_{c}" for c in self.stat_keys]
        return stage + activity + segment

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls(**json.loads(text))


def make_spec(tables: Tables, stages: StageOrder, segment_columns: list[str]) -> FeatureSpec:
    """Learn the vocabulary (activity types, category levels) from the training tables."""
    present = [c for c in segment_columns if c in tables.opportunities.columns]
    types = tables.activities["type"].astype(str).str.strip().str.lower().value_counts()
    activity_types = [t for t in types.index[:MAX_ACTIVITY_TYPES] if t and t != OTHER]
    categories = {"stage": list(stages.open)}
    for col in present:
        levels = tables.opportunities[col].dropna().astype(str).value_counts()
        categories[col] = sorted(levels.index[:200].tolist()) + [MISSING]
    return FeatureSpec(stages.config.model_dump(), present, activity_types, categories)


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
    state = stage_state(tables, stages, points)
    return points[state["is_open"].to_numpy()].reset_index(drop=True)


def asof_join(
    points: pd.DataFrame,
    rows: pd.DataFrame,
    time_col: str,
    cols: list[str],
    shift: pd.Timedelta | None = None,
    direction: str = "backward",
    exact: bool = True,
) -> pd.DataFrame:
    """For each (opportunity_id, as_of) point, the columns of that opportunity's row nearest in
    time: by default the last at or before as_of (- shift). Result rows align with points."""
    q_times = asof.ns(points["as_of"])
    if shift is not None:
        q_times = q_times - shift.value
    pos = asof.positions(
        rows["opportunity_id"].to_numpy(dtype=object), asof.ns(rows[time_col]),
        points["opportunity_id"].to_numpy(dtype=object), q_times, direction, exact,
    )
    return asof.take(rows, [time_col, *cols], pos)


def stage_state(tables: Tables, stages: StageOrder, points: pd.DataFrame) -> pd.DataFrame:
    """Per point: the stage the opportunity was in at as_of and its path so far."""
    hist = tables.stage_history
    idx = stages.index(hist["stage"])
    opp = hist["opportunity_id"]
    first = ~opp.eq(opp.shift())
    prev = pd.Series(idx).shift().to_numpy()
    is_open = (idx >= 0) & (idx < stages.n_open)
    back = (~first.to_numpy()) & is_open & (prev >= 0) & (idx < prev)
    reopen = (~first.to_numpy()) & is_open & ((prev < 0) | (prev == stages.won_index))
    g = pd.DataFrame({"opportunity_id": opp, "reach": np.where(idx >= 0, idx, -np.inf), "back": back.astype(int), "re": reopen.astype(int)}).groupby("opportunity_id", sort=False)
    rows = pd.DataFrame(
        {
            "opportunity_id": opp,
            "entered_at": hist["entered_at"],
            "stage_now": hist["stage"].astype(str),
            "index_now": idx,
            "changes": g.cumcount().to_numpy(),
            "moves_back": g["back"].cumsum().to_numpy(),
            "reopened": g["re"].cumsum().to_numpy(),
            "furthest": g["reach"].cummax().to_numpy(),
        }
    )
    state = asof_join(points, rows, "entered_at", ["stage_now", "index_now", "changes", "moves_back", "reopened", "furthest"])
    state["is_open"] = (state["index_now"] >= 0) & (state["index_now"] < stages.n_open)
    return state


def _stage_features(tables: Tables, stages: StageOrder, points: pd.DataFrame, stats: PointInTimeStats, out: dict) -> None:
    state = stage_state(tables, stages, points)
    created = points["opportunity_id"].map(tables.opportunities.drop_duplicates("opportunity_id").set_index("opportunity_id")["created_at"])
    as_of = points["as_of"]
    out["stage"] = state["stage_now"].where(state["is_open"]).to_numpy()
    index = state["index_now"].to_numpy(dtype="float64")
    out["stage_progress"] = stages.progress(index)
    days_in = ((as_of - state["entered_at"]) / DAY).to_numpy(dtype="float64")
    out["days_in_stage"] = days_in
    typical = stats.typical_dwell(state["stage_now"], as_of)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["dwell_ratio"] = days_in / np.maximum(typical, 0.5)
    age = ((as_of - created) / DAY).to_numpy(dtype="float64")
    out["age_days"] = age
    out["stage_changes"] = state["changes"].to_numpy(dtype="float64")
    out["moves_back"] = state["moves_back"].to_numpy(dtype="float64")
    furthest = np.minimum(state["furthest"].to_numpy(dtype="float64"), stages.n_open - 1)
    out["furthest_progress"] = stages.progress(furthest)
    out["stage_velocity"] = furthest / np.maximum(age, 1.0) * 30.0
    out["reopened"] = state["reopened"].to_numpy(dtype="float64")


def _activity_features(tables: Tables, spec: FeatureSpec, points: pd.DataFrame, out: dict) -> None:
    acts = tables.activities
    n = len(points)
    if len(acts) == 0:  # the activities table is optional: counts are zero, recencies unknown
        zero = [f"activities_{w}d" for w in WINDOWS] + [f"{t}_{w}d" for t in spec.activity_types for w in (30, 90)]
        for col in [*zero, "distinct_contacts", "activity_trend"]:
            out[col] = np.zeros(n)
        for col in ("days_since_activity", "days_since_inbound", "inbound_share"):
            out[col] = np.full(n, np.nan)
        return
    opp = acts["opportunity_id"]
    kind = acts["type"].astype(str).str.strip().str.lower()
    inbound = acts["direction"].astype(str).str.strip().str.lower().eq("inbound").to_numpy()
    rows = pd.DataFrame({"opportunity_id": opp, "occurred_at": acts["occurred_at"]})
    grouped = pd.DataFrame({"opportunity_id": opp, "one": 1, "in": inbound.astype(int)}).groupby("opportunity_id", sort=False)
    rows["n_all"] = grouped["one"].cumsum().to_numpy()
    rows["n_in"] = grouped["in"].cumsum().to_numpy()
    rows["last_at"] = acts["occurred_at"]
    counts = ["n_all"]
    for t in spec.activity_types:
        col = f"n_{t}"
        rows[col] = pd.Series((kind == t).to_numpy().astype(int)).groupby(opp.to_numpy(), sort=False).cumsum().to_numpy()
        counts.append(col)
    now = asof_join(points, rows, "occurred_at", [*counts, "n_in", "last_at"])
    total = now["n_all"].fillna(0).to_numpy()
    back = {}
    for w in sorted({*WINDOWS, 60}):
        back[w] = asof_join(points, rows, "occurred_at", counts, shift=pd.Timedelta(days=w)).fillna(0)
    for w in WINDOWS:
        out[f"activities_{w}d"] = total - back[w]["n_all"].to_numpy()
    for t in spec.activity_types:
        c = now[f"n_{t}"].fillna(0).to_numpy()
        for w in (30, 90):
            out[f"{t}_{w}d"] = c - back[w][f"n_{t}"].to_numpy()
    out["days_since_activity"] = ((points["as_of"] - now["last_at"]) / DAY).to_numpy(dtype="float64")
    inbound_rows = rows.loc[inbound, ["opportunity_id", "occurred_at"]].assign(in_at=lambda f: f["occurred_at"])
    last_in = asof_join(points, inbound_rows, "occurred_at", ["in_at"])
    out["days_since_inbound"] = ((points["as_of"] - last_in["in_at"]) / DAY).to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        out["inbound_share"] = np.where(total > 0, now["n_in"].fillna(0).to_numpy() / np.maximum(total, 1), np.nan)
    contacts = acts[["opportunity_id", "occurred_at", "contact_id"]].dropna(subset=["contact_id"])
    contacts = contacts[~contacts.duplicated(["opportunity_id", "contact_id"])]
    contacts = contacts.assign(n_contacts=contacts.groupby("opportunity_id", sort=False).cumcount() + 1)
    out["distinct_contacts"] = asof_join(points, contacts, "occurred_at", ["n_contacts"])["n_contacts"].fillna(0).to_numpy(dtype="float64")
    last30 = out["activities_30d"]
    prev30 = back[30]["n_all"].to_numpy() - back[60]["n_all"].to_numpy()
    out["activity_trend"] = last30 - prev30


def _segment_features(tables: Tables, spec: FeatureSpec, points: pd.DataFrame, stats: PointInTimeStats, out: dict) -> None:
    opps = tables.opportunities.drop_duplicates("opportunity_id").set_index("opportunity_id")
    ids = points["opportunity_id"]
    for col in spec.segment_columns:
        out[col] = ids.map(opps[col]).to_numpy() if col in opps.columns else np.full(len(points), None)
    out["log_amount"] = np.log1p(ids.map(opps["amount"]).to_numpy(dtype="float64"))
    prior = stats.global_rate(points["as_of"])
    for key in spec.stat_keys:
        values = ids.map(opps[key]) if key in opps.columns else pd.Series(None, index=ids.index, dtype="object")
        out[f"win_rate_{key}"] = stats.win_rate(key, values, points["as_of"], prior)


def to_model_frame(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Categoricals with the training levels (unknown levels become missing), numbers as floats."""
    data = {}
    for col in spec.columns:
        if col in spec.categorical:
            values = frame[col].astype("object").where(frame[col].notna(), MISSING if col != "stage" else None)
            data[col] = pd.Categorical(values, categories=spec.categories.get(col, []))
        else:
            data[col] = frame[col].astype("float64")
    return pd.DataFrame(data, index=frame.index)


def build_features(
    tables: Tables,
    points: pd.DataFrame,
    spec: FeatureSpec,
    stats: PointInTimeStats,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Features of each (opportunity_id, as_of) point; columns: the points, then spec.columns."""
    step = progress or (lambda _msg: None)
    points = points[["opportunity_id", "as_of"]].reset_index(drop=True)
    points["as_of"] = points["as_of"].astype(TS_DTYPE)
    if points.empty:
        empty = {c: pd.Series(dtype=object if c in spec.categorical else "float64") for c in spec.columns}
        return pd.concat([points, pd.DataFrame(empty)], axis=1)
    wanted = points["opportunity_id"].unique()
    if len(wanted) < 0.5 * len(tables.opportunities):  # a row depends only on its own opportunity's rows
        tables = tables.subset(wanted)
    out: dict[str, np.ndarray] = {}
    step("stage and dwell features")
    _stage_features(tables, spec.stages, points, stats, out)
    step("activity features")
    _activity_features(tables, spec, points, out)
    step("segment features")
    _segment_features(tables, spec, points, stats, out)
    frame = pd.DataFrame(out, index=points.index)[spec.columns]
    numeric = [c for c in spec.columns if c not in spec.categorical]
    frame[numeric] = frame[numeric].astype("float64")
    frame[spec.categorical] = frame[spec.categorical].astype(object)
    return pd.concat([points, frame], axis=1)
