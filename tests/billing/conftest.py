"""Fixtures for billing: a real SQLite file in tmp_path and the real sandbox gateway on loopback.

Clients never really sleep between retries here (`sleep` records the waits instead), so the
retry tests run in milliseconds while still going through the real server and sockets. `book`
reads the database file on its own engine, as an auditor would: what was committed, whatever
the Billing under test holds in memory.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from billing import Billing, GatewayClient, init_db, make_engine, session_factory
from billing.gateway_server import SandboxGateway
from billing.models import LedgerEntry

HOLD = 2000  # EUR 20.00
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

    def __init__(self, db_path: Path):
        self._engine = make_engine(db_path)
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
    """This test's own database file, a copy of the empty one (copying beats creating)."""
    path = tmp_path / "cabinet.db"
    shutil.copyfile(empty_db, path)
    return path


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def make_billing(db_path: Path, gateway: SandboxGateway, clock: FixedClock):
    """Builds a Billing (a 'process') on the same DB file; each call is a fresh engine."""
    engines = []

    def build(client_cls: type[GatewayClient] = GatewayClient, *,
              sleeps: list | None = None) -> Billing:
        engine = make_engine(db_path)
        init_db(engine)
        engines.append(engine)
        sleep: Callable[[float], None] = sleeps.append if sleeps is not None else (lambda s: None)
        client = client_cls(gateway.base_url, timeout_s=1.0, max_retries=3, sleep=sleep,
                            jitter=lambda: 1.0)
        return Billing(session_factory(engine), client, hold_amount=HOLD, currency="EUR",
                       cabinet_id="cab-test", clock=clock)

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def billing(make_billing) -> Billing:
    return make_billing()


@pytest.fixture
def book(billing: Billing, db_path: Path):
    """The database as committed (depends on `billing`, which creates the tables)."""
    view = Book(db_path)
    yield view
    view.close()
