"""`cabinet sim mcu` and `cabinet bench link` entry points, run as real processes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

from firmware_bridge.device import Board
from firmware_bridge.ports import RegistryPortFinder


def _start(tmp_path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "firmware_bridge.sim_cli", "mcu",
                             "--registry-dir", str(tmp_path / "reg"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sim_mcu_prints_its_pty_first_and_stops_cleanly(tmp_path):
    proc = _start(tmp_path, "--shelves", "4", "--load", "2=350", "--serial-number", "SIM-77")
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with Board(path, finder=RegistryPortFinder(tmp_path / "reg")) as b:
            ident = b.identity
            assert ident.board_serial == "SIM-77" and ident.shelves == 4
            assert abs(b.wait_stable([2], 4)[2].grams - 350) < 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


def test_sim_mcu_faults_from_flags(tmp_path, wait_for):
    proc = _start(tmp_path, "--fault", "cell_not_ready=1", "--fault", "garbage=0.5")
    events: list = []
    try:
        path = proc.stdout.readline().strip()
        with Board(path, on_event=events.append, finder=RegistryPortFinder(tmp_path / "reg")) as b:
            b.lock()                                    # commands get through the garbage
            # the MCU reported the fault at boot, before this host connected; its batches
            # still say so
            wait_for(lambda: b.weights()[0].ready and b.weights()[2].ready, 3, "shelves 0, 2")
            wait_for(lambda: b.counters().events >= 6, 3, "two batches of every shelf")
            assert not b.weights()[1].ready
            # garbage=0.5 puts random bytes before half the frames: the host counted them
            # and dropped them, and no garbage was taken for a frame
            c = b.counters()
            assert c.bad_bytes > 0 and c.frames_in > 0
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


def test_sim_mcu_rejects_an_unknown_fault(tmp_path):
    proc = _start(tmp_path, "--fault", "gremlins")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and "unknown fault 'gremlins'" in err and out == ""


def test_bench_link_quick_run_reports_zero_lost_and_duplicated(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "firmware_bridge.bench", "link", "--pings", "50",
                        "--flood", "500", "--commands", "80", "--events", "300", "--resets", "1",
                        "--vanish-s", "0.3", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert data["lost"] == 0 and data["duplicated"] == 0
    assert data["noisy"]["events"]["sent"] >= 300 and data["rtt"]["p50_ms"] > 0
    assert "round trip" in r.stdout
