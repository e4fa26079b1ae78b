"""Replay (issue 40): runs made from history at past dates beside the baselines replayed the
same way. A run's role may be longer ("replay", "baseline"), a baseline's score has no stall
risk, score or grade, and several runs share a time (a replayed date's model and baselines):
a score is unique per run and deal, not per time and role.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.alter_column("role", type_=sa.String(40), existing_type=sa.String(10), existing_nullable=False, existing_server_default="champion")
        batch.alter_column("stall_risk", nullable=True, existing_type=sa.Float)
        batch.alter_column("score", nullable=True, existing_type=sa.Integer)
        batch.alter_column("grade", nullable=True, existing_type=sa.String(2))
        batch.drop_constraint("one_score_per_run", type_="unique")
        batch.create_unique_constraint("one_score_per_run", ["model_name", "run_id", "opportunity_id"])
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("role", type_=sa.String(40), existing_type=sa.String(10), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("role", type_=sa.String(10), existing_type=sa.String(40), existing_nullable=False)
    with op.batch_alter_table("scores") as batch:
        batch.drop_constraint("one_score_per_run", type_="unique")
        batch.create_unique_constraint("one_score_per_run", ["model_name", "opportunity_id", "scored_at", "role"])
        batch.alter_column("grade", nullable=False, existing_type=sa.String(2))
        batch.alter_column("score", nullable=False, existing_type=sa.Integer)
        batch.alter_column("stall_risk", nullable=False, existing_type=sa.Float)
        batch.alter_column("role", type_=sa.String(10), existing_type=sa.String(40), existing_nullable=False, existing_server_default="champion")
