"""The operator console over HTTP (Starlette's TestClient, the console mounted at /console as
the controller mounts it): no route without a login, CSRF, sessions that expire on the console's
clock, the login lockout, the audit row of every action, planogram upload (errors at their line
and nothing changed; the diff, apply, rollback), restock, alarms, and a flagged session from a
simulated cabinet reviewed and refunded exactly once."""
from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import cabinet.console.app
import cabinet.console.tables  # noqa: F401  (the console's tables in the metadata)
import cabinet.inventory  # noqa: F401
import cabinet.journal  # noqa: F401
from billing.db import init_db, make_engine, session_factory
from cabinet import inforce
from cabinet.config import TimeoutsConfig, load_config
from cabinet.console import cli as console_cli
from cabinet.console.app import PUBLIC, ConsoleDeps, console_app, live_status
from cabinet.console.auth import Operators
from cabinet.console.tables import ConsoleAudit, ConsoleLogin
from cabinet.journal import Alarms
from cabinet.planogram_ops import Operations
from cabinet.restock import RestockVisits
from firmware_bridge.clock import SYSTEM, ManualClock
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
PASSWORD = "correct horse battery"
TTL_S = 600.0


def cabinet_config(tmp_path: Path):
    return load_config(FIXTURES / "cabinet.yaml").model_copy(update={
        "data_dir": str(tmp_path / "data"),
        "database_url": f"sqlite:///{tmp_path / 'cabinet.sqlite'}"})


def open_db(url: str):
    engine = make_engine(url)
    init_db(engine)
    return session_factory(engine)


class Console:
    """A console mounted at /console over one cabinet's configuration and database."""

    def __init__(self, config, db, *, billing=None, status=None, clock=None, deps=None):
        self.config, self.db = config, db
        self.clock = clock or ManualClock()
        self.deps = deps or ConsoleDeps(config=config, db=db, billing=billing, clock=self.clock,
                                        status=status, session_ttl_s=TTL_S, max_failures=3,
                                        lockout_window_s=300.0)
        self.app = console_app(self.deps)
        self.client = TestClient(Starlette(routes=[Mount("/console", self.app)]),
                                 base_url="http://127.0.0.1")
        self.csrf = ""

    def add(self, name: str = "ann", password: str = PASSWORD) -> None:
        Operators(self.db).add(name, password)

    def login(self, name: str = "ann", password: str = PASSWORD):
        page = self.client.get("/console/login")
        token = form_csrf(page.text)
        r = self.client.post("/console/login", data={"name": name, "password": password,
                                                      "csrf": token}, follow_redirects=False)
        if r.status_code == 303:
            self.csrf = form_csrf(self.client.get("/console/").text)
        return r

    def post(self, path: str, data: dict | None = None, **kw):
        return self.client.post("/console" + path, data=dict(data or {}, csrf=self.csrf), **kw)

    def audit(self) -> list[tuple[str, str, str, bool]]:
        with self.db() as s:
            return [(r.operator, r.action, r.target, r.ok)
                    for r in s.scalars(select(ConsoleAudit).order_by(ConsoleAudit.id))]


def form_csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page has no form with a CSRF token"
    return m.group(1)


@pytest.fixture
def console(tmp_path):
    cfg = cabinet_config(tmp_path)
    c = Console(cfg, open_db(cfg.database_url))
    c.add()
    return c


# --- no route without a login --------------------------------------------------------------

def _concrete(path: str) -> str:
    return re.sub(r"{[^}]+}", "x1", path)


def test_every_route_refuses_without_login(console):
    routes = [r for r in console.app.routes if isinstance(r, Route)]
    names = {r.name for r in console.app.routes}
    assert PUBLIC == {"login", "login_post", "static"}
    assert len(names - PUBLIC) >= 20, "the console's routes went missing from its app"
    checked = 0
    for route in routes:
        if route.name in PUBLIC:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            url = "/console" + _concrete(route.path)
            for cookies in ({}, {"cabinet_console": "forged-token"}):
                console.client.cookies.clear()
                for k, v in cookies.items():
                    console.client.cookies.set(k, v)
                r = console.client.request(method, url, follow_redirects=False)
                if method == "GET":
                    assert r.status_code == 303, (method, url, r.status_code)
                    assert r.headers["location"].endswith("/console/login")
                else:
                    assert r.status_code == 401, (method, url, r.status_code)
                assert "csrf" not in r.text and "Log out" not in r.text
                checked += 1
    assert checked >= 2 * (len(names) - len(PUBLIC))
    console.client.cookies.clear()
    assert console.audit() == [], "a refused request did something"
    # the same pages answer once logged in (the refusals above were the missing login)
    assert console.login().status_code == 303
    for route in routes:
        if "GET" in route.methods and "{" not in route.path and route.name not in PUBLIC:
            assert console.client.get("/console" + route.path).status_code == 200, route.path


def test_static_serves_only_the_stylesheet_without_login(console):
    assert console.client.get("/console/static/console.css").status_code == 200
    static = Path(cabinet.console.app.__file__).parent / "static"
    assert sorted(p.name for p in static.iterdir()) == ["console.css"], "more than a stylesheet"
    assert console.client.get("/console/static/").status_code == 404, "a directory listing"
    page = console.client.get("/console/login").text
    assert "http://" not in page and "https://" not in page, "an asset from elsewhere"


def test_login_cookie_is_strict_httponly_and_holds_no_name(console):
    r = console.login()
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console/" in cookie
    token = console.client.cookies.get("cabinet_console")
    with console.db() as s:
        stored = [row.token_sha256 for row in s.scalars(select(ConsoleLogin))]
    assert token not in stored and len(stored) == 1, "the token itself is stored"


def test_logout_ends_the_session(console):
    console.login()
    assert console.post("/logout").status_code == 200
    r = console.client.get("/console/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/console/login")
    assert ("ann", "logout", "ann", True) in console.audit()


# --- CSRF --------------------------------------------------------------------------------------

def test_an_action_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(console):
    console.login()
    visits = RestockVisits(console.config.data_path)
    for data in ({}, {"csrf": "not-the-token"}, {"csrf": ""}):
        r = console.client.post("/console/restock/start", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
        assert visits.open_visit() is None
    refused = [a for a in console.audit() if a[1] == "restock.start"]
    assert refused == [("ann", "restock.start", "", False)] * 3
    assert console.post("/restock/start").status_code == 200
    assert visits.open_visit()["operator"] == "ann"


def test_the_login_form_needs_its_own_token(console):
    r = console.client.post("/console/login", data={"name": "ann", "password": PASSWORD},
                            follow_redirects=False)
    assert r.status_code == 403 and "cabinet_console=" not in r.headers.get("set-cookie", "")


# --- sessions expire ---------------------------------------------------------------------------

def test_a_session_expires_ttl_after_its_last_use_on_the_console_clock(console):
    console.login()
    console.clock.advance(TTL_S - 1)
    assert console.client.get("/console/").status_code == 200      # used: expiry moves on
    console.clock.advance(TTL_S - 1)
    assert console.client.get("/console/").status_code == 200
    console.clock.advance(TTL_S)
    r = console.client.get("/console/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/console/login")
    assert console.post("/restock/start").status_code == 401
    with console.db() as s:
        assert s.scalars(select(ConsoleLogin)).all() == [], "the expired session was kept"


def test_a_session_in_constant_use_still_ends_twelve_hours_after_the_login(console):
    console.login()
    used = 0.0
    while used + TTL_S - 1 < 12 * 3600:
        console.clock.advance(TTL_S - 1)
        used += TTL_S - 1
        assert console.client.get("/console/inventory").status_code == 200, used
    console.clock.advance(12 * 3600 - used)
    r = console.client.get("/console/", follow_redirects=False)
    assert r.status_code == 303, "a session outlived its maximum age"


# --- lockout -----------------------------------------------------------------------------------

def test_failed_logins_lock_the_name_out_until_the_window_passes(console):
    for _ in range(3):
        assert console.login(password="wrong password!").status_code == 401
    r = console.login()                  # the right password, but locked out
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert "cabinet_console=" not in r.headers.get("set-cookie", "")
    console.clock.advance(299)
    assert console.login().status_code == 429
    console.clock.advance(2)
    assert console.login().status_code == 303
    logins = [a for a in console.audit() if a[1] == "login"]
    assert [ok for *_, ok in logins] == [False] * 5 + [True]
    assert console.login(name="nobody").status_code == 401     # unknown names fail alike


# --- audit, restock, alarms --------------------------------------------------------------------

def test_every_action_leaves_an_audit_row(console):
    Alarms(console.db).raise_("temperature", "9.5 C")
    console.login()
    assert console.post("/restock/start").status_code == 200
    weights = json.dumps({"top": 0.0, "middle": 0.0, "bottom": 0.0})
    r = console.post("/restock/count", {"weights": weights})
    assert r.status_code == 200 and 'id="report"' in r.text
    r = console.post("/restock/accept", {"force": "yes"})
    assert r.status_code == 200 and "accepted" in r.text
    assert RestockVisits(console.config.data_path).open_visit() is None
    r = console.post("/alarms/temperature/ack")
    assert r.status_code == 200 and Alarms(console.db).active() == []
    assert console.post("/alarms/temperature/ack").status_code == 409   # nothing active now
    console.post("/logout")
    actions = [(a, ok) for _, a, _, ok in console.audit()]
    assert actions == [("login", True), ("restock.start", True), ("restock.count", True),
                       ("restock.accept", True), ("alarm.ack", True), ("alarm.ack", False),
                       ("logout", True)]
    cleared = Alarms(console.db).all()[0]
    assert cleared.cleared_by == "operator ann"


def test_inventory_marks_low_stock(console):
    console.login()
    page = console.client.get("/console/inventory").text
    rows = re.findall(r"<tr( class=\"low\")?><td>(\w+)</td>", page)
    assert rows and any(low for low, _ in rows)
    assert page.count("LOW</strong>") == sum(1 for low, _ in rows if low)


# --- planogram ---------------------------------------------------------------------------------

def test_a_bad_planogram_shows_each_error_at_its_line_and_changes_nothing(console):
    store = inforce.for_config(console.config)
    before = store.read("planogram")
    console.login()
    bad = FIXTURES / "bad" / "planogram_unknown_sku.yaml"
    r = console.post("/planogram/check", files={"file": (bad.name, bad.read_bytes())})
    assert r.status_code == 422
    errors = Operations(store).validate("planogram", bad)
    assert errors
    for e in errors:
        assert f'<li id="line-{e.line}" class="bad-line">' in r.text, e
        assert e.message.split(";")[0][:30] in r.text
    assert "Apply it" not in r.text
    assert store.read("planogram") == before and store.history("planogram") == []
    assert console.audit()[-1][1:] == ("planogram.check", bad.name, False)


def test_a_good_planogram_shows_the_diff_then_applies_and_rolls_back(console):
    store = inforce.for_config(console.config)
    before = store.read("planogram")
    new = before.decode().replace("sku: cola-330, capacity: 6, par: 2",
                                  "sku: cola-330, capacity: 6, par: 3")
    assert new != before.decode()
    console.login()
    r = console.post("/planogram/check", files={"file": ("next.yaml", new.encode())})
    assert r.status_code == 200 and 'id="diff"' in r.text
    assert re.search(r"<td>changed</td><td>A1</td><td>par</td><td>2</td><td>3</td>", r.text)
    assert store.read("planogram") == before, "checking applied it"
    r = console.post("/planogram/apply", {"text": form_field(r.text, "text"), "name": "next.yaml"})
    assert r.status_code == 200 and 'id="applied"' in r.text
    assert store.read("planogram").decode() == new
    r = console.post("/planogram/rollback")
    assert r.status_code == 200 and 'id="rolled-back"' in r.text
    assert store.read("planogram") == before
    assert [a for _, a, _, ok in console.audit() if ok] == [
        "login", "planogram.check", "planogram.apply", "planogram.rollback"]


def test_apply_is_refused_while_a_restock_visit_is_open(console):
    store = inforce.for_config(console.config)
    before = store.read("planogram")
    console.login()
    console.post("/restock/start")
    new = before.decode().replace("capacity: 6, par: 2", "capacity: 6, par: 1", 1)
    r = console.post("/planogram/apply", {"text": new, "name": "next.yaml"})
    assert r.status_code == 409 and "refused" in r.text
    assert store.read("planogram") == before


def form_field(html: str, name: str) -> str:
    import html as h
    m = re.search(rf'name="{name}" value="([^"]*)"', html, re.S)
    assert m, f"no field {name}"
    return h.unescape(m.group(1))


# --- the CLI -----------------------------------------------------------------------------------

def test_operators_add_from_a_password_file_then_the_operator_logs_in(tmp_path, capsys):
    cfg_path = tmp_path / "cabinet.yaml"
    text = (FIXTURES / "cabinet.yaml").read_text()
    for key, value in (("catalog", FIXTURES / "catalog.yaml"),
                       ("planogram", FIXTURES / "planogram.yaml"),
                       ("accounts", FIXTURES / "accounts.yaml"),
                       ("scenarios", FIXTURES / "scenarios.yaml")):
        text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
    text = re.sub(r"(?m)^database_url:.*$", "database_url: sqlite:///cab.sqlite", text)
    text = re.sub(r"(?m)^data_dir:.*$", "data_dir: data", text)
    cfg_path.write_text(text)
    (tmp_path / "pw").write_text("short\n")
    err = io.StringIO()
    assert console_cli.main(["add", "bob", "--password-file", str(tmp_path / "pw"),
                             "--config", str(cfg_path)], err=err) == 1
    assert "at least 10 characters" in err.getvalue()
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    assert console_cli.main(["add", "bob", "--password-file", str(tmp_path / "pw"),
                             "--config", str(cfg_path)]) == 0
    err = io.StringIO()
    assert console_cli.main(["add", "bob", "--password-file", str(tmp_path / "pw"),
                             "--config", str(cfg_path)], err=err) == 1
    assert "exists already" in err.getvalue()
    err = io.StringIO()
    answers = iter(["first password!", "other password!"])
    assert console_cli.main(["add", "carl", "--config", str(cfg_path)], err=err,
                            ask=lambda prompt: next(answers)) == 1
    assert "the two passwords differ" in err.getvalue()
    answers = iter([PASSWORD, PASSWORD])
    assert console_cli.main(["add", "carl", "--config", str(cfg_path)],
                            ask=lambda prompt: next(answers)) == 0
    from cabinet import cli
    capsys.readouterr()
    assert cli.main(["operators", "list", "--config", str(cfg_path)]) == 0   # `cabinet operators`
    assert capsys.readouterr().out.split() == ["bob", "carl"]
    cfg = load_config(cfg_path)
    console = Console(cfg, open_db(f"sqlite:///{tmp_path / 'cab.sqlite'}"))
    assert console.login("bob").status_code == 303
    assert console.login("bob", "not his password").status_code == 401


# --- review: a flagged session of a simulated cabinet, refunded exactly once --------------------

# Virtual seconds on the controller's ManualClock (tests/cabinet/test_controller.py's timings);
# the simulated hardware keeps real time.
FAST = TimeoutsConfig(face_s=3.0, auth_s=5.0, unlock_pulse_ms=1500, door_open_alarm_s=30.0,
                      door_open_max_s=120.0, settle_s=3.0)
TAKE_SLOT, TAKE_SKU = "A3", "water-500"     # 500 g: the basket is sure from the load cells


async def _until(predicate, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.005)


def _triggers(cab) -> list[str]:
    from cabinet.journal import JournalEntry
    sid = cab.controller.machine.session_id
    with cab.db() as s:
        return list(s.scalars(select(JournalEntry.trigger).where(JournalEntry.session_id == sid)))


def flagged_session(cab) -> str:
    """One customer takes a bottle of water and leaves the door open past the alarm: charged
    for the bottle and flagged door_open_too_long, so the session waits for review."""
    person = next(iter(cab.account_ids))
    cab.face_camera.show(cab.photo_for(person, 0))

    async def customer():
        await _until(lambda: not cab.mcu.lock_engaged, "the lock released")
        await asyncio.to_thread(cab.mcu.open_door)
        cab.world.take(TAKE_SLOT, 1)
        await _until(lambda: cab.controller.machine.state == "door_open"
                     and cab.clock.sleepers() >= 1, "the controller waits for the door")
        cab.clock.advance(FAST.door_open_alarm_s + 1)
        await _until(lambda: "door_open_alarm" in _triggers(cab), "the door alarm journalled")
        await asyncio.to_thread(cab.mcu.close_door)
        cab.world.leave()

    async def main():
        frame = await cab.controller.wait_for_face(FAST.face_s)
        assert frame is not None
        session = asyncio.create_task(cab.controller.session(frame))
        await asyncio.wait_for(asyncio.gather(session, customer()), 60)
        return session.result()

    try:
        report = asyncio.run(main())
    finally:
        cab.face_camera.show(None)
    assert report.outcome == "charged" and report.basket == {TAKE_SKU: 1}
    assert "door_open_too_long" in report.flags
    return report.session_id


@pytest.fixture
def reviewed(make_cabinet):
    cab = make_cabinet(timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)
    sid = flagged_session(cab)
    console = Console(cab.config, cab.db, billing=cab.billing,
                      status=lambda: live_status(cab.board, cab.planogram, {"link": "up"}))
    console.add()
    console.login()
    return cab, console, sid


def _refunds(cab, sid):
    from billing.models import Refund
    with cab.db() as s:
        return [(r.amount, r.status) for r in s.scalars(select(Refund).where(
            Refund.session_id == sid))]


def _pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG"
    return tuple(int(v) for v in image[y, x])


def test_review_shows_the_evidence_and_a_correction_refunds_exactly_once(reviewed):
    cab, console, sid = reviewed
    queue = console.client.get("/console/review").text
    assert f'href="/console/review/{sid}"' in queue
    page = console.client.get(f"/console/review/{sid}").text
    assert 'id="weights"' in page and "door_open_too_long" in page
    assert re.search(r"<td>top</td><td class=\"num\">[\d.]+</td><td class=\"num\">[\d.]+</td>"
                     r"<td class=\"num\">-5\d\d\.\d+</td>", page), "top shelf's weight change"
    # each shelf camera's before and after image, with the slot that changed drawn in red
    shelf = next(s for s in cab.planogram.shelves if s.id == "top")
    slots = {s.id: s for s in cab.planogram.slots}
    for side in ("before", "after"):
        src = f"/console/review/{sid}/image/{shelf.camera}/{side}"
        assert f'src="{src}"' in page
        png = console.client.get(src)
        assert png.headers["content-type"] == "image/png"
        x, y, w, h = slots[TAKE_SLOT].roi
        assert _pixel(png.content, x + w // 2, y) == (40, 40, 230), "the change is not drawn"
        x, y, w, h = slots["A1"].roi
        assert _pixel(png.content, x + w // 2, y) == (60, 170, 60), "an unchanged slot in red"
    assert console.client.get(f"/console/review/{sid}/image/nope/after").status_code == 404
    assert console.client.get("/console/review/no-such-session").status_code == 404

    form = {f"qty_{sku}": "0" for sku in re.findall(r'name="qty_([^"]+)"', page)}
    assert f"qty_{TAKE_SKU}" in form and re.search(
        rf'name="qty_{TAKE_SKU}" value="1"', page), "the form starts from the charged basket"
    form["reason"] = "the customer put the bottle back (camera)"
    price = cab.catalog[TAKE_SKU].price
    r = console.post(f"/review/{sid}/correct", form)
    assert r.status_code == 200 and "refund" in r.text
    assert _refunds(cab, sid) == [(price, "refunded")]
    r = console.post(f"/review/{sid}/correct", form)      # the same form sent again
    assert r.status_code == 200 and "none" in r.text
    assert _refunds(cab, sid) == [(price, "refunded")], "refunded twice"
    assert f'href="/console/review/{sid}"' not in console.client.get("/console/review").text
    receipts = console.client.get(f"/console/sessions/{sid}").text
    assert receipts.count('class="receipt"') >= 2 and "refund" in receipts.lower()
    assert [(a, t, ok) for _, a, t, ok in console.audit() if a.startswith("review")] == [
        ("review.correct", sid, True), ("review.correct", sid, True)]


def test_status_shows_the_lock_the_door_and_the_shelves(reviewed):
    cab, console, sid = reviewed
    page = console.client.get("/console/").text
    assert '<dd id="lock">engaged</dd>' in page and '<dd id="door">closed</dd>' in page
    assert '<dd id="link">up</dd>' in page
    for shelf in cab.planogram.shelves:
        assert f"<td>{shelf.id}</td>" in page
    assert f'href="/console/sessions/{sid}"' in console.client.get("/console/sessions").text


# --- a running cabinet: the console as `cabinet run` mounts it ----------------------------------

def test_the_console_over_a_running_cabinet_shows_and_acknowledges_its_alarm(tmp_path):
    import threading

    import yaml

    from cabinet.app import App
    from cabinet.console.app import deps_from_runner
    from cabinet.runner import Runner
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram"):
        data[key] = str(FIXTURES / data[key])
    data.update(accounts=None, scenarios=None, data_dir=str(tmp_path / "data"),
                database_url=f"sqlite:///{tmp_path / 'cabinet.sqlite'}",
                http={"host": "127.0.0.1", "port": 0})
    (tmp_path / "cabinet.yaml").write_text(yaml.safe_dump(data))
    app = App(tmp_path / "cabinet.yaml").start()
    ready = threading.Event()
    runner = Runner(app, environ={}, on_ready=lambda r: ready.set())
    thread = threading.Thread(target=lambda: asyncio.run(runner.run()))
    thread.start()
    try:
        assert ready.wait(60), "the runner did not start"
        console = Console(app.config, app.db, deps=deps_from_runner(runner, session_ttl_s=TTL_S))
        console.add()
        console.login()
        page = console.client.get("/console/").text
        assert '<dd id="lock">engaged</dd>' in page and '<dd id="door">closed</dd>' in page
        assert '<dd id="link">up</dd>' in page and "(in service)" in page
        assert app.mcu.open_door(force=True)
        wait_until(lambda: "forced_door" in runner.health()["alarms"], "the forced-door alarm", 10)
        page = console.client.get("/console/").text
        assert '<dd id="door">open</dd>' in page and "forced_door" in page
        assert "(out of service)" in page
        assert console.post("/alarms/forced_door/ack").status_code == 200
        assert runner.health()["alarms"] == []
        assert Alarms(app.db).all()[-1].cleared_by == "operator ann"
        app.mcu.close_door()
    finally:
        runner.stop_from_thread()
        thread.join(60)
        app.close()


def test_a_correction_upwards_charges_the_difference_as_its_own_payment(reviewed):
    from billing.models import Charge
    cab, console, sid = reviewed
    page = console.client.get(f"/console/review/{sid}").text
    form = {f"qty_{sku}": "0" for sku in re.findall(r'name="qty_([^"]+)"', page)}
    form.update({f"qty_{TAKE_SKU}": "2", "reason": "two bottles on the camera"})
    r = console.post(f"/review/{sid}/correct", form)
    assert r.status_code == 200 and "charge" in r.text
    price = cab.catalog[TAKE_SKU].price
    with cab.db() as s:
        charges = [(c.kind, c.amount, c.status) for c in s.scalars(
            select(Charge).where(Charge.session_id == sid).order_by(Charge.id))]
    assert charges[-1] == ("correction-1", price, "captured")
    assert _refunds(cab, sid) == []
    r = console.post(f"/review/{sid}/correct", dict(form, **{f"qty_{TAKE_SKU}": "-1"}))
    assert r.status_code == 409 and "below 0" in r.text
