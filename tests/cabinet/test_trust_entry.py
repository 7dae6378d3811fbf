"""Trust at the door (billing/standing.py through cabinet/controller.py): a confident face of an
account whose trust score asks for a second factor gets the PIN pad, for that account only; an
established account's face alone opens the door; low trust with no PIN to type is refused.

The cabinets are the simulated ones of tests/cabinet/conftest.py on a ManualClock; the kiosk is
the real KioskState and the PIN store the real billing.pin.Pins, as `cabinet run` wires them.
The session and PIN helpers are test_controller's."""
from __future__ import annotations

import pytest

from billing.models import CabinetSession, Dispute
from billing.pin import Pins, set_pin
from cabinet.kiosk import state as ks
from firmware_bridge.clock import SYSTEM, ManualClock
from tests.cabinet.test_controller import (FAST, _customer_photo, _entries, _holds, _session,
                                           _take_one, until)

pytestmark = pytest.mark.slow
PIN = "4821"


@pytest.fixture
def cab(make_cabinet):
    cab = make_cabinet(timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)
    cab.controller.kiosk = ks.KioskState(clock=cab.clock)
    cab.controller.pins = Pins(cab.app.db)
    return cab


def _account(cab) -> int:
    person, _ = _customer_photo(cab)
    return cab.account_ids[person]


def _pin_pad_shown(c) -> bool:
    pending = c.controller._pin_future
    return isinstance(c.controller.kiosk.screen, ks.SecondFactor) and pending is not None \
        and not pending.done()


def _types(*pins):
    """A customer who types each PIN in turn whenever the pad asks (and then walks up)."""
    async def customer(c):
        for pin in pins:
            await until(lambda: _pin_pad_shown(c), "the kiosk shows the PIN pad")
            c.controller.submit_pin(pin)
            await until(lambda: not _pin_pad_shown(c), "the PIN was taken")
    return customer


def _paid_history(cab, account_id: int, sessions: int) -> None:
    """Sessions the account paid for before (the trust score counts them)."""
    with cab.billing._sessions.begin() as db:
        for i in range(sessions):
            db.add(CabinetSession(id=f"earlier-{i}", account_id=account_id, cabinet_id="c",
                                  currency=cab.billing.currency, outcome="charged", flags=[],
                                  opened_at=cab.billing._clock()))


def test_a_new_accounts_confident_face_still_needs_its_pin_then_shops(cab):
    account_id = _account(cab)
    assert cab.billing.admission(account_id).entry == "second_factor"    # a new account: 50
    set_pin(cab.app.db, account_id, PIN)
    report = _session(cab, _types(PIN), _take_one())
    assert report.outcome == "charged" and report.account_id == account_id
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "authorized"]
    # the face alone would have been enough: accepted, inside the accept line
    assert (data["identity_outcome"], data["identity_reason"]) == ("accept", "matched")
    assert data["best_distance"] <= 0.45
    assert (data["trust_entry"], data["second_factor"]) == ("second_factor", "pin")


def test_a_wrong_pin_keeps_the_door_shut_even_for_a_confident_face(cab):
    account_id = _account(cab)
    set_pin(cab.app.db, account_id, PIN)
    wrong = "0000" if PIN != "0000" else "1111"
    report = _session(cab, _types(*[wrong] * cab.controller.pin_attempts))
    assert report.outcome == "denied" and report.reason.startswith("wrong PIN")
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert _holds(cab, report.session_id) == []
    assert cab.gateway.effects()["authorize"] == 0


def test_an_established_account_opens_with_its_face_alone(cab):
    account_id = _account(cab)
    set_pin(cab.app.db, account_id, PIN)
    _paid_history(cab, account_id, 10)                                  # 50 + 10 x 2 = 70
    assert cab.billing.admission(account_id).entry == "face"
    report = _session(cab, _take_one())             # nobody types anything
    assert report.outcome == "charged" and report.account_id == account_id
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "authorized"]
    assert "trust_entry" not in data and "second_factor" not in data


def test_low_trust_without_a_pin_is_refused_at_the_door_with_no_hold(cab):
    account_id = _account(cab)
    with cab.billing._sessions.begin() as db:                          # 50 - 20 = 30
        db.add(Dispute(account_id=account_id, status="open", opened_at=cab.billing._clock()))
    assert cab.billing.admission(account_id).code == "low_trust_second_factor"
    report = _session(cab)
    assert report.outcome == "denied" and "must confirm with a PIN" in report.reason
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert _holds(cab, report.session_id) == []
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "denied"]
    assert data["trust_entry"] == "low_trust_second_factor"


def test_low_trust_with_its_pin_shops_under_a_double_hold(cab):
    account_id = _account(cab)
    with cab.billing._sessions.begin() as db:
        db.add(Dispute(account_id=account_id, status="open", opened_at=cab.billing._clock()))
    set_pin(cab.app.db, account_id, PIN)
    report = _session(cab, _types(PIN), _take_one())
    assert report.outcome == "charged" and report.account_id == account_id
    [hold] = _holds(cab, report.session_id)
    assert hold.amount == 2 * cab.billing.hold_amount


def test_a_refused_standing_is_refused_before_any_pin(cab):
    account_id = _account(cab)
    set_pin(cab.app.db, account_id, PIN)
    cab.billing.block(account_id, "test: card reported stolen")
    report = _session(cab)
    assert report.outcome == "denied" and "stolen" in report.reason
    assert cab.mcu.unlocks_executed == 0
    # straight to the refusal with its reason's code: the PIN pad never came
    assert cab.controller.kiosk.screen == ks.Refused("account_blocked")
    assert "trust_entry" not in [e for e in _entries(cab, report.session_id)
                                 if e[0] == "denied"][0][2]
