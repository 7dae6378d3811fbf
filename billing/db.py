"""The cabinet's database: one SQLAlchemy metadata, one engine, sessions from a factory.

SQLite is the default world (one file per cabinet); the controller's journal tables share
`Base.metadata` (declared in `billing.base`, re-exported here), so `init_db` creates them
together. Each SQLite connection gets WAL (readers never block the writer), foreign keys on
(SQLite leaves them off by default) and a busy timeout (a second writer waits instead of
failing at once). Nothing here is SQLite-only SQL:
a `postgresql://` URL gets the same tables, only the pragmas are skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from billing import models  # noqa: F401  (registers billing's tables on Base)
from billing.base import Base, UTCDateTime, utcnow

__all__ = ["BUSY_TIMEOUT_MS", "Base", "DatabaseUrlError", "UTCDateTime", "init_db",
           "make_engine", "session_factory", "utcnow"]

BUSY_TIMEOUT_MS = 5000


class DatabaseUrlError(ValueError):
    pass


def _url_of(url: str | Path) -> str:
    text = str(url)
    if "://" in text:
        return text
    if not text:
        raise DatabaseUrlError("database: empty path; give a file path or a URL such as "
                               "sqlite:///var/cabinet.db")
    path = Path(text).expanduser()
    if not path.parent.is_dir():
        raise DatabaseUrlError(f"database: the folder {path.parent} of {path} does not exist")
    return f"sqlite:///{path.resolve()}"


def make_engine(url: str | Path, *, echo: bool = False) -> Engine:
    """An engine for a file path or a SQLAlchemy URL, with SQLite set up for a cabinet."""
    text = _url_of(url)
    try:
        parsed = make_url(text)
    except ArgumentError as e:
        raise DatabaseUrlError(f"database: {text!r} is not a valid database URL ({e})") from e
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, echo=echo, pool_pre_ping=True)
        except NoSuchModuleError as e:
            raise DatabaseUrlError(f"database: {text!r} names no known database kind "
                                   f"({parsed.drivername!r}); use a file path, "
                                   f"sqlite:///PATH or postgresql://...") from e
        except ImportError as e:
            raise DatabaseUrlError(f"database: {text!r} needs the Python driver "
                                   f"{e.name or parsed.drivername!r}, which is not "
                                   f"installed") from e
    connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    if parsed.database in (None, "", ":memory:"):
        # One shared connection, or every checkout would see its own empty database.
        # For throwaway use only: money records in memory do not survive a restart.
        engine = create_engine(parsed, echo=echo, connect_args=connect_args,
                               poolclass=StaticPool)
    else:
        engine = create_engine(parsed, echo=echo, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker:
    """ORM sessions that keep loaded values after commit (results outlive their session)."""
    return sessionmaker(engine, expire_on_commit=False)


def init_db(engine: Engine) -> None:
    """Create every table registered on `Base` (billing's, and any imported by the caller)."""
    Base.metadata.create_all(engine)
