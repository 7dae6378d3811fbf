"""QR entry (cabinet/qr.py): codes this cabinet signs, checked field by field, used once; the
phone app's tokens kept hashed; and, on a running controller over the simulated cabinet (the
simulated MCU on a real pty), a claimed kiosk code that opens the door and a phone's entry code
the face camera reads. The phone app is this test: an HTTP client that scans the kiosk's PNG
with OpenCV, and a phone screen drawn by segno into a camera frame."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import segno
from sqlalchemy import select

import cabinet.inventory  # noqa: F401  (the controller's tables share the metadata)
import cabinet.journal  # noqa: F401
from billing import init_db, make_engine, session_factory
from billing.db import head_revision
from billing.models import Account, CabinetSession
from cabinet.errors import CabinetError
from cabinet.qr import (ENTRY, KIOSK, AppToken, AppTokens, QrRefused, QrSigner, UsedCodes,
                        key_for_cabinet, load_key, read_qr)
from firmware_bridge.clock import ManualClock
import waiting

KEY = bytes(range(32))


def signer(clock: ManualClock, cabinet_id: str = "cab-7", key: bytes = KEY) -> QrSigner:
    return QrSigner(key, cabinet_id, now=clock.time, ttl_s=60)


def refused(fn, *args, **kwargs) -> QrRefused:
    with pytest.raises(QrRefused) as info:
        fn(*args, **kwargs)
    return info.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _body(code: str) -> dict:
    part = code.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- the code itself --------------------------------------------------------------------------

def test_a_code_says_its_kind_cabinet_account_and_expiry_and_verifies():
    clock = ManualClock()
    qr = signer(clock)
    code, claim = qr.issue(ENTRY, 42)
    assert code.startswith("CQR1.") and len(code) < 250          # a small QR version
    got = qr.verify(code, kind=ENTRY)
    assert got == claim
    assert (got.kind, got.cabinet_id, got.account_id) == (ENTRY, "cab-7", 42)
    assert got.expires_at == int(clock.time()) + 60
    kiosk_code, kiosk_claim = qr.issue(KIOSK)
    assert qr.verify(kiosk_code, kind=KIOSK).account_id is None
    assert kiosk_claim.nonce != claim.nonce                         # a fresh nonce each


def test_a_code_expires_after_its_time_on_the_manual_clock():
    clock = ManualClock()
    qr = signer(clock)
    code, _ = qr.issue(KIOSK)
    clock.advance(59.5)
    assert qr.verify(code, kind=KIOSK).kind == KIOSK
    clock.advance(0.5)
    e = refused(qr.verify, code, kind=KIOSK)
    assert (e.status, e.field) == (410, "code.expires") and "expired" in str(e)


def test_a_tampered_code_is_400_naming_the_signature():
    clock = ManualClock()
    qr = signer(clock)
    code, _ = qr.issue(ENTRY, 42)
    prefix, body, sig = code.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    e = refused(qr.verify, f"{prefix}.{body}.{flipped}", kind=ENTRY)
    assert (e.status, e.field) == (400, "code.signature")
    # another account written into the body, the signature kept: refused the same way
    fields = _body(code) | {"a": 43}
    forged = f"{prefix}.{_b64(json.dumps(fields, separators=(',', ':')).encode())}.{sig}"
    e = refused(qr.verify, forged, kind=ENTRY)
    assert (e.status, e.field) == (400, "code.signature")
    # a code signed with another key for this very cabinet id
    other, _ = signer(clock, key=bytes(32)).issue(ENTRY, 42)
    assert refused(qr.verify, other, kind=ENTRY).field == "code.signature"


def test_another_cabinets_code_is_400_naming_the_cabinet():
    clock = ManualClock()
    code, _ = signer(clock, "cab-8").issue(KIOSK)
    e = refused(signer(clock, "cab-7").verify, code, kind=KIOSK)
    assert (e.status, e.field) == (400, "code.cabinet")
    assert "'cab-8'" in str(e) and "'cab-7'" in str(e)


@pytest.mark.parametrize("code, field", [
    (None, "code"), ("", "code"), ("hello", "code"), ("CQR2.a.b", "code"),
    ("CQR1.a.b.c", "code"), ("CQR1." + "x" * 700 + ".y", "code"),
    ("CQR1.!!!.sig", "code.body"), ("CQR1." + _b64(b"[1, 2]") + ".sig", "code.body"),
    ("CQR1." + _b64(b'{"k":"door","c":"cab-7","n":"' + b"n" * 22 + b'","e":1,"a":null}')
     + ".sig", "code.kind"),
    ("CQR1." + _b64(b'{"k":"kiosk","n":"' + b"n" * 22 + b'","e":1,"a":null}') + ".sig",
     "code.cabinet"),
    ("CQR1." + _b64(b'{"k":"kiosk","c":"cab-7","n":"short","e":1,"a":null}') + ".sig",
     "code.nonce"),
    ("CQR1." + _b64(b'{"k":"kiosk","c":"cab-7","n":"' + b"n" * 22 + b'","e":"soon","a":null}')
     + ".sig", "code.expires"),
    ("CQR1." + _b64(b'{"k":"kiosk","c":"cab-7","n":"' + b"n" * 22 + b'","e":1,"a":5}')
     + ".sig", "code.account"),
])
def test_a_malformed_code_is_400_naming_the_field(code, field):
    e = refused(signer(ManualClock()).verify, code, kind=KIOSK)
    assert (e.status, e.field) == (400, field)
    assert str(e).startswith(field + ":")


def test_an_entry_code_is_no_kiosk_code_and_the_other_way_round():
    qr = signer(ManualClock())
    entry, _ = qr.issue(ENTRY, 42)
    kiosk, _ = qr.issue(KIOSK)
    assert refused(qr.verify, entry, kind=KIOSK).field == "code.kind"
    assert refused(qr.verify, kiosk, kind=ENTRY).field == "code.kind"


# --- the database: used codes and app tokens --------------------------------------------------

@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'qr.sqlite'}"
    engine = make_engine(url)
    init_db(engine, revision=head_revision())         # the migrations alone (0008's tables)
    sessions = session_factory(engine)
    with sessions() as s, s.begin():
        s.add_all([Account(id=1, name="Grace Hopper", currency="EUR"),
                   Account(id=2, name="Alan Turing", currency="EUR")])
    yield url, sessions
    engine.dispose()


def test_a_code_is_used_once_also_after_a_restart(db):
    url, sessions = db
    clock = ManualClock()
    code, claim = signer(clock).issue(ENTRY, 1)
    UsedCodes(sessions, now=clock.time).consume(claim)
    again = session_factory(make_engine(url))          # another process, or after a restart
    e = refused(UsedCodes(again, now=clock.time).consume, claim)
    assert (e.status, e.field) == (409, "code") and "already used" in str(e)
    # a withdrawn kiosk code says so
    _, shown = signer(clock).issue(KIOSK)
    UsedCodes(sessions, now=clock.time).consume(shown, outcome="withdrawn")
    assert "withdrawn" in str(refused(UsedCodes(sessions, now=clock.time).consume, shown))


def test_used_codes_are_pruned_a_day_after_they_expired(db):
    _, sessions = db
    clock = ManualClock()
    used = UsedCodes(sessions, now=clock.time)
    _, old = signer(clock).issue(KIOSK)
    used.consume(old)
    clock.advance(60 + 86400 + 1)
    _, new = signer(clock).issue(KIOSK)
    used.consume(new)
    assert not used.used(old.nonce) and used.used(new.nonce)


def test_app_tokens_are_kept_as_hashes_and_a_new_one_replaces_the_old(db, tmp_path):
    url, sessions = db
    tokens = AppTokens(sessions)
    first = tokens.issue(1)
    assert tokens.account_for(first) == 1
    with sessions() as s:
        [row] = s.scalars(select(AppToken)).all()
    assert row.account_id == 1 and first not in row.token_hash and len(row.token_hash) == 64
    second = tokens.issue(1)
    assert tokens.account_for(second) == 1
    e = refused(tokens.account_for, first)
    assert (e.status, e.field) == (401, "app_token")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("qr.sqlite*"))
    assert first.encode() not in raw and second.encode() not in raw
    assert refused(tokens.account_for, "cat1_" + "x" * 43).status == 401    # never issued
    assert refused(tokens.account_for, None).status == 400
    assert refused(tokens.account_for, "Bearer abc").status == 400
    with pytest.raises(CabinetError, match="no account 9"):
        tokens.issue(9)
    assert tokens.revoke(1) and refused(tokens.account_for, second).status == 401


def test_the_cabinet_key_is_made_once_mode_0600_and_a_bad_file_is_named(tmp_path):
    key = key_for_cabinet(tmp_path / "data", environ={})      # its folder made if need be
    path = tmp_path / "data" / "qr.key"
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_for_cabinet(tmp_path / "data", environ={}) == key
    bad = tmp_path / "short.key"
    bad.write_text("abcd\n")
    with pytest.raises(CabinetError, match=str(bad)):
        key_for_cabinet(tmp_path, environ={"CABINET_QR_KEY_FILE": str(bad)})
    assert load_key(path) == key


# --- the face camera's reader -----------------------------------------------------------------

def phone_in_frame(code: str, background: np.ndarray, *, angle: float = 14.0,
                   module_px: int = 4, at: tuple[int, int] = (330, 250), seed: int = 0
                   ) -> np.ndarray:
    """`background` (a camera frame) with a phone screen showing `code` held up in it: the QR
    drawn by segno, on a white screen in a dark bezel, rotated, scaled, blurred, noisy and
    JPEG-compressed as a webcam would give it."""
    out = io.BytesIO()
    segno.make(code, error="m").save(out, kind="png", scale=module_px, border=4)
    qr = cv2.imdecode(np.frombuffer(out.getvalue(), np.uint8), cv2.IMREAD_COLOR)
    h, w = qr.shape[:2]
    phone = np.full((h + 120, w + 40, 3), 25, np.uint8)            # the bezel
    phone[60:60 + h, 20:20 + w] = qr
    ph, pw = phone.shape[:2]
    frame = cv2.resize(background, (640, 480)).copy()
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    m[:, 2] += (at[0] - pw / 2, at[1] - ph / 2)
    warped = cv2.warpAffine(phone, m, (640, 480))
    mask = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (640, 480)) > 0
    frame[mask] = warped[mask]
    frame = cv2.GaussianBlur(frame, (3, 3), 0.8)
    noise = np.random.default_rng(seed).normal(0, 6, frame.shape)
    frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def a_face_photo() -> np.ndarray:
    from vision.data import people
    photos = [p for ps in people().values() for p in ps]
    if not photos:
        from datagate import unavailable
        unavailable("no face photos (../shared/data/faces or .cache/faces) for the camera "
                    "frame", "CI=true but no face photos: make setup fetches .cache/faces")
    return cv2.imread(str(photos[0]), cv2.IMREAD_COLOR)


def test_every_code_the_signer_issues_is_read_from_a_clean_render():
    # OpenCV's classic detector alone missed about 7% of clean renders of codes of this length
    import segno
    clock = ManualClock()
    s = signer(clock)
    for account in range(120):
        code, _ = s.issue(ENTRY, account)
        out = io.BytesIO()
        segno.make(code, error="m").save(out, kind="png", scale=10, border=4)
        image = cv2.imdecode(np.frombuffer(out.getvalue(), np.uint8), cv2.IMREAD_COLOR)
        assert read_qr(image) == code, account


def test_the_camera_reads_a_phones_code_in_a_real_looking_frame():
    code, _ = signer(ManualClock()).issue(ENTRY, 42)
    face = a_face_photo()
    assert read_qr(face) is None                                  # a face alone: no code
    for angle, module_px, seed in ((14.0, 4, 0), (-25.0, 5, 1), (40.0, 4, 2)):
        assert read_qr(phone_in_frame(code, face, angle=angle, module_px=module_px,
                                      seed=seed)) == code
    # a QR code that is not a cabinet's (a poster, a t-shirt) is no entry code
    assert read_qr(phone_in_frame("https://example.org/menu", face)) is None


# --- on a running controller ------------------------------------------------------------------

@pytest.fixture
def running(make_cabinet):
    """`cabinet run`'s Runner over a simulated cabinet (real pty MCU, sandbox gateway, SQLite)
    on a free port, in a thread; QR-only accounts with an app token each."""
    from cabinet.config import HttpConfig, load_config
    from cabinet.demo import DEFAULT_CONFIG
    from cabinet.runner import Runner
    # the simulated MCU's longest pulse: the test opens the door in time on a loaded machine
    cab = make_cabinet(timing=load_config(DEFAULT_CONFIG).timeouts.model_copy(
        update={"unlock_pulse_ms": 10000}))
    cab.app.config = cab.app.config.model_copy(update={"http": HttpConfig(port=0)})
    ready = threading.Event()
    # screens stay until the next one (a refusal is read before a Welcome replaces it)
    runner = Runner(cab.app, environ={}, on_ready=lambda r: ready.set(), screen_hold_s=600)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.run())))
    thread.start()
    try:
        assert ready.wait(60), "the runner did not start"
        yield cab, runner
    finally:
        runner.stop_from_thread()
        thread.join(60)
    assert result == [0]


def customer(cab, runner, name: str, *, token: str = "tok_visa_ok") -> tuple[int, str]:
    account = cab.billing.open_account(name, token)
    return account.id, runner.qr.entry.tokens.issue(account.id)


def post(runner, path: str, body) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{runner.port}{path}", json=body, timeout=60)


def screen(runner) -> dict:
    return requests.get(f"http://127.0.0.1:{runner.port}/kiosk/state", timeout=10).json()


def sessions_of(cab) -> list[CabinetSession]:
    with cab.db() as s:
        return list(s.scalars(select(CabinetSession).order_by(CabinetSession.opened_at)))


def journal_entry_of(cab, session_id: str) -> str | None:
    from cabinet.journal import JournalEntry
    with cab.db() as s:
        rows = s.scalars(select(JournalEntry).where(JournalEntry.session_id == session_id)).all()
    return next((json.loads(r.data or "{}").get("entry") for r in rows
                 if json.loads(r.data or "{}").get("entry")), None)


def shop_one_item(cab, runner, slot: str) -> None:
    """The customer at the unlocked door: opens it, takes one item from `slot`, closes it."""
    waiting.wait_until(lambda: not cab.mcu.lock_engaged, "the lock to release", 60)
    assert cab.mcu.open_door(), "the door did not open while unlocked"
    cab.world.take(slot, 1)
    cab.mcu.close_door()


def test_a_kiosk_code_claimed_by_the_phone_app_opens_the_door_and_a_replay_is_409(running):
    cab, runner = running
    account_id, token = customer(cab, runner, "Grace Hopper")
    cab.face_camera.show(None)
    assert post(runner, "/kiosk/start", {}).status_code == 202
    waiting.wait_until(lambda: runner._face_wait is not None, "the wait for a face", 30)
    assert post(runner, "/kiosk/use-qr", {}).status_code == 202
    waiting.wait_until(lambda: screen(runner)["screen"] == "qr", "the QR screen", 30)
    assert screen(runner)["expires_in_s"] == 60 and "code" not in screen(runner)
    base = f"http://127.0.0.1:{runner.port}/kiosk"
    svg = requests.get(base + "/qr.svg", timeout=10)
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
    png = requests.get(base + "/qr.png", timeout=10).content       # the phone scans it
    code = read_qr(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    assert code is not None and code.startswith("CQR1.")

    slot = cab.planogram.slots[0]
    answer: list[requests.Response] = []
    claim = threading.Thread(target=lambda: answer.append(
        post(runner, "/api/qr/claim", {"code": code, "app_token": token})))
    claim.start()
    # a refused claim is reported with its reason at once, not waited out for a minute
    waiting.wait_until(lambda: not cab.mcu.lock_engaged or (answer and answer[0].status_code != 200),
                       "the lock to release", 60)
    assert not cab.mcu.lock_engaged, (answer[0].status_code, answer[0].text)
    assert cab.mcu.open_door(), "the door did not open while unlocked"
    claim.join(60)
    assert answer[0].status_code == 200, answer[0].text
    assert answer[0].json() == {"status": "unlocked"}
    # another phone while this customer shops: one customer at a time, its code kept
    _, other_token = customer(cab, runner, "Alan Turing")
    other, other_claim = runner.qr.entry.signer.issue(KIOSK)
    busy = post(runner, "/api/qr/claim", {"code": other, "app_token": other_token})
    assert busy.status_code == 409 and "one customer at a time" in busy.json()["error"]
    assert not runner.qr.entry.used.used(other_claim.nonce)
    cab.world.take(slot.id, 1)
    cab.mcu.close_door()
    waiting.wait_until(lambda: runner.health()["sessions"] == 1, "the session to end", 60)
    [row] = sessions_of(cab)
    assert (row.account_id, row.outcome) == (account_id, "charged")
    assert row.total == cab.catalog[slot.sku].price
    assert journal_entry_of(cab, row.id) == "qr_kiosk"

    again = post(runner, "/api/qr/claim", {"code": code, "app_token": token})
    assert again.status_code == 409 and again.json()["field"] == "code"
    assert "already used" in again.json()["error"]
    assert runner.health()["sessions"] == 1 and cab.mcu.lock_engaged


def test_bad_claims_are_refused_naming_what_is_wrong_and_start_nothing(running):
    cab, runner = running
    _, token = customer(cab, runner, "Alan Turing")
    qr = runner.qr.entry.signer
    code, _ = qr.issue(KIOSK)
    prefix, body, sig = code.split(".")
    past = ManualClock(wall_start=qr.now() - 120)                 # issued two minutes ago
    expired, _ = QrSigner(key_for_cabinet(cab.app.data_path), qr.cabinet_id,
                          now=past.time).issue(KIOSK)
    elsewhere, _ = QrSigner(key_for_cabinet(cab.app.data_path), "cab-elsewhere",
                            now=qr.now).issue(KIOSK)
    cases = [
        ({"code": f"{prefix}.{body}.{sig[::-1]}", "app_token": token}, 400, "code.signature"),
        ({"code": elsewhere, "app_token": token}, 400, "code.cabinet"),
        ({"code": expired, "app_token": token}, 410, "code.expires"),
        ({"code": "not a code", "app_token": token}, 400, "code"),
        ({"code": code, "app_token": "cat1_" + "z" * 43}, 401, "app_token"),
        ({"code": code}, 400, "app_token"),
        ({"code": code, "app_token": token, "account": 1}, 400, "account"),
        (["code", code], 400, "body"),
    ]
    for payload, status, field in cases:
        got = post(runner, "/api/qr/claim", payload)
        assert (got.status_code, got.json()["field"]) == (status, field), (payload, got.text)
        assert got.json()["error"]
    text = requests.post(f"http://127.0.0.1:{runner.port}/api/qr/claim", data="{}",
                         timeout=10)
    assert text.status_code == 415
    huge = post(runner, "/api/qr/claim", {"code": "x" * 5000, "app_token": token})
    assert huge.status_code == 413
    assert runner.health()["sessions"] == 0 and cab.mcu.lock_engaged and sessions_of(cab) == []
    # none of those used the code up: the right token with it still opens the door
    got = post(runner, "/api/qr/entry-code", {"app_token": "cat1_" + "z" * 43})
    assert got.status_code == 401
    answer: list[requests.Response] = []
    claim = threading.Thread(target=lambda: answer.append(
        post(runner, "/api/qr/claim", {"code": code, "app_token": token})))
    claim.start()
    waiting.wait_until(lambda: not cab.mcu.lock_engaged, "the lock to release", 60)
    claim.join(60)
    assert answer[0].status_code == 200, answer[0].text


@pytest.mark.parametrize("how, reason", [("close", "this account is closed"),
                                         ("block", "account blocked: card reported stolen")])
def test_a_closed_or_blocked_account_is_refused_at_the_door_with_its_reason(running, how,
                                                                              reason):
    cab, runner = running
    account_id, token = customer(cab, runner, "Ada Lovelace")
    if how == "close":
        cab.billing.close_account(account_id)
    else:
        cab.billing.block(account_id, "card reported stolen")
    code, _ = runner.qr.entry.signer.issue(KIOSK)
    got = post(runner, "/api/qr/claim", {"code": code, "app_token": token})
    assert got.status_code == 403, got.text
    assert got.json() == {"status": "refused", "reason": "account_blocked", "error": reason}
    waiting.wait_until(lambda: runner.health()["sessions"] == 1, "the refused session", 30)
    assert screen(runner) | {"seq": 0, "preview": 0} == {
        "screen": "refused", "reason": "account_blocked", "seq": 0, "preview": 0}
    [row] = sessions_of(cab)
    assert (row.account_id, row.outcome, row.outcome_reason) == (account_id, "denied", reason)
    assert cab.mcu.lock_engaged


def test_the_face_camera_reads_a_phones_entry_code_and_refuses_its_replay(running, tmp_path):
    cab, runner = running
    account_id, token = customer(cab, runner, "Katherine Johnson")
    got = post(runner, "/api/qr/entry-code", {"app_token": token})
    assert got.status_code == 201, got.text
    code = got.json()["code"]
    assert got.json()["expires_in_s"] == 60
    photo = tmp_path / "phone.png"
    cv2.imwrite(str(photo), phone_in_frame(code, a_face_photo(), angle=-18.0, seed=3))
    cab.face_camera.show(photo)
    slot = cab.planogram.slots[1]
    shop_one_item(cab, runner, slot.id)
    waiting.wait_until(lambda: runner.health()["sessions"] == 1, "the session to end", 60)
    [row] = sessions_of(cab)
    assert (row.account_id, row.outcome) == (account_id, "charged")
    assert journal_entry_of(cab, row.id) == "qr_camera"
    # still held up after the session: not read twice
    assert runner.qr.refusals == []
    cab.face_camera.show(None)                                     # the phone goes away
    waiting.wait_until(lambda: runner.qr.last_seen is None, "the code out of view", 30)
    cab.face_camera.show(photo)                                    # and comes back
    waiting.wait_until(lambda: runner.qr.refusals, "the replay's refusal", 30)
    assert runner.qr.refusals[0][0] == 409 and "already used" in runner.qr.refusals[0][1]
    assert screen(runner)["reason"] == "qr_used"
    assert runner.health()["sessions"] == 1 and cab.mcu.lock_engaged


def test_a_kiosk_code_withdrawn_by_cancel_no_longer_opens_the_door(running):
    cab, runner = running
    _, token = customer(cab, runner, "Edsger Dijkstra")
    cab.face_camera.show(None)
    assert post(runner, "/kiosk/start", {}).status_code == 202
    waiting.wait_until(lambda: runner._face_wait is not None, "the wait for a face", 30)
    assert post(runner, "/kiosk/use-qr", {}).status_code == 202
    waiting.wait_until(lambda: runner.qr.shown is not None, "the QR code on screen", 30)
    code = runner.qr.shown[0]
    assert post(runner, "/kiosk/cancel", {}).status_code == 202
    waiting.wait_until(lambda: screen(runner)["screen"] == "welcome", "welcome", 30)
    got = post(runner, "/api/qr/claim", {"code": code, "app_token": token})
    assert got.status_code == 409 and "withdrawn" in got.json()["error"]
    assert runner.health()["sessions"] == 0 and cab.mcu.lock_engaged


def test_cabinet_accounts_app_token_prints_a_token_once_that_names_the_account(db, capsys):
    from cabinet.cli import main
    url, sessions = db
    assert main(["accounts", "app-token", "2", "--db", url]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert AppTokens(sessions).account_for(token) == 2
    assert main(["accounts", "app-token", "2", "--db", url]) == 0        # a new one
    assert capsys.readouterr().out.strip().splitlines()[-1] != token
    assert refused(AppTokens(sessions).account_for, token).status == 401
    assert main(["accounts", "app-token", "9", "--db", url]) == 1
    assert "no account 9" in capsys.readouterr().err


def test_erasing_an_account_removes_its_app_token_from_the_file(db, tmp_path):
    import hashlib
    from cabinet.accounts import erase
    url, sessions = db
    token = AppTokens(sessions).issue(1)
    digest = hashlib.sha256(token.encode()).hexdigest().encode()
    files = lambda: b"".join(p.read_bytes() for p in tmp_path.glob("qr.sqlite*"))  # noqa: E731
    with sessions() as s:                       # the hash is there before (a real check)
        s.connection().exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert digest in files()
    erase(sessions, 1)
    assert refused(AppTokens(sessions).account_for, token).status == 401
    assert digest not in files()


def test_the_kiosk_code_expires_on_the_controllers_clock_and_the_kiosk_says_so(make_cabinet):
    """The controller on a ManualClock (the hardware on real time): the QR screen stays until
    its 60 s pass on that clock, then the kiosk says the code expired, and a claim of it is a
    410; Welcome comes back after screen_hold_s."""
    from cabinet.config import HttpConfig
    from cabinet.runner import Runner
    from firmware_bridge.clock import SYSTEM
    clock = ManualClock()
    cab = make_cabinet(clock=clock, hardware_clock=SYSTEM)
    cab.app.config = cab.app.config.model_copy(update={"http": HttpConfig(port=0)})
    ready = threading.Event()
    runner = Runner(cab.app, environ={}, on_ready=lambda r: ready.set(), screen_hold_s=5.0)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.run())))
    thread.start()
    try:
        assert ready.wait(60), "the runner did not start"
        _, token = customer(cab, runner, "Grace Hopper")
        cab.face_camera.show(None)
        assert post(runner, "/kiosk/start", {}).status_code == 202
        waiting.wait_until(lambda: runner._face_wait is not None, "the wait for a face", 30)
        assert post(runner, "/kiosk/use-qr", {}).status_code == 202
        waiting.wait_until(lambda: runner.qr.shown is not None, "the QR code on screen", 30)
        code = runner.qr.shown[0]
        clock.advance(59)
        waiting.wait_until(lambda: clock.sleepers() > 0, "the runner's next wait", 30)
        assert screen(runner)["screen"] == "qr"
        clock.advance(1)
        waiting.wait_until(lambda: screen(runner)["screen"] == "refused", "the expiry", 30)
        assert screen(runner)["reason"] == "qr_expired"
        got = post(runner, "/api/qr/claim", {"code": code, "app_token": token})
        assert (got.status_code, got.json()["field"]) == (410, "code.expires")
        waiting.wait_until(lambda: clock.sleepers() > 0, "the runner's next wait", 30)
        clock.advance(5)
        waiting.wait_until(lambda: screen(runner)["screen"] == "welcome", "welcome", 30)
        assert runner.health()["sessions"] == 0 and cab.mcu.lock_engaged
    finally:
        runner.stop_from_thread()
        clock.advance(1)                       # wakes the runner's wait so it sees the stop
        thread.join(60)
    assert result == [0]
