"""Drift between what a version was trained on and the pipeline it scores today.

Training stores a reference in the bundle (`reference`): per model column, the bins of its
recent training snapshots (deciles of a number, the levels of a category, and missing as a bin
of its own) with their shares, and the same for the win probability it gives those snapshots.
Each scoring run measures the open pipeline against it (its points tallied, `tally`, whole or
partition by partition, then judged together, `judge`, `of_run`): the population stability
index (PSI = Σ (now − then) · ln(now / then) over the bins; 0.1 is a moderate shift, 0.25 the
usual "major" one) and the share of rows zero or missing then and now, from which `silent`
reads the features gone silent (values in training, none now: a feed that stopped, a column the
export lost) with the reader's threshold (`[monitor] silent_share`). The win
rates a segment, owner or account earned so far move as deals close, by design: they are
measured but never count as drift (`Feature.from_outcomes`); their segment itself is a
column of its own.

A few lines of numpy rather than a monitoring library: the measure is the standard one, it
must run inside a scoring run on the model matrix as it is, and the popular libraries changed
owners or their API recently (see the issue-31 note).
"""

from __future__ import annotations

import numpy as np

from features.frame import FeatureSpec

BINS = 10
FLOOR = 1e-4  # a bin empty on one side counts as this share: PSI stays finite


def _numeric_edges(values: np.ndarray) -> list[float]:
    known = values[~np.isnan(values)]
    if len(known) == 0:
        return []
    return np.unique(np.quantile(known, np.linspace(0, 1, BINS + 1)[1:-1])).tolist()


def _counts(values: np.ndarray, edges: list[float] | None, levels: int | None) -> np.ndarray:
    """Rows in each bin: the numeric bins split at `edges` (or one per level), then missing."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    n_bins = (len(edges) + 1) if edges is not None else levels
    counts = np.zeros(n_bins + 1)
    known = values[~missing]
    if edges is not None:
        which = np.searchsorted(np.asarray(edges), known, side="right")
    else:
        which = np.clip(known.astype(np.int64), 0, n_bins - 1)
    counts[:n_bins] = np.bincount(which, minlength=n_bins)[:n_bins]
    counts[n_bins] = missing.sum()
    return counts


def _shares(values: np.ndarray, edges: list[float] | None, levels: int | None) -> np.ndarray:
    """Shares of the bins (`_counts`)."""
    return _counts(values, edges, levels) / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(np.asarray(expected, dtype=float), FLOOR), np.maximum(np.asarray(actual, dtype=float), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _quiet(values: np.ndarray) -> float:
    """The share of rows zero or missing."""
    values = np.asarray(values, dtype=float)
    return float(np.mean(np.isnan(values) | (values == 0))) if len(values) else float("nan")


def reference(x: np.ndarray, spec: FeatureSpec, win: np.ndarray) -> dict:
    """What a version saw: per model column its bins and shares, and its served win probability's."""
    columns = {}
    for j, col in enumerate(spec.columns):
        values = np.asarray(x[:, j], dtype=float)
        if col in spec.categorical:
            levels = len(spec.categories.get(col, []))
            columns[col] = {"levels": levels, "shares": _shares(values, None, levels).tolist(), "quiet": _quiet(values)}
        else:
            edges = _numeric_edges(values)
            columns[col] = {"edges": edges, "shares": _shares(values, edges, None).tolist(), "quiet": _quiet(values)}
    score_edges = _numeric_edges(np.asarray(win, dtype=float))
    return {"rows": int(len(x)), "columns": columns, "score": {"edges": score_edges, "shares": _shares(win, score_edges, None).tolist()}}


def tally(ref: dict, x: np.ndarray, spec: FeatureSpec, win: np.ndarray) -> dict:
    """What drift is judged from, in counts that add up: per reference column its rows in each
    of the reference's bins and its rows zero or missing, and the same bins of the win
    probability. A partitioned export's partitions are tallied apart and judged together."""
    columns = {}
    for j, col in enumerate(spec.columns):
        kept = ref["columns"].get(col)
        if kept is None:  # a column the version did not have: nothing to compare
            continue
        values = np.asarray(x[:, j], dtype=float)
        columns[col] = {"bins": _counts(values, kept.get("edges"), kept.get("levels")), "quiet": int(np.count_nonzero(np.isnan(values) | (values == 0)))}
    return {"rows": int(len(x)), "columns": columns, "score": _counts(win, ref["score"]["edges"], None)}


def judge(ref: dict, tallies: list[dict], spec: FeatureSpec) -> dict:
    """The open pipeline (its tallies added up) against the reference: per feature PSI and
    zero-or-missing share (then, now), the score's PSI and the largest PSI per family."""
    rows = sum(t["rows"] for t in tallies)
    catalogue = spec.features
    features = {}
    for col in spec.columns:
        kept = ref["columns"].get(col)
        counted = [t["columns"][col] for t in tallies if col in t["columns"]]
        if kept is None or not counted:
            continue
        now = sum(c["bins"] for c in counted) / max(rows, 1)
        quiet = sum(c["quiet"] for c in counted) / rows if rows else float("nan")
        known = catalogue.get(col)
        features[col] = {"psi": psi(kept["shares"], now), "quiet_then": kept["quiet"], "quiet_now": quiet, "family": known.family if known else "other",
                         "from_outcomes": bool(known and known.from_outcomes)}
    score = psi(ref["score"]["shares"], sum(t["score"] for t in tallies) / rows) if rows else float("nan")
    families: dict[str, float] = {}
    for f in features.values():
        if not f["from_outcomes"]:
            families[f["family"]] = max(families.get(f["family"], 0.0), f["psi"])
    return {"rows": rows, "features": features, "score_psi": score, "families": families}


def of_run(bundle, tallies: list[dict]) -> dict:
    """A scoring run's drift from `bundle`'s training reference, its points tallied whole or
    partition by partition (`scoring.score.score_open(..., drift_into=)`); {} when the bundle
    has no reference (trained before drift was kept) or nothing was tallied."""
    ref = bundle.metadata.get("drift_reference")
    tallies = [t for t in tallies if t]
    return judge(ref, tallies, bundle.spec) if ref and tallies else {}


def silent(measured: dict, share: float) -> list[str]:
    """The features gone silent: at least `share` of the rows zero or missing now, where the
    reference had clearly fewer (below `share` − 0.2)."""
    if not measured.get("rows"):
        return []
    return [c for c, f in (measured.get("features") or {}).items() if f["quiet_now"] >= share and f["quiet_then"] < share - 0.2]


def noise(rows: int) -> float:
    """The PSI two samples of one population show by chance alone, about (bins − 1) / rows for
    the smaller sample: a pipeline of 200 deals shows ≈ 0.05 with nothing changed."""
    return BINS / max(rows, 1)


def drifted(measured: dict, alert: float) -> list[str]:
    """The features whose PSI reached `alert` beyond what chance gives this many rows, largest
    first; the outcome statistics never count (they move by design)."""
    feats = measured.get("features") or {}
    bar = alert + noise(int(measured.get("rows") or 0))
    found = [c for c, f in feats.items() if not f.get("from_outcomes") and (f.get("psi") or 0.0) >= bar]
    return sorted(found, key=lambda c: -feats[c]["psi"])
