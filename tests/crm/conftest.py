"""A small score table as `oppscore score` writes it, with the ids and texts that test a CRM's
format rules: 15- and 18-character ids, reasons with commas, quotes, line breaks and emoji."""

from __future__ import annotations

import json

import pandas as pd
import pytest

IDS = ["006Hp000015Yh7k", "006Hp000015Yh7mIAC", "006Hp000015Yh7w", "006Hp000015Yh7xIAC"]
LONG = "no activity for 21 days; won deals at this stage typically had one within 5 " * 6


def scores_table(ids: list[str] = IDS) -> pd.DataFrame:
    factors = [
        [{"feature": "days_since_activity", "sentence": 'no activity for 21 days, "quiet" since the demo'}, {"feature": "stage", "sentence": "in stage Negotiation\nReview"}],
        [{"feature": "x", "sentence": LONG}],
        [],
        [{"feature": "y", "sentence": "champion engaged 🎯 twice"}, {"feature": "z", "sentence": "won deals at this stage typically had one within 5 days"}],
    ]
    n = len(ids)
    return pd.DataFrame({
        "opportunity_id": ids, "as_of": ["2026-12-01 09:30:00+00:00"] * n, "stage": ["Proposal"] * n,
        "win_probability": [0.123456, 0.5, 0.999, 0.0004][:n], "stall_risk": [0.2, 0.75, 0.01, 1.0][:n], "score": [12, 50, 99, 1][:n],
        "grade": ["C", "B", "A", "D"][:n], "expected_value": [100.0] * n, "top_factors": [json.dumps(f, ensure_ascii=False) for f in factors][:n],
    })


@pytest.fixture
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    scores_table().to_csv(path, index=False)
    return path
