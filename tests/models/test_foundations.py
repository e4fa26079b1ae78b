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
from training.fitting import _isotonic, _sigmoid


def _matrix(trained, medium):
    bundle = trained.bundle
    points = open_points(medium.tables, bundle.spec.stages, medium.tables.end)
    features = feature_arrays(medium.tables, Points.of(medium.tables, points), bundle.spec, bundle.stats)
    return features, model_matrix(features, bundle.spec)


def test_contributions_sum_to_the_raw_score_whatever_model_serves(trained, medium) -> None:
    """Reasons rest on this: for a booster, TreeSHAP values and the bias add up to LightGBM's raw
    score; for the linear model and the pooled rates, the column contributions and the centre add
    up to the log-odds they predict."""
    from scipy.special import logit

    from training.fitting import Rows, fit_booster, fit_linear, fit_rates

    features, x = _matrix(trained, medium)
    spec = trained.bundle.spec
    rng = np.random.default_rng(0)
    rows = Rows(x, (rng.random(len(x)) < 0.4).astype(float), np.ones(len(x)), np.arange(len(x)).astype(str).astype(object))
    booster = fit_booster(rows, spec, rounds=30).model
    full = booster.booster.predict(x, pred_contrib=True)
    np.testing.assert_allclose(full.sum(axis=1), booster.booster.predict(x, raw_score=True), rtol=0, atol=1e-9)
    np.testing.assert_allclose(booster.contributions(x), full[:, :-1], rtol=0, atol=0)  # only the bias column dropped
    linear = fit_linear(rows, spec)
    np.testing.assert_allclose(linear.contributions(x).sum(axis=1) + linear._centre(), logit(linear.probability(x)), rtol=0, atol=1e-9)
    rates = fit_rates(rows, spec)
    np.testing.assert_allclose(rates.contributions(x).sum(axis=1) + logit(rates.overall), logit(rates.probability(x)), rtol=0, atol=1e-9)
    for target in ("win", "stall"):  # and what the bundle serves is one of them
        served = trained.bundle.models[target]
        assert served.contributions(x).shape == x.shape


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

    sigmoid = _sigmoid(raw, y, w)  # 1,600 of the rarer outcome: the slope held as by 20 more moves it by 1 %, within 0.02 of Platt's fit
    lr = LogisticRegression(C=1e4).fit(logit(np.clip(raw, 1e-6, 1 - 1e-6)).reshape(-1, 1), y, sample_weight=w)
    np.testing.assert_allclose(sigmoid(fresh), lr.predict_proba(logit(np.clip(fresh, 1e-6, 1 - 1e-6)).reshape(-1, 1))[:, 1], rtol=0, atol=0.02)

    iso = _isotonic(raw, y, w)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y, sample_weight=w)
    np.testing.assert_allclose(iso(fresh), reference.predict(fresh), rtol=0, atol=1e-12)


def test_resampled_metrics_equal_scikit_learns(seed) -> None:
    """The bootstrap's numpy AUC and log loss against scikit-learn's, ties and weights included."""
    from sklearn.metrics import log_loss, roc_auc_score

    from analytics.metrics import _Resampled

    rng = np.random.default_rng(seed)
    p = np.round(rng.random(300), 1)  # many ties
    y = (rng.random(300) < p).astype(float)
    w = rng.integers(0, 4, 300).astype(float)
    fast = _Resampled(y, p)
    assert abs(fast.auc(w) - roc_auc_score(y, p, sample_weight=w)) < 1e-12
    assert abs(fast.log_loss(w) - log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), sample_weight=w)) < 1e-12


def test_a_fold_booster_is_the_early_stopping_one_and_the_refit_has_its_rounds(trained, medium) -> None:
    """A backtest fold keeps the booster that chose the rounds (three quarters of the deals, read
    at its best round) instead of fitting all rows again: the same rounds reach the served refit."""
    from training.fitting import Rows, fit_booster

    features, x = _matrix(trained, medium)
    spec = trained.bundle.spec
    y = (features["activities_30d"] + np.random.default_rng(1).normal(0, 2, len(x)) > np.median(features["activities_30d"])).astype(float)
    rows = Rows(x, y, np.ones(len(x)), (np.arange(len(x)) // 3).astype(str).astype(object))
    fold, refit = fit_booster(rows, spec, refit=False), fit_booster(rows, spec)
    assert fold.rounds == refit.rounds == max(fold.model.booster.best_iteration, 10)
    assert fold.model.booster.num_trees() == refit.model.booster.num_trees() == fold.rounds  # kept at its best round
    assert np.abs(fold.model.probability(x) - refit.model.probability(x)).max() > 1e-6  # three quarters of the deals, not refitted


def test_a_sigmoid_on_few_outcomes_is_held_near_the_identity(seed) -> None:
    """Issue 40: on the few positives of a young org's folds an unpenalised sigmoid took a slope
    of 3.6 and turned stage rates of 0.08-0.30 into 0.0001-0.03. Held toward slope 1 and
    intercept 0 as PRIOR_DEALS deals would hold it, the map keeps the level the rows show."""
    from training.fitting import _sigmoid

    rng = np.random.default_rng(seed)
    raw = rng.choice([0.08, 0.12, 0.2, 0.3], 300)
    y = np.zeros(300)
    y[rng.choice(np.flatnonzero(raw == 0.3), 6, replace=False)] = 1.0  # six wins, all at the highest rate
    w = np.ones(300)
    free = LogisticRegression(C=1e4).fit(logit(raw).reshape(-1, 1), y)
    held = _sigmoid(raw, y, w)
    assert free.coef_[0, 0] > 2.5  # what an unpenalised fit does with six wins
    assert abs(held.params["a"] - 1) < abs(free.coef_[0, 0] - 1) / 2
    assert 0.5 < held(raw).mean() / y.mean() < 2.5  # near the level the rows show, not a twentieth of it
