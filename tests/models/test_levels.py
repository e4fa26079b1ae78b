"""What keeps the served level where outcomes put it when a young org's pipeline moves: the
level set on the newest rows as far as their follow-up shows (censoring allowed for), and rates
that know how long a deal has sat in its stage."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

from features.frame import Points, feature_arrays, model_matrix, open_points
from scoring.models import estimator_from_dict, estimator_to_dict
from training.fitting import Rows, fit_rates, level_shift


def test_the_level_is_found_on_rows_followed_only_part_of_the_horizon(seed) -> None:
    """Rows whose follow-up shows only part of their chance (reach) are counted for that part: the
    shift found on them recovers the true level, where counting them as followed whole would
    take their unseen wins for losses and set the level far too low."""
    rng = np.random.default_rng(seed)
    n = 20_000
    served = rng.beta(1, 12, n)  # what the model says
    truth = expit(logit(served) + rng.uniform(-1.0, 1.0))  # where the outcomes are now
    reach = np.where(rng.random(n) < 0.5, 1.0, rng.uniform(0.05, 1.0, n))  # half followed whole, half in part
    y = (rng.random(n) < truth * reach).astype(float)  # a win seen within the follow-up so far
    w = np.ones(n)

    shift, said = level_shift(served, y, w, reach, prior=0.0)
    assert abs(np.mean(expit(logit(served) + shift)) - truth.mean()) < 0.15 * truth.mean()
    assert said["followed_share"] < 1
    naive, _ = level_shift(served, y, w, prior=0.0)
    assert np.mean(expit(logit(served) + naive)) < 0.85 * truth.mean()


def test_the_level_is_held_near_no_shift_when_outcomes_are_few() -> None:
    served = np.full(200, 0.1)
    y = np.zeros(200)
    y[:3] = 1  # 3 wins where 20 were promised
    shift, said = level_shift(served, y, np.ones(200))
    assert said["full_shift"] < -1.5
    assert 0.2 * said["full_shift"] < shift < 0  # held toward 0 by 20 deals of the rarer outcome against 3


def test_pooled_rates_learn_how_long_a_deal_has_sat_in_its_stage(trained, medium, seed) -> None:
    """Deals long in their stage win less within the horizon, in every CRM: the rates carry it by
    band of days in stage (shrunk toward the stage's rate), and keep it through the bundle."""
    bundle = trained.bundle
    points = open_points(medium.tables, bundle.spec.stages, medium.tables.end)
    x = model_matrix(feature_arrays(medium.tables, Points.of(medium.tables, points), bundle.spec, bundle.stats), bundle.spec)
    x = np.concatenate([x] * 20)
    days = x[:, bundle.spec.columns.index("days_in_stage")]
    long = days > np.nanmedian(days)
    rng = np.random.default_rng(seed)
    y = (rng.random(len(x)) < np.where(long, 0.05, 0.4)).astype(float)
    rows = Rows(x, y, np.ones(len(x)), np.arange(len(x)).astype(str).astype(object))

    rates = fit_rates(rows, bundle.spec)
    p = rates.probability(x)
    assert p[long].mean() < 0.5 * p[~long].mean()
    plain = fit_rates(rows, bundle.spec, dwell=False).probability(x)
    assert abs(plain[long].mean() - plain[~long].mean()) < abs(p[long].mean() - p[~long].mean())
    np.testing.assert_allclose(estimator_from_dict(estimator_to_dict(rates)).probability(x), p, rtol=0, atol=1e-12)
