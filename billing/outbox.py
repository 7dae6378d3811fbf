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
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.outbox_models import PaymentOutbox

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
