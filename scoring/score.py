"""Scores of open opportunities from a bundle: the one path batch scoring and the API share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.frame import Points, feature_arrays, model_matrix, open_points, state_arrays
from features.stages import LOST_INDEX
from features.tables import Tables
from features.times import from_ns, ns, to_utc
from scoring import drift
from scoring.bundle import Bundle
from scoring.explain import factor_contributions, top_factors, why_changed

GRADES = ("A", "B", "C", "D")
SCORE_COLUMNS = ["opportunity_id", "as_of", "stage", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors"]
PROBABILITY_DECIMALS = 6
CHANGE_COLUMNS = ["previous_score", "score_change", "why_changed", "factors"]  # with score history


def grade(win: np.ndarray, cutoffs: list[float]) -> np.ndarray:
    """A, B, C, D by the win-probability quartiles the model produced on its calibration slice."""
    a, b, c = cutoffs
    return np.select([win >= a, win >= b, win >= c], ["A", "B", "C"], default="D")


def _scores(bundle: Bundle, tables: Tables, points: Points, state: dict | None, with_factors: bool, previous: pd.DataFrame | None = None,
            drift_into: dict | None = None, stall_factors: bool = False) -> dict[str, np.ndarray | list]:
    """The score columns of open points, as arrays (the API turns them into records, the batch
    into a table). `previous`: the last recorded score per opportunity id (score history's
    `previous`): adds the change since and why, and every factor's contribution to record.
    `drift_into`: filled with the counts these points' drift from the bundle's training
    reference is judged from (`scoring.drift.tally`; `drift.of_run` judges one or several),
    when the bundle has one. `stall_factors`: the stall risk's own reasons too (the page's)."""
    spec = bundle.spec
    features = feature_arrays(tables, points, spec, bundle.stats, state=state)
    x = model_matrix(features, spec)
    win = bundle.models["win"].predict(x)
    if drift_into is not None and bundle.metadata.get("drift_reference"):
        drift_into.update(drift.tally(bundle.metadata["drift_reference"], x, spec, win))
    amount = tables.index.opportunity_values("amount", points.code).astype(float)
    shown = np.round(win, PROBABILITY_DECIMALS)  # six decimals (far below what a calibration can claim) and cents: 0.9, not 0.8999999999999999
    out = {
        "stage": features["stage"],
        "win_probability": shown,
        "stall_risk": np.round(bundle.models["stall"].predict(x), PROBABILITY_DECIMALS),
        "score": np.clip(np.rint(win * 100), 1, 99).astype(int),
        "grade": grade(win, bundle.grades),
        "expected_value": np.round(amount * shown, 2),  # the amount times the probability shown, to the cent
    }
    if with_factors:
        contrib = bundle.models["win"].contributions(x)
        out["top_factors"] = top_factors(features, contrib, spec, bundle.reference)
    if stall_factors:
        stall = bundle.models["stall"]
        out["stall_factors"] = [[] for _ in range(len(x))] if stall.kind == "not known" else top_factors(features, stall.contributions(x), spec, bundle.reference)
    if previous is not None:
        before = previous.reindex(pd.Index(points.ids, dtype=object))
        known = before["score"].notna().to_numpy()
        out["previous_score"] = np.where(known, before["score"].to_numpy(dtype=float), np.nan)
        out["score_change"] = out["score"] - out["previous_score"]
        factors_before = [f if k else None for f, k in zip(before["factors"].tolist(), known, strict=True)]
        out["why_changed"] = why_changed(features, contrib, spec, bundle.reference, factors_before, win, np.nan_to_num(before["win_probability"].to_numpy(dtype=float)))
        out["factors"] = factor_contributions(contrib, spec)
    return out


def score_points(bundle: Bundle, tables: Tables, points: pd.DataFrame, with_factors: bool = True, previous: pd.DataFrame | None = None,
                 drift_into: dict | None = None, stall_factors: bool = False) -> pd.DataFrame:
    """Scores of the given (opportunity_id, as_of) points, which must be open at their time."""
    if points.empty:  # nothing open: an empty table, not an error from the booster
        cols = SCORE_COLUMNS if with_factors or previous is not None else SCORE_COLUMNS[:-1]
        cols = cols + (CHANGE_COLUMNS if previous is not None else []) + (["stall_factors"] if stall_factors else [])
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    at = Points.of(tables, points)
    scores = _scores(bundle, tables, at, None, with_factors or previous is not None, previous, drift_into, stall_factors)
    frame = pd.DataFrame(
        {
            "opportunity_id": pd.Series(at.ids, dtype=object),
            "as_of": from_ns(at.time),
            "stage": pd.Series(scores.pop("stage"), dtype=object),
        }
    )
    for col, values in scores.items():
        frame[col] = values
    return frame


def statuses(bundle: Bundle, tables: Tables, ids, as_of: pd.Timestamp) -> tuple[np.ndarray, Points, dict]:
    """Each opportunity's status at as_of (open, won, lost, not yet created, stage unknown to
    the model), with the points and stage state that scoring them reads."""
    stages = bundle.spec.stages
    ids_array = np.asarray(ids, dtype=object)
    points = Points(ids_array, tables.index.codes(ids_array), np.full(len(ids_array), to_utc(as_of).value, dtype=np.int64))
    state = state_arrays(tables, stages, points)
    rows = tables.index.opportunity_rows(points.code)
    not_yet = (rows < 0) | (tables.index.opp_created[np.maximum(rows, 0)] > to_utc(as_of).value)
    open_now = state["is_open"] & ~not_yet
    won = state["index_now"] == stages.won_index
    lost = state["index_now"] == LOST_INDEX
    return np.select([open_now, not_yet, won, lost], ["open", "not yet created", "won", "lost"], "stage unknown to the model"), points, state


def score_ids(bundle: Bundle, tables: Tables, ids: list[str], as_of: pd.Timestamp, previous: pd.DataFrame | None = None) -> list[dict]:
    """Every requested opportunity in the order given, with its status at as_of (open, won,
    lost, not yet created); only the open ones are scored and carry the score fields (and,
    given `previous`, the change since and every factor's contribution)."""
    status, points, state = statuses(bundle, tables, ids, as_of)
    open_now = status == "open"
    records = [{"opportunity_id": i, "status": s} for i, s in zip(ids, status.tolist(), strict=True)]
    if open_now.any():
        scores = _scores(bundle, tables, points.where(open_now), {k: v[open_now] for k, v in state.items()}, True, previous)
        for col in ("previous_score", "score_change"):
            if col in scores:
                scores[col] = [None if v != v else int(v) for v in scores[col].tolist()]
        scores["stall_risk"] = [None if v != v else v for v in scores["stall_risk"].tolist()]  # not known (scoring.models.NotKnown)
        columns = {col: list(values) if isinstance(values, list) else values.tolist() for col, values in scores.items()}
        for k, record in zip(np.flatnonzero(open_now), zip(*columns.values(), strict=True), strict=True):
            records[k].update(zip(columns, record, strict=True))
    return records


def score_open(bundle: Bundle, tables: Tables, as_of: pd.Timestamp, with_factors: bool = True, previous: pd.DataFrame | None = None,
               drift_into: dict | None = None, stall_factors: bool = False) -> pd.DataFrame:
    """Every opportunity open at as_of, highest score first (`drift_into`: see `_scores`)."""
    t = to_utc(as_of)
    points = open_points(tables, bundle.spec.stages, t)
    scored = score_points(bundle, tables, points, with_factors, previous, drift_into, stall_factors)
    return scored.sort_values(["win_probability", "opportunity_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Accounting:
    """Where every opportunity of an export stands at as_of (how many of each)."""

    counts: dict[str, int]
    unknown_stages: list[str]

    @property
    def scored(self) -> int:
        return self.counts["scored (open)"]


def account(bundle: Bundle, tables: Tables, as_of: pd.Timestamp) -> Accounting:
    """Every opportunity in one place at as_of: scored (open), won, lost, created later, without
    a stage yet, or in a stage the model does not know (renamed since it was trained), so a
    batch that scores fewer deals than the export holds says why."""
    stages = bundle.spec.stages
    t = to_utc(as_of)
    ids = tables.opportunities["opportunity_id"].to_numpy(dtype=object)
    points = Points(ids, tables.index.codes(ids), np.full(len(ids), t.value, dtype=np.int64))
    state = state_arrays(tables, stages, points)
    exists = ns(tables.opportunities["created_at"]) <= t.value
    index = state["index_now"]
    unknown = exists & state["hit"] & np.isnan(index)
    counts = {
        "scored (open)": int((stages.is_open(index) & exists).sum()),
        "won by then": int(((index == stages.won_index) & exists).sum()),
        "lost by then": int(((index == LOST_INDEX) & exists).sum()),
        "created after as_of": int((~exists).sum()),
        "no stage by then": int((exists & ~state["hit"]).sum()),
        "in a stage the model does not know": int(unknown.sum()),
    }
    return Accounting(counts, sorted({str(n) for n in state["stage_now"][unknown]}))
