"""What the model must beat, on the same held-out rows.

- win: the stage's win rate in the training slice (what a CRM's stage weight would be if it
  were measured), the configured stage weights when the config has them, and a logistic
  regression on the same features (scikit-learn pipeline);
- stall: the days-in-stage rule and the days-since-activity rule (each turned into a
  probability by isotonic regression on the calibration slice), and the logistic regression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.frame import FeatureSpec


def stage_rate(train: pd.DataFrame, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    frame = pd.DataFrame({"stage": train["stage"].astype(object).to_numpy(), "y": y * w, "w": w})
    g = frame.groupby("stage").sum()
    return (g["y"] / g["w"]).to_dict()


def logistic(spec: FeatureSpec):
    numeric = [c for c in spec.columns if c not in spec.categorical]
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="(missing)"), OneHotEncoder(handle_unknown="ignore", min_frequency=20)), spec.categorical),
        ]
    )
    return make_pipeline(pre, LogisticRegression(max_iter=500, C=1.0))


def _as_text(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    out = frame.copy()
    for col in spec.categorical:
        out[col] = out[col].astype(object).where(out[col].notna(), "(missing)").astype(str)
    return out


def fit_logistic(spec: FeatureSpec, x: pd.DataFrame, y: np.ndarray, w: np.ndarray):
    model = logistic(spec)
    model.fit(_as_text(x, spec), y, logisticregression__sample_weight=w)
    return lambda frame: model.predict_proba(_as_text(frame, spec))[:, 1]


def rule(score_train: np.ndarray, y: np.ndarray, w: np.ndarray, increasing: bool = True):
    """A single-number rule made into a probability on the slice it is fitted to."""
    fill = np.nanmax(score_train) if np.isfinite(score_train).any() else 0.0
    iso = IsotonicRegression(out_of_bounds="clip", increasing=increasing).fit(np.nan_to_num(score_train, nan=fill), y, sample_weight=w)
    return lambda s: iso.predict(np.nan_to_num(s, nan=fill))
