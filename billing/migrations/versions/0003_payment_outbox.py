"""Payment outbox, operator corrections and stored receipts (billing/outbox_models.py).

- payment_outbox: one row per gateway call still to make, in order, with its back-off;
- corrections: an operator's corrected basket of a charged session and what it led to;
- receipts: each version of a session's receipt text.
New tables only; nothing existing changes. Column types are SQLAlchemy's own (frozen).

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("old_total", sa.Integer(), nullable=False),
        sa.Column("new_total", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["cabinet_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "number", name="uq_corrections_number"))
    op.create_index(op.f("ix_corrections_session_id"), "corrections", ["session_id"])
    op.create_table(
        "payment_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("step IN ('hold_cleanup', 'capture', 'charge', 'void', 'refund')",
                           name="ck_payment_outbox_step"),
        sa.ForeignKeyConstraint(["session_id"], ["cabinet_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"))
    op.create_index(op.f("ix_payment_outbox_done_at"), "payment_outbox", ["done_at"])
    op.create_index(op.f("ix_payment_outbox_session_id"), "payment_outbox", ["session_id"])
    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["cabinet_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "version", name="uq_receipts_version"))
    op.create_index(op.f("ix_receipts_session_id"), "receipts", ["session_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_receipts_session_id"), table_name="receipts")
    op.drop_table("receipts")
    op.drop_index(op.f("ix_payment_outbox_session_id"), table_name="payment_outbox")
    op.drop_index(op.f("ix_payment_outbox_done_at"), table_name="payment_outbox")
    op.drop_table("payment_outbox")
    op.drop_index(op.f("ix_corrections_session_id"), table_name="corrections")
    op.drop_table("corrections")
