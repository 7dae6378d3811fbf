"""Billing: standing, holds, settlement (capture or void), refunds and receipts of sessions.

Every money step follows one pattern, so that no crash can charge a customer twice:
  1. in one transaction, check the request and write the row for the gateway call with its
     idempotency key (f"{session_id}:hold", ":capture", ":void", ":refund:N") as "requested";
  2. call the gateway outside any transaction (no lock held across the network);
  3. in a second transaction, record the answer (status, gateway ids, ledger entries). The row
     is claimed with a conditional UPDATE (status still "requested"), so when two processes
     record the same answer exactly one writes the ledger entries.
A crash between 1 and 3 leaves a "requested" row; calling the same method again, or
`retry_pending()` from a new process, replays the same key and the gateway answers with the
stored result instead of acting twice.

Outcomes of a session: charged, nothing_taken, denied, void, or pending. Pending means money is
still owed: the capture got no answer (retried later with the same key) or the gateway refused
the capture (the amount is recorded as debt). A basket above the hold captures the whole hold
and records the rest as debt on the account, which then is not in good standing until an
operator settles it (a later issue). Review flags are the controller's business: they are
stored and printed, and do not change the outcome.
"""
from __future__ import annotations

import dataclasses
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
from billing.models import (TEMPLATE_SOURCES, Account, CabinetSession, Charge, FaceTemplate,
                            Hold, LedgerEntry, LineItem, Refund)
from billing.money import Money, check_amount, check_currency
from billing.receipt import Receipt, build_receipt
from billing.records import (HoldResult, Line, RefundResult, Retried, Standing, basket_text,
                             check_flags, check_lines, check_session_id)

UNAVAILABLE_TEXT = "The payment service is not answering; please try again in a moment."


class Billing:
    def __init__(self, session_factory: sessionmaker, gateway: GatewayClient | None, *,
                 hold_amount: int = 5000, currency: str = "EUR", cabinet_id: str = "cabinet-1",
                 clock: Callable[[], Any] = utcnow, secrets: SecretBox | None = None):
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
                # A hold with no answer stays "requested": retry_pending() replays it to
                # learn whether it exists, and voids it. The session itself is over.
                _claim(db, hold, "requested", status=status, decline_reason=reason)
                if sess.outcome is None:
                    self._close(sess, "denied", _denial_text(reason, code))
            result = _hold_result(hold, sess)
            return result if result.ok or code is None else dataclasses.replace(result, code=code)

    # --- settlement after the door closes ---------------------------------------------------
    def settle(self, session_id: str, lines: Sequence[Line], *,
               flags: Iterable[str] = ()) -> Receipt:
        """Charge the basket (or release the hold if it is empty); safe to call again."""
        checked = check_lines(session_id, lines)
        flags = check_flags(session_id, flags)
        with self._sessions() as db:
            sess, hold = self._session(db, session_id), _hold_of(db, session_id)
            unanswered = hold is not None and hold.status == "requested" and sess.outcome is None
        if unanswered:  # a crash while placing the hold: replaying its key tells how it went
            self.place_hold(session_id, hold.account_id)
        try:
            self._record_basket(session_id, checked, flags)
        except IntegrityError:
            # A concurrent settle of the same session wrote its basket first; run the checks
            # again against what it wrote (same basket: carry on; another one: conflict).
            self._record_basket(session_id, checked, flags)
        self._drive(session_id)
        return self.receipt(session_id)

    def _record_basket(self, session_id: str, checked: list[Line], flags: list[str]) -> None:
        total = sum(line.qty * line.unit_price for line in checked)
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
                        f"basket ({basket_text(recorded)}); corrections go through refunds")
            elif hold is None or hold.status != "authorized":
                raise NotHeld(f"settle {session_id}: no authorized hold (outcome "
                              f"{sess.outcome or 'open'}, hold "
                              f"{hold.status if hold else 'none'}); nothing can be charged")
            else:
                for i, line in enumerate(checked):
                    db.add(LineItem(session_id=session_id, position=i, sku=line.sku,
                                    name=line.name, qty=line.qty, unit_price=line.unit_price,
                                    amount=line.qty * line.unit_price, currency=sess.currency))
                sess.total, sess.state = total, "settling"
                sess.flags = sorted(set(sess.flags or []) | set(flags))
                if total == 0:
                    self._close(sess, "nothing_taken", None)
                    _request_void(hold)
                else:
                    db.add(Charge(session_id=session_id, kind="capture", currency=sess.currency,
                                  amount=min(total, hold.amount), status="requested",
                                  idempotency_key=f"{session_id}:capture",
                                  gateway_auth_id=hold.gateway_auth_id))

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
            _request_void(hold)
        self._drive(session_id)
        return self.receipt(session_id)

    def _drive(self, session_id: str) -> None:
        """Make the gateway calls a session's "requested" rows ask for, and record answers."""
        with self._sessions() as db:
            hold = _hold_of(db, session_id)
            charge = db.scalar(select(Charge).where(Charge.session_id == session_id,
                                                    Charge.kind == "capture"))
            void = (hold.gateway_auth_id, hold.void_key) if hold.status == "void_requested" \
                else None
            capture = (charge.gateway_auth_id, charge.amount, charge.idempotency_key) \
                if charge is not None and charge.status == "requested" else None
        if void is not None:
            try:
                self._gateway.void(*void)
            except GatewayUnavailable:
                pass  # stays void_requested; retry_pending() releases it later
            except GatewayError as e:
                self._record_void(session_id, "void_failed", str(e))
            else:
                self._record_void(session_id, "voided", "")
        if capture is not None:
            try:
                answer = self._gateway.capture(*capture)
            except GatewayUnavailable as e:
                self._record_capture(session_id, None, unavailable=str(e))
            except GatewayError as e:
                self._record_capture(session_id, None, failure=str(e))
            else:
                self._record_capture(session_id, answer)

    def _record_void(self, session_id: str, status: str, failure: str) -> None:
        with self._sessions.begin() as db:
            hold = _hold_of(db, session_id)
            if _claim(db, hold, "void_requested", status=status,
                      decline_reason=failure or None) and status == "voided":
                self._ledger(db, db.get(CabinetSession, session_id), "void", hold.amount)

    def _record_capture(self, session_id: str, answer: dict[str, Any] | None, *,
                        unavailable: str = "", failure: str = "") -> None:
        with self._sessions.begin() as db:
            sess = db.get(CabinetSession, session_id)
            charge = db.scalar(select(Charge).where(Charge.session_id == session_id,
                                                    Charge.kind == "capture"))
            if unavailable:
                # Only an open session turns pending: one settled meanwhile keeps its outcome.
                db.execute(update(CabinetSession)
                           .where(CabinetSession.id == session_id,
                                  CabinetSession.outcome.is_(None))
                           .values(outcome="pending", outcome_reason="payment retry: the "
                                   "payment service did not answer"))
                return
            hold = _hold_of(db, session_id)
            if answer is None:
                if not _claim(db, charge, "requested", status="failed", failure=failure):
                    return  # recorded by an earlier or concurrent call
                self._ledger(db, sess, "debt", sess.total, note=f"capture refused: {failure}")
                self._close(sess, "pending", "unpaid: the capture was refused; the amount is "
                                             "recorded as debt")
                return
            if not _claim(db, charge, "requested", status="captured",
                          gateway_capture_id=str(answer["id"])):
                return  # recorded by an earlier or concurrent call
            hold.status = "captured"
            self._ledger(db, sess, "capture", charge.amount)
            if sess.total > charge.amount:
                self._ledger(db, sess, "debt", sess.total - charge.amount,
                             note="basket above the hold")
            self._close(sess, "charged", None)

    # --- refunds ----------------------------------------------------------------------------
    def refund(self, session_id: str, amount: int, reason: str) -> RefundResult:
        amount = check_amount(amount, f"refund {session_id}", allow_zero=False)
        if not isinstance(reason, str) or not reason.strip():
            raise RefundRefused(f"refund {session_id}: give a reason")
        with self._sessions.begin() as db:
            sess = self._session(db, session_id)
            charge = db.scalar(select(Charge).where(Charge.session_id == session_id,
                                                    Charge.kind == "capture"))
            if charge is None or charge.status != "captured":
                raise RefundRefused(f"refund {session_id}: nothing was captured for this "
                                    f"session (outcome {sess.outcome or 'open'})")
            refunds = db.scalars(select(Refund).where(Refund.session_id == session_id)).all()
            left = charge.amount - sum(r.amount for r in refunds if r.status != "failed")
            if amount > left:
                raise RefundRefused(f"refund {session_id}: {Money(amount, charge.currency)} is "
                                    f"more than the {Money(left, charge.currency)} left to "
                                    f"refund")
            row = Refund(session_id=session_id, charge_id=charge.id, amount=amount,
                         currency=charge.currency, reason=reason.strip(), status="requested",
                         idempotency_key=f"{session_id}:refund:{len(refunds) + 1}")
            db.add(row)
            db.flush()
            refund_id = row.id
        return self._drive_refund(refund_id)

    def _drive_refund(self, refund_id: int) -> RefundResult:
        with self._sessions() as db:
            row = db.get(Refund, refund_id)
            capture_id = db.get(Charge, row.charge_id).gateway_capture_id
            call = (capture_id, row.amount, row.idempotency_key)
        status, message, answer = "refunded", "", None
        try:
            answer = self._gateway.refund(*call)
        except GatewayUnavailable as e:
            status, message = "requested", f"refund pending, retried later: {e}"
        except GatewayError as e:
            status, message = "failed", str(e)
        with self._sessions.begin() as db:
            row = db.get(Refund, refund_id)
            if status != "requested" and _claim(
                    db, row, "requested", status=status, failure=message or None,
                    gateway_refund_id=str(answer["id"]) if answer else None) and answer:
                self._ledger(db, db.get(CabinetSession, row.session_id), "refund",
                             row.amount, note=row.reason)
            return RefundResult(row.session_id, Money(row.amount, row.currency), row.status,
                                message)

    # --- recovery ---------------------------------------------------------------------------
    def retry_pending(self) -> list[Retried]:
        """Replay every gateway call left "requested" (after a crash or an outage)."""
        done: list[Retried] = []
        with self._sessions() as db:
            captures = db.scalars(select(Charge.session_id)
                                  .where(Charge.status == "requested")).all()
            voids = db.scalars(select(Hold.session_id)
                               .where(Hold.status == "void_requested")).all()
            unknown = db.scalars(select(Hold.session_id).join(CabinetSession)
                                 .where(Hold.status == "requested",
                                        CabinetSession.outcome == "denied")).all()
            refunds = db.scalars(select(Refund.id).where(Refund.status == "requested")).all()
        for session_id in dict.fromkeys([*captures, *voids]):
            self._drive(session_id)
            done.append(Retried(session_id, "settle", self._summary(session_id)))
        for session_id in unknown:
            status = self._release_unknown_hold(session_id)
            done.append(Retried(session_id, "hold_cleanup", status))
        for refund_id in refunds:
            result = self._drive_refund(refund_id)
            done.append(Retried(result.session_id, "refund", result.status))
        return done

    def _release_unknown_hold(self, session_id: str) -> str:
        """A hold that never got its answer: replay it to learn its fate, void it if it stands."""
        with self._sessions() as db:
            hold = _hold_of(db, session_id)
            token = self._token(db.get(Account, hold.account_id))
            call = (hold.amount, hold.currency, token, hold.idempotency_key)
        try:
            answer = self._gateway.authorize(*call)
        except PaymentDeclined:
            status = "declined"
        except GatewayUnavailable:
            return "requested"
        except GatewayError:
            status = "failed"
        else:
            with self._sessions.begin() as db:
                hold = _hold_of(db, session_id)
                if _claim(db, hold, "requested", status="void_requested",
                          gateway_auth_id=str(answer["id"]), void_key=f"{session_id}:void"):
                    self._ledger(db, db.get(CabinetSession, session_id), "hold", hold.amount)
            self._drive(session_id)
            with self._sessions() as db:
                return _hold_of(db, session_id).status
        with self._sessions.begin() as db:
            hold = _hold_of(db, session_id)
            _claim(db, hold, "requested", status=status)
            return hold.status

    def _summary(self, session_id: str) -> str:
        with self._sessions() as db:
            return db.get(CabinetSession, session_id).outcome or "open"

    # --- receipts ---------------------------------------------------------------------------
    def receipt(self, session_id: str) -> Receipt:
        with self._sessions() as db:
            return build_receipt(db, self._session(db, session_id))

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


def _claim(db: Session, row: Hold | Charge | Refund, from_status: str, **values: Any) -> bool:
    """Move `row` from `from_status` to `values` in one conditional UPDATE; True if this call
    did it. Two processes recording the same answer race here, and exactly one wins, so the
    ledger entries that follow a successful claim are written once. `row` is reloaded."""
    table = type(row)
    result = db.execute(update(table).where(table.id == row.id, table.status == from_status)
                        .values(**values).execution_options(synchronize_session=False))
    db.expire(row)
    return result.rowcount == 1


def _hold_of(db: Session, session_id: str) -> Hold | None:
    return db.scalar(select(Hold).where(Hold.session_id == session_id))


def _request_void(hold: Hold) -> None:
    if hold.status == "authorized":
        hold.status, hold.void_key = "void_requested", f"{hold.session_id}:void"


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
