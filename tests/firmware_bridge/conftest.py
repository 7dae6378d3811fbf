"""Fixtures: a simulated MCU on a real pty and Boards with short timeouts, so faults show fast."""
from __future__ import annotations

import time
from typing import Callable

import pytest

from firmware_bridge.device import Board
from firmware_bridge.ports import RegistryPortFinder
from firmware_bridge.simulator import SimMCU

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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def wait_for():
    """wait_for(cond, timeout_s, what): poll until cond() is truthy, else fail naming what."""
    return _wait_for
