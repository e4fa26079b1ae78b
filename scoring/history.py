"""Score history: what each scoring run said about each deal, so the next run can say what
changed and why. SQLite under OPPSCORE_HOME by default, any SQLAlchemy URL for a team
(`OPPSCORE_DATABASE_URL`, e.g. PostgreSQL); the schema is Alembic's to migrate, brought to
the latest revision when the history is opened.

Scores the CRM sends to the API are recorded only when `[serving] record_scores` is on:
storing what a CRM sends is the operator's choice.
"""

from __future__ import annotations

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
    sa.UniqueConstraint("model_name", "opportunity_id", "scored_at", name="one_score_per_run"),
    sa.Index("scores_by_deal", "model_name", "opportunity_id", "as_of"),
)
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
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def record(self, scored: pd.DataFrame, scored_at: pd.Timestamp, model_version: str, source: str) -> int:
        """One row per scored opportunity; `scored` as `score_open(..., previous=...)` returns it."""
        if scored.empty:
            return 0
        rows = [
            {
                "model_name": self.model_name, "opportunity_id": str(r.opportunity_id), "scored_at": _utc(scored_at),
                "as_of": _utc(r.as_of), "source": source, "model_version": str(model_version),
                "win_probability": float(r.win_probability), "stall_risk": float(r.stall_risk), "score": int(r.score), "grade": str(r.grade),
                "factors": r.factors,
            }
            for r in scored.itertuples()
        ]
        try:
            with self.engine.begin() as connection:
                connection.execute(SCORES.insert(), rows)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise HistoryUnavailable(f"the score history's database did not take the scores ({type(exc).__name__})") from None
        return len(rows)

    def previous(self, ids: list[str] | np.ndarray, before: pd.Timestamp) -> pd.DataFrame:
        """Per opportunity, its latest recorded score with as_of before `before`; indexed by id."""
        ids = [str(i) for i in ids]
        latest = (
            sa.select(SCORES.c.opportunity_id, sa.func.max(SCORES.c.as_of).label("as_of"))
            .where(SCORES.c.model_name == self.model_name, SCORES.c.as_of < _utc(before))
            .group_by(SCORES.c.opportunity_id)
            .subquery()
        )
        query = (
            sa.select(SCORES.c.opportunity_id, SCORES.c.score, SCORES.c.win_probability, SCORES.c.factors, SCORES.c.as_of, SCORES.c.scored_at)
            .join(latest, (SCORES.c.opportunity_id == latest.c.opportunity_id) & (SCORES.c.as_of == latest.c.as_of))
            .where(SCORES.c.model_name == self.model_name)
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
