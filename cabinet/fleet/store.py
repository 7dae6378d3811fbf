"""The fleet database: every up message a cabinet sent, and what the back office derives from it.

A separate PostgreSQL database from any cabinet's (its own metadata, its own Alembic history in
cabinet/fleet/migrations). `fleet_messages` is the record: one row per message id, inserted with
ON CONFLICT (id) DO NOTHING, so a redelivery, a re-publish after a cabinet's restart or a second
back-office instance seeing the same message changes nothing. Everything else is derived in the
same transaction, from the rows that insert really added, so each fact counts exactly once:

- `fleet_cabinets`: status (the retained status topic: online / offline, newest `at` wins), last
  seen, the highest outbox seq, in service (newest health), messages applied;
- `fleet_receipts`: a session's receipt, its highest correction winning (a correction carries the
  session's total after it); sales per day are a sum over it;
- `fleet_stock`: units per slot, the sum of the inventory moves' signed deltas (order-free), with
  the par level when a move carries one;
- `fleet_alarms`: raised and cleared times per alarm id (open: raised, not cleared), order-free;
- `fleet_reviews`: sessions flagged for review (outcome pending or flags), resolved by a
  correction receipt or a session message saying reviewed;
- `fleet_dead_letters`: what could not be decoded, with the error naming the field;
- `fleet_down`: every signed order the back office published; `fleet_instances`: who serves.

Order-free derivations matter: shared subscriptions give no order across instances, and a
cabinet back from a long outage publishes an hour of facts at once.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, Date, DateTime, Engine, Index, Integer,
                        LargeBinary, String, Text, text)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from cabinet.errors import CabinetError

TS = DateTime(timezone=True)
JSONDOC = JSON().with_variant(JSONB(), "postgresql")


class FleetBase(DeclarativeBase):
    """The fleet database's own metadata (never the cabinet's `billing.base.Base`)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class FleetMessage(FleetBase):
    __tablename__ = "fleet_messages"
    __table_args__ = (Index("ix_fleet_messages_cabinet_seq", "cabinet_id", "seq"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[dt.datetime] = mapped_column(TS)
    stored_at: Mapped[dt.datetime] = mapped_column(TS)      # just before its commit: lag
    instance: Mapped[str] = mapped_column(String(80))       # the back-office client that stored it
    body: Mapped[dict] = mapped_column(JSONDOC)


class FleetDeadLetter(FleetBase):
    __tablename__ = "fleet_dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(TS)
    instance: Mapped[str] = mapped_column(String(80))


class FleetCabinet(FleetBase):
    __tablename__ = "fleet_cabinets"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    status_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    in_service: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    health_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    messages: Mapped[int] = mapped_column(BigInteger, default=0)   # applied, each once


class FleetReceipt(FleetBase):
    __tablename__ = "fleet_receipts"
    __table_args__ = (Index("ix_fleet_receipts_day", "day", "cabinet_id"),)

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    correction: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(BigInteger)         # minor units
    currency: Mapped[str] = mapped_column(String(3))
    day: Mapped[dt.date] = mapped_column(Date)             # UTC day of the sale
    at: Mapped[dt.datetime] = mapped_column(TS)


class FleetStock(FleetBase):
    __tablename__ = "fleet_stock"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int] = mapped_column(Integer, default=0)
    par: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(TS)


class FleetAlarm(FleetBase):
    __tablename__ = "fleet_alarms"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    alarm_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alarm: Mapped[str] = mapped_column(String(100))
    raised_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)

    @property
    def open(self) -> bool:
        return self.raised_at is not None and self.cleared_at is None


class FleetReview(FleetBase):
    __tablename__ = "fleet_reviews"

    cabinet_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    flags: Mapped[list] = mapped_column(JSONDOC, default=list)
    at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)


class FleetDown(FleetBase):
    __tablename__ = "fleet_down"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[dt.datetime] = mapped_column(TS)
    expires_at: Mapped[dt.datetime] = mapped_column(TS)
    body: Mapped[dict] = mapped_column(JSONDOC)
    published_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)


class FleetInstance(FleetBase):
    __tablename__ = "fleet_instances"

    client_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(TS)
    subscribed_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(TS, nullable=True)


def row_dict(obj: Any) -> dict[str, Any]:
    """A model row as a plain dict (pages and JSON)."""
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


# --- opening and migrating ---------------------------------------------------------------------
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x0F1EE7   # pg_advisory_xact_lock key: instances starting at once migrate once


class FleetDbError(CabinetError):
    pass


def _alembic_config(connection: Any = None):
    from alembic.config import Config
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the fleet database to head (Alembic), one process at a time."""
    from alembic import command
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), "head")


def open_fleet_db(url: str, *, pool_size: int = 5) -> tuple[Engine, sessionmaker]:
    """An engine on the fleet's PostgreSQL database, migrated to head, and its sessions."""
    from billing.db import DatabaseUrlError, make_engine
    try:
        engine = make_engine(url)
    except DatabaseUrlError as e:
        raise FleetDbError(f"fleet database: {e}") from None
    if engine.dialect.name != "postgresql":
        engine.dispose()
        raise FleetDbError(f"fleet database {url!r}: the fleet database is PostgreSQL (it relies "
                           f"on ON CONFLICT and JSONB); give postgresql://USER@HOST:PORT/DB")
    try:
        migrate(engine)
    except OperationalError as e:
        engine.dispose()
        first = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise FleetDbError(f"fleet database {engine.url.render_as_string()}: does not answer "
                           f"({first}); is PostgreSQL running and the database created?") from None
    return engine, sessionmaker(engine, expire_on_commit=False)
