"""The cabinet's database: one SQLAlchemy metadata, one engine, sessions from a factory.

SQLite is the default world (one file per cabinet); PostgreSQL comes by URL
(`postgresql://...` or `postgresql+psycopg://...`, both through psycopg 3). The controller's
journal tables share `Base.metadata` (declared in `billing.base`, re-exported here).

The schema is Alembic's (billing/migrations): `init_db` runs `upgrade head`, so a database
made by an older version of the cabinet is brought up to date, and one made before Alembic
(tables, no `alembic_version`) is stamped as the baseline first. Each SQLite connection gets
WAL (readers never block the writer), foreign keys on (SQLite leaves them off by default) and
a busy timeout (a second writer waits instead of failing at once).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from billing import models  # noqa: F401  (registers billing's tables on Base)
from billing.base import Base, UTCDateTime, utcnow

__all__ = ["BUSY_TIMEOUT_MS", "Base", "DatabaseUrlError", "UTCDateTime", "head_revision",
           "init_db", "make_engine", "new_revision", "revision_of", "session_factory", "utcnow"]

BUSY_TIMEOUT_MS = 5000
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"           # the schema as it was before Alembic (create_all)
PG_MIGRATION_LOCK = 0x0CAB1E7  # pg_advisory_xact_lock key: one process migrates at a time


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
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")   # psycopg 3, not psycopg2
    if parsed.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401  (the driver; a clear error beats SQLAlchemy's)
        except ImportError as e:
            raise DatabaseUrlError(f"database: {text!r} needs psycopg (pip install "
                                   f"'psycopg[binary]'), which is not installed") from e
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


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision in billing/migrations/versions."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def revision_of(engine: Engine) -> str | None:
    """The revision the database is at (None: not under Alembic, or empty)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def init_db(engine: Engine, *, revision: str = "head", secrets: Any = None) -> None:
    """Bring the database to `revision` (default: head) with Alembic's migrations.

    `secrets` (a billing.crypto.SecretBox) seals values an older cabinet stored in plain
    text; without it a migration that needs the key asks `key_for_database`. Cheap when the
    database is already there (two catalogue queries). On PostgreSQL the migration holds an
    advisory lock, so two processes starting at once migrate once.

    A table declared on `Base` that no migration makes yet (a model added in this checkout)
    is created directly after the upgrade, so its code runs; tests/billing/test_migrations.py
    fails until its revision is written."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        missing = set(Base.metadata.tables) - set(inspect(conn).get_table_names())
    if revision == "head" and current == head_revision() and not missing:
        return
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a table by copying it (Alembic's batch mode); dropping the old
            # copy must not trip the foreign keys pointing at it. Only outside a transaction
            # does this pragma take effect; the keys are checked once the migration is done.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if sqlite:
                    # pysqlite runs DDL outside any transaction unless one is open: open it
                    # here, so a failed or interrupted migration leaves the file as it was,
                    # and a second process starting at once waits for the first.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                _upgrade(conn, revision, secrets)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise DatabaseUrlError(f"database: the migration left rows whose "
                                               f"foreign keys point nowhere: {broken[:5]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def _upgrade(conn: Connection, revision: str, secrets: Any) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
    config = _alembic_config(conn)
    config.attributes["secrets"] = secrets
    if MigrationContext.configure(conn).get_current_revision() is None and \
            inspect(conn).has_table("accounts"):
        command.stamp(config, BASELINE)       # made by create_all before Alembic
    command.upgrade(config, revision)
    if revision == "head":
        Base.metadata.create_all(conn, checkfirst=True)


def new_revision(message: str) -> Path:
    """Autogenerate a migration from the models' difference to head (for developers).

    Import every module that declares tables first (cabinet.journal, cabinet.inventory), or
    their tables would be dropped by the new revision."""
    engine = make_engine("sqlite://")
    if head_revision() is not None:
        init_db(engine, revision=head_revision())   # the migrations alone, no create_all
    with engine.begin() as conn:
        config = _alembic_config(conn)
        number = len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1
        slug = "_".join(message.lower().split())[:40]
        script = command.revision(config, message=message, autogenerate=True,
                                  rev_id=f"{number:04d}")
    engine.dispose()
    head_revision.cache_clear()
    path = Path(script.path)
    return path.rename(path.with_name(f"{number:04d}_{slug}.py"))
