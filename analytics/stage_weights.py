"""Data-driven stage weights: the win rate each stage has earned, to replace hand-set ones.

Shaped like a scikit-learn estimator: `fit` learns from closed opportunities (as of a time, so a
backtest can ask what the weights were then), learned state ends in `_`.
- per stage: of the closed opportunities that reached the stage, the share won, with a Jeffreys
  interval and the count behind it;
- by dwell: of those that stayed in the stage at least d days, the share won, made
  non-increasing in d (isotonic), since waiting longer cannot make a deal likelier to win;
- per segment value: shrunk toward the stage's weight when the sample is small.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.isotonic import IsotonicRegression

from features.stages import StageOrder
from features.stays import by_deals, final_states, stays
from features.tables import Tables
from features.times import to_utc

DWELL_BUCKETS = (0, 7, 14, 30, 60, 90)
LEVEL = 0.90


def jeffreys(won: np.ndarray, n: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - level) / 2
    lo = np.where(won > 0, stats.beta.ppf(a, won + 0.5, n - won + 0.5), 0.0)
    hi = np.where(won < n, stats.beta.ppf(1 - a, won + 0.5, n - won + 0.5), 1.0)
    return np.nan_to_num(lo), np.where(n > 0, hi, 1.0)


def _reached(history: pd.DataFrame, stages: StageOrder, t: pd.Timestamp) -> pd.DataFrame:
    """Per (open stage, deal closed at t that stayed in it): whether the deal was won and its
    longest stay there in days. Per deal, so a history read piece by piece gives the same rows."""
    hist = history[history["entered_at"] <= t]
    state = final_states(hist, stages)["state"]
    closed = state[state != "open"]
    s = stays(hist, stages, t)
    s = s[s["open_stage"] & s["opportunity_id"].isin(closed.index)]
    s = s.assign(won=s["opportunity_id"].map(closed == "won").astype(float))
    return s.groupby(["stage", "opportunity_id"], sort=False).agg(won=("won", "first"), days=("days", "max")).reset_index()


def _tally(reached: pd.DataFrame, opps: pd.DataFrame, segments: list[str]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The counts the weights are made of, from some deals' `_reached` rows: per stage (deals, wins,
    and both among stays of at least each dwell bucket) and per (stage, segment value). Sums,
    so the pieces of a history add up to the whole, and the per-deal rows of millions of deals
    are never all held at once."""
    won = reached["won"]
    columns = {"n": np.ones(len(reached), dtype=np.int64), "won": won}
    for d in DWELL_BUCKETS:
        stayed = reached["days"] >= d
        columns[f"n_{d}"] = stayed.astype(np.int64)
        columns[f"won_{d}"] = won.where(stayed, 0.0)
    per_stage = pd.DataFrame(columns, index=reached.index).groupby(reached["stage"]).sum()
    per_value = {}
    for col in segments:
        value = reached["opportunity_id"].map(opps[col]).fillna("(missing)").astype(str)
        per_value[col] = reached.assign(value=value).groupby(["stage", "value"]).agg(n=("won", "size"), won=("won", "sum"))
    return per_stage, per_value


class StageWeights:
    def __init__(self, segments: list[str] | None = None, shrinkage: float = 20.0, level: float = LEVEL) -> None:
        self.segments = segments or []
        self.shrinkage = shrinkage
        self.level = level

    def fit(self, tables: Tables, stages: StageOrder, as_of: pd.Timestamp) -> StageWeights:
        """Learn from the deals closed at as_of; a deal counts for each open stage it stayed in
        (one created at a later stage, or that jumped ahead, never counts for stages it skipped)."""
        t = to_utc(as_of)
        segments = [c for c in self.segments if c in tables.opportunities.columns]
        opps = tables.opportunities[["opportunity_id", *segments]].drop_duplicates("opportunity_id").set_index("opportunity_id")  # only the columns read: a copy of millions of rows
        tallies = [_tally(_reached(part, stages, t), opps, segments) for part in by_deals(tables.stage_history)]
        per_stage = pd.concat([stage for stage, _ in tallies]).groupby(level=0).sum()
        per_value = {col: pd.concat([values[col] for _, values in tallies]).groupby(["stage", "value"]).sum() for col in segments}
        del tallies
        configured = dict(zip(stages.open, stages.config.configured_weights or [None] * stages.n_open, strict=True))
        counts = per_stage.reindex(list(stages.open), fill_value=0)
        rows = []
        for i, name in enumerate(stages.open):
            n, k = int(counts.at[name, "n"]), float(counts.at[name, "won"])
            lo, hi = jeffreys(np.array([k]), np.array([n]), self.level)
            rows.append({"stage": name, "index": i, "n": n, "won": int(k), "weight": k / n if n else np.nan,
                         "low": float(lo[0]), "high": float(hi[0]), "configured": configured[name]})
        self.weights_ = pd.DataFrame(rows)
        dwell = []
        for name in stages.open:
            ns = np.array([counts.at[name, f"n_{d}"] for d in DWELL_BUCKETS], dtype=float)
            ks = np.array([counts.at[name, f"won_{d}"] for d in DWELL_BUCKETS], dtype=float)
            raw = np.divide(ks, ns, out=np.full(len(ns), np.nan), where=ns > 0)
            ok = ns > 0
            mono = raw.copy()
            if ok.sum() >= 2:
                mono[ok] = IsotonicRegression(increasing=False).fit(np.array(DWELL_BUCKETS)[ok], raw[ok], sample_weight=ns[ok]).predict(np.array(DWELL_BUCKETS)[ok])
            lo, hi = jeffreys(ks, ns, self.level)
            for d, n, r, m, a, b in zip(DWELL_BUCKETS, ns, raw, mono, lo, hi, strict=True):
                dwell.append({"stage": name, "min_days": d, "n": int(n), "observed": r, "weight": m, "low": a, "high": b})
        self.by_dwell_ = pd.DataFrame(dwell)
        seg_rows = []
        base = self.weights_.set_index("stage")["weight"]
        for col in segments:
            g = per_value[col].reset_index()
            prior = g["stage"].map(base).fillna(0.5).to_numpy()
            g["weight"] = (g["won"] + self.shrinkage * prior) / (g["n"] + self.shrinkage)
            lo, hi = jeffreys(g["won"].to_numpy(), g["n"].to_numpy(), self.level)
            g["low"], g["high"], g["segment"] = lo, hi, col
            seg_rows.append(g)
        self.by_segment_ = pd.concat(seg_rows, ignore_index=True) if seg_rows else pd.DataFrame(columns=["segment", "stage", "value", "n", "won", "weight", "low", "high"])
        self.as_of_ = t
        return self

    def weight_for(self, stage: pd.Series, days_in_stage: pd.Series | None = None) -> np.ndarray:
        """The weight of each deal's stage, lowered by its dwell when given."""
        base = stage.map(self.weights_.set_index("stage")["weight"]).to_numpy(dtype=float)
        if days_in_stage is None:
            return base
        out = base.copy()
        for name, part in self.by_dwell_.groupby("stage"):
            sel = (stage == name).to_numpy()
            if not sel.any():
                continue
            steps = part.sort_values("min_days")
            pos = np.searchsorted(steps["min_days"].to_numpy(), days_in_stage.to_numpy()[sel], side="right") - 1
            w = steps["weight"].to_numpy()[np.clip(pos, 0, len(steps) - 1)]
            out[sel] = np.where(np.isnan(w), base[sel], w)
        return out

    def to_dict(self) -> dict:
        clean = lambda f: f.replace({np.nan: None}).to_dict("records")  # noqa: E731
        return {"as_of": str(self.as_of_), "level": self.level, "stages": clean(self.weights_), "by_dwell": clean(self.by_dwell_), "by_segment": clean(self.by_segment_)}

    @classmethod
    def from_dict(cls, doc: dict) -> StageWeights:
        sw = cls(level=doc.get("level", LEVEL))
        sw.weights_ = pd.DataFrame(doc["stages"])
        sw.by_dwell_ = pd.DataFrame(doc["by_dwell"])
        sw.by_segment_ = pd.DataFrame(doc["by_segment"])
        sw.as_of_ = pd.Timestamp(doc["as_of"])
        return sw
