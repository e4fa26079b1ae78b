"""Replay: the track record made from the export's own history (issue 40).

A record that waits H days for its first figure is no help to someone deciding whether to trust
oppscore. At past dates this cuts the export as it was known then, trains exactly as `train`
would on it, scores the deals open then, forecasts the next month, and records those runs in
the score history (source "replay": the model's run role "replay", the baselines' "baseline"),
beside the same baselines replayed the same way: the configured stage weights, the stage
weights measured then (each stage's eventual win rate) and each stage's rate of "won within H".
`monitor`, `/v1/monitor` and the page then judge them against what happened, as they judge
served scores. Nothing replayed is registered in MLflow: no replayed model can become champion.

A date's run reads nothing after it (`Tables.as_of`; tested as a property). A date is recorded
whole, the model's run last, so a replay that was interrupted carries on where it stopped and
redoes a date it had left half-recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.forecast import Forecast, forecast, methods_for
from features.errors import InputInvalid, NotEnoughData
from features.frame import open_points
from features.settings import Settings
from features.stages import StageOrder
from features.tables import Tables
from features.times import to_utc
from scoring.history import BASELINE, REPLAY, RunFacts, ScoreHistory
from scoring.score import score_open
from training import cores
from training.pipeline import train

log = logging.getLogger(__name__)
EVERY = {"month": "MS", "week": "W-MON"}
MIN_WINS = 10  # wins recorded by a date before it is replayed by default: fewer teach nothing a stage rate does not
BASELINES = ("configured weights", "stage weights", "stage rate within H")


@dataclass
class DateRun:
    """What one replayed date made: the model's scores, the baselines' probabilities for the same
    deals, the next month's forecast, and the model's promise and horizon."""

    at: pd.Timestamp
    version: str
    facts: RunFacts
    scores: pd.DataFrame
    baselines: dict[str, pd.DataFrame]
    forecast: Forecast
    served: dict

    @property
    def horizon_days(self) -> int:
        return int(self.facts.horizon_days or 0)


def dates(tables: Tables, stages: StageOrder, every: str = "month", since: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> list[pd.Timestamp]:
    """The dates to replay: every month start (or Monday) from `since` (default: the first date
    by which MIN_WINS wins were recorded) to `until` (default: the export's end)."""
    if every not in EVERY:
        raise InputInvalid(f"--every: found {every!r}, expected one of {', '.join(EVERY)}")
    end = tables.end
    until = min(to_utc(until), end) if until is not None else end
    if since is None:
        hist = tables.stage_history
        wins = np.sort(hist.loc[hist["stage"] == stages.config.won, "entered_at"].to_numpy())
        if len(wins) < MIN_WINS:
            raise NotEnoughData(f"{len(wins)} wins in the export; a replay needs a date by which {MIN_WINS} were recorded (or --since)")
        since = pd.Timestamp(wins[MIN_WINS - 1])
    since = to_utc(since)
    grid = pd.date_range(since.tz_convert("UTC").tz_localize(None).ceil("D"), until.tz_convert("UTC").tz_localize(None), freq=EVERY[every], tz="UTC")
    return [t for t in grid if since <= t <= until]


def at_date(tables: Tables, stages: StageOrder, settings: Settings, at: pd.Timestamp, progress: Callable[[str], None] | None = None) -> DateRun:
    """Train on the export as known at `at`, score the deals open then, forecast the next month."""
    cut = tables.as_of(at, stages)
    result = train(cut, stages, settings, progress=progress)
    bundle = result.bundle
    scores = score_open(bundle, cut, at)
    horizon = bundle.win_label.horizon_days if bundle.win_label is not None else settings.stall.horizon_days
    baselines = _baselines(cut, stages, bundle, scores, at, horizon, settings.snapshots.every_days)
    month = (at.tz_convert("UTC").tz_localize(None).to_period("M") + (0 if at.day == 1 and at.normalize() == at else 1))
    period = (pd.Timestamp(month.start_time, tz="UTC"), pd.Timestamp((month + 1).start_time, tz="UTC"))
    made = forecast(cut, stages, period, methods_for(stages, bundle), as_of=at)
    return DateRun(at, f"replay {at:%Y-%m-%d}", RunFacts.of(bundle, role=REPLAY), scores, baselines, made, bundle.metadata.get("served", {}))


def _baselines(cut: Tables, stages: StageOrder, bundle, scores: pd.DataFrame, at: pd.Timestamp, horizon: int, every_days: int) -> dict[str, pd.DataFrame]:
    """Each baseline's probability for the deals the model scored: the configured weight of
    their stage, the stage's measured eventual win rate, and the stage's rate of wins within H
    among the snapshots whose H had passed by `at`."""
    rates: dict[str, dict[str, float]] = {}
    if stages.config.configured_weights:
        rates["configured weights"] = dict(zip(stages.open, stages.config.configured_weights, strict=True))
    rates["stage weights"] = {r["stage"]: float(r["weight"]) for r in bundle.stage_weights["stages"] if r.get("weight") is not None}
    rates["stage rate within H"] = _within(cut, stages, at, horizon, every_days)
    out = {}
    for name, by_stage in rates.items():
        p = scores["stage"].map(by_stage).astype(float)
        fallback = float(np.nanmean(list(by_stage.values()))) if by_stage else 0.5
        out[name] = scores[["opportunity_id", "as_of", "stage"]].assign(win_probability=p.fillna(fallback).clip(1e-4, 1 - 1e-4).to_numpy())
    return out


def _within(cut: Tables, stages: StageOrder, at: pd.Timestamp, horizon: int, every_days: int) -> dict[str, float]:
    """Per stage, the share of weekly snapshots (deals open then, in that stage) won within
    `horizon` days, among the snapshots whose horizon had passed by `at`; Beta(1, 1) smoothed."""
    hist = cut.stage_history
    wins = hist.loc[hist["stage"] == stages.config.won, ["opportunity_id", "entered_at"]]
    start = cut.opportunities["created_at"].min()
    last = at - pd.Timedelta(days=horizon)
    counts: dict[str, list[float]] = {}
    if pd.isna(start) or last <= start:
        return {}
    for t in pd.date_range(start, last, freq=f"{every_days}D"):
        points = open_points(cut, stages, t)
        if points.empty:
            continue
        stage = _stage_at(cut, points["opportunity_id"], t)
        pairs = points[["opportunity_id"]].assign(stage=stage).merge(wins, on="opportunity_id", how="left")
        won = (pairs["entered_at"] > t) & (pairs["entered_at"] <= t + pd.Timedelta(days=horizon))
        per_deal = pairs.assign(won=won).groupby(["opportunity_id", "stage"], as_index=False)["won"].any()
        for s, group in per_deal.groupby("stage"):
            got = counts.setdefault(str(s), [0.0, 0.0])
            got[0] += float(group["won"].sum())
            got[1] += float(len(group))
    return {s: (w + 1.0) / (n + 2.0) for s, (w, n) in counts.items()}


def _stage_at(tables: Tables, ids: pd.Series, t: pd.Timestamp) -> np.ndarray:
    hist = tables.stage_history
    known = hist[(hist["entered_at"] <= t) & hist["opportunity_id"].isin(set(ids))]
    last = known.sort_values("entered_at", kind="stable").groupby("opportunity_id")["stage"].last()
    return ids.map(last).to_numpy(dtype=object)


def done(history: ScoreHistory) -> set[pd.Timestamp]:
    """The dates replayed whole already (their model's run recorded: it is recorded last)."""
    runs = history.runs()
    if runs.empty:
        return set()
    mine = runs[(runs["source"] == "replay") & (runs["role"] == REPLAY)]
    return {pd.Timestamp(t) for t in mine["as_of"]}


def record(history: ScoreHistory, run: DateRun, made_at: pd.Timestamp) -> None:
    """A date's baselines, its forecast, then its model's run (which marks the date done)."""
    history.forget_replayed(run.at)  # what an interrupted run left of this date
    for name, frame in run.baselines.items():
        history.record(frame, made_at, name, "replay", RunFacts(role=BASELINE, horizon_days=run.horizon_days))
    f = run.forecast
    history.record_forecast(f.methods, made_at, f.as_of, f.period, f.open_deals, run.version, "replay")
    history.record(run.scores, made_at, run.version, "replay", run.facts)


def replay(tables: Tables, stages: StageOrder, settings: Settings, history: ScoreHistory, when: list[pd.Timestamp], made_at: pd.Timestamp,
           progress: Callable[[str], None] | None = None, workers: int | None = None) -> list[DateRun]:
    """Replay the dates not recorded yet, side by side in processes where the machine has cores
    to spare (each date's training uses two), each recorded as soon as it is made."""
    step = progress or (lambda _m: None)
    skip = done(history)
    todo = [t for t in when if t not in skip]
    if skip & set(when):
        step(f"{len(skip & set(when))} of {len(when)} dates replayed already: carrying on with {len(todo)}")
    workers = workers or max(1, cores.available() // 2)
    made: list[DateRun] = []

    def finished(k: int, run: DateRun) -> None:
        record(history, run, made_at)
        made.append(run)
        step(f"replayed {run.at:%Y-%m-%d} ({k} of {len(todo)}): {len(run.scores)} open deals scored, won within {run.horizon_days} days")

    if workers == 1 or len(todo) < 2:
        for k, at in enumerate(todo, 1):
            step(f"replaying {at:%Y-%m-%d} ({k} of {len(todo)})")
            finished(k, at_date(tables, stages, settings, at, progress=lambda m, at=at: step(f"{at:%Y-%m-%d}: {m}")))
        return made
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(at_date, tables, stages, settings, at): at for at in todo}
        step(f"replaying {len(todo)} dates, {workers} at a time")
        for k, future in enumerate(as_completed(futures), 1):
            finished(k, future.result())
    return made
