"""The payment outbox: gateway outages and restarts, back-off on Billing's clock, order,
exactly-once effects; the payment above the hold, corrections and stored receipts.

Against the real sandbox gateway on 127.0.0.1 (the shared one, and for restarts a
`python -m billing.gateway_server` process killed with SIGKILL). Nothing waits: the client's
`sleep` records its waits, the outbox's time is the tests' FixedClock, advanced by hand.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from billing import (Billing, BillingError, GatewayClient, GatewayUnavailable, Line, Money,
                     init_db, make_engine, session_factory)
from billing.crypto import SecretBox
from billing.models import Charge, Hold, Refund
from billing.outbox import OutboxReport, drain_until_done, outbox_backoff
from billing.outbox_models import PaymentOutbox, StoredReceipt

HOLD = 2000
COLA = Line("cola-330", "Cola 330 ml", 2, 150)
CRISPS = Line("crisps-salt", "Crisps salted", 1, 220)
GIN = Line("gin", "Gin 70 cl", 1, 2600)


def outbox(billing, session_id=None):
    with billing._sessions() as db:
        query = select(PaymentOutbox).order_by(PaymentOutbox.id)
        if session_id:
            query = query.where(PaymentOutbox.session_id == session_id)
        return [(r.step, r.idempotency_key, r.attempts, r.done_at is not None,
                 r.next_attempt_at) for r in db.scalars(query)]


def keys_sent(gateway, suffix):
    return [r.idempotency_key for r in gateway.requests_seen() if r.path.endswith(suffix)]


@pytest.fixture
def alice(billing):
    return billing.open_account("Alice", "tok_visa_ok", "EUR")


def held(billing, alice, session_id="s-1"):
    result = billing.place_hold(session_id, alice.id)
    assert result.ok, result.reason
    return result


# --- the back-off, a pure function -------------------------------------------------------------

def test_outbox_backoff_doubles_from_one_second_to_five_minutes():
    assert [outbox_backoff(a, 1.0) for a in range(1, 12)] == \
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert outbox_backoff(3, 0.0) == 2.0 and outbox_backoff(3, 0.5) == 3.0


@pytest.mark.parametrize("attempts, jitter, words", [(0, 0.5, "attempts 0"),
                                                     (True, 0.5, "attempts True"),
                                                     (1, 1.5, "jitter 1.5"),
                                                     (1, -0.1, "jitter -0.1")])
def test_outbox_backoff_refuses_what_it_cannot_mean(attempts, jitter, words):
    with pytest.raises(ValueError, match=words):
        outbox_backoff(attempts, jitter)


def test_drain_until_done_sleeps_until_the_next_row_is_due(clock):
    reports = [OutboxReport((), 1, clock.now + dt.timedelta(seconds=4)),
               OutboxReport((), 1, clock.now + dt.timedelta(seconds=12)),
               OutboxReport((), 0, None)]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock.advance(s)

    assert drain_until_done(lambda: reports.pop(0), clock, sleep).pending == 0
    assert sleeps == [4.0, 8.0]


# --- outages -----------------------------------------------------------------------------------

def test_the_capture_row_and_its_outbox_entry_are_committed_before_the_call(make_billing,
                                                                             gateway):
    class DiesBeforeCapture(GatewayClient):
        def capture(self, *a, **kw):
            raise KeyboardInterrupt("power cut before the capture request")

    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    held(doomed, alice)
    with pytest.raises(KeyboardInterrupt):
        doomed.settle("s-1", [COLA])
    assert [(s, k, a, d) for s, k, a, d, _ in outbox(doomed)] == \
        [("capture", "s-1:capture", 0, False)]
    restarted = make_billing()
    report = restarted.drain_outbox()
    assert [(s.step, s.done, s.result) for s in report.steps] == [("capture", True, "charged")]
    assert report.pending == 0 and gateway.effects()["capture"] == 1


def test_a_requested_row_from_before_the_outbox_is_adopted_and_sent(make_billing, gateway):
    class DiesBeforeCapture(GatewayClient):
        def capture(self, *a, **kw):
            raise KeyboardInterrupt("power cut before the capture request")

    doomed = make_billing(DiesBeforeCapture)
    alice = doomed.open_account("Alice", "tok_visa_ok")
    held(doomed, alice)
    with pytest.raises(KeyboardInterrupt):
        doomed.settle("s-1", [COLA])
    with doomed._sessions.begin() as db:              # as an older cabinet left it
        db.execute(delete(PaymentOutbox))
    restarted = make_billing()
    assert [(s.step, s.result) for s in restarted.drain_outbox().steps] == \
        [("capture", "charged")]
    assert [(s, k, d) for s, k, _, d, _ in outbox(restarted)] == \
        [("capture", "s-1:capture", True)]
    assert gateway.effects()["capture"] == 1


def test_an_outage_keeps_the_capture_in_the_outbox_with_backoff_until_it_is_done(
        billing, alice, gateway, clock):
    held(billing, alice)
    gateway.fail_next(4, "500")                       # the client's 4 tries all fail
    receipt = billing.settle("s-1", [COLA])
    assert receipt.outcome == "pending"
    [(step, key, attempts, done, due)] = outbox(billing)
    assert (step, key, attempts, done) == ("capture", "s-1:capture", 1, False)
    assert due == clock.now + dt.timedelta(seconds=1)

    report = billing.drain_outbox()                   # not due yet: nothing is sent
    assert report.steps == () and report.pending == 1
    assert len(keys_sent(gateway, "/capture")) == 4

    clock.advance(1)
    gateway.fail_next(4, "500")                       # still down
    report = billing.drain_outbox()
    assert [(s.step, s.done) for s in report.steps] == [("capture", False)]
    assert report.next_attempt_at == clock.now + dt.timedelta(seconds=2)
    assert outbox(billing)[0][2] == 2

    clock.advance(2)                                  # back up
    report = billing.drain_outbox()
    assert [(s.step, s.done, s.result) for s in report.steps] == [("capture", True, "charged")]
    assert report.pending == 0 and billing.receipt("s-1").outcome == "charged"
    assert set(keys_sent(gateway, "/capture")) == {"s-1:capture"}
    assert gateway.effects()["capture"] == 1
    assert billing.drain_outbox().steps == ()


def test_drain_until_done_waits_out_the_backoff_on_the_clock(billing, alice, gateway, clock):
    held(billing, alice)
    gateway.fail_next(12, "500")                      # three drains' worth of failures
    billing.settle("s-1", [COLA])
    waits: list[float] = []

    def sleep(s):
        waits.append(s)
        clock.advance(s)

    report = billing.drain_outbox_until_done(sleep)
    assert report.pending == 0 and billing.receipt("s-1").outcome == "charged"
    assert waits == [1.0, 2.0, 4.0]
    assert gateway.effects()["capture"] == 1


def test_a_gateway_that_does_not_answer_ends_the_pass(billing, alice, gateway):
    held(billing, alice, "s-1")
    held(billing, alice, "s-2")
    gateway.fail_next(8, "500")
    billing.settle("s-1", [COLA])
    billing.settle("s-2", [CRISPS])
    gateway.fail_next(4, "500")
    sent = len(gateway.requests_seen())
    report = billing.retry_pending()                  # force: every pending row, now
    assert [(r.session_id, r.result) for r in report] == [("s-1", "pending")]
    assert len(gateway.requests_seen()) - sent == 4   # s-2 was not even tried
    report = billing.retry_pending()
    assert [(r.session_id, r.result) for r in report] == [("s-1", "charged"), ("s-2", "charged")]
    assert keys_sent(gateway, "/capture")[-2:] == ["s-1:capture", "s-2:capture"]


def test_a_session_waiting_for_its_backoff_does_not_hold_up_the_others(billing, alice, gateway,
                                                                      clock):
    held(billing, alice, "s-1")
    held(billing, alice, "s-2")
    gateway.fail_next(4, "500")
    billing.settle("s-1", [COLA])                     # t0: s-1 is due at t0 + 1 s
    clock.advance(1)
    gateway.fail_next(4, "500")
    billing.drain_outbox()                            # t0 + 1: fails again, due at t0 + 3 s
    gateway.fail_next(4, "500")
    billing.settle("s-2", [CRISPS])                   # t0 + 1: s-2 is due at t0 + 2 s
    clock.advance(1)
    report = billing.drain_outbox()                   # t0 + 2: only s-2 is due
    assert [(s.session_id, s.result) for s in report.steps] == [("s-2", "charged")]
    assert report.next_attempt_at == clock.now + dt.timedelta(seconds=1)
    clock.advance(1)
    assert [(s.session_id, s.result) for s in billing.drain_outbox().steps] == \
        [("s-1", "charged")]


def test_a_duplicate_delivery_of_the_capture_takes_the_money_once(billing, alice, gateway):
    held(billing, alice)
    gateway.fail_next(1, "duplicate")
    assert billing.settle("s-1", [COLA]).outcome == "charged"
    assert gateway.effects()["capture"] == 1
    assert [r.fault for r in gateway.requests_seen()][-1] == "duplicate"


def test_a_lost_answer_is_recovered_by_the_key_after_a_restart(make_billing, gateway):
    first = make_billing()
    alice = first.open_account("Alice", "tok_visa_ok")
    held(first, alice)
    gateway.fail_next(4, "drop")                      # captured at the gateway, never answered
    assert first.settle("s-1", [COLA]).outcome == "pending"
    assert gateway.effects()["capture"] == 1
    restarted = make_billing()
    assert [r.result for r in restarted.retry_pending()] == ["charged"]
    assert gateway.effects()["capture"] == 1
    assert restarted.receipt("s-1").charged == Money(300, "EUR")


def test_a_refund_in_an_outage_is_sent_later_with_the_same_key(billing, alice, gateway, clock):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    gateway.fail_next(4, "500")
    result = billing.refund("s-1", 150, "a crushed can")
    assert result.status == "requested" and "retried later" in result.message
    clock.advance(1)
    assert [(s.step, s.result) for s in billing.drain_outbox().steps] == [("refund", "refunded")]
    assert set(keys_sent(gateway, "/v1/refunds")) == {"s-1:refund:1"}
    assert gateway.effects()["refund"] == 1
    assert billing.receipt("s-1").refunded == Money(150, "EUR")


def test_a_hold_without_an_answer_is_cleaned_up_by_the_outbox(billing, alice, gateway, clock):
    gateway.fail_next(4, "drop")
    assert billing.place_hold("s-1", alice.id).code == "unavailable"
    assert [(s, k) for s, k, *_ in outbox(billing)] == [("hold_cleanup", "s-1:hold")]
    steps = billing.drain_outbox().steps
    assert [(s.step, s.result) for s in steps] == [("hold_cleanup", "voided")]
    assert [(s, d) for s, _, _, d, _ in outbox(billing)] == [("hold_cleanup", True),
                                                              ("void", True)]
    assert gateway.effects()["authorize"] == 1 and gateway.effects()["void"] == 1


# --- the basket above the hold -------------------------------------------------------------------

def test_above_the_hold_the_rest_is_a_second_payment_with_its_own_key(billing, alice, gateway):
    hold = held(billing, alice)
    receipt = billing.settle("s-1", [GIN])
    assert (receipt.outcome, receipt.charged, receipt.owed) == \
        ("charged", Money(2600, "EUR"), Money(0, "EUR"))
    assert [(s, k) for s, k, *_ in outbox(billing)] == [("capture", "s-1:capture"),
                                                        ("charge", "s-1:extra")]
    extra = [r for r in gateway.requests_seen() if r.idempotency_key == "s-1:extra"]
    assert [(r.method, r.path) for r in extra] == [("POST", "/v1/payment_intents")]
    intents = {i["id"]: i for i in gateway.intents()}
    assert intents[hold.auth_id]["amount_received"] == HOLD
    [second] = [i for i in intents.values() if i["id"] != hold.auth_id]
    assert (second["capture_method"], second["amount_received"]) == ("automatic", 600)


def test_the_second_payment_waits_for_the_capture_in_an_outage(billing, alice, gateway, clock):
    held(billing, alice)
    gateway.fail_next(4, "500")
    assert billing.settle("s-1", [GIN]).outcome == "pending"
    assert gateway.effects()["charge"] == 0           # never sent before the capture is done
    assert billing.drain_outbox().steps == ()         # the charge is due, its capture is not
    assert gateway.effects()["charge"] == 0
    clock.advance(1)
    steps = billing.drain_outbox().steps
    assert [(s.step, s.done) for s in steps] == [("capture", True), ("charge", True)]
    assert billing.receipt("s-1").outcome == "charged"
    assert gateway.effects()["capture"] == 1 and gateway.effects()["charge"] == 1


def test_a_second_payment_without_an_answer_keeps_the_session_pending(make_billing, gateway,
                                                                      clock):
    class ChargeDown(GatewayClient):
        """The network fails for the second payment only (after the client's retries)."""
        down = True

        def charge(self, *a, **kw):
            if ChargeDown.down:
                raise GatewayUnavailable("gateway: no answer to the charge")
            return super().charge(*a, **kw)

    billing = make_billing(ChargeDown)
    alice = billing.open_account("Alice", "tok_visa_ok")
    held(billing, alice)
    receipt = billing.settle("s-1", [GIN])
    assert (receipt.outcome, receipt.charged) == ("pending", Money(HOLD, "EUR"))
    assert [(s, d) for s, _, _, d, _ in outbox(billing)] == [("capture", True),
                                                              ("charge", False)]
    ChargeDown.down = False
    clock.advance(1)
    assert [s.result for s in billing.drain_outbox().steps] == ["charged"]
    assert billing.receipt("s-1").charged == Money(2600, "EUR")
    assert gateway.effects()["charge"] == 1


def test_a_refund_after_a_second_payment_spreads_over_both(billing, alice, gateway, book):
    held(billing, alice)
    billing.settle("s-1", [GIN])
    with pytest.raises(BillingError, match=r"EUR 26.01 is more than the EUR 26.00 left"):
        billing.refund("s-1", 2601, "too much")
    result = billing.refund("s-1", 2300, "wrong bottle")
    assert (result.status, result.amount) == ("refunded", Money(2300, "EUR"))
    assert [(r.amount, r.idempotency_key) for r in book.all(Refund, session_id="s-1")] == \
        [(HOLD, "s-1:refund:1"), (300, "s-1:refund:2")]
    assert gateway.effects()["refund"] == 2
    assert billing.refund("s-1", 300, "the rest").status == "refunded"
    with pytest.raises(BillingError, match="more than the EUR 0.00 left"):
        billing.refund("s-1", 1, "nothing left")


# --- corrections -------------------------------------------------------------------------------

def test_a_smaller_corrected_basket_refunds_the_difference(billing, alice, gateway):
    held(billing, alice)
    billing.settle("s-1", [COLA, CRISPS])             # 520
    result = billing.correct("s-1", [CRISPS], "the colas were put back")
    assert (result.action, result.amount, result.status, result.number) == \
        ("refund", Money(300, "EUR"), "done", 1)
    assert (result.old_total, result.new_total) == (Money(520, "EUR"), Money(220, "EUR"))
    receipt = billing.receipt("s-1")
    assert (receipt.total, receipt.charged, receipt.refunded) == \
        (Money(220, "EUR"), Money(520, "EUR"), Money(300, "EUR"))
    assert [line.sku for line in receipt.lines] == ["crisps-salt"]
    assert "Corrected basket (the colas were put back):" in receipt.render_text()
    assert gateway.effects()["refund"] == 1


def test_a_larger_corrected_basket_is_charged_as_its_own_payment(billing, alice, gateway, book):
    held(billing, alice)
    billing.settle("s-1", [CRISPS])                   # 220
    result = billing.correct("s-1", [CRISPS, COLA], "two colas were missed")
    assert (result.action, result.amount, result.status) == ("charge", Money(300, "EUR"), "done")
    charge = book.one(Charge, session_id="s-1", kind="correction-1")
    assert (charge.amount, charge.status, charge.idempotency_key) == \
        (300, "captured", "s-1:correction:1")
    assert billing.receipt("s-1").charged == Money(520, "EUR")
    # a second correction counts from what was paid, not from the first basket
    again = billing.correct("s-1", [COLA], "the crisps were never taken")
    assert (again.number, again.action, again.amount) == (2, "refund", Money(220, "EUR"))
    assert billing.receipt("s-1").refunded == Money(220, "EUR")


def test_a_correction_never_refunds_more_than_was_paid(billing, alice, gateway):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    result = billing.correct("s-1", [], "nothing was taken after all")
    assert (result.action, result.amount) == ("refund", Money(300, "EUR"))
    assert billing.receipt("s-1").refunded == Money(300, "EUR")
    assert billing.correct("s-1", [], "again").action == "none"
    assert gateway.effects()["refund"] == 1


def test_a_declined_correction_charge_is_owed(billing, alice, gateway):
    held(billing, alice)
    billing.settle("s-1", [CRISPS])
    gateway.fail_next(1, "insufficient_funds")
    result = billing.correct("s-1", [CRISPS, COLA], "two colas were missed")
    assert (result.action, result.status) == ("charge", "owed")
    assert billing.debt(alice.id) == Money(300, "EUR")
    with pytest.raises(BillingError, match="unpaid debt"):
        billing.correct("s-1", [CRISPS], "another look")


@pytest.mark.parametrize("basket, words", [(None, "only a charged session can be corrected"),
                                           ([], "only a charged session can be corrected")])
def test_only_a_charged_session_can_be_corrected(billing, alice, basket, words):
    held(billing, alice)
    if basket is not None:
        billing.settle("s-1", basket)                 # nothing taken
    with pytest.raises(BillingError, match=words):
        billing.correct("s-1", [COLA], "operator")


def test_a_correction_needs_a_reason(billing, alice):
    held(billing, alice)
    billing.settle("s-1", [COLA])
    with pytest.raises(BillingError, match="correct s-1: give a reason"):
        billing.correct("s-1", [], " ")


# --- receipts ----------------------------------------------------------------------------------

def test_each_change_of_a_receipt_is_stored_as_a_new_version(billing, alice, gateway, book):
    held(billing, alice)
    billing.settle("s-1", [COLA, CRISPS])
    billing.settle("s-1", [COLA, CRISPS])             # a replay changes nothing
    billing.refund("s-1", 220, "crisps were stale")
    texts = billing.stored_receipts("s-1")
    assert len(texts) == 2
    assert "Charged EUR 5.20" in texts[0] and "Refunded" not in texts[0]
    assert "Refunded  EUR 2.20" in texts[1]
    assert [r.outcome for r in book.all(StoredReceipt, session_id="s-1")] == ["charged"] * 2


def test_a_pending_session_stores_its_receipt_and_the_final_one(billing, alice, gateway, clock):
    held(billing, alice)
    gateway.fail_next(4, "500")
    billing.settle("s-1", [COLA])
    clock.advance(1)
    billing.drain_outbox()
    texts = billing.stored_receipts("s-1")
    assert [("Payment pending" in t, "Charged EUR 3.00" in t) for t in texts] == \
        [(True, False), (False, True)]


# --- a real gateway process, restarted -----------------------------------------------------------

def start_gateway(data: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "billing.gateway_server", "--data",
                             str(data), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    line = ""
    deadline = time.monotonic() + 20
    while not line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() else line
    return proc, line


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def gateway_dir(tmp_path):
    path = tmp_path / "gateway"
    path.mkdir()
    procs: list[subprocess.Popen] = []
    yield path, procs
    for proc in procs:
        if proc.poll() is None:
            kill(proc)


def billing_for(url: str, key_file: Path, db_path: Path, clock, sleeps: list) -> Billing:
    engine = make_engine(db_path)
    init_db(engine)
    client = GatewayClient(url, api_key_file=key_file, timeout_s=2.0, max_retries=2,
                           sleep=sleeps.append, jitter=lambda: 1.0)
    return Billing(session_factory(engine), client, hold_amount=HOLD, currency="EUR",
                   clock=clock, secrets=SecretBox(bytes(range(32)), origin="test"),
                   outbox_jitter=lambda: 1.0)


def test_a_gateway_restarted_mid_session_still_captures_the_hold(gateway_dir, db_path, clock):
    folder, procs = gateway_dir
    proc, url = start_gateway(folder)
    procs.append(proc)
    billing = billing_for(url, folder / "api_key", db_path, clock, [])
    alice = billing.open_account("Alice", "tok_visa_ok")
    hold = held(billing, alice)
    kill(proc)                                        # SIGKILL between the hold and capture
    proc, again = start_gateway(folder, port=int(url.rsplit(":", 1)[1]))
    procs.append(proc)
    assert again == url
    receipt = billing.settle("s-1", [COLA])
    assert (receipt.outcome, receipt.charged) == ("charged", Money(300, "EUR"))
    assert billing._gateway.retrieve(hold.auth_id)["amount_received"] == 300


def test_a_gateway_down_at_capture_time_is_caught_up_by_the_outbox(gateway_dir, db_path, clock):
    folder, procs = gateway_dir
    proc, url = start_gateway(folder)
    procs.append(proc)
    sleeps: list[float] = []
    billing = billing_for(url, folder / "api_key", db_path, clock, sleeps)
    alice = billing.open_account("Alice", "tok_visa_ok")
    hold = held(billing, alice)
    kill(proc)                                        # the gateway is gone
    receipt = billing.settle("s-1", [GIN])
    assert receipt.outcome == "pending" and sleeps == [0.25, 0.5]   # the client's own retries
    clock.advance(1)
    assert [s.done for s in billing.drain_outbox().steps] == [False]   # still down
    proc, _ = start_gateway(folder, port=int(url.rsplit(":", 1)[1]))
    procs.append(proc)
    clock.advance(2)
    report = billing.drain_outbox()
    assert [(s.step, s.done) for s in report.steps] == [("capture", True), ("charge", True)]
    assert billing.receipt("s-1").outcome == "charged"
    assert billing.receipt("s-1").charged == Money(2600, "EUR")
    assert billing._gateway.retrieve(hold.auth_id)["status"] == "succeeded"
    with billing._sessions() as db:
        assert db.scalar(select(Hold.status)) == "captured"
