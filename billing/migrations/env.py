"""Alembic's entry point, run by `billing.db.init_db` (and by the alembic CLI, see below).

The caller hands over an open connection in `config.attributes["connection"]`; the target
metadata is `Base.metadata` with every table the caller imported (billing's always; the
controller's journal and inventory when cabinet imported them). Offline (--sql) mode is not
supported: the cabinet migrates its own database at start.

For a new revision after changing a model: from the repository root,
    .venv/bin/python -m billing.db revision "what changed"
autogenerates billing/migrations/versions/NNNN_*.py against a scratch SQLite database.
"""
from __future__ import annotations

from alembic import context

from billing.base import Base, UTCDateTime

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("billing/migrations: run through billing.db.init_db(engine) or "
                       "`python -m billing.db revision MESSAGE`; no connection was given")



def _render_item(kind: str, obj: object, _autogen_context: object) -> str | bool:
    """New revisions name SQLAlchemy's own types, so they never import the models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True, compare_type=True, render_item=_render_item,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
