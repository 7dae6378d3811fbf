"""Standing and credit: whether an account may open the door, how, and for how large a hold.

Two layers, in this order (docs/customers.md says the same to customers):

1. Hard refusals, checked first, each with a code and the reason the kiosk shows: a closed
   account, a blocked one, no payment method, a payment method whose last hold was declined
   (until a new one is set), unpaid debt, a payment still pending.
2. A trust score 0..100 from the account's history (`History`): it starts at 50, earns with
   paid sessions and account age, and loses with debts, disputes and flagged sessions. The
   score decides face-only entry, a second factor, a larger hold, or refusal (`policy`).

`history_of` reads a History from the ledger; `score` and `policy` are pure functions, so
every rule is tested exactly. Nothing here calls the gateway: `record_debt_paid` books money an
operator received for a debt (paying a debt by card is a payment flow, billing/service.py).
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from billing.errors import BillingError, UnknownAccount
from billing.models import Account, CabinetSession, Charge, Dispute, Hold, LedgerEntry
from billing.money import Money, check_amount

# --- the score ---------------------------------------------------------------------------
START = 50
PER_PAID_SESSION, PAID_SESSIONS_COUNTED = 2, 15          # up to +30
PER_MONTH_OF_AGE, MONTHS_COUNTED = 1, 12                 # up to +12
PER_DEBT = 15          # every session that could not be paid, even once the debt is settled
PER_DISPUTE = 20       # disputes open, or decided against the customer
PER_FLAGGED = 5        # sessions flagged for review (a basket the cabinet was not sure of)
FLAGGED_COUNTED = 4    # flags are often the cabinet's doubt, not the customer's doing
# Flags that say what happened to the cabinet, not what the customer did: a session only they
# flag is not a flagged session (a controller that crashed and finished it after its restart).
NOT_THE_CUSTOMERS = frozenset({"recovered_after_restart"})

# --- the policy --------------------------------------------------------------------------
FACE_ONLY_FROM = 70    # score >= 70: the face alone opens the door
SECOND_FACTOR_FROM = 40  # 40..69: face + PIN / last 4 phone digits (or the QR code)
REFUSE_BELOW = 20      # 20..39: second factor and a double hold; below 20: refused
LOW_TRUST_HOLD_FACTOR = 2
DAY_S = 86400.0


@dataclasses.dataclass(frozen=True)
class History:
    age_days: float
    paid_sessions: int        # sessions that ended charged
    debts: int                # sessions whose payment became debt (settled or not)
    disputes: int             # disputes open or rejected (upheld ones were our mistake)
    flagged_sessions: int     # sessions flagged for review


@dataclasses.dataclass(frozen=True)
class Admission:
    """What the door does for an account: `entry` is "face", "second_factor" or "refused"."""

    entry: str
    code: str                 # "ok", "low_trust_second_factor", or why it is refused
    reason: str               # for the kiosk; "" when the face alone is enough
    score: int
    hold: Money | None        # the hold to place; None when refused

    @property
    def allowed(self) -> bool:
        return self.entry != "refused"


def score(history: History) -> int:
    """The trust score, an integer 0..100."""
    months = min(max(history.age_days, 0.0) / 30.0, MONTHS_COUNTED)
    value = (START
             + PER_PAID_SESSION * min(history.paid_sessions, PAID_SESSIONS_COUNTED)
             + int(PER_MONTH_OF_AGE * months)
             - PER_DEBT * history.debts
             - PER_DISPUTE * history.disputes
             - PER_FLAGGED * min(history.flagged_sessions, FLAGGED_COUNTED))
    return max(0, min(100, value))


def policy(trust: int, base_hold: Money) -> Admission:
    """Entry and hold for a score, once no hard refusal applies."""
    if trust >= FACE_ONLY_FROM:
        return Admission("face", "ok", "", trust, base_hold)
    if trust >= SECOND_FACTOR_FROM:
        return Admission("second_factor", "second_factor",
                         "please confirm with your PIN or the last 4 digits of your phone "
                         "number", trust, base_hold)
    if trust >= REFUSE_BELOW:
        return Admission("second_factor", "low_trust_second_factor",
                         "please confirm with your PIN or the last 4 digits of your phone "
                         "number; a larger amount is reserved for this visit", trust,
                         Money(base_hold.amount * LOW_TRUST_HOLD_FACTOR, base_hold.currency))
    return Admission("refused", "low_trust",
                     "this account cannot shop at the cabinet for now; please contact "
                     "customer service", trust, None)


def refused(code: str, reason: str, trust: int = 0) -> Admission:
    return Admission("refused", code, reason, trust, None)


def history_of(db: Session, account: Account, now: dt.datetime) -> History:
    sessions = CabinetSession.account_id == account.id
    paid = db.scalar(select(func.count()).select_from(CabinetSession)
                     .where(sessions, CabinetSession.outcome == "charged"))
    debts = db.scalar(select(func.count(func.distinct(LedgerEntry.session_id)))
                      .where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "debt",
                             LedgerEntry.amount > 0, LedgerEntry.session_id.is_not(None)))
    disputes = db.scalar(select(func.count()).select_from(Dispute)
                         .where(Dispute.account_id == account.id,
                                Dispute.status.in_(("open", "rejected"))))
    flags = db.scalars(select(CabinetSession.flags).where(sessions)).all()
    return History(age_days=(now - account.created_at).total_seconds() / DAY_S,
                   paid_sessions=int(paid or 0), debts=int(debts or 0),
                   disputes=int(disputes or 0),
                   flagged_sessions=sum(1 for f in flags if set(f or ()) - NOT_THE_CUSTOMERS))


def owed(db: Session, account: Account) -> Money:
    """What the account owes now (the sum of its debt ledger entries)."""
    total = db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                      .where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "debt"))
    return Money(int(total or 0), account.currency)


def admission(db: Session, account: Account, base_hold: Money, now: dt.datetime) -> Admission:
    """The hard refusals in order, then the score's policy."""
    if account.status == "closed":
        return refused("closed", "this account is closed")
    if account.status == "blocked":
        return refused("blocked", f"account blocked: {account.blocked_reason or 'no reason'}")
    if not account.payment_token:
        return refused("no_payment_method", "no valid payment method on the account")
    last = db.execute(select(Hold.status, Hold.decline_reason, CabinetSession.opened_at)
                      .join(CabinetSession, CabinetSession.id == Hold.session_id)
                      .where(Hold.account_id == account.id)
                      .order_by(Hold.id.desc()).limit(1)).first()
    if last is not None and last.status == "declined" and (
            account.payment_token_set_at is None
            or last.opened_at >= account.payment_token_set_at):
        return refused("payment_method_failed",
                       f"the payment method was declined ({last.decline_reason or 'no reason'})"
                       f"; add a new one in the app")
    debt = owed(db, account)
    if debt.amount > 0:
        return refused("debt", f"unpaid debt of {debt}")
    waiting = db.scalar(
        select(CabinetSession.id).join(Charge, Charge.session_id == CabinetSession.id)
        .where(CabinetSession.account_id == account.id,
               CabinetSession.outcome == "pending", Charge.status == "requested")
        .limit(1))
    if waiting is not None:
        return refused("payment_pending", f"the payment for session {waiting} is still pending")
    return policy(score(history_of(db, account, now)), base_hold)


def record_debt_paid(factory: sessionmaker, account_id: int, amount: int, note: str,
                     now: dt.datetime) -> Money:
    """An operator records money received for an account's debt (a negative debt entry in the
    append-only ledger); returns what is still owed. Paying more than is owed is refused."""
    amount = check_amount(amount, f"debt payment of account {account_id}", allow_zero=False)
    if not isinstance(note, str) or not note.strip():
        raise BillingError(f"debt payment of account {account_id}: give a note (how it was "
                           f"paid)")
    with factory.begin() as db:
        account = db.get(Account, account_id) if isinstance(account_id, int) else None
        if account is None:
            raise UnknownAccount(account_id)
        debt = owed(db, account)
        if amount > debt.amount:
            raise BillingError(f"debt payment of account {account_id}: "
                               f"{Money(amount, account.currency)} is more than the {debt} "
                               f"owed")
        db.add(LedgerEntry(account_id=account_id, session_id=None, kind="debt",
                           amount=-amount, currency=account.currency, at=now,
                           note=note.strip()))
        return Money(debt.amount - amount, account.currency)


def open_dispute(factory: sessionmaker, account_id: int, session_id: str | None, note: str,
                 now: dt.datetime) -> int:
    """A customer contests a session's charge; the dispute counts against the score while
    open (and after, if rejected). Returns its id."""
    if not isinstance(note, str) or not note.strip():
        raise BillingError(f"dispute of account {account_id}: give a note (what is contested)")
    with factory.begin() as db:
        if not isinstance(account_id, int) or db.get(Account, account_id) is None:
            raise UnknownAccount(account_id)
        if session_id is not None:
            sess = db.get(CabinetSession, session_id)
            if sess is None or sess.account_id != account_id:
                raise BillingError(f"dispute of account {account_id}: session {session_id!r} "
                                   f"is not one of this account's sessions")
        dispute = Dispute(account_id=account_id, session_id=session_id, status="open",
                          note=note.strip(), opened_at=now)
        db.add(dispute)
        db.flush()
        return dispute.id


def decide_dispute(factory: sessionmaker, dispute_id: int, upheld: bool) -> None:
    """An operator's decision: upheld (the customer was right; no penalty) or rejected."""
    with factory.begin() as db:
        dispute = db.get(Dispute, dispute_id) if isinstance(dispute_id, int) else None
        if dispute is None:
            raise BillingError(f"dispute {dispute_id!r}: no such dispute")
        if dispute.status != "open":
            raise BillingError(f"dispute {dispute_id}: already {dispute.status}")
        dispute.status = "upheld" if upheld else "rejected"
