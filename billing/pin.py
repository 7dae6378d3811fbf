"""A customer's PIN, the second factor when the face match is uncertain (vision/identity.py).

Only a salted scrypt hash is kept (hashlib.scrypt: memory-hard, in the standard library), one
per account, in `account_pins` (migration 0007). `cabinet accounts set-pin ID` sets it; the
controller checks a PIN typed on the kiosk against the accounts the face was near
(cabinet/controller.py). A PIN is exactly PIN_DIGITS digits (the kiosk's pad).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from typing import Callable

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from billing.base import Base, UTCDateTime, utcnow
from billing.errors import BillingError, UnknownAccount
from billing.models import Account

PIN_DIGITS = 4
_N, _R, _P, _LEN = 2 ** 14, 8, 1, 32           # scrypt cost: ~16 MiB, tens of ms a check


class AccountPin(Base):
    __tablename__ = "account_pins"

    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"), primary_key=True)
    pin_hash: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


def check_format(pin: object, where: str = "PIN") -> str:
    if not isinstance(pin, str) or len(pin) != PIN_DIGITS or not pin.isascii() \
            or not pin.isdigit():
        raise BillingError(f"{where}: a PIN is exactly {PIN_DIGITS} digits 0-9")
    return pin


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """'scrypt$N$r$p$salt$hash' (hex) of a well-formed PIN."""
    check_format(pin)
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_hash(stored: str, pin: str) -> bool:
    """Whether `pin` is the PIN `stored` was made from (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(bytes.fromhex(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def set_pin(sessions: Callable[[], Session], account_id: int, pin: str) -> None:
    """Set (or replace) the account's PIN."""
    check_format(pin, f"set-pin {account_id}")
    with sessions() as db, db.begin():
        if db.get(Account, account_id) is None:
            raise UnknownAccount(f"set-pin: no account {account_id} (see `cabinet accounts list`)")
        row = db.get(AccountPin, account_id)
        if row is None:
            db.add(AccountPin(account_id=account_id, pin_hash=hash_pin(pin), set_at=utcnow()))
        else:
            row.pin_hash, row.set_at = hash_pin(pin), utcnow()


def has_pin(sessions: Callable[[], Session], account_id: int) -> bool:
    with sessions() as db:
        return db.get(AccountPin, account_id) is not None


def check_pin(sessions: Callable[[], Session], account_id: int, pin: str) -> bool:
    """Whether `pin` is the account's PIN; False when it has none or the PIN is malformed."""
    try:
        check_format(pin)
    except BillingError:
        return False
    with sessions() as db:
        row = db.get(AccountPin, account_id)
        stored = None if row is None else row.pin_hash
    return stored is not None and verify_hash(stored, pin)


class Pins:
    """The PINs of one database, as the controller asks: has(account), check(account, pin)."""

    def __init__(self, sessions: Callable[[], Session]):
        self._sessions = sessions

    def has(self, account_id: int) -> bool:
        return has_pin(self._sessions, account_id)

    def check(self, account_id: int, pin: str) -> bool:
        return check_pin(self._sessions, account_id, pin)
