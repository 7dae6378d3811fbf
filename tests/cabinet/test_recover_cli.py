"""`cabinet recover`, the demo on a folder a crash left open, the outbox timer of `cabinet run`,
and the configuration's encryption_key_file.

A crash is the journal refusing to write one transition (neither it nor its effect happens,
as if the power went at that instant; tests/cabinet/test_recovery.py does the same), then the
cabinet is closed: the process is gone. What comes after is what a person would run.
"""
from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

import waiting
from billing.crypto import SecretError, load_key_file, write_key_file
from billing.db import make_engine, session_factory
from billing.gateway_server import SandboxGateway
from billing.models import Account, CabinetSession, FaceTemplate
from billing.outbox_models import PaymentOutbox
from billing.service import Line
from cabinet import demo, recover_cli
from cabinet.app import App, KeyFileError
from cabinet.config import HttpConfig, TimeoutsConfig, load_config
from cabinet.demo import DEFAULT_CONFIG
from cabinet.errors import CabinetError
from cabinet.journal import Journal
from cabinet.machine import SessionMachine
from cabinet.runner import Runner
from firmware_bridge.clock import SYSTEM, ManualClock

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
CABINET = [sys.executable, "-m", "cabinet.cli"]
pytestmark = pytest.mark.slow

FAST = TimeoutsConfig(face_s=3.0, auth_s=60.0, unlock_pulse_ms=1500, door_open_alarm_s=5.0,
                      door_open_max_s=10.0, settle_s=3.0)
REAL_BOUND_S = 90.0


class Crash(Exception):
    pass


def write_config(folder: Path, **changes) -> Path:
    """fixtures/cabinet.yaml with absolute file paths and its data under `folder`."""
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram", "accounts", "scenarios"):
        data[key] = str(FIXTURES / data[key])
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    data["http"] = {"host": "127.0.0.1", "port": 0}
    data["timeouts"]["auth_s"] = 60      # three dlib encodings on a loaded machine
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cabinet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_scenario_config(folder: Path) -> Path:
    """The demo's configuration with only its first scenario (a one-item purchase)."""
    scenarios = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())
    scenarios["scenarios"] = scenarios["scenarios"][:1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scenarios.yaml").write_text(yaml.safe_dump(scenarios))
    return write_config(folder, scenarios=str(folder / "scenarios.yaml"))


def crash_a_session(parts, trigger: str) -> tuple[str, str]:
    """One customer session on a started app (or SimCabinet) that dies at `trigger`; the
    customer takes one item from the fullest slot. Returns (session id, sku taken)."""
    stock = parts.world.stock()
    slot = max(stock, key=lambda s: len(stock[s]))
    sku = parts.planogram.slot(slot).sku
    journal = parts.controller.journal

    def write(record):
        if record.trigger == trigger:
            raise Crash(trigger)
        journal.write(record)
    parts.controller.machine = SessionMachine(write)
    person = next(iter(parts.account_ids))
    parts.face_camera.show(parts.photos[person][0])

    def customer():         # another thread, as a person at the door
        waiting.wait_until(lambda: not parts.mcu.lock_engaged, "the lock to release", 60)
        assert parts.mcu.open_door()
        parts.world.take(slot, 1)
        parts.mcu.close_door()
        return parts.world.leave()

    async def main():
        frame = await parts.controller.wait_for_face(FAST.face_s)
        assert frame is not None
        shopper = asyncio.ensure_future(asyncio.to_thread(customer))
        with pytest.raises(Crash):
            await parts.controller.session(frame)
        return await shopper

    try:
        taken = asyncio.run(asyncio.wait_for(main(), REAL_BOUND_S))
    finally:
        parts.face_camera.show(None)
    assert dict(taken) == {sku: 1}
    return parts.controller.machine.session_id, sku


def recover(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = recover_cli.main(list(argv), out=out)
    return code, out.getvalue()


def gateway_effects(folder: Path) -> dict[str, int]:
    """What the sandbox gateway kept on disk really did (read by a gateway not started)."""
    return SandboxGateway(data_dir=folder).effects()


def test_recover_finishes_a_crashed_session_once_and_a_second_run_does_nothing(make_cabinet,
                                                                               tmp_path):
    workdir = tmp_path / "demo"
    cab = make_cabinet(workdir=workdir, timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)
    session_id, sku = crash_a_session(cab, "finished")     # captured, never journalled done
    price = cab.catalog[sku].price
    cab.close()
    assert gateway_effects(workdir / "gateway")["capture"] == 1

    code, text = recover("--workdir", str(workdir))
    assert code == 0, text
    lines = text.strip().splitlines()
    assert lines[0] == f"session {session_id}: charged, 1 x {sku}, total {price} EUR"
    assert lines[-1].startswith("recovered 1 session(s); ")
    assert "lock engaged, door closed; everything settled" in lines[-1]
    assert gateway_effects(workdir / "gateway") == {
        "authorize": 1, "decline": 0, "capture": 1, "charge": 0, "void": 0, "refund": 0}

    code, text = recover("--workdir", str(workdir))
    assert code == 0, text
    assert text.strip() == ("recovered 0 session(s); 0 payment call(s) made, 0 pending; "
                            "lock engaged, door closed; nothing to recover")
    assert gateway_effects(workdir / "gateway")["capture"] == 1


def test_recover_exits_2_naming_the_payment_the_gateway_owes_then_settles_it_once(
        tmp_path, face_encoder):
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    gateway = SandboxGateway(data_dir=gateway_dir)
    url = gateway.start()
    port = int(url.rsplit(":", 1)[1])
    (tmp_path / "gateway.key").write_text(gateway.api_key + "\n")
    config = write_config(tmp_path / "cab", gateway_url=url,
                          gateway_api_key_file=str(tmp_path / "gateway.key"),
                          timeouts={**FAST.model_dump(), "gateway_s": 2.0})
    app = App(config, clock=ManualClock(), hardware_clock=SYSTEM, face_encoder=face_encoder)
    try:
        app.start()
        # reconciled, never charged: the inventory moved, the capture is still to make
        session_id, sku = crash_a_session(app, "reconciled")
        price = app.catalog[sku].price
    finally:
        app.close()
        gateway.stop()                       # and the gateway goes down

    code, text = recover("--config", str(config))
    assert code == recover_cli.EXIT_PENDING == 2, text
    assert f"pending: session {session_id} capture not answered" in text
    assert "run `cabinet recover` again later" in text
    assert gateway_effects(gateway_dir)["capture"] == 0

    back = SandboxGateway(port=port, data_dir=gateway_dir)
    back.start()
    try:
        code, text = recover("--config", str(config))
        assert code == 0, text
        assert "1 payment call(s) made, 0 pending" in text
        code, again = recover("--config", str(config))
        assert code == 0 and again.strip().endswith("nothing to recover"), again
        assert back.effects()["capture"] == 1 and back.effects()["void"] == 0
    finally:
        back.stop()
    engine = make_engine(f"sqlite:///{tmp_path / 'cab' / 'data' / 'cabinet.sqlite'}")
    try:
        with session_factory(engine)() as s:
            row = s.get(CabinetSession, session_id)
            assert (row.state, row.outcome, row.total) == ("closed", "charged", price)
    finally:
        engine.dispose()


def _counts(db) -> tuple[int, int]:
    with db() as s:
        return (s.scalar(select(func.count()).select_from(Account)),
                s.scalar(select(func.count()).select_from(FaceTemplate)))


def test_demo_refuses_a_folder_with_an_open_session_and_recover_finishes_it_first(
        make_cabinet, tmp_path):
    config = one_scenario_config(tmp_path / "conf")
    workdir = tmp_path / "demo"
    cab = make_cabinet(config=config, workdir=workdir, timing=FAST, clock=ManualClock(),
                       hardware_clock=SYSTEM)
    accounts, templates = _counts(cab.db)
    assert accounts == len(cab.accounts) and templates > accounts
    session_id, _sku = crash_a_session(cab, "door_closed")
    cab.close()

    out = io.StringIO()
    with pytest.raises(CabinetError, match=r"cabinet recover --workdir .*or run the demo "
                                           r"again with --recover") as refused:
        demo.run(workdir, config=config, out=out)
    assert f"{session_id} in door_open" in str(refused.value)
    assert out.getvalue() == ""

    code = demo.run(workdir, config=config, out=out, recover=True)
    text = out.getvalue()
    assert code == 0, text
    assert f"session {session_id}: " in text.splitlines()[0]
    assert "1/1 sessions ended as the scenarios expected" in text

    # again on the same folder: nothing to recover, nobody enrolled a second time
    out = io.StringIO()
    code = demo.run(workdir, config=config, out=out)
    assert code == 0, out.getvalue()
    cab = make_cabinet(config=config, workdir=workdir)
    assert _counts(cab.db) == (accounts, templates)
    assert Journal(cab.db).open_sessions() == []


def test_the_running_cabinet_retries_the_outbox_on_its_timer(make_cabinet):
    clock = ManualClock()
    config = load_config(DEFAULT_CONFIG).model_copy(update={"http": HttpConfig(port=0)})
    cab = make_cabinet(config=config, clock=clock, hardware_clock=SYSTEM)
    runner = Runner(cab.app, environ={}, poll_s=0.05, outbox_s=30.0)
    thread = threading.Thread(target=lambda: asyncio.run(runner.run()), daemon=True)
    thread.start()
    try:
        waiting.wait_until(lambda: runner.port, "the runner to serve", 60)
        # after the start's recovery: a capture the gateway does not answer
        cab.gateway_client.max_retries = 0
        account_id = next(iter(cab.account_ids.values()))
        session_id = "20260101T000000-outbox01"
        assert cab.billing.place_hold(session_id, account_id).ok
        slot = cab.planogram.slots[0]
        product = cab.catalog[slot.sku]
        cab.gateway.fail_next(1, "500")
        receipt = cab.billing.settle(session_id, [Line(slot.sku, product.name, 1, product.price)])
        assert receipt.outcome == "pending"
        with cab.db() as s:
            (row,) = s.scalars(select(PaymentOutbox).where(PaymentOutbox.done_at.is_(None)))
            due = row.next_attempt_at
        # its back-off is billing's (real time); the timer is the runner's Clock
        from billing.base import utcnow
        waiting.wait_until(lambda: utcnow() >= due, "the capture's back-off to pass", 10)
        assert runner.outbox_drains == 0 and cab.gateway.effects()["capture"] == 0
        clock.wait_for_sleepers(1)
        clock.advance(30.0)
        waiting.wait_until(lambda: runner.outbox_drains == 1, "the outbox timer", 30)
        with cab.db() as s:
            assert s.get(CabinetSession, session_id).outcome == "charged"
        assert cab.gateway.effects()["capture"] == 1
    finally:
        runner.stop_from_thread()
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_encryption_key_file_in_the_configuration_seals_templates_and_tokens(make_cabinet,
                                                                            tmp_path):
    key = write_key_file(tmp_path / "cabinet.key")
    config = write_config(tmp_path / "conf", encryption_key_file="../cabinet.key")
    workdir = tmp_path / "demo"
    cab = make_cabinet(config=config, workdir=workdir)
    box, other = load_key_file(key), load_key_file(write_key_file(tmp_path / "other.key"))
    with cab.db() as s:
        templates = s.execute(select(FaceTemplate.account_id, FaceTemplate.encoding)).all()
        tokens = s.execute(select(Account.id, Account.payment_token)).all()
    assert templates and tokens
    for account_id, sealed in templates:
        assert len(box.open(sealed, account_id=account_id, purpose="face_template")) > 0
        with pytest.raises(SecretError):
            other.open(sealed, account_id=account_id, purpose="face_template")
    for account_id, sealed in tokens:
        assert box.open_text(sealed, account_id=account_id, purpose="payment_token") \
            == "tok_visa_ok"
    # the database's own key file was never made: the configuration named one
    assert not (workdir / "cabinet.sqlite.key").exists()
    assert len(cab.controller.gallery) == len(templates)


@pytest.mark.parametrize("make_bad", ["missing", "a folder"])
def test_a_key_file_that_is_not_there_is_exit_2_naming_key_and_path_and_nothing_written(
        tmp_path, make_bad):
    key = tmp_path / "keys" / "cabinet.key"
    if make_bad == "a folder":
        key.mkdir(parents=True)
    config = write_config(tmp_path / "conf", encryption_key_file=str(key))
    out = subprocess.run([*CABINET, "recover", "--config", str(config)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1, out.stderr           # one line, no traceback
    assert f"encryption_key_file = {key}: {key}: " in out.stderr
    assert ("not found" if make_bad == "missing" else "cannot be read") in out.stderr
    assert "cabinet accounts keygen" in out.stderr
    assert not (tmp_path / "conf" / "data").exists()
    with pytest.raises(KeyFileError, match="encryption_key_file"):
        App(config).start()
    assert not (tmp_path / "conf" / "data").exists()


def test_a_refusal_journalled_but_never_recorded_is_recorded_once_at_the_restart(make_cabinet):
    """The crash falls between the refusal's journal row (the session is over for the
    journal) and billing's record of it: the restart records it, once."""
    cab = make_cabinet(timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)
    journal = cab.controller.journal

    def write(record):
        journal.write(record)
        if record.trigger == "denied":
            raise Crash("after the denial's row")
    cab.controller.machine = SessionMachine(write)
    stranger = next(s for s in cab.scenarios if s.expect.outcome == "denied")
    cab.face_camera.show(cab.photo_for(stranger.person_for(fallback=cab.fallback_faces),
                                       stranger.photo))

    async def main():
        frame = await cab.controller.wait_for_face(FAST.face_s)
        assert frame is not None
        with pytest.raises(Crash):
            await cab.controller.session(frame)

    try:
        asyncio.run(asyncio.wait_for(main(), REAL_BOUND_S))
    finally:
        cab.face_camera.show(None)
    session_id = cab.controller.machine.session_id
    assert Journal(cab.db).open_sessions() == []           # the journal has it ended
    with cab.db() as s:
        assert s.get(CabinetSession, session_id) is None    # billing never heard of it

    for _restart in range(2):
        cab.controller = cab.new_controller()
        assert asyncio.run(asyncio.wait_for(cab.controller.recover(), REAL_BOUND_S)) == []
        with cab.db() as s:
            rows = s.scalars(select(CabinetSession)).all()
        assert [(r.id, r.state, r.outcome) for r in rows] == [(session_id, "closed", "denied")]
        assert rows[0].outcome_reason.startswith("face not recognised")


def test_a_session_only_the_cabinets_restart_flagged_does_not_cost_the_customer_trust(
        make_cabinet):
    cab = make_cabinet()
    account_id = next(iter(cab.account_ids.values()))
    before = cab.billing.admission(account_id).score

    def closed_session(session_id: str, flags: list[str]) -> int:
        with cab.db.begin() as s:
            s.add(CabinetSession(id=session_id, account_id=account_id, cabinet_id="c",
                                 currency="EUR", state="closed", outcome="nothing_taken",
                                 total=0, flags=flags))
        return cab.billing.admission(account_id).score

    assert closed_session("s-restart", ["recovered_after_restart"]) == before
    assert closed_session("s-doubt", ["recovered_after_restart", "low_confidence"]) == before - 5


def test_customers_renamed_in_the_accounts_file_are_not_enrolled_again(make_cabinet,
                                                                       tmp_path):
    """The accounts file's `id` is the key: a corrected name is the same customer."""
    workdir = tmp_path / "demo"
    cab = make_cabinet(workdir=workdir)
    before, ids = _counts(cab.db), dict(cab.account_ids)
    cab.close()
    accounts = yaml.safe_load((FIXTURES / "accounts.yaml").read_text())
    for account in accounts["accounts"]:
        account["name"] += " Jr."
    (tmp_path / "accounts.yaml").write_text(yaml.safe_dump(accounts))
    config = write_config(tmp_path / "conf", accounts=str(tmp_path / "accounts.yaml"))
    cab = make_cabinet(config=config, workdir=workdir)
    assert _counts(cab.db) == before
    assert cab.account_ids == ids
