"""The cabinet's fleet tables, on the shared metadata (migration 0009).

`fleet_outbox`: one row per fact to publish, `seq` its place in the cabinet's stream, `kind` +
`ref` its natural key (unique, so a fact is collected once), `sent_at` set only when the
broker's PUBACK came. `fleet_applied`: the down messages the cabinet applied, by id, so a
redelivery or a replay is refused even after a restart.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from billing.base import Base, UTCDateTime
from billing.models import CabinetSession


class OutboxRow(Base):
    __tablename__ = "fleet_outbox"
    __table_args__ = (UniqueConstraint("kind", "ref", name="uq_fleet_outbox_kind_ref"),
                      Index("ix_fleet_outbox_kind_source", "kind", "source_id"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(100))            # the fact's natural key
    source_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # cursor of its table
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)    # when the fact happened
    body: Mapped[str] = mapped_column(Text)                 # JSON
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class AppliedDown(Base):
    __tablename__ = "fleet_applied"

    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str] = mapped_column(Text, default="")


# The outbox looks for sessions closed since its last pass (cabinet/fleet/outbox.py): without
# this index that is a scan of every session the cabinet ever had, once a second.
Index("ix_cabinet_sessions_closed_at", CabinetSession.closed_at)
