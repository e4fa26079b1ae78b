"""The candidates a target's backtest sets against each other, and their roles in the choice.

Each is a `training.backtest.Candidate`: how it is fitted at a fold, what it needs, and where it
stands (served or a baseline, the fallback, the floor a learned model must not fall below, the
CRM's prior). The choice, the gates and the reports read those roles, never a candidate's name.
"""

from __future__ import annotations

import numpy as np

from features.frame import FeatureSpec
from features.stages import StageOrder
from scoring.models import RateModel
from training import backtest as bt_
from training import baselines
from training import fitting as fit


def configured(stages: StageOrder, spec: FeatureSpec) -> np.ndarray | None:
    """The CRM's configured weight of each stage level, when the config has them."""
    if not stages.config.configured_weights:
        return None
    conf = dict(zip(stages.open, stages.config.configured_weights, strict=True))
    return np.array([conf.get(s, np.nan) for s in spec.categories["stage"]], dtype=float)


def candidates_for(target: str, stages: StageOrder, spec: FeatureSpec, min_class: int) -> list[bt_.Candidate]:
    """The rates pool toward what the rows themselves say (the overall rate): the configured
    weights say what a deal is worth in the end as the CRM's admins guessed it, not within the
    label's horizon; they compete as a candidate of their own, calibrated by the backtest, so
    they count only as far as the evidence shows them right. They are the win rates' start when
    no row is labelled yet; a stall is never given a win weight (with no stall labelled, stall
    risk is not known: `training.pipeline._stall_not_known`)."""
    stage_col = spec.columns.index("stage")
    conf = configured(stages, spec) if target == "win" else None
    booster = lambda rows, at: fit.fit_booster(rows, spec, refit=False)  # noqa: E731 - a fold's booster: the early-stopping one
    linear = lambda rows, at: fit.fit_linear(rows, spec)  # noqa: E731
    out = [
        bt_.Candidate("lightgbm", booster, "LightGBM", min_class, bt_.BOOSTER),
        bt_.Candidate("logistic regression", linear, "logistic regression", fit.MIN_DEALS["linear"], bt_.LINEAR),
        bt_.Candidate("pooled rates", lambda rows, at: fit.fit_rates(rows, spec, conf if not (rows.w > 0).any() else None), "pooled stage × segment rates", fallback=True),
    ]
    if target == "win":  # the outcome as recorded: more and fresher rows where deals take months; biased where losses are recorded late
        out += [
            bt_.Candidate("lightgbm on recorded outcomes", booster, "LightGBM on recorded outcomes", min_class, bt_.BOOSTER, labels="recorded"),
            bt_.Candidate("logistic regression on recorded outcomes", linear, "logistic regression on recorded outcomes", fit.MIN_DEALS["linear"], bt_.LINEAR, labels="recorded"),
        ]
    if target == "win" and conf is not None:
        fixed = RateModel(stage_col, np.nan_to_num(conf, nan=0.5).tolist(), float(np.nanmean(conf)), {})
        out.append(bt_.Candidate("configured weights", lambda rows, at: fixed, "the configured stage weights", prior=True))
    out.append(bt_.Candidate("stage rate", lambda rows, at: fit.fit_rates(rows, spec, None, segments=False, dwell=False), serves=False, floor=True))
    if target == "win":
        out.append(bt_.Candidate("naive Bayes (stage + segments)", lambda rows, at: baselines.naive_bayes(rows, spec), min_deals=1, serves=False))
    else:
        for col, name in (("days_in_stage", "days-in-stage rule"), ("days_since_activity", "days-since-activity rule")):
            j = spec.columns.index(col)
            out.append(bt_.Candidate(name, lambda rows, at, j=j: rule(rows, j), min_deals=1, serves=False))
    return out


def rule(rows: fit.Rows, j: int):
    """A one-feature rule's stall predictions (days in stage, days since activity): a baseline."""
    rows = rows.used()
    predict = baselines.rule(rows.x[:, j], rows.y, rows.w)
    return lambda x: predict(x[:, j])
