"""Alembic's entry point for score history: runs on the connection scoring.history hands it."""

from __future__ import annotations

from alembic import context

from scoring.history import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
