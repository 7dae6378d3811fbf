"""Fleet sync (cabinet/fleet): the cabinet's durable outbox of facts to publish, the down
messages it applied (replay refusal across restarts), and an index on the sessions' closing
time (the outbox's look for newly closed sessions).

Revision ID: 0009
Revises: 0008
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "fleet_applied",
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("message_id"))
    op.create_table(
        "fleet_outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("kind", "ref", name="uq_fleet_outbox_kind_ref"),
        sa.UniqueConstraint("message_id"))
    with op.batch_alter_table("fleet_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_fleet_outbox_kind_source", ["kind", "source_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fleet_outbox_sent_at"), ["sent_at"], unique=False)
    # the outbox's look for sessions closed since its last pass (cabinet/fleet/tables.py)
    op.create_index("ix_cabinet_sessions_closed_at", "cabinet_sessions", ["closed_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_cabinet_sessions_closed_at", table_name="cabinet_sessions")
    with op.batch_alter_table("fleet_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fleet_outbox_sent_at"))
        batch_op.drop_index("ix_fleet_outbox_kind_source")
    op.drop_table("fleet_outbox")
    op.drop_table("fleet_applied")
