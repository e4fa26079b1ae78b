"""The served export (`serve --data DIR`) and what the service computes from it, kept between
requests: its checked tables (read again when its files change), and per champion the scored
deal table the page, `GET /v1/pipeline` and scores by id read.

Routes reach it through `ExportDep`; none computes it, and none imports another route for it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import HTTPException

from features.contract import Validated, load_export
from features.frame import stage_state
from features.settings import Settings
from scoring.score import score_open, statuses
from scoring.stall_alert import StallAlert, stall_alert
from serving.state import ServiceDatabase

DEAL_COLUMNS = [
    "opportunity_id", "account_id", "owner_id", "team", "stage", "days_in_stage", "expected_close_date", "amount", "win_probability",
    "score", "grade", "expected_value", "stall_risk", "stalled", "previous_score", "score_change", "why_changed", "top_factors",
    "stall_factors",
]
SCORE_FIELDS = ["stage", "win_probability", "stall_risk", "score", "grade", "expected_value", "top_factors", "previous_score", "score_change", "why_changed"]
NO_DATA = "this service was started without --data: no pipeline to show (the CRM scores its own deals with POST /v1/score)"


@dataclass
class View:
    """The served export scored by one champion."""

    key: tuple
    as_of: pd.Timestamp
    deals: pd.DataFrame
    validated: Validated
    alert: StallAlert  # which deals the stall alert flags ("stalled" in deals), and from what risk
    panels: dict = field(default_factory=dict)
    _positions: dict | None = None  # opportunity id → its row in deals
    _statuses: dict | None = None  # opportunity id → its status at as_of (open, won, lost, …)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_for(self, opportunity_id: str, loaded) -> dict | None:
        """The deal's answer from these scores: its scored row when it is open, its status when
        it is not; None when the export does not hold it."""
        with self._lock:
            if self._positions is None:
                ids = self.validated.tables.opportunities["opportunity_id"].to_numpy(dtype=object)
                status, _, _ = statuses(loaded.bundle, self.validated.tables, ids, self.as_of)
                self._statuses = dict(zip(ids.tolist(), status.tolist(), strict=True))
                self._positions = {oid: i for i, oid in enumerate(self.deals["opportunity_id"].tolist())}
        i = self._positions.get(opportunity_id)
        if i is not None:
            row = records(self.deals.iloc[[i]])[0]
            return {"opportunity_id": opportunity_id, "status": "open", **{k: row.get(k) for k in SCORE_FIELDS}}
        status = self._statuses.get(opportunity_id)
        return None if status is None or status == "open" else {"opportunity_id": opportunity_id, "status": status}


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN and NaT as null."""
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in out:
        for k, v in row.items():
            if isinstance(v, float) and not math.isfinite(v):
                row[k] = None
            elif isinstance(v, (np.bool_,)):
                row[k] = bool(v)
            elif isinstance(v, pd.Timestamp):
                row[k] = v.isoformat()
    return out


class ServedExport:
    """The export a service was started with, or none."""

    def __init__(self, folder: Path | None, settings: Settings, database: ServiceDatabase) -> None:
        self.folder = folder
        self.settings = settings
        self.database = database
        self._lock = threading.Lock()
        self._validated: tuple[float, Validated] | None = None
        self._view: View | None = None

    def _stamp(self) -> float:
        return max((f.stat().st_mtime for f in self.folder.iterdir() if f.is_file()), default=0.0)

    def tables(self, now: pd.Timestamp) -> Validated | None:
        """The export's checked tables (None without --data), read again when a file changes."""
        if self.folder is None:
            return None
        stamp = self._stamp()
        with self._lock:
            if self._validated is None or self._validated[0] != stamp:
                self._validated = (stamp, load_export(self.folder, self.settings, now))
            return self._validated[1]

    def view(self, loaded, now: pd.Timestamp) -> View:
        """The export scored by the champion (404 without --data), once per export and champion."""
        if self.folder is None:
            raise HTTPException(404, detail=NO_DATA)
        validated = self.tables(now)
        key = (loaded.version, loaded.source, self._validated[0])
        with self._lock:
            if self._view is None or self._view.key != key:
                deals = self._deals(loaded, validated)
                alert = stall_alert(deals["stall_risk"].to_numpy(dtype=float), self.settings.stall.alert_precision, self.settings.stall.alert_max_share)
                deals["stalled"] = alert.flagged
                self._view = View(key, validated.tables.end, deals, validated, alert)
            return self._view

    def _deals(self, loaded, validated: Validated) -> pd.DataFrame:
        tables = validated.tables
        as_of = tables.end
        ids = tables.opportunities["opportunity_id"].to_numpy()
        history = self.database.history(wait=True)
        previous = self.database.optional("reading the previous scores", history.previous, ids, as_of) if history is not None else None
        scored = score_open(loaded.bundle, tables, as_of, previous=previous, stall_factors=True)
        if scored.empty:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in DEAL_COLUMNS})
        if previous is None:
            scored["previous_score"], scored["score_change"], scored["why_changed"] = np.nan, np.nan, None
        opps = tables.opportunities.set_index("opportunity_id")
        for col in ("account_id", "owner_id", "team", "amount", "expected_close_date"):
            scored[col] = scored["opportunity_id"].map(opps[col]).to_numpy()
        state = stage_state(tables, loaded.bundle.spec.stages, scored[["opportunity_id", "as_of"]])
        scored["days_in_stage"] = ((scored["as_of"] - state["entered_at"]).dt.total_seconds() / 86400).round(1).to_numpy()
        scored["stalled"] = False  # set by the stall alert over the whole pipeline (`view`)
        scored["expected_close_date"] = pd.to_datetime(scored["expected_close_date"], utc=True).dt.strftime("%Y-%m-%d")
        return scored[DEAL_COLUMNS]

