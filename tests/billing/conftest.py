"""Fixtures for billing: a real database and the real sandbox gateway on loopback.

Every test that takes `db_url` (and so `make_billing`, `billing`, `book`) runs twice: on a
SQLite file in tmp_path and on the PostgreSQL server scripts/services.sh started (its URL in
.cache/pg.url; CABINET_TEST_PG_URL overrides). Without a server the PostgreSQL runs skip
through `pg_server_url`, except in CI (CI=true), where they fail and say how to start one.
The PostgreSQL database is migrated from scratch once per run and emptied before each test
(TRUNCATE ... RESTART IDENTITY, so ids start at 1 as on a fresh SQLite file).

Clients never really sleep between retries here (`sleep` records the waits instead), so the
retry tests run in milliseconds while still going through the real server and sockets. `book`
reads the database file on its own engine, as an auditor would: what was committed, whatever
the Billing under test holds in memory.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from billing import Billing, GatewayClient, init_db, make_engine, session_factory
from billing.gateway_server import SandboxGateway
from billing.models import LedgerEntry

from billing_support import HOLD, PG_URL_ENV, TEST_SECRETS, _no_server

ROOT = Path(__file__).resolve().parents[2]
PG_URL_FILE = ROOT / ".cache" / "pg.url"
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class FixedClock:
    """UTC time that moves only when a test says so (Billing's `clock`)."""

    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Book:
    """Read-only view of the cabinet database: ledger lines, rows and counts."""

    def __init__(self, db_url: str | Path):
        self._engine = make_engine(db_url)
        self._factory = session_factory(self._engine)

    def ledger(self, session_id: str | None = None) -> list[tuple[str, int]]:
        """(kind, amount) of every ledger entry, of one session or of all, in order."""
        query = select(LedgerEntry.kind, LedgerEntry.amount).order_by(LedgerEntry.id)
        if session_id is not None:
            query = query.where(LedgerEntry.session_id == session_id)
        with self._factory() as db:
            return [(k, a) for k, a in db.execute(query)]

    def count(self, model: type) -> int:
        with self._factory() as db:
            return db.scalar(select(func.count()).select_from(model))

    def one(self, model: type, **where: Any) -> Any:
        """The single row of `model` matching `where` (fails if there are none or several)."""
        with self._factory() as db:
            return db.scalars(select(model).filter_by(**where)).one()

    def all(self, model: type, **where: Any) -> list[Any]:
        with self._factory() as db:
            return list(db.scalars(select(model).filter_by(**where).order_by(model.id)))

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture(scope="session")
def sandbox_server():
    """One sandbox gateway server for the whole run (starting one costs ~50 ms)."""
    gw = SandboxGateway()
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def gateway(sandbox_server: SandboxGateway) -> SandboxGateway:
    """The sandbox gateway as new: no authorisations, keys, faults or requests seen."""
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file with every table and trigger and no rows, made once per run."""
    path = tmp_path_factory.mktemp("template") / "cabinet.db"
    engine = make_engine(path)
    init_db(engine)
    engine.dispose()  # checkpoints the WAL: the one file holds it all
    return path


@pytest.fixture
def db_path(tmp_path: Path, empty_db: Path) -> Path:
    """This test's own SQLite file, a copy of the empty one (copying beats creating)."""
    path = tmp_path / "cabinet.db"
    shutil.copyfile(empty_db, path)
    return path


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """This run's own PostgreSQL database, made on the test server and migrated to head.

    Its name carries the process id (cabinet_t_<pid>), so runs side by side (several
    engineers, several workers) never empty each other's tables; databases of runs that
    died are dropped first, this one at the end."""
    base = os.environ.get(PG_URL_ENV) or (
        PG_URL_FILE.read_text().strip() if PG_URL_FILE.is_file() else "")
    if not base:
        _no_server(f"no server URL ({PG_URL_FILE} is missing and {PG_URL_ENV} is unset)")
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    name = f"cabinet_t_{os.getpid()}"
    try:
        with admin.connect() as conn:
            for (old,) in conn.execute(text("SELECT datname FROM pg_database WHERE datname "
                                            "LIKE 'cabinet\\_t\\_%'")).all():
                pid = int(old.rsplit("_", 1)[1])
                if pid == os.getpid() or not _alive(pid):
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        _no_server(f"{base} does not answer ({str(e.orig).strip().splitlines()[0]})")
    url = make_engine(base).url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    init_db(engine, secrets=TEST_SECRETS)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _empty_postgresql(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """This test's own empty database at head: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('db_path')}"
    url = request.getfixturevalue("pg_server_url")
    _empty_postgresql(url)
    return url


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def make_billing(db_url: str, gateway: SandboxGateway, clock: FixedClock):
    """Builds a Billing (a 'process') on the same DB file; each call is a fresh engine."""
    engines = []

    def build(client_cls: type[GatewayClient] = GatewayClient, *,
              sleeps: list | None = None) -> Billing:
        engine = make_engine(db_url)
        init_db(engine)
        engines.append(engine)
        sleep: Callable[[float], None] = sleeps.append if sleeps is not None else (lambda s: None)
        client = client_cls(gateway.base_url, api_key=gateway.api_key, timeout_s=1.0,
                            max_retries=3, sleep=sleep,
                            jitter=lambda: 1.0)
        return Billing(session_factory(engine), client, hold_amount=HOLD, currency="EUR",
                       cabinet_id="cab-test", clock=clock, secrets=TEST_SECRETS,
                       outbox_jitter=lambda: 1.0)

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def billing(make_billing) -> Billing:
    return make_billing()


@pytest.fixture
def book(billing: Billing, db_url: str):
    """The database as committed (depends on `billing`, which creates the tables)."""
    view = Book(db_url)
    yield view
    view.close()
