"""Billing's tables: accounts, face templates, cabinet sessions, holds, charges, line items,
refunds and the ledger.

Every amount is an integer in minor units next to its ISO currency; every timestamp is UTC
(`UTCDateTime`). Each gateway call has its own row holding the idempotency key, written and
committed *before* the call (status "requested"), so a crash between the call and its answer
leaves a row that says exactly which key to replay.

The ledger is append-only. The ORM refuses to update or delete a `LedgerEntry` (mapper events
and a session hook for bulk UPDATE/DELETE statements), and on SQLite triggers refuse it in the
database too (triggers on SQLite and PostgreSQL). Ledger amounts: hold/capture/void/refund record the amount of that event
(positive); debt is signed, + owed by the account, - paid back.

Secrets are sealed (billing/crypto.py): a face template's encoding and an account's payment
token are AES-GCM ciphertexts bound to the account id and their purpose; the key is never in
the database. A template records only how it was taken ("photo" or "camera"), never a file
name or an image. Erasing an account's face data deletes its template rows and clears its
token; its sessions and ledger stay (money records are kept).

The schema itself is Alembic's (billing/migrations); these models must agree with it
(tests/billing/test_migrations.py compares them).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (JSON, CheckConstraint, ForeignKey, Integer, LargeBinary, String,
                        UniqueConstraint, event)
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, relationship

from billing.base import Base, UTCDateTime, utcnow

ACCOUNT_STATUSES = ("active", "blocked", "closed")
TEMPLATE_SOURCES = ("photo", "camera")
DISPUTE_STATUSES = ("open", "upheld", "rejected")
OUTCOMES = ("charged", "nothing_taken", "denied", "pending", "void")
LEDGER_KINDS = ("hold", "capture", "void", "refund", "debt")
TAX_ENTRY_KINDS = ("sale", "refund", "correction")
AGE_METHODS = ("id_card", "passport", "driving_licence", "residence_card")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


class LedgerIsAppendOnly(RuntimeError):
    def __init__(self, what: str):
        super().__init__(f"ledger: {what} refused; the ledger is append-only. Record a "
                         f"correcting entry (refund, debt with a negative amount) instead")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (_one_of("status", ACCOUNT_STATUSES, "ck_accounts_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    blocked_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    # sealed (billing/crypto.py, purpose "payment_token"); None: no payment method
    payment_token: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    # when the token was last set: a hold declined before it says nothing of the new card
    payment_token_set_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime,
                                                                     default=None)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    faces_erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # age verification: set by an operator from an ID check (never self-declared)
    age_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    age_verified_by: Mapped[str | None] = mapped_column(String(64), default=None)
    age_verification_method: Mapped[str | None] = mapped_column(String(32), default=None)

    def __repr__(self) -> str:  # never shows the payment token
        return f"Account(id={self.id}, name={self.name!r}, status={self.status})"


class FaceTemplate(Base):
    """A sealed face encoding (float32 bytes inside) of an account; never the photo."""

    __tablename__ = "face_templates"
    __table_args__ = (_one_of("source", TEMPLATE_SOURCES, "ck_face_templates_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    encoding: Mapped[bytes] = mapped_column(LargeBinary)   # sealed, purpose "face_template"
    source: Mapped[str] = mapped_column(String(16))         # photo | camera
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dispute(Base):
    """A customer contesting a session's charge; open until an operator decides it."""

    __tablename__ = "disputes"
    __table_args__ = (_one_of("status", DISPUTE_STATUSES, "ck_disputes_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("cabinet_sessions.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    note: Mapped[str | None] = mapped_column(String(500), default=None)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CabinetSession(Base):
    """One customer visit: from the hold to its single outcome."""

    __tablename__ = "cabinet_sessions"
    __table_args__ = (_one_of("outcome", OUTCOMES, "ck_sessions_outcome"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    cabinet_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open|held|settling|closed
    outcome: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    outcome_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    currency: Mapped[str] = mapped_column(String(3))
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)

    lines: Mapped[list[LineItem]] = relationship(order_by="LineItem.position",
                                                 lazy="selectin")


class Hold(Base):
    """The pre-authorisation placed before the lock releases (one per session)."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    # requested (no answer yet) | authorized | declined | failed | captured | void_requested
    # | voided | void_failed
    status: Mapped[str] = mapped_column(String(16), default="requested")
    gateway_auth_id: Mapped[str | None] = mapped_column(String(100), default=None)
    decline_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    void_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow,
                                                    onupdate=utcnow)


class Charge(Base):
    """Money taken for a session: one row per (session, kind); kind "capture" for now."""

    __tablename__ = "charges"
    __table_args__ = (UniqueConstraint("session_id", "kind", name="uq_charges_session_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"))
    kind: Mapped[str] = mapped_column(String(16), default="capture")
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="requested")  # |captured|failed
    gateway_auth_id: Mapped[str | None] = mapped_column(String(100), default=None)
    gateway_capture_id: Mapped[str | None] = mapped_column(String(100), default=None)
    failure: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow,
                                                    onupdate=utcnow)


class LineItem(Base):
    __tablename__ = "line_items"
    __table_args__ = (UniqueConstraint("session_id", "position", name="uq_line_items_position"),
                      CheckConstraint("qty > 0", name="ck_line_items_qty"),
                      CheckConstraint("unit_price >= 0", name="ck_line_items_price"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    qty: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    # tax (billing/tax.py): the class, the rate in basis points, and this line's share of its
    # rate's once-rounded tax; net + tax == amount. None on lines sold before tax was kept.
    tax_class: Mapped[str | None] = mapped_column(String(32), default=None)
    tax_rate_bp: Mapped[int | None] = mapped_column(Integer, default=None)
    net: Mapped[int | None] = mapped_column(Integer, default=None)
    tax: Mapped[int | None] = mapped_column(Integer, default=None)


class TaxEntry(Base):
    """Gross, net and tax of one rate of one session event, signed: a sale +, a refund -, a
    correction the difference. The sum of a session's entries for a rate is what it has left
    sold at that rate (refund entries count while their refund has not failed)."""

    __tablename__ = "tax_entries"
    __table_args__ = (_one_of("kind", TAX_ENTRY_KINDS, "ck_tax_entries_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[int | None] = mapped_column(Integer, default=None)  # refund id | correction no.
    rate_bp: Mapped[int] = mapped_column(Integer)
    gross: Mapped[int] = mapped_column(Integer)
    net: Mapped[int] = mapped_column(Integer)
    tax: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("charges.id"))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(500))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="requested")  # |refunded|failed
    gateway_refund_id: Mapped[str | None] = mapped_column(String(100), default=None)
    failure: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow,
                                                    onupdate=utcnow)


class LedgerEntry(Base):
    """Append-only record of every money event; see the module notes for signs."""

    __tablename__ = "ledger_entries"
    __table_args__ = (_one_of("kind", LEDGER_KINDS, "ck_ledger_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("cabinet_sessions.id"),
                                                   index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(String(500), default=None)


@event.listens_for(LedgerEntry, "before_update")
def _refuse_ledger_update(_mapper: Any, _conn: Any, entry: LedgerEntry) -> None:
    raise LedgerIsAppendOnly(f"update of entry {entry.id}")


@event.listens_for(LedgerEntry, "before_delete")
def _refuse_ledger_delete(_mapper: Any, _conn: Any, entry: LedgerEntry) -> None:
    raise LedgerIsAppendOnly(f"delete of entry {entry.id}")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_ledger_change(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and getattr(table, "name", None) == LedgerEntry.__tablename__:
        raise LedgerIsAppendOnly("bulk UPDATE" if state.is_update else "bulk DELETE")

# The same rule inside the database (SQLite and PostgreSQL triggers) is made by the baseline
# migration, billing/migrations/versions/0001_baseline.py.
