"""The model bundle: everything serving needs, saved and swapped as one folder.

Both boosters, their calibrators, the feature spec, the point-in-time statistics, the stage
weights, the reference values behind the reasons and the training metadata. It lives in
`scoring` because training writes it and serving reads it, and serving may not import
training. Calibrators are stored as numbers (isotonic steps or a sigmoid), not pickles, so a
bundle is readable by any version of scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import BundleInvalid
from features.frame import FeatureSpec
from features.pit_stats import PointInTimeStats
from scoring.calibrators import Calibrator
from scoring.models import BoosterModel, Estimator, RateModel, estimator_from_dict, estimator_to_dict

FORMAT_VERSION = 2  # 2: the served model may be a booster, a linear model or rates (1: booster or stage rates)
TARGETS = ("win", "stall")


@dataclass
class TargetModel:
    """One target: the model the backtest chose (a booster, a linear model or pooled rates) and
    the calibrator fitted on its out-of-fold predictions; `note` says why this one serves."""

    estimator: Estimator
    calibrator: Calibrator
    note: str | None = None

    @property
    def kind(self) -> str:
        return self.estimator.kind

    @property
    def booster(self) -> lgb.Booster | None:
        return self.estimator.booster if isinstance(self.estimator, BoosterModel) else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of a model matrix (`features.frame.model_matrix`)."""
        return self.calibrator(self.estimator.probability(x))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature-column contributions in log-odds, before calibration."""
        return self.estimator.contributions(x)


@dataclass(frozen=True)
class WinLabel:
    """What the served win probability is the chance of: a win within `horizon_days` of the date
    scored (written by training as `metadata["win_label"]`, read here, typed, by every reader)."""

    horizon_days: int
    said: str
    coverage: float | None = None  # share of the followed won snapshots whose win came within the horizon
    won_snapshots: int | None = None
    why: str = ""

    @classmethod
    def of(cls, doc: dict | None) -> WinLabel | None:
        """None for a bundle trained before the label had a horizon (its probability: a win at all)."""
        if not doc or doc.get("horizon_days") is None:
            return None
        return cls(int(doc["horizon_days"]), str(doc.get("said") or f"won within {doc['horizon_days']} days of the date scored"),
                   doc.get("coverage"), doc.get("won_snapshots"), str(doc.get("why") or ""))


@dataclass
class Bundle:
    spec: FeatureSpec
    stats: PointInTimeStats
    models: dict[str, TargetModel]
    stage_weights: dict[str, Any]
    reference: dict[str, dict[str, float]]  # stage → feature → typical value among won deals
    grades: list[float]  # win-probability cut-offs for A, B, C (descending)
    metadata: dict[str, Any] = field(default_factory=dict)
    timing: pd.DataFrame | None = None  # time-to-win pools for forecasts (analytics.forecast)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unregistered"))

    @property
    def win_label(self) -> WinLabel | None:
        return WinLabel.of(self.metadata.get("win_label"))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(self.spec.to_json(), encoding="utf-8")
        for name, frame in self.stats.to_frames().items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        if self.timing is not None:
            self.timing.to_parquet(folder / "timing.parquet", index=False)
        models = {}
        for target, model in self.models.items():
            if model.booster is not None:
                model.booster.save_model(str(folder / f"{target}.lgb.txt"))
            models[target] = {"calibrator": model.calibrator.to_dict(), "estimator": estimator_to_dict(model.estimator), "note": model.note}
        doc = {
            "format": FORMAT_VERSION,
            "models": models,
            "stage_weights": self.stage_weights,
            "reference": self.reference,
            "grades": self.grades,
            "shrinkage": self.stats.shrinkage,
            "metadata": self.metadata,
        }
        (folder / "bundle.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        folder = Path(folder)
        doc_path = folder / "bundle.json"
        if not doc_path.exists():
            raise BundleInvalid(f"{folder}: no bundle.json, not a model bundle")
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        if doc.get("format") not in (1, FORMAT_VERSION):
            raise BundleInvalid(f"{folder}: bundle format {doc.get('format')}, expected {FORMAT_VERSION}")
        spec = FeatureSpec.from_json((folder / "spec.json").read_text(encoding="utf-8"))
        frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("win_steps", "dwell_steps")}
        stats = PointInTimeStats.from_frames(spec.stat_keys, doc["shrinkage"], frames)
        models = {}
        for target, info in doc["models"].items():
            cal = Calibrator.from_dict(info["calibrator"])
            booster_file = folder / f"{target}.lgb.txt"
            booster = lgb.Booster(model_file=str(booster_file)) if booster_file.exists() else None
            if doc["format"] == 1:  # a booster, or stage-name rates when data was thin
                estimator = BoosterModel(booster) if booster is not None else _rates_of_format_1(spec, info["fallback_rates"] or {})
                models[target] = TargetModel(estimator, cal, info.get("fallback_reason"))
            else:
                models[target] = TargetModel(estimator_from_dict(info["estimator"], booster), cal, info.get("note"))
        timing = pd.read_parquet(folder / "timing.parquet") if (folder / "timing.parquet").exists() else None
        return cls(spec, stats, models, doc["stage_weights"], doc["reference"], doc["grades"], doc["metadata"], timing)


def _rates_of_format_1(spec: FeatureSpec, rates: dict[str, float]) -> RateModel:
    levels = spec.categories.get("stage", [])
    overall = float(np.mean(list(rates.values()))) if rates else 0.5
    return RateModel(spec.columns.index("stage"), [float(rates.get(level, overall)) for level in levels], overall, {})
