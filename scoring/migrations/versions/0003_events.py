"""Events: stage changes, activities, field changes and opportunity records sent to
POST /v1/events, one row each, unique by the sender's event id (a resend is a no-op).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("opportunity_id", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("row", sa.JSON, nullable=False),
        sa.UniqueConstraint("model_name", "event_id", name="one_event_per_id"),
    )
    op.create_index("events_by_deal", "events", ["model_name", "opportunity_id"])
    op.create_index("events_by_time", "events", ["model_name", "at"])


def downgrade() -> None:
    op.drop_table("events")
