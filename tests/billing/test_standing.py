"""Standing and credit (billing/standing.py, docs/customers.md): the trust score's every term,
the policy at every boundary, and each hard refusal at the door, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt

import pytest

from billing import Billing
from billing.errors import BillingError
from billing.models import CabinetSession, Charge, Dispute, Hold, LedgerEntry
from billing.money import Money
from billing.standing import (Admission, History, decide_dispute, open_dispute, policy,
                              record_debt_paid, score)

BASE = Money(2000, "EUR")
NEW = History(age_days=0, paid_sessions=0, debts=0, disputes=0, flagged_sessions=0)


def hist(**kw) -> History:
    return History(**{**NEW.__dict__, **kw})


# --- the score, term by term ---------------------------------------------------------------
@pytest.mark.parametrize("history, expected", [
    (NEW, 50),
    (hist(paid_sessions=1), 52),
    (hist(paid_sessions=15), 80),
    (hist(paid_sessions=40), 80),                  # paid sessions count up to 15
    (hist(age_days=29.9), 50),
    (hist(age_days=30), 51),
    (hist(age_days=365), 62),
    (hist(age_days=3650), 62),                     # age counts up to 12 months
    (hist(age_days=-5), 50),                       # a clock behind never subtracts
    (hist(debts=1), 35),
    (hist(disputes=1), 30),
    (hist(flagged_sessions=1), 45),
    (hist(flagged_sessions=9), 30),                # flags count up to 4
    (hist(debts=4), 0),                            # never below 0
    (hist(paid_sessions=15, age_days=400, debts=1, flagged_sessions=2), 67),
])
def test_the_trust_score(history, expected):
    assert score(history) == expected


# --- the policy at its boundaries ----------------------------------------------------------
SECOND = "please confirm with your PIN or the last 4 digits of your phone number"


@pytest.mark.parametrize("trust, expected", [
    (100, Admission("face", "ok", "", 100, BASE)),
    (70, Admission("face", "ok", "", 70, BASE)),
    (69, Admission("second_factor", "second_factor", SECOND, 69, BASE)),
    (40, Admission("second_factor", "second_factor", SECOND, 40, BASE)),
    (39, Admission("second_factor", "low_trust_second_factor",
                   SECOND + "; a larger amount is reserved for this visit", 39,
                   Money(4000, "EUR"))),
    (20, Admission("second_factor", "low_trust_second_factor",
                   SECOND + "; a larger amount is reserved for this visit", 20,
                   Money(4000, "EUR"))),
    (19, Admission("refused", "low_trust", "this account cannot shop at the cabinet for now; "
                   "please contact customer service", 19, None)),
])
def test_the_policy(trust, expected):
    assert policy(trust, BASE) == expected
    assert expected.allowed is (expected.entry != "refused")


# --- history from the database -------------------------------------------------------------
def _session(billing: Billing, sid: str, account_id: int, outcome: str | None,
             flags: list[str] | None = None) -> None:
    with billing._sessions.begin() as db:
        db.add(CabinetSession(id=sid, account_id=account_id, cabinet_id="c", currency="EUR",
                              outcome=outcome, flags=flags or [],
                              opened_at=billing._clock()))


def test_a_new_account_needs_a_second_factor_and_the_base_hold(billing):
    alice = billing.open_account("Alice", "tok_visa_ok")
    assert billing.admission(alice.id) == Admission("second_factor", "second_factor", SECOND,
                                                    50, Money(2000, "EUR"))


def test_ten_paid_sessions_earn_face_only_entry(billing):
    alice = billing.open_account("Alice", "tok_visa_ok")
    for i in range(10):
        _session(billing, f"s-{i}", alice.id, "charged")
    _session(billing, "s-x", alice.id, "nothing_taken")        # not a paid session
    assert billing.admission(alice.id).entry == "face"
    assert billing.admission(alice.id).score == 70


def test_age_flags_disputes_and_settled_debts_come_from_the_ledger(billing, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    _session(billing, "s-1", alice.id, "charged", ["uncertain_basket"])
    _session(billing, "s-2", alice.id, "pending")
    with billing._sessions.begin() as db:
        db.add(LedgerEntry(account_id=alice.id, session_id="s-2", kind="debt", amount=300,
                           currency="EUR", at=clock()))
        db.add(Dispute(account_id=alice.id, session_id="s-1", status="rejected",
                       opened_at=clock()))
        db.add(Dispute(account_id=alice.id, session_id="s-1", status="upheld",
                       opened_at=clock()))              # the cabinet's mistake: no penalty
    record_debt_paid(billing._sessions, alice.id, 300, "paid at the counter", clock())
    clock.advance(90 * 86400)
    # 50 + 2 (one paid) + 3 (three months) - 15 (one debt, though paid) - 20 (one dispute)
    # - 5 (one flagged session)
    assert billing.admission(alice.id) == Admission(
        "refused", "low_trust", "this account cannot shop at the cabinet for now; please "
        "contact customer service", 15, None)


def test_a_low_trust_account_is_refused_with_its_reason(billing, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    with billing._sessions.begin() as db:
        for _ in range(2):
            db.add(Dispute(account_id=alice.id, status="open", opened_at=clock()))
    result = billing.place_hold("s-1", alice.id)
    assert (result.ok, result.code, result.reason) == (
        False, "standing", "this account cannot shop at the cabinet for now; please contact "
                           "customer service")


def test_a_low_trust_account_gets_a_double_hold(billing, book, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    with billing._sessions.begin() as db:
        db.add(Dispute(account_id=alice.id, status="open", opened_at=clock()))
    assert billing.admission(alice.id).score == 30
    result = billing.place_hold("s-1", alice.id)
    assert result.ok and result.amount == Money(4000, "EUR")
    assert book.one(Hold, session_id="s-1").amount == 4000
    assert book.ledger("s-1") == [("hold", 4000)]


# --- hard refusals at the door -------------------------------------------------------------
def _refused_at_the_door(billing: Billing, book, account_id: int, code: str, reason: str):
    admission = billing.admission(account_id)
    assert (admission.entry, admission.code, admission.reason, admission.hold) == \
        ("refused", code, reason, None)
    result = billing.place_hold("s-door", account_id)
    assert (result.ok, result.code, result.reason) == (False, "standing", reason)
    assert book.all(Hold, session_id="s-door") == []                 # no gateway call
    assert book.one(CabinetSession, id="s-door").outcome == "denied"


def test_a_closed_account_can_no_longer_shop(billing, book):
    alice = billing.open_account("Alice", "tok_visa_ok")
    billing.close_account(alice.id)
    _refused_at_the_door(billing, book, alice.id, "closed", "this account is closed")
    assert billing.standing(alice.id).reason == "this account is closed"


def test_closed_wins_over_blocked(billing, book):
    alice = billing.open_account("Alice", "tok_visa_ok")
    billing.block(alice.id, "fraud review")
    billing.close_account(alice.id)
    assert billing.admission(alice.id).code == "closed"


def test_a_blocked_account_is_refused_with_its_reason(billing, book):
    alice = billing.open_account("Alice", "tok_visa_ok")
    billing.block(alice.id, "chargeback on s-41")
    _refused_at_the_door(billing, book, alice.id, "blocked",
                         "account blocked: chargeback on s-41")


def test_no_payment_method_is_refused(billing, book):
    bob = billing.open_account("Bob", None)
    _refused_at_the_door(billing, book, bob.id, "no_payment_method",
                         "no valid payment method on the account")


def test_a_declined_card_is_refused_at_the_door_until_a_new_one_is_set(billing, book, clock):
    carol = billing.open_account("Carol", "tok_declined")
    first = billing.place_hold("s-1", carol.id)
    assert (first.ok, first.code) == (False, "card_declined")
    clock.advance(60)
    _refused_at_the_door(billing, book, carol.id, "payment_method_failed",
                         "the payment method was declined (The card was declined.); add a new "
                         "one in the app")
    clock.advance(60)
    billing.set_payment_token(carol.id, "tok_visa_ok")
    assert billing.admission(carol.id).allowed
    assert billing.place_hold("s-2", carol.id).ok


def test_a_session_that_could_not_be_paid_blocks_the_next_visit_until_paid(billing, book,
                                                                           clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    _session(billing, "s-1", alice.id, "pending")
    with billing._sessions.begin() as db:     # what a refused capture books (service.py)
        db.add(LedgerEntry(account_id=alice.id, session_id="s-1", kind="debt", amount=350,
                           currency="EUR", at=clock(), note="capture refused"))
    _refused_at_the_door(billing, book, alice.id, "debt", "unpaid debt of EUR 3.50")
    assert record_debt_paid(billing._sessions, alice.id, 200, "cash", clock()) == \
        Money(150, "EUR")
    assert billing.admission(alice.id).reason == "unpaid debt of EUR 1.50"
    assert record_debt_paid(billing._sessions, alice.id, 150, "cash", clock()) == \
        Money(0, "EUR")
    admission = billing.admission(alice.id)
    assert admission.allowed and admission.score == 35          # the debt is remembered
    assert book.ledger("s-1") == [("debt", 350)]
    assert [a for _, a in book.ledger()] == [350, -200, -150]


def test_paying_more_than_the_debt_is_refused(billing, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    with pytest.raises(BillingError, match=f"debt payment of account {alice.id}: EUR 0.01 is "
                                           f"more than the EUR 0.00 owed"):
        record_debt_paid(billing._sessions, alice.id, 1, "cash", clock())


def test_a_payment_still_pending_is_refused(billing, book, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    _session(billing, "s-1", alice.id, "pending")
    with billing._sessions.begin() as db:
        db.add(Charge(session_id="s-1", amount=100, currency="EUR",
                      idempotency_key="s-1:capture", status="requested"))
    _refused_at_the_door(billing, book, alice.id, "payment_pending",
                         "the payment for session s-1 is still pending")


def test_the_first_refusal_in_order_is_the_one_shown(billing, clock):
    alice = billing.open_account("Alice", None)
    billing.block(alice.id, "fraud review")
    with billing._sessions.begin() as db:
        db.add(LedgerEntry(account_id=alice.id, kind="debt", amount=5, currency="EUR",
                           at=clock()))
    assert billing.admission(alice.id).code == "blocked"
    billing.unblock(alice.id)
    assert billing.admission(alice.id).code == "no_payment_method"
    billing.set_payment_token(alice.id, "tok_visa_ok")
    assert billing.admission(alice.id).code == "debt"


def test_an_unpaid_session_end_to_end_refuses_the_next_visit_until_paid(billing, book,
                                                                        gateway, clock):
    from billing import GatewayClient, Line
    alice = billing.open_account("Alice", "tok_visa_ok")
    hold = billing.place_hold("s-1", alice.id)
    GatewayClient(gateway.base_url, api_key=gateway.api_key).void(hold.auth_id, "elsewhere")
    receipt = billing.settle("s-1", [Line("cola", "Cola", 1, 350)])    # the capture is refused
    assert (receipt.outcome, receipt.owed) == ("pending", Money(350, "EUR"))
    clock.advance(3600)
    refused = billing.place_hold("s-2", alice.id)
    assert (refused.ok, refused.reason) == (False, "unpaid debt of EUR 3.50")
    record_debt_paid(billing._sessions, alice.id, 350, "paid by bank transfer", clock())
    assert billing.place_hold("s-3", alice.id).ok


def test_a_dispute_counts_while_open_and_if_rejected_but_not_if_upheld(billing, clock):
    alice = billing.open_account("Alice", "tok_visa_ok")
    _session(billing, "s-1", alice.id, "charged")
    first = open_dispute(billing._sessions, alice.id, "s-1", "I took nothing", clock())
    assert billing.admission(alice.id).score == 32               # 50 + 2 - 20
    decide_dispute(billing._sessions, first, upheld=True)
    assert billing.admission(alice.id).score == 52
    second = open_dispute(billing._sessions, alice.id, None, "wrong price", clock())
    decide_dispute(billing._sessions, second, upheld=False)
    assert billing.admission(alice.id).score == 32
    with pytest.raises(BillingError, match=f"dispute {second}: already rejected"):
        decide_dispute(billing._sessions, second, upheld=True)


def test_a_dispute_about_another_accounts_session_is_refused(billing, clock):
    alice, bob = billing.open_account("Alice", "tok_visa_ok"), billing.open_account("Bob", None)
    _session(billing, "s-1", alice.id, "charged")
    with pytest.raises(BillingError, match=f"dispute of account {bob.id}: session 's-1' is not "
                                           f"one of this account's sessions"):
        open_dispute(billing._sessions, bob.id, "s-1", "not me", clock())
    assert billing.admission(alice.id).score == 52
