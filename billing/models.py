"""Billing's tables: accounts, face templates, cabinet sessions, holds, charges, line items,
refunds and the ledger.

Every amount is an integer in minor units next to its ISO currency; every timestamp is UTC
(`UTCDateTime`). Each gateway call has its own row holding the idempotency key, written and
committed *before* the call (status "requested"), so a crash between the call and its answer
leaves a row that says exactly which key to replay.

The ledger is append-only. The ORM refuses to update or delete a `LedgerEntry` (mapper events
and a session hook for bulk UPDATE/DELETE statements), and on SQLite triggers refuse it in the
database too. Ledger amounts: hold/capture/void/refund record the amount of that event
(positive); debt is signed, + owed by the account, - paid back.

Face templates hold the encoding vector only, never the photo it came from.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (DDL, JSON, CheckConstraint, ForeignKey, Integer, LargeBinary, String,
                        UniqueConstraint, event)
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, relationship

from billing.base import Base, UTCDateTime, utcnow

ACCOUNT_STATUSES = ("active", "blocked")
OUTCOMES = ("charged", "nothing_taken", "denied", "pending", "void")
LEDGER_KINDS = ("hold", "capture", "void", "refund", "debt")


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
    payment_token: Mapped[str | None] = mapped_column(String(200), default=None)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:  # never shows the payment token
        return f"Account(id={self.id}, name={self.name!r}, status={self.status})"


class FaceTemplate(Base):
    """A face encoding (float32 bytes) linked to an account; never the photo itself."""

    __tablename__ = "face_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    encoding: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(200))  # a label, e.g. "enrolment kiosk 2"
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


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


# The same rule inside SQLite, for anyone writing SQL by hand. (PostgreSQL gets its own
# trigger when the project moves there; these DDLs only run on SQLite.)
for _verb in ("UPDATE", "DELETE"):
    event.listen(LedgerEntry.__table__, "after_create", DDL(
        f"CREATE TRIGGER IF NOT EXISTS ledger_entries_no_{_verb.lower()} BEFORE {_verb} "
        f"ON ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger is append-only: "
        f"{_verb} refused'); END").execute_if(dialect="sqlite"))
