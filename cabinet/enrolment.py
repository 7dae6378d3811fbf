"""Which customer of the accounts file is which account: the file's stable `id` (acc-obama),
not its name, which a person may correct.

`cabinet run` and the demo enrol the accounts file's customers at start (cabinet/app.py); an
`account_keys` row per enrolled customer is what makes a second start, or a demo run again on
the same folder, enrol nobody twice. The row is written after the account and its templates,
so a crash in between leaves an account with no key: the next start finds it by its name and
adopts it instead of enrolling it again.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from billing.base import Base, UTCDateTime, utcnow


class AccountKey(Base):
    __tablename__ = "account_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), unique=True)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def keys(db: sessionmaker) -> dict[str, int]:
    """Accounts-file id -> account id, of every customer enrolled so far."""
    with db() as s:
        return dict(s.execute(select(AccountKey.key, AccountKey.account_id)).all())


def remember(db: sessionmaker, key: str, account_id: int) -> None:
    """Record that the accounts file's `key` is account `account_id` (once)."""
    with db.begin() as s:
        if s.get(AccountKey, key) is None:
            s.add(AccountKey(key=key, account_id=account_id, enrolled_at=utcnow()))
