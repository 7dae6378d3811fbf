"""The operator console in Debian's Chromium (Playwright, tests/browser/conftest.py): an operator
logs in, uploads a bad planogram (sees the error at its line) and a good one (sees the diff,
applies it), restocks, reviews a flagged session of the simulated cabinet and refunds it, and
acknowledges an alarm. Every console page is saved as docs/screenshots/console-*.png."""
from __future__ import annotations

import concurrent.futures
import importlib.util
import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.routing import Mount

from cabinet.console.app import ConsoleDeps, console_app, live_status
from cabinet.console.auth import Operators
from cabinet.demo import DEFAULT_CONFIG, SimCabinet
from cabinet.journal import Alarms
from cabinet.kiosk.serve import BackgroundServer
from firmware_bridge.clock import SYSTEM, ManualClock

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
TIMEOUT_MS = 15_000


def _http_tests():
    """The HTTP tests' module (its flagged-session helper and timings), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "console_http_tests", ROOT / "tests" / "cabinet" / "test_console.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served(tmp_path, chromium):
    http = _http_tests()
    cab = SimCabinet(tmp_path / "cabinet", DEFAULT_CONFIG, timing=http.FAST,
                     clock=ManualClock(), hardware_clock=SYSTEM)
    try:
        # Playwright's sync API holds this thread's event loop: the session runs in another
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sid = pool.submit(http.flagged_session, cab).result(timeout=180)
        Operators(cab.db).add("ann", PASSWORD)
        Alarms(cab.db).raise_("temperature", "9.4 C for 10 min (limit 8.0 C)")
        deps = ConsoleDeps(config=cab.config, db=cab.db, billing=cab.billing, clock=SYSTEM,
                           status=lambda: live_status(cab.board, cab.planogram,
                                                      {"link": "up", "alarms":
                                                       Alarms(cab.db).active()}))
        outer = Starlette(routes=[Mount("/console", console_app(deps))])
        with BackgroundServer(outer) as server:
            yield cab, sid, server.url + "/console"
    finally:
        cab.close()


def shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"console-{name}.png"), full_page=True)


def test_an_operator_logs_in_changes_the_planogram_restocks_and_refunds(served, chromium,
                                                                         screenshots, tmp_path):
    cab, sid, url = served
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url + "/")
        expect(page).to_have_url(url + "/login")
        shot(page, screenshots, "login")
        page.get_by_label("Name").fill("ann")
        page.get_by_label("Password").fill("wrong password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("Wrong name or password")
        page.get_by_label("Name").fill("ann")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#lock")).to_have_text("engaged")
        expect(page.locator("#alarms")).to_contain_text("temperature")
        shot(page, screenshots, "status")

        page.get_by_role("link", name="Inventory").click()
        expect(page.locator("h1")).to_have_text("Inventory")
        expect(page.locator("text=LOW").first).to_be_visible()
        shot(page, screenshots, "inventory")

        # a bad planogram: the error at its line, nothing changed
        page.get_by_role("link", name="Planogram").click()
        bad = ROOT / "fixtures" / "bad" / "planogram_unknown_sku.yaml"
        page.get_by_label("Planogram file (YAML)").set_input_files(str(bad))
        page.get_by_role("button", name="Check it").click()
        expect(page.locator("li.bad-line").first).to_be_visible()
        expect(page.locator("ul.errors")).to_contain_text("not in the catalog")
        expect(page.get_by_role("button", name="Apply it")).to_have_count(0)
        shot(page, screenshots, "planogram-errors")
        # a good one: the diff, then apply
        text = (ROOT / "fixtures" / "planogram.yaml").read_text().replace(
            "sku: cola-330, capacity: 6, par: 2", "sku: cola-330, capacity: 6, par: 3")
        good = tmp_path / "next-planogram.yaml"
        good.write_text(text)
        page.get_by_label("Planogram file (YAML)").set_input_files(str(good))
        page.get_by_role("button", name="Check it").click()
        expect(page.locator("#diff")).to_contain_text("par")
        shot(page, screenshots, "planogram-diff")
        page.get_by_role("button", name="Apply it").click()
        expect(page.locator("#applied")).to_contain_text("Applied: 1 change")
        shot(page, screenshots, "planogram-applied")
        assert cab.app.config.data_path.joinpath("in-force", "planogram.yaml").read_text() == text

        # restock: start, count from the shelves' weights, accept
        page.get_by_role("link", name="Restock").click()
        page.get_by_role("button", name="Start a restock visit").click()
        expect(page.locator("#visit")).to_be_visible()
        weights = {k: v["grams"] for k, v in live_status(cab.board, cab.planogram)["shelves"]
                   .items()}
        page.get_by_label("Weights after (JSON)").fill(json.dumps(weights))
        page.get_by_role("button", name="Count").click()
        expect(page.locator("#report")).to_be_visible()
        shot(page, screenshots, "restock")
        force = page.get_by_label("accept although slots are flagged")
        if force.count():
            force.check()
        page.get_by_role("button", name="Accept the counted stock").click()
        expect(page.get_by_role("status")).to_contain_text("accepted")

        # review the flagged session and refund the bottle
        page.get_by_role("link", name="Review").click()
        shot(page, screenshots, "review-queue")
        page.get_by_role("link", name=sid).click()
        expect(page.locator("#weights")).to_be_visible()
        for img in page.locator(".images img").all():
            expect(img).to_have_js_property("complete", True)
            assert img.evaluate("i => i.naturalWidth") > 0, "a review image did not load"
        shot(page, screenshots, "review")
        page.get_by_label("quantity of water-500").fill("0")
        page.get_by_label("Reason (on the receipt)").fill("the customer put the bottle back")
        page.get_by_role("button", name="Correct: refund or charge the difference").click()
        expect(page.get_by_role("status")).to_contain_text("refund")
        shot(page, screenshots, "review-refunded")

        page.get_by_role("link", name="Sessions").click()
        shot(page, screenshots, "sessions")
        page.get_by_role("link", name=sid).click()
        expect(page.locator("pre.receipt").first).to_be_visible()
        shot(page, screenshots, "session-receipt")

        page.get_by_role("link", name="Alarms").click()
        shot(page, screenshots, "alarms")
        page.get_by_role("button", name="Acknowledge").click()
        expect(page.get_by_role("status")).to_contain_text("acknowledged")
        assert Alarms(cab.db).active() == []

        page.get_by_role("link", name="Audit").click()
        expect(page.locator("table")).to_contain_text("review.correct")
        shot(page, screenshots, "audit")
        page.get_by_role("button", name="Log out").click()
        page.goto(url + "/review")
        expect(page).to_have_url(url + "/login")
    finally:
        page.close()
