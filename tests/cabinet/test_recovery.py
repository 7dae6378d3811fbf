"""A controller that dies at any transition resumes the session on restart and finishes it.

The crash is the journal refusing to write one transition (so neither it nor its effect
happens, exactly as if the power went at that instant). A fresh Controller over the same
SQLite file, board and gateway then runs `recover()`. Whatever the crash point, the session
ends with one outcome, the customer pays once for what they took, the belief about the
shelves moves once, and the door is locked.
"""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select

from billing.models import CabinetSession, Charge
from cabinet.config import TimeoutsConfig
from cabinet.demo import SimCabinet
from cabinet.machine import SessionMachine

pytestmark = pytest.mark.slow

FAST = TimeoutsConfig(face_s=3.0, auth_s=5.0, unlock_pulse_ms=800, door_open_alarm_s=5.0,
              door_open_max_s=10.0, settle_s=3.0)


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def cab(tmp_path_factory):
    cabinet = SimCabinet(tmp_path_factory.mktemp("recovery"), timing=FAST)
    yield cabinet
    cabinet.close()


def _fullest_slot(cab):
    stock = cab.world.stock()
    return max(stock, key=lambda slot: len(stock[slot]))


async def _customer(cab, slot):
    for _ in range(500):
        if not cab.mcu.lock_engaged:
            break
        await asyncio.sleep(0.01)
    else:
        return Counter()
    assert cab.mcu.open_door()
    await asyncio.sleep(0.05)
    cab.world.take(slot, 1)
    await asyncio.sleep(0.1)
    cab.mcu.close_door()
    return cab.world.leave()


def _crash_at(cab, trigger):
    journal = cab.controller.journal

    def write(record):
        if record.trigger == trigger:
            raise Crash(trigger)
        journal.write(record)
    cab.controller.machine = SessionMachine(write)


@pytest.mark.parametrize("trigger", ["authorized", "door_opened", "door_closed", "settled",
                                     "reconciled", "finished"])
def test_a_crash_at_any_transition_is_finished_after_restart(cab, trigger):
    person = next(iter(cab.account_ids))
    slot = _fullest_slot(cab)
    sku = cab.planogram.slot(slot).sku
    captures_before = cab.gateway.effects()["capture"]
    unlocks_before = cab.mcu.unlocks_executed
    _crash_at(cab, trigger)
    cab.face_camera.show(cab.photo_for(person, 0))

    async def first_life():
        frame = await cab.controller.wait_for_face(2.0)
        customer = asyncio.create_task(_customer(cab, slot))
        with pytest.raises(Crash):
            await cab.controller.session(frame)
        if trigger == "authorized":       # died before the unlock: nobody gets in
            customer.cancel()
            return Counter()
        return await customer

    try:
        truth = asyncio.run(first_life())
    finally:
        cab.face_camera.show(None)
    session_id = cab.controller.machine.session_id

    cab.controller = cab.new_controller()            # the restart
    reports = asyncio.run(cab.controller.recover())
    assert [r.session_id for r in reports] == [session_id]
    report = reports[0]
    assert cab.controller.journal.open_sessions() == []
    assert cab.controller.machine.state == "idle"
    assert cab.mcu.lock_engaged

    if trigger == "authorized":
        assert cab.mcu.unlocks_executed == unlocks_before
        assert truth == Counter()
        with cab.db() as s:
            assert s.get(CabinetSession, session_id).outcome in ("void", "denied")
        assert cab.gateway.effects()["capture"] == captures_before
        return
    assert truth == Counter({sku: 1})
    assert report.outcome == "charged" and report.basket == {sku: 1}, report
    assert cab.gateway.effects()["capture"] == captures_before + 1
    with cab.db() as s:
        charges = s.scalars(select(Charge).where(Charge.session_id == session_id)).all()
        assert [c.amount for c in charges] == [cab.catalog[sku].price]
    # the belief about the shelves moved exactly once
    assert cab.inventory.slots()[slot] == list(cab.world.slot_skus(slot))
