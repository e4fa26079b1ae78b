"""The sufficiency report's counts of closed deals, by hand and read a few deals at a time."""

from __future__ import annotations

import pandas as pd
import pytest

from features import stays as stays_module
from features.frame import make_spec
from tests.analytics.test_stage_weights_and_funnel import STAGES, T, _tiny
from training.sufficiency import report


def _report() -> dict:
    tables = _tiny()
    return report(tables, STAGES, make_spec(tables, STAGES, ["source"]), {}, {}, {}, (0, None), T("2025-04-01"))


def test_closed_deals_by_stage_by_hand() -> None:
    # x: A→B→W   y: A→L   z: A→B→L   w: A→B (open)   v: A→L→A→W (won back)
    got = _report()
    assert got["closed"] == {"won": 2, "lost": 2, "open": 1}
    assert got["by_stage"] == [{"stage": "A", "closed deals that were in it": 4, "won": 2}, {"stage": "B", "closed deals that were in it": 2, "won": 1}]
    assert got["created_past_first_stage"] == 0.0
    assert got["by_segment"]["source"] == {"ref": {"lost": 1, "won": 0}, "web": {"lost": 1, "won": 2}}


@pytest.mark.parametrize("rows", [1, 2, 3, 5])
def test_the_report_read_piece_by_piece_equals_the_whole(rows: int, monkeypatch) -> None:
    whole = _report()
    monkeypatch.setattr(stays_module, "CHUNK_ROWS", rows)
    assert _report() == whole


def test_a_deal_created_past_the_first_stage_is_counted() -> None:
    tables = _tiny()
    late = pd.DataFrame({"opportunity_id": ["u", "u"], "stage": ["B", "W"], "entered_at": [T("2025-03-02"), T("2025-03-09")]})
    tables = type(tables)(pd.concat([tables.opportunities, tables.opportunities.iloc[:1].assign(opportunity_id="u")]), pd.concat([tables.stage_history, late]))
    got = report(tables, STAGES, make_spec(tables, STAGES, ["source"]), {}, {}, {}, (0, None), T("2025-04-01"))
    assert got["created_past_first_stage"] == round(1 / 6, 3)
    assert got["by_stage"][1] == {"stage": "B", "closed deals that were in it": 3, "won": 2}
