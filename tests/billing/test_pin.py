"""The customer's PIN (billing/pin.py): only a salted scrypt hash is kept, made by migration
0007's table, and checked exactly."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

import billing.pin as pins
import cabinet.inventory  # noqa: F401  (the controller's tables share the metadata)
import cabinet.journal  # noqa: F401
from billing import init_db, make_engine, session_factory
from billing.base import Base
from billing.db import head_revision
from billing.errors import BillingError, UnknownAccount
from billing.models import Account


@pytest.fixture
def db(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pins.sqlite'}")
    init_db(engine, revision=head_revision())        # the migrations alone
    sessions = session_factory(engine)
    with sessions() as s, s.begin():
        s.add_all([Account(id=1, name="Ada Lovelace", currency="EUR"),
                   Account(id=2, name="Alan Turing", currency="EUR")])
    yield engine, sessions
    engine.dispose()


def test_migration_0007_makes_the_table_the_model_describes(db):
    engine, _ = db
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    assert [d for d in diff if "account_pins" in repr(d)] == []


def test_a_pin_is_kept_as_a_salted_hash_and_checked_exactly(db):
    _, sessions = db
    assert not pins.has_pin(sessions, 1)
    assert not pins.check_pin(sessions, 1, "1234")          # no PIN set: never a match
    pins.set_pin(sessions, 1, "1234")
    pins.set_pin(sessions, 2, "1234")
    with sessions() as s:
        stored = {r.account_id: r.pin_hash for r in s.scalars(select(pins.AccountPin))}
    assert "1234" not in stored[1] and stored[1].startswith("scrypt$")
    assert stored[1] != stored[2]                          # a salt of its own
    assert pins.check_pin(sessions, 1, "1234")
    assert not pins.check_pin(sessions, 1, "1235")
    assert not pins.check_pin(sessions, 1, "12345")
    pins.set_pin(sessions, 1, "9876")                      # replaced
    assert pins.check_pin(sessions, 1, "9876") and not pins.check_pin(sessions, 1, "1234")


def test_a_malformed_pin_or_an_unknown_account_is_refused_naming_it(db):
    _, sessions = db
    for bad in ("123", "12345", "12a4", "１２３４", 1234):
        with pytest.raises(BillingError, match="exactly 4 digits"):
            pins.set_pin(sessions, 1, bad)
    with pytest.raises(UnknownAccount, match="no account 99"):
        pins.set_pin(sessions, 99, "1234")


def test_a_damaged_stored_hash_never_matches():
    assert not pins.verify_hash("scrypt$bad", "1234")
    assert not pins.verify_hash("md5$1$1$1$00$00", "1234")
    assert pins.verify_hash(pins.hash_pin("4321"), "4321")


def test_cabinet_accounts_set_pin_sets_it_and_refuses_a_bad_one(db, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    engine, sessions = db
    url = str(engine.url)
    root = Path(__file__).resolve().parents[2]

    def set_pin(account: str, pin: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cabinet.cli", "accounts", "set-pin",
                               account, "--stdin", "--db", url], input=pin + "\n", cwd=root,
                              capture_output=True, text=True, timeout=120)

    done = set_pin("2", "5555")
    assert (done.returncode, done.stdout.strip()) == (0, "PIN set for account 2"), done.stderr
    assert pins.check_pin(sessions, 2, "5555")
    bad = set_pin("2", "55")
    assert bad.returncode == 1 and "exactly 4 digits" in bad.stderr
    assert pins.check_pin(sessions, 2, "5555")              # unchanged
    unknown = set_pin("42", "1234")
    assert unknown.returncode != 0 and "no account 42" in unknown.stderr
