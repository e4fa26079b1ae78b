"""Alembic's entry point for the score history's and events' database: runs on the connection
(and in the transaction) that scoring.database hands it."""

from __future__ import annotations

from alembic import context

from scoring.database import METADATA, VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
