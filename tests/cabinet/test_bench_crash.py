"""`cabinet bench crash`: a short run of the real thing, and its checker on planted faults.

The short run is the command a person types (`cabinet bench crash --kills 5 --json`): the
controller is SIGKILLed five times at random moments while customers shop against a flaky
gateway, and every count of what went wrong must be 0. It must also have killed five times and
run sessions, so it cannot pass by doing nothing. The checker is then shown a lost session, a
hold nobody captured and an item gone behind the controller's back, each of which it must
count: a checker that always answers 0 fails here.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from billing.gateway import GatewayClient
from cabinet import bench_crash
from billing.db import session_factory
from cabinet.app import open_engine
from cabinet.inventory import Inventory
from cabinet.config import load_config
from cabinet.journal import Journal
from cabinet.machine import TransitionRecord

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_a_short_crash_bench_kills_five_times_and_loses_nothing(tmp_path):
    out_file = tmp_path / "crash.json"
    run = subprocess.run([sys.executable, "-m", "cabinet.cli", "bench", "crash", "--kills", "5",
                          "--seed", "7", "--json", "--workdir", str(tmp_path / "run"),
                          "--out", str(out_file)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, (run.stdout, run.stderr[-3000:])
    result = json.loads(run.stdout)
    assert list(result) == list(bench_crash.KEYS)
    assert result["kills"] == 5
    assert result["sessions"] > 0
    assert {k: result[k] for k in bench_crash.MUST_BE_ZERO} == dict.fromkeys(
        bench_crash.MUST_BE_ZERO, 0)
    assert 0 < result["wall_s"] < 600
    assert json.loads(out_file.read_text()) == result
    # every kill was a real restart: each controller after the first recovered at its start
    log = (tmp_path / "run" / "controllers.log").read_text()
    assert log.count("stop requested") == 1          # only the last one stopped cleanly


def test_the_checker_counts_what_a_crash_could_have_lost(tmp_path):
    bench = bench_crash.Bench(tmp_path, seed=1, flaky=0.0, max_gap_s=1.0)
    try:
        engine = open_engine(load_config(bench.config))    # the controller's tables
        Inventory(session_factory(engine), bench.planogram).restock(
            bench.planogram.initial_stock())                  # as the first start believes
        engine.dispose()
        bench.ledger = bench_crash.Ledger(bench.database_url)
        clean = bench_crash.check(bench, kills=0)
        assert {k: clean[k] for k in bench_crash.MUST_BE_ZERO} == dict.fromkeys(
            bench_crash.MUST_BE_ZERO, 0)

        # a session the journal left open (no outcome)
        now = dt.datetime.now(dt.timezone.utc)
        Journal(bench.ledger.db).write(TransitionRecord("S-open", "face_seen", "idle",
                                                        "face_auth", now, {}))
        # a hold the gateway authorised for a session nobody knows, never captured or voided
        client = GatewayClient(bench.gateway_url, api_key=bench.gateway.api_key)
        client.authorize(500, "EUR", "tok_visa_ok", "S-ghost:hold")
        # an item gone from a shelf that the controller's belief still counts
        stock = bench.world.stock()
        slot = max(stock, key=lambda s: len(stock[s]))
        bench.world.take(slot, 1)
        bench.world.leave()

        found = bench_crash.check(bench, kills=0)
        assert found["lost"] == 2                    # S-open, and S-ghost's intent
        assert found["holds_left"] == 1
        assert found["inventory_mismatches"] == 1
        assert found["sessions"] == 1
        assert found["double_charges"] == 0 and found["unlocked_doors"] == 0
        assert sorted(found["problems"]["lost"]) == ["S-ghost", "S-open"]
    finally:
        bench.close()
