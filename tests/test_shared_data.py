"""The one gate for tests that need ../shared/data: skip without it locally, fail in CI, and the
`shared_data` marker on every test that takes the fixture."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datagate import require_shared_data

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path, *parts: str) -> Path:
    for part in parts:
        (root / part).mkdir(parents=True)
    return root


def test_complete_data_is_handed_over(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    root = make_data(tmp_path, "faces", "products/grocery")
    assert require_shared_data(root) == root


def test_missing_data_skips_outside_ci_and_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    root = make_data(tmp_path, "faces")
    with pytest.raises(pytest.skip.Exception, match=r"missing: .*products/grocery \(set CABINET_DATA"):
        require_shared_data(root)


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_missing_data_fails_in_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"CI=true but the shared test data is missing: .*faces"):
        require_shared_data(tmp_path / "nowhere")


def test_a_ci_run_without_the_data_fails_the_tests_that_take_the_fixture_and_they_carry_the_marker(tmp_path):
    """A real pytest run, as CI makes it, with CABINET_DATA pointing at an empty folder:
    `-m shared_data` selects exactly the fixture's user in test_photo_paths.py (the marker was
    put on it) and it errors in set-up rather than skips."""
    env = {**os.environ, "CI": "true", "CABINET_DATA": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "shared_data",
         "tests/vision/test_photo_paths.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "ERROR tests/vision/test_photo_paths.py::test_shared_packshots_are_found_and_drawn" in out
    assert "CI=true but the shared test data is missing" in out
    assert "6 deselected, 1 error" in out, out
