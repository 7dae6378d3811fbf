"""Every link fault of SERIAL.md, injected by the simulated MCU over a real pty."""
from __future__ import annotations

import pytest

from firmware_bridge import events as E
from firmware_bridge import protocol as P
from firmware_bridge.device import (CommandRefused, LinkDown, PortBusy, PortNotFound,
                                    ProtocolVersionMismatch)


def all_events_delivered(board, wait_for) -> None:
    """Wait (bounded) until the board has delivered every event the MCU numbered so far."""
    sent = board.state().last_event_seq
    wait_for(lambda: board.counters().last_event_seq >= sent, 10, f"events up to {sent}")


def test_lost_command_is_retransmitted(sim, board):
    sim.inject("lose_command", count=2)
    board.unlock(200)
    assert sim.unlocks_executed == 1
    assert board.counters().retransmits >= 2


def test_lost_ack_retransmit_is_dropped_so_unlock_runs_once(sim, board):
    sim.inject("lose_ack", count=1)
    board.unlock(200)
    assert sim.unlocks_executed == 1
    assert sim.duplicates_dropped == 1
    assert board.counters().retransmits >= 1


def test_lost_event_gap_is_replayed_in_order(sim, board, wait_for):
    sim.inject("lose_event", count=1)
    board.unlock(2000)
    assert sim.open_door()
    sim.close_door()
    wait_for(lambda: sum(isinstance(e, E.DoorClosed) for e in board.events), 3, "DoorClosed")
    kinds = [type(e) for e in board.events]
    assert kinds[:3] == [E.LockChanged, E.DoorOpened, E.DoorClosed]
    assert board.counters().replays >= 1


def test_lost_trailing_event_is_found_from_the_heartbeat(make_sim, make_board, wait_for):
    sim = make_sim(batch_samples=100000)   # no weight events: nothing follows the lost one
    events: list = []
    board = make_board(sim.path, on_event=events.append)
    board.open()
    sim.inject("lose_event", count=1)
    board.unlock(2000)                     # its LockChanged event is lost
    wait_for(lambda: any(isinstance(e, E.LockChanged) for e in events), 3, "LockChanged")
    assert board.counters().replays >= 1


def test_late_reply_after_retry_is_ignored(sim, board, wait_for):
    sim.inject("late_reply", delay_s=0.2)
    board.lock()                           # answered by the retransmit's reply
    assert board.counters().retransmits >= 1
    board.unlock(2000)                     # the late reply to lock() must not answer this
    assert sim.unlocks_executed == 1
    wait_for(lambda: board.counters().late_replies >= 1, 3, "the late reply")
    assert board.counters().late_replies == 1
    assert sim.unlocks_executed == 1 and not board.state().lock_engaged


def test_silent_mcu_is_link_lost_then_restored(sim, board, wait_for):
    sim.inject("silent")
    wait_for(lambda: any(isinstance(e, E.LinkLost) for e in board.events), 3, "LinkLost")
    with pytest.raises(LinkDown, match="link is down"):
        board.lock()
    sim.clear("silent")
    wait_for(lambda: any(isinstance(e, E.LinkRestored) for e in board.events), 5, "LinkRestored")
    board.lock()
    assert not any(isinstance(e, E.McuReset) for e in board.events)


def test_mcu_reboot_mid_session_is_a_reset_with_resync(sim, board, wait_for):
    board.unlock(5000)
    old = board.identity.boot_id
    sim.inject("reboot", reason="watchdog")
    wait_for(lambda: any(isinstance(e, E.McuReset) for e in board.events), 3, "McuReset")
    reset = next(e for e in board.events if isinstance(e, E.McuReset))
    assert reset.identity.boot_id != old and reset.identity.reset_reason == "watchdog"
    # the reboot relocked the board: the host hears it as a resync lock change
    wait_for(lambda: any(isinstance(e, E.LockChanged) and e.engaged for e in board.events), 2,
             "relock after reset")
    assert board.state().lock_engaged
    sim.open_door(force=True)
    wait_for(lambda: any(isinstance(e, E.ForcedDoor) for e in board.events), 2, "new-boot event")


def test_reboot_command_reidentifies(board):
    old = board.identity.boot_id
    ident = board.reboot()
    assert ident.boot_id != old and ident.reset_reason == "software"


def test_version_mismatch_is_a_clear_error(make_sim, make_board):
    sim = make_sim()
    sim.inject("version_mismatch", version=0x0203)
    with pytest.raises(ProtocolVersionMismatch, match=r"protocol 2\.3.*speaks 1\.1"):
        make_board(sim.path).open()


def test_port_vanishes_and_returns_under_another_name(sim, board, wait_for):
    old = sim.path
    sim.inject("port_vanish", duration_s=0.5)
    wait_for(lambda: any(isinstance(e, E.LinkLost) for e in board.events), 3, "LinkLost")
    wait_for(lambda: any(isinstance(e, E.LinkRestored) for e in board.events), 6, "LinkRestored")
    assert sim.path != old and board.identity.port == sim.path, (sim.paths, board.events)
    board.unlock(100)
    assert sim.unlocks_executed == 1


def test_board_found_by_serial_number(sim, make_board):
    b = make_board("serial:SIM-0001")
    assert b.open().port == sim.path


def test_busy_port(sim, board, make_board):
    with pytest.raises(PortBusy, match=f"{sim.path} is in use"):
        make_board(sim.path).open()


def test_port_held_by_another_program(make_sim, make_board):
    sim = make_sim()
    sim.inject("busy")
    with pytest.raises(PortBusy):
        make_board(sim.path).open()
    sim.clear("busy")
    make_board(sim.path).open()


def test_nonexistent_port_is_a_one_line_error(make_board):
    with pytest.raises(PortNotFound) as info:
        make_board("/dev/ttyNOPE9").open()
    msg = str(info.value)
    assert "/dev/ttyNOPE9" in msg and "\n" not in msg and "does not exist" in msg


def test_event_flood_loses_nothing(sim, board, wait_for):
    before = board.counters()
    sim.inject("flood", count=2000)
    all_events_delivered(board, wait_for)
    after = board.counters()
    numbered = after.last_event_seq - before.last_event_seq
    assert numbered >= 2000
    assert after.events - before.events == numbered     # each one delivered, none skipped
    board.lock()


@pytest.mark.parametrize("fault,params", [
    ("split", {}), ("garbage", {"rate": 0.5}), ("debug_text", {}),
    ("bad_crc", {"rate": 0.2}), ("bitflip", {"rate": 0.005}), ("drop_bytes", {"rate": 0.005}),
    ("noise", {"rate": 0.01}), ("oversize", {})])
def test_line_faults_lose_no_command_and_no_door_event(sim, board, wait_for, fault, params):
    sim.inject(fault, **params)
    for _ in range(3):
        board.unlock(1000)
        assert sim.open_door()
        sim.close_door()
        board.lock()
    assert sim.unlocks_executed == 3
    wait_for(lambda: sum(isinstance(e, E.DoorClosed) for e in board.events) == 3, 5, "3 closes")
    all_events_delivered(board, wait_for)  # nothing still on its way could add a door event
    doors = [type(e) for e in board.events if isinstance(e, (E.DoorOpened, E.DoorClosed))]
    assert doors == [E.DoorOpened, E.DoorClosed] * 3
    if fault in ("garbage", "debug_text", "bad_crc", "oversize"):
        wait_for(lambda: board.counters().bad_bytes > 0, 3, "bad bytes counted")


def test_trace_hook_sees_both_directions(sim, make_board):
    seen = []
    b = make_board(sim.path, on_trace=lambda d, t, raw, m: seen.append((d, type(m).__name__)))
    b.open()
    assert ("tx", "Identify") in seen and ("rx", "IdentifyReply") in seen


def test_raw_command_console(sim, board):
    reply = board.raw_command("get_state")
    assert isinstance(reply, P.StateReply)
    with pytest.raises(CommandRefused, match="unknown command 'explode'; known: .*getstate"):
        board.raw_command("explode")
    with pytest.raises(CommandRefused, match="no argument seconds; it takes: pulse_ms"):
        board.raw_command("unlock", seconds=3)
    with pytest.raises(CommandRefused, match="bad arguments"):
        board.raw_command("unlock", pulse_ms=-1)
    assert sim.unlocks_executed == 0


def test_connect_on_a_noisy_line_never_fails(make_sim, make_board):
    """3% of the bytes both ways corrupted or dropped: the identify handshake retries like any
    command, so every connect succeeds (before, about one in four failed at this rate, so
    six in a row passed one time in six)."""
    sim = make_sim()
    sim.inject("noise", rate=0.03)
    for _ in range(6):
        board = make_board(sim.path, reconnect=False)
        assert board.open().board_serial == "SIM-0001"
        board.close()
