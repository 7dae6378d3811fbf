"""The charge path, to the minor unit: hold, capture (or void), debt above the hold, refunds.

Each test pins exact amounts on all three records of a charge: the rows Billing wrote (hold,
charge, line items), the ledger, and what the sandbox gateway itself says it authorised,
captured, voided or refunded. A wrong amount, key, status or a second capture shows up in at
least one of them.
"""
from __future__ import annotations

import datetime as dt

import pytest

from billing import (Billing, BillingError, GatewayClient, Line, Money, NotHeld,
                     RefundRefused, SettlementConflict)
from billing.models import CabinetSession, Charge, Hold, LineItem, Refund
from billing.money import InvalidAmount, UnknownCurrency

HOLD = 2000  # the make_billing fixture's hold_amount (EUR 20.00)
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # the clock fixture's start

COLA = Line("cola-330", "Cola 330 ml", 2, 150)      # 300
CRISPS = Line("crisps-salt", "Crisps salted", 1, 220)  # 220


@pytest.fixture
def alice(billing, clock):
    assert (billing.hold_amount, clock.now) == (HOLD, T0)  # what the numbers below assume
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


class PowerCut(Exception):
    pass


class DiesBeforeCapture(GatewayClient):
    """The capture row and its key are committed; the process dies before the request."""

    def capture(self, auth_id, amount, idempotency_key, **kw):
        raise PowerCut("before the capture request")


def held(billing, alice, session_id="s-1"):
    result = billing.place_hold(session_id, alice.id)
    assert result.ok, result.reason
    return result


# --- the hold ---------------------------------------------------------------------------
def test_the_hold_is_the_configured_amount_at_the_gateway_and_in_the_ledger(
        billing, alice, gateway, book):
    result = held(billing, alice)
    auth = gateway.intent(result.auth_id)
    assert (auth["status"], auth["amount"], auth["currency"]) == \
        ("requires_capture", HOLD, "EUR")
    assert (result.session_id, result.reason, result.amount, result.code) == \
        ("s-1", "", Money(HOLD, "EUR"), None)
    hold = book.one(Hold, session_id="s-1")
    assert (hold.status, hold.amount, hold.currency, hold.idempotency_key,
            hold.gateway_auth_id, hold.account_id) == \
        ("authorized", HOLD, "EUR", "s-1:hold", result.auth_id, alice.id)
    assert book.ledger("s-1") == [("hold", HOLD)]
    sess = book.one(CabinetSession, id="s-1")
    assert (sess.state, sess.outcome, sess.cabinet_id, sess.opened_at) == \
        ("held", None, "cab-test", T0)


def test_a_hold_on_another_cabinet_records_that_cabinet(billing, alice, book):
    billing.place_hold("s-1", alice.id, cabinet_id="cab-7")
    assert book.one(CabinetSession, id="s-1").cabinet_id == "cab-7"


def test_a_session_of_one_account_cannot_be_held_for_another(billing, alice, gateway):
    bob = billing.open_account("Bob", "tok_visa_ok")
    held(billing, alice)
    with pytest.raises(BillingError, match=f"session s-1 belongs to account {alice.id}, "
                                           f"not {bob.id}"):
        billing.place_hold("s-1", bob.id)
    assert gateway.effects()["authorize"] == 1


def test_a_denied_session_stays_denied_without_asking_the_gateway_again(
        billing, alice, gateway):
    billing.block(alice.id, "fraud review")
    first = billing.place_hold("s-1", alice.id)
    billing.unblock(alice.id)
    again = billing.place_hold("s-1", alice.id)
    assert (first.ok, again.ok, again.code) == (False, False, "denied")
    assert again.reason == "account blocked: fraud review"
    assert gateway.requests_seen() == []


def test_a_gateway_error_on_the_hold_denies_the_session_and_says_so(billing, alice, gateway):
    # another cabinet used this session's key for another request: the gateway says 409
    GatewayClient(gateway.base_url, api_key=gateway.api_key).authorize(999, "EUR",
                                                                       "tok_visa_ok", "s-1:hold")
    result = billing.place_hold("s-1", alice.id)
    assert (result.ok, result.code) == (False, "gateway")
    assert result.reason.startswith(f"payment error: gateway {gateway.base_url} POST "
                                    f"/v1/payment_intents (key s-1:hold): ")
    assert "already used with a different request" in result.reason
    assert billing.receipt("s-1").outcome == "denied"


def test_the_hold_of_a_session_whose_payment_is_pending_still_stands(billing, alice, gateway):
    first = held(billing, alice)
    gateway.fail_next(4, "500")
    assert billing.settle("s-1", [COLA]).outcome == "pending"
    assert billing.place_hold("s-1", alice.id) == first


@pytest.mark.parametrize("session_id", ["", "x" * 65, None, 7])
def test_a_bad_session_id_is_refused_before_anything_is_written(billing, alice, book,
                                                                session_id):
    with pytest.raises(BillingError, match="must be a non-empty string of at most 64"):
        billing.place_hold(session_id, alice.id)
    assert book.count(CabinetSession) == 0


def test_a_session_id_of_64_characters_is_fine(billing, alice):
    assert billing.place_hold("x" * 64, alice.id).ok


@pytest.mark.parametrize("kw, error, words", [
    ({"currency": "EURO"}, UnknownCurrency, "billing: currency 'EURO'"),
    ({"hold_amount": 0}, InvalidAmount, "billing hold_amount: 0 must be more than zero"),
    ({"hold_amount": 20.0}, InvalidAmount, "billing hold_amount: 20.0 is not an integer"),
])
def test_a_bad_billing_setting_is_refused(billing, kw, error, words):
    with pytest.raises(error, match=words):
        Billing(billing._sessions, None, **kw)


# --- capture ----------------------------------------------------------------------------
def test_capture_takes_the_basket_total_in_minor_units(billing, alice, gateway, book):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [COLA, CRISPS])
    auth = gateway.intent(hold.auth_id)
    assert (auth["status"], auth["amount_received"]) == ("succeeded", 520)
    charge = book.one(Charge, session_id="s-1")
    assert (charge.kind, charge.amount, charge.currency, charge.status, charge.idempotency_key,
            charge.gateway_auth_id, charge.gateway_capture_id) == \
        ("capture", 520, "EUR", "captured", "s-1:capture", hold.auth_id, auth["id"])
    assert [(x.position, x.sku, x.qty, x.unit_price, x.amount, x.currency)
            for x in book.all(LineItem, session_id="s-1")] == \
        [(0, "cola-330", 2, 150, 300, "EUR"), (1, "crisps-salt", 1, 220, 220, "EUR")]
    assert book.ledger("s-1") == [("hold", HOLD), ("capture", 520)]
    assert book.one(Hold, session_id="s-1").status == "captured"
    assert (receipt.outcome, receipt.total, receipt.charged, receipt.owed, receipt.refunded) \
        == ("charged", Money(520, "EUR"), Money(520, "EUR"), Money(0, "EUR"), Money(0, "EUR"))
    assert [(x.qty, x.unit_price, x.amount) for x in receipt.lines] == \
        [(2, Money(150, "EUR"), Money(300, "EUR")), (1, Money(220, "EUR"), Money(220, "EUR"))]


def test_a_basket_of_exactly_the_hold_owes_nothing(billing, alice, gateway, book):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [Line("box", "Gift box", 1, HOLD)])
    assert gateway.intent(hold.auth_id)["amount_received"] == HOLD
    assert book.ledger("s-1") == [("hold", HOLD), ("capture", HOLD)]
    assert (receipt.charged, receipt.owed) == (Money(HOLD, "EUR"), Money(0, "EUR"))
    assert billing.standing(alice.id).ok


def test_a_refused_capture_owes_the_whole_basket_not_only_the_hold(billing, alice, gateway,
                                                                   book):
    hold = held(billing, alice)
    GatewayClient(gateway.base_url, api_key=gateway.api_key).void(hold.auth_id,
                                                                  "released-elsewhere")
    receipt = billing.settle("s-1", [Line("gin", "Gin 70 cl", 1, HOLD + 500)])
    assert (receipt.outcome, receipt.charged, receipt.owed) == \
        ("pending", Money(0, "EUR"), Money(HOLD + 500, "EUR"))
    assert book.ledger("s-1") == [("hold", HOLD), ("debt", HOLD + 500)]
    charge = book.one(Charge, session_id="s-1", kind="capture")
    assert charge.status == "failed" and "only one that requires_capture can be captured" in \
        charge.failure
    extra = book.one(Charge, session_id="s-1", kind="extra")   # never sent: all of it is owed
    assert extra.status == "failed" and "not attempted" in extra.failure
    assert gateway.effects()["charge"] == 0


def test_one_cent_above_the_hold_is_a_second_payment_of_one_cent(billing, alice, gateway,
                                                                  book):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [Line("box", "Gift box", 1, HOLD + 1)])
    assert gateway.intent(hold.auth_id)["amount_received"] == HOLD
    extra = book.one(Charge, session_id="s-1", kind="extra")
    assert (extra.amount, extra.status, extra.idempotency_key) == (1, "captured", "s-1:extra")
    assert gateway.intent(extra.gateway_capture_id)["amount_received"] == 1
    assert book.ledger("s-1") == [("hold", HOLD), ("capture", HOLD), ("capture", 1)]
    assert (receipt.outcome, receipt.total, receipt.charged, receipt.owed) == \
        ("charged", Money(HOLD + 1, "EUR"), Money(HOLD + 1, "EUR"), Money(0, "EUR"))
    assert billing.debt(alice.id) == Money(0, "EUR") and billing.standing(alice.id).ok


def test_line_amounts_are_quantity_times_unit_price(billing, alice, book):
    held(billing, alice)
    receipt = billing.settle("s-1", [Line("gum", "Gum", 7, 33), Line("free", "Sample", 3, 0)])
    assert [(x.amount, x.unit_price) for x in book.all(LineItem, session_id="s-1")] == \
        [(231, 33), (0, 0)]
    assert receipt.total == Money(231, "EUR") and book.ledger("s-1")[-1] == ("capture", 231)


def test_a_basket_of_free_items_takes_nothing_and_releases_the_hold(billing, alice, gateway,
                                                                    book):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [Line("free", "Sample", 2, 0)])
    assert receipt.outcome == "nothing_taken" and receipt.total == Money(0, "EUR")
    assert gateway.intent(hold.auth_id)["status"] == "canceled"
    assert book.count(Charge) == 0
    assert book.ledger("s-1") == [("hold", HOLD), ("void", HOLD)]


def test_the_capture_key_is_the_same_on_every_retry_and_replay(billing, alice, gateway):
    held(billing, alice)
    gateway.fail_next(4, "500")
    assert billing.settle("s-1", [COLA]).outcome == "pending"
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    captures = [r.idempotency_key for r in gateway.requests_seen()
                if r.path.endswith("/capture")]
    assert captures == ["s-1:capture"] * 5  # 4 failed tries, 1 success, no request after it
    assert gateway.effects()["capture"] == 1


def test_flags_are_stored_once_and_sorted(billing, alice, book):
    held(billing, alice)
    receipt = billing.settle("s-1", [COLA], flags=["low_confidence", "foreign_object",
                                                   "low_confidence"])
    assert receipt.flags == ("foreign_object", "low_confidence")
    assert book.one(CabinetSession, id="s-1").flags == ["foreign_object", "low_confidence"]


@pytest.mark.parametrize("flag", ["", None, 3])
def test_a_bad_flag_is_refused_and_nothing_is_written(billing, alice, gateway, book, flag):
    held(billing, alice)
    with pytest.raises(BillingError, match=f"settle s-1: flag {flag!r} must be a non-empty"):
        billing.settle("s-1", [COLA], flags=[flag])
    assert book.count(LineItem) == 0 and gateway.effects()["capture"] == 0


def test_the_receipt_times_come_from_the_billing_clock(billing, alice, clock):
    held(billing, alice)
    clock.advance(95)
    receipt = billing.settle("s-1", [COLA])
    assert (receipt.opened_at, receipt.closed_at) == (T0, clock.now)
    assert "Time      2026-03-01 12:01:35 UTC" in receipt.render_text()


# --- void when nothing is taken ---------------------------------------------------------
def test_an_empty_basket_voids_the_hold_at_the_gateway(billing, alice, gateway, book):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [])
    assert gateway.intent(hold.auth_id)["status"] == "canceled"
    row = book.one(Hold, session_id="s-1")
    assert (row.status, row.void_key) == ("voided", "s-1:void")
    assert [r.idempotency_key for r in gateway.requests_seen()] == ["s-1:hold", "s-1:void"]
    assert (receipt.outcome, receipt.total, receipt.charged, receipt.owed) == \
        ("nothing_taken", Money(0, "EUR"), Money(0, "EUR"), Money(0, "EUR"))
    assert book.ledger("s-1") == [("hold", HOLD), ("void", HOLD)]


def test_voiding_a_session_releases_the_hold_with_its_reason(billing, alice, gateway, book):
    hold = held(billing, alice)
    receipt = billing.void_session("s-1", "the door was never opened")
    assert gateway.intent(hold.auth_id)["status"] == "canceled"
    assert (receipt.outcome, receipt.outcome_reason, receipt.total) == \
        ("void", "the door was never opened", Money(0, "EUR"))
    assert "Void - no charge, the hold is released: the door was never opened" in \
        receipt.render_text()
    assert book.ledger("s-1") == [("hold", HOLD), ("void", HOLD)]
    assert book.one(CabinetSession, id="s-1").total == 0


def test_a_void_the_gateway_refuses_is_recorded_without_a_void_entry(billing, alice, gateway,
                                                                     book):
    hold = held(billing, alice)
    GatewayClient(gateway.base_url, api_key=gateway.api_key).void(hold.auth_id,
                                                                  "released-elsewhere")
    receipt = billing.settle("s-1", [])
    assert receipt.outcome == "nothing_taken"
    row = book.one(Hold, session_id="s-1")
    assert row.status == "void_failed" and \
        "is canceled; only one that requires_capture can be canceled" \
        in row.decline_reason
    assert book.ledger("s-1") == [("hold", HOLD)]
    assert billing.retry_pending() == []


def test_a_session_whose_capture_is_under_way_cannot_be_voided(make_billing, gateway, book):
    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    held(doomed, alice)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    restarted = make_billing()
    with pytest.raises(BillingError, match="void_session s-1: already settling; nothing to "
                                           "void"):
        restarted.void_session("s-1", "door never opened")
    assert gateway.effects()["void"] == 0
    assert restarted.retry_pending()[0].result == "charged"
    assert book.ledger("s-1") == [("hold", HOLD), ("capture", 300)]


def test_a_settled_session_cannot_be_voided(billing, alice, gateway):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    with pytest.raises(BillingError, match="void_session s-1: already charged; nothing to "
                                           "void"):
        billing.void_session("s-1", "changed my mind")
    assert gateway.effects()["void"] == 0


def test_a_session_without_an_authorized_hold_cannot_be_voided(billing, gateway):
    carol = billing.open_account("Carol", "tok_declined")
    billing.place_hold("s-1", carol.id)
    with pytest.raises(BillingError, match="void_session s-1: already denied"):
        billing.void_session("s-1", "no")
    assert gateway.effects()["void"] == 0


def test_a_hold_without_an_answer_cannot_be_voided_as_if_authorized(billing, alice, gateway):
    gateway.fail_next(4, "500")
    billing.place_hold("s-1", alice.id)
    with pytest.raises(BillingError, match="void_session s-1: already denied"):
        billing.void_session("s-1", "no")


# --- settle refused ---------------------------------------------------------------------
def test_settling_a_voided_session_is_refused(billing, alice, gateway):
    held(billing, alice)
    billing.void_session("s-1", "door never opened")
    with pytest.raises(NotHeld, match=r"settle s-1: the session ended void \(door never "
                                      r"opened\); nothing can be charged"):
        billing.settle("s-1", [COLA])
    assert gateway.effects()["capture"] == 0


def test_settling_a_declined_session_is_refused(billing, gateway):
    carol = billing.open_account("Carol", "tok_expired")
    billing.place_hold("s-1", carol.id)
    with pytest.raises(NotHeld, match="settle s-1: the session ended denied"):
        billing.settle("s-1", [COLA])
    assert gateway.effects()["capture"] == 0


def test_a_different_basket_after_a_charge_is_a_conflict_and_changes_nothing(
        billing, alice, gateway, book):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    with pytest.raises(SettlementConflict, match=r"already settled with another basket "
                                                 r"\(2 x cola-330\); corrections go through "
                                                 r"Billing.correct"):
        billing.settle("s-1", [Line("cola-330", "Cola 330 ml", 2, 151)])
    assert book.count(LineItem) == 1 and gateway.effects()["capture"] == 1
    assert book.ledger("s-1") == [("hold", HOLD), ("capture", 300)]


# --- refunds ----------------------------------------------------------------------------
def test_refunds_are_bounded_by_what_was_captured_not_by_the_basket(billing, alice, gateway,
                                                                    book):
    held(billing, alice)
    gateway.fail_next(1, "decline")                  # the payment above the hold is declined
    billing.settle("s-1", [Line("gin", "Gin 70 cl", 1, HOLD + 500)])  # HOLD captured, 500 owed
    with pytest.raises(RefundRefused, match=r"EUR 20.01 is more than the EUR 20.00 left"):
        billing.refund("s-1", HOLD + 1, "all of it")
    assert billing.refund("s-1", HOLD, "all of it").status == "refunded"
    assert gateway.effects()["refund"] == 1
    assert book.ledger("s-1")[-1] == ("refund", HOLD)


def test_refunds_add_up_to_the_capture_exactly_each_with_its_own_key(billing, alice, gateway,
                                                                     book):
    held(billing, alice)
    billing.settle("s-1", [COLA, CRISPS])  # 520
    results = [billing.refund("s-1", amount, f"refund {i}")
               for i, amount in enumerate([100, 300, 120], 1)]
    assert [(r.status, r.amount) for r in results] == \
        [("refunded", Money(100, "EUR")), ("refunded", Money(300, "EUR")),
         ("refunded", Money(120, "EUR"))]
    with pytest.raises(RefundRefused, match=r"EUR 0.01 is more than the EUR 0.00 left"):
        billing.refund("s-1", 1, "one more")
    assert [r.idempotency_key for r in gateway.requests_seen()
            if r.path == "/v1/refunds"] == ["s-1:refund:1", "s-1:refund:2", "s-1:refund:3"]
    assert [(r.amount, r.reason, r.status) for r in book.all(Refund, session_id="s-1")] == \
        [(100, "refund 1", "refunded"), (300, "refund 2", "refunded"),
         (120, "refund 3", "refunded")]
    assert book.ledger("s-1")[2:] == [("refund", 100), ("refund", 300), ("refund", 120)]
    assert billing.receipt("s-1").refunded == Money(520, "EUR")
    assert "Refunded  EUR 5.20" in billing.receipt("s-1").render_text()


@pytest.mark.parametrize("amount, reason, error, words", [
    (0, "goodwill", InvalidAmount, "refund s-1: 0 must be more than zero"),
    (-1, "goodwill", InvalidAmount, "refund s-1: -1 must be more than zero"),
    (1.5, "goodwill", InvalidAmount, "refund s-1: 1.5 is not an integer"),
    (100, "  ", RefundRefused, "refund s-1: give a reason"),
    (100, None, RefundRefused, "refund s-1: give a reason"),
])
def test_a_bad_refund_is_refused_and_nothing_is_written(billing, alice, gateway, book,
                                                        amount, reason, error, words):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    with pytest.raises(error, match=words):
        billing.refund("s-1", amount, reason)
    assert book.count(Refund) == 0 and gateway.effects()["refund"] == 0


def test_a_pending_capture_cannot_be_refunded(billing, alice, gateway):
    held(billing, alice)
    gateway.fail_next(4, "500")
    billing.settle("s-1", [COLA])
    with pytest.raises(RefundRefused, match=r"nothing was captured for this session "
                                            r"\(outcome pending\)"):
        billing.refund("s-1", 100, "goodwill")


def test_a_refund_reason_is_stored_trimmed(billing, alice, book):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    billing.refund("s-1", 50, "  dented can ")
    assert book.one(Refund, session_id="s-1").reason == "dented can"


def test_the_receipt_of_a_session_still_open_says_so(billing, alice):
    held(billing, alice)
    receipt = billing.receipt("s-1")
    assert (receipt.outcome, receipt.closed_at, receipt.at, receipt.lines) == (None, None, T0, ())
    text = receipt.render_text()
    assert "Outcome   Open - not settled yet" in text and "  (no items)" in text
    assert "Time      2026-03-01 12:00:00 UTC" in text and "Owed" not in text
