"""Lock releases with their cause (protocol 1.1), and UncommandedUnlock for every release this
host did not command: live, through a replayed gap, after an MCU reset, found only by a resync,
and from a 1.0 board that cannot name a cause. All over a real pty with the simulator."""
from __future__ import annotations

import pytest

from firmware_bridge import events as E
from firmware_bridge import protocol as P


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("cause, name", [("manual_key", "manual key"),
                                         ("power_glitch", "power glitch"),
                                         ("unknown", "unknown")])
def test_each_uncommanded_cause_is_reported_and_raises_one_alarm(sim, board, wait_for, cause,
                                                                  name):
    sim.inject("uncommanded_unlock", cause=cause, duration_s=0.3)
    wait_for(lambda: of(board.events, E.UncommandedUnlock), 3, "UncommandedUnlock")
    wait_for(lambda: any(e.engaged for e in of(board.events, E.LockChanged)), 3, "relock")
    [alarm] = of(board.events, E.UncommandedUnlock)
    assert (alarm.cause, alarm.source, alarm.unlock_id) == (name, "event", None)
    assert alarm.boot_id == board.identity.boot_id and alarm.event_seq >= 1
    assert name in alarm.detail and "SIM-0001" in alarm.detail
    released, relocked = of(board.events, E.LockChanged)
    assert (released.engaged, released.reason) == (False, name)
    assert (relocked.engaged, relocked.reason) == (True, "pulse ended")
    assert board.events.index(released) < board.events.index(alarm)
    [release] = board.releases()
    assert (release.cause, release.commanded, release.event_seq) == (name, False,
                                                                     alarm.event_seq)
    st = board.state()
    assert (st.releases, st.last_release_cause, st.last_release_unlock_id) == (1, name, None)


def test_a_commanded_unlock_names_its_command_and_raises_no_alarm(sim, board, wait_for):
    board.unlock(1000)
    board.raw_command("unlock", pulse_ms=200)       # shortens the running pulse: no new release
    wait_for(lambda: any(e.engaged for e in of(board.events, E.LockChanged)), 3, "relock")
    board.raw_command("unlock", pulse_ms=200)       # a technician's unlock is commanded too
    wait_for(lambda: len(of(board.events, E.LockChanged)) == 4, 3, "second release and relock")
    assert of(board.events, E.UncommandedUnlock) == []
    releases = [e for e in of(board.events, E.LockChanged) if not e.engaged]
    assert [e.reason for e in releases] == ["command", "command"]
    ids = [e.unlock_id for e in releases]
    assert all(isinstance(i, int) and i > 0 for i in ids) and ids[0] != ids[1]
    assert [(r.cause, r.commanded, r.unlock_id) for r in board.releases()] == \
        [("command", True, ids[0]), ("command", True, ids[1])]
    st = board.state()
    assert (st.releases, st.last_release_cause, st.last_release_unlock_id) == (2, "command",
                                                                               ids[1])
    assert sim.uncommanded_releases == 0


def test_a_release_by_an_unlock_this_host_did_not_send_is_uncommanded(sim, board, wait_for):
    """The MCU names the Unlock's seq; one this host never sent (another program had the port
    while the link was down) is no command of ours."""
    board.unlock(200)
    wait_for(lambda: any(e.engaged for e in of(board.events, E.LockChanged)), 3, "relock")
    mine = [e.unlock_id for e in of(board.events, E.LockChanged) if not e.engaged]
    foreign = (mine[0] + 1000) & P.SEQ_MASK or 1
    board.link_event(P.LockChange(seq=10_000, engaged=False, reason=P.BY_COMMAND,
                                  unlock_seq=foreign), board.clock.monotonic())
    [alarm] = of(board.events, E.UncommandedUnlock)
    assert (alarm.cause, alarm.unlock_id, alarm.event_seq) == ("command", foreign, 10_000)
    assert f"seq {foreign}" in alarm.detail and "did not send" in alarm.detail


def test_a_release_whose_event_was_lost_is_replayed_and_alarms_once(sim, board, wait_for):
    sim.inject("lose_event", count=1)
    sim.inject("uncommanded_unlock", cause="manual_key", duration_s=0.3)
    wait_for(lambda: of(board.events, E.UncommandedUnlock), 3, "UncommandedUnlock by replay")
    assert board.counters().replays >= 1
    wait_for(lambda: any(e.engaged for e in of(board.events, E.LockChanged)), 3, "relock")
    before = board.counters().duplicate_events
    reply = board.raw_command("replay_events", from_seq=1)  # everything again, on purpose
    assert reply.status == P.OK
    assert board.counters().duplicate_events > before       # they came, and were dropped
    [alarm] = of(board.events, E.UncommandedUnlock)
    assert alarm.cause == "manual key"
    assert len(board.releases()) == 1


def test_a_commanded_unlock_whose_event_was_replayed_raises_no_alarm(make_sim, make_board,
                                                                     wait_for):
    sim = make_sim(batch_samples=100000)   # no weight events: nothing follows the lost one
    events: list = []
    board = make_board(sim.path, on_event=events.append)
    board.open()
    sim.inject("lose_event", count=1)
    board.unlock(300)
    wait_for(lambda: any(e.engaged for e in of(events, E.LockChanged)), 3, "release and relock")
    assert board.counters().replays >= 1
    assert [(e.engaged, e.reason) for e in of(events, E.LockChanged)] == \
        [(False, "command"), (True, "pulse ended")]
    assert of(events, E.UncommandedUnlock) == []


def test_a_release_just_after_an_mcu_reset_alarms_once_with_its_cause(clocked):
    sim, board, events = clocked.sim, clocked.board, clocked.events
    old_boot = board.identity.boot_id
    sim.inject("reboot", reason="brown-out")
    sim.inject("uncommanded_unlock", cause="power_glitch", duration_s=3.0)  # new boot's event 1
    clocked.until(lambda: of(events, E.UncommandedUnlock), 5, "UncommandedUnlock after reset")
    [reset] = of(events, E.McuReset)
    assert reset.identity.boot_id != old_boot and reset.identity.reset_reason == "brown-out"
    # the reset's resync saw the lock released first; the replayed event then gives the cause
    [resynced] = of(events, E.LockChanged)
    assert (resynced.engaged, resynced.reason) == (False, "resync")
    clocked.until(lambda: any(e.engaged for e in of(events, E.LockChanged)), 5, "relock")
    clocked.until(lambda: board.counters().last_event_seq >= 2, 2, "events after the relock")
    [alarm] = of(events, E.UncommandedUnlock)
    assert (alarm.cause, alarm.event_seq, alarm.boot_id) == ("power glitch", 1,
                                                             reset.identity.boot_id)
    assert events.index(reset) < events.index(alarm)


@pytest.mark.parametrize("version", [P.PROTOCOL_VERSION, 0x0100])
def test_a_release_lost_beyond_the_ring_is_found_by_the_resync(make_clocked, version):
    rig = make_clocked({"event_ring": 4, "protocol_version": version})
    sim, board, events = rig.sim, rig.board, rig.events
    sim.inject("lose_event", count=11)
    sim.inject("uncommanded_unlock", cause="manual_key", duration_s=5.0)
    sim.inject("flood", count=10)          # ten later events push the release out of the ring
    rig.until(lambda: of(events, E.UncommandedUnlock), 5, "UncommandedUnlock from the resync")
    assert any(isinstance(e, E.Fault) and e.code == "event_gap_lost" for e in events)
    [alarm] = of(events, E.UncommandedUnlock)
    assert (alarm.cause, alarm.source, alarm.event_seq) == ("unknown", "resync", None)
    assert ("events were lost" if version == P.PROTOCOL_VERSION else "the lock was found "
            "released") in alarm.detail
    rig.until(lambda: any(e.engaged for e in of(events, E.LockChanged)), 8, "relock")
    assert len(of(events, E.UncommandedUnlock)) == 1


def test_a_release_lost_beyond_the_ring_during_our_pulse_is_ours(make_clocked):
    rig = make_clocked({"event_ring": 4})
    sim, board, events = rig.sim, rig.board, rig.events
    sim.inject("lose_event", count=11)
    board.unlock(4000)                     # answered at once: the clock stands still meanwhile
    sim.inject("flood", count=10)
    rig.until(lambda: any(isinstance(e, E.Fault) and e.code == "event_gap_lost"
                          for e in events), 5, "event_gap_lost")
    rig.until(lambda: any(e.engaged for e in of(events, E.LockChanged)), 8, "relock")
    assert of(events, E.UncommandedUnlock) == []
    assert [(r.cause, r.commanded, r.source) for r in board.releases()] == \
        [("command", True, "resync")]


def test_a_1_0_board_without_causes_is_cause_unknown_and_never_crashes(make_sim, make_board,
                                                                       wait_for):
    sim = make_sim(protocol_version=0x0100)
    events: list = []
    board = make_board(sim.path, on_event=events.append)
    assert board.open().protocol_version == "1.0"
    board.unlock(200)                      # the old board says "command" without a seq
    wait_for(lambda: any(e.engaged for e in of(events, E.LockChanged)), 3, "relock")
    assert of(events, E.UncommandedUnlock) == []
    assert of(events, E.LockChanged)[0].reason == "command"
    assert of(events, E.LockChanged)[0].unlock_id is None
    sim.inject("uncommanded_unlock", cause="manual_key", duration_s=0.2)
    wait_for(lambda: of(events, E.UncommandedUnlock), 3, "UncommandedUnlock")
    [alarm] = of(events, E.UncommandedUnlock)
    assert alarm.cause == "unknown" and "1.0 board reports no cause" in alarm.detail
    st = board.state()
    assert st.releases is None and st.last_release_cause is None
    assert board.counters().invalid_frames == 0


def test_a_1_1_board_sends_a_1_0_host_the_1_0_layouts(sim):
    """The board speaks to each host in the host's minor version (Identify.host_version)."""
    import serial
    from cobs import cobs
    port = serial.Serial(sim.path, 115200, timeout=0.05)
    try:
        dec = P.Decoder()
        got: list[P.Received] = []

        def ask(msg: P.Message, want: type) -> P.Message:
            port.write(P.encode(msg, minor=0))
            for _ in range(100):
                got.extend(dec.feed(port.read(4096)))
                for r in got:
                    if isinstance(r.message, want) and r.message.seq == msg.seq:
                        return r.message
            raise AssertionError(f"no {want.__name__} to {msg}")
        ask(P.Identify(seq=1, host_version=0x0100), P.IdentifyReply)
        ask(P.Configure(seq=2), P.Ack)
        ask(P.Unlock(seq=3, pulse_ms=100), P.Ack)
        ask(P.GetState(seq=4), P.StateReply)
        assert dec.invalid_frames == 0
        # A heartbeat the board sent before it read the Identify is in its own (1.1) layout, as
        # it should be: it did not yet know the host. Count only what followed the reply.
        start = next(i for i, r in enumerate(got) if isinstance(r.message, P.IdentifyReply))
        sent: dict[str, set[int]] = {}
        for r in got[start + 1:]:
            if isinstance(r.message, (P.LockChange, P.StateReply)):   # Heartbeats included
                sent.setdefault(type(r.message).__name__, set()).add(len(cobs.decode(r.raw[:-1])))
        # header 5 + the 1.0 payload + CRC 2: no 1.1 field in any of them
        assert sent.pop("LockChange") == {5 + 2 + 2} and sent.pop("StateReply") == {5 + 20 + 2}
        assert sent.pop("Heartbeat", {27}) == {27} and sent == {}
    finally:
        port.close()


def test_an_unknown_cause_injection_is_refused_with_the_known_ones(sim):
    with pytest.raises(ValueError, match="cause 'key' is not one of manual_key, power_glitch"):
        sim.inject("uncommanded_unlock", cause="key")
    assert sim.lock_engaged and sim.uncommanded_releases == 0


@pytest.mark.parametrize("version", [P.PROTOCOL_VERSION, 0x0100])
def test_a_release_just_after_a_lost_range_alarms_once_from_its_event(make_clocked, version):
    """The resync after the lost range already sees the lock released, but the release's own
    event is still in the ring and comes after: one alarm, from the event."""
    # no weight events: nothing but these pushes the release out of the 4-event ring
    rig = make_clocked({"event_ring": 4, "protocol_version": version, "batch_samples": 100000})
    sim, events = rig.sim, rig.events
    sim.inject("lose_event", count=10)
    sim.inject("flood", count=10)          # ten events lost, the last 4 still in the ring
    sim.inject("uncommanded_unlock", cause="manual_key", duration_s=3.0)   # sent
    release_seq = sim.events_sent            # its event number (the clock stands still)
    rig.until(lambda: any(isinstance(e, E.Fault) and e.code == "event_gap_lost"
                          for e in events), 5, "event_gap_lost")
    rig.until(lambda: any(e.engaged for e in of(events, E.LockChanged)), 8, "relock")
    [alarm] = of(events, E.UncommandedUnlock)
    cause = "manual key" if version == P.PROTOCOL_VERSION else "unknown"
    assert (alarm.cause, alarm.source, alarm.event_seq) == (cause, "event", release_seq)


def test_a_release_and_relock_both_lost_are_found_by_the_release_count(make_clocked):
    rig = make_clocked({"event_ring": 4})
    sim, board, events = rig.sim, rig.board, rig.events
    sim.inject("lose_event", count=12)
    sim.inject("uncommanded_unlock", cause="power_glitch", duration_s=0.0)
    rig.until(lambda: sim.lock_engaged and sim.releases == 1, 2, "release and relock, unseen")
    sim.inject("flood", count=10)
    rig.until(lambda: of(events, E.UncommandedUnlock), 5, "UncommandedUnlock from the count")
    [alarm] = of(events, E.UncommandedUnlock)
    assert (alarm.cause, alarm.source, alarm.event_seq) == ("unknown", "resync", None)
    assert "1 release" in alarm.detail
    assert of(events, E.LockChanged) == []          # the lock never looked released here
    rig.until(lambda: board.counters().last_event_seq > 13, 3, "later events")
    assert len(of(events, E.UncommandedUnlock)) == 1
