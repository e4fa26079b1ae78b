"""Reasons a sales manager reads: LightGBM contributions grouped into named factors, each with
one sentence that compares the deal with won deals at the same stage."""

from __future__ import annotations

import math

import numpy as np

from features.catalogue import Reading
from features.frame import FeatureSpec

TOP_FACTORS = 3


def factor_of(feature: str, spec: FeatureSpec) -> str:
    """The readable factor a feature belongs to (`features.catalogue`); contributions are summed per factor."""
    return spec.features[feature].factor


def sentence(feature: str, row: dict, reference: dict[str, float], spec: FeatureSpec) -> str:
    """One sentence about the feature's value, against won deals at the same stage where known."""
    return spec.features[feature].sentence(Reading(feature, row, reference))


def _grouped(contributions: np.ndarray, spec: FeatureSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Contributions summed per factor, the factors' names, and per row and factor the member
    feature with the largest |contribution| (it speaks for the factor)."""
    columns = spec.columns
    factors = [factor_of(f, spec) for f in columns]
    names = list(dict.fromkeys(factors))
    member = np.zeros((len(columns), len(names)))
    for i, f in enumerate(factors):
        member[i, names.index(f)] = 1.0
    grouped = contributions @ member
    leader = np.zeros((len(contributions), len(names)), dtype=int)
    for j in range(len(names)):
        cols = np.flatnonzero(member[:, j])
        leader[:, j] = cols[np.abs(contributions[:, cols]).argmax(axis=1)]
    return names, grouped, leader


def _records(features: dict[str, np.ndarray], spec: FeatureSpec) -> list[dict]:
    return [dict(zip(spec.columns, values, strict=True)) for values in zip(*(features[c].tolist() for c in spec.columns), strict=True)]


def factor_contributions(contributions: np.ndarray, spec: FeatureSpec) -> list[dict[str, float]]:
    """Per row, every factor's contribution (log-odds): what score history keeps to say later
    which factors moved."""
    names, grouped, _ = _grouped(contributions, spec)
    return [{n: round(float(v), 5) for n, v in zip(names, row, strict=True) if v != 0.0} for row in grouped]


def why_changed(
    features: dict[str, np.ndarray], contributions: np.ndarray, spec: FeatureSpec, reference: dict[str, dict[str, float]],
    before: list[dict[str, float] | None], win_now: np.ndarray, win_before: np.ndarray, k: int = TOP_FACTORS,
) -> list[list[dict] | None]:
    """Per row, the factors whose contribution moved most since the previous score, each with
    its points and a sentence about it now ("in stage Proposal", +12; see `changes_in_words`).
    The score's change is shared among the factors in proportion to their change in log-odds
    (so the shares add up to the change, calibration included); when those changes cancel
    out, each is taken at the probability's slope between the two scores."""
    names, grouped, leader = _grouped(contributions, spec)
    records = _records(features, spec)
    out: list[list[dict] | None] = []
    for r, row in enumerate(records):
        if before[r] is None:
            out.append(None)
            continue
        delta = grouped[r] - np.array([before[r].get(n, 0.0) for n in names])
        total, change = delta.sum(), (win_now[r] - win_before[r]) * 100
        if abs(total) > 0.05 and np.sign(total) == np.sign(change):
            points = delta / total * change
        else:
            p = (win_now[r] + win_before[r]) / 2
            points = delta * p * (1 - p) * 100
        ref = reference.get(str(row.get("stage")), {})
        out.append([
            {"factor": names[j], "points": round(float(points[j]), 1), "sentence": sentence(spec.columns[leader[r, j]], row, ref, spec)}
            for j in np.argsort(-np.abs(points))[:k] if abs(points[j]) >= 0.5
        ])
    return out


def changes_in_words(changes: list[dict] | None) -> str:
    """"in stage Proposal (+12) · no activity for 21 days (−8)"; "" for a deal scored first now."""
    if changes is None:
        return ""
    if not changes:
        return "no factor moved by a point or more"
    return " · ".join(f"{c['sentence']} ({c['points']:+.0f})".replace("(-", "(−") for c in changes)


def top_factors(
    features: dict[str, np.ndarray], contributions: np.ndarray, spec: FeatureSpec, reference: dict[str, dict[str, float]], k: int = TOP_FACTORS
) -> list[list[dict]]:
    """Per row, the k factors with the largest absolute contribution (summed within a factor)."""
    columns = spec.columns
    names, grouped, leader = _grouped(contributions, spec)
    order = np.argsort(-np.abs(grouped), axis=1)[:, :k]
    out = []
    for r, row in enumerate(_records(features, spec)):  # sentences are text: one per factor shown, not per feature
        ref = reference.get(str(row.get("stage")), {})
        items = []
        for rank, j in enumerate(order[r]):
            if rank > 0 and grouped[r, j] == 0.0:  # a model that reads few columns (rates) has few reasons
                break
            feature = columns[leader[r, j]]
            value = row.get(feature)
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, (np.floating, float)):
                value = round(float(value), 4)
            items.append(
                {
                    "factor": names[j],
                    "feature": feature,
                    "value": value,
                    "contribution": round(float(grouped[r, j]), 4),
                    "direction": "raises" if grouped[r, j] > 0 else "lowers",
                    "sentence": sentence(feature, row, ref, spec),
                }
            )
        out.append(items)
    return out
