"""Shared test fixtures.

The one way a test says it needs ../shared/data (the photos, never copied into this repository)
is the `shared_data` fixture; the `shared_data` marker is put on every test that uses it (so
`-m "not shared_data"` leaves them out), and a test marked by hand gets the same check. Without
the data such a test skips on a developer's machine and FAILS in CI (CI=true), so a CI run can
never pass by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vision.data import data_root

# What a test may expect under the data root (see ../shared/data/README.md).
SHARED_DATA_PARTS = ("faces", "products/grocery")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_shared_data(root: Path | None = None) -> Path:
    """The data root when it holds every part; else skip (fail when CI=true) naming what is missing."""
    root = data_root() if root is None else root
    missing = [part for part in SHARED_DATA_PARTS if not (root / part).is_dir()]
    if missing:
        where = ", ".join(str(root / part) for part in missing)
        if in_ci():
            pytest.fail(f"CI=true but the shared test data is missing: {where}; CI must have "
                        f"../shared/data beside the checkout (or CABINET_DATA pointing at it)",
                        pytrace=False)
        pytest.skip(f"needs the shared test data, missing: {where} (set CABINET_DATA to its folder)")
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (or $CABINET_DATA); skips without it, fails in CI."""
    return require_shared_data()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()) and item.get_closest_marker("shared_data") is None:
            item.add_marker(pytest.mark.shared_data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") is not None:
        require_shared_data()
