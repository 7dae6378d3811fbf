"""The payment outbox: gateway calls that must happen exactly once, whatever goes down.

Billing never calls the gateway for a capture, a second charge, a void or a refund without
first committing (in the same transaction as the decision) a `PaymentOutbox` row next to the
row that holds the call's idempotency key. `Billing.drain_outbox()` then makes the calls:

- in order (row id), and a session's later step never runs before its earlier one is done
  (a refund waits for its capture);
- each answer is recorded with the row marked done in the same transaction; a final refusal
  (declined, refused by the gateway) is an answer too, recorded as debt or failure;
- a gateway that does not answer (GatewayUnavailable, after the client's own quick retries)
  leaves the row pending with `attempts + 1` and `next_attempt_at = now + outbox_backoff(...)`,
  and ends the pass: there is no point knocking on a closed door once per row;
- exactly-once effects: a repeated call (a crash after the gateway acted but before the answer
  was recorded, two processes draining at once) carries the same key, and the gateway answers
  with what it did the first time.

The back-off is a pure function (the randomness passed in), the time comes from Billing's
clock; `drain_until_done()` takes a `sleep` so tests and the crash bench drive the waits.

`OutboxSteps` is the half of `Billing` (billing/service.py) that drains the outbox and makes
each step's call: capture, second payment ("charge"), void, refund, and the clean-up of a hold
that never got its answer. service.py decides and queues; this module sends and records.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Callable

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from billing.gateway import GatewayClient, GatewayError, GatewayUnavailable, PaymentDeclined
from billing.models import Account, CabinetSession, Charge, Hold, Refund
from billing.money import Money
from billing.outbox_models import PaymentOutbox
from billing.records import RefundResult, Retried

UNAVAILABLE_TEXT = "The payment service is not answering; please try again in a moment."
_RETRIED_AS = {"capture": "settle", "charge": "settle", "void": "settle",
               "hold_cleanup": "hold_cleanup", "refund": "refund"}

INITIAL_OUTBOX_BACKOFF_S = 1.0
MAX_OUTBOX_BACKOFF_S = 300.0


def outbox_backoff(attempts: int, jitter: float) -> float:
    """Seconds before retrying a step that has failed `attempts` times (>= 1): 1, 2, 4, ...
    capped at 5 minutes, each times (0.5 + 0.5 * jitter) with `jitter` in [0, 1]."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"outbox backoff: attempts {attempts!r} must be an integer >= 1")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"outbox backoff: jitter {jitter!r} must be in [0, 1]")
    base = min(INITIAL_OUTBOX_BACKOFF_S * 2 ** min(attempts - 1, 20), MAX_OUTBOX_BACKOFF_S)
    return base * (0.5 + 0.5 * jitter)


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one outbox step came to: done (an answer was recorded) or not yet."""

    session_id: str
    step: str
    done: bool
    result: str          # the session's outcome, the hold's or the refund's status
    error: str = ""


@dataclasses.dataclass(frozen=True)
class OutboxReport:
    steps: tuple[StepResult, ...]
    pending: int                              # rows still to do after this pass
    next_attempt_at: dt.datetime | None       # when the earliest of them is due

    @property
    def done(self) -> int:
        return sum(1 for s in self.steps if s.done)


def enqueue(db: Session, session_id: str, step: str, key: str, now: dt.datetime,
            ref_id: int | None = None) -> None:
    """Add a step unless one with this key is already there (calling twice is harmless)."""
    if db.scalar(select(PaymentOutbox.id).where(PaymentOutbox.idempotency_key == key)) is None:
        db.add(PaymentOutbox(session_id=session_id, step=step, ref_id=ref_id,
                             idempotency_key=key, next_attempt_at=now, created_at=now))


def pending_rows(db: Session, session_id: str | None = None) -> list[PaymentOutbox]:
    query = select(PaymentOutbox).where(PaymentOutbox.done_at.is_(None)) \
        .order_by(PaymentOutbox.id)
    if session_id is not None:
        query = query.where(PaymentOutbox.session_id == session_id)
    return list(db.scalars(query))


def drain_until_done(drain: Callable[[], OutboxReport], now: Callable[[], dt.datetime],
                     sleep: Callable[[float], None], *, max_passes: int = 100) -> OutboxReport:
    """Drain, wait until the next row is due, drain again, until nothing is pending or
    `max_passes` passes were made (then the last report says what is left)."""
    report = drain()
    for _ in range(max_passes - 1):
        if report.pending == 0 or report.next_attempt_at is None:
            break
        sleep(max(0.0, (report.next_attempt_at - now()).total_seconds()))
        report = drain()
    return report


class OutboxSteps:
    """Billing's outbox half: draining the outbox, and each step's gateway call and record.

    A mixin of `billing.service.Billing`, which provides the database, the gateway client, the
    clock and the ledger helpers named below."""

    _sessions: sessionmaker
    _gateway: GatewayClient
    _clock: Callable[[], Any]
    _outbox_jitter: Callable[[], float]
    _ledger: Callable[..., None]
    _close: Callable[..., None]
    _token: Callable[[Account], str | None]
    _request_void: Callable[[Session, Hold], None]
    _store_receipt: Callable[[str], None]

    def drain_outbox(self, *, force: bool = False) -> OutboxReport:
        """Make every due gateway call of the outbox, in order (billing/outbox.py).

        The controller calls it after each session and on a timer, `cabinet recover` once with
        `force=True` (every pending row now, whatever its back-off). A gateway that does not
        answer ends the pass; the row waits for its back-off and the next call."""
        self._adopt_orphans()
        now = self._clock()
        with self._sessions() as db:
            rows = [(r.id, r.session_id, r.next_attempt_at) for r in pending_rows(db)]
        steps: list[StepResult] = []
        waiting: set[str] = set()
        for row_id, session_id, due in rows:
            if session_id in waiting:
                continue                      # an earlier step of this session is not done
            if not force and due > now:
                waiting.add(session_id)
                continue
            result = self._run_step(row_id)
            steps.append(result)
            if not result.done:
                break
        for session_id in dict.fromkeys(s.session_id for s in steps):
            self._store_receipt(session_id)
        with self._sessions() as db:
            left = pending_rows(db)
            next_at = min((r.next_attempt_at for r in left), default=None)
        return OutboxReport(tuple(steps), len(left), next_at)

    def drain_outbox_until_done(self, sleep: Callable[[float], None], *,
                                max_passes: int = 100) -> OutboxReport:
        """Drain, sleep until the next step is due (through `sleep`), drain again."""
        return drain_until_done(self.drain_outbox, self._clock, sleep, max_passes=max_passes)

    def retry_pending(self) -> list[Retried]:
        """Replay every gateway call still pending now (after a crash or an outage)."""
        return [Retried(s.session_id, _RETRIED_AS[s.step], s.result)
                for s in self.drain_outbox(force=True).steps]

    def _run_session(self, session_id: str) -> list[StepResult]:
        """Run a session's pending steps now, in order, stopping at one without an answer."""
        with self._sessions() as db:
            rows = [r.id for r in pending_rows(db, session_id)]
        results = []
        for row_id in rows:
            results.append(self._run_step(row_id))
            if not results[-1].done:
                break
        self._store_receipt(session_id)
        return results

    def _run_step(self, row_id: int) -> StepResult:
        with self._sessions() as db:
            row = db.get(PaymentOutbox, row_id)
            step, session_id, ref_id = row.step, row.session_id, row.ref_id
            if row.done_at is not None:
                return StepResult(session_id, step, True, "done")
        handler = {"capture": self._step_capture, "charge": self._step_charge,
                   "void": self._step_void, "refund": self._step_refund,
                   "hold_cleanup": self._step_hold_cleanup}[step]
        done, result, error = handler(session_id, ref_id)
        with self._sessions.begin() as db:
            row = db.get(PaymentOutbox, row_id)
            now = self._clock()
            if done:
                if row.done_at is None:
                    row.done_at = now
            else:
                row.attempts += 1
                row.next_attempt_at = now + dt.timedelta(
                    seconds=outbox_backoff(row.attempts, self._outbox_jitter()))
                row.last_error = error[:500]
        return StepResult(session_id, step, done, result, error)

    def _adopt_orphans(self) -> None:
        """Rows left "requested" without an outbox entry (a database from before the outbox)."""
        def unqueued(key_column: Any) -> Any:
            return ~exists().where(PaymentOutbox.idempotency_key == key_column)

        with self._sessions.begin() as db:
            now = self._clock()
            for charge in db.scalars(select(Charge).where(
                    Charge.status == "requested", unqueued(Charge.idempotency_key))):
                step = "capture" if charge.kind == "capture" else "charge"
                enqueue(db, charge.session_id, step, charge.idempotency_key, now,
                        None if step == "capture" else charge.id)
            for hold in db.scalars(select(Hold).where(Hold.status == "void_requested",
                                                      unqueued(Hold.void_key))):
                enqueue(db, hold.session_id, "void", hold.void_key, now)
            for hold in db.scalars(select(Hold).join(CabinetSession).where(
                    Hold.status == "requested", CabinetSession.outcome == "denied",
                    unqueued(Hold.idempotency_key))):
                enqueue(db, hold.session_id, "hold_cleanup", hold.idempotency_key, now)
            for row in db.scalars(select(Refund).where(Refund.status == "requested",
                                                       unqueued(Refund.idempotency_key))):
                enqueue(db, row.session_id, "refund", row.idempotency_key, now, row.id)

    def _step_capture(self, session_id: str, _ref: int | None) -> tuple[bool, str, str]:
        with self._sessions() as db:
            charge = _charge_of(db, session_id, "capture")
            if charge is None or charge.status != "requested":
                return True, self._summary(session_id), ""
            call = (charge.gateway_auth_id, charge.amount, charge.idempotency_key)
            currency = charge.currency
        try:
            answer = self._gateway.capture(*call, currency=currency)
        except GatewayUnavailable as e:
            self._mark_pending(session_id)
            return False, "pending", str(e)
        except GatewayError as e:
            self._record_capture(session_id, None, failure=str(e))
        else:
            self._record_capture(session_id, answer)
        return True, self._summary(session_id), ""

    def _step_charge(self, session_id: str, charge_id: int | None) -> tuple[bool, str, str]:
        with self._sessions() as db:
            charge = db.get(Charge, charge_id)
            if charge is None or charge.status != "requested":
                return True, self._summary(session_id), ""
            account = db.get(Account, db.get(CabinetSession, session_id).account_id)
            token = self._token(account)
            call = (charge.amount, charge.currency, token, charge.idempotency_key)
        if token is None:
            self._record_charge(charge_id, None, "no payment method on the account")
            return True, self._summary(session_id), ""
        try:
            answer = self._gateway.charge(*call)
        except GatewayUnavailable as e:
            self._mark_pending(session_id)
            return False, "pending", str(e)
        except PaymentDeclined as e:
            self._record_charge(charge_id, None, f"declined: {e.reason} ({e.code})")
        except GatewayError as e:
            self._record_charge(charge_id, None, str(e))
        else:
            self._record_charge(charge_id, answer, "")
        return True, self._summary(session_id), ""

    def _step_void(self, session_id: str, _ref: int | None) -> tuple[bool, str, str]:
        with self._sessions() as db:
            hold = _hold_of(db, session_id)
            if hold is None or hold.status != "void_requested":
                return True, hold.status if hold else "none", ""
            call = (hold.gateway_auth_id, hold.void_key)
        try:
            self._gateway.void(*call)
        except GatewayUnavailable as e:
            return False, "void_requested", str(e)
        except GatewayError as e:
            self._record_void(session_id, "void_failed", str(e))
        else:
            self._record_void(session_id, "voided", "")
        with self._sessions() as db:
            return True, _hold_of(db, session_id).status, ""

    def _step_refund(self, session_id: str, refund_id: int | None) -> tuple[bool, str, str]:
        result = self._drive_refund(refund_id)
        return result.status != "requested", result.status, result.message

    def _step_hold_cleanup(self, session_id: str, _ref: int | None) -> tuple[bool, str, str]:
        with self._sessions() as db:
            hold = _hold_of(db, session_id)
            if hold is None or hold.status != "requested":
                return True, hold.status if hold else "none", ""
        status = self._release_unknown_hold(session_id)
        return status != "requested", status, "" if status != "requested" else UNAVAILABLE_TEXT

    def _mark_pending(self, session_id: str) -> None:
        # Only an open session turns pending: one settled meanwhile keeps its outcome.
        with self._sessions.begin() as db:
            db.execute(update(CabinetSession)
                       .where(CabinetSession.id == session_id,
                              CabinetSession.outcome.is_(None))
                       .values(outcome="pending", outcome_reason="payment retry: the "
                               "payment service did not answer"))

    def _record_void(self, session_id: str, status: str, failure: str) -> None:
        with self._sessions.begin() as db:
            hold = _hold_of(db, session_id)
            if _claim(db, hold, "void_requested", status=status,
                      decline_reason=failure or None) and status == "voided":
                self._ledger(db, db.get(CabinetSession, session_id), "void", hold.amount)

    def _record_capture(self, session_id: str, answer: dict[str, Any] | None, *,
                        failure: str = "") -> None:
        with self._sessions.begin() as db:
            sess = db.get(CabinetSession, session_id)
            charge = _charge_of(db, session_id, "capture")
            extra = _charge_of(db, session_id, "extra")
            hold = _hold_of(db, session_id)
            if answer is None:
                if not _claim(db, charge, "requested", status="failed", failure=failure):
                    return  # recorded by an earlier or concurrent call
                if extra is not None:  # the whole basket becomes debt: no second payment
                    _claim(db, extra, "requested", status="failed",
                           failure="not attempted: the capture of the hold was refused")
                self._ledger(db, sess, "debt", sess.total, note=f"capture refused: {failure}")
                self._close(sess, "pending", "unpaid: the capture was refused; the amount is "
                                             "recorded as debt")
                return
            if not _claim(db, charge, "requested", status="captured",
                          gateway_capture_id=str(answer["id"])):
                return  # recorded by an earlier or concurrent call
            hold.status = "captured"
            self._ledger(db, sess, "capture", charge.amount)
            if extra is None or extra.status == "captured":
                self._close(sess, "charged", None)

    def _record_charge(self, charge_id: int, answer: dict[str, Any] | None,
                       failure: str) -> None:
        """The answer to a second payment: the part of a basket above the hold, or an
        operator's correction upwards."""
        with self._sessions.begin() as db:
            charge = db.get(Charge, charge_id)
            sess = db.get(CabinetSession, charge.session_id)
            what = ("the charge above the hold" if charge.kind == "extra"
                    else f"the {charge.kind.replace('-', ' ')} charge")
            if answer is None:
                if not _claim(db, charge, "requested", status="failed",
                              failure=failure[:500]):
                    return
                self._ledger(db, sess, "debt", charge.amount,
                             note=f"{what} was refused: {failure}"[:500])
                if charge.kind == "extra":
                    self._close(sess, "pending", f"unpaid: {what} "
                                f"({Money(charge.amount, charge.currency)}) was refused; the "
                                f"amount is recorded as debt")
                return
            if not _claim(db, charge, "requested", status="captured",
                          gateway_auth_id=str(answer["id"]),
                          gateway_capture_id=str(answer["id"])):
                return
            self._ledger(db, sess, "capture", charge.amount, note=what)
            capture = _charge_of(db, sess.id, "capture")
            if charge.kind == "extra" and capture is not None and capture.status == "captured":
                self._close(sess, "charged", None)

    def _drive_refund(self, refund_id: int) -> RefundResult:
        with self._sessions() as db:
            row = db.get(Refund, refund_id)
            if row.status != "requested":
                return RefundResult(row.session_id, Money(row.amount, row.currency),
                                    row.status, row.failure or "")
            intent_id = db.get(Charge, row.charge_id).gateway_capture_id
            call = (intent_id, row.amount, row.idempotency_key)
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
                    db, row, "requested", status=status, failure=message[:500] or None,
                    gateway_refund_id=str(answer["id"]) if answer else None) and answer:
                self._ledger(db, db.get(CabinetSession, row.session_id), "refund",
                             row.amount, note=row.reason)
            return RefundResult(row.session_id, Money(row.amount, row.currency), row.status,
                                message)

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
                self._request_void(db, hold)
                void_row = db.scalar(select(PaymentOutbox.id).where(
                    PaymentOutbox.idempotency_key == hold.void_key))
            if void_row is not None:
                self._run_step(void_row)
            with self._sessions() as db:
                return _hold_of(db, session_id).status
        with self._sessions.begin() as db:
            hold = _hold_of(db, session_id)
            _claim(db, hold, "requested", status=status)
            return hold.status

    def _summary(self, session_id: str) -> str:
        with self._sessions() as db:
            return db.get(CabinetSession, session_id).outcome or "open"


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


def _charge_of(db: Session, session_id: str, kind: str) -> Charge | None:
    return db.scalar(select(Charge).where(Charge.session_id == session_id, Charge.kind == kind))
