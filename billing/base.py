"""The one SQLAlchemy declarative base of the cabinet's database, and its UTC timestamp type.

Kept apart from `billing.db` (engines and sessions) so that the table modules import only
this: `billing.models` and the controller's journal register their tables on `Base`, and
`billing.db` imports the models to create them, with no module importing one that imports it
back.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC, also on SQLite (which stores naive text).

    Naive datetimes are refused when written: a local time slipping into the ledger would be
    off by hours without anyone noticing.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no timezone; use UTC "
                             f"(datetime.now(timezone.utc))")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base shared by billing's tables and the controller's journal."""
