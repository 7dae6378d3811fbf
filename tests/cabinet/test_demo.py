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
from cabinet.bundle import load_bundle, load_recognizer
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


# What each kind of customer in fixtures/scenarios.yaml must end as.
KINDS = {"single-purchase": "charged", "multi-item": "charged", "put-back": "charged",
         "moved-item": "charged", "unknown-face": "denied", "browse-only": "nothing_taken"}
SALE = ["face_auth", "unlocked", "door_open", "door_closed", "reconcile", "charge", "idle"]


def _rows(cab, model, session_id):
    with cab.db() as s:
        return s.scalars(select(model).where(model.session_id == session_id)).all()


def test_there_are_the_six_kinds_of_customer(sold):
    """Read from the database the demo wrote: one session per scenario, each kind ending as it
    should (a demo that runs no session, or skips one, fails here)."""
    cab, runs = sold
    assert [s.name for s, _, _ in runs] == [s.name for s in cab.scenarios]
    with cab.db() as s:
        rows = {row.id: row for row in s.scalars(select(CabinetSession))}
    assert all(report is not None for _, report, _ in runs), runs
    assert len(rows) == len(runs) == len({r.session_id for _, r, _ in runs})
    happened = {scenario.name: rows[report.session_id].outcome for scenario, report, _ in runs}
    assert {name: happened.get(name) for name in KINDS} == KINDS


def test_every_session_ends_as_its_scenario_says(sold):
    cab, runs = sold
    for scenario, report, truth in runs:
        assert report is not None, scenario.name
        assert report.outcome == scenario.expect.outcome, (scenario.name, report)
        basket = {k: v for k, v in report.basket.items() if v}
        assert basket == dict(scenario.expect.basket), (scenario.name, report)
        assert report.flags == (), (scenario.name, report.flags)
        # the customer's hands are the ground truth the controller never saw (empty when the
        # face was refused: the door never opened)
        assert dict(truth) == dict(scenario.expect.basket), scenario.name
        with cab.db() as s:
            row = s.get(CabinetSession, report.session_id)
            assert (row.outcome, row.state, row.flags) == (report.outcome, "closed", []), \
                scenario.name


def test_charges_match_baskets_and_prices(sold):
    cab, runs = sold
    for scenario, report, _ in runs:
        expected_total = sum(cab.catalog[sku].price * qty
                             for sku, qty in scenario.expect.basket.items())
        assert report.total == expected_total, scenario.name
        with cab.db() as s:
            row_total = s.get(CabinetSession, report.session_id).total
        captures = [(c.kind, c.amount, c.status) for c in _rows(cab, Charge, report.session_id)]
        lines = {li.sku: (li.qty, li.unit_price, li.amount)
                 for li in _rows(cab, LineItem, report.session_id)}
        holds = [h.status for h in _rows(cab, Hold, report.session_id)]
        if scenario.expect.outcome == "charged":
            assert row_total == expected_total > 0, scenario.name
            assert captures == [("capture", expected_total, "captured")], scenario.name
            assert holds == ["captured"], scenario.name
            assert lines == {sku: (qty, cab.catalog[sku].price, qty * cab.catalog[sku].price)
                             for sku, qty in scenario.expect.basket.items()}, scenario.name
        elif scenario.expect.outcome == "nothing_taken":
            assert (row_total, captures, lines, holds) == (0, [], {}, ["voided"]), scenario.name
        else:   # denied: no hold was ever placed
            assert (row_total, captures, lines, holds) == (None, [], {}, []), scenario.name


def test_no_hold_and_no_unlock_for_a_refused_face(sold):
    cab, runs = sold
    refused = [(s, r) for s, r, _ in runs if s.expect.outcome == "denied"]
    assert refused, "the scenarios have no refused face"
    for scenario, report in refused:
        assert _rows(cab, Hold, report.session_id) == [], scenario.name
        entries = sorted(_rows(cab, JournalEntry, report.session_id), key=lambda e: e.seq)
        assert [(e.trigger, e.dest) for e in entries] == [("face_seen", "face_auth"),
                                                          ("denied", "idle")], scenario.name
        assert report.bundle_dir is None    # no before-snapshot: the lock never released


def test_each_transition_is_journalled_in_order(sold):
    cab, runs = sold
    sales = [(s, r) for s, r, _ in runs if r.outcome != "denied"]
    assert len(sales) == sum(1 for s in cab.scenarios if s.expect.outcome != "denied")
    for scenario, report in sales:
        entries = sorted(_rows(cab, JournalEntry, report.session_id), key=lambda e: e.seq)
        assert [e.dest for e in entries] == SALE, scenario.name
        assert [e.seq for e in entries] == list(range(1, len(SALE) + 1))


def test_the_bundle_reconciles_offline_to_the_same_answer(sold):
    cab, runs = sold
    sales = [r for _, r, _ in runs if r.outcome != "denied"]
    assert sales and all(r.bundle_dir is not None for r in sales)
    for report in sales:
        stored = json.loads((Path(report.bundle_dir) / "result.json").read_text())
        assert stored["basket"] == {k: v for k, v in report.basket.items() if v}, report
        bundle = load_bundle(report.bundle_dir)   # read with the recognizer it names, if any
        again = json.loads(reconcile(bundle, recognizer=load_recognizer(bundle)).to_json())
        assert again["basket"] == stored["basket"], report.bundle_dir
        assert again["flags"] == stored["flags"], report.bundle_dir
    # and once through the command a person would type, on a bundle with a basket
    bundle = next(r.bundle_dir for r in sales if r.total > 0)
    out = subprocess.run([sys.executable, "-m", "cabinet.cli", "reconcile", bundle,
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    stored = json.loads((Path(bundle) / "result.json").read_text())
    assert stored["basket"] and json.loads(out.stdout)["basket"] == stored["basket"]


def test_the_gateway_saw_one_capture_per_charged_session(sold):
    cab, runs = sold
    outcomes = [s.expect.outcome for s in cab.scenarios]
    effects = cab.gateway.effects()
    assert effects["capture"] == outcomes.count("charged") >= 4
    assert effects["authorize"] == len(outcomes) - outcomes.count("denied")
    assert effects["void"] == outcomes.count("nothing_taken")
    assert effects["refund"] == 0 and effects["decline"] == 0


def test_a_demo_with_a_bad_file_writes_nothing(tmp_path):
    """The demo is the app: every file checked before the workdir, the database or the
    accounts are written."""
    import yaml
    from cabinet.errors import ConfigError
    data = yaml.safe_load((ROOT / "fixtures" / "cabinet.yaml").read_text())
    for key in ("catalog", "accounts", "scenarios"):
        data[key] = str(ROOT / "fixtures" / data[key])
    data["planogram"] = str(ROOT / "fixtures" / "bad" / "planogram_unknown_sku.yaml")
    cfg = tmp_path / "cabinet.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="planogram_unknown_sku.yaml"):
        SimCabinet(tmp_path / "demo", cfg)
    assert not (tmp_path / "demo").exists()
