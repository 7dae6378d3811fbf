"""The browser tests can never pass in CI by skipping: without Chromium they fail there with
what to install, and skip (saying why) elsewhere. Run in a child pytest so the missing
browser is real, pointed at with CABINET_CHROMIUM."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/browser/test_kiosk_browser.py::test_pending_review_and_out_of_service"


def run_without_chromium(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CABINET_CHROMIUM": str(tmp_path / "no-chromium"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider",
                           ONE_TEST], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("ci", ["true", ""])
def test_without_chromium_the_browser_tests_fail_in_ci_and_skip_elsewhere(tmp_path, ci):
    result = run_without_chromium(tmp_path, ci)
    out = result.stdout + result.stderr
    missing = f"{tmp_path / 'no-chromium'} is missing (apt-get install -y --no-install-recommends chromium)"
    assert missing in out
    if ci:
        assert result.returncode == 1 and "2 errors" in out and "CI=true but" in out
    else:
        assert result.returncode == 0 and "2 skipped" in out


def test_every_test_here_is_marked_browser(request):
    assert request.node.get_closest_marker("browser") is not None
