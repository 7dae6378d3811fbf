"""Shared test fixtures. Tests that need ../shared/data skip without it, except in CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("CABINET_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (or $CABINET_DATA); skips without it, fails in CI."""
    root = _data_root()
    if not (root / "faces").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared photos are missing at {root}")
        pytest.skip(f"needs the shared photos at {root} (set CABINET_DATA)")
    return root
