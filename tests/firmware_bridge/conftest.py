"""Fixtures: a simulated MCU on a real pty and Boards with short timeouts, so faults show fast;
``clocked``: the two on one ManualClock, for tests whose waits are long in clock time."""
from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from firmware_bridge.clock import ManualClock
from firmware_bridge.device import Board
from firmware_bridge.ports import RegistryPortFinder
from firmware_bridge.simulator import SimMCU
from waiting import wait_until

FAST = dict(timeout_s=1.0, heartbeat_s=0.1, mcu_heartbeat_s=0.2, missed_heartbeats=4,
            host_timeout_s=1.0, reconnect_max_s=0.4, stable_window_s=0.5)


@pytest.fixture
def registry(tmp_path) -> RegistryPortFinder:
    return RegistryPortFinder(tmp_path / "ports")


@pytest.fixture
def make_sim(registry):
    sims: list[SimMCU] = []

    def make(**kw) -> SimMCU:
        kw.setdefault("registry_dir", registry.directory)
        kw.setdefault("settle_s", 0.2)
        sim = SimMCU(**kw)
        sim.start()
        sims.append(sim)
        return sim
    yield make
    for s in sims:
        s.stop()


@pytest.fixture
def sim(make_sim) -> SimMCU:
    return make_sim()


@pytest.fixture
def make_board(registry):
    boards: list[Board] = []

    def make(port: str, **kw) -> Board:
        opts = dict(FAST, finder=registry)
        opts.update(kw)
        b = Board(port, **opts)
        boards.append(b)
        return b
    yield make
    for b in boards:
        b.close()


@pytest.fixture
def board(sim, make_board):
    events: list = []
    b = make_board(sim.path, on_event=events.append)
    b.open()
    b.events = events
    return b


def _wait_for(cond: Callable[[], object], timeout_s: float = 5.0, what: str = "condition"):
    return wait_until(cond, what, timeout_s)


@pytest.fixture
def wait_for():
    """wait_for(cond, timeout_s, what): poll until cond() is truthy, else fail naming what."""
    return _wait_for


class ClockedRig:
    """A SimMCU and a Board on one ManualClock. Time moves only in ``until``/``call``: in
    steps of ``step`` clock seconds, each followed by a (bounded, real-time) wait for the
    MCU's loop to have run at the new time, so seconds of settling take milliseconds."""

    def __init__(self, clock, sim, board, events: list, step: float = 0.02) -> None:
        self.clock, self.sim, self.board, self.events, self.step = clock, sim, board, events, step

    def until(self, cond: Callable[[], object], most_s: float = 10.0, what: str = "condition",
              real_timeout_s: float = 20.0):
        start, give_up = self.clock.monotonic(), time.monotonic() + real_timeout_s
        while True:
            v = cond()
            if v:
                return v
            if self.clock.monotonic() - start > most_s or time.monotonic() > give_up:
                raise AssertionError(f"no {what} within {most_s} s of clock time")
            now = self.clock.advance(self.step)
            wait_until(lambda: self.sim.ticked_at >= now, "the simulated MCU to follow the clock",
                       max(0.0, give_up - time.monotonic()), poll_s=0.0005)

    def call(self, fn: Callable[[], object], most_s: float = 10.0):
        """Run fn (which waits on the clock) in a thread while time moves; its result or error."""
        out: list = []

        def run() -> None:
            try:
                out.append((True, fn()))
            except BaseException as e:      # re-raised in the test's thread below
                out.append((False, e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.until(lambda: not t.is_alive(), most_s, getattr(fn, "__name__", "call"))
        ok, value = out[0]
        if not ok:
            raise value
        return value


@pytest.fixture
def make_clocked(make_sim, make_board):
    def make(sim_kw: dict | None = None, **board_kw) -> ClockedRig:
        clock = ManualClock(start=0.0)
        sim = make_sim(clock=clock, **(sim_kw or {}))
        events: list = []
        board = make_board(sim.path, clock=clock, on_event=events.append, **board_kw)
        rig = ClockedRig(clock, sim, board, events)
        rig.call(board.open)
        return rig
    return make


@pytest.fixture
def clocked(make_clocked) -> ClockedRig:
    return make_clocked()
