"""A controller that dies at any transition resumes the session on restart and finishes it.

The crash is the journal refusing to write one transition (so neither it nor its effect
happens, exactly as if the power went at that instant). A fresh Controller over the same
SQLite file, board and gateway then runs `recover()`. Whatever the crash point, the session
ends with one outcome, the customer pays once for what they took, the belief about the
shelves moves once, and the door is locked. Each crash point gets its own simulated cabinet.

The controller's clock is a ManualClock that no test advances: neither the crashed session
nor its recovery may wait out a timeout, and one that tried would fail the real-time bound.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from sqlalchemy import select

from billing.models import CabinetSession, Charge, Hold
from cabinet.config import TimeoutsConfig
from cabinet.machine import SessionMachine
from firmware_bridge.clock import SYSTEM, ManualClock

pytestmark = pytest.mark.slow

FAST = TimeoutsConfig(face_s=3.0, auth_s=5.0, unlock_pulse_ms=1500, door_open_alarm_s=5.0,
                      door_open_max_s=10.0, settle_s=3.0)
REAL_BOUND_S = 60.0


class Crash(Exception):
    pass


@pytest.fixture
def cab(make_cabinet):
    return make_cabinet(timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)


def _fullest_slot(cab):
    stock = cab.world.stock()
    return max(stock, key=lambda slot: len(stock[slot]))


async def _customer(cab, slot):
    """Waits (bounded) for the lock to release, takes one item from `slot`, shuts the door."""
    deadline = time.monotonic() + 30.0
    while cab.mcu.lock_engaged:
        assert time.monotonic() < deadline, "the lock never released"
        await asyncio.sleep(0.005)
    assert cab.mcu.open_door()
    cab.world.take(slot, 1)
    cab.mcu.close_door()
    return cab.world.leave()


def _crash_at(cab, trigger):
    journal = cab.controller.journal

    def write(record):
        if record.trigger == trigger:
            raise Crash(trigger)
        journal.write(record)
    cab.controller.machine = SessionMachine(write)


def _first_life(cab, trigger, slot):
    """One session that dies at `trigger`; returns (session id, what the customer took)."""
    person = next(iter(cab.account_ids))
    _crash_at(cab, trigger)
    cab.face_camera.show(cab.photo_for(person, 0))
    lock_released = trigger not in ("face_seen", "authorized")

    async def main():
        frame = await cab.controller.wait_for_face(FAST.face_s)
        assert frame is not None
        customer = asyncio.create_task(_customer(cab, slot)) if lock_released else None
        with pytest.raises(Crash):
            await cab.controller.session(frame)
        return await customer if customer else Counter()

    try:
        truth = asyncio.run(asyncio.wait_for(main(), REAL_BOUND_S))
    finally:
        cab.face_camera.show(None)
    return cab.controller.machine.session_id, truth


def _restart_and_recover(cab):
    cab.controller = cab.new_controller()            # the restart: nothing kept in memory
    return asyncio.run(asyncio.wait_for(cab.controller.recover(), REAL_BOUND_S))


def _outcome(cab, session_id):
    with cab.db() as s:
        row = s.get(CabinetSession, session_id)
        return None if row is None else row.outcome


@pytest.mark.parametrize("trigger", ["door_opened", "door_closed", "settled", "reconciled",
                                     "finished"])
def test_a_crash_after_the_unlock_is_charged_once_after_restart(cab, trigger):
    slot = _fullest_slot(cab)
    sku = cab.planogram.slot(slot).sku
    stock_before = len(cab.inventory.slots()[slot])
    session_id, truth = _first_life(cab, trigger, slot)
    assert truth == Counter({sku: 1})
    assert cab.mcu.unlocks_executed == 1

    reports = _restart_and_recover(cab)
    assert [r.session_id for r in reports] == [session_id]
    report = reports[0]
    assert report.outcome == "charged" and report.basket == {sku: 1}, report
    assert report.total == cab.catalog[sku].price
    assert "recovered_after_restart" in report.flags
    assert cab.controller.journal.open_sessions() == []
    assert cab.controller.machine.state == "idle"
    assert cab.mcu.lock_engaged and cab.mcu.unlocks_executed == 1
    assert _outcome(cab, session_id) == "charged"
    assert cab.gateway.effects()["capture"] == 1
    with cab.db() as s:
        charges = s.scalars(select(Charge).where(Charge.session_id == session_id)).all()
    assert [c.amount for c in charges] == [cab.catalog[sku].price]
    # the belief about the shelves moved exactly once
    assert len(cab.inventory.slots()[slot]) == stock_before - 1
    assert cab.inventory.slots()[slot] == list(cab.world.slot_skus(slot))

    # a second restart finds nothing open and charges nothing again
    assert _restart_and_recover(cab) == []
    assert cab.gateway.effects()["capture"] == 1
    assert len(cab.inventory.slots()[slot]) == stock_before - 1


def test_a_crash_before_the_unlock_voids_the_hold_and_nobody_gets_in(cab):
    slot = _fullest_slot(cab)
    before = cab.inventory.slots()
    session_id, truth = _first_life(cab, "authorized", slot)
    assert truth == Counter() and cab.mcu.unlocks_executed == 0

    reports = _restart_and_recover(cab)
    assert [(r.session_id, r.outcome) for r in reports] == [(session_id, "denied")]
    assert "restarted while identifying" in reports[0].reason
    assert cab.controller.journal.open_sessions() == []
    assert cab.controller.machine.state == "idle"
    assert cab.mcu.lock_engaged and cab.mcu.unlocks_executed == 0
    assert _outcome(cab, session_id) == "void"
    with cab.db() as s:
        (hold,) = s.scalars(select(Hold).where(Hold.session_id == session_id)).all()
    assert hold.status == "voided"
    assert cab.gateway.intent(hold.gateway_auth_id)["status"] == "canceled"
    effects = cab.gateway.effects()
    assert effects["authorize"] == 1 and effects["void"] == 1 and effects["capture"] == 0
    assert cab.inventory.slots() == before


def test_a_crash_at_the_first_transition_leaves_nothing_to_finish(cab):
    session_id, truth = _first_life(cab, "face_seen", _fullest_slot(cab))
    assert truth == Counter()
    assert _restart_and_recover(cab) == []
    assert _outcome(cab, session_id) is None                 # no session, no hold was placed
    assert cab.gateway.effects()["authorize"] == 0
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert cab.controller.machine.state == "idle"
