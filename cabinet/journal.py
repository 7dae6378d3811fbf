"""The session journal: every state-machine transition, committed before its effect.

`Journal.write` is the SessionMachine's journal callback. It appends one row per transition
(session id, sequence, trigger, source, destination, data as JSON, UTC time) in its own
transaction and returns only after the commit, so the effect that follows is always preceded
by a durable record of why it happened. `open_sessions()` finds the sessions whose last
transition left them in a session state: the ones a restarted controller must finish.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from billing.db import Base, UTCDateTime, utcnow
from billing.models import CabinetSession
from cabinet.machine import SESSION_STATES, TransitionRecord


class JournalEntry(Base):
    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    trigger: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    dest: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text, default="{}")


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class Journal:
    def __init__(self, db: sessionmaker):
        self._db = db

    def write(self, record: TransitionRecord) -> None:
        with self._db.begin() as s:
            seq = s.scalar(select(func.count()).select_from(JournalEntry).where(
                JournalEntry.session_id == record.session_id)) or 0
            s.add(JournalEntry(session_id=record.session_id, seq=seq + 1, at=record.at,
                               trigger=record.trigger, source=record.source, dest=record.dest,
                               data=json.dumps(record.data, default=_json_default,
                                               sort_keys=True)))

    def entries(self, session_id: str) -> list[JournalEntry]:
        with self._db() as s:
            return list(s.scalars(select(JournalEntry).where(
                JournalEntry.session_id == session_id).order_by(JournalEntry.seq)))

    def open_sessions(self) -> list[tuple[str, str]]:
        """(session id, state) of sessions whose last journalled state is still open."""
        with self._db() as s:
            last = (select(JournalEntry.session_id, func.max(JournalEntry.id).label("last"))
                    .where(JournalEntry.session_id.is_not(None))
                    .group_by(JournalEntry.session_id).subquery())
            rows = s.execute(select(JournalEntry.session_id, JournalEntry.dest)
                             .join(last, JournalEntry.id == last.c.last)).all()
        return [(sid, state) for sid, state in rows if state in SESSION_STATES]

    def refusals_unrecorded(self) -> list[tuple[str, int | None, str]]:
        """(session id, account id, reason) of sessions the journal ended as refused that
        billing has no outcome for: a crash between the refusal's row and its record."""
        with self._db() as s:
            rows = s.execute(select(JournalEntry.session_id, JournalEntry.data)
                             .outerjoin(CabinetSession,
                                        CabinetSession.id == JournalEntry.session_id)
                             .where(JournalEntry.session_id.is_not(None),
                                    JournalEntry.dest == "idle",
                                    JournalEntry.trigger.in_(("denied", "auth_timeout")),
                                    CabinetSession.outcome.is_(None))
                             .order_by(JournalEntry.id)).all()
        out = []
        for session_id, data in rows:
            fields = json.loads(data or "{}")
            out.append((session_id, fields.get("account_id"), str(fields.get("reason") or "")))
        return out

    def record_denied(self, session_id: str, account_id: int | None, reason: str, *,
                      cabinet_id: str, currency: str) -> None:
        """A refused session still ends with exactly one outcome: denied, with its reason."""
        with self._db.begin() as s:
            row = s.get(CabinetSession, session_id) or CabinetSession(
                id=session_id, cabinet_id=cabinet_id, currency=currency)
            if account_id is not None:
                row.account_id = account_id
            if row.outcome is None:          # billing may already have closed it (a decline)
                row.state = "closed"
                row.outcome = "denied"
                row.outcome_reason = reason[:500]
                row.closed_at = utcnow()
            s.add(row)

    def cabinet_state(self) -> str:
        """Where the cabinet itself stood when it stopped: `out_of_service` if a fault was
        never repaired or a restock never finished (an operator must look), else `idle`."""
        with self._db() as s:
            last = s.scalar(select(JournalEntry.dest).where(JournalEntry.session_id.is_(None))
                            .order_by(JournalEntry.id.desc()).limit(1))
        return "out_of_service" if last in ("out_of_service", "restock") else "idle"


class AlarmRow(Base):
    """An alarm the running cabinet raised between sessions (forced door, door left open,
    temperature, link lost, MCU reboot, uncommanded unlock): kept for review after it clears.
    Cabinet's own table on the shared metadata; it still needs its Alembic migration."""
    __tablename__ = "cabinet_alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cleared_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    review: Mapped[bool] = mapped_column(Boolean, default=False)


class Alarms:
    """The alarms table: raise one per kind (a kind already active is not raised twice),
    clear it when its cause is gone; `active()` is what keeps the cabinet out of service."""

    def __init__(self, db: sessionmaker, now: Any = utcnow):
        self._db = db
        self._now = now

    def raise_(self, kind: str, detail: str = "", *, review: bool = False) -> bool:
        """Record the alarm; False when one of this kind is already active."""
        with self._db.begin() as s:
            if s.scalar(select(AlarmRow.id).where(AlarmRow.kind == kind,
                                                  AlarmRow.cleared_at.is_(None))) is not None:
                return False
            s.add(AlarmRow(kind=kind, detail=detail[:2000], raised_at=self._now(),
                           review=review))
        return True

    def clear(self, kind: str, by: str) -> bool:
        """Clear the active alarm of `kind`; False when none was active."""
        with self._db.begin() as s:
            rows = list(s.scalars(select(AlarmRow).where(AlarmRow.kind == kind,
                                                         AlarmRow.cleared_at.is_(None))))
            for row in rows:
                row.cleared_at, row.cleared_by = self._now(), by[:64]
        return bool(rows)

    def active(self) -> list[str]:
        with self._db() as s:
            return sorted(s.scalars(select(AlarmRow.kind).where(AlarmRow.cleared_at.is_(None))))

    def all(self) -> list[AlarmRow]:
        with self._db() as s:
            return list(s.scalars(select(AlarmRow).order_by(AlarmRow.id)))


# The operator console keeps its tables (operators, logins, audit) on the same metadata: importing
# them here puts them in every migration check and `new_revision` that imports the journal.
import cabinet.console.tables  # noqa: E402,F401
import cabinet.fleet.tables  # noqa: E402,F401  (the fleet outbox, migration 0009)
import cabinet.enrolment  # noqa: E402,F401  (accounts-file ids of enrolled customers, 0010)
