"""The database: SQLite pragmas, UTC timestamps, and a ledger that refuses to change.

Tests taking `factory` run on SQLite and on PostgreSQL (tests/billing/conftest.py)."""
from __future__ import annotations

import datetime as dt
import importlib.util

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from billing.db import (BUSY_TIMEOUT_MS, DatabaseUrlError, init_db, make_engine,
                        session_factory)
from billing.models import Account, CabinetSession, LedgerEntry, LedgerIsAppendOnly, LineItem
from billing_support import _no_server


@pytest.fixture
def factory(db_url):
    engine = make_engine(db_url)
    init_db(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def sqlite_factory(db_path):
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


def test_sqlite_gets_wal_foreign_keys_and_a_busy_timeout(sqlite_factory):
    with sqlite_factory() as db:
        conn = db.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS == 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_a_url_works_as_well_as_a_path(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    init_db(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        tables = {r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    engine.dispose()
    assert {"accounts", "cabinet_sessions", "holds", "charges", "line_items", "refunds",
            "ledger_entries", "face_templates"} <= tables
    assert (tmp_path / "x.db").is_file()


def test_init_db_creates_the_append_only_triggers(factory):
    with factory() as db:
        conn = db.connection()
        query = ("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                 if conn.dialect.name == "sqlite" else
                 "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        triggers = {r[0] for r in conn.exec_driver_sql(query)}
    assert triggers == {"ledger_entries_no_update", "ledger_entries_no_delete"}


def test_an_in_memory_database_is_one_database_for_every_session():
    factory = session_factory(engine := make_engine("sqlite://"))
    init_db(engine)
    with factory.begin() as db:
        db.add(Account(name="Alice", currency="EUR"))
    with factory() as db:
        assert db.scalars(select(Account.name)).all() == ["Alice"]
    engine.dispose()


def test_an_empty_path_is_a_clear_error():
    with pytest.raises(DatabaseUrlError, match="database: empty path; give a file path or a "
                                               "URL such as sqlite:///var/cabinet.db"):
        make_engine("")


def test_a_malformed_url_is_a_clear_error():
    with pytest.raises(DatabaseUrlError, match="database: 'a b://x' is not a valid database "
                                               "URL"):
        make_engine("a b://x")


def test_an_unknown_kind_of_database_is_a_clear_error():
    with pytest.raises(DatabaseUrlError, match="database: 'nope://host/db' names no known "
                                               "database kind \\('nope'\\)"):
        make_engine("nope://host/db")


def test_a_missing_database_driver_is_a_clear_error():
    with pytest.raises(DatabaseUrlError, match="database: 'postgresql\\+nodriver_xyz://h/db' "
                                               "names no known database kind"):
        make_engine("postgresql+nodriver_xyz://h/db")


def test_a_path_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatabaseUrlError, match=f"database: the folder {tmp_path / 'nope'} of "
                                               f".* does not exist"):
        make_engine(tmp_path / "nope" / "cabinet.db")


def test_foreign_keys_are_enforced(factory):
    with pytest.raises(IntegrityError):
        with factory.begin() as db:
            db.add(LedgerEntry(account_id=999, kind="hold", amount=1, currency="EUR"))


def test_timestamps_come_back_as_utc_and_naive_ones_are_refused(factory, entry_id):
    with factory() as db:
        at = db.get(LedgerEntry, entry_id).at
    assert at.tzinfo is not None and at.utcoffset() == dt.timedelta(0)
    with factory.begin() as db:
        db.add(Account(name="Ann", currency="EUR", created_at=dt.datetime(
            2026, 1, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))))
    with factory() as db:
        created = db.scalars(select(Account.created_at).where(Account.name == "Ann")).one()
    assert created == dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.timezone.utc)
    assert created.utcoffset() == dt.timedelta(0)
    with pytest.raises(StatementError, match="no timezone"):
        with factory.begin() as db:
            db.add(Account(name="Bob", currency="EUR", created_at=dt.datetime(2026, 1, 1)))


def test_the_ledger_refuses_an_orm_update(factory, entry_id):
    with factory() as db:
        db.get(LedgerEntry, entry_id).amount = 1
        with pytest.raises(LedgerIsAppendOnly, match=f"ledger: update of entry {entry_id} "
                                                     f"refused; the ledger is append-only"):
            db.commit()
    with factory() as db:
        assert db.get(LedgerEntry, entry_id).amount == 520


def test_the_ledger_refuses_an_orm_delete(factory, entry_id):
    with factory() as db:
        db.delete(db.get(LedgerEntry, entry_id))
        with pytest.raises(LedgerIsAppendOnly, match=f"ledger: delete of entry {entry_id} "
                                                     f"refused"):
            db.commit()
    with factory() as db:
        assert db.get(LedgerEntry, entry_id) is not None


@pytest.mark.parametrize("statement, words", [(update(LedgerEntry).values(amount=0),
                                                "bulk UPDATE"),
                                               (delete(LedgerEntry), "bulk DELETE")])
def test_the_ledger_refuses_bulk_statements(factory, entry_id, statement, words):
    with factory() as db:
        with pytest.raises(LedgerIsAppendOnly, match=f"ledger: {words} refused"):
            db.execute(statement)
    with factory() as db:
        assert db.scalar(select(LedgerEntry.amount).where(LedgerEntry.id == entry_id)) == 520


def test_bulk_statements_on_other_tables_are_allowed(factory, entry_id):
    with factory.begin() as db:
        db.execute(update(Account).values(name="Alicia"))
    with factory() as db:
        assert db.scalars(select(Account.name)).all() == ["Alicia"]


@pytest.mark.parametrize("sql", ["UPDATE ledger_entries SET amount = 0",
                                 "DELETE FROM ledger_entries"])
def test_database_triggers_refuse_hand_written_sql(factory, entry_id, sql):
    with factory() as db:
        with pytest.raises(IntegrityError, match=f"ledger is append-only: {sql.split()[0]} refused"):
            db.connection().execute(text(sql))
    with factory() as db:
        assert db.scalar(select(LedgerEntry.amount).where(LedgerEntry.id == entry_id)) == 520


@pytest.mark.parametrize("make_row, constraint", [
    (lambda a: Account(name="Eve", currency="EUR", status="suspended"), "ck_accounts_status"),
    (lambda a: LedgerEntry(account_id=a, kind="bonus", amount=1, currency="EUR"),
     "ck_ledger_kind"),
    (lambda a: CabinetSession(id="s-9", account_id=a, cabinet_id="c", currency="EUR",
                              outcome="maybe"), "ck_sessions_outcome"),
])
def test_the_check_constraints_refuse_unknown_kinds(factory, entry_id, make_row, constraint):
    with factory() as db:
        account_id = db.scalar(select(Account.id))
    with pytest.raises(IntegrityError, match=constraint):
        with factory.begin() as db:
            db.add(make_row(account_id))


@pytest.mark.parametrize("qty, unit_price, constraint", [(0, 100, "ck_line_items_qty"),
                                                         (1, -1, "ck_line_items_price")])
def test_line_items_refuse_zero_quantities_and_negative_prices(factory, qty, unit_price,
                                                               constraint):
    with factory.begin() as db:
        account = Account(name="Al", currency="EUR")
        db.add(account)
        db.flush()
        db.add(CabinetSession(id="s-1", account_id=account.id, cabinet_id="c", currency="EUR"))
    with pytest.raises(IntegrityError, match=constraint):
        with factory.begin() as db:
            db.add(LineItem(session_id="s-1", position=0, sku="x", name="x", qty=qty,
                            unit_price=unit_price, amount=qty * unit_price, currency="EUR"))


def test_a_database_whose_driver_is_not_installed_is_a_clear_error():
    assert importlib.util.find_spec("pymssql") is None, "this test needs pymssql NOT installed"
    with pytest.raises(DatabaseUrlError, match="database: 'mssql\\+pymssql://u@h/db' needs the "
                                               "Python driver 'pymssql', which is not "
                                               "installed"):
        make_engine("mssql+pymssql://u@h/db")


def test_a_plain_postgresql_url_uses_psycopg_3():
    engine = make_engine("postgresql://cabinet@127.0.0.1:1/cabinet")    # connects lazily
    assert (engine.url.drivername, engine.dialect.driver) == ("postgresql+psycopg", "psycopg")
    engine.dispose()


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception),
                                         ("", pytest.skip.Exception)])
def test_a_missing_postgresql_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="^PostgreSQL: no server here. Start one with `bash "
                                      "scripts/services.sh` \\(make test does\\), or set "
                                      "CABINET_TEST_PG_URL"):
        _no_server("no server here")
