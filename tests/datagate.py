"""The shared-data gate, in a module of its own so tests can import it by a unique name
(every test folder has a conftest.py; `from conftest import ...` finds whichever came first)."""
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
