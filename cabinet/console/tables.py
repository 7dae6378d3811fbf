"""The console's own tables, on the cabinet's shared metadata (billing.base.Base), so the one
SQLite file holds them and Alembic migrates them (billing/migrations, revision 0005).

Login sessions keep only the sha256 of their token: a copy of the database lets nobody in."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from billing.base import Base, UTCDateTime


class ConsoleOperator(Base):
    """Someone allowed into the console: a name and an argon2id hash of the password."""
    __tablename__ = "console_operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ConsoleLogin(Base):
    """One server-side login session; it ends at logout or `ttl` seconds after its last use
    (times are the console clock's epoch seconds)."""
    __tablename__ = "console_logins"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class ConsoleLoginFailure(Base):
    """A failed login, by the name tried: too many in the window lock that name out."""
    __tablename__ = "console_login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float)


class ConsoleAudit(Base):
    """Every action an operator took (and every login), refused ones too."""
    __tablename__ = "console_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    operator: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(200), default="")
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    detail: Mapped[str] = mapped_column(Text, default="")
