"""A session held for an operator's review (issue 11: an unverified customer took age-restricted
goods) on SQLite and PostgreSQL with the real sandbox gateway: the hold is kept while the
session waits, the operator's decision captures the confirmed basket from it or voids it, once;
and a session whose other goods were charged at once gets the withheld items charged by a
correction as a payment of its own, the tax moving with them (docs/age.md)."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from billing import (Billing, BillingError, GatewayClient, Line, Money, init_db, make_engine,
                     session_factory)
from billing.models import CabinetSession, Charge, Hold, LedgerEntry, TaxEntry
from billing.outbox_models import Correction
from billing.tax import RatePeriod, TaxRules, TaxSetup
from billing_support import HOLD, TEST_SECRETS

FLAG = "age_restricted_unverified"           # cabinet.age.FLAG (billing tests stay in billing)
WHY = "unverified customer took age-restricted goods (1 x beer); not charged, review the session"
JP = TaxRules("JP", "JPY", "floor", {
    "reduced": (RatePeriod(800, dt.date(2019, 10, 1)),),
    "alcohol": (RatePeriod(1000, dt.date(2019, 10, 1)),)}, registration="T1234567890123")
ONIGIRI, BEER = Line("onigiri", "Onigiri", 2, 150), Line("beer", "Beer 350 ml", 2, 248)
WATER, LAGER = Line("water-500", "Still water", 1, 120), Line("lager-330", "Lager", 1, 350)


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


@pytest.fixture
def taxed(db_url, gateway, clock):
    """A yen Billing with the Japanese rates (8% food, 10% alcohol), its own engine."""
    engine = make_engine(db_url)
    init_db(engine)
    client = GatewayClient(gateway.base_url, api_key=gateway.api_key, timeout_s=1.0,
                           max_retries=3, sleep=lambda s: None, jitter=lambda: 1.0)
    yield Billing(session_factory(engine), client, hold_amount=5000, currency="JPY",
                  cabinet_id="cab-jp", clock=clock, secrets=TEST_SECRETS,
                  outbox_jitter=lambda: 1.0, tax=TaxSetup(JP, {"onigiri": "reduced",
                                                               "beer": "alcohol"}))
    engine.dispose()


def waiting_for_review(billing: Billing, account_id: int, sid: str = "s-1", lines=()):
    assert billing.place_hold(sid, account_id).ok
    return billing.settle(sid, list(lines), flags=[FLAG], review=WHY)


def ledger(book, sid: str = "s-1") -> list[tuple[str, int]]:
    return book.ledger(sid)


def tax_entries(billing: Billing, sid: str) -> list[tuple[str, int, int, int, int]]:
    with billing._sessions() as db:
        return [(t.kind, t.rate_bp, t.gross, t.net, t.tax) for t in db.scalars(
            select(TaxEntry).where(TaxEntry.session_id == sid).order_by(TaxEntry.id))]


# --- waiting ---------------------------------------------------------------------------------
def test_an_empty_basket_held_for_review_keeps_the_hold_and_waits_pending(
        billing, alice, gateway, book):
    receipt = waiting_for_review(billing, alice.id)
    assert receipt.outcome == "pending" and receipt.charged == Money(0, "EUR")
    row = book.one(CabinetSession, id="s-1")
    assert (row.state, row.outcome, row.total) == ("review", "pending", 0)
    assert row.outcome_reason == f"review: {WHY}" and FLAG in row.flags
    assert book.one(Hold, session_id="s-1").status == "authorized"
    assert ledger(book) == [("hold", HOLD)]
    assert gateway.effects()["void"] == 0 and gateway.effects()["capture"] == 0
    assert f"review: {WHY}" in receipt.render_text()
    # the controller settling it again after a restart changes nothing
    assert billing.settle("s-1", [], flags=[FLAG], review=WHY).outcome == "pending"
    assert gateway.effects()["void"] == 0 and ledger(book) == [("hold", HOLD)]


def test_without_a_review_an_empty_basket_still_releases_the_hold(billing, alice, gateway):
    assert billing.place_hold("s-1", alice.id).ok
    assert billing.settle("s-1", [], flags=[FLAG]).outcome == "nothing_taken"
    assert gateway.effects()["void"] == 1


def test_a_blank_review_reason_is_refused_and_nothing_is_written(billing, alice, book):
    assert billing.place_hold("s-1", alice.id).ok
    with pytest.raises(BillingError, match="settle s-1: review ' ' must say why the session "
                                           "waits for an operator"):
        billing.settle("s-1", [], review=" ")
    row = book.one(CabinetSession, id="s-1")
    assert (row.state, row.outcome, row.total) == ("held", None, None)


# --- the operator's decision -----------------------------------------------------------------
def test_the_operator_confirming_the_items_captures_them_from_the_hold(
        billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    done = billing.correct("s-1", [LAGER], "ID checked at the office: adult",
                          decides_review=True)
    assert (done.number, done.action, done.amount, done.status) == \
        (1, "charge", Money(350, "EUR"), "done")
    assert (done.old_total, done.new_total) == (Money(0, "EUR"), Money(350, "EUR"))
    capture = book.one(Charge, session_id="s-1")
    assert (capture.kind, capture.amount, capture.status, capture.idempotency_key) == \
        ("capture", 350, "captured", "s-1:capture")
    assert book.one(Hold, session_id="s-1").status == "captured"
    assert ledger(book) == [("hold", HOLD), ("capture", 350)]
    assert gateway.effects()["capture"] == 1 and gateway.effects()["void"] == 0
    assert gateway.effects()["charge"] == 0         # the hold paid it, no second payment
    row = book.one(CabinetSession, id="s-1")
    assert (row.state, row.outcome, row.outcome_reason) == ("closed", "charged", None)
    receipt = billing.receipt("s-1")
    assert [x.sku for x in receipt.lines] == ["lager-330"]
    assert receipt.total == receipt.charged == Money(350, "EUR")
    assert "Corrected basket (ID checked at the office: adult):" in receipt.render_text()


def test_the_operator_leaving_the_items_unsold_voids_the_hold(billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    done = billing.correct("s-1", [], "no ID shown: written off", decides_review=True)
    assert (done.action, done.amount, done.status) == ("void", Money(0, "EUR"), "done")
    assert book.one(Hold, session_id="s-1").status == "voided"
    assert ledger(book) == [("hold", HOLD), ("void", HOLD)]
    assert gateway.effects()["void"] == 1 and gateway.effects()["capture"] == 0
    row = book.one(CabinetSession, id="s-1")
    assert (row.state, row.outcome) == ("closed", "nothing_taken")
    assert row.outcome_reason == "review: no ID shown: written off"
    assert billing.receipt("s-1").charged == Money(0, "EUR")


def test_a_confirmed_basket_above_the_hold_charges_the_rest_as_a_second_payment(
        billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    whisky = Line("whisky", "Whisky 70 cl", 1, HOLD + 700)
    assert billing.correct("s-1", [whisky], "ID checked", decides_review=True).status == "done"
    assert ledger(book) == [("hold", HOLD), ("capture", HOLD), ("capture", 700)]
    extra = book.one(Charge, session_id="s-1", kind="extra")
    assert (extra.amount, extra.status, extra.idempotency_key) == (700, "captured", "s-1:extra")
    assert book.one(CabinetSession, id="s-1").outcome == "charged"


def test_a_decision_the_gateway_does_not_answer_is_captured_once_by_the_outbox(
        billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    gateway.fail_next(4, "500")             # the gateway does not answer: the outbox retries
    done = billing.correct("s-1", [LAGER], "ID checked", decides_review=True)
    assert (done.action, done.status) == ("charge", "pending")
    row = book.one(CabinetSession, id="s-1")
    assert (row.outcome, row.state) == ("pending", "settling")
    assert row.outcome_reason.startswith("payment retry")
    assert billing.drain_outbox(force=True).pending == 0
    assert book.one(CabinetSession, id="s-1").outcome == "charged"
    assert ledger(book) == [("hold", HOLD), ("capture", 350)]
    assert gateway.effects()["capture"] == 1


def test_a_review_decided_with_a_void_cannot_be_charged_afterwards(billing, alice, gateway):
    waiting_for_review(billing, alice.id)
    billing.correct("s-1", [], "no ID shown", decides_review=True)
    with pytest.raises(BillingError, match="correct s-1: the session does not wait for a "
                                           "review decision \\(it is nothing_taken\\)"):
        billing.correct("s-1", [LAGER], "ID checked after all", decides_review=True)
    with pytest.raises(BillingError, match="correct s-1: the session is nothing_taken; only a "
                                           "charged session can be corrected"):
        billing.correct("s-1", [LAGER], "ID checked after all")
    assert gateway.effects()["capture"] == 0 and gateway.effects()["charge"] == 0


def test_the_same_decision_sent_twice_charges_once(billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    billing.correct("s-1", [LAGER], "ID checked", decides_review=True)
    with pytest.raises(BillingError, match="correct s-1: the session does not wait for a "
                                           "review decision \\(it is charged\\)"):
        billing.correct("s-1", [], "no ID shown", decides_review=True)   # a stale second one
    with pytest.raises(BillingError, match="decided already"):
        billing.correct("s-1", [LAGER], "ID checked", decides_review=True)   # a second click
    assert gateway.effects()["capture"] == 1 and gateway.effects()["refund"] == 0
    assert ledger(book) == [("hold", HOLD), ("capture", 350)]
    assert [c.number for c in book.all(Correction, session_id="s-1")] == [1]


def test_a_waiting_session_is_only_decided_never_corrected_around_its_hold(
        billing, alice, gateway, book):
    waiting_for_review(billing, alice.id)
    with pytest.raises(BillingError, match="correct s-1: the session waits for the operator's "
                                           "review decision"):
        billing.correct("s-1", [LAGER], "operator")
    row = book.one(CabinetSession, id="s-1")
    assert (row.state, row.outcome) == ("review", "pending")
    assert book.one(Hold, session_id="s-1").status == "authorized"
    assert gateway.effects()["charge"] == 0 and gateway.effects()["capture"] == 0


def test_a_session_that_never_waited_cannot_be_decided(billing, alice, gateway):
    assert billing.place_hold("s-1", alice.id).ok
    billing.settle("s-1", [WATER], flags=[FLAG])
    with pytest.raises(BillingError, match="correct s-1: the session does not wait for a "
                                           "review decision \\(it is charged\\)"):
        billing.correct("s-1", [WATER, LAGER], "ID checked", decides_review=True)
    assert gateway.effects()["charge"] == 0 and gateway.effects()["capture"] == 1


def test_two_operators_deciding_at_once_get_one_decision(make_billing, gateway, book):
    """Two consoles (two processes: two engines) decide the same review at the same moment,
    one to charge, one to void, over several sessions: each time exactly one decision is
    taken, the other is refused, and the gateway sees either one capture or one void."""
    first, second = make_billing(), make_billing()
    account = first.open_account("Alice", "tok_visa_ok", "EUR")
    for n in range(4):
        sid = f"s-{n}"
        waiting_for_review(first, account.id, sid)
        start = threading.Barrier(2)
        answers: dict[str, object] = {}

        def decide(who: str, billing: Billing, lines: list[Line]) -> None:
            start.wait(10)
            try:
                answers[who] = billing.correct(sid, lines, f"operator {who}",
                                               decides_review=True)
            except BillingError as e:
                answers[who] = e

        threads = [threading.Thread(target=decide, args=("charge", first, [LAGER])),
                   threading.Thread(target=decide, args=("void", second, []))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a correction did not return"
        won = [k for k, v in answers.items() if not isinstance(v, BillingError)]
        assert len(won) == 1, answers
        lost = answers[{"charge": "void", "void": "charge"}[won[0]]]
        assert isinstance(lost, BillingError) and f"correct {sid}:" in str(lost)
        row = book.one(CabinetSession, id=sid)
        assert row.outcome == {"charge": "charged", "void": "nothing_taken"}[won[0]]
        kinds = [k for k, _ in book.ledger(sid)]
        assert kinds == {"charge": ["hold", "capture"], "void": ["hold", "void"]}[won[0]]
    effects = gateway.effects()
    assert effects["capture"] + effects["void"] == 4


# --- restricted items withheld beside items charged at once ---------------------------------
def test_withheld_items_of_a_charged_session_are_charged_as_a_payment_of_their_own(
        taxed, gateway):
    alice = taxed.open_account("Alice", "tok_visa_ok", "JPY")
    receipt = waiting_for_review(taxed, alice.id, "s-jp", [ONIGIRI])
    # the onigiri are charged at once; the session is flagged, not held for review
    assert receipt.outcome == "charged" and receipt.charged == Money(300, "JPY")
    with taxed._sessions() as db:
        row = db.get(CabinetSession, "s-jp")
        assert row.state == "closed" and FLAG in row.flags
    done = taxed.correct("s-jp", [ONIGIRI, BEER], "ID checked: adult")
    assert (done.action, done.amount, done.status) == ("charge", Money(496, "JPY"), "done")
    with taxed._sessions() as db:
        charges = [(c.kind, c.amount, c.status, c.idempotency_key) for c in db.scalars(
            select(Charge).where(Charge.session_id == "s-jp").order_by(Charge.id))]
        captured = [e.amount for e in db.scalars(select(LedgerEntry).where(
            LedgerEntry.session_id == "s-jp", LedgerEntry.kind == "capture"))]
    assert charges == [("capture", 300, "captured", "s-jp:capture"),
                       ("correction-1", 496, "captured", "s-jp:correction:1")]
    assert captured == [300, 496]
    # 8%: floor(300 * 8 / 108) = 22; the beer's 10% moves in with the correction:
    # floor(496 * 10 / 110) = 45
    assert tax_entries(taxed, "s-jp") == [("sale", 800, 300, 278, 22),
                                          ("correction", 1000, 496, 451, 45)]
    receipt = taxed.receipt("s-jp")
    assert receipt.charged == receipt.total == Money(796, "JPY")
    assert [(r.bp, r.gross, r.net, r.tax) for r in receipt.taxes] == [
        (800, 300, 278, 22), (1000, 496, 451, 45)]
    assert "   10% on JPY 496: net JPY 451, tax JPY 45" in receipt.render_text()


def test_a_review_charged_from_the_hold_carries_its_tax(taxed, gateway):
    alice = taxed.open_account("Alice", "tok_visa_ok", "JPY")
    waiting_for_review(taxed, alice.id, "s-jp")
    assert tax_entries(taxed, "s-jp") == []           # nothing sold while it waits
    taxed.correct("s-jp", [BEER], "ID checked: adult", decides_review=True)
    assert tax_entries(taxed, "s-jp") == [("correction", 1000, 496, 451, 45)]
    receipt = taxed.receipt("s-jp")
    assert receipt.outcome == "charged" and receipt.charged == Money(496, "JPY")
    assert [(r.bp, r.gross, r.net, r.tax) for r in receipt.taxes] == [(1000, 496, 451, 45)]
