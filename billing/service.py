"""Billing: standing, holds, settlement (capture or void), refunds, corrections and receipts.

Every money step follows one pattern, so that no crash can charge a customer twice:
  1. in one transaction, check the request, write the row for the gateway call with its
     idempotency key (f"{session_id}:hold", ":capture", ":extra", ":void", ":refund:N",
     ":correction:N") as "requested", and its entry in the payment outbox (billing/outbox.py);
  2. call the gateway outside any transaction (no lock held across the network);
  3. in a second transaction, record the answer (status, gateway ids, ledger entries). The row
     is claimed with a conditional UPDATE (status still "requested"), so when two processes
     record the same answer exactly one writes the ledger entries.
A crash between 1 and 3 leaves a "requested" row and its outbox entry; `drain_outbox()` (the
controller after each session and on a timer, `cabinet recover` at start) replays the same key
and the gateway answers with the stored result instead of acting twice. A gateway that does not
answer leaves the entry to be retried with back-off until it answers.

Outcomes of a session: charged, nothing_taken, denied, void, or pending. Pending means money is
still owed: a payment got no answer yet (the outbox retries it with the same key) or the
gateway refused it (the amount is recorded as debt, which blocks the account). A basket above
the hold captures the whole hold and charges the rest as a second payment with its own key
(f"{session_id}:extra"); docs/payments.md says why. Corrections and refunds never give back
more than the session's payments took. Review flags are the controller's business: they are
stored and printed, and do not change the outcome.

One exception waits for an operator: a settlement with nothing to charge now but goods the
controller would not sell without a person's look (`settle(..., review=WHY)`: an unverified
customer took only age-restricted goods, docs/age.md) keeps its hold authorized and ends
"pending" with state "review". `correct(..., decides_review=True)` decides it exactly once:
the basket the operator confirms is captured from that hold (above it: a second payment, as
at settlement), an empty one voids the hold ("nothing_taken"). A claim on the state (a
conditional UPDATE, the first statement of the transaction) makes a second decision,
concurrent or later, a refusal that moves no money.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from billing import standing as standing_rules
from billing.base import utcnow
from billing.crypto import SecretBox, key_for_database
from billing.errors import (BillingError, NotHeld, RefundRefused, SettlementConflict,
                            UnknownAccount, UnknownSession)
from billing.gateway import GatewayClient, GatewayError, GatewayUnavailable, PaymentDeclined
from billing.models import (AGE_METHODS, TEMPLATE_SOURCES, Account, CabinetSession, Charge,
                            FaceTemplate, Hold, LedgerEntry, LineItem, Refund, TaxEntry)
from billing.money import Money, check_amount, check_currency
from billing.outbox import UNAVAILABLE_TEXT, OutboxSteps, _claim, _hold_of, enqueue
from billing.outbox_models import Correction, PaymentOutbox, StoredReceipt
from billing.receipt import Receipt, build_receipt
from billing.records import (HoldResult, Line, RefundResult, Standing, basket_text,
                             check_flags, check_lines, check_session_id)
from billing.tax import TaxError, TaxSetup, classify, reverse_split, split_basket



@dataclasses.dataclass(frozen=True)
class CorrectionResult:
    session_id: str
    number: int                   # 1 for the session's first correction
    old_total: Money
    new_total: Money
    action: str                   # refund | charge | none
    amount: Money                 # refunded or charged
    status: str                   # done | pending (outbox retries it) | owed (refused: debt)


class Billing(OutboxSteps):
    def __init__(self, session_factory: sessionmaker, gateway: GatewayClient | None, *,
                 hold_amount: int = 5000, currency: str = "EUR", cabinet_id: str = "cabinet-1",
                 clock: Callable[[], Any] = utcnow, secrets: SecretBox | None = None,
                 outbox_jitter: Callable[[], float] = random.random,
                 tax: TaxSetup | None = None, locale: str | None = None):
        # gateway None: a Billing for account work only (enrolment), which calls no gateway.
        # secrets: the key sealing templates and tokens (billing/crypto.py); None: the
        # database's own key file, found on first use (crypto.key_for_database).
        self.currency = check_currency(currency, "billing")
        self.hold_amount = check_amount(hold_amount, "billing hold_amount", allow_zero=False)
        self.cabinet_id = cabinet_id
        self._sessions = session_factory
        self._gateway = gateway
        self._clock = clock
        self._secrets = secrets
        self._outbox_jitter = outbox_jitter   # the outbox's back-off spread (billing/outbox.py)
        # tax: the jurisdiction's rules and each product's class (billing/tax.py); None: lines
        # are recorded untaxed (rate 0) and receipts show no tax section.
        if tax is not None and tax.rules.currency != self.currency:
            raise BillingError(f"billing: the tax rules of {tax.rules.jurisdiction} are for "
                               f"{tax.rules.currency}, this cabinet sells in {self.currency}")
        self.tax = tax
        self.locale = locale                  # receipts' money formatting (Babel); None: code

    @property
    def secrets(self) -> SecretBox:
        if self._secrets is None:
            url = self._sessions.kw["bind"].url.render_as_string(hide_password=False)
            self._secrets = key_for_database(url)
        return self._secrets

    def _token(self, account: Account) -> str | None:
        """The account's payment token, opened (None: no payment method)."""
        if account.payment_token is None:
            return None
        return self.secrets.open_text(account.payment_token, account_id=account.id,
                                      purpose="payment_token")

    # --- accounts ---------------------------------------------------------------------------
    def open_account(self, name: str, payment_token: str | None,
                     currency: str | None = None) -> Account:
        if not isinstance(name, str) or not name.strip():
            raise BillingError(f"open_account: the name {name!r} is empty")
        if payment_token is not None and (not isinstance(payment_token, str)
                                          or not payment_token.strip()):
            raise BillingError("open_account: the payment token must be a non-empty string "
                               "or None (no payment method yet)")
        currency = check_currency(currency or self.currency, f"open_account {name!r}")
        with self._sessions.begin() as db:
            account = Account(name=name.strip(), currency=currency, status="active",
                              created_at=self._clock())
            db.add(account)
            db.flush()                      # the id is part of the token's sealing
            if payment_token is not None:
                account.payment_token = self.secrets.seal_text(
                    payment_token, account_id=account.id, purpose="payment_token")
                account.payment_token_set_at = account.created_at
        return account

    def set_payment_token(self, account_id: int, payment_token: str | None) -> None:
        """A new payment method (sealed), or None to remove it; a new one clears the refusal
        a declined hold left on the old one."""
        if payment_token is not None and (not isinstance(payment_token, str)
                                          or not payment_token.strip()):
            raise BillingError(f"set_payment_token account {account_id}: the token must be "
                               f"a non-empty string or None")
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            account.payment_token = None if payment_token is None else self.secrets.seal_text(
                payment_token, account_id=account.id, purpose="payment_token")
            account.payment_token_set_at = self._clock()

    def close_account(self, account_id: int) -> None:
        """A closed account can no longer shop; its sessions and ledger stay."""
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            account.status, account.closed_at = "closed", self._clock()

    def block(self, account_id: int, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise BillingError(f"block account {account_id}: give a reason")
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            account.status, account.blocked_reason = "blocked", reason.strip()

    def unblock(self, account_id: int) -> None:
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            account.status, account.blocked_reason = "active", None

    def enrol_face(self, account_id: int, encoding: bytes, source: str) -> int:
        """Store a face encoding (never the photo) for an account; returns the template id."""
        if not isinstance(encoding, (bytes, bytearray)) or not encoding:
            raise BillingError(f"enrol_face account {account_id}: the encoding must be "
                               f"non-empty bytes (e.g. float32 array .tobytes())")
        if source not in TEMPLATE_SOURCES:
            raise BillingError(f"enrol_face account {account_id}: source {source!r} must be "
                               f"one of {', '.join(TEMPLATE_SOURCES)} (never a file name)")
        with self._sessions.begin() as db:
            self._account(db, account_id)
            sealed = self.secrets.seal(bytes(encoding), account_id=account_id,
                                       purpose="face_template")
            template = FaceTemplate(account_id=account_id, encoding=sealed,
                                    source=source, created_at=self._clock())
            db.add(template)
            db.flush()
            return template.id

    def face_templates(self) -> list[tuple[int, bytes]]:
        """(account id, encoding) of every enrolled face, for building a gallery."""
        with self._sessions() as db:
            rows = db.execute(select(FaceTemplate.account_id, FaceTemplate.encoding)
                              .order_by(FaceTemplate.id))
            return [(a, self.secrets.open(e, account_id=a, purpose="face_template"))
                    for a, e in rows]

    def verify_age(self, account_id: int, *, by: str, method: str) -> Account:
        """Record that operator `by` checked the account holder's age from an ID document
        (`method`, one of AGE_METHODS) now. Never self-declared: the controller and kiosk have
        no path to this; only an operator's command does."""
        if not isinstance(by, str) or not by.strip():
            raise BillingError(f"verify_age account {account_id}: name the operator who "
                               f"checked the ID (--by)")
        if method not in AGE_METHODS:
            raise BillingError(f"verify_age account {account_id}: method {method!r} must be "
                               f"one of {', '.join(AGE_METHODS)}")
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            account.age_verified_at = self._clock()
            account.age_verified_by, account.age_verification_method = by.strip(), method
        return account

    def age_verification(self, account_id: int) -> tuple[dt.datetime, str, str] | None:
        """(when, by whom, how) the account's age was verified, or None."""
        with self._sessions() as db:
            account = self._account(db, account_id)
            if account.age_verified_at is None:
                return None
            return (account.age_verified_at, account.age_verified_by,
                    account.age_verification_method)

    def has_hold(self, session_id: str) -> bool:
        """Whether a hold was ever asked for this session (whatever became of it)."""
        with self._sessions() as db:
            return _hold_of(db, session_id) is not None

    def standing(self, account_id: int) -> Standing:
        with self._sessions() as db:
            return self._standing(db, self._account(db, account_id))

    def admission(self, account_id: int) -> standing_rules.Admission:
        """How the door treats the account: face only, second factor, or refused (with the
        reason to show), and the hold to place (billing/standing.py, docs/customers.md)."""
        with self._sessions() as db:
            return self._admission(db, self._account(db, account_id))

    def _admission(self, db: Session, account: Account) -> standing_rules.Admission:
        return standing_rules.admission(db, account, Money(self.hold_amount, self.currency),
                                        self._clock())

    def _standing(self, db: Session, account: Account) -> Standing:
        admission = self._admission(db, account)
        return Standing(admission.allowed, admission.reason if not admission.allowed else "")

    def debt(self, account_id: int, *, db: Session | None = None) -> Money:
        """What the account owes (sum of its debt ledger entries)."""
        if db is None:
            with self._sessions() as own:
                return self.debt(account_id, db=own)
        account = self._account(db, account_id)
        owed = db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                         .where(LedgerEntry.account_id == account_id,
                                LedgerEntry.kind == "debt"))
        return Money(int(owed or 0), account.currency)

    # --- the hold before the door opens -----------------------------------------------------
    def place_hold(self, session_id: str, account_id: int, *,
                   cabinet_id: str | None = None) -> HoldResult:
        """Pre-authorise `hold_amount` for a new session; idempotent per session id."""
        check_session_id(session_id)
        with self._sessions.begin() as db:
            account = self._account(db, account_id)
            sess = db.get(CabinetSession, session_id)
            if sess is None:
                sess = CabinetSession(id=session_id, account_id=account_id, state="open",
                                      cabinet_id=cabinet_id or self.cabinet_id,
                                      currency=self.currency, opened_at=self._clock(),
                                      flags=[])
                db.add(sess)
            elif sess.account_id not in (None, account_id):
                raise BillingError(f"place_hold: session {session_id} belongs to account "
                                   f"{sess.account_id}, not {account_id}")
            sess.account_id = account_id
            hold = _hold_of(db, session_id)
            if hold is None:
                if sess.outcome is not None:
                    return HoldResult(False, session_id, sess.outcome_reason or sess.outcome,
                                      code=sess.outcome)
                admission = self._admission(db, account)
                standing = Standing(admission.allowed, admission.reason
                                    if not admission.allowed else "")
                if standing.ok and account.currency != self.currency:
                    standing = Standing(False, f"the account pays in {account.currency}; this "
                                               f"cabinet sells in {self.currency}")
                if not standing.ok:
                    self._close(sess, "denied", standing.reason)
                    return HoldResult(False, session_id, standing.reason, code="standing")
                hold = Hold(session_id=session_id, account_id=account_id,
                            amount=admission.hold.amount, currency=self.currency,
                            idempotency_key=f"{session_id}:hold", status="requested")
                db.add(hold)
            elif hold.status != "requested" or sess.outcome is not None:
                return _hold_result(hold, sess)
            call = (hold.amount, hold.currency, self._token(account), hold.idempotency_key)
        try:
            answer = self._gateway.authorize(*call)
        except PaymentDeclined as e:
            return self._record_hold(session_id, "declined", reason=e.reason, code=e.code)
        except GatewayUnavailable:
            return self._record_hold(session_id, "requested", reason=UNAVAILABLE_TEXT,
                                     code="unavailable")
        except GatewayError as e:
            return self._record_hold(session_id, "failed", reason=str(e), code="gateway")
        return self._record_hold(session_id, "authorized", auth_id=str(answer["id"]))

    def _record_hold(self, session_id: str, status: str, *, reason: str = "",
                     code: str | None = None, auth_id: str | None = None) -> HoldResult:
        with self._sessions.begin() as db:
            sess, hold = db.get(CabinetSession, session_id), _hold_of(db, session_id)
            if status == "authorized":
                if _claim(db, hold, "requested", status=status, gateway_auth_id=auth_id):
                    sess.state = "held"
                    self._ledger(db, sess, "hold", hold.amount)
            else:
                # A hold with no answer stays "requested": the outbox replays it to learn
                # whether it exists, and voids it. The session itself is over.
                _claim(db, hold, "requested", status=status, decline_reason=reason)
                if hold.status == "requested":
                    enqueue(db, session_id, "hold_cleanup", hold.idempotency_key, self._clock())
                if sess.outcome is None:
                    self._close(sess, "denied", _denial_text(reason, code))
            result = _hold_result(hold, sess)
            return result if result.ok or code is None else dataclasses.replace(result, code=code)

    # --- settlement after the door closes ---------------------------------------------------
    def settle(self, session_id: str, lines: Sequence[Line], *,
               flags: Iterable[str] = (), review: str | None = None) -> Receipt:
        """Charge the basket (or release the hold if it is empty); safe to call again.

        `review`: why an operator must look at the session before it is over (goods taken
        that were not charged, e.g. age-restricted ones). With an empty basket the hold is
        kept, not released, and the session waits "pending" in state "review" for `correct()`;
        with a basket, the basket is charged now and the operator's correction charges the
        rest as a payment of its own."""
        checked = check_lines(session_id, lines)
        flags = check_flags(session_id, flags)
        if review is not None and (not isinstance(review, str) or not review.strip()):
            raise BillingError(f"settle {session_id}: review {review!r} must say why the "
                               f"session waits for an operator, or be None")
        with self._sessions() as db:
            sess, hold = self._session(db, session_id), _hold_of(db, session_id)
            unanswered = hold is not None and hold.status == "requested" and sess.outcome is None
        if unanswered:  # a crash while placing the hold: replaying its key tells how it went
            self.place_hold(session_id, hold.account_id)
        try:
            self._record_basket(session_id, checked, flags, review)
        except IntegrityError:
            # A concurrent settle of the same session wrote its basket first; run the checks
            # again against what it wrote (same basket: carry on; another one: conflict).
            self._record_basket(session_id, checked, flags, review)
        self._run_session(session_id)
        return self.receipt(session_id)

    def _tax_split(self, session_id: str, lines: Sequence[Line], day: dt.date) -> Any:
        rules = self.tax.rules if self.tax else None
        class_of = self.tax.class_of if self.tax else {}
        try:
            items = classify(rules, class_of, [(x.sku, x.qty * x.unit_price) for x in lines],
                             day)
            return split_basket(items, rules.rounding if rules else "floor")
        except TaxError as e:
            raise BillingError(f"settle {session_id}: {e}") from e

    def _tax_entries(self, db: Session, sess: CabinetSession, kind: str, ref: int | None,
                     totals: Iterable[Any], sign: int = 1) -> None:
        for r in totals:
            if r.gross or r.tax:
                db.add(TaxEntry(session_id=sess.id, kind=kind, ref=ref, rate_bp=r.bp,
                                gross=sign * r.gross, net=sign * r.net, tax=sign * r.tax,
                                currency=sess.currency, at=self._clock()))

    def _tax_left(self, db: Session, session_id: str) -> dict[int, tuple[int, int]]:
        """Per rate, (gross, tax) the session has left sold: sales and corrections, less the
        refunds that have not failed."""
        failed = select(Refund.id).where(Refund.session_id == session_id,
                                         Refund.status == "failed")
        rows = db.execute(select(TaxEntry.rate_bp, func.sum(TaxEntry.gross),
                                 func.sum(TaxEntry.tax))
                          .where(TaxEntry.session_id == session_id)
                          .where((TaxEntry.kind != "refund") | TaxEntry.ref.not_in(failed))
                          .group_by(TaxEntry.rate_bp))
        return {bp: (int(g), int(t)) for bp, g, t in rows}

    def _record_basket(self, session_id: str, checked: list[Line], flags: list[str],
                       review: str | None = None) -> None:
        total = sum(line.qty * line.unit_price for line in checked)
        split = self._tax_split(session_id, checked, self._clock().date())
        with self._sessions.begin() as db:
            sess = self._session(db, session_id)
            hold = _hold_of(db, session_id)
            if sess.outcome in ("denied", "void"):
                raise NotHeld(f"settle {session_id}: the session ended {sess.outcome} "
                              f"({sess.outcome_reason}); nothing can be charged")
            if sess.total is not None:  # the basket is recorded: only a replay may follow
                recorded = [Line(x.sku, x.name, x.qty, x.unit_price) for x in sess.lines]
                if recorded != checked:
                    raise SettlementConflict(
                        f"settle {session_id}: this session was already settled with another "
                        f"basket ({basket_text(recorded)}); corrections go through "
                        f"Billing.correct")
            elif hold is None or hold.status != "authorized":
                raise NotHeld(f"settle {session_id}: no authorized hold (outcome "
                              f"{sess.outcome or 'open'}, hold "
                              f"{hold.status if hold else 'none'}); nothing can be charged")
            else:
                for i, (line, taxed) in enumerate(zip(checked, split.lines)):
                    db.add(LineItem(session_id=session_id, position=i, sku=line.sku,
                                    name=line.name, qty=line.qty, unit_price=line.unit_price,
                                    amount=line.qty * line.unit_price, currency=sess.currency,
                                    tax_class=taxed.tax_class, tax_rate_bp=taxed.bp,
                                    net=taxed.net, tax=taxed.tax))
                self._tax_entries(db, sess, "sale", None, split.rates)
                sess.total, sess.state = total, "settling"
                sess.flags = sorted(set(sess.flags or []) | set(flags))
                if total == 0 and review is not None:
                    # nothing to charge now, but an operator decides: the hold stays for it
                    sess.outcome, sess.state = "pending", "review"
                    sess.outcome_reason = f"review: {review.strip()}"[:500]
                elif total == 0:
                    self._close(sess, "nothing_taken", None)
                    self._request_void(db, hold)
                else:
                    self._request_capture(db, sess, hold, total)

    def _request_capture(self, db: Session, sess: CabinetSession, hold: Hold,
                         total: int) -> None:
        """The hold takes what it can; a basket above it is a second payment of its own
        (docs/payments.md), queued after the capture."""
        now = self._clock()
        db.add(Charge(session_id=sess.id, kind="capture", currency=sess.currency,
                      amount=min(total, hold.amount), status="requested",
                      idempotency_key=f"{sess.id}:capture",
                      gateway_auth_id=hold.gateway_auth_id))
        enqueue(db, sess.id, "capture", f"{sess.id}:capture", now)
        if total > hold.amount:
            self._add_charge(db, sess.id, "extra", total - hold.amount, sess.currency,
                             f"{sess.id}:extra", now)

    def _add_charge(self, db: Session, session_id: str, kind: str, amount: int, currency: str,
                    key: str, now: Any) -> None:
        charge = Charge(session_id=session_id, kind=kind, currency=currency, amount=amount,
                        status="requested", idempotency_key=key)
        db.add(charge)
        db.flush()
        enqueue(db, session_id, "charge", key, now, charge.id)

    def _request_void(self, db: Session, hold: Hold) -> None:
        if hold.status == "authorized":
            hold.status, hold.void_key = "void_requested", f"{hold.session_id}:void"
        if hold.status == "void_requested":
            enqueue(db, hold.session_id, "void", hold.void_key, self._clock())

    def void_session(self, session_id: str, reason: str) -> Receipt:
        """End a session that never reached the shelves (e.g. the door was never opened)."""
        with self._sessions.begin() as db:
            sess = self._session(db, session_id)
            if sess.outcome is not None or sess.total is not None:
                raise BillingError(f"void_session {session_id}: already "
                                   f"{sess.outcome or 'settling'}; nothing to void")
            hold = _hold_of(db, session_id)
            if hold is None or hold.status != "authorized":
                raise NotHeld(f"void_session {session_id}: no authorized hold to release")
            sess.total = 0
            self._close(sess, "void", reason)
            self._request_void(db, hold)
        self._run_session(session_id)
        return self.receipt(session_id)

    # --- refunds and corrections --------------------------------------------------------------
    def refund(self, session_id: str, amount: int, reason: str) -> RefundResult:
        """Give back `amount` of what the session's payments took (never more)."""
        amount = check_amount(amount, f"refund {session_id}", allow_zero=False)
        if not isinstance(reason, str) or not reason.strip():
            raise RefundRefused(f"refund {session_id}: give a reason")
        with self._sessions.begin() as db:
            sess = self._session(db, session_id)
            ids = self._plan_refund(db, sess, amount, reason.strip())
        self._run_session(session_id)
        return self._refund_result(session_id, ids)

    def _plan_refund(self, db: Session, sess: CabinetSession, amount: int,
                     reason: str, *, tax: bool = True) -> list[int]:
        """Refund rows (queued) taking `amount` from the session's captured payments in order."""
        charges = db.scalars(select(Charge).where(Charge.session_id == sess.id,
                                                  Charge.status == "captured")
                             .order_by(Charge.id)).all()
        if not charges:
            raise RefundRefused(f"refund {sess.id}: nothing was captured for this "
                                f"session (outcome {sess.outcome or 'open'})")
        refunds = db.scalars(select(Refund).where(Refund.session_id == sess.id)).all()
        left = {c.id: c.amount - sum(r.amount for r in refunds
                                     if r.charge_id == c.id and r.status != "failed")
                for c in charges}
        if amount > sum(left.values()):
            raise RefundRefused(f"refund {sess.id}: {Money(amount, sess.currency)} is "
                                f"more than the {Money(sum(left.values()), sess.currency)} "
                                f"left to refund")
        ids, number, remaining, now = [], len(refunds), amount, self._clock()
        for charge in charges:
            take = min(remaining, left[charge.id])
            if take <= 0:
                continue
            number += 1
            row = Refund(session_id=sess.id, charge_id=charge.id, amount=take,
                         currency=charge.currency, reason=reason, status="requested",
                         idempotency_key=f"{sess.id}:refund:{number}")
            db.add(row)
            db.flush()
            enqueue(db, sess.id, "refund", row.idempotency_key, now, row.id)
            if tax:   # the tax it takes back, per rate (a correction records its own)
                sold = {bp: g for bp, (g, _t) in self._tax_left(db, sess.id).items()}
                if sum(sold.values()) >= take:
                    back = reverse_split(sold, take, self._rounding(sess))
                    self._tax_entries(db, sess, "refund", row.id, back.values(), sign=-1)
                    db.flush()
            ids.append(row.id)
            remaining -= take
            if remaining == 0:
                break
        return ids

    def _refund_result(self, session_id: str, ids: list[int]) -> RefundResult:
        with self._sessions() as db:
            rows = [db.get(Refund, i) for i in ids]
            errors = {r.idempotency_key: r.last_error for r in db.scalars(
                select(PaymentOutbox).where(PaymentOutbox.session_id == session_id))}
        statuses = {r.status for r in rows}
        status = ("requested" if "requested" in statuses
                  else "failed" if "failed" in statuses else "refunded")
        if status == "requested":
            waiting = [r for r in rows if r.status == "requested"]
            message = (f"refund pending, retried later: "
                       f"{errors.get(waiting[0].idempotency_key) or UNAVAILABLE_TEXT}")
        else:
            message = "; ".join(r.failure for r in rows if r.failure)
        return RefundResult(session_id, Money(sum(r.amount for r in rows), rows[0].currency),
                            status, message)

    def correct(self, session_id: str, lines: Sequence[Line], reason: str, *,
                decides_review: bool = False) -> CorrectionResult:
        """An operator's corrected basket for a charged session: the difference to what the
        customer paid is refunded, or charged as a payment of its own.

        `decides_review`: the operator's decision on a session waiting in review
        (`settle(..., review=...)`), taken once: the basket is captured from the session's hold
        (action "charge"), an empty one voids the hold (action "void", outcome
        "nothing_taken"). Asked again, or for a session that does not wait, it is refused, so
        a second operator's decision (or the same one sent twice) never moves money; a session
        that waits is refused any other correction."""
        checked = check_lines(session_id, lines)
        if not isinstance(reason, str) or not reason.strip():
            raise BillingError(f"correct {session_id}: give a reason (it is on the receipt)")
        new_total = sum(line.qty * line.unit_price for line in checked)
        try:
            return self._correct(session_id, checked, new_total, reason.strip(),
                                 decides_review)
        except IntegrityError:   # the same correction number, written meanwhile by another
            raise SettlementConflict(f"correct {session_id}: another correction of this "
                                     f"session was recorded at the same time; reload the "
                                     f"session and decide again") from None

    def _correct(self, session_id: str, checked: list[Line], new_total: int,
                 reason: str, decides_review: bool) -> CorrectionResult:
        with self._sessions.begin() as db:
            # The claim first (no read before it, so SQLite takes the write lock with a fresh
            # view): of two operators deciding one review, one claims it, the other is refused.
            review = decides_review and db.execute(
                update(CabinetSession).where(CabinetSession.id == session_id,
                                             CabinetSession.state == "review")
                .values(state="resolving")).rowcount == 1
            sess = self._session(db, session_id)
            if decides_review and not review:
                raise BillingError(f"correct {session_id}: the session does not wait for a "
                                   f"review decision (it is {sess.outcome or 'open'}): it was "
                                   f"decided already or never waited; reload it, and correct "
                                   f"it without deciding if it is still wrong")
            if sess.state == "review" and not review:
                raise BillingError(f"correct {session_id}: the session waits for the "
                                   f"operator's review decision (the hold is kept for it); "
                                   f"decide it (decides_review, the console's review form)")
            split = self._tax_split(session_id, checked, sess.opened_at.date())
            hold = _hold_of(db, session_id)
            if review and (hold is None or hold.status != "authorized"):
                raise NotHeld(f"correct {session_id}: the session waits for review but its "
                              f"hold is {hold.status if hold else 'missing'}; nothing can be "
                              f"captured (charge it with a new session, or leave it)")
            if sess.outcome != "charged" and not review:
                raise BillingError(f"correct {session_id}: the session is "
                                   f"{sess.outcome or 'open'}; only a charged session can be "
                                   f"corrected, or one waiting for review (pending: drain the "
                                   f"outbox first; denied, void, nothing taken, a review "
                                   f"already decided: nothing was paid)")
            if self._session_sum(db, session_id, "debt") > 0:
                raise BillingError(f"correct {session_id}: the session has unpaid debt; settle "
                                   f"it before correcting the basket")
            if db.scalar(select(PaymentOutbox.id).where(PaymentOutbox.session_id == session_id,
                                                        PaymentOutbox.done_at.is_(None))):
                raise BillingError(f"correct {session_id}: a payment step of this session is "
                                   f"still pending; drain the outbox first")
            paid = (self._session_sum(db, session_id, "capture")
                    - self._session_sum(db, session_id, "refund"))
            previous = db.scalars(select(Correction).where(Correction.session_id == session_id)
                                  .order_by(Correction.number)).all()
            old_total = previous[-1].new_total if previous else (sess.total or 0)
            number = len(previous) + 1
            delta = new_total - paid
            action = "none" if delta == 0 else "refund" if delta < 0 else "charge"
            if review and delta == 0:
                action = "void"
            # the tax moves from what is left sold to the corrected basket, per rate
            left = self._tax_left(db, session_id)
            now_by_rate = {r.bp: r for r in split.rates}
            for bp in sorted(set(left) | set(now_by_rate)):
                g0, t0 = left.get(bp, (0, 0))
                r = now_by_rate.get(bp)
                g1, t1 = (r.gross, r.tax) if r else (0, 0)
                if g1 != g0 or t1 != t0:
                    db.add(TaxEntry(session_id=session_id, kind="correction", ref=number,
                                    rate_bp=bp, gross=g1 - g0, net=(g1 - t1) - (g0 - t0),
                                    tax=t1 - t0, currency=sess.currency, at=self._clock()))
            db.add(Correction(session_id=session_id, number=number,
                              lines=[[x.sku, x.name, x.qty, x.unit_price, t.tax_class, t.bp,
                                      t.net, t.tax] for x, t in zip(checked, split.lines)],
                              old_total=old_total, new_total=new_total,
                              currency=sess.currency, reason=reason.strip(), action=action,
                              at=self._clock()))
            if review and delta > 0:     # the operator's basket, from the hold kept for it
                sess.total, sess.state = new_total, "settling"
                sess.outcome = sess.outcome_reason = None
                self._request_capture(db, sess, hold, new_total)
            elif review:                 # nothing to sell after all: the hold is released
                self._close(sess, "nothing_taken", f"review: {reason}"[:500])
                self._request_void(db, hold)
            elif delta > 0:
                self._add_charge(db, session_id, f"correction-{number}", delta, sess.currency,
                                 f"{session_id}:correction:{number}", self._clock())
            elif delta < 0:
                self._plan_refund(db, sess, -delta, f"correction {number}: {reason.strip()}",
                                  tax=False)
            currency = sess.currency
        self._run_session(session_id)
        with self._sessions() as db:
            pending = db.scalar(select(PaymentOutbox.id).where(
                PaymentOutbox.session_id == session_id, PaymentOutbox.done_at.is_(None)))
            owed = self._session_sum(db, session_id, "debt")
        status = "pending" if pending else "owed" if owed else "done"
        return CorrectionResult(session_id, number, Money(old_total, currency),
                                Money(new_total, currency), action,
                                Money(abs(delta), currency), status)

    def _session_sum(self, db: Session, session_id: str, kind: str) -> int:
        return int(db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                             .where(LedgerEntry.session_id == session_id,
                                    LedgerEntry.kind == kind)) or 0)

    # --- receipts ---------------------------------------------------------------------------
    def receipt(self, session_id: str) -> Receipt:
        with self._sessions() as db:
            return build_receipt(db, self._session(db, session_id), **self._receipt_terms())

    def _receipt_terms(self) -> dict[str, Any]:
        return {"registration": self.tax.rules.registration if self.tax else None,
                "taxed": self.tax is not None, "locale": self.locale}

    def _rounding(self, sess: CabinetSession) -> str:
        return self.tax.rules.rounding if self.tax else "floor"

    def stored_receipts(self, session_id: str) -> list[str]:
        """Every version of the session's receipt text, oldest first, as it was stored."""
        with self._sessions() as db:
            self._session(db, session_id)
            return list(db.scalars(select(StoredReceipt.text)
                                   .where(StoredReceipt.session_id == session_id)
                                   .order_by(StoredReceipt.version)))

    def _store_receipt(self, session_id: str) -> None:
        """Store the receipt's text once the session has an outcome, when it changed."""
        try:
            self._store_receipt_once(session_id)
        except IntegrityError:  # another process stored this version first: compare again
            self._store_receipt_once(session_id)

    def _store_receipt_once(self, session_id: str) -> None:
        with self._sessions.begin() as db:
            sess = db.get(CabinetSession, session_id)
            if sess is None or sess.outcome is None:
                return
            text = build_receipt(db, sess, **self._receipt_terms()).render_text()
            last = db.scalars(select(StoredReceipt).where(StoredReceipt.session_id == session_id)
                              .order_by(StoredReceipt.version.desc()).limit(1)).first()
            if last is not None and last.text == text:
                return
            db.add(StoredReceipt(session_id=session_id, version=(last.version + 1) if last else 1,
                                 outcome=sess.outcome, text=text, at=self._clock()))

    # --- helpers ----------------------------------------------------------------------------
    def _account(self, db: Session, account_id: int) -> Account:
        account = db.get(Account, account_id) if isinstance(account_id, int) else None
        if account is None:
            raise UnknownAccount(account_id)
        return account

    def _session(self, db: Session, session_id: str) -> CabinetSession:
        sess = db.get(CabinetSession, session_id) if isinstance(session_id, str) else None
        if sess is None:
            raise UnknownSession(session_id)
        return sess

    def _close(self, sess: CabinetSession, outcome: str, reason: str | None) -> None:
        sess.outcome, sess.outcome_reason = outcome, reason
        sess.state, sess.closed_at = "closed", self._clock()

    def _ledger(self, db: Session, sess: CabinetSession, kind: str, amount: int,
                note: str | None = None) -> None:
        db.add(LedgerEntry(account_id=sess.account_id, session_id=sess.id, kind=kind,
                           amount=amount, currency=sess.currency, at=self._clock(), note=note))


def _hold_result(hold: Hold, sess: CabinetSession) -> HoldResult:
    # (A hold being voided or voided always belongs to a closed session that took nothing.)
    if hold.status in ("authorized", "captured") and \
            hold.gateway_auth_id and sess.outcome in (None, "pending", "charged"):
        return HoldResult(True, sess.id, "", Money(hold.amount, hold.currency),
                          hold.gateway_auth_id)
    return HoldResult(False, sess.id, sess.outcome_reason or hold.decline_reason or
                      f"hold {hold.status}", code=hold.status)


def _denial_text(reason: str, code: str | None) -> str:
    if code == "unavailable" or code == "gateway":
        return reason if code == "unavailable" else f"payment error: {reason}"
    return f"payment declined: {reason}"
