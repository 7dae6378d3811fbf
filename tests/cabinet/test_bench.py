"""`cabinet bench session` runs the scenarios and reports every figure it promises, and counts
a session that ended differently from its scenario (a fast wrong answer is no good answer)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cabinet import bench

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# Two customers: one who pays, one whose card is declined although the scenario expects a sale.
SCENARIOS = """\
schema_version: 1
scenarios:
  - name: single-purchase
    person: obama
    fallback_person: obama
    photo: 0
    actions:
      - take: {slot: A1, qty: 1}
    expect: {outcome: charged, basket: {cola-330: 1}}
  - name: declined-card
    person: kit_harington
    fallback_person: obama
    photo: 1
    actions:
      - take: {slot: A3}
    expect: {outcome: charged, basket: {water-500: 1}}
"""
ACCOUNTS = """\
schema_version: 1
accounts:
  - {id: acc-obama, name: Barack Obama, person: obama, fallback_person: obama,
     payment_token: tok_visa_ok, status: active}
  - {id: acc-kit, name: Kit Harington, person: kit_harington, fallback_person: null,
     payment_token: tok_declined, status: active}
"""


@pytest.fixture
def config(tmp_path, shared_data):
    fixtures = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", fixtures, ignore=shutil.ignore_patterns("bad"))
    (fixtures / "scenarios.yaml").write_text(SCENARIOS)
    (fixtures / "accounts.yaml").write_text(ACCOUNTS)
    return fixtures / "cabinet.yaml"


def test_two_rounds_report_each_measure_and_count_the_wrong_sessions(tmp_path, config):
    out = tmp_path / "bench.json"
    assert bench.main(["--rounds", "2", "--config", str(config), "--out", str(out),
                       "--gateway-ms", "150"]) == 1
    result = json.loads(out.read_text())
    assert (result["rounds"], result["sessions"], result["sessions_not_as_expected"]) == (2, 4, 2)
    for key in ("face_to_unlock", "identify", "hold", "snapshot", "unlock",
                "door_closed_to_charge", "settle", "vision", "capture", "camera", "reconcile",
                "charge"):
        assert result[key]["n"] == 2          # the paying customer, once a round
        assert 0 < result[key]["p50_ms"] <= result[key]["p95_ms"] <= result[key]["max_ms"]
    # everything from the door closing to the charge: the settle (with vision beside it),
    # then reconcile, then the charge
    total, settle, vision = (result[k]["max_ms"] for k in ("door_closed_to_charge", "settle",
                                                            "vision"))
    assert total >= max(settle, vision)
    # the sandbox answered each hold 150 ms late, as BENCHMARKS.md's gateway does
    assert result["gateway_hold_delay_ms"] == 150 and result["hold"]["p50_ms"] >= 150
    # face to unlock is its parts end to end (one paying session a round)
    assert result["face_to_unlock"]["max_ms"] >= max(
        result[k]["max_ms"] for k in ("identify", "hold", "snapshot", "unlock"))
    # the configuration names no recognizer: the committed models/ is used
    assert result["calibrated"] is True and result["recognizer"] == str(ROOT / "models")
    # each wrong session says why: the declined card, once a round
    why = result["not_as_expected"]
    assert [(m["round"], m["scenario"]) for m in why] == [(1, "declined-card"),
                                                           (2, "declined-card")]
    assert all(m["expected"] == {"water-500": 1} and m["expected_outcome"] == "charged"
               and m["outcome"] != "charged" for m in why)
    assert len(result["load_average"]) == 2
    assert result["shelves"] == 3 and result["shelf_cameras"] == 3
    assert result["machine"]["nproc"] >= 1
    table = bench.render(result)
    assert "face to unlock" in table and "sessions not as their scenario expected: 2" in table
    assert "round 2 declined-card: expected {'water-500': 1} charged" in table
    assert "door closed to charge (all included)" in table and "vision (during the settle)" in table
    assert "identify (face camera frames)" in table and "admission and hold" in table


def test_face_to_unlock_parts_come_from_its_marks():
    t = {"identified": 310.0, "held": 400.0, "before_snapshot": 520.0, "unlocked": 540.0}
    assert bench.unlock_parts_ms(t) == {"identify": 310.0, "hold": 90.0, "snapshot": 120.0,
                                        "unlock": 20.0}
    assert sum(bench.unlock_parts_ms(t).values()) == t["unlocked"]
    # refused at the door: no hold, no parts
    assert bench.unlock_parts_ms({"identified": 310.0}) is None


def test_parts_of_a_session_add_up_from_its_marks():
    t = {"door_shut": 100.0, "door_closed": 104.0, "frames": 250.0, "captured": 300.0,
         "settled": 700.0,
         "looked": 900.0, "reconciled": 1150.0, "charge_sent": 1300.0}
    assert bench.parts_ms(t) == {"door_closed_to_charge": 1200.0, "settle": 600.0,
                                 "vision": 800.0, "capture": 200.0, "camera": 150.0,
                                 "reconcile": 250.0, "charge": 150.0}
    # vision done before the shelves settled: reconcile starts at the settle
    assert bench.parts_ms(dict(t, looked=300.0))["reconcile"] == 450.0
    assert bench.parts_ms({"door_closed": 1.0, "settled": 2.0}) is None   # no charge yet


def test_a_gateway_delay_out_of_range_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--rounds", "1", "--gateway-ms", "-5"])
    assert stop.value.code == 2
    assert "--gateway-ms must be in 0..10000" in capsys.readouterr().err


def test_rounds_below_one_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--rounds", "0"])
    assert stop.value.code == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_keep_refuses_a_folder_that_holds_files(tmp_path):
    (tmp_path / "old.txt").write_text("another run's")
    with pytest.raises(SystemExit) as stop:
        bench.main(["--rounds", "1", "--keep", str(tmp_path), "--out", str(tmp_path / "b.json")])
    assert f"--keep {tmp_path}: the folder is not empty" in str(stop.value.code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
