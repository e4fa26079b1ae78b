"""Whether a trained version takes the champion's place: the gates, apart from the registry
that records the outcome (`training.registry`).

The backtest gate: a challenger takes the alias only by beating the champion on rows neither
could learn from, and its own baselines (by their candidates' roles); never across a change of
data shape. The realised gate (`promote --realised`): only a version that beat the champion on
the outcomes of the scores both recorded, beyond doubt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics.metrics import metrics
from analytics.track_record import TrackRecord, compare
from features.errors import NotEnoughData
from features.settings import Settings
from features.tables import Tables
from scoring.bundle import Bundle
from scoring.store import champion_version, load_version
from training.data import TrainingData
from training.pipeline import TrainResult, evaluate_on

GATE_TARGETS = ("win", "stall")
FRESH_ROWS = 30  # backtest points (open deal, date) after the champion's data end needed for a fair comparison
TOLERANCE = 0.002  # log-loss a challenger may lose on one target if it gains more on the other


def shape_of(bundle: Bundle) -> dict:
    """What a bundle's features mean: its stages, segment columns and activity types."""
    spec = bundle.spec
    return {"stages": spec.stage_config, "segments": list(spec.segment_columns), "activity types": list(spec.activity_types)}


def _beats_baselines(result: TrainResult) -> tuple[bool, str]:
    """The served model against its baselines (the floor and the CRM's prior: the stage rate and
    the configured weights, by their candidates' roles), pooled backtest."""
    win = result.metrics.get("win", {})
    if "model" not in win:
        return True, "had no backtest to set against the baselines"
    ours = win["model"]["log_loss"]
    behind = [name for name in result.baselines.get("win", []) if name in win and win[name]["log_loss"] < ours - TOLERANCE]
    return (not behind), ("beats the baselines" if not behind else f"is behind {', '.join(behind)} on win log loss")


def gate(result: TrainResult, tables: Tables | TrainingData, settings: Settings) -> tuple[bool, str, dict | None]:
    """A challenger takes the alias only by beating the champion on rows neither could learn
    from, and the baselines; never across a change of data shape."""
    current = champion_version(settings)
    ok_baselines, baseline_words = _beats_baselines(result)
    if current is None:  # the rule for a first version: something must serve, and this is what the evidence chose
        return True, f"the first version becomes champion, whatever its backtest; it {baseline_words}", None
    champion = load_version(settings, current)
    if shape_of(champion) != shape_of(result.bundle):
        changed = [k for k, v in shape_of(result.bundle).items() if shape_of(champion)[k] != v]
        return False, f"not promoted: the champion v{current} reads other {' and '.join(changed)} (another export?): give this export its own champion with `[project] name = '...'` in its oppscore.toml, or `oppscore promote VERSION --force` to switch", None
    if champion.metadata.get("data_fingerprint") == result.bundle.metadata.get("data_fingerprint"):
        return False, f"not promoted: champion v{current} was trained on these same data; nothing new to learn from", None
    held = result.held_out
    if len(held.points) == 0 or not held.ours:
        return False, f"not promoted: this run has no backtest to compare with champion v{current}", None
    end = pd.Timestamp(champion.metadata.get("data_end", "1970-01-01T00:00:00Z"))
    rows = held.since(end)  # deals the champion never saw, at times after its data ended
    if (rows.w["win"] > 0).sum() < FRESH_ROWS:
        return False, (
            f"not promoted: only {int((rows.w['win'] > 0).sum())} backtest points (open deal, date) with an outcome after champion v{current}'s data ended "
            f"({end:%Y-%m-%d}); {FRESH_ROWS} are needed to compare them fairly (on what it saw, the champion would look better than it is). "
            f"`oppscore evaluate` compares versions; `oppscore promote VERSION` switches by hand"
        ), None
    theirs = evaluate_on(champion, tables, rows)
    targets = [t for t in GATE_TARGETS if (rows.w[t] * ~np.isnan(rows.ours[t])).sum() > 0]
    ours = {t: metrics(rows.y[t], np.nan_to_num(rows.ours[t], nan=0.5), rows.w[t] * ~np.isnan(rows.ours[t])) for t in targets}
    gains = {t: theirs[t]["log_loss"] - ours[t]["log_loss"] for t in targets}
    better = sum(gains.values()) > 0 and all(g > -TOLERANCE for g in gains.values())
    words = ", ".join(f"{t} log loss {ours[t]['log_loss']:.4f} vs champion v{current} {theirs[t]['log_loss']:.4f}" for t in targets)
    words += f" on {int((rows.w['win'] > 0).sum())} deal-dates after {end:%Y-%m-%d}"
    if better and not ok_baselines:
        return False, f"not promoted: beats the champion but {baseline_words}: {words}", theirs
    return better, ("beats the champion: " if better else "does not beat the champion: ") + words + f" (it {baseline_words})", theirs


@dataclass(frozen=True)
class Realised:
    """Two versions on the same resolved scores (`analytics.track_record.compare`)."""

    version: str
    champion: str
    pairs: int
    deals: int
    figures: dict  # "version" and "champion": auc, log_loss, ece
    gap_90: tuple[float, float]
    better: bool


def realised_gate(record: TrackRecord, version: str, champion: str, data: str) -> Realised:
    """`version` against `champion` on the outcomes of the scores both recorded of the same
    deals and dates; NotEnoughData when there are none, or when it did not win beyond doubt."""
    got = compare(record.scores, version, champion)
    if not got["pairs"]:
        raise NotEnoughData(f"--realised {data}: no resolved score of v{version} beside one of champion v{champion} on the same deal and date; score with `--shadow {version}` and wait for outcomes")
    low, high = got["gap_90"] or (float("nan"), float("nan"))
    return Realised(version, champion, got["pairs"], got["deals"], {"version": got["version"], "champion": got["champion"]}, (low, high), bool(got["better_beyond_doubt"]))
