"""QR entry in Debian's Chromium: the kiosk of a running controller shows its code, a phone
scans it off the screen and claims it, and the page follows the session to the receipt.

`cabinet run`'s Runner over the simulated cabinet (the real serial link to the simulated MCU on
a pty, sandbox gateway, SQLite) with no face accounts: the customer is a QR-only account with
an app token. The phone is this test: it photographs the QR code as Chromium drew it (an element
screenshot), decodes it with OpenCV and POSTs it to /api/qr/claim. Nothing publishes screens
but the controller.
"""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import yaml
from playwright.sync_api import Page, expect
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
EN = json.loads((ROOT / "cabinet" / "kiosk" / "i18n" / "en.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cabinet(tmp_path_factory):
    from cabinet.app import App
    from cabinet.runner import Runner
    folder = tmp_path_factory.mktemp("qr")
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram"):
        data[key] = str(FIXTURES / data[key])
    data.update(accounts=None, scenarios=None, data_dir=str(folder / "data"),
                database_url=f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}",
                http={"host": "127.0.0.1", "port": 0})
    data["timeouts"]["unlock_pulse_ms"] = 10000      # the door opened in time on a loaded machine
    (folder / "cabinet.yaml").write_text(yaml.safe_dump(data))
    app = App(folder / "cabinet.yaml").start()
    ready = threading.Event()
    runner = Runner(app, environ={}, on_ready=lambda r: ready.set(), screen_hold_s=600)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.run())))
    thread.start()
    try:
        assert ready.wait(60), "the runner did not start"
        yield app, runner
    finally:
        runner.stop_from_thread()
        thread.join(60)
        app.close()
    assert result == [0]


@pytest.fixture
def page(chromium, cabinet):
    app, runner = cabinet
    url = f"http://127.0.0.1:{runner.port}"
    context = chromium.new_context(viewport={"width": 800, "height": 480}, has_touch=True,
                                   reduced_motion="reduce")
    outside: list[str] = []
    errors: list[str] = []

    def only_the_controller(route):
        if route.request.url.startswith(url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_controller)
    p = context.new_page()
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.goto(url + "/kiosk/")
    expect(p.locator("body")).to_have_attribute("data-screen", "welcome")
    p.evaluate("""() => {
        window.shown = [document.body.dataset.screen];
        new MutationObserver(() => {
            const s = document.body.dataset.screen;
            if (window.shown[window.shown.length - 1] !== s) window.shown.push(s);
        }).observe(document.body, {attributes: true, attributeFilter: ['data-screen']});
    }""")
    yield p
    context.close()
    assert outside == [] and errors == []


def on_screen(page: Page, name: str, timeout_ms: float = 30_000) -> None:
    expect(page.locator("body")).to_have_attribute("data-screen", name, timeout=timeout_ms)


def test_a_phone_scans_the_kiosks_code_and_the_page_follows_the_session(cabinet, page):
    from billing.models import CabinetSession
    from sqlalchemy import select
    app, runner = cabinet
    url = f"http://127.0.0.1:{runner.port}"
    account = app.billing.open_account("Grace Hopper", "tok_visa_ok")
    token = runner.qr.entry.tokens.issue(account.id)
    water = app.catalog["water-500"]

    page.get_by_role("button", name=EN["welcome.start"]).tap()
    on_screen(page, "look_at_camera")
    page.get_by_role("button", name=EN["look.use_qr"]).tap()
    on_screen(page, "qr")
    section = page.locator("section[data-screen]:not([hidden])")
    expect(section).to_contain_text(EN["qr.expires"].format(seconds=60))
    image = page.get_by_role("img", name=EN["qr.alt"])
    expect(image).to_be_visible()
    assert image.get_attribute("src").startswith("qr.svg")
    page.wait_for_function("() => document.getElementById('qr').naturalWidth > 200")

    from cabinet.qr import read_qr

    def scan() -> str | None:                         # the phone's camera on the screen: like
        shot = image.screenshot()                     # a phone, it looks again until it reads
        return read_qr(                               # (a frame caught mid-paint reads nothing),
            cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR))
        # with two of OpenCV's readers: its classic one alone cannot decode about 7% of codes
        # of our length, on any frame (a clean-clone run timed out on one)
    code = wait_until(scan, "the phone to read the kiosk's QR code", timeout_s=15, poll_s=0.2)
    assert code.startswith("CQR1.")
    answer: list[requests.Response] = []
    phone = threading.Thread(target=lambda: answer.append(requests.post(
        url + "/api/qr/claim", json={"code": code, "app_token": token}, timeout=60)))
    phone.start()
    on_screen(page, "unlocked")
    phone.join(60)
    assert (answer[0].status_code, answer[0].json()) == (200, {"status": "unlocked"})
    expect(section).to_contain_text(EN["common.greeting"].format(name="Grace"))

    assert app.mcu.open_door()
    on_screen(page, "door_open")
    app.world.take("A3", 1)
    app.mcu.close_door()
    on_screen(page, "receipt")
    expect(page.locator("#receipt-lines tr")).to_have_count(1)
    expect(page.locator("#receipt-lines tr").first).to_contain_text(water.name)
    assert page.evaluate("window.shown") == ["welcome", "look_at_camera", "qr", "unlocked",
                                             "door_open", "counting", "receipt"]
    with app.db() as s:
        [row] = s.scalars(select(CabinetSession)).all()
    assert (row.account_id, row.outcome, row.total) == (account.id, "charged", water.price)
    # the same code again, from the phone's history: refused, nothing opens
    again = requests.post(url + "/api/qr/claim", json={"code": code, "app_token": token},
                          timeout=30)
    assert again.status_code == 409 and app.mcu.lock_engaged
