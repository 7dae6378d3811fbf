"""`cabinet bench session` runs the scenarios and reports every figure it promises."""
from __future__ import annotations

import json

import pytest

from cabinet import bench

pytestmark = pytest.mark.slow


def test_one_round_reports_each_measure_and_counts_wrong_sessions(tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["sessions"] == 6 and result["sessions_not_as_expected"] == 0
    for key in ("face_to_unlock", "door_closed_to_charge_excluding_settle", "settle"):
        assert result[key]["n"] == 5          # every session but the refused face
        assert 0 < result[key]["p50_ms"] <= result[key]["p95_ms"] <= result[key]["max_ms"]
    assert result["machine"]["nproc"] >= 1
    assert "face to unlock" in bench.render(result)
