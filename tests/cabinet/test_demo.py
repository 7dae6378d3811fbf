"""The demo's scripted customers, run through every real part, as the suite's end-to-end test.

One simulated cabinet (MCU on a pty, SQLite file, sandbox gateway on 127.0.0.1, face
recognition on real photos) serves every scenario in fixtures/scenarios.yaml; each session's
basket, outcome, charge and records are checked against the scenario's ground truth.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from billing.models import CabinetSession, Charge, Hold, LineItem
from cabinet.bundle import load_bundle
from cabinet.demo import SimCabinet
from cabinet.journal import JournalEntry
from cabinet.reconcile import reconcile

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sold(tmp_path_factory):
    """Run every scenario once; yield (cabinet, [(scenario, report, truth)])."""
    workdir = tmp_path_factory.mktemp("demo")
    cab = SimCabinet(workdir)
    runs = []

    async def main():
        for scenario in cab.scenarios:
            report, truth = await cab.run_scenario(scenario)
            runs.append((scenario, report, truth))

    try:
        asyncio.run(main())
        yield cab, runs
    finally:
        cab.close()


def test_there_are_the_six_kinds_of_customer(sold):
    cab, runs = sold
    outcomes = [s.expect.outcome for s, _, _ in runs]
    assert len(runs) >= 6
    assert "denied" in outcomes and "nothing_taken" in outcomes
    assert outcomes.count("charged") >= 4


def test_every_session_ends_as_its_scenario_says(sold):
    cab, runs = sold
    for scenario, report, truth in runs:
        assert report is not None, scenario.name
        assert report.outcome == scenario.expect.outcome, (scenario.name, report)
        basket = {k: v for k, v in report.basket.items() if v}
        assert basket == dict(scenario.expect.basket), (scenario.name, report)
        if report.outcome != "denied":
            # the customer's hands are the ground truth the controller never saw
            assert dict(truth) == dict(scenario.expect.basket), scenario.name


def test_charges_match_baskets_and_prices(sold):
    cab, runs = sold
    for scenario, report, _ in runs:
        expected_total = sum(cab.catalog[sku].price * qty
                             for sku, qty in scenario.expect.basket.items())
        assert report.total == expected_total, scenario.name
        with cab.db() as s:
            row = s.get(CabinetSession, report.session_id)
            assert row is not None and row.outcome == report.outcome, scenario.name
            captures = s.scalars(select(Charge).where(
                Charge.session_id == report.session_id)).all()
            lines = s.scalars(select(LineItem).where(
                LineItem.session_id == report.session_id)).all()
            if report.outcome == "charged":
                assert [c.amount for c in captures] == [expected_total]
                assert sum(li.amount for li in lines) == expected_total
            else:
                assert captures == [] or all(c.amount == 0 for c in captures)


def test_no_hold_and_no_unlock_for_a_refused_face(sold):
    cab, runs = sold
    for scenario, report, _ in runs:
        if scenario.expect.outcome != "denied":
            continue
        with cab.db() as s:
            assert s.scalars(select(Hold).where(Hold.session_id == report.session_id)).all() == []
            triggers = [e.trigger for e in s.scalars(select(JournalEntry).where(
                JournalEntry.session_id == report.session_id))]
        assert "authorized" not in triggers and triggers[-1] == "denied"


def test_each_transition_is_journalled_in_order(sold):
    cab, runs = sold
    for scenario, report, _ in runs:
        if report.outcome == "denied":
            continue
        with cab.db() as s:
            entries = s.scalars(select(JournalEntry).where(
                JournalEntry.session_id == report.session_id).order_by(JournalEntry.seq)).all()
        path = [e.dest for e in entries]
        assert path[0] == "face_auth" and path[-1] == "idle", (scenario.name, path)
        assert "unlocked" in path and "reconcile" in path and "charge" in path
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))


def test_the_bundle_reconciles_offline_to_the_same_answer(sold):
    cab, runs = sold
    bundles = [r.bundle_dir for _, r, _ in runs if r.bundle_dir is not None]
    assert len(bundles) == sum(1 for _, r, _ in runs if r.outcome != "denied")
    for bundle_dir in bundles:
        stored = json.loads((Path(bundle_dir) / "result.json").read_text())
        again = json.loads(reconcile(load_bundle(bundle_dir)).to_json())
        assert again["basket"] == stored["basket"], bundle_dir
        assert again["flags"] == stored["flags"], bundle_dir
    # and once through the command a person would type
    out = subprocess.run([sys.executable, "-m", "cabinet.cli", "reconcile", bundles[-1],
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    stored = json.loads((Path(bundles[-1]) / "result.json").read_text())
    assert json.loads(out.stdout)["basket"] == stored["basket"]


def test_the_gateway_saw_one_capture_per_charged_session(sold):
    cab, runs = sold
    charged = sum(1 for _, r, _ in runs if r.outcome == "charged")
    assert cab.gateway.effects().get("capture", 0) == charged
