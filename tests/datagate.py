"""The one gate for tests that need something outside the repository (the shared photos,
a PostgreSQL server, Chromium): without it a test skips on a developer's machine and FAILS in
CI (CI=true), so a CI run can never pass by skipping. In a module of its own so tests import
it by a unique name (every test folder has a conftest.py; `from conftest import ...` finds
whichever came first)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vision.data import data_root

# What a test may expect under the data root (see ../shared/data/README.md).
SHARED_DATA_PARTS = ("faces", "products/grocery")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(skip_message: str, ci_message: str | None = None) -> None:
    """Skip with `skip_message`; under CI=true fail with `ci_message` (default the same)."""
    if in_ci():
        pytest.fail(ci_message or skip_message, pytrace=False)
    pytest.skip(skip_message)


def require_shared_data(root: Path | None = None) -> Path:
    """The data root when it holds every part; else skip (fail when CI=true) naming what is missing."""
    root = data_root() if root is None else root
    missing = [part for part in SHARED_DATA_PARTS if not (root / part).is_dir()]
    if missing:
        where = ", ".join(str(root / part) for part in missing)
        unavailable(f"needs the shared test data, missing: {where} (set CABINET_DATA to its folder)",
                    f"CI=true but the shared test data is missing: {where}; CI must have "
                    f"../shared/data beside the checkout (or CABINET_DATA pointing at it)")
    return root
