"""Scores of open opportunities from a bundle: the one path batch scoring and the API share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.bundle import Bundle
from features.explain import top_factors
from features.frame import Points, state_arrays, feature_arrays, model_matrix, open_points
from features.tables import TS_DTYPE, Tables, to_utc

GRADES = ("A", "B", "C", "D")
SCORE_COLUMNS = ["opportunity_id", "as_of", "stage", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors"]


def grade(win: np.ndarray, cutoffs: list[float]) -> np.ndarray:
    """A, B, C, D by the win-probability quartiles the model produced on its calibration slice."""
    a, b, c = cutoffs
    return np.select([win >= a, win >= b, win >= c], ["A", "B", "C"], default="D")


def _scored(bundle: Bundle, tables: Tables, points: Points, state: dict | None, with_factors: bool) -> pd.DataFrame:
    spec = bundle.spec
    if len(points) == 0:  # nothing open: an empty table, not an error from the booster
        cols = SCORE_COLUMNS if with_factors else SCORE_COLUMNS[:-1]
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    features = feature_arrays(tables, points, spec, bundle.stats, state=state)
    x = model_matrix(features, spec)
    win = bundle.models["win"].predict(x, features["stage"])
    stall = bundle.models["stall"].predict(x, features["stage"])
    amount = tables.index.opportunity_values(tables.opportunities, "amount", points.code).astype(float)
    out = pd.DataFrame(
        {
            "opportunity_id": pd.Series(points.ids, dtype=object),
            "as_of": pd.DatetimeIndex(points.time.view("datetime64[ns]")).tz_localize("UTC"),
            "stage": pd.Series(features["stage"], dtype=object),
            "win_probability": win,
            "stall_risk": stall,
            "score": np.clip(np.rint(win * 100), 1, 99).astype(int),
            "grade": grade(win, bundle.grades),
            "expected_value": amount * win,
        }
    )
    if with_factors:
        contrib = bundle.models["win"].contributions(x)
        if contrib is None:  # stage-rate fallback: the stage is the only reason there is
            contrib = np.zeros((len(points), len(spec.columns)))
            contrib[:, spec.columns.index("stage")] = win - 0.5
        out["top_factors"] = top_factors(features, contrib, spec, bundle.reference)
    return out


def score_points(bundle: Bundle, tables: Tables, points: pd.DataFrame, with_factors: bool = True) -> pd.DataFrame:
    """Scores of the given (opportunity_id, as_of) points, which must be open at their time."""
    return _scored(bundle, tables, Points.of(tables, points), None, with_factors)


def score_ids(bundle: Bundle, tables: Tables, ids: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """Every requested opportunity in the order given, with its status at as_of (open, won,
    lost, not yet created); only the open ones are scored, the others' scores are missing."""
    stages = bundle.spec.stages
    as_of = to_utc(as_of)
    points = Points.of(tables, pd.DataFrame({"opportunity_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype=TS_DTYPE)}))
    state = state_arrays(tables, stages, points)
    rows = tables.index.opportunity_rows(points.code)
    not_yet = (rows < 0) | (tables.index.opp_created[np.maximum(rows, 0)] > as_of.value)
    open_now = state["is_open"] & ~not_yet
    won = state["index_now"] == stages.won_index
    status = np.where(open_now, "open", np.where(not_yet, "not yet created", np.where(won, "won", "lost")))
    scored = _scored(bundle, tables, points.where(open_now), {k: v[open_now] for k, v in state.items()}, True).drop(columns="as_of")
    return pd.DataFrame({"opportunity_id": ids, "status": status}).merge(scored, on="opportunity_id", how="left")


def score_open(bundle: Bundle, tables: Tables, as_of: pd.Timestamp | None = None, with_factors: bool = True) -> pd.DataFrame:
    """Every opportunity open at as_of (default now), highest score first."""
    t = to_utc(as_of)
    points = open_points(tables, bundle.spec.stages, t)
    scored = score_points(bundle, tables, points, with_factors)
    return scored.sort_values(["win_probability", "opportunity_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
