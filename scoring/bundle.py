"""The model bundle: everything serving needs, saved and swapped as one folder.

Both boosters, their calibrators, the feature spec, the point-in-time statistics, the stage
weights, the reference values behind the reasons and the training metadata. It lives in
`features` because training writes it and serving reads it, and serving may not import
training. Calibrators are stored as numbers (isotonic steps or a sigmoid), not pickles, so a
bundle is readable by any version of scikit-learn.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import BundleInvalid
from features.frame import FeatureSpec
from features.pit_stats import PointInTimeStats

FORMAT_VERSION = 1
TARGETS = ("win", "stall")


@dataclass
class Calibrator:
    """Maps a raw score to a calibrated probability; 'isotonic' steps or a 'sigmoid' on the logit."""

    kind: str
    params: dict[str, Any]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.kind == "isotonic":
            return np.interp(raw, self.params["x"], self.params["y"])
        if self.kind == "sigmoid":
            logit = np.log(np.clip(raw, 1e-6, 1 - 1e-6) / (1 - np.clip(raw, 1e-6, 1 - 1e-6)))
            return 1.0 / (1.0 + np.exp(-(self.params["a"] * logit + self.params["b"])))
        if self.kind == "identity":
            return raw
        raise BundleInvalid(f"unknown calibrator kind {self.kind!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params}


@dataclass
class TargetModel:
    """One target: a booster and its calibrator, or a stage-rate fallback when data was thin."""

    booster: lgb.Booster | None
    calibrator: Calibrator
    fallback_rates: dict[str, float] | None = None  # stage → rate, used when booster is None
    fallback_reason: str | None = None

    def predict(self, x: pd.DataFrame | np.ndarray, stage: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities of a model frame or a model matrix (features.frame); the
        fallback reads the stage names (`stage`, or the frame's column)."""
        if self.booster is None:
            rates = self.fallback_rates or {}
            default = float(np.mean(list(rates.values()))) if rates else 0.5
            names = x["stage"] if stage is None else pd.Series(stage, dtype=object)
            return names.astype(object).map(rates).fillna(default).to_numpy(dtype=float)
        return self.calibrator(self.booster.predict(x))

    def contributions(self, x: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """Per-feature contributions in log-odds (LightGBM's SHAP values), without the bias column."""
        if self.booster is None:
            return None
        return self.booster.predict(x, pred_contrib=True)[:, :-1]


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
            models[target] = {
                "calibrator": model.calibrator.to_dict(),
                "fallback_rates": model.fallback_rates,
                "fallback_reason": model.fallback_reason,
                "has_booster": model.booster is not None,
            }
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
        if doc.get("format") != FORMAT_VERSION:
            raise BundleInvalid(f"{folder}: bundle format {doc.get('format')}, expected {FORMAT_VERSION}")
        spec = FeatureSpec.from_json((folder / "spec.json").read_text(encoding="utf-8"))
        frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("win_steps", "dwell_steps")}
        stats = PointInTimeStats.from_frames(spec.stat_keys, doc["shrinkage"], frames)
        models = {}
        for target, info in doc["models"].items():
            booster = lgb.Booster(model_file=str(folder / f"{target}.lgb.txt")) if info["has_booster"] else None
            cal = Calibrator(info["calibrator"]["kind"], info["calibrator"]["params"])
            models[target] = TargetModel(booster, cal, info["fallback_rates"], info["fallback_reason"])
        timing = pd.read_parquet(folder / "timing.parquet") if (folder / "timing.parquet").exists() else None
        return cls(spec, stats, models, doc["stage_weights"], doc["reference"], doc["grades"], doc["metadata"], timing)


def export_atomically(bundle_dir: Path, target: Path) -> None:
    """Replace `target` with a copy of `bundle_dir` so that a crash leaves the old or the new
    bundle complete, never a mix: copy beside it, then two renames; `load_exported` recovers
    the previous one if a crash fell between them."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
    previous = target.with_name(f".{target.name}.previous")
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)


def load_exported(target: Path) -> Bundle:
    """The exported bundle, or the previous one if an export was interrupted mid-swap."""
    target = Path(target)
    if (target / "bundle.json").exists():
        return Bundle.load(target)
    previous = target.with_name(f".{target.name}.previous")
    if (previous / "bundle.json").exists():
        return Bundle.load(previous)
    raise BundleInvalid(f"{target}: no exported bundle (train one with `oppscore train`)")
