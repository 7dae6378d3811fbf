"""The kiosk in Debian's Chromium at 800x480 landscape and 1080x1920 portrait: a customer
from welcome to receipt, a refused customer, the PIN pad, the three languages, the keyboard.
The controller's side is played by publishing into KioskState and by the handlers it
registers; every screen is saved under docs/screenshots/ (kiosk-<size>-<screen>.png)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from cabinet.kiosk import LANGUAGES, kiosk_app
from cabinet.kiosk import state as ks
from cabinet.kiosk.serve import BackgroundServer

SIZES = {"landscape": {"width": 800, "height": 480}, "portrait": {"width": 1080, "height": 1920}}
CATALOGS = {lang: json.loads((Path(ks.__file__).parent / "i18n" / f"{lang}.json")
                             .read_text(encoding="utf-8")) for lang in LANGUAGES}
EN = CATALOGS["en"]
BASKET = ks.Receipt("Ada", (ks.ReceiptLine("Cola 330 ml", 2, 150, 300),
                            ks.ReceiptLine("Salted crisps", 1, 220, 220),
                            ks.ReceiptLine("Sparkling water", 3, 95, 285)), 805, "EUR")


def camera_frame() -> bytes:
    """A drawn stand-in for the face camera (no real face goes into the screenshots)."""
    img = np.zeros((360, 480, 3), np.uint8)
    img[:] = (90, 70, 50)
    cv2.ellipse(img, (240, 190), (95, 125), 0, 0, 360, (150, 180, 215), -1)
    cv2.rectangle(img, (150, 80), (330, 320), (255, 255, 255), 3)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def kiosk():
    state = ks.KioskState()
    with BackgroundServer(kiosk_app(state)) as server:
        yield state, server.url, server
        state.close()


@pytest.fixture(params=list(SIZES))
def size(request) -> str:
    return request.param


class Kiosk:
    """One kiosk page in a fresh browser context, and the hub behind it."""

    def __init__(self, page: Page, state: ks.KioskState, size: str, shots: Path):
        self.page, self.state, self.size, self.shots = page, state, size, shots
        self.errors: list[str] = []                  # script errors and failed loads

    def show(self, screen: ks.Screen) -> None:
        seq = self.state.publish(screen)
        self.wait_for(screen.name, seq)

    def wait_for(self, name: str, seq: int | None = None) -> None:
        body = self.page.locator("body")
        expect(body).to_have_attribute("data-screen", name)
        if seq is not None:
            expect(body).to_have_attribute("data-seq", str(seq))
        heading = self.section().locator("h1")
        expect(heading).to_be_focused()
        expect(self.page.locator("#announce")).to_contain_text(heading.inner_text())

    def section(self):
        return self.page.locator("section[data-screen]:not([hidden])")

    def check_layout(self) -> None:
        """Nothing of the screen falls outside the viewport; every visible button is a touch
        target of at least 48x48 CSS pixels; buttons and images have a name (text or alt) for
        a screen reader; one heading is on show."""
        report = self.page.evaluate("""() => {
            const w = innerWidth, h = innerHeight, shown = (e) => e.offsetParent !== null;
            const out = (e) => { const r = e.getBoundingClientRect();
                return r.left < -0.5 || r.top < -0.5 || r.right > w + 0.5 || r.bottom > h + 0.5; };
            const parts = [...document.querySelectorAll(
                'header *, section:not([hidden]) :is(h1, p, button, img, .receipt-box, .dots)')].filter(shown);
            const buttons = [...document.querySelectorAll('button')].filter(shown);
            return {
                outside: parts.filter(out).map((e) => e.outerHTML.slice(0, 90)),
                small: buttons.filter((b) => { const r = b.getBoundingClientRect();
                    return r.width < 48 || r.height < 48; }).map((b) => b.outerHTML.slice(0, 90)),
                buttons: buttons.length,
                unnamed: [...buttons, ...document.querySelectorAll('img')].filter(shown).filter(
                    (e) => !(e.tagName === 'IMG' ? e.alt : e.textContent).trim()).map((e) => e.outerHTML),
                headings: [...document.querySelectorAll('h1')].filter(shown).length,
            };
        }""")
        assert report["outside"] == [], f"{self.size}: off screen: {report['outside']}"
        assert report["small"] == [], f"{self.size}: touch targets under 48 px: {report['small']}"
        assert report["buttons"] >= 3                      # the check sees the language buttons
        assert report["unnamed"] == [], f"a button or image without a name: {report['unnamed']}"
        assert report["headings"] == 1

    def snap(self, name: str) -> None:
        self.check_layout()
        self.page.screenshot(path=self.shots / f"kiosk-{self.size}-{name}.png",
                             animations="disabled", caret="hide")

    def text(self, selector: str = "main") -> str:
        return self.page.locator(selector).inner_text()


@pytest.fixture
def kiosk_page(chromium, kiosk, size, screenshots):
    state, url, _ = kiosk
    context = chromium.new_context(viewport=SIZES[size], device_scale_factor=1, has_touch=True,
                                   reduced_motion="reduce")
    outside: list[str] = []

    def only_the_kiosk(route):
        if route.request.url.startswith(url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_kiosk)
    page = context.new_page()
    k = Kiosk(page, state, size, screenshots)
    errors = k.errors
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    k.wait_for("welcome")
    yield k
    context.close()
    assert outside == [], f"the page asked for something outside the kiosk: {outside}"
    # a tap the controller refused (409) logs a failed request; nothing else may
    assert [e for e in errors if "409" not in e] == []


def test_a_customer_from_welcome_to_receipt(kiosk_page: Kiosk):
    k, state, page = kiosk_page, kiosk_page.state, kiosk_page.page

    def on_start() -> None:                  # the controller: start face identification
        state.publish(ks.LookAtCamera())
        assert state.publish_preview(camera_frame())

    state.set_handlers(start=on_start)
    expect(page.locator("h1")).to_have_count(len(ks.SCREENS))
    expect(k.section().locator("h1")).to_have_text(EN["welcome.title"])
    page.get_by_role("button", name=EN["welcome.start"]).tap()
    k.wait_for("look_at_camera")
    preview = page.get_by_role("img", name=EN["look.preview_alt"])
    expect(preview).to_be_visible()
    page.wait_for_function("() => document.getElementById('preview').naturalWidth === 480")
    k.snap("look_at_camera")

    k.show(ks.Unlocked("Ada", 8))
    assert k.text().split() == " ".join([EN["common.greeting"].format(name="Ada"), EN["unlocked.title"],
                                  EN["unlocked.body"].format(seconds=8)]).split()
    k.snap("unlocked")
    expect(preview).to_be_hidden()

    k.show(ks.DoorOpen("Ada"))
    expect(page.get_by_role("alert").filter(has_text=EN["door.too_long"])).to_be_hidden()
    k.snap("door_open")
    k.show(ks.DoorOpen("Ada", open_too_long=True))
    expect(page.get_by_role("alert").filter(has_text=EN["door.too_long"])).to_be_visible()
    k.snap("door_open_too_long")

    k.show(ks.Counting("Ada"))
    expect(k.section()).to_contain_text(EN["counting.title"])
    k.snap("counting")

    k.show(BASKET)
    rows = page.locator("#receipt-lines tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_text(re.compile(r"Cola 330 ml\s*2\s*€1\.50\s*€3\.00"))
    expect(rows.nth(2)).to_have_text(re.compile(r"Sparkling water\s*3\s*€0\.95\s*€2\.85"))
    expect(page.locator("#receipt-total")).to_have_text("€8.05")
    expect(k.section().get_by_text(EN["receipt.nothing"])).to_be_hidden()
    k.snap("receipt")

    k.show(ks.Receipt("Ada", (), 0, "EUR"))           # took nothing
    expect(k.section().get_by_text(EN["receipt.nothing"])).to_be_visible()
    expect(page.locator("table.receipt")).to_be_hidden()
    k.snap("receipt_nothing_taken")


def test_a_refused_customer_and_the_qr_alternative(kiosk_page: Kiosk):
    k, state, page = kiosk_page, kiosk_page.state, kiosk_page.page
    state.set_handlers(start=lambda: state.publish(ks.LookAtCamera()),
                       use_qr=lambda: state.publish(ks.QrCode("cab7.1767225600.3f9a1c0b7e", 90)))
    page.get_by_role("button", name=EN["welcome.start"]).tap()
    k.wait_for("look_at_camera")
    page.get_by_role("button", name=EN["look.use_qr"]).tap()
    k.wait_for("qr")
    expect(k.section()).to_contain_text(EN["qr.expires"].format(seconds=90))
    expect(page.get_by_role("img", name=EN["qr.alt"])).to_be_visible()
    page.wait_for_function("() => document.getElementById('qr').naturalWidth > 200")
    k.snap("qr")

    k.show(ks.Refused("face_not_recognised"))
    expect(k.section()).to_contain_text(EN["refused.face_not_recognised"])
    expect(page.locator("#announce")).to_contain_text(EN["refused.face_not_recognised"])
    k.snap("refused")
    k.show(ks.Refused("unpaid_debt"))
    expect(k.section().locator(".reason")).to_have_text(EN["refused.unpaid_debt"])
    # the page shows the controller's screen, and a tap that no longer fits changes nothing
    start = page.get_by_role("button", name=EN["welcome.start"])
    expect(start).to_be_hidden()
    k.show(ks.Welcome())
    expect(start).to_be_visible()


def test_pending_review_and_out_of_service(kiosk_page: Kiosk):
    k = kiosk_page
    k.show(ks.PendingReview("Ada"))
    expect(k.section()).to_contain_text(EN["review.body"])
    k.snap("pending_review")
    k.show(ks.OutOfService("temperature"))
    expect(k.section().locator(".reason")).to_have_text(EN["out_of_service.temperature"])
    k.snap("out_of_service")


def test_the_second_factor_pin_pad_by_touch_and_by_keyboard(kiosk_page: Kiosk):
    k, state, page = kiosk_page, kiosk_page.state, kiosk_page.page
    typed: list[str] = []

    def on_pin(pin: str) -> None:            # the controller checks the PIN
        typed.append(pin)
        if pin == "4711":
            state.publish(ks.Unlocked("Ada", 10))
        else:
            state.publish(ks.SecondFactor("Ada", 4, attempts_left=2))

    state.set_handlers(pin=on_pin)
    k.show(ks.SecondFactor("Ada", 4, attempts_left=3))
    expect(k.section()).to_contain_text(EN["pin.attempts"].format(n=3))
    k.snap("second_factor")
    dots = page.locator("#pin-dots")
    ok = page.get_by_role("button", name=EN["pin.submit"], exact=True)
    for digit in "123":
        page.get_by_role("button", name=digit, exact=True).tap()
    expect(dots.locator(".dot.full")).to_have_count(3)
    expect(dots).to_have_attribute("aria-label", EN["pin.entered"].format(n=3, total=4))
    expect(ok).to_be_disabled()
    page.get_by_role("button", name=EN["pin.delete"]).tap()
    for digit in "99":
        page.get_by_role("button", name=digit, exact=True).tap()
    expect(dots.locator(".dot.full")).to_have_count(4)
    expect(ok).to_be_enabled()
    ok.tap()
    k.wait_for("second_factor")
    expect(k.section()).to_contain_text(EN["pin.attempts"].format(n=2))
    expect(dots.locator(".dot.full")).to_have_count(0)
    assert typed == ["1299"]

    page.keyboard.type("4711")
    expect(dots.locator(".dot.full")).to_have_count(4)
    page.keyboard.press("Enter")
    k.wait_for("unlocked")
    assert typed == ["1299", "4711"]


def test_three_languages_switched_on_screen_and_reset_for_the_next_customer(kiosk_page: Kiosk):
    k, state, page = kiosk_page, kiosk_page.state, kiosk_page.page
    html = page.locator("html")
    for lang in LANGUAGES:
        cat = CATALOGS[lang]
        page.get_by_role("button", name=cat["language.self"], exact=True).tap()
        expect(html).to_have_attribute("lang", lang)
        expect(k.section().locator("h1")).to_have_text(cat["welcome.title"])
        expect(page.get_by_role("button", name=cat["welcome.start"])).to_be_visible()
        expect(page.get_by_role("button", name=cat["language.self"], exact=True)) \
            .to_have_attribute("aria-pressed", "true")
        assert page.title() == cat["app.title"]
        k.snap(f"welcome-{lang}")

    # in Japanese and Chinese no screen shows an English word (names of people and products
    # are data, not strings of the page)
    data_words = {"Ada", "Cola", "ml", "Salted", "crisps", "Sparkling", "water", "QR"}
    screens = [ks.LookAtCamera(), ks.QrCode("c", 30), ks.SecondFactor("Ada"),
               *[ks.Refused(r) for r in ks.REFUSAL_REASONS], ks.Unlocked("Ada"),
               ks.DoorOpen("Ada", True), ks.Counting(), BASKET, ks.Receipt(None, (), 0, "EUR"),
               ks.PendingReview(), *[ks.OutOfService(r) for r in ks.OUT_OF_SERVICE_REASONS]]
    for lang in ("ja", "zh"):
        page.get_by_role("button", name=CATALOGS[lang]["language.self"], exact=True).tap()
        for screen in screens:
            k.show(screen)
            text = k.text("main") + k.text(".brand")
            english = set(re.findall(r"[A-Za-z]{2,}", text)) - data_words
            assert english == set(), f"{lang} {screen.name}: {english} in {text!r}"
            assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text)
            k.check_layout()                         # longer strings still fit the screen
    k.show(ks.Welcome())                             # the next customer starts in English
    expect(html).to_have_attribute("lang", "en")
    expect(k.section().locator("h1")).to_have_text(EN["welcome.title"])


def test_the_kiosk_works_from_the_keyboard_in_focus_order(kiosk_page: Kiosk):
    k, state, page = kiosk_page, kiosk_page.state, kiosk_page.page
    calls: list[str] = []
    state.set_handlers(start=lambda: (calls.append("start"), state.publish(ks.LookAtCamera())),
                       cancel=lambda: (calls.append("cancel"), state.publish(ks.Welcome())))

    def focused() -> str:
        return page.evaluate("document.activeElement.textContent.trim()")

    assert focused() == EN["welcome.title"]          # the new screen's heading has focus
    page.keyboard.press("Tab")
    assert focused() == EN["welcome.start"]
    for lang in ("zh", "ja", "en"):                 # backwards: the language buttons
        page.keyboard.press("Shift+Tab")
        assert focused() == CATALOGS[lang]["language.self"]
    for lang in ("ja", "zh"):
        page.keyboard.press("Tab")
        assert focused() == CATALOGS[lang]["language.self"]
    page.keyboard.press("Tab")
    assert focused() == EN["welcome.start"]
    page.keyboard.press("Enter")
    k.wait_for("look_at_camera")
    page.keyboard.press("Tab")
    assert focused() == EN["look.use_qr"]
    page.keyboard.press("Tab")
    assert focused() == EN["common.cancel"]
    page.keyboard.press("Space")
    k.wait_for("welcome")
    assert calls == ["start", "cancel"]
    assert page.locator("main button:not([type=button])").count() == 0
    expect(page.locator("[aria-live]").first).to_be_attached()


def test_a_lost_connection_is_shown_until_the_controller_is_back(kiosk_page: Kiosk, kiosk):
    k, page = kiosk_page, kiosk_page.page
    state, _, server = kiosk
    banner = page.get_by_role("alert").filter(has_text=EN["conn.lost"])
    expect(banner).to_be_hidden()
    k.show(ks.Counting())                             # seq 2
    state.close()                                     # the controller goes away
    server.stop()
    expect(banner).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    k.check_layout()
    back = ks.KioskState()                            # the controller restarts, same port
    assert back.publish(ks.OutOfService("maintenance")) == 2     # the same seq, anew
    with BackgroundServer(kiosk_app(back), port=server.port):
        expect(page.locator("body")).to_have_attribute("data-screen", "out_of_service")
        expect(banner).to_be_hidden()
        expect(k.section().locator(".reason")).to_have_text(EN["out_of_service.maintenance"])
        back.close()
    # the browser's own reports of the refused reconnects are expected here, nothing else
    k.errors[:] = [e for e in k.errors if "ERR_CONNECTION_REFUSED" not in e]
