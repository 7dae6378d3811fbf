"""Sealed secrets, closed accounts, disputes: face templates and payment tokens encrypted.

- accounts: payment_token becomes a sealed BLOB (was plain text); payment_token_set_at,
  closed_at, faces_erased_at added; status may be "closed".
- face_templates: encoding sealed in place; source was a free label holding the photo's file
  name ("enrolment photo alice.jpg"): now only "photo" or "camera".
- disputes: a new table.

Existing plain values are sealed with the cabinet's key (the SecretBox `init_db` was given,
else billing.crypto.key_for_database); with none at hand the migration stops and says so.

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_STATUS = "status IN ('active', 'blocked')"
NEW_STATUS = "status IN ('active', 'blocked', 'closed')"
SOURCES = "source IN ('photo', 'camera')"


def _accounts(status_check: str, token: sa.types.TypeEngine) -> sa.Table:
    return sa.Table(
        "accounts", sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("blocked_reason", sa.String(500)),
        sa.Column("payment_token", token),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(status_check, name="ck_accounts_status"))


def _templates(source: sa.types.TypeEngine) -> sa.Table:
    return sa.Table(
        "face_templates", sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False,
                  index=True),
        sa.Column("encoding", sa.LargeBinary(), nullable=False),
        sa.Column("source", source, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))


def _secrets():
    box = context.config.attributes.get("secrets")
    if box is None:
        from billing.crypto import key_for_database
        box = key_for_database(op.get_bind().engine.url.render_as_string(hide_password=False))
    return box


def upgrade() -> None:
    bind = op.get_bind()
    tokens = bind.execute(sa.text("SELECT id, payment_token FROM accounts "
                                  "WHERE payment_token IS NOT NULL")).all()
    templates = bind.execute(sa.text("SELECT id, account_id, encoding, source "
                                     "FROM face_templates")).all()
    box = _secrets() if tokens or templates else None

    with op.batch_alter_table("accounts", copy_from=_accounts(OLD_STATUS, sa.String(200)),
                              recreate="auto") as batch:
        batch.drop_constraint("ck_accounts_status", type_="check")
        batch.create_check_constraint("ck_accounts_status", NEW_STATUS)
        batch.alter_column("payment_token", existing_type=sa.String(200),
                           type_=sa.LargeBinary(), existing_nullable=True,
                           postgresql_using="convert_to(payment_token, 'UTF8')")
        batch.add_column(sa.Column("payment_token_set_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("faces_erased_at", sa.DateTime(timezone=True)))
    for account_id, token in tokens:
        bind.execute(sa.text("UPDATE accounts SET payment_token = :t WHERE id = :i"),
                     {"t": box.seal_text(token, account_id=account_id,
                                         purpose="payment_token"), "i": account_id})

    for template_id, account_id, encoding, source in templates:
        kind = "camera" if "camera" in (source or "") else "photo"
        bind.execute(sa.text("UPDATE face_templates SET encoding = :e, source = :s "
                             "WHERE id = :i"),
                     {"e": box.seal(encoding, account_id=account_id, purpose="face_template"),
                      "s": kind, "i": template_id})
    with op.batch_alter_table("face_templates", copy_from=_templates(sa.String(200)),
                              recreate="auto") as batch:
        batch.alter_column("source", existing_type=sa.String(200), type_=sa.String(16),
                           existing_nullable=False)
        batch.create_check_constraint("ck_face_templates_source", SOURCES)
    if "ix_face_templates_account_id" not in {
            i["name"] for i in sa.inspect(bind).get_indexes("face_templates")}:
        op.create_index("ix_face_templates_account_id", "face_templates", ["account_id"])

    op.create_table(
        "disputes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('open', 'upheld', 'rejected')",
                           name="ck_disputes_status"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["cabinet_sessions.id"]),
        sa.PrimaryKeyConstraint("id"))
    op.create_index("ix_disputes_account_id", "disputes", ["account_id"])


def downgrade() -> None:
    raise NotImplementedError("0002 seals templates and tokens; going back would write them "
                              "in plain text, which the cabinet refuses to do")
