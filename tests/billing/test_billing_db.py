"""The database: SQLite pragmas, UTC timestamps, and a ledger that refuses to change."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from billing.db import DatabaseUrlError, init_db, make_engine, session_factory
from billing.models import Account, LedgerEntry, LedgerIsAppendOnly


@pytest.fixture
def factory(db_path):
    engine = make_engine(db_path)
    init_db(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def entry_id(factory):
    with factory.begin() as db:
        account = Account(name="Alice", currency="EUR")
        db.add(account)
        db.flush()
        entry = LedgerEntry(account_id=account.id, kind="capture", amount=520, currency="EUR")
        db.add(entry)
        db.flush()
        return entry.id


def test_sqlite_gets_wal_foreign_keys_and_a_busy_timeout(factory):
    with factory() as db:
        conn = db.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_a_url_works_as_well_as_a_path(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    init_db(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_a_path_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseUrlError, match="does not exist"):
        make_engine(tmp_path / "nope" / "cabinet.db")


def test_foreign_keys_are_enforced(factory):
    with pytest.raises(IntegrityError):
        with factory.begin() as db:
            db.add(LedgerEntry(account_id=999, kind="hold", amount=1, currency="EUR"))


def test_timestamps_come_back_as_utc_and_naive_ones_are_refused(factory, entry_id):
    with factory() as db:
        at = db.get(LedgerEntry, entry_id).at
    assert at.tzinfo is not None and at.utcoffset() == dt.timedelta(0)
    with pytest.raises(StatementError, match="no timezone"):
        with factory.begin() as db:
            db.add(Account(name="Bob", currency="EUR", created_at=dt.datetime(2026, 1, 1)))


def test_the_ledger_refuses_an_orm_update(factory, entry_id):
    with factory() as db:
        db.get(LedgerEntry, entry_id).amount = 1
        with pytest.raises(LedgerIsAppendOnly, match="append-only"):
            db.commit()


def test_the_ledger_refuses_an_orm_delete(factory, entry_id):
    with factory() as db:
        db.delete(db.get(LedgerEntry, entry_id))
        with pytest.raises(LedgerIsAppendOnly):
            db.commit()


@pytest.mark.parametrize("statement", [update(LedgerEntry).values(amount=0),
                                       delete(LedgerEntry)])
def test_the_ledger_refuses_bulk_statements(factory, entry_id, statement):
    with factory() as db:
        with pytest.raises(LedgerIsAppendOnly):
            db.execute(statement)


@pytest.mark.parametrize("sql", ["UPDATE ledger_entries SET amount = 0",
                                 "DELETE FROM ledger_entries"])
def test_sqlite_triggers_refuse_hand_written_sql(factory, entry_id, sql):
    with factory() as db:
        with pytest.raises(IntegrityError, match="append-only"):
            db.connection().execute(text(sql))
    with factory() as db:
        assert db.scalar(select(LedgerEntry.amount).where(LedgerEntry.id == entry_id)) == 520


def test_the_check_constraints_refuse_unknown_kinds(factory):
    with pytest.raises(IntegrityError):
        with factory.begin() as db:
            db.add(Account(name="Eve", currency="EUR", status="suspended"))
