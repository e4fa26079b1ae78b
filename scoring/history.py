"""Score history: what each scoring run said about each deal, so the next run can say what
changed and why. It lives in the service's database (`scoring.database`: SQLite under
OPPSCORE_HOME by default, any SQLAlchemy URL a team names), whose schema is brought up to date
once per process.

Scores the CRM sends to the API are recorded only when `[serving] record_scores` is on:
storing what a CRM sends is the operator's choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from features.settings import Settings
from scoring.database import METADATA, Database, DatabaseUnavailable, unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def or_said(what: str, action: Callable[[], T], default: T) -> T:
    """The one policy for the score history beside the work it records: a database that does not
    answer never stops a score, a forecast or a report. What was not read or kept is said (a
    warning naming it and why) and the work goes on with `default`."""
    try:
        return action()
    except DatabaseUnavailable as exc:
        log.warning("%s: %s", what, exc)
        return default

SCORES = sa.Table(
    "scores",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("opportunity_id", sa.String(200), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("model_version", sa.String(40), nullable=False),
    sa.Column("win_probability", sa.Float, nullable=False),
    sa.Column("stall_risk", sa.Float, nullable=True),  # none for a replayed baseline
    sa.Column("score", sa.Integer, nullable=True),
    sa.Column("grade", sa.String(2), nullable=True),
    sa.Column("factors", sa.JSON, nullable=False),
    sa.Column("role", sa.String(40), nullable=False, server_default="champion"),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("stage", sa.String(200), nullable=True),
    sa.UniqueConstraint("model_name", "run_id", "opportunity_id", name="one_score_per_run"),
    sa.Index("scores_by_deal", "model_name", "opportunity_id", "as_of"),
    sa.Index("scores_by_run", "run_id"),
)
RUNS = sa.Table(
    "runs",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("model_version", sa.String(40), nullable=False),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("horizon_days", sa.Integer, nullable=True),
    sa.Column("scored", sa.Integer, nullable=False),
    sa.Column("promised", sa.JSON, nullable=True),
    sa.Column("drift", sa.JSON, nullable=True),
    sa.Index("runs_by_time", "model_name", "as_of"),
)
FORECASTS = sa.Table(
    "forecasts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("model_version", sa.String(40), nullable=True),
    sa.Column("method", sa.String(100), nullable=False),
    sa.Column("expected", sa.Float, nullable=False),
    sa.Column("p10", sa.Float, nullable=False),
    sa.Column("p50", sa.Float, nullable=False),
    sa.Column("p90", sa.Float, nullable=False),
    sa.Column("open_deals", sa.Integer, nullable=False),
    sa.Index("forecasts_by_period", "model_name", "period_end"),
)
CHAMPION, SHADOW, REPLAY, BASELINE = "champion", "shadow", "replay", "baseline"
PREVIOUS_COLUMNS = ["score", "win_probability", "factors", "as_of"]


def _utc(t: pd.Timestamp):
    """Times go in as UTC datetimes: PostgreSQL keeps the zone, SQLite the UTC wall time; both
    read back as UTC (`pd.to_datetime(..., utc=True)`)."""
    if isinstance(t, pd.Timestamp) and t.tzinfo is not None and t.utcoffset() == ZERO:
        return t.to_pydatetime()  # already UTC: no conversion (thousands of events a batch)
    return pd.Timestamp(t).tz_convert("UTC").to_pydatetime()


ZERO = pd.Timedelta(0)


@dataclass(frozen=True)
class RunFacts:
    """What a run records beside its scores: whose they are (the champion's, or a shadow
    version's), the label horizon of its win probability, what its version's backtest promised
    and the drift it measured (`scoring.drift.of_run`)."""

    role: str = CHAMPION
    horizon_days: int | None = None
    promised: dict | None = None
    drift: dict | None = None

    @classmethod
    def of(cls, bundle, role: str = CHAMPION, drift: dict | None = None) -> RunFacts:
        """A bundle's promise: its served models' pooled backtest figures (`metadata["held_out"]`)."""
        meta = bundle.metadata
        held = meta.get("held_out") or {}
        promised = {target: {k: v for k, v in (figures.get("model") or {}).items() if k in PROMISED} for target, figures in held.items()}
        label = bundle.win_label
        return cls(role, label.horizon_days if label is not None else None, plain(promised) or None, plain(drift) or None)


PROMISED = ("auc", "log_loss", "brier", "ece", "interval_90", "rows", "positive_rate")


def plain(value):
    """JSON every database and client takes: NaN and infinities (PostgreSQL's JSON refuses
    them) as null, numpy scalars as Python's, times as ISO text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return str(value)
    return value


def _number(value, kind=float):
    """A score's figure, or None where it has none (a replayed baseline has no stall risk)."""
    return None if value is None or value != value else kind(value)


def _times(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for col in columns:
        frame[col] = pd.to_datetime(frame[col], utc=True) if len(frame) else pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def database_of(settings: Settings, **timeouts) -> Database:
    """The process's handle on the settings' database (made under home when it is the default
    SQLite file), its schema up to date."""
    url = sa.engine.make_url(settings.history_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # a file's folder, as the home's
    return Database.at(settings.history_url, **timeouts)


class ScoreHistory:
    def __init__(self, database: Database | str, model_name: str) -> None:
        self.model_name = model_name
        self.database = Database.at(database) if isinstance(database, str) else database

    @classmethod
    def of(cls, settings: Settings) -> ScoreHistory:
        return cls(database_of(settings), settings.model_name)

    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    def record(self, scored: pd.DataFrame, scored_at: pd.Timestamp, model_version: str, source: str, run: RunFacts | None = None) -> int:
        """One row per scored opportunity, and one for the run (what its version promised, the
        drift it measured); `scored` as `score_open(..., previous=...)` returns it. Run and
        scores are one transaction: a run is recorded whole or not at all."""
        return self.record_pieces([scored], scored_at, model_version, source, run)

    def record_pieces(self, pieces, scored_at: pd.Timestamp, model_version: str, source: str, run: RunFacts | None = None) -> int:
        """One run whose scores come in pieces (a partitioned score's files, read one at a time so
        that they are never all in memory): one transaction, one run row."""
        run = run or RunFacts()
        total = 0
        try:
            with self.database.write() as connection:
                run_id, latest = None, None
                for scored in pieces:
                    if scored.empty:
                        continue
                    if run_id is None:
                        run_id = connection.execute(RUNS.insert(), {
                            "model_name": self.model_name, "scored_at": _utc(scored_at), "as_of": _utc(scored["as_of"].max()), "source": source,
                            "model_version": str(model_version), "role": run.role, "horizon_days": run.horizon_days, "scored": 0,
                            "promised": run.promised, "drift": run.drift,
                        }).inserted_primary_key[0]
                    self.database.insert_new(connection, SCORES, self._rows(scored, scored_at, model_version, source, run, run_id))  # a score stored already (same deal, run time and role): once
                    total += len(scored)
                    latest = max(latest, scored["as_of"].max()) if latest is not None else scored["as_of"].max()
                if run_id is not None:
                    connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(scored=total, as_of=_utc(latest)))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("recording the scores", exc) from None
        return total

    def _rows(self, scored: pd.DataFrame, scored_at: pd.Timestamp, model_version: str, source: str, run: RunFacts, run_id: int) -> list[dict]:
        stages = scored["stage"] if "stage" in scored.columns else pd.Series([None] * len(scored), index=scored.index)
        return [
            {
                "model_name": self.model_name, "opportunity_id": str(r.opportunity_id), "scored_at": _utc(scored_at),
                "as_of": _utc(r.as_of), "source": source, "model_version": str(model_version),
                "win_probability": float(r.win_probability), "stall_risk": _number(getattr(r, "stall_risk", None)), "score": _number(getattr(r, "score", None), int),
                "grade": None if getattr(r, "grade", None) is None or r.grade != r.grade else str(r.grade),
                "factors": getattr(r, "factors", None) or {}, "role": run.role, "run_id": run_id, "stage": None if stage is None or stage != stage else str(stage),
            }
            for r, stage in zip(scored.itertuples(), stages.tolist(), strict=True)
        ]

    def forget_replayed(self, as_of: pd.Timestamp) -> None:
        """Every replayed run, score and forecast of one date (what an interrupted replay left)."""
        at = _utc(as_of)
        try:
            with self.database.write() as connection:
                runs = [r[0] for r in connection.execute(sa.select(RUNS.c.id).where(RUNS.c.model_name == self.model_name, RUNS.c.source == "replay", RUNS.c.as_of == at))]
                if runs:
                    connection.execute(SCORES.delete().where(SCORES.c.run_id.in_(runs)))
                    connection.execute(RUNS.delete().where(RUNS.c.id.in_(runs)))
                connection.execute(FORECASTS.delete().where(FORECASTS.c.model_name == self.model_name, FORECASTS.c.source == "replay", FORECASTS.c.as_of == at))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("forgetting a replayed date", exc) from None

    def record_forecast(self, methods: pd.DataFrame, made_at: pd.Timestamp, as_of: pd.Timestamp, period: tuple[pd.Timestamp, pd.Timestamp],
                        open_deals: int, model_version: str | None, source: str) -> int:
        """One row per method of a forecast (`analytics.forecast.Forecast.methods`)."""
        rows = [
            {"model_name": self.model_name, "made_at": _utc(made_at), "as_of": _utc(as_of), "period_start": _utc(period[0]), "period_end": _utc(period[1]),
             "source": source, "model_version": model_version, "method": str(r.method), "expected": float(r.expected),
             "p10": float(r.p10), "p50": float(r.p50), "p90": float(r.p90), "open_deals": int(open_deals)}
            for r in methods.itertuples()
        ]
        try:
            with self.database.write() as connection:
                connection.execute(FORECASTS.insert(), rows)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("recording the forecast", exc) from None
        return len(rows)

    def _read(self, query) -> pd.DataFrame:
        try:
            with self.database.read() as connection:
                result = connection.execute(query)
                return pd.DataFrame(result.mappings().all(), columns=list(result.keys()))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("reading the score history", exc) from None

    def runs(self) -> pd.DataFrame:
        """Every recorded run of this project, oldest first."""
        frame = self._read(sa.select(RUNS).where(RUNS.c.model_name == self.model_name).order_by(RUNS.c.as_of, RUNS.c.id))
        return _times(frame, ["scored_at", "as_of"])

    def scores(self) -> pd.DataFrame:
        """Every recorded score of this project (without its factors), by run."""
        cols = [SCORES.c.run_id, SCORES.c.opportunity_id, SCORES.c.as_of, SCORES.c.model_version, SCORES.c.role, SCORES.c.stage, SCORES.c.win_probability, SCORES.c.stall_risk]
        frame = self._read(sa.select(*cols).where(SCORES.c.model_name == self.model_name).order_by(SCORES.c.id))
        return _times(frame, ["as_of"])

    def forecasts(self) -> pd.DataFrame:
        frame = self._read(sa.select(FORECASTS).where(FORECASTS.c.model_name == self.model_name).order_by(FORECASTS.c.made_at, FORECASTS.c.id))
        return _times(frame, ["made_at", "as_of", "period_start", "period_end"])

    def previous(self, ids: list[str] | np.ndarray, before: pd.Timestamp) -> pd.DataFrame:
        """Per opportunity, its latest recorded score with as_of before `before`; indexed by id.
        The ids filter the latest-per-deal step itself (the `scores_by_deal` index), so a
        lookup costs the deals asked for, not the whole history."""
        ids = [str(i) for i in ids]
        frames = []
        try:
            with self.database.read() as connection:
                for start in range(0, max(len(ids), 1), 5_000):  # bounded IN lists
                    chunk = ids[start:start + 5_000]
                    if chunk:
                        frames.append(pd.DataFrame(connection.execute(self._previous_query(chunk, before)).mappings().all()))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise unavailable("reading the previous scores", exc) from None
        found = pd.concat(frames) if frames else pd.DataFrame()
        if found.empty:
            return pd.DataFrame(columns=PREVIOUS_COLUMNS, index=pd.Index([], dtype=object, name="opportunity_id"))
        found = found.sort_values("scored_at").drop_duplicates("opportunity_id", keep="last")  # two runs at one as_of: the later
        found["as_of"] = pd.to_datetime(found["as_of"], utc=True)
        return found.set_index("opportunity_id")[PREVIOUS_COLUMNS]

    def _previous_query(self, ids: list[str], before: pd.Timestamp):
        mine = (SCORES.c.model_name == self.model_name, SCORES.c.role == CHAMPION, SCORES.c.opportunity_id.in_(ids))
        latest = (
            sa.select(SCORES.c.opportunity_id, sa.func.max(SCORES.c.as_of).label("as_of"))
            .where(*mine, SCORES.c.as_of < _utc(before))
            .group_by(SCORES.c.opportunity_id)
            .subquery()
        )
        return (
            sa.select(SCORES.c.opportunity_id, SCORES.c.score, SCORES.c.win_probability, SCORES.c.factors, SCORES.c.as_of, SCORES.c.scored_at)
            .join(latest, (SCORES.c.opportunity_id == latest.c.opportunity_id) & (SCORES.c.as_of == latest.c.as_of))
            .where(*mine)
        )
