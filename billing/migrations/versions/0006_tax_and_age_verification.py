"""Tax and age verification: net and tax per line item, the per-rate tax entries of sales,
refunds and corrections (billing/tax.py), and who verified an account's age, how and when.

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("line_items") as batch:
        batch.add_column(sa.Column("tax_class", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("tax_rate_bp", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("net", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tax", sa.Integer(), nullable=True))
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("age_verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("age_verified_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("age_verification_method", sa.String(length=32),
                                   nullable=True))
    op.create_table(
        "tax_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.Integer(), nullable=True),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("gross", sa.Integer(), nullable=False),
        sa.Column("net", sa.Integer(), nullable=False),
        sa.Column("tax", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('sale', 'refund', 'correction')",
                           name="ck_tax_entries_kind"),
        sa.ForeignKeyConstraint(["session_id"], ["cabinet_sessions.id"]),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_tax_entries_session_id", "tax_entries", ["session_id"])
    op.create_index("ix_tax_entries_at", "tax_entries", ["at"])


def downgrade() -> None:
    op.drop_index("ix_tax_entries_at", table_name="tax_entries")
    op.drop_index("ix_tax_entries_session_id", table_name="tax_entries")
    op.drop_table("tax_entries")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("age_verification_method")
        batch.drop_column("age_verified_by")
        batch.drop_column("age_verified_at")
    with op.batch_alter_table("line_items") as batch:
        batch.drop_column("tax")
        batch.drop_column("net")
        batch.drop_column("tax_rate_bp")
        batch.drop_column("tax_class")
