"""Fixtures for billing: a real SQLite file in tmp_path and the real sandbox gateway on loopback.

Clients never really sleep between retries here (`sleep` records the waits instead), so the
retry tests run in milliseconds while still going through the real server and sockets.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import pytest

from billing import Billing, GatewayClient, init_db, make_engine, session_factory
from billing.gateway_server import SandboxGateway

HOLD = 2000  # EUR 20.00


@pytest.fixture
def gateway():
    gw = SandboxGateway()
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cabinet.db"


@pytest.fixture
def make_billing(db_path: Path, gateway: SandboxGateway):
    """Builds a Billing (a 'process') on the same DB file; each call is a fresh engine."""
    engines = []

    def build(client_cls: type[GatewayClient] = GatewayClient, *, sleeps: list | None = None,
              url: str | None = None, timeout_s: float = 1.0) -> Billing:
        engine = make_engine(db_path)
        init_db(engine)
        engines.append(engine)
        sleep: Callable[[float], None] = sleeps.append if sleeps is not None else (lambda s: None)
        client = client_cls(url or gateway.base_url, timeout_s=timeout_s, max_retries=3,
                            sleep=sleep, jitter=random.Random(7).random)
        return Billing(session_factory(engine), client, hold_amount=HOLD, currency="EUR",
                       cabinet_id="cab-test")

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def billing(make_billing) -> Billing:
    return make_billing()
