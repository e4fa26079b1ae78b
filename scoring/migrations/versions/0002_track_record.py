"""Track record: a row per scoring run (what was promised, the drift measured), the role of each
score (champion or shadow) and its stage, and every forecast made.

Scores recorded before this revision are kept: each (scored_at, version) becomes a run of its
own, as the champion's, without a promise or a drift measure (neither was kept then).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
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
    )
    op.create_index("runs_by_time", "runs", ["model_name", "as_of"])
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("role", sa.String(10), nullable=False, server_default="champion"))
        batch.add_column(sa.Column("run_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("stage", sa.String(200), nullable=True))
        batch.drop_constraint("one_score_per_run", type_="unique")
        batch.create_unique_constraint("one_score_per_run", ["model_name", "opportunity_id", "scored_at", "role"])
    op.create_index("scores_by_run", "scores", ["run_id"])
    op.execute(
        "INSERT INTO runs (model_name, scored_at, as_of, source, model_version, role, scored) "
        "SELECT model_name, scored_at, MAX(as_of), MIN(source), model_version, 'champion', COUNT(*) FROM scores "
        "GROUP BY model_name, scored_at, model_version"
    )
    op.execute(
        "UPDATE scores SET run_id = (SELECT runs.id FROM runs WHERE runs.model_name = scores.model_name "
        "AND runs.scored_at = scores.scored_at AND runs.model_version = scores.model_version)"
    )
    op.create_table(
        "forecasts",
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
    )
    op.create_index("forecasts_by_period", "forecasts", ["model_name", "period_end"])


def downgrade() -> None:
    op.drop_index("forecasts_by_period", "forecasts")
    op.drop_table("forecasts")
    op.drop_index("scores_by_run", "scores")
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("one_score_per_run", type_="unique")
        batch.create_unique_constraint("one_score_per_run", ["model_name", "opportunity_id", "scored_at"])
        batch.drop_column("stage")
        batch.drop_column("run_id")
        batch.drop_column("role")
    op.drop_index("runs_by_time", "runs")
    op.drop_table("runs")
