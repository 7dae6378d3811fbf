"""The kiosk over HTTP: a real uvicorn on 127.0.0.1 serving kiosk_app(KioskState), read with
requests (the page, its assets, the SSE stream, the taps), plus the hub and the catalogs."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import threading
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from starlette.applications import Starlette
from starlette.routing import Mount

from billing.money import Money
from billing.receipt import Receipt as BillingReceipt
from billing.receipt import ReceiptLine as BillingLine
from cabinet.kiosk import LANGUAGES, kiosk_app
from cabinet.kiosk import state as ks
from cabinet.kiosk.serve import BackgroundServer
from firmware_bridge.clock import ManualClock

KIOSK = Path(ks.__file__).resolve().parent
JSON_POST = {"Content-Type": "application/json"}
TIMEOUT = 5


@pytest.fixture
def kiosk():
    state = ks.KioskState()
    with BackgroundServer(kiosk_app(state)) as server:
        yield state, server.url
        state.close()


class Stream:
    """An open SSE connection: `next()` is the next data event (keep-alives skipped)."""

    def __init__(self, url: str):
        self.response = requests.get(url + "/events", stream=True, timeout=TIMEOUT)
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self.lines = self.response.iter_lines(decode_unicode=True)

    def next(self) -> dict:
        for line in self.lines:
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])
        raise AssertionError("the stream ended")

    def close(self) -> None:
        self.response.close()


def run_async(make_coro, timeout_s: float = TIMEOUT):
    """asyncio.run in a thread of its own: a test in the same process may hold a running loop
    in the main thread (Playwright's sync API does)."""
    box: dict = {}

    def main():
        try:
            box["result"] = asyncio.run(asyncio.wait_for(make_coro(), timeout_s))
        except BaseException as e:          # re-raised in the test's thread
            box["error"] = e

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(timeout_s + 5)
    assert not thread.is_alive(), "the coroutine did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def jpeg(value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def every_screen() -> list[ks.Screen]:
    """One of each screen, filled the way the controller fills them."""
    billing = BillingReceipt(
        cabinet_id="cab-7", session_id="sess-4711", account_name="Ada Lovelace",
        opened_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), closed_at=None,
        lines=(BillingLine("cola-330", "Cola 330 ml", 2, Money(150, "EUR"), Money(300, "EUR")),
               BillingLine("chips", "Chips", 1, Money(220, "EUR"), Money(220, "EUR"))),
        total=Money(520, "EUR"), outcome="charged", outcome_reason=None,
        charged=Money(520, "EUR"), refunded=Money(0, "EUR"), owed=Money(0, "EUR"), flags=())
    name = ks.first_name_of("Ada Lovelace")
    return [ks.Welcome(), ks.LookAtCamera(), ks.QrCode("sig.v1.tok-SECRET-77", 90),
            ks.SecondFactor(name, 4, 2), ks.Refused("unpaid_debt"), ks.Unlocked(name, 8),
            ks.DoorOpen(name, open_too_long=True), ks.Counting(name),
            ks.Receipt.from_billing(billing), ks.PendingReview(name),
            ks.OutOfService("temperature")]


# -- the page --------------------------------------------------------------------------------

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.assets: list[str] = []
        self.texts: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []    # (tag, attribute, value)
        self.keys: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))
            if name in ("src", "href"):
                self.assets.append(value)
            if name in ("data-i18n", "data-i18n-alt", "data-i18n-aria-label"):
                self.keys.add(value)
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.append(data.strip())


def parse_page(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_the_page_and_every_asset_it_names_come_from_the_app_under_a_self_only_policy(kiosk):
    _, url = kiosk
    page = requests.get(url + "/", timeout=TIMEOUT)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "http" not in csp
    parsed = parse_page(page.text)
    assert sorted(parsed.assets) == ["static/kiosk.css", "static/kiosk.js"]
    for asset in parsed.assets:
        assert not re.match(r"^(\w+:)?//", asset), f"{asset} is not served by the kiosk"
        assert requests.get(f"{url}/{asset}", timeout=TIMEOUT).status_code == 200
    for lang in LANGUAGES:
        assert requests.get(f"{url}/i18n/{lang}.json", timeout=TIMEOUT).json()["language.self"]
    missing = requests.get(f"{url}/i18n/fr.json", timeout=TIMEOUT)
    assert missing.status_code == 404 and "en, ja, zh" in missing.text
    for name in ("kiosk.js", "kiosk.css"):
        text = (KIOSK / "static" / name).read_text()
        assert not re.search(r"https?://|url\(\s*['\"]?//", text), f"{name} reaches outside"


def test_the_default_language_is_set_on_the_page_and_an_unknown_one_is_refused(kiosk):
    state, _ = kiosk
    with BackgroundServer(kiosk_app(state, default_language="ja")) as server:
        html = requests.get(server.url + "/", timeout=TIMEOUT).text
    assert '<html lang="ja" data-default-language="ja">' in html
    with pytest.raises(ks.KioskError, match="default_language 'fr' is not one of en, ja, zh"):
        kiosk_app(state, default_language="fr")


def test_mounted_under_a_prefix_the_bare_path_redirects_to_the_slash_and_assets_resolve():
    state = ks.KioskState()
    parent = Starlette(routes=[Mount("/kiosk", kiosk_app(state))])
    with BackgroundServer(parent) as server:
        bare = requests.get(server.url + "/kiosk", timeout=TIMEOUT, allow_redirects=False)
        assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/kiosk/")
        page = requests.get(server.url + "/kiosk", timeout=TIMEOUT)
        assert page.url.endswith("/kiosk/") and "static/kiosk.js" in page.text
        assert requests.get(server.url + "/kiosk/static/kiosk.js", timeout=TIMEOUT).ok
        assert requests.get(server.url + "/kiosk/state", timeout=TIMEOUT).json()["screen"] == "welcome"


# -- the stream ------------------------------------------------------------------------------

def test_the_stream_opens_with_the_screen_on_show_and_follows_every_publish(kiosk):
    state, url = kiosk
    state.publish(ks.Refused("timed_out"))
    stream = Stream(url)
    try:
        first = stream.next()
        assert first["screen"] == "refused" and first["reason"] == "timed_out"
        for screen in every_screen():
            seq = state.publish(screen)
            got = stream.next()
            assert (got["seq"], got["screen"]) == (seq, screen.name)
            if screen.name == "receipt":
                receipt = got
        got = receipt
        assert got["lines"][0] == {"name": "Cola 330 ml", "qty": 2, "unit_price": 150, "amount": 300}
        assert (got["total"], got["currency"], got["exponent"]) == (520, "EUR", 2)
    finally:
        stream.close()


def test_the_stream_never_carries_account_ids_emails_tokens_distances_or_the_pin(kiosk):
    state, url = kiosk
    seen: list[str] = []
    typed: list[str] = []
    state.set_handlers(pin=typed.append)
    stream = Stream(url)
    try:
        seen.append(json.dumps(stream.next()))
        for screen in every_screen():
            state.publish(screen)
            seen.append(json.dumps(stream.next(), ensure_ascii=False))
            if screen.name == "look_at_camera":
                assert state.publish_preview(jpeg())
                seen.append(json.dumps(stream.next()))
            if screen.name == "second_factor":
                assert requests.post(url + "/pin", json={"pin": "9137"}, timeout=TIMEOUT).status_code == 202
                seen.append(json.dumps(requests.get(url + "/state", timeout=TIMEOUT).json()))
    finally:
        stream.close()
    assert typed == ["9137"]                          # the PIN reached the controller ...
    text = "\n".join(seen)
    assert len(seen) == 3 + len(every_screen())   # + the first, a preview, the PIN's
    assert '"first_name": "Ada"' in text              # ... the first name is what shows
    for secret in ("9137", "Lovelace", "sess-4711", "cab-7", "SECRET", "cola-330", "@"):
        assert secret not in text, f"{secret!r} leaked into the kiosk stream"
    keys = set()
    for event in seen:
        keys |= set(json.loads(event))
    forbidden = {k for k in keys if re.search(r"account|email|token|distance|pin$|code|session|sku", k)}
    assert forbidden == set()


def test_a_first_name_that_is_not_one_is_refused_before_it_reaches_the_screen():
    assert ks.first_name_of("  Ada  Lovelace ") == "Ada"
    assert ks.first_name_of("ada@example.com") is None
    assert ks.first_name_of("acct-42") is None
    assert ks.first_name_of("") is None and ks.first_name_of(None) is None
    for bad in ("ada@example.com", "Ada Lovelace", "acct42", "<b>Ada</b>"):
        with pytest.raises(ks.KioskError, match="first_name .* is not a first name"):
            ks.Unlocked(bad)


def test_preview_frames_show_only_while_the_customer_looks_at_the_camera(kiosk):
    state, url = kiosk
    assert state.publish_preview(jpeg()) is False           # welcome: dropped
    assert requests.get(url + "/preview.jpg", timeout=TIMEOUT).status_code == 404
    state.publish(ks.LookAtCamera())
    frame = jpeg(200)
    assert state.publish_preview(frame) is True
    got = requests.get(url + "/preview.jpg", timeout=TIMEOUT)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.content == frame and got.headers["cache-control"] == "no-store"
    assert state.snapshot()["preview"] == 1
    state.publish(ks.Unlocked("Ada"))                         # the face frame goes with it
    assert requests.get(url + "/preview.jpg", timeout=TIMEOUT).status_code == 404
    assert state.publish_preview(frame) is False
    with pytest.raises(ks.KioskError, match="not JPEG bytes"):
        state.publish_preview(b"\x89PNG....")


def test_the_qr_screen_serves_a_png_that_decodes_to_the_controllers_code(kiosk):
    state, url = kiosk
    assert requests.get(url + "/qr.png", timeout=TIMEOUT).status_code == 404
    code = "cab7.1767225600.3f9a1c0b7e"
    state.publish(ks.QrCode(code, 60))
    got = requests.get(url + "/qr.png", timeout=TIMEOUT)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_GRAYSCALE)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert text == code
    state.publish(ks.Welcome())
    assert requests.get(url + "/qr.png", timeout=TIMEOUT).status_code == 404


# -- taps ------------------------------------------------------------------------------------

def test_the_pin_pad_sends_the_pin_to_the_controllers_handler(kiosk):
    state, url = kiosk
    typed: list[str] = []

    async def on_pin(pin: str) -> None:              # handlers may be coroutines
        typed.append(pin)
        state.publish(ks.Unlocked("Ada"))

    state.set_handlers(pin=on_pin)
    state.publish(ks.SecondFactor("Ada", digits=6))
    short = requests.post(url + "/pin", json={"pin": "1234"}, timeout=TIMEOUT)
    assert short.status_code == 422 and "6 digits" in short.json()["error"]
    letters = requests.post(url + "/pin", json={"pin": "12a456"}, timeout=TIMEOUT)
    assert letters.status_code == 422
    extra = requests.post(url + "/pin", json={"pin": "123456", "account": 1}, timeout=TIMEOUT)
    assert extra.status_code == 422
    assert typed == []
    ok = requests.post(url + "/pin", json={"pin": "123456"}, timeout=TIMEOUT)
    assert ok.status_code == 202 and typed == ["123456"]
    assert state.screen == ks.Unlocked("Ada")
    late = requests.post(url + "/pin", json={"pin": "123456"}, timeout=TIMEOUT)
    assert late.status_code == 409 and "'unlocked'" in late.json()["error"]
    assert typed == ["123456"]


@pytest.mark.parametrize("path,action,screen", [("/start", "start", ks.Welcome()),
                                                ("/use-qr", "use_qr", ks.LookAtCamera()),
                                                ("/cancel", "cancel", ks.QrCode("c", 5))])
def test_each_tap_calls_its_handler_only_on_a_screen_it_fits(kiosk, path, action, screen):
    state, url = kiosk
    calls: list[str] = []
    state.publish(ks.Counting())
    assert requests.post(url + path, json={}, timeout=TIMEOUT).status_code == 409
    state.publish(screen)
    none = requests.post(url + path, json={}, timeout=TIMEOUT)
    assert none.status_code == 503 and f"set_handlers({action}=...)" in none.json()["error"]
    state.set_handlers(**{action: lambda: calls.append(action)})
    assert requests.post(url + path, json={}, timeout=TIMEOUT).status_code == 202
    assert calls == [action]


def test_a_tap_must_be_json_from_the_kiosks_own_origin(kiosk):
    state, url = kiosk
    calls = []
    state.set_handlers(start=lambda: calls.append(1))
    form = requests.post(url + "/start", data={"x": "1"}, timeout=TIMEOUT)
    assert form.status_code == 415
    other = requests.post(url + "/start", json={}, headers={"Origin": "http://evil.example"},
                          timeout=TIMEOUT)
    assert other.status_code == 403 and "evil.example" in other.json()["error"]
    same = requests.post(url + "/start", json={}, headers={"Origin": url}, timeout=TIMEOUT)
    assert same.status_code == 202 and calls == [1]
    with pytest.raises(ks.KioskError, match="unknown action 'open_door'"):
        state.set_handlers(open_door=lambda: None)


def asgi_get(app, client_host: str) -> int:
    """Status of GET /state as seen from `client_host` (the ASGI scope's client)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/state", "raw_path": b"/state", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"cabinet")], "client": (client_host, 5000),
             "server": ("10.0.0.1", 8080)}
    run_async(lambda: app(scope, receive, send))
    return sent[0]["status"]


def test_only_this_machine_is_served_unless_remote_clients_are_allowed():
    state = ks.KioskState()
    assert asgi_get(kiosk_app(state), "127.0.0.1") == 200
    assert asgi_get(kiosk_app(state), "::1") == 200
    assert asgi_get(kiosk_app(state), "10.0.0.5") == 403
    assert asgi_get(kiosk_app(state), "testclient") == 403
    assert asgi_get(kiosk_app(state, allow_remote=True), "10.0.0.5") == 200


# -- the hub ---------------------------------------------------------------------------------

def test_screens_refuse_what_the_page_could_not_show_and_name_the_field():
    with pytest.raises(ks.KioskError, match="reason 'bogus' is not one of face_not_recognised"):
        ks.Refused("bogus")
    with pytest.raises(ks.KioskError, match="reason 'fire' is not one of hardware_fault"):
        ks.OutOfService("fire")
    line = ks.ReceiptLine("Cola", 2, 150, 300)
    with pytest.raises(ks.KioskError, match="total 299 is not the sum of its lines \\(300\\)"):
        ks.Receipt("Ada", (line,), 299, "EUR")
    with pytest.raises(ks.KioskError, match="line 1: amount 301 is not qty 2 x unit_price 150"):
        ks.Receipt("Ada", (ks.ReceiptLine("Cola", 2, 150, 301),), 301, "EUR")
    with pytest.raises(ks.KioskError, match="currency 'XXX'"):
        ks.Receipt("Ada", (line,), 300, "XXX")
    with pytest.raises(ks.KioskError, match="digits 3 must be an integer from 4 to 8"):
        ks.SecondFactor("Ada", digits=3)
    with pytest.raises(ks.KioskError, match="is not a kiosk screen"):
        ks.KioskState().publish({"screen": "welcome"})
    assert ks.Receipt(None, (), 0, "JPY").wire()["exponent"] == 0


def test_a_quiet_stream_sends_a_keep_alive_when_the_clock_says_so():
    clock = ManualClock()
    state = ks.KioskState(clock=clock, keepalive_s=15.0)

    async def run():
        stream = state.stream()
        assert (await stream.__anext__())["screen"] == "welcome"
        pending = asyncio.ensure_future(stream.__anext__())
        for _ in range(1000):                         # until the stream waits on the clock
            if clock.sleepers():
                break
            await asyncio.sleep(0)
        assert clock.sleepers() == 1 and not pending.done()
        clock.advance(14.9)
        await asyncio.sleep(0)
        assert not pending.done()
        clock.advance(0.2)                            # past 15 s (clear of float rounding)
        assert await asyncio.wait_for(pending, TIMEOUT) is None
        await stream.aclose()

    run_async(run)
    assert state.subscribers() == 0


def test_a_publish_from_another_thread_wakes_the_stream_and_close_ends_it():
    state = ks.KioskState()
    got = []

    async def run():
        async for snap in state.stream():
            got.append(snap["screen"])
            if len(got) == 1:
                threading.Thread(target=state.publish, args=(ks.DoorOpen("Ada"),)).start()
            elif len(got) == 2:
                threading.Thread(target=state.close).start()

    run_async(run)
    assert got == ["welcome", "door_open"] and state.subscribers() == 0


# -- the catalogs ----------------------------------------------------------------------------

def catalogs() -> dict[str, dict[str, str]]:
    return {lang: json.loads((KIOSK / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
            for lang in LANGUAGES}


def test_every_key_is_in_all_three_catalogs_with_the_same_placeholders():
    cats = catalogs()
    keys = set(cats["en"])
    for lang, cat in cats.items():
        assert set(cat) == keys, f"{lang}.json differs: {sorted(set(cat) ^ keys)}"
        for key, text in cat.items():
            assert text.strip(), f"{lang}.json: {key} is empty"
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", cats["en"][key])), \
                f"{lang}.json: {key} has other placeholders than en.json"
    assert len({cats[lang]["language.self"] for lang in LANGUAGES}) == 3
    assert re.search(r"[\u3040-\u30ff]", cats["ja"]["welcome.start"])     # kana: really Japanese
    assert re.search(r"[\u4e00-\u9fff]", cats["zh"]["welcome.start"])


def test_every_key_the_page_uses_exists_and_every_catalog_key_is_used():
    cats = catalogs()
    html = (KIOSK / "static" / "index.html").read_text(encoding="utf-8")
    js = (KIOSK / "static" / "kiosk.js").read_text(encoding="utf-8")
    used = parse_page(html).keys | set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", js))
    used |= {"language.self"}                                  # each language button's name
    used |= {f"refused.{r}" for r in ks.REFUSAL_REASONS}      # data-i18n-prefix + reason
    used |= {f"out_of_service.{r}" for r in ks.OUT_OF_SERVICE_REASONS}
    assert 'data-i18n-prefix="refused."' in html and 'data-i18n-prefix="out_of_service."' in html
    assert used - set(cats["en"]) == set(), "keys the page uses but the catalogs lack"
    assert set(cats["en"]) - used == set(), "catalog keys nothing shows"


def test_no_visible_string_is_hard_coded_in_the_html_or_the_script():
    html = (KIOSK / "static" / "index.html").read_text(encoding="utf-8")
    page = parse_page(html)
    assert [t for t in page.texts if not t.isdigit()] == []   # only the PIN pad's digits
    labelled = [(tag, a, v) for tag, a, v in page.attrs
                if a in ("alt", "title", "aria-label", "placeholder", "value")]
    assert labelled == []
    assert not re.search(r"<button(?![^>]*\btype=\"button\")", html), "a button without type"
    js = (KIOSK / "static" / "kiosk.js").read_text(encoding="utf-8")
    code = re.sub(r"//[^\n]*", "", js).replace('"use strict";', "")
    literals = re.findall(r'"((?:[^"\\\n]|\\.)*)"|\'((?:[^\'\\\n]|\\.)*)\'|`([^`]*)`', code)
    phrases = [s for group in literals for s in group
               if re.search(r"[A-Za-z]{2,}[,.!?]?\s+[A-Za-z]{2,}", s) or re.search(r"[^\x00-\x7f]", s)]
    assert phrases == [], f"words in kiosk.js: {phrases}"
    assert len(literals) > 20                                  # the scan sees the script


def test_every_screen_the_hub_knows_has_a_section_on_the_page():
    html = (KIOSK / "static" / "index.html").read_text(encoding="utf-8")
    sections = set(re.findall(r'data-screen="(\w+)"', html))
    assert sections == {screen.name for screen in ks.SCREENS}
    for screen in ks.SCREENS:
        assert dataclasses.is_dataclass(screen)


# -- in the controller's own HTTP server -----------------------------------------------------

def test_mounted_in_the_controllers_http_server_it_streams_and_close_lets_the_server_stop():
    """cabinet/web.py's HttpServer (uvicorn inside the controller's loop) with the kiosk
    mounted at /kiosk: the page and the stream work, a publish from another thread reaches
    the stream, and close() ends the stream so stopping the server does not hang on it."""
    from cabinet.web import HttpServer

    state = ks.KioskState()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="controller-loop", daemon=True)
    thread.start()
    server = HttpServer(Starlette(routes=[Mount("/kiosk", kiosk_app(state))]), "127.0.0.1", 0)
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(TIMEOUT)
        url = f"http://127.0.0.1:{port}/kiosk"
        assert "static/kiosk.js" in requests.get(url, timeout=TIMEOUT).text
        stream = Stream(url)
        assert stream.next()["screen"] == "welcome"
        state.publish(ks.DoorOpen("Ada", open_too_long=True))
        got = stream.next()
        assert (got["screen"], got["open_too_long"]) == ("door_open", True)
        state.close()
        with pytest.raises(AssertionError, match="the stream ended"):
            stream.next()
        stream.close()
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(TIMEOUT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
    assert not thread.is_alive() and state.subscribers() == 0
