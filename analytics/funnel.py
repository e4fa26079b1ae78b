"""Funnel analytics: the six things sales teams look at, as of a time (nothing after it is read).

1. stage-to-stage conversion; 2. dwell per stage and the open deals past its P90 (slow, which
is not the stall alert: that is the stall model's, `scoring.stall_alert`);
3. loss reasons by stage; 4. which activities go with moving forward; 5. conversion by
segment, team and owner; 6. deals re-opened after a loss, and how many were won back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import asof
from features.stages import StageOrder
from features.stays import final_states, stays
from features.tables import Tables
from features.times import ns, to_utc


@dataclass
class Funnel:
    as_of: pd.Timestamp
    conversion: pd.DataFrame
    dwell: pd.DataFrame
    past_p90_dwell: pd.DataFrame  # open deals in their stage longer than 90 % of past stays there
    loss_reasons: pd.DataFrame
    activities: pd.DataFrame
    by_segment: pd.DataFrame
    reopened: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, pd.DataFrame)}


def funnel(tables: Tables, stages: StageOrder, as_of: pd.Timestamp, segments: list[str] | None = None) -> Funnel:
    t = to_utc(as_of)
    known = tables.as_of(t, stages)
    s = stays(known.stage_history, stages, t)
    open_s = s[s["open_stage"]]
    outcome = final_states(known.stage_history, stages)["state"]

    conv = _conversion(s, open_s, outcome, stages)
    dwell, past_p90 = _dwell(open_s, outcome, stages)
    activities = _activities(known, open_s[open_s["done"]], stages)
    return Funnel(t, conv, dwell, past_p90, _losses(s, known, outcome, stages), activities, _by_segment(known, outcome, segments), _reopened(s, outcome))


def _conversion(s: pd.DataFrame, open_s: pd.DataFrame, outcome: pd.Series, stages: StageOrder):
    """Of the deals that reached a stage, how many went further, were lost there, or sit there."""
    reached = open_s.groupby(["stage", "opportunity_id"], sort=False).agg(index=("index", "first")).reset_index()
    furthest = s.assign(reach=np.where(s["index"] >= 0, s["index"], -1)).groupby("opportunity_id")["reach"].max()
    reached["further"] = reached["opportunity_id"].map(furthest) > reached["index"]
    reached["outcome"] = reached["opportunity_id"].map(outcome)
    conv = reached.groupby("stage").agg(reached=("opportunity_id", "size"), moved_on=("further", "sum"),
                                        lost_after=("outcome", lambda o: int((o == "lost").sum())),
                                        won_after=("outcome", lambda o: int((o == "won").sum()))).reindex(stages.open).fillna(0)
    conv["conversion"] = conv["moved_on"] / conv["reached"].where(conv["reached"] > 0)
    conv["win_rate_after"] = conv["won_after"] / (conv["won_after"] + conv["lost_after"]).where(lambda x: x > 0)
    conv = conv.reset_index().rename(columns={"index": "stage"})
    return conv


def _dwell(open_s: pd.DataFrame, outcome: pd.Series, stages: StageOrder):
    """The dwell of completed stays per stage, and the open deals past their stage's P90 (slow, not the stall alert)."""
    done = open_s[open_s["done"]]
    q = done.groupby("stage")["days"].quantile([0.5, 0.75, 0.9]).unstack()
    dwell = pd.DataFrame({"stage": stages.open}).set_index("stage")
    dwell["stays"] = done.groupby("stage").size()
    dwell[["median_days", "p75_days", "p90_days"]] = q.reindex(dwell.index).to_numpy() if len(q) else np.nan
    dwell = dwell.reset_index()
    current = open_s[~open_s["done"]]
    current = current[current["opportunity_id"].map(outcome) == "open"]
    p90 = current["stage"].map(dwell.set_index("stage")["p90_days"])
    past_p90 = current[current["days"] > p90].assign(p90_days=p90)[["opportunity_id", "stage", "entered_at", "days", "p90_days"]]
    past_p90 = past_p90.sort_values("days", ascending=False).reset_index(drop=True)
    return dwell, past_p90


def _losses(s: pd.DataFrame, known: Tables, outcome: pd.Series, stages: StageOrder):
    """Loss reasons by the stage the deal was lost from, in pipeline order."""
    lost_rows = s[(s["next_index"] == -1) & (s["index"] >= 0)]
    lost_from = lost_rows.groupby("opportunity_id")["stage"].last()
    reasons = known.opportunities.set_index("opportunity_id")["loss_reason"]
    lr = pd.DataFrame({"stage": lost_from, "loss_reason": lost_from.index.map(reasons)})
    lr = lr[lr.index.map(outcome) == "lost"]
    loss = lr.assign(loss_reason=lr["loss_reason"].fillna("(none given)")).groupby(["stage", "loss_reason"]).size().rename("deals").reset_index()
    loss = loss.assign(_order=stages.index(loss["stage"])).sort_values(["_order", "deals"], ascending=[True, False]).drop(columns="_order").reset_index(drop=True)  # pipeline order
    return loss


def _activities(known: Tables, done: pd.DataFrame, stages: StageOrder):
    """Activities per week during completed stays that moved forward, against those that did not."""
    acts = known.activities
    if len(acts):
        stay_rows = done.reset_index(drop=True)
        pos = asof.positions(stay_rows["opportunity_id"].to_numpy(dtype=object), ns(stay_rows["entered_at"]),
                             acts["opportunity_id"].to_numpy(dtype=object), ns(acts["occurred_at"]))
        hit = pos >= 0
        inside = np.zeros(len(acts), dtype=bool)
        inside[hit] = acts["occurred_at"].to_numpy()[hit] < stay_rows["ended_at"].to_numpy()[pos[hit]]
        a = pd.DataFrame({"stay": pos[inside], "type": acts["type"].astype(str).str.lower().to_numpy()[inside]})
        counts = a.groupby(["stay", "type"]).size().unstack(fill_value=0).reindex(range(len(stay_rows)), fill_value=0)
        per_day = counts.div(np.maximum(stay_rows["days"].to_numpy(), 1.0), axis=0) * 7
        per_day["stage"], per_day["advanced"] = stay_rows["stage"].to_numpy(), stay_rows["advanced"].to_numpy()
        m = per_day.groupby(["stage", "advanced"]).mean().stack().rename("per_week").reset_index().rename(columns={"level_2": "type"})
        wide = m.pivot_table(index=["stage", "type"], columns="advanced", values="per_week").rename(columns={True: "per_week_moved_on", False: "per_week_did_not"}).reset_index()
        wide["ratio"] = wide.get("per_week_moved_on") / wide.get("per_week_did_not").replace(0, np.nan)
        activities = wide.assign(_order=stages.index(wide["stage"])).sort_values(["_order", "ratio"], ascending=[True, False]).drop(columns="_order").reset_index(drop=True)
    else:
        activities = pd.DataFrame(columns=["stage", "type", "per_week_moved_on", "per_week_did_not", "ratio"])
    return activities


def _by_segment(known: Tables, outcome: pd.Series, segments: list[str] | None):
    """The win rate of closed deals by segment, team and owner."""
    opps = known.opportunities.set_index("opportunity_id")
    closed = outcome[outcome != "open"]
    rows = []
    for col in [*(segments or []), "team", "owner_id"]:
        if col not in opps.columns or col in {r["segment"] for r in rows}:
            continue
        g = pd.DataFrame({"value": closed.index.map(opps[col]).fillna("(missing)"), "won": (closed == "won").to_numpy()})
        agg = g.groupby("value")["won"].agg(["size", "sum"])
        for value, r in agg.iterrows():
            rows.append({"segment": col, "value": value, "closed": int(r["size"]), "won": int(r["sum"]), "win_rate": r["sum"] / r["size"]})
    by_segment = pd.DataFrame(rows)
    return by_segment


def _reopened(s: pd.DataFrame, outcome: pd.Series):
    """The deals re-opened after a loss, and how they ended."""
    re = s[(s["index"] == -1) & s["done"] & (s["next_index"] >= 0)]
    ids = re["opportunity_id"].unique()
    reopened = pd.DataFrame({"opportunity_id": ids, "outcome": pd.Series(ids).map(outcome).to_numpy()})
    return reopened
