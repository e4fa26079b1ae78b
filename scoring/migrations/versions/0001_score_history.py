"""Score history: one row per opportunity and scoring run.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scores",
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
    )
    op.create_index("scores_by_deal", "scores", ["model_name", "opportunity_id", "as_of"])


def downgrade() -> None:
    op.drop_index("scores_by_deal", "scores")
    op.drop_table("scores")
