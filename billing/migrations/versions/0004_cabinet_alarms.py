"""cabinet_alarms: alarms the running cabinet raised, kept for review (cabinet/journal.py).

A database that ran the model before this revision existed already has the table (init_db
creates tables no migration makes yet): then only the index is checked.

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("cabinet_alarms"):
        op.create_table(
            "cabinet_alarms",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("detail", sa.Text(), nullable=False),
            sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("cleared_by", sa.String(length=64), nullable=True),
            sa.Column("review", sa.Boolean(), nullable=False),
            sa.PrimaryKeyConstraint("id"))
    elif "ix_cabinet_alarms_kind" in {i["name"] for i in inspector.get_indexes("cabinet_alarms")}:
        return
    op.create_index("ix_cabinet_alarms_kind", "cabinet_alarms", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_cabinet_alarms_kind", table_name="cabinet_alarms")
    op.drop_table("cabinet_alarms")
