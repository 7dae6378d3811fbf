"""Finding boards by serial number, and a gap too old to replay."""
from __future__ import annotations

from firmware_bridge import events as E
from firmware_bridge.ports import ChainPortFinder, RegistryPortFinder, UsbPortFinder


def test_usb_finder_reads_serial_by_id_links(sim, tmp_path):
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-Cabinet_MCU_SIM-0042-if00").symlink_to(sim.path)
    finder = UsbPortFinder(by_id)
    assert finder.find("SIM-0042") == sim.path
    assert finder.find("SIM-9999") is None


def test_registry_lists_running_boards_and_forgets_stopped_ones(make_sim, registry):
    a = make_sim(board_serial="SIM-A")
    b = make_sim(board_serial="SIM-B")
    assert registry.boards() == {"SIM-A": a.path, "SIM-B": b.path}
    b.stop()
    assert registry.find("SIM-B") is None
    chain = ChainPortFinder(UsbPortFinder(registry.directory / "none"), registry)
    assert chain.find("SIM-A") == a.path


def test_gap_older_than_the_mcu_ring_is_a_fault_and_a_resync(make_sim, make_board, wait_for):
    sim = make_sim(event_ring=4)
    events: list = []
    board = make_board(sim.path, on_event=events.append)
    board.open()
    board.unlock(3000)
    sim.inject("lose_event", count=30)     # lost events scroll out of the 4-event ring
    sim.open_door()
    wait_for(lambda: any(isinstance(e, E.Fault) and e.code == "event_gap_lost" for e in events),
             5, "event_gap_lost")
    wait_for(lambda: any(isinstance(e, E.DoorOpened) for e in events), 3, "door state resynced")
    sim.close_door()
    wait_for(lambda: any(isinstance(e, E.DoorClosed) for e in events), 3, "later events flow")


def test_registry_ignores_an_entry_left_by_a_dead_simulator(sim, registry):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (registry.directory / "SIM-DEAD").write_text(f"{sim.path}\n{dead}\n")
    assert registry.find("SIM-DEAD") is None
    assert registry.find("SIM-0001") == sim.path


def test_reconnect_delay_doubles_up_to_its_cap():
    from firmware_bridge.link import reconnect_delay
    assert [reconnect_delay(a, 0.05, 1.0) for a in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_retransmit_timeout_follows_srtt_and_rttvar_with_a_25ms_floor():
    import pytest
    from firmware_bridge.link import next_rto
    srtt, var, rto = next_rto(0.0, 0.0, 0.010, 0.025, 1.0)
    assert (srtt, var, rto) == (0.010, 0.005, pytest.approx(0.030))
    srtt, var, rto = next_rto(srtt, var, 0.002, 0.025, 1.0)
    assert srtt == pytest.approx(0.009) and var == pytest.approx(0.00575)
    assert rto == pytest.approx(0.009 + 4 * 0.00575)
    assert next_rto(0.0001, 0.0, 0.0001, 0.025, 1.0)[2] == 0.025
    assert next_rto(0.0, 0.0, 5.0, 0.025, 1.0)[2] == 1.0


def test_registry_ignores_an_entry_whose_pty_was_recreated_since(sim, registry):
    import os
    (registry.directory / "SIM-REUSED").write_text(f"{sim.path}\n{os.getpid()}\n1:2\n")
    assert registry.find("SIM-REUSED") is None        # same path, another pty node
    assert registry.find("SIM-0001") == sim.path


def test_reconnect_never_opens_another_device_now_at_the_old_path(make_sim, make_board,
                                                                  tmp_path, wait_for):
    """A board that vanished must not be looked for by opening whatever tty now has its old
    name: the probe would lock that device away from its owner ("in use") and talk to it."""
    a = make_sim(board_serial="SIM-A")
    b = make_sim(board_serial="SIM-B")
    tty = tmp_path / "ttyCABINET"                     # a path that can be re-pointed
    tty.symlink_to(a.path)
    looked_up: list[str] = []

    class NoFinder:                                   # the board has no USB serial number
        def find(self, board_serial: str) -> None:
            looked_up.append(board_serial)
            return None

    events: list = []
    board = make_board(str(tty), finder=NoFinder(), on_event=events.append)
    board.open()
    tty.unlink()
    tty.symlink_to(b.path)                            # the old name is another device now
    a.stop()
    wait_for(lambda: any(isinstance(e, E.LinkLost) for e in events), 3, "LinkLost")
    tries = len(looked_up)
    wait_for(lambda: len(looked_up) >= tries + 3, 5, "three reconnect attempts")
    assert b.commands_executed == 0                   # never asked who it is
    assert make_board(b.path).open().board_serial == "SIM-B"    # and never held it
    assert not any(isinstance(e, E.LinkRestored) for e in events)
