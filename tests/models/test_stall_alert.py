"""The stall alert (issue 42): the riskiest deals for as long as their mean stall risk, the share
of them expected to stall, holds the configured precision; a risk not known is never flagged."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from scoring.stall_alert import stall_alert

risks = st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), max_size=60)


@given(risks, st.floats(0.05, 1.0), st.floats(0.01, 1.0))
def test_the_alert_is_the_largest_riskiest_set_whose_mean_risk_holds_the_precision(values: list[float], precision: float, share: float) -> None:
    risk = np.array(values, dtype=float)
    alert = stall_alert(risk, precision, share)
    assert not alert.flagged[np.isnan(risk)].any()
    if not alert.flagged.any():
        known = risk[~np.isnan(risk)]
        assert alert.threshold is None and (not len(known) or known.max() < precision)  # not even the riskiest deal holds it
        return
    flagged, rest = risk[alert.flagged], risk[~alert.flagged & ~np.isnan(risk)]
    n_known = int((~np.isnan(risk)).sum())
    assert len(flagged) <= max(1, int(np.floor(share * n_known)))  # within its share of the pipeline
    assert flagged.min() == alert.threshold and (not len(rest) or rest.max() <= alert.threshold)  # the riskiest
    assert flagged.mean() >= precision - 1e-12  # the share expected to stall holds
    if len(rest) and len(flagged) < max(1, int(np.floor(share * n_known))):  # room left: one more deal and the mean falls below the precision
        assert (flagged.sum() + rest.max()) / (len(flagged) + 1) < precision
    assert alert.expected_precision == flagged.mean()


def test_a_pipeline_of_high_risks_is_not_all_flagged_by_a_fixed_cut() -> None:
    risk = np.array([0.95, 0.9, 0.8, 0.7, 0.65, 0.62, 0.61, 0.61, 0.6, 0.3])
    alert = stall_alert(risk, 0.81)  # no cap on the share
    assert alert.flagged.tolist() == [True] * 4 + [False] * 6  # mean 0.8375; with the 0.65 it would be 0.80
    assert alert.threshold == 0.7 and (risk >= 0.6).sum() == 9  # a fixed cut at 0.6 flagged nine of ten
    assert stall_alert(risk, 0.99).threshold is None
    assert stall_alert(risk, 0.81, max_share=0.2).flagged.tolist() == [True] * 2 + [False] * 8  # two of ten: the list stays short
