"""Scores of open opportunities from a bundle: the one path batch scoring and the API share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.bundle import Bundle
from features.explain import top_factors
from features.frame import build_features, open_points, stage_state, to_model_frame
from features.tables import Tables, to_utc

GRADES = ("A", "B", "C", "D")
SCORE_COLUMNS = ["opportunity_id", "as_of", "stage", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors"]


def grade(win: np.ndarray, cutoffs: list[float]) -> np.ndarray:
    """A, B, C, D by the win-probability quartiles the model produced on its calibration slice."""
    a, b, c = cutoffs
    return np.select([win >= a, win >= b, win >= c], ["A", "B", "C"], default="D")


def score_points(bundle: Bundle, tables: Tables, points: pd.DataFrame, with_factors: bool = True) -> pd.DataFrame:
    spec = bundle.spec
    if points.empty:  # nothing open: an empty table, not an error from the booster
        cols = SCORE_COLUMNS if with_factors else SCORE_COLUMNS[:-1]
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    frame = build_features(tables, points, spec, bundle.stats)
    model_frame = to_model_frame(frame, spec)
    win = bundle.models["win"].predict(model_frame)
    stall = bundle.models["stall"].predict(model_frame)
    amount = frame["opportunity_id"].map(tables.opportunities.drop_duplicates("opportunity_id").set_index("opportunity_id")["amount"])
    out = pd.DataFrame(
        {
            "opportunity_id": frame["opportunity_id"],
            "as_of": frame["as_of"],
            "stage": frame["stage"],
            "win_probability": win,
            "stall_risk": stall,
            "score": np.clip(np.rint(win * 100), 1, 99).astype(int),
            "grade": grade(win, bundle.grades),
            "expected_value": amount.to_numpy(dtype=float) * win,
        }
    )
    if with_factors:
        contrib = bundle.models["win"].contributions(model_frame)
        if contrib is None:  # stage-rate fallback: the stage is the only reason there is
            contrib = np.zeros((len(frame), len(spec.columns)))
            contrib[:, spec.columns.index("stage")] = win - 0.5
        out["top_factors"] = top_factors(frame, contrib, spec, bundle.reference)
    return out


def score_ids(bundle: Bundle, tables: Tables, ids: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """Every requested opportunity in the order given, with its status at as_of (open, won,
    lost, not yet created); only the open ones are scored, the others' scores are missing."""
    stages = bundle.spec.stages
    points = pd.DataFrame({"opportunity_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[ns, UTC]")})
    state = stage_state(tables, stages, points)
    created = points["opportunity_id"].map(tables.opportunities.drop_duplicates("opportunity_id").set_index("opportunity_id")["created_at"])
    not_yet = (created > as_of).to_numpy()
    open_now = state["is_open"].to_numpy() & ~not_yet
    won = state["index_now"].to_numpy() == stages.won_index
    status = np.where(open_now, "open", np.where(not_yet, "not yet created", np.where(won, "won", "lost")))
    scored = score_points(bundle, tables, points[open_now]).drop(columns="as_of")
    return pd.DataFrame({"opportunity_id": ids, "status": status}).merge(scored, on="opportunity_id", how="left")


def score_open(bundle: Bundle, tables: Tables, as_of: pd.Timestamp | None = None, with_factors: bool = True) -> pd.DataFrame:
    """Every opportunity open at as_of (default now), highest score first."""
    t = to_utc(as_of)
    points = open_points(tables, bundle.spec.stages, t)
    scored = score_points(bundle, tables, points, with_factors)
    return scored.sort_values(["win_probability", "opportunity_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
