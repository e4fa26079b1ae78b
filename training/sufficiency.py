"""What the data can support, said in words: how many deals closed where, which feature
families carried signal in the backtest, how wide the intervals are, what serves and when a
learned model would take over, and what would help most.

Real exports are small and logged after the fact; a team should read here why it got rates
instead of a booster, and what to change in how it uses its CRM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalogue import FAMILIES
from features.contract import recording_warnings
from features.frame import FeatureSpec
from features.stages import StageOrder
from features.stays import by_deals, final_states
from features.tables import Tables
from training.fitting import MIN_DEALS

LABEL_WORDS = {"win": ("won within {days} days of a snapshot", "not"), "stall": ("without progress for {days} days after a snapshot", "never")}


def families(spec: FeatureSpec) -> dict[str, list[str]]:
    """The three feature families of the product (`features.catalogue`), as columns of the spec."""
    return {family: [name for name, f in spec.features.items() if f.family == family] for family in FAMILIES}


@dataclass
class _Counts:
    """What the report counts of some deals' stage history (whole deals, `features.stays.by_deals`):
    sums, so the pieces of a history add up to the whole, and no per-deal table of millions
    of deals is held to count them."""

    states: pd.Series  # deals by final state
    per_stage: pd.DataFrame  # per open stage: closed deals that were in it, and how many won
    by_segment: dict[str, pd.DataFrame]  # per segment column: closed deals by value × final state
    late: int  # deals that began past the first stage
    with_history: int

    @classmethod
    def of(cls, history: pd.DataFrame, stages: StageOrder, opps: pd.DataFrame, segments: list[str]) -> _Counts:
        state = final_states(history, stages)["state"]
        closed = state[state != "open"]
        in_stage = history[history["stage"].isin(stages.open) & history["opportunity_id"].isin(closed.index)].drop_duplicates(["opportunity_id", "stage"])
        counts = pd.DataFrame({"stage": in_stage["stage"].to_numpy(), "won": (in_stage["opportunity_id"].map(closed) == "won").to_numpy()})
        per_stage = counts.groupby("stage")["won"].agg(deals="size", won="sum").reindex(stages.open, fill_value=0)
        by_segment = {col: pd.crosstab(opps[col].reindex(closed.index).fillna("(missing)").astype(str), closed.to_numpy()) for col in segments}
        first = history.groupby("opportunity_id", sort=False)["stage"].first()
        return cls(state.value_counts(), per_stage, by_segment, int((first != stages.open[0]).sum()), len(first))

    @classmethod
    def summed(cls, pieces: list[_Counts]) -> _Counts:
        """`pieces`: at least one (`by_deals` yields an empty history whole)."""

        def table(frames: list[pd.DataFrame]) -> pd.DataFrame:  # a value or state missing from a piece counts 0 there
            return pd.concat(frames).fillna(0).groupby(level=0).sum().sort_index(axis=1).astype(int)

        return cls(
            pd.concat([p.states for p in pieces]).groupby(level=0).sum(),
            sum(p.per_stage for p in pieces).astype(int),
            {col: table([p.by_segment[col] for p in pieces]) for col in pieces[0].by_segment},
            sum(p.late for p in pieces),
            sum(p.with_history for p in pieces),
        )

    def count(self, state: str) -> int:
        return int(self.states.get(state, 0))


def beyond_stage(backtest: dict) -> bool:
    """Signal beyond the stage: the served model's AUC interval lies above the floor's (the stage
    rate's) AUC."""
    pooled = backtest["pooled"]
    model, stage = pooled.get("model", {}), pooled.get(backtest.get("floor") or "", {})
    interval = model.get("interval_90", {}).get("auc")
    return bool(interval and stage and np.isfinite(stage.get("auc", np.nan)) and interval[0] > stage["auc"])


def _said_of_serving(served: dict[str, dict], labelled: dict[str, tuple[int, int]] | None) -> list[str]:
    """What serves each target and why, and how far the data are from a gradient-boosted model."""
    need = MIN_DEALS["lightgbm"]
    said, short = [], []
    for target, info in served.items():
        said.append(f"{target}: serving {info['model']}" + (f" ({info['why']})" if info.get("why") else "") + ".")
        yes, no = (labelled or {}).get(target, (need, need))
        if info.get("kind") != "lightgbm" and min(yes, no) < need:
            short.append(f"{target}: {yes} deals {LABEL_WORDS[target][0].format(days=info.get('horizon_days', '?'))} and {no} {LABEL_WORDS[target][1]}")
    if short:
        said.append(f"A gradient-boosted model is tried once {need} deals of each outcome are labelled (now {'; '.join(short)}).")
    return said


def _said_of_activities(tables: Tables, activities: tuple[int, pd.Timestamp | None] | None, end: pd.Timestamp) -> list[str]:
    n_acts, last = activities if activities is not None else (len(tables.activities), tables.activities["occurred_at"].max() if len(tables.activities) else None)
    if n_acts == 0:
        return ["No activities are logged: log calls, e-mails and meetings against opportunities, the activity features need them."]
    if end - last > pd.Timedelta(days=30):
        return [f"No activities logged since {last:%Y-%m-%d} (the export ends {end:%Y-%m-%d})."]
    return []


def _said_of_backtest(target: str, bt: dict | None, signal: dict[str, dict[str, float]], who_wins: dict | None) -> list[str]:
    """What a target's backtest can claim: its AUC and interval, the families carrying signal,
    whether anything beyond the stage shows, and (win) whether it tells the won from the lost."""
    if bt is None:
        return [f"{target}: no backtest was possible (no past date had snapshots of both outcomes known then, and open deals whose outcome was known by the export's end); no figure can be claimed."]
    said = []
    model = bt["pooled"].get("model", {})
    interval = model.get("interval_90", {}).get("auc")
    if interval:
        said.append(f"{target}: backtest AUC {model['auc']:.3f} (90 % interval {interval[0]:.3f}–{interval[1]:.3f}) over {bt['evaluated_deals']} deals in {len(bt['folds'])} folds.")
        if interval[1] - interval[0] > 0.15:
            said.append(f"{target}: the interval is wide; more closed deals will narrow it.")
    carrying = [f for f, gain in signal.get(target, {}).items() if gain > 0.002]
    if signal.get(target):
        said.append(f"{target}: families carrying signal in the backtest: {', '.join(carrying) if carrying else 'none beyond chance'}.")
    if not beyond_stage(bt):
        said.append(f"{target}: the data show no signal beyond the stage (the served model's AUC interval does not clear the stage rate's); no better-than-stage score is claimed.")
    if target == "win" and who_wins and who_wins.get("interval_90"):
        low, high = who_wins["interval_90"]
        said.append(f"win: among the backtest's deals that closed, the win probability told the won from the lost with AUC {who_wins['auc']:.3f} (90 % interval {low:.3f}–{high:.3f})"
                    + (": it knows when deals close more than which ones win." if high < 0.6 and model.get("auc", 0) >= 0.6 else "."))
    return said


def report(
    tables: Tables,
    stages: StageOrder,
    spec: FeatureSpec,
    served: dict[str, dict],
    backtests: dict[str, dict | None],
    signal: dict[str, dict[str, float]],
    activities: tuple[int, pd.Timestamp | None] | None = None,
    end: pd.Timestamp | None = None,
    labelled: dict[str, tuple[int, int]] | None = None,
    who_wins: dict | None = None,
) -> dict:
    """The report as data (for MLflow and /v1/model) with its sentences under "said".
    `labelled`: per target, the deals with a positive and with a negative labelled snapshot;
    `who_wins`: how well the served win probability told won from lost among the backtest's
    deals that closed (`training.pipeline._who_wins`).
    `activities` (how many, the last one's time) and `end` stand in for tables without their
    activities (a partitioned export's first pass)."""
    segments = [col for col in spec.segment_columns if col in tables.opportunities.columns]
    opps = tables.opportunities[["opportunity_id", *segments]].set_index("opportunity_id")  # only the columns read: a copy of millions of rows
    counted = _Counts.summed([_Counts.of(part, stages, opps, segments) for part in by_deals(tables.stage_history)])
    won, lost, still_open = counted.count("won"), counted.count("lost"), counted.count("open")
    in_stage = counted.per_stage
    by_stage = [{"stage": name, "closed deals that were in it": int(in_stage.loc[name, "deals"]), "won": int(in_stage.loc[name, "won"])} for name in stages.open]
    by_segment = {col: {str(v): {k: int(n) for k, n in row.items()} for v, row in counts.head(30).iterrows()} for col, counts in counted.by_segment.items()}
    end = end if end is not None else tables.end
    said = [f"{won} won and {lost} lost deals closed, {still_open} open.", *recording_warnings(tables, stages, end)]
    if spec.filled_at_close:
        said.append(f"Not read: {', '.join(spec.filled_at_close)} — empty for most deals open at the export's end and filled for the closed ones, "
                    "so filled when a deal closes; today's values would tell the model which deals were still open.")
    late = counted.late / counted.with_history if counted.with_history else 0.0
    if late > 0.5:
        said.append(
            f"{late:.0%} of deals were created past the first stage ({stages.open[0]}): they were logged after the fact. "
            "A deal counts toward a stage's weight only for the stages it was in; recording stage changes as they happen would help most."
        )
    said += _said_of_serving(served, labelled)
    said += _said_of_activities(tables, activities, end)
    for target, bt in backtests.items():
        said += _said_of_backtest(target, bt, signal, who_wins)
    return {
        "closed": {"won": won, "lost": lost, "open": still_open},
        "by_stage": by_stage,
        "by_segment": by_segment,
        "created_past_first_stage": round(late, 3),
        "signal_by_family": signal,
        "who_wins": who_wins or {},
        "filled_at_close": list(spec.filled_at_close),
        "served": served,
        "said": said,
    }
