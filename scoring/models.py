"""The kinds of model a bundle can serve, behind one interface.

Which one serves is chosen by evidence at training time (the backtest's pooled log loss), so
a small pipeline may be served a regularised linear model or partially pooled stage rates
rather than a booster. Each reads the same model matrix (`features.frame.model_matrix`: numbers,
and categoricals as codes among the training levels, NaN when unknown) and each explains itself
in log-odds contributions per feature column, so reasons read the same whatever serves.

Linear models and rates are stored as numbers, not pickles, so a bundle stays readable by any
version of scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.special import expit, logit

from features.errors import BundleInvalid

EPS = 1e-6


class Estimator(Protocol):
    kind: str

    def probability(self, x: np.ndarray) -> np.ndarray: ...

    def contributions(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class BoosterModel:
    """A LightGBM booster; contributions are its TreeSHAP values (the bias column dropped)."""

    booster: Any  # lightgbm.Booster
    kind: str = "lightgbm"

    def probability(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, num_threads=_threads(len(x)))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, pred_contrib=True, num_threads=_threads(len(x)))[:, :-1]


ONE_THREAD_UP_TO = 1_000  # rows a booster predicts on one thread


def _threads(rows: int) -> int:
    """One thread for a request's few rows: waking LightGBM's OpenMP team costs more than the
    trees, and on a machine whose other cores are busy (another worker, another process) the
    team waits for them: 2.2 ms a call against 0.1 (issue 39). Batches use every core (0)."""
    return 1 if rows <= ONE_THREAD_UP_TO else 0


@dataclass
class LinearModel:
    """Logistic regression on the model matrix: numbers imputed by their training median (with a
    missing-value indicator) and standardised, categoricals one-hot over their training codes.
    A column's contribution is its terms' distance from the training mean, times their weights."""

    numeric: list[int]  # model-matrix columns read as numbers
    median: list[float]
    mean: list[float]  # of the imputed column
    scale: list[float]
    missing_weight: list[float]  # weight of the column's missing indicator
    missing_mean: list[float]  # share missing in training
    weight: list[float]  # per numeric column, on the standardised value
    categorical: list[int]  # model-matrix columns read as codes
    level_weight: list[list[float]]  # per categorical column, one weight per code
    level_mean: list[list[float]]  # per categorical column, the training share of each code
    intercept: float
    kind: str = "linear"

    def _terms(self, x: np.ndarray) -> np.ndarray:
        """Per-column contributions (n × p), centred on the training mean."""
        out = np.zeros((len(x), x.shape[1]))
        for j, col in enumerate(self.numeric):
            values = x[:, col]
            missing = np.isnan(values)
            z = (np.where(missing, self.median[j], values) - self.mean[j]) / self.scale[j]
            out[:, col] = self.weight[j] * z + self.missing_weight[j] * (missing - self.missing_mean[j])
        for j, col in enumerate(self.categorical):
            codes = x[:, col]
            weights = np.asarray(self.level_weight[j])
            known = ~np.isnan(codes) & (codes >= 0) & (codes < len(weights))
            picked = np.where(known, weights[np.where(known, codes, 0).astype(np.int64)], 0.0)
            out[:, col] = picked - float(np.dot(weights, self.level_mean[j]))
        return out

    def _centre(self) -> float:
        return self.intercept + sum(float(np.dot(w, m)) for w, m in zip(self.level_weight, self.level_mean, strict=True)) + float(
            np.dot(self.missing_weight, self.missing_mean)
        )

    def probability(self, x: np.ndarray) -> np.ndarray:
        return expit(self._centre() + self._terms(x).sum(axis=1))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self._terms(x)


@dataclass
class RateModel:
    """Partially pooled rates: the stage's rate (shrunk toward the overall rate), moved by each
    segment value's rate at that stage (shrunk toward the stage's), averaged in log-odds over the
    segment columns. What a team can read off a table, and the fallback when data is thin."""

    stage_column: int
    stage_rate: list[float]  # per stage code
    overall: float
    segments: dict[int, list[list[float]]]  # model-matrix column → [stage code][level code] log-odds shift
    kind: str = "rates"
    dwell: dict | None = None  # {"column", "edges": days, "shifts": [stage code][band] log-odds}: how long a deal has sat in its stage

    def _dwell(self, x: np.ndarray, code: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The log-odds shift of the deal's band of days in its stage (a deal long in a stage
        wins less within the horizon, in every CRM): what lets the rates follow a pipeline whose
        share of stale deals grows, as a young org's does."""
        if not self.dwell:
            return np.zeros(len(x))
        shifts, days = np.asarray(self.dwell["shifts"]), x[:, self.dwell["column"]]
        band = np.searchsorted(np.asarray(self.dwell["edges"], dtype=float), np.nan_to_num(days, nan=0.0), side="right")
        return np.where(known & ~np.isnan(days), shifts[code, np.minimum(band, shifts.shape[1] - 1)], 0.0)

    def _terms(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), x.shape[1]))
        stage = x[:, self.stage_column]
        rates = np.asarray(self.stage_rate)
        known = ~np.isnan(stage) & (stage >= 0) & (stage < len(rates))
        code = np.where(known, stage, 0).astype(np.int64)
        out[:, self.stage_column] = np.where(known, logit(np.clip(rates[code], EPS, 1 - EPS)), logit(self.overall)) - logit(self.overall)
        share = 1.0 / max(len(self.segments), 1)
        for col, table in self.segments.items():
            shifts = np.asarray(table)
            level = x[:, col]
            hit = known & ~np.isnan(level) & (level >= 0) & (level < shifts.shape[1])
            out[:, col] = share * np.where(hit, shifts[code, np.where(hit, level, 0).astype(np.int64)], 0.0)
        if self.dwell:
            out[:, self.dwell["column"]] += self._dwell(x, code, known)
        return out

    def probability(self, x: np.ndarray) -> np.ndarray:
        return expit(logit(self.overall) + self._terms(x).sum(axis=1))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self._terms(x)


@dataclass
class NotKnown:
    """No figure: what a target serves when the export can show nothing about it (stall risk on
    an export shorter than the stall horizon, with no deal labelled). NaN, said as "not known"
    on the page and left empty in the CRM files, rather than a number borrowed from elsewhere."""

    why: str
    kind: str = "not known"

    def probability(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), np.nan)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), x.shape[1]))


def estimator_to_dict(model: Estimator) -> dict:
    """The numbers of a linear model or rates (a booster is saved as its own text file)."""
    if isinstance(model, BoosterModel):
        return {"kind": model.kind}
    doc = {k: v for k, v in model.__dict__.items()}
    if isinstance(model, RateModel):
        doc["segments"] = {str(k): v for k, v in model.segments.items()}
    return doc


def estimator_from_dict(doc: dict, booster: Any = None) -> Estimator:
    kind = doc["kind"]
    if kind == "lightgbm":
        return BoosterModel(booster)
    if kind == "linear":
        return LinearModel(**doc)
    if kind == "rates":
        return RateModel(**{**doc, "segments": {int(k): v for k, v in doc["segments"].items()}})
    if kind == "not known":
        return NotKnown(**doc)
    raise BundleInvalid(f"unknown model kind {kind!r}: a bundle from a newer oppscore?")
