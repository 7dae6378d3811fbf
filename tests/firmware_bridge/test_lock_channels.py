"""The second lock channel (a compartment's own door, e.g. age-restricted goods): the protocol
message, the simulated MCU on a real pty, Board.unlock(pulse_ms, channel=1) and
`cabinet-diag lock test --channel 1`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge import events as E
from firmware_bridge import protocol as P
from firmware_bridge.errors import CommandRefused
from waiting import wait_until

BIN = Path(sys.executable).parent
DIAG = [str(BIN / "cabinet-diag")] if (BIN / "cabinet-diag").exists() else \
    [sys.executable, "-m", "firmware_bridge.diag"]


def _wait_for(cond, timeout_s: float = 5.0, what: str = "condition"):
    return wait_until(cond, what, timeout_s)


def test_the_unlock_channel_message_round_trips():
    msg = P.UnlockChannel(7, channel=1, pulse_ms=1500)
    assert P.decode_body(P.encode_body(msg)) == msg
    body = P.encode_body(msg)
    assert body[0] == 0x09 and msg.payload() == bytes([1]) + (1500).to_bytes(4, "little")
    ev = P.ChannelLockChange(3, channel=1, engaged=False, reason=P.BY_COMMAND)
    assert P.MESSAGES[0xA6].from_payload(3, ev.payload()) == ev


def _channel_events(board, channel):
    return [e for e in board.events if isinstance(e, E.ChannelLockChanged) and
            e.channel == channel]


def test_channel_one_releases_and_the_mcu_relocks_it_alone(sim, board):
    board.unlock(300, channel=1)
    assert sim.channel_engaged[1] is False and sim.lock_engaged is True   # main door shut
    _wait_for(lambda: len(_channel_events(board, 1)) >= 2, what="channel 1 relock")
    released, relocked = _channel_events(board, 1)[:2]
    assert (released.engaged, released.reason) == (False, "command")
    assert (relocked.engaged, relocked.reason) == (True, "pulse ended")
    assert sim.channel_engaged[1] is True
    assert not any(isinstance(e, E.LockChanged) and not e.engaged for e in board.events)


def test_lock_engages_every_channel(sim, board):
    board.unlock(5000, channel=1)
    assert sim.channel_engaged[1] is False
    board.lock()
    assert sim.channel_engaged[1] is True
    _wait_for(lambda: any(e.engaged and e.reason == "command"
                          for e in _channel_events(board, 1)), what="channel 1 engaged event")


def test_an_unknown_channel_or_a_long_pulse_is_refused(sim, board):
    with pytest.raises(CommandRefused, match="lock channel 2.*no lock channel 2 \\(this board "
                                             "has 1..1\\)"):
        board.unlock(300, channel=2)
    with pytest.raises(CommandRefused, match="pulse 60000 ms is outside"):
        board.unlock(60000, channel=1)
    with pytest.raises(ValueError, match="lock channel -1 must be 0"):
        board.unlock(300, channel=-1)
    assert sim.channel_engaged == {1: True}


def _diag(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CABINET_")}
    return subprocess.run(DIAG + list(args), capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture(scope="module")
def sim_port():
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.sim_cli", "--serial-number",
                             f"LOCKCH-{os.getpid()}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("/dev/"):
        proc.kill()
        pytest.fail(f"cabinet sim mcu printed {line!r}; stderr: {proc.stderr.read()}")
    yield line
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_diag_lock_test_on_channel_one(sim_port):
    r = _diag("--port", sim_port, "lock", "test", "--channel", "1", "--pulse-ms", "300",
              "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    res = json.loads(r.stdout)
    assert res["channel"] == 1 and res["ok"] is True
    assert res["relocked_by"] == "mcu" and res["relock_reason"] == "pulse ended"
    r = _diag("--port", sim_port, "lock", "test", "--channel", "3", "--pulse-ms", "300")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no lock channel 3" in r.stderr
