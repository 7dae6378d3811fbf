"""The link's timers on a ManualClock: retransmits, the handshake, heartbeat loss, reconnects.

The simulated MCU runs on a real pty in real time; only the Board's clock is manual, so every
deadline of the link is stepped exactly (``advance_to_next``) once the link's threads wait
on it (``wait_until_idle``), and each test reads exact clock times instead of racing the machine.
Only what the lost frames decide is asserted exactly: a reply still crossing the pty when the
clock is stepped may cause one more (harmless) retransmit after them.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from firmware_bridge import events as E
from firmware_bridge.clock import ManualClock
from waiting import wait_until


def step_until(clock: ManualClock, done: Callable[[], bool], waiters: int,
               real_timeout_s: float = 10.0) -> None:
    """Advance ``clock`` deadline by deadline while ``waiters`` threads sit idle on it, until
    ``done()``; fails (bounded in real time) when that never happens."""
    give_up = time.monotonic() + real_timeout_s
    while not done():
        if time.monotonic() > give_up:
            raise AssertionError(f"not done after {real_timeout_s} s of real time; clock at "
                                 f"{clock.monotonic()}, deadlines {clock.deadlines()}")
        try:
            clock.wait_until_idle(waiters, timeout_s=0.05)
        except TimeoutError:
            continue                        # a thread is still busy, or has just finished
        if not done():
            clock.advance_to_next()


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list]:
    result: list = []

    def run() -> None:
        try:
            result.append(fn())
        except Exception as e:              # handed to the test, which asserts on it
            result.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def tx_times(trace: list, kind: str) -> list[float]:
    return [t for d, t, name in trace if d == "tx" and name == kind]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def test_lost_commands_are_retransmitted_with_a_doubling_timeout(sim, make_board):
    clock = ManualClock(start=0.0)
    board = make_board(sim.path, clock=clock, reconnect=False, heartbeat_s=1000.0)
    board.open()
    trace: list = []
    board.set_trace(lambda d, t, raw, m: trace.append((d, t, type(m).__name__)))
    sim.inject("lose_command", count=3)
    t, result = in_thread(lambda: board.unlock(200))
    step_until(clock, lambda: not t.is_alive(), waiters=2)
    assert result == [None]
    # the first four sends are certain (three are lost); a reply still on its way through
    # the pty when the clock is stepped may add a fifth, which the MCU drops as a duplicate
    sends = tx_times(trace, "Unlock")
    assert gaps(sends)[:3] == pytest.approx([0.025, 0.05, 0.1], abs=1e-6)  # doubling from the floor
    assert sim.unlocks_executed == 1 and board.counters().retransmits >= 3


def test_identify_handshake_retransmits_at_the_floor_without_backing_off(sim, make_board,
                                                                         wait_for):
    wait_for(lambda: sim.ticked_at >= sim.boot_at + sim.boot_time_s, 2, "the MCU booted")
    clock = ManualClock(start=0.0)
    trace: list = []
    board = make_board(sim.path, clock=clock, reconnect=False,
                       on_trace=lambda d, t, raw, m: trace.append((d, t, type(m).__name__)))
    sim.inject("lose_command", count=5)
    t, result = in_thread(board.open)
    step_until(clock, lambda: not t.is_alive(), waiters=1)
    assert result and result[0].board_serial == "SIM-0001", result
    sends = tx_times(trace, "Identify")
    assert len(sends) >= 6 and gaps(sends)[:5] == pytest.approx([0.025] * 5, abs=1e-6)


def test_silent_mcu_is_link_lost_after_missed_heartbeats_and_not_before(sim, make_board):
    clock = ManualClock(start=0.0)
    seen: list = []
    board = make_board(sim.path, clock=clock, reconnect=False, heartbeat_s=0.1,
                       mcu_heartbeat_s=0.2, missed_heartbeats=4,
                       on_event=lambda e: seen.append((clock.monotonic(), e)))
    board.open()
    last_rx = board._link._last_rx                    # the clock stood still since open
    sim.inject("silent")
    lost = lambda: [(at, e) for at, e in seen if isinstance(e, E.LinkLost)]
    step_until(clock, lambda: bool(lost()), waiters=1)
    (at, ev), = lost()
    assert at == pytest.approx(last_rx + 4 * 0.2, abs=1e-9)
    assert "no frame from the MCU for 0.8 s" in ev.reason
    assert board.counters().retransmits > 0           # its pings went unanswered meanwhile


def test_reconnect_attempts_back_off_doubling_up_to_the_cap(make_sim, make_board, registry):
    sim = make_sim()
    clock = ManualClock(start=0.0)
    attempts: list[float] = []
    lost_at: list[float] = []

    class RecordingFinder:
        def find(self, board_serial: str) -> str | None:
            attempts.append(clock.monotonic())
            return registry.find(board_serial)

    board = make_board(sim.path, clock=clock, finder=RecordingFinder(), reconnect_max_s=0.4,
                       on_event=lambda e: lost_at.append(clock.monotonic())
                       if isinstance(e, E.LinkLost) else None)
    board.open()
    sim.inject("port_vanish", duration_s=600)         # gone for the whole test
    step_until(clock, lambda: bool(lost_at) and len(attempts) >= 8, waiters=1)
    after = [a for a in attempts if a >= lost_at[0]][:6]
    assert gaps([lost_at[0], *after]) == pytest.approx([0.05, 0.05, 0.1, 0.2, 0.4, 0.4],
                                                     abs=1e-9)
    assert not board._link.up


def run_clock(clock: ManualClock, sim, until: Callable[[], bool], step: float = 0.02,
              most_s: float = 10.0, real_timeout_s: float = 20.0) -> float:
    """Advance a clock shared by a Board and a SimMCU in small steps, letting the MCU's loop
    catch up after each (bounded in real time), until ``until()``; returns the clock time."""
    start, give_up = clock.monotonic(), time.monotonic() + real_timeout_s
    while not until():
        if clock.monotonic() - start > most_s or time.monotonic() > give_up:
            raise AssertionError(f"not done after {clock.monotonic() - start:.2f} s of clock "
                                 f"time")
        now = clock.advance(step)
        wait_until(lambda: sim.ticked_at >= now, "the simulated MCU's loop to follow the clock",
                   max(0.0, give_up - time.monotonic()), poll_s=0.0005)
    return clock.monotonic()


def test_board_and_simulator_share_one_manual_clock(make_sim, make_board):
    """What the controller's tests do: one ManualClock drives both sides of the line."""
    clock = ManualClock(start=0.0)
    sim = make_sim(clock=clock)
    events: list = []
    board = make_board(sim.path, clock=clock, on_event=events.append)
    t, result = in_thread(board.open)
    run_clock(clock, sim, lambda: not t.is_alive())
    assert result[0].board_serial == "SIM-0001", result

    t, result = in_thread(lambda: board.unlock(300))
    run_clock(clock, sim, lambda: not t.is_alive())
    run_clock(clock, sim, lambda: any(isinstance(e, E.LockChanged) and e.engaged
                                      for e in events))
    released, relocked = [e for e in events if isinstance(e, E.LockChanged)]
    assert (released.reason, relocked.reason) == ("command", "pulse ended")
    # the MCU's 300 ms pulse in clock time, as the host sees it: an event read a few steps
    # late is stamped late (test_safety.py pins the MCU's own timing to the millisecond)
    assert 0.3 - 0.02 <= relocked.at - released.at <= 0.3 + 0.2
    sim.set_load(1, 500)
    t, result = in_thread(lambda: board.wait_stable([1], timeout_s=3.0))
    run_clock(clock, sim, lambda: not t.is_alive())
    reading = result[0][1]
    assert reading.stable and reading.grams == pytest.approx(500, abs=2)
    assert not any(isinstance(e, E.LinkLost) for e in events)
