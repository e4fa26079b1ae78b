"""Alembic's entry point for score history: runs on the connection scoring.history hands it."""

from __future__ import annotations

from alembic import context

from scoring.history import METADATA

connection = context.config.attributes["connection"]
# its own version table: the database may be shared with MLflow, which keeps `alembic_version`
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True, version_table="oppscore_schema_version")
with context.begin_transaction():
    context.run_migrations()
