"""The payment outbox's tables, beside billing's own: outbox entries, corrections, receipts.

`PaymentOutbox`: one row per gateway call still to make (a capture, a second charge, a void, a
refund, the clean-up of a hold that never got its answer). It is written in the same
transaction as the row it drives (Charge, Hold, Refund, all holding their idempotency key), so
a step is never lost between "decided" and "sent"; `done_at` is set when its answer is
recorded. `attempts` and `next_attempt_at` hold the back-off of a gateway that did not answer.

`Correction`: an operator's corrected basket of a charged session, and what it led to.
`StoredReceipt`: each version of a session's receipt text, as shown to the customer.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billing.base import Base, UTCDateTime, utcnow

OUTBOX_STEPS = ("hold_cleanup", "capture", "charge", "void", "refund")


class PaymentOutbox(Base):
    __tablename__ = "payment_outbox"
    __table_args__ = (CheckConstraint("step IN ('hold_cleanup', 'capture', 'charge', 'void', "
                                      "'refund')", name="ck_payment_outbox_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)          # the order
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    step: Mapped[str] = mapped_column(String(16))
    ref_id: Mapped[int | None] = mapped_column(Integer, default=None)   # charge or refund id
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None, index=True)


class Correction(Base):
    __tablename__ = "corrections"
    __table_args__ = (UniqueConstraint("session_id", "number", name="uq_corrections_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    lines: Mapped[list] = mapped_column(JSON)          # [[sku, name, qty, unit_price], ...]
    old_total: Mapped[int] = mapped_column(Integer)
    new_total: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(500))
    action: Mapped[str] = mapped_column(String(16))    # refund | charge | none
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredReceipt(Base):
    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("session_id", "version", name="uq_receipts_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("cabinet_sessions.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(16), default=None)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
