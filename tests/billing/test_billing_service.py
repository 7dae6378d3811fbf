"""Billing against a real SQLite file and the real sandbox gateway: standing, holds,
settlement, refunds, receipts, and bad input that changes nothing."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from billing import (BillingError, InvalidLine, Line, Money, NotHeld, RefundRefused,
                     SettlementConflict, Standing, UnknownAccount, UnknownSession)
from billing.models import Account, CabinetSession, Charge, Hold, LedgerEntry, LineItem
from billing.money import InvalidAmount, UnknownCurrency

COLA = Line("cola-330", "Cola 330 ml", 2, 150)
CRISPS = Line("crisps-salt", "Crisps salted", 1, 220)


def rows(billing, model) -> int:
    with billing._sessions() as db:
        return db.scalar(select(func.count()).select_from(model))


def ledger(billing, session_id):
    with billing._sessions() as db:
        return [(e.kind, e.amount) for e in db.scalars(
            select(LedgerEntry).where(LedgerEntry.session_id == session_id)
            .order_by(LedgerEntry.id))]


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


# --- standing ---------------------------------------------------------------------------
def test_a_new_account_with_a_card_is_in_good_standing(billing, alice):
    assert billing.standing(alice.id) == Standing(True, "")
    assert (alice.name, alice.status, alice.currency) == ("Alice", "active", "EUR")


def test_a_blocked_account_is_not_in_good_standing(billing, alice):
    billing.block(alice.id, "chargeback on session s-41")
    standing = billing.standing(alice.id)
    assert not standing.ok and "blocked: chargeback on session s-41" in standing.reason
    billing.unblock(alice.id)
    assert billing.standing(alice.id) == Standing(True, "")


def test_blocking_needs_a_reason(billing, alice):
    with pytest.raises(BillingError, match=f"block account {alice.id}: give a reason"):
        billing.block(alice.id, " ")
    assert billing.standing(alice.id).ok


def test_no_payment_method_is_not_good_standing(billing):
    bob = billing.open_account("Bob", None)
    assert billing.standing(bob.id) == Standing(False, "no valid payment method on the account")


def test_unpaid_debt_is_not_good_standing(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(1, "insufficient_funds")     # the payment above the hold is declined
    billing.settle("s-1", [Line("wine", "Wine", 1, billing.hold_amount + 350)])
    assert billing.debt(alice.id) == Money(350, "EUR")
    standing = billing.standing(alice.id)
    assert not standing.ok and standing.reason == "unpaid debt of EUR 3.50"
    refused = billing.place_hold("s-2", alice.id)
    assert (refused.ok, refused.code, refused.reason) == (False, "standing",
                                                          "unpaid debt of EUR 3.50")
    assert gateway.effects()["authorize"] == 1 and gateway.effects()["decline"] == 1


def test_unknown_account_is_a_clear_error(billing):
    with pytest.raises(UnknownAccount, match="no account 42"):
        billing.standing(42)
    with pytest.raises(UnknownAccount, match="no account 42"):
        billing.place_hold("s-1", 42)
    with pytest.raises(UnknownAccount, match="no account '42'"):
        billing.debt("42")
    assert rows(billing, CabinetSession) == 0


# --- holds ------------------------------------------------------------------------------
def test_a_hold_is_placed_with_a_key_derived_from_the_session(billing, alice, gateway):
    result = billing.place_hold("s-1", alice.id)
    assert result.ok and result.amount == Money(billing.hold_amount, "EUR")
    assert [r.idempotency_key for r in gateway.requests_seen()] == ["s-1:hold"]
    assert ledger(billing, "s-1") == [("hold", billing.hold_amount)]


def test_placing_the_same_hold_again_has_no_second_effect(billing, alice, gateway):
    first = billing.place_hold("s-1", alice.id)
    assert billing.place_hold("s-1", alice.id) == first
    assert gateway.effects()["authorize"] == 1
    assert len(gateway.requests_seen()) == 1  # answered from the database, not the gateway


def test_a_session_denied_for_want_of_an_answer_does_not_ask_again(billing, alice, gateway):
    gateway.fail_next(4, "500")
    first = billing.place_hold("s-1", alice.id)
    again = billing.place_hold("s-1", alice.id)
    assert (first.code, again.ok, again.code) == ("unavailable", False, "requested")
    assert len(gateway.requests_seen()) == 4 and gateway.effects()["authorize"] == 0
    assert billing.receipt("s-1").outcome == "denied"


@pytest.mark.parametrize("token, code, reason", [
    ("tok_declined", "card_declined", "The card was declined."),
    ("tok_insufficient_funds", "insufficient_funds", "The card has insufficient funds."),
    ("tok_expired", "expired_card", "The card has expired."),
    ("tok_unknown", "invalid_token", "The payment method is not valid."),
])
def test_a_declined_card_is_refused_with_its_reason(billing, gateway, token, code, reason):
    carol = billing.open_account("Carol", token)
    result = billing.place_hold("s-1", carol.id)
    assert (result.ok, result.code, result.reason, result.auth_id) == (
        False, code, f"payment declined: {reason}", None)
    receipt = billing.receipt("s-1")
    assert (receipt.outcome, receipt.outcome_reason) == ("denied", f"payment declined: {reason}")
    assert f"Denied - the door was not opened: payment declined: {reason}" in \
        receipt.render_text()
    assert ledger(billing, "s-1") == [] and gateway.effects()["decline"] == 1
    with pytest.raises(NotHeld):
        billing.settle("s-1", [COLA])


def test_a_blocked_account_gets_no_hold_and_no_gateway_call(billing, alice, gateway):
    billing.block(alice.id, "fraud review")
    result = billing.place_hold("s-1", alice.id)
    assert not result.ok and result.code == "standing" and "fraud review" in result.reason
    assert gateway.requests_seen() == []
    assert billing.receipt("s-1").outcome == "denied"


def test_an_account_in_another_currency_is_refused(billing, gateway):
    dave = billing.open_account("Dave", "tok_visa_ok", "USD")
    result = billing.place_hold("s-1", dave.id)
    assert (result.ok, result.code, result.reason) == (
        False, "standing", "the account pays in USD; this cabinet sells in EUR")
    assert gateway.requests_seen() == []


# --- settlement -------------------------------------------------------------------------
def test_settle_captures_the_basket_once(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    receipt = billing.settle("s-1", [COLA, CRISPS])
    assert receipt.outcome == "charged" and receipt.total == Money(520, "EUR")
    assert receipt.charged == Money(520, "EUR")
    assert ledger(billing, "s-1") == [("hold", billing.hold_amount), ("capture", 520)]
    assert gateway.effects()["capture"] == 1
    assert [r.idempotency_key for r in gateway.requests_seen()][-1] == "s-1:capture"


def test_nothing_taken_voids_the_hold(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    receipt = billing.settle("s-1", [])
    assert receipt.outcome == "nothing_taken" and receipt.charged == Money(0, "EUR")
    assert gateway.effects() == {"authorize": 1, "decline": 0, "capture": 0, "charge": 0,
                                 "void": 1, "refund": 0}
    assert ledger(billing, "s-1") == [("hold", billing.hold_amount), ("void", billing.hold_amount)]


def test_a_session_that_never_opened_is_void(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    receipt = billing.void_session("s-1", "the door was never opened")
    assert receipt.outcome == "void" and gateway.effects()["void"] == 1
    assert receipt.charged == Money(0, "EUR") and gateway.effects()["capture"] == 0
    with pytest.raises(NotHeld):
        billing.settle("s-1", [COLA])


def test_a_basket_above_the_hold_captures_the_hold_and_charges_the_rest(billing, alice,
                                                                        gateway):
    billing.place_hold("s-1", alice.id)
    receipt = billing.settle("s-1", [Line("gin", "Gin 70 cl", 1, 2500)])
    assert receipt.outcome == "charged"
    assert receipt.charged == Money(2500, "EUR") and receipt.owed == Money(0, "EUR")
    assert ledger(billing, "s-1") == [("hold", billing.hold_amount),
                                      ("capture", billing.hold_amount),
                                      ("capture", 2500 - billing.hold_amount)]
    assert gateway.effects()["capture"] == 1 and gateway.effects()["charge"] == 1


def test_a_declined_payment_above_the_hold_is_owed(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(1, "decline")
    receipt = billing.settle("s-1", [Line("gin", "Gin 70 cl", 1, 2500)])
    assert receipt.outcome == "pending"
    assert receipt.charged == Money(billing.hold_amount, "EUR")
    assert receipt.owed == Money(500, "EUR")
    assert "Owed      EUR 5.00 (settle it before the next visit)" in receipt.render_text()
    assert ledger(billing, "s-1") == [("hold", billing.hold_amount),
                                      ("capture", billing.hold_amount), ("debt", 500)]


def test_settling_again_with_the_same_basket_changes_nothing(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    first = billing.settle("s-1", [COLA])
    assert billing.settle("s-1", [COLA]) == first
    assert gateway.effects()["capture"] == 1 and rows(billing, LineItem) == 1


def test_settling_again_with_another_basket_is_refused(billing, alice):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA])
    with pytest.raises(SettlementConflict, match="already settled with another basket"):
        billing.settle("s-1", [COLA, CRISPS])
    assert rows(billing, LineItem) == 1 and billing.receipt("s-1").total == Money(300, "EUR")


def test_settling_an_unknown_session_is_refused(billing, alice):
    with pytest.raises(UnknownSession, match="no session 'nope'"):
        billing.settle("nope", [COLA])
    assert rows(billing, CabinetSession) == 0


def test_settling_a_hold_that_never_got_an_answer_is_refused(billing, alice, gateway):
    gateway.fail_next(8, "500")  # the hold, and its replay from settle(), get no answer
    billing.place_hold("s-1", alice.id)
    with pytest.raises(NotHeld, match="settle s-1: the session ended denied"):
        billing.settle("s-1", [COLA])
    assert rows(billing, Charge) == 0 and gateway.effects()["capture"] == 0


@pytest.mark.parametrize("line, error, words", [
    (Line("cola", "Cola", 0, 150), InvalidLine,
     "settle s-1 line 2 (cola): quantity 0 must be a positive integer"),
    (Line("cola", "Cola", -1, 150), InvalidLine, "line 2 (cola): quantity -1"),
    (Line("cola", "Cola", 1.0, 150), InvalidLine, "line 2 (cola): quantity 1.0"),
    (Line("cola", "Cola", True, 150), InvalidLine, "line 2 (cola): quantity True"),
    (Line("cola", "Cola", 1, -150), InvalidAmount,
     "settle s-1 line 2 (cola) unit price: -150 must be zero or more"),
    (Line("cola", "Cola", 1, 1.5), InvalidAmount, "line 2 (cola) unit price: 1.5 is not an "
                                                  "integer"),
    (Line("", "Cola", 1, 150), InvalidLine, "settle s-1 line 2: the SKU must be a non-empty"),
    (Line("cola", None, 1, 150), InvalidLine, "settle s-1 line 2: the SKU must be a non-empty"),
    (("cola", "Cola", 1, 150), InvalidLine, "settle s-1 line 2: expected a billing.Line"),
])
def test_a_bad_line_is_refused_and_nothing_is_written(billing, alice, gateway, line, error,
                                                      words):
    billing.place_hold("s-1", alice.id)
    with pytest.raises(error, match=re.escape(words)):
        billing.settle("s-1", [COLA, line])
    assert rows(billing, LineItem) == 0 and rows(billing, Charge) == 0
    assert gateway.effects()["capture"] == 0


def test_bad_account_input_is_refused_and_nothing_is_written(billing):
    with pytest.raises(UnknownCurrency, match="'EURO'"):
        billing.open_account("Eve", "tok_visa_ok", "EURO")
    with pytest.raises(BillingError, match="open_account: the name '  ' is empty"):
        billing.open_account("  ", "tok_visa_ok")
    with pytest.raises(BillingError, match="the payment token must be a non-empty string"):
        billing.open_account("Eve", " ")
    assert rows(billing, Account) == 0


# --- refunds ----------------------------------------------------------------------------
def test_refund_part_of_a_charge(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA, CRISPS])
    result = billing.refund("s-1", 150, "one can was dented")
    assert result.status == "refunded" and result.amount == Money(150, "EUR")
    assert billing.receipt("s-1").refunded == Money(150, "EUR")
    assert gateway.effects()["refund"] == 1
    assert [r.idempotency_key for r in gateway.requests_seen()][-1] == "s-1:refund:1"


def test_refunds_never_exceed_the_charge(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA])
    billing.refund("s-1", 200, "first")
    with pytest.raises(RefundRefused, match="more than the EUR 1.00 left"):
        billing.refund("s-1", 101, "second")
    with pytest.raises(InvalidAmount, match="refund s-1: -5 must be more than zero"):
        billing.refund("s-1", -5, "negative")
    assert gateway.effects()["refund"] == 1
    assert billing.refund("s-1", 100, "the rest").status == "refunded"
    assert billing.receipt("s-1").refunded == Money(300, "EUR")


def test_nothing_to_refund_when_nothing_was_taken(billing, alice):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [])
    with pytest.raises(RefundRefused, match=r"refund s-1: nothing was captured for this "
                                            r"session \(outcome nothing_taken\)"):
        billing.refund("s-1", 100, "goodwill")


# --- receipts ---------------------------------------------------------------------------
def test_the_receipt_reads_well(billing, alice):
    billing.place_hold("s-1", alice.id)
    text = billing.settle("s-1", [COLA, CRISPS], flags=["low_confidence"]).render_text()
    assert "Cabinet   cab-test" in text and "Session   s-1" in text
    assert "Customer  Alice" in text and " UTC" in text
    assert "2 x Cola 330 ml @ EUR 1.50 = EUR 3.00" in text
    assert "1 x Crisps salted @ EUR 2.20 = EUR 2.20" in text
    assert "Total     EUR 5.20" in text and "Outcome   Charged EUR 5.20" in text
    assert "Flags     low_confidence" in text


def test_a_receipt_needs_a_known_session(billing):
    with pytest.raises(UnknownSession, match="'s-404'"):
        billing.receipt("s-404")


def test_holds_store_their_key_before_any_answer(billing, alice, gateway):
    gateway.fail_next(4, "500")
    result = billing.place_hold("s-1", alice.id)
    assert not result.ok and result.code == "unavailable"
    with billing._sessions() as db:
        hold = db.scalar(select(Hold))
    assert hold.idempotency_key == "s-1:hold" and hold.status == "requested"
    assert [r.idempotency_key for r in gateway.requests_seen()] == ["s-1:hold"] * 4
    assert result.reason == ("The payment service is not answering; please try again in a "
                             "moment.")


def test_an_empty_settlement_cannot_be_turned_into_a_charge(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [])
    with pytest.raises(SettlementConflict, match="basket \\(empty\\)"):
        billing.settle("s-1", [COLA])
    assert billing.settle("s-1", []).outcome == "nothing_taken"
    assert gateway.effects()["capture"] == 0 and gateway.effects()["void"] == 1
