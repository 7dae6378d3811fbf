"""Operators, their login sessions and the login throttle.

Passwords are kept only as argon2id hashes (argon2-cffi's defaults, RFC 9106's second
recommended profile). A login makes a server-side session: a random token in a cookie, its
sha256 in the database, valid `ttl_s` seconds after its last use (sliding) and never beyond
`max_age_s` after login; logout deletes it. `max_failures` failed logins for one name within
`window_s` lock that name out until the oldest of them leaves the window, whatever password
comes next. Time is the console's clock (epoch seconds), so tests move it instead of waiting.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from cabinet.console.tables import ConsoleLogin, ConsoleLoginFailure, ConsoleOperator
from cabinet.errors import CabinetError

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MIN_PASSWORD = 10


class OperatorError(CabinetError):
    """An operator could not be added (bad name, taken, password too short)."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise OperatorError(f"operator name {name!r}: use lower-case letters, digits, '_', '.' "
                            f"or '-', starting with a letter, at most 64 characters")
    return name


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Operators:
    def __init__(self, db: sessionmaker, *, hasher: PasswordHasher | None = None,
                 now: Callable[[], dt.datetime] | None = None):
        self._db = db
        self._hasher = hasher or PasswordHasher()
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._dummy = self._hasher.hash(secrets.token_hex(8))  # same work for unknown names

    def add(self, name: str, password: str) -> None:
        check_name(name)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise OperatorError(f"operator {name}: the password needs at least {MIN_PASSWORD} "
                                f"characters")
        try:
            with self._db.begin() as s:
                s.add(ConsoleOperator(name=name, password_hash=self._hasher.hash(password),
                                      created_at=self._now()))
        except IntegrityError:
            raise OperatorError(f"operator {name} exists already; pick another name") from None

    def names(self) -> list[str]:
        with self._db() as s:
            return list(s.scalars(select(ConsoleOperator.name).order_by(ConsoleOperator.name)))

    def verify(self, name: str, password: str) -> bool:
        with self._db() as s:
            row = s.scalar(select(ConsoleOperator).where(ConsoleOperator.name == name))
        stored = row.password_hash if row is not None else self._dummy
        try:
            ok = self._hasher.verify(stored, password if isinstance(password, str) else "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return ok and row is not None


@dataclasses.dataclass(frozen=True)
class LoginSession:
    operator: str
    csrf: str
    expires_at: float


class Sessions:
    def __init__(self, db: sessionmaker, now: Callable[[], float], *, ttl_s: float = 900.0,
                 max_age_s: float = 12 * 3600.0):
        if ttl_s <= 0 or max_age_s < ttl_s:
            raise CabinetError(f"console sessions: ttl_s ({ttl_s}) must be above 0 and at most "
                               f"max_age_s ({max_age_s})")
        self._db, self._now, self.ttl_s, self.max_age_s = db, now, ttl_s, max_age_s

    def create(self, operator: str) -> tuple[str, LoginSession]:
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._now()
        with self._db.begin() as s:
            s.execute(delete(ConsoleLogin).where(ConsoleLogin.expires_at <= now))
            s.add(ConsoleLogin(token_sha256=_sha(token), operator=operator, csrf=csrf,
                               created_at=now, expires_at=now + self.ttl_s))
        return token, LoginSession(operator, csrf, now + self.ttl_s)

    def get(self, token: str | None) -> LoginSession | None:
        """The live session of this token (its expiry moved on), or None."""
        if not token:
            return None
        now = self._now()
        with self._db.begin() as s:
            row = s.get(ConsoleLogin, _sha(token))
            if row is None:
                return None
            if now >= row.expires_at:
                s.delete(row)
                return None
            row.expires_at = min(now + self.ttl_s, row.created_at + self.max_age_s)
            return LoginSession(row.operator, row.csrf, row.expires_at)

    def end(self, token: str | None) -> None:
        if token:
            with self._db.begin() as s:
                s.execute(delete(ConsoleLogin).where(ConsoleLogin.token_sha256 == _sha(token)))


class Throttle:
    def __init__(self, db: sessionmaker, now: Callable[[], float], *, max_failures: int = 5,
                 window_s: float = 300.0):
        self._db, self._now = db, now
        self.max_failures, self.window_s = max_failures, window_s

    def locked_for(self, name: str) -> float:
        """Seconds until `name` may try again (0: it may now)."""
        now = self._now()
        with self._db() as s:
            times = sorted(s.scalars(select(ConsoleLoginFailure.at).where(
                ConsoleLoginFailure.name == name[:64],
                ConsoleLoginFailure.at > now - self.window_s)))
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window_s - now)

    def failed(self, name: str) -> None:
        now = self._now()
        with self._db.begin() as s:
            s.execute(delete(ConsoleLoginFailure).where(
                ConsoleLoginFailure.at <= now - self.window_s))
            s.add(ConsoleLoginFailure(name=name[:64], at=now))

    def succeeded(self, name: str) -> None:
        with self._db.begin() as s:
            s.execute(delete(ConsoleLoginFailure).where(ConsoleLoginFailure.name == name[:64]))

    def failures(self, name: str) -> int:
        with self._db() as s:
            return int(s.scalar(select(func.count()).where(
                ConsoleLoginFailure.name == name[:64])) or 0)
