"""Safety lives in the MCU: timed pulses, relock on host silence, forced-door alarms."""
from __future__ import annotations

import time

import pytest

from firmware_bridge import events as E
from firmware_bridge.device import CommandRefused


def test_unlock_with_no_door_opening_relocks_after_the_pulse(sim, board, wait_for):
    board.unlock(300)
    st = board.state()
    assert not st.lock_engaged and 0 < st.unlock_remaining_ms <= 300
    wait_for(lambda: any(isinstance(e, E.LockChanged) and e.engaged for e in board.events), 2,
             "relock")
    relock = [e for e in board.events if isinstance(e, E.LockChanged)][-1]
    assert relock.reason == "pulse ended" and board.state().lock_engaged
    assert not sim.open_door()


def test_the_door_shutting_ends_the_pulse_so_it_cannot_be_reopened(sim, board, wait_for):
    board.unlock(5000)
    wait_for(lambda: not sim.lock_engaged, 2, "unlock")
    assert sim.open_door()
    sim.close_door()
    wait_for(lambda: any(isinstance(e, E.LockChanged) and e.engaged for e in board.events), 2,
             "relock on close")
    relock = [e for e in board.events if isinstance(e, E.LockChanged)][-1]
    assert relock.reason == "door closed" and sim.lock_engaged
    assert not sim.open_door()              # 4.9 s of pulse left, but the latch holds


def test_pulse_over_the_maximum_is_refused_by_the_mcu(make_sim, make_board):
    sim = make_sim(max_unlock_ms=2000)
    b = make_board(sim.path)
    b.open()
    with pytest.raises(CommandRefused, match=r"unlock for 5000 ms refused.*1\.\.2000 ms"):
        b.unlock(5000)
    assert sim.unlocks_executed == 0 and b.state().lock_engaged


def test_host_heartbeat_stop_relocks(sim, make_board, wait_for):
    b = make_board(sim.path, host_timeout_s=0.4)
    b.open()
    b.unlock(8000)
    b.close()                               # the host dies mid-pulse
    wait_for(lambda: sim.lock_engaged, 2, "MCU relock on host silence")


def test_forced_door_raises_the_alarm(sim, board, wait_for):
    assert not sim.open_door()              # locked: a normal pull does nothing
    sim.inject("forced_door")
    wait_for(lambda: any(isinstance(e, E.DoorOpened) for e in board.events), 2, "door opened")
    kinds = [type(e) for e in board.events]
    assert kinds.index(E.ForcedDoor) < kinds.index(E.DoorOpened)


def test_temperature_alarm_and_recovery(sim, board, wait_for):
    sim.temperature_c = 11.0
    wait_for(lambda: any(isinstance(e, E.TemperatureAlarm) for e in board.events), 2, "alarm")
    sim.temperature_c = 4.0
    wait_for(lambda: any(isinstance(e, E.TemperatureNormal) for e in board.events), 2, "normal")
    assert board.state().temperature_c == pytest.approx(4.0, abs=0.3)


def test_dry_cabinet_has_no_temperature(make_sim, make_board):
    sim = make_sim(has_temperature=False)
    b = make_board(sim.path)
    assert not b.open().has_temperature
    assert b.state().temperature_c is None
