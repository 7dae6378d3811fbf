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

import os
import tty

import pytest

from firmware_bridge import events as E
from firmware_bridge import protocol as P
from firmware_bridge.clock import ManualClock
from firmware_bridge.errors import LinkDown
from waiting import wait_until


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


class RawHost:
    """The host side of a simulated MCU's pty without a Link: bytes in, decoded replies out."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.decoder = P.Decoder()
        self.replies: list[P.Message] = []

    def send(self, msg: P.Message) -> None:
        os.write(self.fd, P.encode(msg))

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        self.replies += [r.message for r in self.decoder.feed(data)
                         if r.message is not None and r.message.KIND == "reply"]

    def reply_to(self, seq: int, timeout_s: float = 5.0) -> P.Message:
        def answered():
            self._read()
            return next((m for m in self.replies if m.seq == seq), None)
        reply = wait_until(answered, f"the reply to command {seq}", timeout_s, poll_s=0.002)
        self.replies.remove(reply)
        return reply

    def close(self) -> None:
        os.close(self.fd)


def test_a_reboot_retransmitted_after_the_boot_is_acked_again_not_run_again(make_sim):
    """A host that read the Reboot's ack late (a loaded machine) or lost it sends the same
    bytes again, and they may reach the board after it has booted: like firmware that keeps
    the last command in RAM a software reset does not clear, the board acks it again."""
    clock = ManualClock(start=0.0)
    sim = make_sim(clock=clock)
    host = RawHost(sim.path)
    try:
        host.send(P.Reboot(seq=41))
        assert host.reply_to(41) == P.Ack(41)
        # the board acks, then resets: on a loaded machine the ack can be read before the reset
        # ran, and a clock advanced before it would leave the board booting at the new time
        wait_until(lambda: sim.boots == 2, "the board to reset after its ack", 5)
        first = sim.boot_id
        now = clock.advance(sim.boot_time_s + 0.1)          # booted, heartbeating again
        wait_until(lambda: sim.ticked_at >= now, "the MCU to run at the new time", 5)
        host.send(P.Reboot(seq=41))                         # the retransmission
        assert host.reply_to(41) == P.Ack(41)
        assert (sim.boots, sim.boot_id, sim.duplicates_dropped) == (2, first, 1)
        host.send(P.Reboot(seq=42))                         # a new Reboot does reboot
        assert host.reply_to(42) == P.Ack(42)
        wait_until(lambda: sim.boots == 3, "the board to reset after its ack", 5)
        assert sim.boot_id != first
    finally:
        host.close()


@pytest.mark.parametrize("lost", [1, 5])
def test_a_reboot_whose_ack_is_lost_still_returns_the_new_identity(clocked, lost):
    """The ack lost on the line: the host retransmits, into the board's boot (dropped) or after
    it (acked again, not run again), and once the acks of those are lost too, sees the new boot
    id in a heartbeat, which drops the request in flight. The reboot happened, once, and
    ``reboot()`` returns the new identity instead of raising LinkDown."""
    old = clocked.board.identity.boot_id
    clocked.sim.inject("lose_ack", count=lost)
    new = clocked.call(lambda: clocked.board.reboot(timeout_s=5.0))
    assert new.boot_id != old and new.boot_id == clocked.sim.boot_id
    assert clocked.sim.boots == 2
    assert sum(isinstance(e, E.McuReset) for e in clocked.events) == 1


def test_a_reboot_that_never_reaches_the_board_fails_at_once(clocked):
    clocked.sim.inject("port_vanish", duration_s=60)
    clocked.until(lambda: not clocked.board.counters().up, 5.0, "the link lost")
    with pytest.raises(LinkDown, match="link is down, cannot send Reboot"):
        clocked.board.reboot(timeout_s=5.0)
