"""Score history: what each scoring run said about each deal, so the next run can say what
changed and why. SQLite under OPPSCORE_HOME by default, any SQLAlchemy URL for a team
(`OPPSCORE_DATABASE_URL`, e.g. PostgreSQL); the schema is Alembic's to migrate, brought to
the latest revision when the history is opened.

Scores the CRM sends to the API are recorded only when `[serving] record_scores` is on:
storing what a CRM sends is the operator's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from features.errors import ConfigInvalid, OppscoreError
from features.settings import Settings

METADATA = sa.MetaData()
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
    sa.Column("stall_risk", sa.Float, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("grade", sa.String(2), nullable=False),
    sa.Column("factors", sa.JSON, nullable=False),
    sa.Column("role", sa.String(10), nullable=False, server_default="champion"),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("stage", sa.String(200), nullable=True),
    sa.UniqueConstraint("model_name", "opportunity_id", "scored_at", "role", name="one_score_per_run"),
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
    sa.Column("role", sa.String(10), nullable=False),
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
CHAMPION, SHADOW = "champion", "shadow"
MIGRATIONS = Path(__file__).with_name("migrations")
PREVIOUS_COLUMNS = ["score", "win_probability", "factors", "as_of"]


def _utc(t: pd.Timestamp):
    """Times go in as UTC datetimes: PostgreSQL keeps the zone, SQLite the UTC wall time; both
    read back as UTC (`pd.to_datetime(..., utc=True)`)."""
    return pd.Timestamp(t).tz_convert("UTC").to_pydatetime()


CONNECT_SECONDS = 5  # a database that accepts connections and never answers fails within this


class HistoryUnavailable(OppscoreError):
    """The score history's database could not be reached or read now: scores go on without the
    change since the last run, and say so."""


DRIVERS = {"postgresql": ("psycopg", "pip install 'psycopg[binary]' into oppscore's environment, or install oppscore with its [postgres] extra"),
           "mysql": ("pymysql", "pip install pymysql into oppscore's environment")}


def _engine(url: str) -> sa.Engine:
    """An engine whose connections give up after CONNECT_SECONDS (a hanging server must not hold
    a scoring run or a worker); a missing driver is named with what to install."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigInvalid(f"OPPSCORE_DATABASE_URL: not a usable SQLAlchemy URL ({exc})") from None
    backend = parsed.get_backend_name()
    connect_args = {"connect_timeout": CONNECT_SECONDS} if backend in ("postgresql", "mysql") else ({"timeout": CONNECT_SECONDS} if backend == "sqlite" else {})
    try:
        return sa.create_engine(parsed, connect_args=connect_args, pool_timeout=CONNECT_SECONDS, pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        if backend not in DRIVERS:
            raise ConfigInvalid(f"OPPSCORE_DATABASE_URL: not a usable SQLAlchemy URL ({exc})") from None
        module, remedy = DRIVERS[backend]
        raise ConfigInvalid(f"OPPSCORE_DATABASE_URL names a {backend} database, whose driver ({module}) is not installed: {remedy} ({exc})") from None


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
        horizon = (meta.get("win_label") or {}).get("horizon_days")
        return cls(role, int(horizon) if horizon is not None else None, plain(promised) or None, plain(drift) or None)


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


def _times(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for col in columns:
        frame[col] = pd.to_datetime(frame[col], utc=True) if len(frame) else pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the latest revision (score history and events share it)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class ScoreHistory:
    def __init__(self, url: str, model_name: str) -> None:
        self.model_name = model_name
        self.engine = _engine(url)
        try:
            self.migrate()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database did not answer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None

    @classmethod
    def of(cls, settings: Settings) -> ScoreHistory:
        if settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings.history_url, settings.model_name)

    def migrate(self) -> None:
        migrate(self.engine)

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
            with self.engine.begin() as connection:
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
                    connection.execute(SCORES.insert(), self._rows(scored, scored_at, model_version, source, run, run_id))
                    total += len(scored)
                    latest = max(latest, scored["as_of"].max()) if latest is not None else scored["as_of"].max()
                if run_id is not None:
                    connection.execute(RUNS.update().where(RUNS.c.id == run_id).values(scored=total, as_of=_utc(latest)))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database did not take the scores ({type(exc).__name__})") from None
        return total

    def _rows(self, scored: pd.DataFrame, scored_at: pd.Timestamp, model_version: str, source: str, run: RunFacts, run_id: int) -> list[dict]:
        stages = scored["stage"] if "stage" in scored.columns else pd.Series([None] * len(scored), index=scored.index)
        return [
            {
                "model_name": self.model_name, "opportunity_id": str(r.opportunity_id), "scored_at": _utc(scored_at),
                "as_of": _utc(r.as_of), "source": source, "model_version": str(model_version),
                "win_probability": float(r.win_probability), "stall_risk": float(r.stall_risk), "score": int(r.score), "grade": str(r.grade),
                "factors": getattr(r, "factors", None) or {}, "role": run.role, "run_id": run_id, "stage": None if stage is None or stage != stage else str(stage),
            }
            for r, stage in zip(scored.itertuples(), stages.tolist(), strict=True)
        ]

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
            with self.engine.begin() as connection:
                connection.execute(FORECASTS.insert(), rows)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database did not take the forecast ({type(exc).__name__})") from None
        return len(rows)

    def _read(self, query) -> pd.DataFrame:
        try:
            with self.engine.connect() as connection:
                result = connection.execute(query)
                return pd.DataFrame(result.mappings().all(), columns=list(result.keys()))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database could not be read ({type(exc).__name__})") from None

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
        """Per opportunity, its latest recorded score with as_of before `before`; indexed by id."""
        ids = [str(i) for i in ids]
        latest = (
            sa.select(SCORES.c.opportunity_id, sa.func.max(SCORES.c.as_of).label("as_of"))
            .where(SCORES.c.model_name == self.model_name, SCORES.c.role == CHAMPION, SCORES.c.as_of < _utc(before))
            .group_by(SCORES.c.opportunity_id)
            .subquery()
        )
        query = (
            sa.select(SCORES.c.opportunity_id, SCORES.c.score, SCORES.c.win_probability, SCORES.c.factors, SCORES.c.as_of, SCORES.c.scored_at)
            .join(latest, (SCORES.c.opportunity_id == latest.c.opportunity_id) & (SCORES.c.as_of == latest.c.as_of))
            .where(SCORES.c.model_name == self.model_name, SCORES.c.role == CHAMPION)
        )
        frames = []
        try:
            with self.engine.connect() as connection:
                for start in range(0, max(len(ids), 1), 5_000):  # bounded IN lists
                    chunk = ids[start:start + 5_000]
                    if chunk:
                        frames.append(pd.DataFrame(connection.execute(query.where(SCORES.c.opportunity_id.in_(chunk))).mappings().all()))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database could not be read ({type(exc).__name__})") from None
        found = pd.concat(frames) if frames else pd.DataFrame()
        if found.empty:
            return pd.DataFrame(columns=PREVIOUS_COLUMNS, index=pd.Index([], dtype=object, name="opportunity_id"))
        found = found.sort_values("scored_at").drop_duplicates("opportunity_id", keep="last")  # two runs at one as_of: the later
        found["as_of"] = pd.to_datetime(found["as_of"], utc=True)
        return found.set_index("opportunity_id")[PREVIOUS_COLUMNS]
