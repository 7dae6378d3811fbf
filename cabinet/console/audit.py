"""The console's audit trail: one row per action (who, what, on what, whether it worked, and
the outcome in words). Written in its own transaction after the action, refused ones too."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from cabinet.console.tables import ConsoleAudit


class Audit:
    def __init__(self, db: sessionmaker, now: Callable[[], float]):
        self._db = db
        self._now = now          # epoch seconds (the console's clock)

    def record(self, operator: str, action: str, target: str = "", *, ok: bool = True,
               detail: str = "") -> None:
        at = dt.datetime.fromtimestamp(self._now(), dt.timezone.utc)
        with self._db.begin() as s:
            s.add(ConsoleAudit(at=at, operator=operator[:64], action=action[:64],
                               target=str(target)[:200], ok=ok, detail=detail[:4000]))

    def rows(self, limit: int = 200, **where: Any) -> list[ConsoleAudit]:
        query = select(ConsoleAudit).order_by(ConsoleAudit.id.desc()).limit(limit)
        for key, value in where.items():
            query = query.where(getattr(ConsoleAudit, key) == value)
        with self._db() as s:
            return list(s.scalars(query))
