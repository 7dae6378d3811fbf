"""End to end in Debian's Chromium: customers at the kiosk of a running controller.

`cabinet run`'s Runner over the simulated cabinet (the fixtures' configuration: the real
serial link to the simulated MCU, the simulated cameras, real face recognition on the shared
photos, billing in SQLite), its real HTTP server on 127.0.0.1, and the kiosk page it serves
at /kiosk/. Nothing publishes screens but the controller: the test is the customer (taps on
the page, a face at the simulated face camera, the door and the shelves through /sim/*) and
looks only at what the page shows. Screenshots: docs/screenshots/e2e-*.png (taken where no
real face is on show: the shared photos never go into the repository).
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
EN = json.loads((ROOT / "cabinet" / "kiosk" / "i18n" / "en.json").read_text(encoding="utf-8"))
LANDSCAPE = {"width": 800, "height": 480}
SLOW_MS = 120_000        # face encodings on two shared CPU cores


def write_config(folder: Path) -> Path:
    """fixtures/cabinet.yaml with absolute paths, data under `folder`, a free port, and
    windows wide enough for a loaded machine (a customer taps, then walks to the camera)."""
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram", "accounts", "scenarios"):
        data[key] = str(FIXTURES / data[key])
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    data["http"] = {"host": "127.0.0.1", "port": 0}
    data["timeouts"].update(face_s=120, auth_s=120)
    path = folder / "cabinet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Cabinet:
    """The running controller (a Runner in a thread, as `cabinet run` runs it)."""

    def __init__(self, app, runner):
        self.app, self.runner = app, runner
        self.url = f"http://127.0.0.1:{runner.port}"

    def sim(self, path: str, body: dict) -> dict:
        """The simulated world's side: a face at the camera, the door, a hand in a slot."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
            return json.loads(r.read())

    def photo(self, scenario_name: str) -> Path:
        """The photo a fixtures/scenarios.yaml customer shows (never one of their templates)."""
        [scenario] = [s for s in self.app.scenarios if s.name == scenario_name]
        person = scenario.person_for(fallback=self.app.fallback_faces)
        return self.app.photos[person][scenario.photo]


@pytest.fixture(scope="module")
def cabinet(tmp_path_factory, shared_data):
    from cabinet.app import App
    from cabinet.runner import Runner
    app = App(write_config(tmp_path_factory.mktemp("e2e"))).start()
    ready = threading.Event()
    runner = Runner(app, environ={}, on_ready=lambda r: ready.set(), screen_hold_s=600)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.run())))
    thread.start()
    try:
        assert ready.wait(120), "the runner did not start"
        yield Cabinet(app, runner)
    finally:
        runner.stop_from_thread()
        thread.join(120)
        app.close()
    assert result == [0]


@pytest.fixture
def page(chromium, cabinet):
    """The kiosk page at 800x480; any request outside the controller, or a script error,
    fails the test; the screens the page showed are recorded in order."""
    context = chromium.new_context(viewport=LANDSCAPE, device_scale_factor=1, has_touch=True,
                                   reduced_motion="reduce")
    outside: list[str] = []
    errors: list[str] = []

    def only_the_controller(route):
        if route.request.url.startswith(cabinet.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_controller)
    p = context.new_page()
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.goto(cabinet.url + "/")                     # the root redirects to the kiosk
    assert p.url == cabinet.url + "/kiosk/"
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
    assert outside == [], f"the kiosk asked for something outside the controller: {outside}"
    assert errors == []


def on_screen(page: Page, name: str, timeout_ms: float = 30_000) -> None:
    expect(page.locator("body")).to_have_attribute("data-screen", name, timeout=timeout_ms)


def snap(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=screenshots / f"e2e-{name}.png", animations="disabled", caret="hide")


def back_to_welcome(cabinet: Cabinet, page: Page) -> None:
    """The last screen has been read: the next customer's welcome."""
    cabinet.runner.screen_hold_s = 0
    on_screen(page, "welcome")
    cabinet.runner.screen_hold_s = 600


def test_a_customer_taps_start_shows_their_face_shops_and_sees_the_receipt(cabinet, page,
                                                                            screenshots):
    from billing.models import CabinetSession
    from sqlalchemy import select
    water = cabinet.app.catalog["water-500"]
    section = page.locator("section[data-screen]:not([hidden])")
    snap(page, screenshots, "welcome")

    page.get_by_role("button", name=EN["welcome.start"]).tap()
    on_screen(page, "look_at_camera")
    snap(page, screenshots, "look-at-camera")          # nobody at the camera yet
    cabinet.sim("/sim/face", {"photo": str(cabinet.photo("single-purchase"))})
    preview = page.get_by_role("img", name=EN["look.preview_alt"])
    expect(preview).to_be_visible(timeout=SLOW_MS)     # the face camera's own frames
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")

    on_screen(page, "unlocked", SLOW_MS)
    expect(section).to_contain_text(EN["common.greeting"].format(name="Barack"))
    assert cabinet.sim("/sim/door", {"action": "open"})["open"] is True
    on_screen(page, "door_open")
    expect(section).to_contain_text(EN["door.title"])
    snap(page, screenshots, "door-open")
    assert cabinet.sim("/sim/take", {"slot": "A3", "qty": 1}) == {"taken": ["water-500"]}
    cabinet.sim("/sim/door", {"action": "close"})
    cabinet.sim("/sim/face", {"photo": None})

    on_screen(page, "receipt", SLOW_MS)
    rows = page.locator("#receipt-lines tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(water.name)
    total = page.locator("table.receipt tfoot")
    expect(total).to_contain_text(EN["receipt.total"])
    expect(total).to_contain_text(f"{water.price / 100:.2f}")
    snap(page, screenshots, "receipt")
    shown = page.evaluate("window.shown")
    assert shown == ["welcome", "look_at_camera", "unlocked", "door_open", "counting",
                     "receipt"], shown
    with cabinet.app.db() as s:
        [row] = s.scalars(select(CabinetSession)).all()
    assert (row.outcome, row.total) == ("charged", water.price)
    back_to_welcome(cabinet, page)


def test_an_unknown_face_is_refused_and_told_why(cabinet, page, screenshots):
    from billing.models import CabinetSession
    from sqlalchemy import select
    with cabinet.app.db() as s:
        before = len(s.scalars(select(CabinetSession)).all())
    cabinet.sim("/sim/face", {"photo": str(cabinet.photo("unknown-face"))})
    on_screen(page, "refused", SLOW_MS)
    cabinet.sim("/sim/face", {"photo": None})
    section = page.locator("section[data-screen]:not([hidden])")
    expect(section.locator(".reason")).to_have_text(EN["refused.face_not_recognised"])
    expect(section).not_to_contain_text(re.compile(r"acc-|@|distance"))
    snap(page, screenshots, "refused")
    assert page.evaluate("window.shown") == ["welcome", "look_at_camera", "refused"]
    with cabinet.app.db() as s:
        rows = s.scalars(select(CabinetSession)).all()
    assert [r.outcome for r in rows[before:]] == ["denied"]
    back_to_welcome(cabinet, page)


def test_an_uncertain_face_asks_for_the_pin_and_the_right_pin_opens_the_door(cabinet, page,
                                                                             screenshots):
    """A strict identity policy puts the customer's own face in the uncertain band: the PIN
    pad, a wrong PIN (one attempt fewer), the right one (set with billing.pin), the door."""
    from billing.models import CabinetSession
    from billing.pin import set_pin
    from sqlalchemy import select
    from vision.identity import DEFAULT_POLICY, IdentityPolicy
    app, controller = cabinet.app, cabinet.runner.controller
    set_pin(app.db, app.account_ids[cabinet.app.scenarios[0].person_for(
        fallback=app.fallback_faces)], "2468")
    controller.identity_policy = IdentityPolicy(accept_distance=0.05, refuse_distance=0.60,
                                                min_margin=0.10)
    section = page.locator("section[data-screen]:not([hidden])")
    try:
        with app.db() as s:
            before = len(s.scalars(select(CabinetSession)).all())
        cabinet.sim("/sim/face", {"photo": str(cabinet.photo("single-purchase"))})
        on_screen(page, "second_factor", SLOW_MS)
        cabinet.sim("/sim/face", {"photo": None})
        expect(section).to_contain_text(EN["common.greeting"].format(name="Barack"))
        expect(section).to_contain_text(EN["pin.attempts"].format(n=3))
        snap(page, screenshots, "second-factor")
        for digit in "1111":
            page.get_by_role("button", name=digit, exact=True).tap()
        page.get_by_role("button", name=EN["pin.submit"]).tap()
        expect(section).to_contain_text(EN["pin.attempts"].format(n=2))
        page.keyboard.type("2468")
        page.keyboard.press("Enter")
        on_screen(page, "unlocked", SLOW_MS)
        assert cabinet.sim("/sim/door", {"action": "open"})["open"] is True
        on_screen(page, "door_open")
        cabinet.sim("/sim/door", {"action": "close"})
        on_screen(page, "receipt", SLOW_MS)
        expect(section).to_contain_text(EN["receipt.nothing"])
        shown = page.evaluate("window.shown")
        assert shown == ["welcome", "look_at_camera", "second_factor", "unlocked", "door_open",
                         "counting", "receipt"], shown
        with app.db() as s:
            rows = s.scalars(select(CabinetSession)).all()
        assert [r.outcome for r in rows[before:]] == ["nothing_taken"]
    finally:
        controller.identity_policy = DEFAULT_POLICY
    back_to_welcome(cabinet, page)


def test_three_wrong_pins_refuse_with_the_reason(cabinet, page, screenshots):
    from billing.pin import set_pin
    from vision.identity import DEFAULT_POLICY, IdentityPolicy
    app, controller = cabinet.app, cabinet.runner.controller
    set_pin(app.db, app.account_ids[app.scenarios[0].person_for(
        fallback=app.fallback_faces)], "2468")
    controller.identity_policy = IdentityPolicy(accept_distance=0.05, refuse_distance=0.60,
                                                min_margin=0.10)
    try:
        cabinet.sim("/sim/face", {"photo": str(cabinet.photo("single-purchase"))})
        on_screen(page, "second_factor", SLOW_MS)
        cabinet.sim("/sim/face", {"photo": None})
        section = page.locator("section[data-screen]:not([hidden])")
        for left in (3, 2, 1):
            expect(section).to_contain_text(EN["pin.attempts"].format(n=left))
            page.keyboard.type("0000")
            page.keyboard.press("Enter")
        on_screen(page, "refused")
        expect(section.locator(".reason")).to_have_text(EN["refused.pin_wrong"])
        assert cabinet.runner.app.mcu.lock_engaged
    finally:
        controller.identity_policy = DEFAULT_POLICY
    back_to_welcome(cabinet, page)


def test_cancel_at_the_pin_pad_ends_the_session_and_welcomes_the_next(cabinet, page):
    from billing.models import CabinetSession
    from sqlalchemy import select
    from vision.identity import DEFAULT_POLICY, IdentityPolicy
    from billing.pin import set_pin
    app, controller = cabinet.app, cabinet.runner.controller
    set_pin(app.db, app.account_ids[app.scenarios[0].person_for(
        fallback=app.fallback_faces)], "2468")
    controller.identity_policy = IdentityPolicy(accept_distance=0.05, refuse_distance=0.60,
                                                min_margin=0.10)
    try:
        with app.db() as s:
            before = len(s.scalars(select(CabinetSession)).all())
        cabinet.sim("/sim/face", {"photo": str(cabinet.photo("single-purchase"))})
        on_screen(page, "second_factor", SLOW_MS)
        cabinet.sim("/sim/face", {"photo": None})
        page.get_by_role("button", name=EN["common.cancel"]).tap()
        on_screen(page, "welcome")                 # at once, not after the hold
        assert page.evaluate("window.shown") == ["welcome", "look_at_camera", "second_factor",
                                                 "welcome"]
        with app.db() as s:
            rows = s.scalars(select(CabinetSession)).all()
        assert [r.outcome for r in rows[before:]] == ["denied"]
        assert app.mcu.lock_engaged
    finally:
        controller.identity_policy = DEFAULT_POLICY
