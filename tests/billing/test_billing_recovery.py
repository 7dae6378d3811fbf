"""Never charged twice, whatever crashes: lost answers, outages, restarts and races.

A "crash" here is a real client subclass that dies right before or right after the gateway
call, leaving the database exactly as a power cut would; a "restart" is a new Billing with its
own engine on the same SQLite file.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from billing import GatewayClient, GatewayUnavailable, Line, Money, RefundRefused
from billing.models import Charge, Hold, LedgerEntry, Refund

COLA = Line("cola-330", "Cola 330 ml", 2, 150)


class PowerCut(Exception):
    pass


class DiesAfterCapture(GatewayClient):
    """The gateway captured and answered; the process died before recording it."""

    def capture(self, auth_id, amount, idempotency_key, **kw):
        super().capture(auth_id, amount, idempotency_key, **kw)
        raise PowerCut("after the capture answer")


class DiesBeforeCapture(GatewayClient):
    """The capture row and key were committed; the process died before the request."""

    def capture(self, auth_id, amount, idempotency_key, **kw):
        raise PowerCut("before the capture request")


class DiesAfterAuthorize(GatewayClient):
    """The gateway placed the hold and answered; the process died before recording it."""

    def authorize(self, amount, currency, payment_token, idempotency_key):
        super().authorize(amount, currency, payment_token, idempotency_key)
        raise PowerCut("after the authorize answer")


def capture_keys(gateway):
    return [r.idempotency_key for r in gateway.requests_seen() if r.path.endswith("/capture")]


def captures_in_ledger(billing, session_id="s-1"):
    with billing._sessions() as db:
        return db.scalars(select(LedgerEntry.amount).where(
            LedgerEntry.session_id == session_id, LedgerEntry.kind == "capture")).all()


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_retries_through_faults_use_one_key_and_capture_once(make_billing, gateway, fault):
    sleeps: list[float] = []
    billing = make_billing(sleeps=sleeps)
    alice = billing.open_account("Alice", "tok_visa_ok")
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(3, fault)
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    assert sleeps == [0.25, 0.5, 1.0]  # the client's back-off, recorded, never slept
    keys = [r.idempotency_key for r in gateway.requests_seen() if r.path.endswith("/capture")]
    assert keys == ["s-1:capture"] * 4
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(billing) == [300]


def test_an_outage_leaves_the_session_pending_and_settling_later_charges_once(
        billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    gateway.fail_next(4, "500")
    receipt = billing.settle("s-1", [COLA])
    assert (receipt.outcome, receipt.outcome_reason) == (
        "pending", "payment retry: the payment service did not answer")
    assert receipt.charged == Money(0, "EUR") and receipt.owed == Money(0, "EUR")
    assert "Outcome   Payment pending: payment retry" in receipt.render_text()
    assert billing.standing(alice.id).reason == "the payment for session s-1 is still pending"
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    assert gateway.effects()["capture"] == 1 and billing.standing(alice.id).ok
    assert capture_keys(gateway) == ["s-1:capture"] * 5 and captures_in_ledger(billing) == [300]


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
    assert [(r.session_id, r.what, r.result) for r in retried] == [("s-1", "settle", "charged")]
    assert capture_keys(gateway) == ["s-1:capture"] * 5  # the replay used the stored key
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
    assert capture_keys(gateway) == ["s-1:capture"] * 2  # the lost one, then its replay


def test_a_crash_before_the_request_is_finished_by_retry_pending(make_billing, gateway):
    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    doomed.place_hold("s-1", alice.id)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    with doomed._sessions() as db:
        charge = db.scalar(select(Charge))
    assert (charge.idempotency_key, charge.status) == ("s-1:capture", "requested")
    assert capture_keys(gateway) == []
    restarted = make_billing()
    assert [(r.what, r.result) for r in restarted.retry_pending()] == [("settle", "charged")]
    assert restarted.receipt("s-1").outcome == "charged"
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(restarted) == [300]
    assert capture_keys(gateway) == ["s-1:capture"]


def test_a_late_outage_report_does_not_reopen_a_charged_session(make_billing, gateway):
    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    doomed.place_hold("s-1", alice.id)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    winner = make_billing()

    class OutrunWhileWaiting(GatewayClient):
        """While this process waits for its capture answer, another one finishes the session;
        then this one's capture gets no answer."""

        def capture(self, auth_id, amount, idempotency_key, **kw):
            winner.retry_pending()
            raise GatewayUnavailable("no answer")

    loser = make_billing(OutrunWhileWaiting)
    loser.retry_pending()
    receipt = loser.receipt("s-1")
    assert (receipt.outcome, receipt.outcome_reason, receipt.charged) == \
        ("charged", None, Money(300, "EUR"))
    assert loser.standing(alice.id).ok and gateway.effects()["capture"] == 1


def test_retry_pending_during_an_outage_keeps_the_capture_requested(make_billing, gateway):
    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    doomed.place_hold("s-1", alice.id)
    with pytest.raises(PowerCut):
        doomed.settle("s-1", [COLA])
    restarted = make_billing()
    gateway.fail_next(4, "500")
    assert [(r.what, r.result) for r in restarted.retry_pending()] == [("settle", "pending")]
    with restarted._sessions() as db:
        assert db.scalar(select(Charge.status)) == "requested"
    assert [(r.what, r.result) for r in restarted.retry_pending()] == [("settle", "charged")]
    assert gateway.effects()["capture"] == 1 and captures_in_ledger(restarted) == [300]


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
    assert not any(t.is_alive() for t in threads), "a settle() hung for 30 s"
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
    with billing._sessions() as db:
        hold = db.scalar(select(Hold))
        entries = db.execute(select(LedgerEntry.kind, LedgerEntry.amount)
                             .order_by(LedgerEntry.id)).all()
    assert (hold.status, hold.void_key) == ("voided", "s-1:void")
    assert [tuple(e) for e in entries] == [("hold", 2000), ("void", 2000)]
    assert billing.receipt("s-1").outcome == "denied" and billing.retry_pending() == []


def test_a_declined_hold_whose_answer_was_lost_is_recorded_declined(billing, gateway):
    carol = billing.open_account("Carol", "tok_declined")
    gateway.fail_next(4, "drop")
    assert billing.place_hold("s-1", carol.id).code == "unavailable"
    retried = billing.retry_pending()
    assert [(r.what, r.result) for r in retried] == [("hold_cleanup", "declined")]
    assert gateway.effects() == {"authorize": 0, "decline": 1, "capture": 0, "charge": 0,
                                 "void": 0, "refund": 0}
    assert billing.retry_pending() == []


def test_a_refund_without_an_answer_is_retried_with_its_key(billing, alice, gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA])
    gateway.fail_next(4, "drop")
    assert billing.refund("s-1", 150, "dented can").status == "requested"
    assert billing.receipt("s-1").refunded.amount == 0
    with billing._sessions() as db:
        assert db.execute(select(Refund.status, Refund.failure)).one() == ("requested", None)
    assert [(r.what, r.result) for r in billing.retry_pending()] == [("refund", "refunded")]
    assert gateway.effects()["refund"] == 1
    assert billing.receipt("s-1").refunded.amount == 150
    assert [r.idempotency_key for r in gateway.requests_seen()
            if r.path == "/v1/refunds"] == ["s-1:refund:1"] * 5
    assert billing.retry_pending() == []


def test_a_refund_waiting_for_an_answer_still_counts_against_the_capture(billing, alice,
                                                                         gateway):
    billing.place_hold("s-1", alice.id)
    billing.settle("s-1", [COLA])
    gateway.fail_next(4, "500")
    assert billing.refund("s-1", 200, "dented can").status == "requested"
    with pytest.raises(RefundRefused, match="more than the EUR 1.00 left"):
        billing.refund("s-1", 101, "again")


def test_a_refused_capture_becomes_debt_and_the_session_stays_pending(billing, alice, gateway):
    hold = billing.place_hold("s-1", alice.id)
    GatewayClient(gateway.base_url, api_key=gateway.api_key).void(hold.auth_id, "someone-else")  # hold gone meanwhile
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
    assert [r.idempotency_key for r in gateway.requests_seen()] == \
        ["s-1:hold", "s-1:hold", "s-1:capture"]
    assert captures_in_ledger(restarted) == [300]
