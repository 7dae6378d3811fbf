"""The charge/capture path of Billing, exactly: rows, amounts, keys, ledger and outcome texts.

Against a real SQLite file and the real sandbox gateway (tests/billing/conftest.py). Each test
pins the minor units that reach the card and the ledger after `settle()`, for every answer the
capture can get (captured, no answer, refused) and for baskets below, at and above the hold.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from billing import BillingError, Line, Money, NotHeld, SettlementConflict
from billing.models import CabinetSession, Charge, Hold, LedgerEntry, LineItem
from billing.service import _claim

HOLD = 2000
COLA = Line("cola-330", "Cola 330 ml", 2, 150)
CRISPS = Line("crisps-salt", "Crisps salted", 1, 220)


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


@pytest.fixture
def held(billing, alice):
    result = billing.place_hold("s-1", alice.id)
    assert result.ok and result.amount == Money(HOLD, "EUR")
    return result


def ledger(billing, session_id="s-1"):
    with billing._sessions() as db:
        return [(e.kind, e.amount, e.currency, e.note, e.account_id) for e in db.scalars(
            select(LedgerEntry).where(LedgerEntry.session_id == session_id)
            .order_by(LedgerEntry.id))]


def capture_row(billing, session_id="s-1"):
    with billing._sessions() as db:
        c = db.scalar(select(Charge).where(Charge.session_id == session_id))
        return None if c is None else {
            "kind": c.kind, "amount": c.amount, "currency": c.currency, "status": c.status,
            "key": c.idempotency_key, "auth": c.gateway_auth_id,
            "capture_id": c.gateway_capture_id, "failure": c.failure}


def session_row(billing, session_id="s-1"):
    with billing._sessions() as db:
        s = db.get(CabinetSession, session_id)
        return {"state": s.state, "outcome": s.outcome, "reason": s.outcome_reason,
                "total": s.total, "flags": list(s.flags or []),
                "closed": s.closed_at is not None}


def hold_status(billing, session_id="s-1"):
    with billing._sessions() as db:
        return db.scalar(select(Hold.status).where(Hold.session_id == session_id))


def test_a_basket_below_the_hold_captures_exactly_its_total(billing, alice, held, gateway):
    receipt = billing.settle("s-1", [COLA, CRISPS], flags=["low_confidence"])
    row = capture_row(billing)
    assert row["capture_id"] == held.auth_id        # the PaymentIntent is the capture
    assert row == {"kind": "capture", "amount": 520, "currency": "EUR", "status": "captured",
                   "key": "s-1:capture", "auth": held.auth_id,
                   "capture_id": row["capture_id"], "failure": None}
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("capture", 520, "EUR", None, alice.id)]
    assert session_row(billing) == {"state": "closed", "outcome": "charged", "reason": None,
                                    "total": 520, "flags": ["low_confidence"], "closed": True}
    assert hold_status(billing) == "captured"
    assert gateway.intent(held.auth_id)["amount_received"] == 520
    assert (receipt.total, receipt.charged, receipt.owed) == (
        Money(520, "EUR"), Money(520, "EUR"), Money(0, "EUR"))


def test_line_items_are_written_in_order_with_their_amounts(billing, held):
    billing.settle("s-1", [COLA, CRISPS])
    with billing._sessions() as db:
        items = [(x.position, x.sku, x.name, x.qty, x.unit_price, x.amount, x.currency)
                 for x in db.scalars(select(LineItem).order_by(LineItem.position))]
    assert items == [(0, "cola-330", "Cola 330 ml", 2, 150, 300, "EUR"),
                     (1, "crisps-salt", "Crisps salted", 1, 220, 220, "EUR")]


def test_a_basket_equal_to_the_hold_owes_nothing(billing, alice, held, gateway):
    billing.settle("s-1", [Line("wine", "Wine", 1, HOLD)])
    assert capture_row(billing)["amount"] == HOLD
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("capture", HOLD, "EUR", None, alice.id)]
    assert billing.debt(alice.id) == Money(0, "EUR")


def test_a_basket_one_cent_above_the_hold_charges_one_cent_more(billing, alice, held, gateway):
    receipt = billing.settle("s-1", [Line("wine", "Wine", 1, HOLD + 1)])
    assert capture_row(billing)["amount"] == HOLD
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("capture", HOLD, "EUR", None, alice.id),
                               ("capture", 1, "EUR", "the charge above the hold", alice.id)]
    assert receipt.owed == Money(0, "EUR") and receipt.outcome == "charged"
    assert billing.debt(alice.id) == Money(0, "EUR")
    assert gateway.intent(held.auth_id)["amount_received"] == HOLD
    assert gateway.effects()["charge"] == 1


def test_an_empty_basket_voids_and_charges_nothing(billing, alice, held, gateway):
    receipt = billing.settle("s-1", [])
    assert capture_row(billing) is None
    assert hold_status(billing) == "voided"
    assert session_row(billing) == {"state": "closed", "outcome": "nothing_taken",
                                    "reason": None, "total": 0, "flags": [], "closed": True}
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("void", HOLD, "EUR", None, alice.id)]
    assert gateway.effects()["capture"] == 0 and receipt.charged == Money(0, "EUR")


def test_a_capture_without_answer_leaves_the_session_pending_then_retries_with_the_key(
        billing, alice, held, gateway):
    gateway.fail_next(4, "500")                      # max_retries=3: every attempt fails
    receipt = billing.settle("s-1", [COLA])
    assert session_row(billing) == {"state": "settling", "outcome": "pending",
                                    "reason": "payment retry: the payment service did not "
                                              "answer",
                                    "total": 300, "flags": [], "closed": False}
    assert capture_row(billing)["status"] == "requested"
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id)]
    assert receipt.outcome == "pending" and gateway.effects()["capture"] == 0
    assert billing.standing(alice.id).ok is False

    retried = billing.retry_pending()
    assert [(r.session_id, r.what, r.result) for r in retried] == [("s-1", "settle", "charged")]
    assert capture_row(billing)["status"] == "captured"
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("capture", 300, "EUR", None, alice.id)]
    assert gateway.effects()["capture"] == 1
    keys = [r.idempotency_key for r in gateway.requests_seen() if r.path.endswith("/capture")]
    assert keys == ["s-1:capture"] * 5


def test_a_refused_capture_records_the_whole_basket_as_debt(billing, alice, held, gateway):
    billing._gateway.void(held.auth_id, "operator-void")   # the acquirer no longer holds it
    receipt = billing.settle("s-1", [COLA, CRISPS])
    row = capture_row(billing)
    assert row["status"] == "failed" and row["amount"] == 520
    assert "refused with HTTP 400" in row["failure"] and "canceled" in row["failure"]
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id),
                               ("debt", 520, "EUR", f"capture refused: {row['failure']}",
                                alice.id)]
    assert session_row(billing) == {
        "state": "closed", "outcome": "pending",
        "reason": "unpaid: the capture was refused; the amount is recorded as debt",
        "total": 520, "flags": [], "closed": True}
    assert receipt.owed == Money(520, "EUR") and receipt.charged == Money(0, "EUR")
    assert billing.debt(alice.id) == Money(520, "EUR")
    # settling again records nothing twice
    billing.settle("s-1", [COLA, CRISPS])
    assert len(ledger(billing)) == 2


def test_settling_twice_captures_once_and_writes_the_ledger_once(billing, held, gateway):
    first = billing.settle("s-1", [COLA])
    second = billing.settle("s-1", [COLA])
    assert first == second
    assert gateway.effects()["capture"] == 1
    assert [k for k, *_ in ledger(billing)] == ["hold", "capture"]


def test_a_second_basket_is_a_conflict_that_names_the_first(billing, held):
    billing.settle("s-1", [COLA])
    with pytest.raises(SettlementConflict) as e:
        billing.settle("s-1", [CRISPS])
    assert str(e.value) == ("settle s-1: this session was already settled with another basket "
                            "(2 x cola-330); corrections go through Billing.correct")


def test_flags_are_merged_sorted_and_unique(billing, held):
    billing.settle("s-1", [COLA], flags=["vision_disagrees", "low_confidence",
                                         "low_confidence"])
    assert session_row(billing)["flags"] == ["low_confidence", "vision_disagrees"]


def test_settling_a_denied_session_is_refused_with_its_reason(billing):
    bob = billing.open_account("Bob", None, "EUR")
    assert billing.place_hold("s-2", bob.id).ok is False
    with pytest.raises(NotHeld) as e:
        billing.settle("s-2", [COLA])
    assert str(e.value) == ("settle s-2: the session ended denied (no valid payment method on "
                            "the account); nothing can be charged")


def test_settling_a_void_session_is_refused(billing, held):
    billing.void_session("s-1", "door never opened")
    with pytest.raises(NotHeld) as e:
        billing.settle("s-1", [COLA])
    assert str(e.value) == ("settle s-1: the session ended void (door never opened); nothing "
                            "can be charged")


def test_settling_a_session_whose_hold_got_no_answer_replays_the_hold_first(
        billing, alice, gateway):
    gateway.fail_next(4, "500")
    first = billing.place_hold("s-3", alice.id)
    assert first.ok is False and first.code == "unavailable"
    assert hold_status(billing, "s-3") == "requested"
    # the session is over (denied): replaying the hold learns it was never placed, so nothing
    # is charged, and the refusal names the outcome
    with pytest.raises(NotHeld) as e:
        billing.settle("s-3", [COLA])
    assert "the session ended denied" in str(e.value)
    assert gateway.effects()["capture"] == 0


def test_a_hold_that_is_not_authorized_cannot_be_settled(billing, alice):
    with billing._sessions.begin() as db:
        db.add(CabinetSession(id="s-4", account_id=alice.id, state="open", cabinet_id="c",
                              currency="EUR", opened_at=billing._clock(), flags=[]))
    with pytest.raises(NotHeld) as e:
        billing.settle("s-4", [COLA])
    assert str(e.value) == ("settle s-4: no authorized hold (outcome open, hold none); nothing "
                            "can be charged")


def test_claim_moves_a_row_once_from_the_given_status(billing, held):
    with billing._sessions.begin() as db:
        hold = db.scalar(select(Hold).where(Hold.session_id == "s-1"))
        assert _claim(db, hold, "requested", status="x") is False
        assert hold.status == "authorized"
        assert _claim(db, hold, "authorized", status="void_requested") is True
        assert hold.status == "void_requested"            # reloaded after the update
        assert _claim(db, hold, "authorized", status="captured") is False
    assert hold_status(billing) == "void_requested"


def test_closing_stamps_the_billing_clock(make_billing, gateway):
    import datetime as dt
    from billing import Billing
    stamp = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    base = make_billing()
    billing = Billing(base._sessions, base._gateway, hold_amount=HOLD, currency="EUR",
                      clock=lambda: stamp, secrets=base.secrets)
    account = billing.open_account("Carol", "tok_visa_ok", "EUR")
    billing.place_hold("s-5", account.id)
    billing.settle("s-5", [COLA])
    with billing._sessions() as db:
        sess = db.get(CabinetSession, "s-5")
        ats = {e.at.replace(tzinfo=dt.timezone.utc) if e.at.tzinfo is None else e.at
               for e in db.scalars(select(LedgerEntry).where(LedgerEntry.session_id == "s-5"))}
        closed = sess.closed_at
    closed = closed.replace(tzinfo=dt.timezone.utc) if closed.tzinfo is None else closed
    assert closed == stamp and ats == {stamp}


class PowerCut(BaseException):
    """The process dies: not an error any layer of Billing handles."""


def client_dying_after(method: str):
    from billing import GatewayClient

    class Dies(GatewayClient):
        pass

    def dies(self, *args, **kwargs):
        getattr(GatewayClient, method)(self, *args, **kwargs)   # the gateway acts ...
        raise PowerCut(method)                                  # ... and the answer is lost
    setattr(Dies, method, dies)
    return Dies


def test_each_session_captures_its_own_basket(billing, alice, held, gateway):
    billing.settle("s-1", [COLA])
    second = billing.place_hold("s-2", alice.id)
    receipt = billing.settle("s-2", [CRISPS])
    assert receipt.outcome == "charged" and receipt.charged == Money(220, "EUR")
    row = capture_row(billing, "s-2")
    assert (row["amount"], row["key"], row["auth"], row["status"]) == (
        220, "s-2:capture", second.auth_id, "captured")
    assert gateway.intent(second.auth_id)["amount_received"] == 220
    assert gateway.effects()["capture"] == 2


def test_an_outage_on_one_capture_leaves_other_open_sessions_alone(billing, alice, held,
                                                                   gateway):
    billing.place_hold("s-2", alice.id)
    gateway.fail_next(4, "500")
    assert billing.settle("s-2", [COLA]).outcome == "pending"
    assert session_row(billing, "s-1")["outcome"] is None
    assert billing.settle("s-1", [CRISPS]).outcome == "charged"


def test_a_void_the_gateway_refuses_is_recorded_with_its_reason(billing, alice, held, gateway):
    billing._gateway.capture(held.auth_id, 100, "operator-capture")  # no longer voidable
    receipt = billing.settle("s-1", [])
    with billing._sessions() as db:
        hold = db.scalar(select(Hold).where(Hold.session_id == "s-1"))
        status, reason = hold.status, hold.decline_reason
    assert status == "void_failed"
    assert "refused with HTTP 400" in reason and "only one that requires_capture can be canceled" in reason
    assert ledger(billing) == [("hold", HOLD, "EUR", None, alice.id)]
    assert receipt.outcome == "nothing_taken"


def test_a_released_hold_has_no_reason(billing, held):
    billing.settle("s-1", [])
    with billing._sessions() as db:
        hold = db.scalar(select(Hold).where(Hold.session_id == "s-1"))
        assert (hold.status, hold.decline_reason, hold.void_key) == ("voided", None, "s-1:void")


def test_a_hold_in_another_state_is_named_in_the_refusal(billing, alice, held):
    with billing._sessions.begin() as db:
        db.scalar(select(Hold).where(Hold.session_id == "s-1")).status = "void_failed"
    with pytest.raises(NotHeld) as e:
        billing.settle("s-1", [COLA])
    assert str(e.value) == ("settle s-1: no authorized hold (outcome open, hold void_failed); "
                            "nothing can be charged")


def test_a_crash_while_placing_the_hold_is_finished_by_settle(make_billing, gateway):
    doomed = make_billing(client_dying_after("authorize"))
    alice = doomed.open_account("Alice", "tok_visa_ok", "EUR")
    with pytest.raises(PowerCut):
        doomed.place_hold("s-1", alice.id)
    assert hold_status(doomed) == "requested" and session_row(doomed)["outcome"] is None
    restarted = make_billing()
    receipt = restarted.settle("s-1", [COLA])
    assert receipt.outcome == "charged" and receipt.charged == Money(300, "EUR")
    assert gateway.effects()["authorize"] == 1 and gateway.effects()["capture"] == 1
    keys = [r.idempotency_key for r in gateway.requests_seen()]
    assert keys == ["s-1:hold", "s-1:hold", "s-1:capture"]
    assert [k for k, *_ in ledger(restarted)] == ["hold", "capture"]


def test_a_bad_flag_is_refused_naming_the_session(billing, held):
    with pytest.raises(BillingError) as e:
        billing.settle("s-1", [COLA], flags=["low_confidence", ""])
    assert str(e.value) == "settle s-1: flag '' must be a non-empty string"
    assert capture_row(billing) is None
