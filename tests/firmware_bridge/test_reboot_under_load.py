"""Reboots and reconnects while other simulated boards with the same serial number run.

Every simulated board says SIM-0001 unless told otherwise, and a simulator publishes its pty
under that serial in one registry per machine (ports.py), the last one started winning. On a
machine shared by several test runs, a `cabinet bench crash` and a `cabinet run`, looking the
board up by serial number after a reboot found another process's simulator: busy (held by its
own controller, so the reconnect failed until `Board.reboot` gave up: "did not come back within
30 s") or idle (so the link took that board over). These flakes showed only under load because
load was the other engineers' test runs. The link now goes back to the tty its board answered
on while that node still exists unchanged; only a board whose tty went away is looked up.

Both boards and the host run on one ManualClock (ClockedRig), so the reboot's deadline and the
reconnect's back-off are clock time, whatever the machine's load.
"""
from __future__ import annotations

import pytest

from firmware_bridge import events as E


@pytest.mark.parametrize("other_busy", [False, True], ids=["other-idle", "other-busy"])
def test_a_reboot_comes_back_on_its_own_tty_while_another_board_holds_its_serial(
        make_clocked, make_sim, registry, other_busy):
    rig = make_clocked()
    other = make_sim(clock=rig.clock, seed=7)          # also SIM-0001, published last
    assert registry.find("SIM-0001") == other.path != rig.sim.path
    if other_busy:
        other.inject("busy")                           # its own host holds it (flock, TIOCEXCL)
    old = rig.board.identity
    new = rig.call(lambda: rig.board.reboot(timeout_s=5.0))
    assert (new.boot_id != old.boot_id, new.reset_reason) == (True, "software")
    assert (new.port, rig.sim.boots) == (rig.sim.path, 2)
    assert other.commands_executed == 0                # never asked who it is
    assert sum(isinstance(e, E.McuReset) for e in rig.events) == 1
    rig.call(lambda: rig.board.unlock(200))            # and the link works on the right board
    assert (rig.sim.unlocks_executed, other.unlocks_executed) == (1, 0)


def test_an_mcu_that_reboots_by_itself_is_found_on_its_own_tty(make_clocked, make_sim,
                                                                 registry):
    """The watchdog case (no Reboot command): the new boot id comes in a heartbeat."""
    rig = make_clocked()
    other = make_sim(clock=rig.clock, seed=7)
    assert registry.find("SIM-0001") == other.path
    old = rig.board.identity.boot_id
    rig.sim.inject("reboot", reason="watchdog")
    reset = rig.until(lambda: next((e for e in rig.events if isinstance(e, E.McuReset)), None),
                      5.0, "McuReset")
    assert reset.identity.boot_id != old and reset.identity.port == rig.sim.path
    assert reset.identity.reset_reason == "watchdog"
    assert other.commands_executed == 0


def test_a_port_that_vanished_is_still_looked_up_by_serial_number(make_clocked, registry):
    """Going back to the old tty only while it lives: a board whose pty was closed is found
    where the registry says it is now."""
    rig = make_clocked()
    old_path = rig.sim.path
    rig.sim.inject("port_vanish", duration_s=0.5)
    rig.until(lambda: any(isinstance(e, E.LinkRestored) for e in rig.events), 10.0,
              "LinkRestored")
    assert rig.sim.path != old_path and rig.board.identity.port == rig.sim.path
    assert registry.find("SIM-0001") == rig.sim.path
