"""Reasons a sales manager reads: LightGBM contributions grouped into named factors, each with
one sentence that compares the deal with won deals at the same stage."""

from __future__ import annotations

import math

import numpy as np

from features.frame import FeatureSpec

TOP_FACTORS = 3


def factor_of(feature: str, spec: FeatureSpec) -> str:
    """The readable factor a feature belongs to; contributions are summed per factor."""
    if feature in ("stage", "stage_progress", "furthest_progress"):
        return "pipeline stage"
    if feature in ("days_in_stage", "dwell_ratio"):
        return "time in stage"
    if feature in ("age_days", "stage_velocity", "stage_changes", "moves_back", "reopened"):
        return "deal momentum"
    if feature == "days_since_activity":
        return "recent activity"
    if feature in ("days_since_inbound", "inbound_share", "distinct_contacts"):
        return "customer engagement"
    if feature.startswith("activities_") or feature == "activity_trend":
        return "activity volume"
    for t in spec.activity_types:
        if feature.startswith(f"{t}_"):
            return f"{t.replace('_', ' ')}s"
    if feature in ("log_amount", "amount_change"):
        return "deal size"
    if feature in ("days_to_close", "close_date_pushes", "close_date_days_pushed"):
        return "close date"
    if feature == "win_rate_owner_id":
        return "owner's track record"
    if feature == "win_rate_account_id":
        return "account history"
    if feature.startswith("win_rate_"):
        return feature.removeprefix("win_rate_").replace("_", " ")
    if feature in spec.segment_columns:
        return feature.replace("_", " ")
    return feature.replace("_", " ")


def _days(v: float) -> str:
    n = int(round(v))
    return "less than a day" if n < 1 else f"{n} day" + ("" if n == 1 else "s")


def _times(n: float, one: str, many: str) -> str:
    """`n` things in words: 1 activity, 2 activities."""
    n = int(n or 0)
    return f"{n} {one if n == 1 else many}"


def sentence(feature: str, row: dict, reference: dict[str, float], spec: FeatureSpec) -> str:
    """One sentence about the feature's value, against won deals at the same stage where known."""
    v = row.get(feature)
    ref = reference.get(feature)
    stage = row.get("stage")
    has_ref = ref is not None and not (isinstance(ref, float) and math.isnan(ref))
    missing = v is None or (isinstance(v, float) and math.isnan(v))
    if feature == "days_since_activity":
        said = "no activity logged yet" if missing else ("an activity within the last day" if v < 1 else f"no activity for {_days(v)}")
        return said + (f"; won deals at this stage typically had one within {_days(ref)}" if has_ref else "")
    if feature == "days_since_inbound":
        if missing:
            return "the customer has not reached out yet"
        return f"last contact from the customer {_days(v)} ago" + (f" (won deals at this stage: {_days(ref)})" if has_ref else "")
    if feature in ("days_in_stage", "dwell_ratio"):  # both read as time in the stage
        typical = reference.get("days_in_stage")
        return f"{_days(row.get('days_in_stage'))} in {stage}" + (f"; won deals typically moved on within {_days(typical)}" if typical is not None else "")
    if feature in ("stage", "stage_progress", "furthest_progress"):
        return f"in stage {stage}" + (", having been further along before" if row.get("furthest_progress", 0) > row.get("stage_progress", 0) else "")
    if feature.startswith("activities_") or feature == "activity_trend":
        window = feature.removeprefix("activities_") if feature.startswith("activities_") else "30d"
        count = row.get(f"activities_{window}", 0)
        base = f"{_times(count, 'activity', 'activities')} in the last {window.removesuffix('d')} days"
        ref30 = reference.get(f"activities_{window}")
        return base + (f" (won deals at this stage: {ref30:.0f})" if ref30 is not None else "")
    for t in spec.activity_types:
        if feature.startswith(f"{t}_"):
            window = feature.removeprefix(f"{t}_").removesuffix("d")
            return f"{_times(v, t.replace('_', ' '), t.replace('_', ' ') + 's')} in the last {window} days" + (f" (won deals at this stage: {ref:.1f})" if has_ref else "")
    if feature == "inbound_share":
        return "no activities yet" if missing else f"{v:.0%} of activities came from the customer" + (f" (won deals: {ref:.0%})" if has_ref else "")
    if feature == "distinct_contacts":
        return f"{_times(v, 'contact', 'contacts')} involved" + (f" (won deals at this stage: {ref:.1f})" if has_ref else "")
    if feature == "log_amount":
        return f"deal size {math.expm1(v):,.0f}" if not missing else "deal size unknown"
    if feature == "days_to_close":
        if missing:
            return "no expected close date recorded"
        return f"{_days(-v)} past its expected close date" if v < 0 else f"expected to close in {_days(v)}"
    if feature in ("close_date_pushes", "close_date_days_pushed"):
        pushes, days = row.get("close_date_pushes"), row.get("close_date_days_pushed")
        if pushes is None or (isinstance(pushes, float) and math.isnan(pushes)) or not pushes:
            return "close date never pushed"
        return f"close date pushed {int(pushes)} time(s), {_days(days or 0)} in all"
    if feature == "amount_change":
        return "amount unchanged since it was first recorded" if missing or abs(v) < 1e-9 else f"amount {math.expm1(v):+.0%} since it was first recorded"
    if feature == "age_days":
        return f"open for {_days(v)}" + (f" (won deals at this stage: {_days(ref)})" if has_ref else "")
    if feature == "moves_back":
        return "moved back to an earlier stage " + ("once" if int(v) == 1 else f"{int(v)} times")
    if feature == "reopened":
        return "re-opened after a loss" if v else "never lost before"
    if feature == "stage_changes":
        return f"{_times(v, 'stage change', 'stage changes')} so far"
    if feature == "stage_velocity":
        return f"advancing {v:.1f} stages per 30 days" + (f" (won deals: {ref:.1f})" if has_ref else "")
    if feature.startswith("win_rate_"):
        key = feature.removeprefix("win_rate_")
        label = {"owner_id": "the owner", "account_id": "the account"}.get(key, f"{key.replace('_', ' ')} {row.get(key, '')!s}".strip())
        return f"{label} has won {v:.0%} of closed deals so far"
    if feature in spec.segment_columns:
        return f"{feature.replace('_', ' ')}: {v}" if v is not None else f"no {feature.replace('_', ' ')} given"
    return f"{feature.replace('_', ' ')}: {v}"


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
