"""What the reasons and the probabilities rest on, checked against the libraries that define it:
LightGBM's contributions add up to its raw score, and the calibrators stored as numbers in a
bundle give what scikit-learn's fitted objects give."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.frame import Points, feature_arrays, model_matrix, open_points
from scoring.explain import top_factors
from training.models import _isotonic, _sigmoid


def _matrix(trained, medium):
    bundle = trained.bundle
    points = open_points(medium.tables, bundle.spec.stages, medium.tables.end)
    features = feature_arrays(medium.tables, Points.of(medium.tables, points), bundle.spec, bundle.stats)
    return features, model_matrix(features, bundle.spec)


def test_contributions_sum_to_the_raw_score(trained, medium) -> None:
    features, x = _matrix(trained, medium)
    for target in ("win", "stall"):
        booster = trained.bundle.models[target].booster
        full = booster.predict(x, pred_contrib=True)
        np.testing.assert_allclose(full.sum(axis=1), booster.predict(x, raw_score=True), rtol=0, atol=1e-9)
        # the bundle's contributions drop only the bias column
        np.testing.assert_allclose(trained.bundle.models[target].contributions(x), full[:, :-1], rtol=0, atol=0)


def test_factor_contributions_are_sums_of_their_features(trained, medium) -> None:
    """A factor shown to a manager is the sum of its member features' contributions."""
    from scoring.explain import factor_of

    features, x = _matrix(trained, medium)
    spec = trained.bundle.spec
    contrib = trained.bundle.models["win"].contributions(x)[:20]
    shown = top_factors({k: v[:20] for k, v in features.items()}, contrib, spec, trained.bundle.reference)
    for row, factors in zip(contrib, shown, strict=True):
        assert len(factors) == 3
        for f in factors:
            members = [j for j, col in enumerate(spec.columns) if factor_of(col, spec) == f["factor"]]
            assert abs(row[members].sum() - f["contribution"]) < 1e-4
        sizes = [abs(f["contribution"]) for f in factors]
        assert sizes == sorted(sizes, reverse=True)


def test_stored_calibrators_equal_scikit_learns(seed) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.beta(2, 3, 4000)
    y = (rng.random(4000) < expit(1.7 * logit(raw) - 0.4)).astype(float)
    w = rng.uniform(0.5, 2.0, 4000)
    fresh = np.concatenate([rng.beta(2, 3, 500), [0.0, 1e-9, 1.0]])  # values beyond the fitted range too

    sigmoid = _sigmoid(raw, y, w)
    lr = LogisticRegression(C=1e4).fit(logit(np.clip(raw, 1e-6, 1 - 1e-6)).reshape(-1, 1), y, sample_weight=w)
    np.testing.assert_allclose(sigmoid(fresh), lr.predict_proba(logit(np.clip(fresh, 1e-6, 1 - 1e-6)).reshape(-1, 1))[:, 1], rtol=0, atol=1e-12)

    iso = _isotonic(raw, y, w)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y, sample_weight=w)
    np.testing.assert_allclose(iso(fresh), reference.predict(fresh), rtol=0, atol=1e-12)
