"""Safety lives in the MCU: timed pulses, relock on host silence, forced-door alarms."""
from __future__ import annotations


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


def _caught_up(sim, clock, wait_for) -> None:
    wait_for(lambda: sim.ticked_at >= clock.monotonic(), 2, "the MCU's loop at the clock's time")


def _sim_on_manual_clock(make_sim, make_board, wait_for):
    from firmware_bridge.clock import ManualClock
    clock = ManualClock(start=0.0)
    sim = make_sim(clock=clock)
    clock.advance(sim.boot_time_s)                  # the MCU boots in clock time too
    _caught_up(sim, clock, wait_for)
    # the host runs in real time; the MCU's clock stands still, so its heartbeats do too
    events: list = []
    board = make_board(sim.path, missed_heartbeats=10_000, on_event=events.append)
    board.open()
    board.events = events
    return clock, sim, board


def test_unlock_pulse_ends_exactly_when_the_mcu_clock_says(make_sim, make_board, wait_for):
    clock, sim, board = _sim_on_manual_clock(make_sim, make_board, wait_for)
    board.unlock(300)
    clock.advance(0.299)
    _caught_up(sim, clock, wait_for)
    assert not sim.lock_engaged and 0 < board.state().unlock_remaining_ms <= 1
    clock.advance(0.001)
    _caught_up(sim, clock, wait_for)
    assert sim.lock_engaged
    wait_for(lambda: any(isinstance(e, E.LockChanged) and e.engaged for e in board.events), 2,
             "relock event")
    assert [e.reason for e in board.events if isinstance(e, E.LockChanged)] == \
        ["command", "pulse ended"]


def test_host_silence_relocks_exactly_after_the_host_timeout(make_sim, make_board, wait_for):
    clock, sim, board = _sim_on_manual_clock(make_sim, make_board, wait_for)
    board.unlock(8000)
    board.close()                                   # the host dies mid-pulse
    clock.advance(1.0 - 0.001)                      # host_timeout_s of the FAST options
    _caught_up(sim, clock, wait_for)
    assert not sim.lock_engaged
    clock.advance(0.002)
    _caught_up(sim, clock, wait_for)
    assert sim.lock_engaged
