"""Secrets at rest: sealing, key files, templates and tokens in the database, and erasure.

The erase tests read the SQLite file's bytes: after `cabinet accounts erase ID` neither the
template's ciphertext nor the token's is anywhere in the database or its WAL. On PostgreSQL
the rows are gone. The ledger of the erased account stays.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, select

from billing import Billing, GatewayClient, init_db, make_engine, session_factory
from billing.crypto import (KEY_FILE_ENV, SecretBox, SecretError, key_for_database,
                            load_key_file, write_key_file)
from billing.errors import BillingError, UnknownAccount
from billing.models import Account, FaceTemplate, LedgerEntry
from cabinet import accounts
from cabinet.cli import main as cabinet_main
from billing_support import TEST_SECRETS
from vision.faces import encoding_to_bytes

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ENCODING = np.linspace(-0.25, 0.25, 128, dtype=np.float32)
ENC_BYTES = encoding_to_bytes(ENCODING)
TOKEN = "tok_visa_ok"


# --- sealing ---------------------------------------------------------------------------------
def test_a_sealed_value_opens_for_its_account_and_purpose():
    box = SecretBox(KEY)
    sealed = box.seal(ENC_BYTES, account_id=7, purpose="face_template")
    assert sealed[:2] == b"c1" and len(sealed) == 2 + 12 + len(ENC_BYTES) + 16
    assert ENC_BYTES not in sealed
    assert box.open(sealed, account_id=7, purpose="face_template") == ENC_BYTES


def test_two_seals_of_the_same_value_differ():
    box = SecretBox(KEY)
    first = box.seal_text(TOKEN, account_id=1, purpose="payment_token")
    second = box.seal_text(TOKEN, account_id=1, purpose="payment_token")
    assert first != second and first[2:14] != second[2:14]          # fresh nonces
    assert box.open_text(second, account_id=1, purpose="payment_token") == TOKEN


def test_a_template_moved_to_another_account_does_not_open():
    box = SecretBox(KEY, origin="key file k")
    sealed = box.seal(ENC_BYTES, account_id=1, purpose="face_template")
    with pytest.raises(SecretError) as e:
        box.open(sealed, account_id=2, purpose="face_template")
    assert str(e.value) == ("face_template of account 2 does not open with key file k: a "
                            "different key, or the value belongs to another account or purpose")


def test_a_token_pasted_into_a_template_does_not_open():
    box = SecretBox(KEY)
    sealed = box.seal_text(TOKEN, account_id=1, purpose="payment_token")
    with pytest.raises(SecretError, match="^face_template of account 1 does not open"):
        box.open(sealed, account_id=1, purpose="face_template")


def test_another_key_does_not_open_it():
    sealed = SecretBox(KEY).seal(ENC_BYTES, account_id=1, purpose="face_template")
    with pytest.raises(SecretError, match="does not open with key file other"):
        SecretBox(OTHER_KEY, origin="key file other").open(sealed, account_id=1,
                                                            purpose="face_template")


def test_one_flipped_bit_is_refused():
    box = SecretBox(KEY)
    sealed = bytearray(box.seal(ENC_BYTES, account_id=1, purpose="face_template"))
    sealed[20] ^= 0x01
    with pytest.raises(SecretError, match="does not open"):
        box.open(bytes(sealed), account_id=1, purpose="face_template")


def test_a_plain_value_is_named_as_not_sealed():
    with pytest.raises(SecretError, match="^payment_token of account 3: not a sealed value"):
        SecretBox(KEY).open(TOKEN.encode(), account_id=3, purpose="payment_token")


@pytest.mark.parametrize("account_id, purpose, message", [
    (0, "face_template", "account id 0 must be a positive integer"),
    (None, "payment_token", "account id None must be a positive integer"),
    (1, "photo", "unknown purpose 'photo'"),
])
def test_sealing_needs_a_real_account_and_a_known_purpose(account_id, purpose, message):
    with pytest.raises(SecretError, match=message):
        SecretBox(KEY).seal(b"x", account_id=account_id, purpose=purpose)


def test_a_key_of_the_wrong_size_is_refused():
    with pytest.raises(SecretError, match="^k: a key is 32 bytes, got 16"):
        SecretBox(b"0" * 16, origin="k")


def test_the_box_never_shows_its_key():
    assert repr(SecretBox(KEY, origin="key file /etc/k")) == "SecretBox(key file /etc/k)"


# --- key files -----------------------------------------------------------------------------
def test_a_key_file_of_raw_bytes_or_hex_digits_opens_the_same(tmp_path):
    raw, hexed = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(KEY)
    hexed.write_text(KEY.hex() + "\n")
    sealed = load_key_file(raw).seal(ENC_BYTES, account_id=1, purpose="face_template")
    assert load_key_file(hexed).open(sealed, account_id=1, purpose="face_template") == ENC_BYTES


def test_a_missing_key_file_is_named_with_how_to_make_one(tmp_path):
    path = tmp_path / "cabinet.key"
    with pytest.raises(SecretError) as e:
        load_key_file(path)
    assert str(e.value) == (f"key file {path}: not found; make one with `cabinet accounts "
                            f"keygen {path}` (or `openssl rand -hex 32 > {path}`)")


@pytest.mark.parametrize("content", [b"0" * 31, b"ab" * 31 + b"\n", b"zz" * 32])
def test_a_key_file_of_the_wrong_size_or_not_hex_is_named(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(SecretError) as e:
        load_key_file(path)
    assert str(e.value).startswith(f"key file {path}: {len(content)} bytes; a key file holds "
                                   f"32 raw bytes or 64 hex digits")


def test_keygen_writes_64_hex_digits_readable_by_the_owner_only(tmp_path):
    path = write_key_file(tmp_path / "new.key")
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n") and len(bytes.fromhex(text.strip())) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["new.key"]     # no temporary left
    assert write_key_file(tmp_path / "other.key").read_text() != text


def test_keygen_never_overwrites_a_key(tmp_path):
    path = write_key_file(tmp_path / "k")
    before = path.read_bytes()
    with pytest.raises(SecretError, match="already exists; a new key would make every"):
        write_key_file(path)
    assert path.read_bytes() == before


def test_keygen_through_the_cli(tmp_path, capsys):
    path = tmp_path / "cli.key"
    assert cabinet_main(["accounts", "keygen", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote a new key to {path} (mode 0600")
    load_key_file(path)
    assert cabinet_main(["accounts", "keygen", str(path)]) == 1          # kept, exit 1


def test_a_sqlite_database_gets_its_key_file_beside_it_once(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    url = f"sqlite:///{tmp_path / 'cab.sqlite'}"
    first = key_for_database(url)
    assert (tmp_path / "cab.sqlite.key").is_file()
    sealed = first.seal(ENC_BYTES, account_id=1, purpose="face_template")
    assert key_for_database(url).open(sealed, account_id=1, purpose="face_template") == ENC_BYTES


def test_the_environment_names_the_key_file(tmp_path, monkeypatch):
    (tmp_path / "k").write_bytes(OTHER_KEY)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "k"))
    box = key_for_database(f"sqlite:///{tmp_path / 'cab.sqlite'}")
    assert box.origin == f"key file {tmp_path / 'k'}"
    assert not (tmp_path / "cab.sqlite.key").exists()


def test_a_server_database_without_a_named_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    with pytest.raises(SecretError, match="^database postgresql://h/db: no key for its "
                                          "templates and tokens; set CABINET_KEY_FILE"):
        key_for_database("postgresql://h/db")


# --- in the database -----------------------------------------------------------------------
def _raw_rows(billing: Billing, account_id: int) -> tuple[bytes, list[bytes]]:
    with billing._sessions() as db:
        token = db.get(Account, account_id).payment_token
        templates = db.scalars(select(FaceTemplate.encoding)
                               .where(FaceTemplate.account_id == account_id)).all()
    return token, templates


def test_tokens_and_templates_are_stored_sealed(billing):
    alice = billing.open_account("Alice", TOKEN)
    billing.enrol_face(alice.id, ENC_BYTES, "photo")
    token, [template] = _raw_rows(billing, alice.id)
    assert TOKEN.encode() not in token and ENC_BYTES not in template
    assert TEST_SECRETS.open_text(token, account_id=alice.id, purpose="payment_token") == TOKEN
    assert billing.face_templates() == [(alice.id, ENC_BYTES)]


def test_templates_swapped_between_accounts_in_the_database_are_refused(billing):
    alice, bob = billing.open_account("Alice", TOKEN), billing.open_account("Bob", TOKEN)
    billing.enrol_face(alice.id, ENC_BYTES, "photo")
    billing.enrol_face(bob.id, encoding_to_bytes(-ENCODING), "camera")
    with billing._sessions.begin() as db:
        a, b = db.scalars(select(FaceTemplate).order_by(FaceTemplate.id)).all()
        a.encoding, b.encoding = b.encoding, a.encoding
    with pytest.raises(SecretError, match=f"^face_template of account {alice.id} does not open"):
        billing.face_templates()


def test_a_template_source_that_is_a_file_name_is_refused(billing):
    alice = billing.open_account("Alice", TOKEN)
    with pytest.raises(BillingError, match="source 'enrolment photo alice.jpg' must be one of "
                                           "photo, camera \\(never a file name\\)"):
        billing.enrol_face(alice.id, ENC_BYTES, "enrolment photo alice.jpg")
    assert billing.face_templates() == []


def test_a_new_payment_method_is_sealed_and_used(billing, gateway):
    alice = billing.open_account("Alice", "tok_declined")
    billing.set_payment_token(alice.id, TOKEN)
    token, _ = _raw_rows(billing, alice.id)
    assert TEST_SECRETS.open_text(token, account_id=alice.id, purpose="payment_token") == TOKEN
    assert billing.place_hold("s-1", alice.id).ok


# --- erase ---------------------------------------------------------------------------------
def _enrol_two(billing: Billing):
    alice, bob = billing.open_account("Alice", TOKEN), billing.open_account("Bob", TOKEN)
    billing.enrol_face(alice.id, ENC_BYTES, "photo")
    billing.enrol_face(alice.id, encoding_to_bytes(ENCODING * 0.5), "camera")
    billing.enrol_face(bob.id, encoding_to_bytes(-ENCODING), "photo")
    return alice, bob


def _file_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.iterdir()
                    if p.name.startswith(db_path.name) and p.is_file())


def test_erase_leaves_no_template_or_token_bytes_in_the_sqlite_file(db_path, gateway):
    """Read while the cabinet still runs (no engine closed after the erase), on a SQLite whose
    build leaves secure_delete off (Debian's turns it on): erase must zero and checkpoint."""
    engine = make_engine(db_path)

    @event.listens_for(engine, "connect")
    def _insecure(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA secure_delete=OFF")

    billing = Billing(session_factory(engine), GatewayClient(gateway.base_url, api_key=gateway.api_key),
                      hold_amount=2000,
                      secrets=TEST_SECRETS)
    alice, bob = _enrol_two(billing)
    billing.place_hold("s-1", alice.id)
    token, templates = _raw_rows(billing, alice.id)
    bob_token, [bob_template] = _raw_rows(billing, bob.id)
    billing._sessions.kw["bind"].dispose()                  # checkpoint: one file holds all
    before = _file_bytes(db_path)
    assert all(blob in before for blob in [token, *templates, bob_template])

    done = accounts.erase(billing._sessions, alice.id)
    assert (done.templates, done.token, done.wiped) == (2, True, True)

    after = _file_bytes(db_path)
    assert not any(blob in after for blob in [token, *templates])
    assert bob_token in after and bob_template in after     # only Alice's went
    assert TOKEN.encode() not in after and ENC_BYTES not in after


def test_erase_deletes_the_rows_and_keeps_the_ledger(billing, book, gateway):
    alice, bob = _enrol_two(billing)
    assert billing.place_hold("s-1", alice.id).ok
    ledger = book.ledger("s-1")
    accounts.erase(billing._sessions, alice.id)
    assert book.all(FaceTemplate, account_id=alice.id) == []
    assert [t.account_id for t in book.all(FaceTemplate)] == [bob.id]
    erased = book.one(Account, id=alice.id)
    assert erased.payment_token is None and erased.faces_erased_at is not None
    assert book.ledger("s-1") == ledger == [("hold", 2000)]
    assert len(book.all(LedgerEntry, account_id=alice.id)) == len(ledger)
    assert billing.standing(alice.id).reason == "no valid payment method on the account"
    assert [a for a, _ in billing.face_templates()] == [bob.id]


def test_erase_of_an_unknown_account_changes_nothing(billing):
    alice, _ = _enrol_two(billing)
    with pytest.raises(UnknownAccount):
        accounts.erase(billing._sessions, 99)
    assert len(billing.face_templates()) == 3


def test_erase_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_FILE_ENV, str(write_key_file(tmp_path / "k")))
    db = tmp_path / "cab.sqlite"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    init_db(engine)
    billing = Billing(session_factory(engine), None, secrets=load_key_file(tmp_path / "k"))
    alice = billing.open_account("Alice", TOKEN)
    billing.enrol_face(alice.id, ENC_BYTES, "photo")
    engine.dispose()
    assert cabinet_main(["accounts", "erase", str(alice.id), "--db", str(db)]) == 0
    assert capsys.readouterr().out == (f"erased account {alice.id}: 1 face template(s), "
                                       f"payment token removed; sessions and ledger kept\n")
    assert cabinet_main(["accounts", "erase", "42", "--db", str(db)]) == 1
    assert "no account 42" in capsys.readouterr().err
    assert os.environ[KEY_FILE_ENV] == str(tmp_path / "k")


def test_erase_drops_the_account_from_a_running_gallery(billing):
    alice, bob = _enrol_two(billing)
    gallery = accounts.load_gallery(billing._sessions, secrets=TEST_SECRETS)
    assert sorted(gallery.account_ids) == sorted([str(alice.id), str(bob.id)])
    accounts.erase(billing._sessions, alice.id, gallery=gallery)
    assert gallery.account_ids == frozenset({str(bob.id)}) and len(gallery) == 1
    assert accounts.load_gallery(billing._sessions, secrets=TEST_SECRETS).account_ids == \
        frozenset({str(bob.id)})
