"""Age-restricted goods in the running controller (issue 11, items 2 and 4).

Each test runs `cabinet run`'s loop (cabinet.runner.Runner) in a thread over a fresh simulated
cabinet (make_cabinet: the simulated MCU on a real pty, SQLite, the sandbox gateway), and plays
the customer from the test's thread: the face at the camera starts the session, the customer
waits for the lock, opens the door, takes from the slots and closes it. What the controller
decided is read where it is kept: billing's session, lines, tax entries and stored receipt,
the journal, the alarms table, the kiosk's screen, and what the simulated MCU itself did with
its compartment lock channel.

Real time, on purpose: the MCU times the unlock pulse, the load cells settle by themselves and
the runner polls the face camera; every wait for them is a bounded condition wait
(tests/waiting.py).
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from billing.models import CabinetSession, Charge, Hold, LineItem, TaxEntry
from cabinet.age import FLAG
from cabinet.config import TimeoutsConfig, load_config
from cabinet.journal import Alarms, JournalEntry
from cabinet.kiosk.state import PendingReview, Receipt, Refused, SecondFactor, Unlocked
from cabinet.runner import Runner
from tests.cabinet.test_console import Console
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

FIX = Path(__file__).resolve().parents[2] / "fixtures"
PERSON = "obama"            # an enrolled face with the shared photos and without them
BOUND_S = 60.0              # real-time bound on any one wait (a session takes a few seconds)
COMPARTMENT = {"id": "bar", "lock_channel": 1, "shelves": ["middle"], "age_restricted": True}
CELLAR = {"id": "cellar", "lock_channel": 2, "shelves": ["bottom"], "age_restricted": True}
LAGER = "lager-330"
# Generous on a loaded machine: identifying the face may take seconds, and the customer (this
# test's thread) must open the door within the MCU's pulse.
TIMING = TimeoutsConfig(face_s=30, auth_s=30, unlock_pulse_ms=10000, door_open_alarm_s=60,
                        door_open_max_s=300, settle_s=10)


def config_for(tmp_path: Path, name: str, *, compartment: bool = False,
               compartments: list[dict] | None = None):
    """The fixture's configuration, HTTP on a free port; with the middle shelf (the lager)
    behind compartment 'bar' on lock channel 1 when asked, or with `compartments`."""
    cfg = load_config(FIX / name)
    update = {"http": cfg.http.model_copy(update={"port": 0})}
    if compartment or compartments:
        data = yaml.safe_load(cfg.planogram_path.read_text(encoding="utf-8"))
        data["compartments"] = compartments or [COMPARTMENT]
        path = tmp_path / "planogram-bar.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        update["planogram"] = str(path)
    return cfg.model_copy(update=update)


class Running:
    """A SimCabinet with its Runner looping in a thread; `stop()` ends it cleanly."""

    def __init__(self, cab):
        self.cab = cab
        self.runner = Runner(cab.app, environ={})
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(
            asyncio.run(self.runner.run())), daemon=True)
        self.thread.start()
        wait_until(lambda: self.runner.port is not None or not self.thread.is_alive(),
                   "the runner to serve", BOUND_S)
        assert self.thread.is_alive(), "the runner stopped while starting"

    @property
    def account(self) -> int:
        return self.cab.account_ids[PERSON]

    def shop(self, *slots: str, at_the_door=None) -> str:
        """One customer session: show the face, wait for the lock, call `at_the_door()` with
        the door still shut (the kiosk says the door is unlocked), open the door, take one
        item from each slot, close the door; the session id once the runner has finished it."""
        cab, runner = self.cab, self.runner
        before = runner.sessions_run
        cab.face_camera.show(cab.photo_for(PERSON, 0))
        try:
            screen = wait_until(lambda: isinstance(runner.kiosk.screen, (
                Unlocked, Refused, SecondFactor)) and runner.kiosk.screen,
                "the kiosk to let the customer in or refuse them", BOUND_S)
        finally:
            cab.face_camera.show(None)
        assert isinstance(screen, Unlocked), f"the customer was not let in: {screen}"
        if at_the_door is not None:
            at_the_door()
        assert cab.mcu.open_door(), "the lock held the door shut"
        for slot in slots:
            cab.world.take(slot, 1)
        cab.mcu.close_door()
        cab.world.leave()
        wait_until(lambda: runner.sessions_run > before, "the session to end", BOUND_S)
        return self.last_session()

    def last_session(self) -> str:
        with self.cab.db() as s:
            return s.scalars(select(CabinetSession.id)
                             .order_by(CabinetSession.opened_at.desc())).first()

    def stop(self) -> None:
        self.runner.stop_from_thread()
        self.thread.join(BOUND_S)
        assert not self.thread.is_alive(), "the runner did not stop"
        assert self.result == [0]


@pytest.fixture
def run_cabinet(make_cabinet, tmp_path):
    """Factory: `run_cabinet(config_name, compartment=False, compartments=None)` -> Running;
    stopped at teardown."""
    started: list[Running] = []

    def start(name: str = "cabinet.yaml", *, compartment: bool = False,
              compartments: list[dict] | None = None) -> Running:
        cab = make_cabinet(config=config_for(tmp_path, name, compartment=compartment,
                                             compartments=compartments), timing=TIMING)
        started.append(Running(cab))
        return started[-1]
    yield start
    for r in started:
        r.stop()


# --- reading back what happened --------------------------------------------------------------
def session_row(cab, sid: str) -> CabinetSession:
    with cab.db() as s:
        return s.get(CabinetSession, sid)


def lines(cab, sid: str) -> list[tuple[str, int, int, int, int, int]]:
    """(sku, qty, amount, rate bp, net, tax) of each charged line."""
    with cab.db() as s:
        return [(x.sku, x.qty, x.amount, x.tax_rate_bp, x.net, x.tax) for x in s.scalars(
            select(LineItem).where(LineItem.session_id == sid).order_by(LineItem.position))]


def captured(cab, sid: str) -> int:
    with cab.db() as s:
        return sum(c.amount for c in s.scalars(select(Charge).where(
            Charge.session_id == sid, Charge.status == "captured")))


def journal(cab, sid: str, trigger: str) -> dict:
    with cab.db() as s:
        entry = s.scalars(select(JournalEntry).where(JournalEntry.session_id == sid,
                                                     JournalEntry.trigger == trigger)).one()
        return json.loads(entry.data or "{}")


def alarm_rows(cab) -> list[tuple[str, bool, bool]]:
    """(kind, cleared, review) of every alarm row, oldest first."""
    return [(a.kind, a.cleared_at is not None, a.review) for a in Alarms(cab.db).all()]


def verify_age(cab, account_id: int) -> None:
    cab.billing.verify_age(account_id, by="op-anna", method="id_card")


def hold_status(cab, sid: str) -> str:
    with cab.db() as s:
        return s.scalars(select(Hold).where(Hold.session_id == sid)).one().status


def review_console(cab) -> Console:
    """The operator console (tests/cabinet/test_console.py's client) over this cabinet, an
    operator logged in."""
    console = Console(cab.config, cab.db, billing=cab.billing)
    console.add()
    console.login()
    return console


def review_form(console: Console, sid: str, reason: str, **qty: int) -> dict:
    """The review page's correction form as the operator sends it: each SKU's quantity (0
    unless given), the reason, and whether it decides a session waiting for review."""
    page = console.client.get(f"/console/review/{sid}").text
    form = {f"qty_{sku}": str(qty.get(sku.replace("-", "_"), 0))
            for sku in re.findall(r'name="qty_([^"]+)"', page)}
    assert form, "the review page has no correction form"
    if '<input type="hidden" name="decides_review" value="yes">' in page:
        form["decides_review"] = "yes"
    return dict(form, reason=reason)


# --- the scenarios ---------------------------------------------------------------------------
def test_an_unverified_customer_who_takes_the_lager_is_flagged_alarmed_and_not_charged_for_it(
        run_cabinet):
    running = run_cabinet("cabinet.yaml")          # EUR; the lager shares the main door
    cab = running.cab
    at_door: list = []
    sid = running.shop("B4", "A3", at_the_door=lambda: at_door.append(running.runner.kiosk.screen))

    # told at the door that the restricted goods are not for them
    assert at_door[0].age_notice is True
    # reconcile saw the lager leave; it was withheld, the water charged
    assert journal(cab, sid, "reconciled")["basket"] == {"lager-330": 1, "water-500": 1}
    assert journal(cab, sid, "finished")["withheld"] == {"lager-330": 1}
    row = session_row(cab, sid)
    assert row.outcome == "charged" and row.total == 120
    assert FLAG in row.flags                      # the console's review queue lists it
    assert [x[0] for x in lines(cab, sid)] == ["water-500"]
    assert captured(cab, sid) == 120
    receipt = cab.billing.stored_receipts(sid)[-1]
    assert "Lager" not in receipt and "Still water 500 ml bottle" in receipt
    # an alarm in cabinet_alarms for review; a record, so the cabinet stays in service
    assert alarm_rows(cab) == [("age_restricted_taken", True, True)]
    assert running.runner.health()["in_service"]
    # the customer sees the pending-review screen, saying the restricted items were not charged
    screen = running.runner.kiosk.screen
    assert isinstance(screen, PendingReview) and screen.age_restricted is True
    assert cab.mcu.channel_unlocks[1] == 0


def test_an_unverified_customer_who_takes_only_the_lager_waits_for_the_operator_who_decides_once(
        run_cabinet):
    running = run_cabinet("cabinet.yaml")
    cab = running.cab
    price = cab.catalog[LAGER].price
    first = running.shop("B4")
    # nothing charged, nothing released: the hold waits for the operator's decision
    row = session_row(cab, first)
    assert (row.outcome, row.state, row.total) == ("pending", "review", 0) and FLAG in row.flags
    assert row.outcome_reason.startswith("review: unverified customer took age-restricted goods")
    assert captured(cab, first) == 0 and lines(cab, first) == []
    assert hold_status(cab, first) == "authorized"
    assert journal(cab, first, "finished")["outcome"] == "pending"
    assert alarm_rows(cab) == [("age_restricted_taken", True, True)]
    assert isinstance(running.runner.kiosk.screen, PendingReview)
    assert running.runner.kiosk.screen.age_restricted is True

    console = review_console(cab)
    assert f'href="/console/review/{first}"' in console.client.get("/console/review").text
    assert 'id="waiting"' in console.client.get(f"/console/review/{first}").text
    # the operator checked the customer's ID: the lager is captured from the hold kept for it
    form = review_form(console, first, "ID checked at the office: adult", lager_330=1)
    assert form["decides_review"] == "yes"
    r = console.post(f"/review/{first}/correct", form)
    assert r.status_code == 200 and f"charge EUR {price / 100:.2f} (done)" in r.text
    assert hold_status(cab, first) == "captured" and captured(cab, first) == price
    assert session_row(cab, first).outcome == "charged"
    r = console.post(f"/review/{first}/correct", form)       # the same form sent again
    assert r.status_code == 409 and "decided already" in r.text
    assert captured(cab, first) == price, "charged twice"
    # a stale dismissal of the same session from another operator's page moves nothing
    r = console.post(f"/review/{first}/dismiss", {"reason": "no ID", "decides_review": "yes"})
    assert r.status_code == 409 and "decided already" in r.text
    assert hold_status(cab, first) == "captured" and captured(cab, first) == price
    assert f'href="/console/review/{first}"' not in console.client.get("/console/review").text

    # another visit, another lager: no ID this time, so the operator leaves it unsold
    second = running.shop("B4")
    assert hold_status(cab, second) == "authorized"
    r = console.post(f"/review/{second}/dismiss", {"reason": "no ID shown: written off"})
    assert r.status_code == 200 and "the hold is released (done)" in r.text
    assert hold_status(cab, second) == "voided" and captured(cab, second) == 0
    assert session_row(cab, second).outcome == "nothing_taken"
    # decided: a charge afterwards is refused, and nothing is captured
    r = console.post(f"/review/{second}/correct",
                     review_form(console, second, "ID after all", lager_330=1))
    assert r.status_code == 409 and "only a charged session can be corrected" in r.text
    assert captured(cab, second) == 0
    assert cab.gateway.effects()["capture"] == 1 and cab.gateway.effects()["void"] == 1


def test_a_verified_adult_is_charged_for_the_lager_with_a_10_percent_line(run_cabinet):
    running = run_cabinet("cabinet-jp.yaml")       # JPY: alcohol at 10%, floor per rate
    cab = running.cab
    verify_age(cab, running.account)
    at_door: list = []
    sid = running.shop("B4", at_the_door=lambda: at_door.append(running.runner.kiosk.screen))
    assert at_door[0].age_notice is False
    row = session_row(cab, sid)
    assert row.outcome == "charged" and row.total == 248 and FLAG not in (row.flags or [])
    # 248 yen at 10% included: tax floor(248 * 10 / 110) = 22, net 226
    assert lines(cab, sid) == [("lager-330", 1, 248, 1000, 226, 22)]
    assert captured(cab, sid) == 248
    receipt = cab.billing.stored_receipts(sid)[-1]
    assert "(10%)" in receipt and "10% on JPY 248: net JPY 226, tax JPY 22" in receipt
    assert "Tax reg.  T1234567890123" in receipt
    assert alarm_rows(cab) == []
    assert isinstance(running.runner.kiosk.screen, Receipt)


def test_a_mixed_basket_in_yen_carries_both_rates_adding_up_to_the_charge(run_cabinet):
    running = run_cabinet("cabinet-jp.yaml")
    cab = running.cab
    verify_age(cab, running.account)
    sid = running.shop("B4", "A3", "C3")           # lager 248 (10%), water 110 + sour cream 298 (8%)
    row = session_row(cab, sid)
    assert row.outcome == "charged" and row.total == 656 == captured(cab, sid)
    assert {x[0]: x[3] for x in lines(cab, sid)} == {
        "lager-330": 1000, "sour-cream-300": 800, "water-500": 800}
    with cab.db() as s:
        rates = {t.rate_bp: (t.gross, t.net, t.tax) for t in s.scalars(
            select(TaxEntry).where(TaxEntry.session_id == sid, TaxEntry.kind == "sale"))}
    # rounded once per rate: 8% of 408 included -> floor(30.2) = 30; 10% of 248 -> 22
    assert rates == {800: (408, 378, 30), 1000: (248, 226, 22)}
    assert sum(g for g, _, _ in rates.values()) == row.total
    assert all(g == n + t for g, n, t in rates.values())
    receipt = cab.billing.stored_receipts(sid)[-1]
    assert "8% on JPY 408: net JPY 378, tax JPY 30" in receipt
    assert "10% on JPY 248: net JPY 226, tax JPY 22" in receipt


def test_the_compartment_opens_only_for_a_verified_adult(run_cabinet):
    running = run_cabinet("cabinet-jp.yaml", compartment=True)
    cab = running.cab
    seen: list = []

    def minor_at_the_door():        # the compartment would be released before this screen
        seen.append((running.runner.kiosk.screen, dict(cab.mcu.channel_engaged)))

    def adult_at_the_door():
        wait_until(lambda: not cab.mcu.channel_engaged[1], "the compartment's lock to release",
                   BOUND_S)
        seen.append((running.runner.kiosk.screen, dict(cab.mcu.channel_engaged)))

    first = running.shop(at_the_door=minor_at_the_door)
    assert cab.mcu.channel_unlocks[1] == 0 and seen[0][1] == {1: True}
    assert journal(cab, first, "authorized")["lock_channels"] == [0]
    assert seen[0][0].age_notice is False          # the lager is behind its own door
    assert session_row(cab, first).outcome == "nothing_taken"

    verify_age(cab, running.account)
    second = running.shop(at_the_door=adult_at_the_door)
    assert seen[1][1] == {1: False}
    assert cab.mcu.channel_unlocks[1] == 1
    assert journal(cab, second, "authorized")["lock_channels"] == [0, 1]
    # the controller's Lock at the door's close engages the compartment again
    assert cab.mcu.channel_engaged[1] is True
    # a release this host commanded is no tamper
    assert alarm_rows(cab) == []


def test_an_uncommanded_compartment_release_is_a_tamper_alarm_until_it_relocks(run_cabinet):
    running = run_cabinet("cabinet-jp.yaml", compartment=True)
    cab, runner = running.cab, running.runner
    cab.mcu.inject("uncommanded_unlock", cause="manual_key", duration_s=0.5, channel=1)
    wait_until(lambda: runner.health()["alarms"] == ["compartment_unlock"]
               and not runner.health()["in_service"], "the tamper alarm", BOUND_S)
    wait_until(lambda: runner.health()["in_service"], "the compartment to relock", BOUND_S)
    assert alarm_rows(cab) == [("compartment_unlock", True, True)]
    assert cab.mcu.channel_unlocks[1] == 0 and cab.mcu.uncommanded_releases == 1


def test_a_compartment_released_without_a_command_during_a_session_is_recorded_for_review(
        run_cabinet):
    running = run_cabinet("cabinet-jp.yaml", compartment=True)
    cab = running.cab
    # an unverified customer: the compartment stays shut, until its manual key is turned
    sid = running.shop(at_the_door=lambda: cab.mcu.inject(
        "uncommanded_unlock", cause="manual_key", duration_s=30.0, channel=1))
    assert journal(cab, sid, "authorized")["lock_channels"] == [0]
    assert cab.mcu.channel_unlocks[1] == 0
    assert "ChannelUncommandedUnlock" in cab.controller.alarms
    # recorded for review; the controller's Lock at the door's close engaged it again, and the
    # alarm clears once the board's ChannelLockChanged says so
    assert cab.mcu.channel_engaged[1] is True
    wait_until(lambda: alarm_rows(cab) == [("compartment_unlock", True, True)],
               "the compartment alarm recorded and cleared", BOUND_S)
    assert cab.controller.compartments_released == set()


def test_with_two_compartments_the_tamper_alarm_stays_until_both_are_locked_again(run_cabinet):
    running = run_cabinet("cabinet-jp.yaml", compartments=[COMPARTMENT, CELLAR])
    cab, runner = running.cab, running.runner
    assert cab.mcu.lock_channels == 3 and cab.mcu.channel_engaged == {1: True, 2: True}
    # both compartments' manual keys turned; the bar's lock springs back after half a second,
    # the cellar's stays released
    cab.mcu.inject("uncommanded_unlock", cause="manual_key", duration_s=0.5, channel=1)
    cab.mcu.inject("uncommanded_unlock", cause="manual_key", duration_s=600.0, channel=2)
    wait_until(lambda: cab.controller.compartments_released == {2}, "the bar locked again, "
               "the cellar still released (as the runner read the board's events)", BOUND_S)
    assert cab.mcu.channel_engaged == {1: True, 2: False}
    assert runner.health()["alarms"] == ["compartment_unlock"]
    assert not runner.health()["in_service"]
    assert alarm_rows(cab) == [("compartment_unlock", False, True)]
    # the technician locks the cellar again (the host's Lock engages every channel)
    cab.board.lock()
    wait_until(lambda: runner.health()["in_service"], "the cabinet back in service", BOUND_S)
    assert cab.mcu.channel_engaged == {1: True, 2: True}
    assert alarm_rows(cab) == [("compartment_unlock", True, True)]
    assert cab.controller.compartments_released == set()
    assert cab.mcu.channel_unlocks == {} and cab.mcu.uncommanded_releases == 2
