"""Helpers the fleet tests import by a unique module name (a test file's `from conftest import
...` finds whichever conftest.py Python imported first when several test folders run together,
as in `make test`; see tests/datagate.py)."""
from __future__ import annotations

import uuid


def unique(prefix: str) -> str:
    """A name no other test (or another engineer's run on the shared broker) uses."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"
