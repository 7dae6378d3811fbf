"""Alembic's entry point for the fleet database (cabinet.fleet.store.migrate runs it).

The fleet database is its own PostgreSQL database, apart from any cabinet's: its metadata is
`FleetBase`, its history these versions. The caller hands over an open connection in
`config.attributes["connection"]`; offline (--sql) mode is not supported.
"""
from __future__ import annotations

from alembic import context

from cabinet.fleet.store import FleetBase

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("cabinet/fleet/migrations: run through cabinet.fleet.store.migrate(engine);"
                       " no connection was given")

context.configure(connection=connection, target_metadata=FleetBase.metadata, compare_type=True,
                  version_table="fleet_alembic_version", transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
