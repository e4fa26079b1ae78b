"""What is being served: the model's version and record, and its stage weights."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import HTTPException, Query

from scoring.bundle import WinLabel
from serving.deps import HolderDep, LoadedDep, SettingsDep, v1_router
from serving.schemas import ErrorBody

router = v1_router("model")


@router.get("/model", summary="the model being served, its training period and its rolling backtest beside baselines", responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def model(loaded: LoadedDep, holder: HolderDep, settings: SettingsDep) -> dict[str, Any]:
    meta = loaded.bundle.metadata
    return {
        "version": loaded.version,
        "alias": "champion",
        "source": loaded.source,
        "note": holder.status.message or None,
        "registry_reachable": holder.status.registry_reachable,
        "training_period": {"from": meta.get("data_start"), "to": meta.get("data_end")},
        "win_probability": _meaning(loaded.bundle.win_label),
        "evaluation": meta.get("evaluation"),
        "backtest": _backtest(meta),
        "served": meta.get("served"),
        "data_sufficiency": (meta.get("sufficiency") or {}).get("said"),
        "fallback": meta.get("fallback") or None,
        "stages": loaded.bundle.spec.stage_config,
        "segments": loaded.bundle.spec.segment_columns,
        "stall_horizon_days": meta.get("horizon_days"),
        "counts": meta.get("counts"),
        "max_batch": settings.serving.max_batch,
    }


def _backtest(meta: dict) -> dict[str, Any]:
    """Per target: the fold dates, the deals evaluated, each fold's figures and the pooled
    figures of the served model and every baseline on the same rows; a target that could not
    be backtested says why instead of answering nulls."""
    folds, pooled = meta.get("backtest") or {}, meta.get("held_out") or {}
    out = {}
    for target, served in (meta.get("served") or {}).items():
        done = folds.get(target)
        if done:
            out[target] = {**done, "pooled": pooled.get(target, {})}
        else:
            out[target] = {"folds": [], "evaluated_deals": 0, "per_fold": [], "pooled": {}, "why_none": served.get("why", "no backtest was possible")}
    return out


def _meaning(label: WinLabel | None) -> dict[str, Any]:
    """What the served win probability is the chance of (DESIGN.md: labels in real exports)."""
    if label is None:  # a bundle trained before the label had a horizon
        return {"means": "the chance that the deal is won at all (outcome as recorded)", "horizon_days": None}
    return {"means": f"the chance that the deal is won within {label.horizon_days} days of the date scored (a label that needs no record of a loss)", **asdict(label)}


@router.get("/stage-weights", summary="data-driven stage weights, with intervals, by dwell, optionally per segment", responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}})
def stage_weights(loaded: LoadedDep, segment: str | None = Query(default=None, min_length=1, max_length=200, description="a segment column of the model (GET /v1/model: segments), e.g. source")) -> dict[str, Any]:
    weights = loaded.bundle.stage_weights
    body = {"model_version": loaded.version, "as_of": weights["as_of"], "level": weights["level"], "stages": weights["stages"], "by_dwell": weights["by_dwell"]}
    if segment is not None:
        known = sorted({r["segment"] for r in weights["by_segment"]})
        if segment not in known:  # a segment this model does not have: nothing to show, as for an id not found
            raise HTTPException(404, detail=f"no segment {segment!r} in model version {loaded.version}: its segments are {', '.join(known) or 'none'}")
        body["by_segment"] = [r for r in weights["by_segment"] if r["segment"] == segment]
    return body
