"""The demo's receipts carry the tax lines: one scenario (three items at two German rates)
through the whole simulated cabinet, its stored receipt read back from billing."""
from __future__ import annotations

import asyncio

import pytest

from cabinet.demo import SimCabinet

pytestmark = pytest.mark.slow


def test_the_demo_receipt_shows_tax_per_rate_and_the_registration(tmp_path):
    cab = SimCabinet(tmp_path / "demo")
    try:
        scenario = next(s for s in cab.scenarios if s.name == "multi-item")
        report, _ = asyncio.run(cab.run_scenario(scenario))
        assert report.outcome == "charged"
        stored = cab.app.billing.stored_receipts(report.session_id)[-1]
    finally:
        cab.close()
    # water 1.20 and 2 x orange juice 2.99 at 19%; sour cream 1.59 at 7% (half up, per rate)
    assert "2 x Bravo orange juice 1 l @ EUR 2.99 = EUR 5.98 (19%)" in stored
    assert "    7% on EUR 1.59: net EUR 1.49, tax EUR 0.10" in stored
    assert "   19% on EUR 7.18: net EUR 6.03, tax EUR 1.15" in stored
    assert "Tax       EUR 1.25 (included)" in stored
    assert "Tax reg.  DE123456789" in stored
    assert report.receipt_text == stored
