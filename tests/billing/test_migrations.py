"""The schema is Alembic's: the models agree with the migrations, on SQLite and PostgreSQL, and
a database from before Alembic (plain tokens, file names in templates) is brought to head with
its secrets sealed."""
from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, Table, select, text

import billing.pin  # noqa: F401  (every module declaring tables, so the check sees them all)
import cabinet.inventory  # noqa: F401  (the controller's tables share the metadata)
import cabinet.journal  # noqa: F401
import cabinet.qr  # noqa: F401
from billing import Billing, init_db, make_engine, session_factory
from billing.base import Base
from billing.crypto import SecretBox, SecretError
from billing.db import BASELINE, head_revision, revision_of
from billing.models import Account, FaceTemplate
from billing_support import TEST_SECRETS

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def fresh_url(request, db_url: str):
    """An empty database with no tables at all (PostgreSQL is put back at head after)."""
    engine = make_engine(db_url)
    if engine.dialect.name == "sqlite":
        engine.dispose()
        path = db_url.removeprefix("sqlite:///")
        fresh = f"sqlite:///{path}.fresh"
        yield fresh
        return
    _wipe(engine)
    yield db_url
    _wipe(engine)
    init_db(engine, secrets=TEST_SECRETS)
    engine.dispose()


def _wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


def _diff(engine: Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)


def test_the_models_and_the_migrations_agree(fresh_url):
    engine = make_engine(fresh_url)
    init_db(engine, revision=head_revision())     # the migrations alone, no create_all
    assert _diff(engine) == []
    engine.dispose()


def test_init_db_brings_an_empty_database_to_head_and_then_does_nothing(fresh_url):
    engine = make_engine(fresh_url)
    assert revision_of(engine) is None
    init_db(engine)
    head = head_revision()
    assert head >= "0002" and revision_of(engine) == head
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    init_db(engine)
    assert versions == [(head,)] and revision_of(engine) == head
    engine.dispose()


def _pre_alembic(engine: Engine) -> None:
    """What a cabinet before Alembic left: the baseline tables, plain secrets, no version."""
    init_db(engine, revision=BASELINE)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO accounts (id, name, status, payment_token, currency, "
                          "created_at) VALUES (1, 'Alice', 'active', 'tok_visa_ok', 'EUR', "
                          ":t), (2, 'Bob', 'active', NULL, 'EUR', :t)"), {"t": T0})
        conn.execute(text("INSERT INTO face_templates (id, account_id, encoding, source, "
                          "created_at) VALUES (1, 1, :e, 'enrolment photo alice_1.jpg', :t), "
                          "(2, 1, :f, 'face camera', :t)"),
                     {"e": b"\x01" * 512, "f": b"\x02" * 512, "t": T0})


def test_a_database_from_before_alembic_is_stamped_upgraded_and_sealed(fresh_url):
    engine = make_engine(fresh_url)
    _pre_alembic(engine)
    assert revision_of(engine) is None
    init_db(engine, secrets=TEST_SECRETS)
    assert revision_of(engine) == head_revision()
    with engine.connect() as conn:
        token = conn.execute(text("SELECT payment_token FROM accounts WHERE id = 1")).scalar()
        rows = conn.execute(text("SELECT source, encoding FROM face_templates "
                                 "ORDER BY id")).all()
        raw = conn.execute(text("SELECT payment_token FROM accounts WHERE id = 2")).scalar()
    assert b"tok_visa_ok" not in bytes(token) and raw is None
    assert [r.source for r in rows] == ["photo", "camera"]            # no file names left
    billing = Billing(session_factory(engine), None, secrets=TEST_SECRETS)
    assert billing.face_templates() == [(1, b"\x01" * 512), (1, b"\x02" * 512)]
    assert TEST_SECRETS.open_text(token, account_id=1, purpose="payment_token") == "tok_visa_ok"
    billing.close_account(1)                                  # 'closed' is a status now
    with session_factory(engine)() as db:
        assert db.scalar(select(Account.status).where(Account.id == 1)) == "closed"
        assert db.scalar(select(FaceTemplate.source).where(FaceTemplate.id == 1)) == "photo"
    engine.dispose()


@pytest.fixture
def fresh_pg_url(pg_server_url: str):
    engine = make_engine(pg_server_url)
    _wipe(engine)
    yield pg_server_url
    _wipe(engine)
    init_db(engine, secrets=TEST_SECRETS)
    engine.dispose()


def test_plain_secrets_without_a_key_stop_the_migration_and_say_why(fresh_pg_url,
                                                                    monkeypatch):
    """On PostgreSQL (a SQLite file makes its own key beside it: next test)."""
    monkeypatch.delenv("CABINET_KEY_FILE", raising=False)
    engine = make_engine(fresh_pg_url)
    _pre_alembic(engine)
    with pytest.raises(SecretError, match="no key for its templates and tokens; set "
                                          "CABINET_KEY_FILE"):
        init_db(engine)
    # PostgreSQL's DDL is transactional: nothing of the failed upgrade stays
    assert revision_of(engine) is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT payment_token FROM accounts WHERE id = 1")
                            ).scalar() == "tok_visa_ok"
    engine.dispose()


def test_a_sqlite_file_from_before_alembic_is_sealed_with_the_key_beside_it(tmp_path,
                                                                             monkeypatch):
    monkeypatch.delenv("CABINET_KEY_FILE", raising=False)
    engine = make_engine(tmp_path / "old.sqlite")
    _pre_alembic(engine)
    init_db(engine)
    box = Billing(session_factory(engine), None).secrets
    assert box.origin == f"key file {tmp_path / 'old.sqlite.key'}"
    assert Billing(session_factory(engine), None).face_templates()[0] == (1, b"\x01" * 512)
    with pytest.raises(SecretError, match="does not open"):
        Billing(session_factory(engine), None,
                secrets=SecretBox(bytes(32))).face_templates()
    engine.dispose()


def test_a_table_no_migration_makes_yet_is_created_and_the_agreement_check_sees_it(tmp_path):
    table = Table("scratch_not_migrated", Base.metadata, Column("id", Integer, primary_key=True))
    try:
        engine = make_engine(tmp_path / "x.sqlite")
        init_db(engine)                            # its code runs in this checkout...
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM scratch_not_migrated")).scalar() == 0
        engine.dispose()
        engine = make_engine(tmp_path / "y.sqlite")
        init_db(engine, revision=head_revision())  # ...and the migrations alone lack it
        assert [d[0] for d in _diff(engine) if getattr(d[1], "name", "") == table.name] == \
            ["add_table"]
        engine.dispose()
    finally:
        Base.metadata.remove(table)


def test_a_failed_migration_on_sqlite_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("CABINET_KEY_FILE", str(tmp_path / "missing.key"))
    engine = make_engine(tmp_path / "old.sqlite")
    _pre_alembic(engine)
    with engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master "
                                      "ORDER BY name").all()
    with pytest.raises(SecretError, match=f"^key file {tmp_path / 'missing.key'}: not found"):
        init_db(engine)
    assert revision_of(engine) is None
    with engine.connect() as conn:                  # not even alembic_version was made
        assert conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master "
                                    "ORDER BY name").all() == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT payment_token FROM accounts WHERE id = 1")
                            ).scalar() == "tok_visa_ok"
        assert conn.execute(text("SELECT source FROM face_templates WHERE id = 1")
                            ).scalar() == "enrolment photo alice_1.jpg"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_two_processes_migrating_one_new_sqlite_file_at_once_both_succeed(tmp_path):
    import threading
    engines = [make_engine(tmp_path / "shared.sqlite") for _ in range(2)]
    start, errors = threading.Barrier(2), []

    def migrate(engine: Engine) -> None:
        start.wait(timeout=30)
        try:
            init_db(engine)
        except Exception as e:  # noqa: BLE001  (reported below, with its type)
            errors.append(e)

    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert [revision_of(e) for e in engines] == [head_revision()] * 2
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for e in engines:
        e.dispose()


def test_a_table_the_fallback_made_before_its_revision_is_kept_by_the_revision(tmp_path):
    """cabinet_alarms ran before 0004 existed: init_db made it directly; 0004 keeps it."""
    engine = make_engine(tmp_path / "early.sqlite")
    init_db(engine, revision="0003")
    Base.metadata.tables["cabinet_alarms"].create(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO cabinet_alarms (kind, detail, raised_at, review) "
                          "VALUES ('forced_door', '', '2026-03-01 12:00:00', 0)"))
    init_db(engine)
    assert revision_of(engine) == head_revision()
    assert _diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind FROM cabinet_alarms")).all() == [("forced_door",)]
    engine.dispose()
