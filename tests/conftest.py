"""Shared test fixtures.

The one way a test says it needs ../shared/data (the photos, never copied into this repository)
is the `shared_data` fixture; the `shared_data` marker is put on every test that uses it (so
`-m "not shared_data"` leaves them out), and a test marked by hand gets the same check. Without
the data such a test skips on a developer's machine and FAILS in CI (CI=true), so a CI run can
never pass by skipping them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from datagate import SHARED_DATA_PARTS, in_ci, require_shared_data  # noqa: F401


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
