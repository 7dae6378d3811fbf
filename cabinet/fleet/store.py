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

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, Date, DateTime, Engine, Index, Integer,
                        LargeBinary, String, Text, insert, text)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from cabinet.errors import CabinetError
from cabinet.fleet import messages

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
    """A fleet database URL that cannot be one (exit code 1)."""


class FleetDbUnavailable(FleetDbError):
    """The fleet database does not answer (exit code 2)."""


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


def open_fleet_db(url: str, *, application_name: str | None = None
                  ) -> tuple[Engine, sessionmaker]:
    """An engine on the fleet's PostgreSQL database, migrated to head, and its sessions.
    `application_name` names the connections in pg_stat_activity (a back-office instance's
    client id)."""
    from billing.db import DatabaseUrlError, make_engine
    from sqlalchemy.engine import make_url
    try:
        if application_name and "://" in url:
            url = make_url(url).update_query_dict({"application_name": application_name}) \
                .render_as_string(hide_password=False)
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
        raise FleetDbUnavailable(f"fleet database {engine.url.render_as_string()}: does not "
                                 f"answer ({first}); is PostgreSQL running and the database "
                                 f"created?") from None
    return engine, sessionmaker(engine, expire_on_commit=False)


# --- ingest: a batch of deliveries in one transaction ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message as the broker handed it over (`mid`/`qos`/`generation` are for the ack)."""
    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    generation: int = 0


@dataclasses.dataclass(frozen=True)
class Stored:
    """What one batch did: new rows, duplicates (already stored, or twice in the batch),
    status updates, dead letters."""
    new: int
    duplicates: int
    statuses: int
    dead: int


_RETRY_PGCODES = {"40P01", "40001"}   # deadlock detected, serialization failure


class Ingest:
    """Stores deliveries: decode, insert the new ids, derive from those alone, commit.

    `store(batch)` is one transaction; it raises (and stores nothing) when the database fails,
    so the caller must not ack. A deadlock between instances is retried here."""

    def __init__(self, sessions: sessionmaker, instance: str, *, now=utcnow, retries: int = 5):
        self.sessions, self.instance, self.now, self.retries = sessions, instance, now, retries

    def store(self, batch: list[Delivery]) -> Stored:
        """Store the batch; a message the database refuses (a value too long or out of range:
        DataError, IntegrityError) is found by halving the batch and dead-lettered alone, so
        one bad message never stalls the stream. Connection errors propagate (retry, no ack)."""
        try:
            return self._store(batch)
        except (DataError, IntegrityError) as e:
            if len(batch) == 1:
                reason = str(e.orig or e).strip().splitlines()[0]
                return self._dead_letter(batch[0], f"up message: the fleet database refused it "
                                                   f"({reason})")
            half = len(batch) // 2
            a, b = self.store(batch[:half]), self.store(batch[half:])
            return Stored(a.new + b.new, a.duplicates + b.duplicates, a.statuses + b.statuses,
                          a.dead + b.dead)

    def _dead_letter(self, d: Delivery, error: str) -> Stored:
        with self.sessions.begin() as s:
            s.execute(insert(FleetDeadLetter), [{
                "topic": d.topic, "payload": bytes(d.payload), "error": error,
                "received_at": self.now(), "instance": self.instance}])
        return Stored(0, 0, 0, 1)

    def _store(self, batch: list[Delivery]) -> Stored:
        ups: dict[str, messages.UpMessage] = {}
        statuses: dict[str, messages.StatusMessage] = {}
        dead: list[dict[str, Any]] = []
        received = self.now()
        decoded = 0
        for d in batch:
            try:
                if d.topic.endswith("/status"):
                    cabinet = messages.parse_status_topic(d.topic)
                    if not d.payload:       # a retained status cleared (a cabinet retired)
                        continue
                    status = messages.decode_status(d.payload)
                    old = statuses.get(cabinet)
                    if old is None or status.at >= old.at:
                        statuses[cabinet] = status
                else:
                    up = messages.decode_up(d.payload, d.topic)
                    ups.setdefault(up.id, up)
                    decoded += 1
            except messages.MessageError as e:
                dead.append({"topic": d.topic, "payload": bytes(d.payload), "error": str(e),
                             "received_at": received, "instance": self.instance})
        repeated = decoded - len(ups)
        for attempt in range(self.retries + 1):
            try:
                with self.sessions.begin() as s:
                    new = self._insert(s, list(ups.values()))
                    _derive(s, new, statuses)
                    if dead:
                        s.execute(insert(FleetDeadLetter), dead)
                return Stored(len(new), repeated + len(ups) - len(new), len(statuses), len(dead))
            except DBAPIError as e:
                code = getattr(e.orig, "sqlstate", None)
                if code not in _RETRY_PGCODES or attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def _insert(self, s: Session, ups: list[messages.UpMessage]) -> list[messages.UpMessage]:
        if not ups:
            return []
        ups = sorted(ups, key=lambda m: m.id)
        added = set(s.scalars(_INSERT_MESSAGES, {
            "id": [m.id for m in ups], "cabinet_id": [m.cabinet for m in ups],
            "kind": [m.kind for m in ups], "seq": [m.seq for m in ups],
            "at": [m.at for m in ups], "body": [json.dumps(m.body) for m in ups],
            "stored_at": self.now(), "instance": self.instance}))
        return [m for m in ups if m.id in added]


# One fixed statement per table whatever the batch size: the rows travel as one array per
# column and unnest() turns them back into rows (no per-batch SQL to build, parse or plan).
_INSERT_MESSAGES = text(
    "INSERT INTO fleet_messages (id, cabinet_id, kind, seq, at, stored_at, instance, body) "
    "SELECT u.id, u.cabinet_id, u.kind, u.seq, u.at, :stored_at, :instance, u.body::jsonb "
    "FROM unnest(CAST(:id AS text[]), CAST(:cabinet_id AS text[]), CAST(:kind AS text[]), "
    "CAST(:seq AS bigint[]), CAST(:at AS timestamptz[]), CAST(:body AS text[])) "
    "AS u(id, cabinet_id, kind, seq, at, body) "
    "ON CONFLICT (id) DO NOTHING RETURNING id")


def _upsert_statement(table: str, columns: dict[str, str], keys: tuple[str, ...],
                      sets: dict[str, str]) -> Any:
    """INSERT INTO table AS t (...) SELECT FROM unnest(arrays) ON CONFLICT (keys) DO UPDATE;
    `columns` maps each column to its PostgreSQL type (jsonb travels as text)."""
    names = list(columns)
    arrays = ", ".join(f"CAST(:{c} AS {'text' if t == 'jsonb' else t}[])"
                       for c, t in columns.items())
    picks = ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in columns.items())
    updates = ", ".join(f"{c} = {expr}" for c, expr in sets.items())
    return text(f"INSERT INTO {table} AS t ({', '.join(names)}) SELECT {picks} "
                f"FROM unnest({arrays}) AS u({', '.join(names)}) "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


_UPSERTS = {
    "cabinets": _upsert_statement(
        "fleet_cabinets",
        {"cabinet_id": "text", "status": "text", "status_at": "timestamptz",
         "last_seen": "timestamptz", "last_seq": "bigint", "in_service": "boolean",
         "health_at": "timestamptz", "messages": "bigint"}, ("cabinet_id",),
        {"status": "CASE WHEN EXCLUDED.status_at IS NOT NULL AND (t.status_at IS NULL OR "
                   "EXCLUDED.status_at >= t.status_at) THEN EXCLUDED.status ELSE t.status END",
         "status_at": "GREATEST(t.status_at, EXCLUDED.status_at)",
         "last_seen": "GREATEST(t.last_seen, EXCLUDED.last_seen)",
         "last_seq": "GREATEST(t.last_seq, EXCLUDED.last_seq)",
         "in_service": "CASE WHEN EXCLUDED.health_at IS NOT NULL AND (t.health_at IS NULL OR "
                       "EXCLUDED.health_at >= t.health_at) THEN EXCLUDED.in_service "
                       "ELSE t.in_service END",
         "health_at": "GREATEST(t.health_at, EXCLUDED.health_at)",
         "messages": "t.messages + EXCLUDED.messages"}),
    "receipts": _upsert_statement(
        "fleet_receipts",
        {"cabinet_id": "text", "session_id": "text", "correction": "integer",
         "total": "bigint", "currency": "text", "day": "date", "at": "timestamptz"},
        ("cabinet_id", "session_id"),
        {"total": "CASE WHEN EXCLUDED.correction > t.correction THEN EXCLUDED.total "
                  "ELSE t.total END",
         "currency": "CASE WHEN EXCLUDED.correction > t.correction THEN EXCLUDED.currency "
                     "ELSE t.currency END",
         "correction": "GREATEST(t.correction, EXCLUDED.correction)",
         "day": "LEAST(t.day, EXCLUDED.day)", "at": "LEAST(t.at, EXCLUDED.at)"}),
    "stock": _upsert_statement(
        "fleet_stock",
        {"cabinet_id": "text", "slot": "text", "sku": "text", "qty": "integer",
         "par": "integer", "updated_at": "timestamptz"}, ("cabinet_id", "slot"),
        {"qty": "t.qty + EXCLUDED.qty",
         # the newest move's par wins (a planogram change), whatever order moves arrive in
         "par": "CASE WHEN EXCLUDED.par IS NOT NULL AND (t.par IS NULL OR "
                "EXCLUDED.updated_at >= t.updated_at) THEN EXCLUDED.par ELSE t.par END",
         "sku": "CASE WHEN EXCLUDED.updated_at >= t.updated_at THEN EXCLUDED.sku ELSE t.sku END",
         "updated_at": "GREATEST(t.updated_at, EXCLUDED.updated_at)"}),
    "alarms": _upsert_statement(
        "fleet_alarms",
        {"cabinet_id": "text", "alarm_id": "bigint", "alarm": "text",
         "raised_at": "timestamptz", "cleared_at": "timestamptz"}, ("cabinet_id", "alarm_id"),
        {"alarm": "EXCLUDED.alarm", "raised_at": "LEAST(t.raised_at, EXCLUDED.raised_at)",
         "cleared_at": "LEAST(t.cleared_at, EXCLUDED.cleared_at)"}),
    "reviews": _upsert_statement(
        "fleet_reviews",
        {"cabinet_id": "text", "session_id": "text", "flagged": "boolean", "outcome": "text",
         "flags": "jsonb", "at": "timestamptz", "resolved_at": "timestamptz"},
        ("cabinet_id", "session_id"),
        {"flagged": "t.flagged OR EXCLUDED.flagged",
         "outcome": "COALESCE(EXCLUDED.outcome, t.outcome)",
         "flags": "CASE WHEN EXCLUDED.flagged THEN EXCLUDED.flags ELSE t.flags END",
         "at": "COALESCE(t.at, EXCLUDED.at)",
         "resolved_at": "GREATEST(t.resolved_at, EXCLUDED.resolved_at)"}),
}


def receipt_correction(msg: messages.UpMessage) -> int:
    """0 for a session's receipt, n for its n-th correction (id `<cab>/receipt/<sid>.<n>`)."""
    key = msg.id.split("/", 2)[2]
    sid = str(msg.body["session_id"])
    if key == sid:
        return 0
    tail = key[len(sid) + 1:] if key.startswith(sid + ".") else ""
    return int(tail) if tail.isdigit() else 0


def _derive(s: Session, new: list[messages.UpMessage],
            statuses: dict[str, messages.StatusMessage]) -> None:
    """Every derived table from the newly inserted messages (each applied exactly once)."""
    cabinets: dict[str, dict[str, Any]] = {}

    def cab(cid: str) -> dict[str, Any]:
        return cabinets.setdefault((cid,), {"cabinet_id": cid, "status": "unknown",
                                         "status_at": None, "last_seen": None, "last_seq": 0,
                                         "in_service": None, "health_at": None, "messages": 0})

    receipts: dict[tuple, dict] = {}
    stock: dict[tuple, dict] = {}
    alarms: dict[tuple, dict] = {}
    reviews: dict[tuple, dict] = {}
    for m in new:
        c = cab(m.cabinet)
        c["messages"] += 1
        c["last_seq"] = max(c["last_seq"], m.seq)
        c["last_seen"] = m.at if c["last_seen"] is None else max(c["last_seen"], m.at)
        b = m.body
        if m.kind == "health" and (c["health_at"] is None or m.at >= c["health_at"]):
            c["in_service"], c["health_at"] = bool(b["in_service"]), m.at
        elif m.kind == "receipt":
            n = receipt_correction(m)
            key = (m.cabinet, str(b["session_id"]))
            old = receipts.get(key)
            day = m.at.astimezone(dt.timezone.utc).date()
            if old is None or n > old["correction"]:
                receipts[key] = {"cabinet_id": key[0], "session_id": key[1], "correction": n,
                                 "total": int(b["total"]), "currency": str(b["currency"]),
                                 "day": min(day, old["day"]) if old else day,
                                 "at": min(m.at, old["at"]) if old else m.at}
            else:
                old["day"], old["at"] = min(day, old["day"]), min(m.at, old["at"])
            if n > 0:
                _review(reviews, key, resolved_at=m.at)
        elif m.kind == "inventory":
            key = (m.cabinet, str(b["slot"]))
            row = stock.setdefault(key, {"cabinet_id": key[0], "slot": key[1], "sku": b["sku"],
                                         "qty": 0, "par": None, "updated_at": m.at})
            row["qty"] += int(b["qty"])
            newest = m.at >= row["updated_at"]
            if newest:
                row["sku"], row["updated_at"] = str(b["sku"]), m.at
            par = b.get("par")
            if isinstance(par, int) and not isinstance(par, bool) and (newest
                                                                       or row["par"] is None):
                row["par"] = par
        elif m.kind == "alarm":
            key = (m.cabinet, int(b["alarm_id"]))
            row = alarms.setdefault(key, {"cabinet_id": key[0], "alarm_id": key[1],
                                          "alarm": str(b["alarm"]), "raised_at": None,
                                          "cleared_at": None})
            field = "raised_at" if b["transition"] == "raise" else "cleared_at"
            row[field] = m.at if row[field] is None else min(row[field], m.at)
        elif m.kind == "session":
            flags = b.get("flags") if isinstance(b.get("flags"), list) else []
            key = (m.cabinet, str(b["session_id"]))
            if b["outcome"] == "pending" or flags:
                _review(reviews, key, flagged=True, outcome=str(b["outcome"]),
                        flags=[str(f) for f in flags], at=m.at)
            if b.get("reviewed") is True:
                _review(reviews, key, resolved_at=m.at)
    for cid, st in statuses.items():
        c = cab(cid)
        c["status"], c["status_at"] = st.status, st.at
    _upsert(s, "cabinets", cabinets)
    _upsert(s, "receipts", receipts)
    _upsert(s, "stock", stock)
    _upsert(s, "alarms", alarms)
    _upsert(s, "reviews", reviews)


def _review(reviews: dict, key: tuple, **values: Any) -> None:
    row = reviews.setdefault(key, {"cabinet_id": key[0], "session_id": key[1], "flagged": False,
                                   "outcome": None, "flags": [], "at": None,
                                   "resolved_at": None})
    for name, value in values.items():
        if name == "resolved_at" and row["resolved_at"] is not None:
            value = max(value, row["resolved_at"])
        row[name] = value


def _upsert(s: Session, table: str, rows: dict) -> None:
    """One upsert of every row, in key order (instances lock rows in the same order, so two
    batches touching the same cabinets queue instead of deadlocking)."""
    if not rows:
        return
    ordered = [rows[k] for k in sorted(rows)]
    params = {c: [r[c] for r in ordered] for c in ordered[0]}
    if "flags" in params:
        params["flags"] = [json.dumps(f) for f in params["flags"]]
    s.execute(_UPSERTS[table], params)


# --- gaps: messages the broker acknowledged and delivered to no one ------------------------------
# A cabinet's seqs go 1, 2, 3, ... with no gaps, so a seq missing below one stored is a message
# the back office never got (Mosquitto 2.0.11 drops what cabinets publish between its restart
# and the first resubscription of the shared group: docs/fleet.md, "Broker restarts"). Only
# cabinets whose `messages` count is short of their `last_seq` are looked at; a gap counts once
# the message after it was stored `grace` ago (messages of one cabinet may be committed out of
# order by different instances), and is not asked for again while an order for it is younger
# than `retry`. One row per gap: (cabinet, from_seq, to_seq), to_seq capped at from + span - 1.
_GAPS = text(
    "SELECT g.cabinet_id, g.prev + 1 AS from_seq, LEAST(g.seq - 1, g.prev + :span) AS to_seq "
    "FROM (SELECT m.cabinet_id, m.seq, m.stored_at, "
    "             COALESCE(lag(m.seq) OVER (PARTITION BY m.cabinet_id ORDER BY m.seq), 0) "
    "             AS prev "
    "      FROM fleet_messages m JOIN fleet_cabinets c ON c.cabinet_id = m.cabinet_id "
    "      WHERE c.last_seq > c.messages) AS g "
    "WHERE g.seq > g.prev + 1 AND g.stored_at <= :settled AND NOT EXISTS ("
    "  SELECT 1 FROM fleet_down d WHERE d.kind = 'resend' "
    "  AND d.topic = 'cabinet/' || g.cabinet_id || '/down/resend' AND d.issued_at > :asked_after "
    "  AND (d.body->>'from_seq')::bigint <= g.prev + 1 "
    "  AND (d.body->>'to_seq')::bigint >= LEAST(g.seq - 1, g.prev + :span)) "
    "ORDER BY g.cabinet_id, from_seq LIMIT :limit")
# one back-office instance at a time looks for gaps (the others skip that pass)
GAP_LOCK = 0x666C6565_7467  # "fleetg"


def find_gaps(s: Session, *, now: dt.datetime, grace_s: float, retry_s: float,
              limit: int = 1000) -> list[tuple[str, int, int]]:
    """The gaps to ask for now, as (cabinet id, from_seq, to_seq) (see _GAPS)."""
    return [(c, int(a), int(b)) for c, a, b in s.execute(_GAPS, {
        "settled": now - dt.timedelta(seconds=grace_s),
        "asked_after": now - dt.timedelta(seconds=retry_s),
        "span": messages.MAX_RESEND_SPAN, "limit": limit})]
