"""Load cells: host-side filter and calibration, and the cell faults over the pty."""
from __future__ import annotations

import random

import pytest

from firmware_bridge import events as E
from firmware_bridge.device import CommandRefused
from firmware_bridge.loadcell import (Calibration, CalibrationError, ShelfCalibration,
                                      ShelfFilter)

CPG = 420.0


def _feed(f: ShelfFilter, grams, n: int, t0: float, rng, noise_g=0.3, zero=1000,
          spikes=0.0) -> float:
    t = t0
    for _ in range(n):
        g = grams(t) if callable(grams) else grams
        g += rng.gauss(0, noise_g)
        if rng.random() < spikes:
            g += 5000
        f.add((int(zero + g * CPG),), t)
        t += 1 / 25
    return t


def test_filter_tare_calibrate_and_spikes():
    rng = random.Random(1)
    f = ShelfFilter(0, ShelfCalibration(0.0, 400.0), window_s=1.0)     # nominal gain
    t = _feed(f, 0.0, 40, 100.0, rng)
    f.tare()
    with pytest.raises(CalibrationError, match="moved only"):
        f.calibrate(500)                     # nothing on the shelf yet
    t = _feed(f, 500.0, 40, t, rng)
    cal = f.calibrate(500)
    assert cal.counts_per_gram == pytest.approx(CPG, rel=0.01)
    t = _feed(f, 500.0, 60, t, rng, spikes=0.1)
    r = f.reading()
    assert r.stable and r.grams == pytest.approx(500, abs=1.0) and f.spikes > 0


def test_tare_refuses_a_moving_shelf():
    rng = random.Random(2)
    f = ShelfFilter(0, ShelfCalibration(1000, CPG))
    _feed(f, lambda t: 50 * ((t * 3) % 2), 40, 0.0, rng)
    assert not f.reading().stable
    with pytest.raises(CalibrationError, match="not stable"):
        f.tare()


def test_zero_tracking_follows_drift_only_with_the_door_closed():
    rng = random.Random(3)
    f = ShelfFilter(0, ShelfCalibration(1000, CPG), zero_hold_s=1.0, zero_rate_g_per_s=0.5)
    drift = lambda t: 300 + 0.2 * t                             # 0.2 g/s drift
    f.door(True, 0.0)
    t = _feed(f, drift, 25 * 20, 0.0, rng)
    held = f.reading().grams
    assert held == pytest.approx(300 + 0.2 * 1.5, abs=1.5)      # drift tracked out after hold
    f.door(False, t)
    _feed(f, drift, 25 * 10, t, rng)
    assert f.reading().grams - held == pytest.approx(0.2 * 10, abs=0.8)  # door open: no tracking


def test_calibration_json_round_trip_and_errors(tmp_path):
    cal = Calibration({0: ShelfCalibration(12.5, 420.0), 2: ShelfCalibration(-3, 410.5)}, "SN1")
    p = tmp_path / "cal.json"
    cal.save(p)
    assert Calibration.load(p) == cal
    p.write_text('{"shelves": {"0": {"tare_counts": "x"}}}')
    with pytest.raises(CalibrationError, match=r"cal.json: shelf '0'"):
        Calibration.load(p)
    p.write_text("{nope")
    with pytest.raises(CalibrationError, match=r"line 1"):
        Calibration.load(p)


def test_weights_settle_after_a_load_change(clocked):
    clocked.sim.set_load(1, 750)
    r = clocked.call(lambda: clocked.board.wait_stable([1], timeout_s=4))[1]
    assert r.stable and r.grams == pytest.approx(750, abs=2)


def test_board_tare_and_calibrate(make_clocked):
    rig = make_clocked(dict(zero_counts=(5000, -7000, 123), counts_per_gram=398.0))
    sim, b = rig.sim, rig.board
    rig.call(lambda: b.tare(0))
    sim.set_load(0, 1000)
    cal = rig.call(lambda: b.calibrate(0, 1000, timeout_s=4))
    assert cal.counts_per_gram == pytest.approx(398, rel=0.01)
    assert cal.tare_counts == pytest.approx(5000, abs=400)
    sim.set_load(0, 0)
    with pytest.raises(CommandRefused, match="Shelf 0: calibrate refused: the counts moved only"):
        rig.call(lambda: b.calibrate(0, 500, timeout_s=4))
    exported = b.calibration()
    assert Calibration.from_json(exported.to_json()) == exported
    assert exported.for_shelf(0) == cal


def _fault(rig, code: str) -> bool:
    return any(isinstance(e, E.Fault) and e.code == code for e in rig.events)


def test_cell_not_ready(clocked):
    board = clocked.board
    clocked.sim.inject("cell_not_ready", shelf=1)
    clocked.until(lambda: _fault(clocked, "cell_not_ready"), 2, "not-ready fault")
    clocked.until(lambda: not board.weights()[1].ready, 2, "reading marked not ready")
    with pytest.raises(CommandRefused, match="Shelf 1: tare refused: the load cell is not ready"):
        clocked.call(lambda: board.tare(1, timeout_s=0.2))
    clocked.sim.clear("cell_not_ready")
    clocked.until(lambda: board.weights()[1].ready, 2, "ready again")


def test_cell_saturated(clocked):
    board = clocked.board
    clocked.sim.inject("cell_saturated", shelf=0)
    clocked.until(lambda: _fault(clocked, "cell_saturated"), 2, "saturation fault")
    assert board.weights()[0].saturated
    with pytest.raises(CommandRefused, match="Shelf 0: tare refused: the load cell is saturated"):
        clocked.call(lambda: board.tare(0, timeout_s=0.2))


def test_cell_stuck(clocked):
    clocked.sim.inject("cell_stuck", shelf=2)
    clocked.until(lambda: _fault(clocked, "cell_stuck"), 4, "stuck fault")
    r = clocked.call(lambda: clocked.board.wait_stable([2], timeout_s=0.3))[2]
    assert r.stuck and not r.stable


def test_cell_spikes_are_filtered(clocked):
    clocked.sim.set_load(2, 400)
    clocked.sim.inject("cell_spike", shelf=2, rate=0.1)
    r = clocked.call(lambda: clocked.board.wait_stable([2], timeout_s=4))[2]
    assert r.stable and r.grams == pytest.approx(400, abs=2)
    assert clocked.board.shelf_stats(2).spikes > 0


def test_one_dead_cell_does_not_stop_the_others(clocked):
    clocked.sim.inject("cell_not_ready", shelf=0)
    clocked.until(lambda: not clocked.board.weights()[0].ready, 2, "shelf 0 not ready")
    clocked.sim.set_load(1, 250)
    r = clocked.call(lambda: clocked.board.wait_stable([1], timeout_s=4))[1]
    assert r.stable and abs(r.grams - 250) < 2
    assert not clocked.board.weights()[0].ready
