"""Constants and helpers the billing tests import by name.

In a module of its own, with a name no other test folder uses: every test folder has a
conftest.py, and `from conftest import ...` finds whichever conftest Python imported first
(in a run that collects billing and fleet tests together, the fleet's), so a test module
importing from conftest breaks at collection in such a run.
"""
from __future__ import annotations

from billing.crypto import SecretBox
from datagate import unavailable

HOLD = 2000  # EUR 20.00
PG_URL_ENV = "CABINET_TEST_PG_URL"
# The tests' key: fixed, so a failure is reproducible; never a cabinet's key.
TEST_SECRETS = SecretBox(bytes(range(32)), origin="the tests' key")


def _no_server(why: str) -> None:
    message = (f"PostgreSQL: {why}. Start one with `bash scripts/services.sh` (make test "
               f"does), or set {PG_URL_ENV} to a database URL")
    unavailable(message)
