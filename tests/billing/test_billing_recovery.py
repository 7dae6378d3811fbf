"""Never charged twice, whatever crashes: lost answers, outages, restarts and races.

A "crash" here is a real client subclass that dies right before or right after the gateway
call, leaving the database exactly as a power cut would; a "restart" is a new Billing with its
own engine on the same SQLite file.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from billing import GatewayClient, Line
from billing.models import Charge, Hold, LedgerEntry

COLA = Line("cola-330", "Cola 330 ml", 2, 150)


class PowerCut(Exception):
    pass


class DiesAfterCapture(GatewayClient):
    """The gateway captured and answered; the process died before recording it."""

    def capture(self, auth_id, amount, idempotency_key):
        super().capture(auth_id, amount, idempotency_key)
        raise PowerCut("after the capture answer")


class DiesBeforeCapture(GatewayClient):
    """The capture row and key were committed; the process died before the request."""

    def capture(self, auth_id, amount, idempotency_key):
        raise PowerCut("before the capture request")


class DiesAfterAuthorize(GatewayClient):
    """The gateway placed the hold and answered; the process died before recording it."""

    def authorize(self, amount, currency, payment_token, idempotency_key):
        super().authorize(amount, currency, payment_token, idempotency_key)
        raise PowerCut("after the authorize answer")


def captures_in_ledger(billing, session_id="s-1"):
    with billing._sessions() as db:
        return db.scalars(select(LedgerEntry.amount).where(
            LedgerEntry.session_id == session_id, LedgerEntry.kind == "capture")).all()


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_retries_through_faults_use_one_key_and_capture_once(billing, alice, gateway, fault):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(3, fault)
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    keys = [r.idempotency_key for r in gateway.requests_seen() if r.path.endswith("/capture")]
    assert keys == ["s-1:capture"] * 4
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(billing) == [300]


def test_an_outage_leaves_the_session_pending_and_settling_later_charges_once(
        billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(4, "500")
    receipt = billing.settle("s-1", [COLA])
    assert receipt.outcome == "pending" and "payment retry" in receipt.outcome_reason
    assert "Payment pending" in receipt.render_text()
    assert not billing.standing(alice.id).ok
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    assert gateway.effects()["capture"] == 1 and billing.standing(alice.id).ok


def test_lost_answers_then_a_restart_replay_the_capture_instead_of_repeating_it(
        make_billing, gateway):
    first = make_billing()
    alice = first.open_account("Alice", "tok_visa_ok")
    first.place_hold("s-1", alice.id)
    gateway.fail_next(4, "drop")            # the first attempt captures, no answer ever comes
    assert first.settle("s-1", [COLA]).outcome == "pending"
    assert gateway.effects()["capture"] == 1
    second = make_billing()                 # a new process on the same database file
    retried = second.retry_pending()
    assert [(r.session_id, r.result) for r in retried] == [("s-1", "charged")]
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(second) == [300]
    assert second.retry_pending() == []


def test_a_crash_after_the_capture_answer_never_charges_twice(make_billing, gateway):
    doomed = make_billing(DiesAfterCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    doomed.place_hold("s-1", alice.id)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    assert doomed.receipt("s-1").outcome is None and gateway.effects()["capture"] == 1
    restarted = make_billing()
    assert restarted.settle("s-1", [COLA]).outcome == "charged"
    assert restarted.settle("s-1", [COLA]).outcome == "charged"
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(restarted) == [300]


def test_a_crash_before_the_request_is_finished_by_retry_pending(make_billing, gateway):
    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    doomed.place_hold("s-1", alice.id)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    with doomed._sessions() as db:
        charge = db.scalar(select(Charge))
    assert (charge.idempotency_key, charge.status) == ("s-1:capture", "requested")
    restarted = make_billing()
    restarted.retry_pending()
    assert restarted.receipt("s-1").outcome == "charged"
    assert gateway.effects()["capture"] == 1


def test_two_processes_settling_at_once_capture_once(make_billing, gateway):
    one, two = make_billing(), make_billing()
    alice = one.open_account("Alice", "tok_visa_ok")
    one.place_hold("s-1", alice.id)
    start, outcomes, errors = threading.Barrier(2), [], []

    def settle(billing):
        start.wait()
        try:
            outcomes.append(billing.settle("s-1", [COLA]).outcome)
        except Exception as e:  # noqa: BLE001 (the assertion below shows it)
            errors.append(e)

    threads = [threading.Thread(target=settle, args=(b,)) for b in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and outcomes == ["charged", "charged"]
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(one) == [300]


def test_a_void_that_got_no_answer_is_released_later(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(4, "500")
    assert billing.settle("s-1", []).outcome == "nothing_taken"
    assert gateway.effects()["void"] == 0
    billing.retry_pending()
    with billing._sessions() as db:
        assert db.scalar(select(Hold.status)) == "voided"
    assert gateway.effects()["void"] == 1 and billing.retry_pending() == []


def test_a_hold_whose_answer_was_lost_is_found_and_voided(billing, alice, gateway):
    gateway.fail_next(4, "drop")            # authorised at the gateway, unknown to us
    result = billing.place_hold("s-1", alice.id)
    assert not result.ok and result.code == "unavailable"
    assert billing.receipt("s-1").outcome == "denied"
    retried = billing.retry_pending()
    assert [(r.what, r.result) for r in retried] == [("hold_cleanup", "voided")]
    assert gateway.effects()["authorize"] == 1 and gateway.effects()["void"] == 1


def test_a_refund_without_an_answer_is_retried_with_its_key(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA])
    gateway.fail_next(4, "drop")
    assert billing.refund("s-1", 150, "dented can").status == "requested"
    assert [r.result for r in billing.retry_pending()] == ["refunded"]
    assert gateway.effects()["refund"] == 1
    assert billing.receipt("s-1").refunded.amount == 150


def test_a_refused_capture_becomes_debt_and_the_session_stays_pending(billing, alice, gateway):
    hold = billing.place_hold("s-1", alice.id)
    GatewayClient(gateway.base_url).void(hold.auth_id, "someone-else")  # hold gone meanwhile
    receipt = billing.settle("s-1", [COLA])
    assert receipt.outcome == "pending" and receipt.owed.amount == 300
    assert "unpaid" in receipt.outcome_reason
    assert billing.standing(alice.id).reason == "unpaid debt of EUR 3.00"
    assert gateway.effects()["capture"] == 0


def test_a_crash_while_placing_the_hold_is_finished_by_settle(make_billing, gateway):
    doomed = make_billing(DiesAfterAuthorize)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    with pytest.raises(PowerCut):
        doomed.place_hold("s-1", alice.id)
    restarted = make_billing()
    assert restarted.settle("s-1", [COLA]).outcome == "charged"
    assert gateway.effects()["authorize"] == 1 and gateway.effects()["capture"] == 1
