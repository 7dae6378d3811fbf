"""The console's fleet view over HTTP (Starlette's TestClient, the console mounted at /console as
the controller mounts it), reading a real PostgreSQL fleet database filled the way `cabinet fleet
serve` fills it (store.Ingest on the contract's messages from simulated cabinets): no fleet page
without a login, the fleet overview (status, last seen, sales today, slots below par, open
alarms), a cabinet's page, and the review queue across the fleet."""
from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import cabinet.console.tables  # noqa: F401  (the console's tables in the metadata)
import cabinet.fleet.tables  # noqa: F401  (the outbox's table, for the real cabinet side)
import cabinet.inventory  # noqa: F401
import cabinet.journal  # noqa: F401
from billing.db import init_db, make_engine, session_factory
from cabinet.config import load_config
from cabinet.console.app import PUBLIC, ConsoleDeps, console_app
from cabinet.console.auth import Operators
from cabinet.console.fleet import NO_FLEET
from cabinet.fleet import messages
from cabinet.fleet.sim_fleet import SimCabinet
from cabinet.fleet.store import Delivery, Ingest
from cabinet.planogram import load_planogram
from fleet_support import unique
from firmware_bridge.clock import ManualClock

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
DAY = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)     # SimCabinet's first day


class Console:
    def __init__(self, tmp_path: Path, fleet_db=None, template: Path | None = None):
        cfg = load_config(ROOT / "fixtures" / "cabinet.yaml").model_copy(update={
            "data_dir": str(tmp_path / "data"),
            "database_url": f"sqlite:///{tmp_path / 'cabinet.sqlite'}"})
        if template is not None:      # migrated, with the operator: copying beats migrating
            shutil.copyfile(template, tmp_path / "cabinet.sqlite")
        self.engine = engine = make_engine(cfg.database_url)
        init_db(engine)
        self.db = session_factory(engine)
        if template is None:
            Operators(self.db).add("ann", PASSWORD)
        self.clock = ManualClock(wall_start=(DAY + dt.timedelta(hours=10)).timestamp())
        self.app = console_app(ConsoleDeps(config=cfg, db=self.db, clock=self.clock,
                                           fleet_db=fleet_db))
        self.client = TestClient(Starlette(routes=[Mount("/console", self.app)]),
                                 base_url="http://127.0.0.1")

    def login(self) -> None:
        page = self.client.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = self.client.post("/console/login", data={"name": "ann", "password": PASSWORD,
                                                      "csrf": token}, follow_redirects=False)
        assert r.status_code == 303

    def get(self, path: str):
        return self.client.get("/console" + path, follow_redirects=False)


def feed(fleet_view, cabinets: list[SimCabinet], statuses: dict[str, str] = ()) -> None:
    """Everything the cabinets made, stored as the back office stores a delivery."""
    batch = [Delivery(m.topic(), messages.encode_up(m)) for c in cabinets for m in c.outbox]
    for cid, status in dict(statuses).items():
        batch.append(Delivery(messages.status_topic(cid),
                              messages.encode_status(status, DAY + dt.timedelta(hours=1))))
    Ingest(fleet_view.sessions, "fleet-test").store(batch)
    for c in cabinets:
        c.outbox.clear()


def row_of(html: str, cabinet_id: str) -> str:
    rows = [r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S) if f">{cabinet_id}<" in r]
    assert len(rows) == 1, f"{cabinet_id}: {len(rows)} rows"
    return re.sub(r"<[^>]+>", "|", rows[0])


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.split("|") if c.strip()]


@pytest.fixture(scope="module")
def cabinet_db(tmp_path_factory) -> Path:
    """A cabinet database at head with the operator ann, made once for the module."""
    folder = tmp_path_factory.mktemp("console-template")
    Console(folder, None).engine.dispose()      # checkpoints the WAL into the one file
    return folder / "cabinet.sqlite"


@pytest.fixture
def console(tmp_path, fleet_view, cabinet_db):
    return Console(tmp_path, fleet_view.sessions, cabinet_db)


def test_every_fleet_page_refuses_without_login_and_answers_with_one(console, fleet_view):
    cab = SimCabinet(unique("auth"))
    cab.restock()
    feed(fleet_view, [cab])
    fleet_routes = [r for r in console.app.routes if isinstance(r, Route)
                    and r.name.startswith("fleet")]
    assert {r.name for r in fleet_routes} == {"fleet", "fleet_review", "fleet_cabinet"}
    assert not {r.name for r in fleet_routes} & PUBLIC
    for route in fleet_routes:
        path = route.path.replace("{cabinet}", cab.id)
        for cookies in ({}, {"cabinet_console": "forged-token"}):
            console.client.cookies.clear()
            for k, v in cookies.items():
                console.client.cookies.set(k, v)
            r = console.get(path)
            assert r.status_code == 303 and r.headers["location"].endswith("/console/login"), path
            assert cab.id not in r.text
    console.client.cookies.clear()
    console.login()
    for route in fleet_routes:
        path = route.path.replace("{cabinet}", cab.id)
        assert console.get(path).status_code == 200, path


def test_the_overview_shows_status_last_seen_sales_today_below_par_and_alarms(console,
                                                                            fleet_view):
    busy, quiet = SimCabinet(unique("busy"), start=DAY), SimCabinet(unique("quiet"), start=DAY)
    busy.restock(3)                      # par is 6/6/4/4: every slot below par
    for _ in range(2):
        busy.sale(take=1)
    busy.raise_alarm("door_open_too_long")
    gone = busy.raise_alarm("temperature_high")
    busy.clear_alarm(gone, "temperature_high")
    quiet.restock(10)                    # above every par, no sale, no alarm
    yesterday = SimCabinet(unique("yday"), start=DAY - dt.timedelta(days=1))
    yesterday.restock(10)
    yesterday.sale(take=1)
    feed(fleet_view, [busy, quiet, yesterday], {busy.id: "online", quiet.id: "offline"})
    console.login()
    html = console.get("/fleet").text
    [total] = busy.expected.sales.values()
    b = cells(row_of(html, busy.id))
    assert b[0] == busy.id and b[1] == "online"
    assert b[3] == busy.expected.last_at.strftime("%Y-%m-%d %H:%M:%S")
    assert b[4] == f"EUR {total / 100:.2f}" and b[5:8] == ["4", "1", "?"]
    q = cells(row_of(html, quiet.id))
    assert q[1] == "offline" and q[4:7] == ["-", "0", "0"]
    y = cells(row_of(html, yesterday.id))
    assert y[1] == "unknown" and y[3] == "-", "yesterday's sale counted as today's"


def test_a_cabinets_page_shows_its_stock_sales_alarms_and_reviews(console, fleet_view):
    cab = SimCabinet(unique("page"), start=DAY)
    cab.restock(5)
    flagged = cab.sale(flagged=True, take=1)
    cab.sale(take=1)
    alarm = cab.raise_alarm("door_open_too_long")
    cab.health(False)
    feed(fleet_view, [cab])
    console.login()
    html = console.get(f"/fleet/cabinets/{cab.id}").text
    for slot, qty in cab.expected.stock.items():
        par = {"A1": 6, "A2": 6, "B1": 4, "B2": 4}[slot]
        row = re.search(rf'<tr( class="low")?><td>{slot}</td><td>[^<]+</td><td class="num">'
                        rf'{qty}</td><td class="num">{par}</td>', html)
        assert row, f"slot {slot}: {qty} of par {par} not shown"
        assert bool(row.group(1)) == (qty < par), f"slot {slot}: low mark wrong"
    [total] = cab.expected.sales.values()
    assert re.search(rf"<td>{DAY.date().isoformat()}</td><td class=\"num\">2</td>"
                     rf"<td class=\"num\">EUR {total / 100:.2f}</td>", html)
    assert re.search(rf'<tr class="low"><td>{alarm}</td><td>door_open_too_long</td>', html)
    assert f"<td>{flagged}</td>" in html and "low_confidence" in html
    assert "<dt>in service</dt><dd>no</dd>" in html


def test_below_par_comes_from_the_cabinets_own_inventory_moves(console, fleet_view):
    """The real cabinet side: the outbox's inventory messages carry each slot's par from the
    planogram in force, so the overview counts the slots below par and the cabinet's page
    marks them from the moves alone (no health report in the stream)."""
    from cabinet.catalog import load_catalog
    from cabinet.fleet.outbox import FleetOutbox
    from cabinet.fleet.wiring import pars_of
    from cabinet.inventory import Inventory
    fixtures = ROOT / "fixtures"
    planogram = load_planogram(fixtures / "planogram.yaml",
                               load_catalog(fixtures / "catalog.yaml"))
    inventory = Inventory(console.db, planogram)
    cab_id = unique("real")
    outbox = FleetOutbox(console.db, cab_id, lambda: DAY, par=lambda: pars_of(planogram))
    inventory.restock({slot.id: slot.capacity for slot in planogram.slots})
    inventory.restock({"A1": 1, "B4": 1, "C2": 2})      # par 2, 2, 2: A1 and B4 below
    outbox.collect()
    ups = outbox.pending(limit=1000)
    assert {msg.kind for msg in ups} == {"inventory"}    # no health: par rides on the moves
    assert all(msg.body["par"] == pars_of(planogram)[msg.body["slot"]] for msg in ups)
    Ingest(fleet_view.sessions, "fleet-test").store(
        [Delivery(msg.topic(), messages.encode_up(msg)) for msg in ups]
        + [Delivery(messages.status_topic(cab_id), messages.encode_status("online", DAY))])
    console.login()
    row = cells(row_of(console.get("/fleet").text, cab_id))
    assert row[1] == "online" and row[5:7] == ["2", "0"], row   # 2 below par, no alarm
    html = console.get(f"/fleet/cabinets/{cab_id}").text
    low = set(re.findall(r'<tr class="low"><td>([A-Z][0-9])</td><td>[^<]+</td>'
                         r'<td class="num">\d+</td><td class="num">\d+</td>', html))
    assert low == {"A1", "B4"}
    assert re.search(r'<tr><td>C2</td><td>[^<]+</td><td class="num">2</td>'
                     r'<td class="num">2</td>', html), "C2 at par shown as low or not at all"


def test_the_review_queue_spans_the_fleet_and_drops_what_was_corrected(console, fleet_view):
    a, b = SimCabinet(unique("rva"), start=DAY), SimCabinet(unique("rvb"), start=DAY)
    for c in (a, b):
        c.restock(5)
    wait_a, done_a = a.sale(flagged=True), a.sale(flagged=True)
    wait_b = b.sale(flagged=True)
    b.sale()
    a.correct(done_a, total=0)
    feed(fleet_view, [a, b])
    console.login()
    html = console.get("/fleet/review").text
    assert f"<td>{wait_a}</td>" in html and f"<td>{wait_b}</td>" in html
    assert f"<td>{done_a}</td>" not in html, "a corrected session still waits for review"
    assert html.count(f">{b.id}</a>") == 1, "an unflagged session is in the queue"


def test_an_unknown_or_malformed_cabinet_is_a_404_naming_it(console):
    console.login()
    r = console.get("/fleet/cabinets/nobody-here")
    assert r.status_code == 404 and "cabinet nobody-here: the back office has heard nothing" \
        in r.text
    r = console.get("/fleet/cabinets/bad%20id")
    assert r.status_code == 404 and "field &#39;cabinet&#39;" in r.text


def test_a_console_without_a_fleet_database_says_so(tmp_path, cabinet_db):
    c = Console(tmp_path, None, cabinet_db)
    c.login()
    for path in ("/fleet", "/fleet/review"):
        r = c.get(path)
        assert r.status_code == 200 and NO_FLEET.split(".")[0] in r.text
    assert c.get("/fleet/cabinets/c1").status_code == 404


def test_cabinet_fleet_console_serves_the_fleet_view_behind_the_login(tmp_path, fleet_db,
                                                                      fleet_view):
    """`cabinet fleet console --db URL --config FILE`: the operators of that configuration's
    database log in; the fleet pages read the fleet database."""
    from cabinet.fleet.serve import console_asgi
    from cabinet.ops_cli import open_db
    text = (ROOT / "fixtures" / "cabinet.yaml").read_text()
    text = text.replace("sqlite:///../var/cabinet.sqlite", f"sqlite:///{tmp_path}/c.sqlite")
    text = text.replace("data_dir: ../var", f"data_dir: {tmp_path}/data")
    for name in ("catalog", "planogram", "accounts", "scenarios"):
        text = text.replace(f"{name}: {name}.yaml", f"{name}: {ROOT}/fixtures/{name}.yaml")
    config = tmp_path / "backoffice.yaml"
    config.write_text(text)
    Operators(open_db(load_config(config))).add("ann", PASSWORD)
    cab = SimCabinet(unique("cli"), start=DAY)
    cab.restock()
    feed(fleet_view, [cab], {cab.id: "online"})
    client = TestClient(console_asgi(fleet_db, config), base_url="http://127.0.0.1")
    r = client.get("/console/fleet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/console/login")
    page = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/console/login", data={"name": "ann", "password": PASSWORD,
                                               "csrf": token},
                       follow_redirects=False).status_code == 303
    html = client.get("/console/fleet").text
    assert cells(row_of(html, cab.id))[1] == "online"
