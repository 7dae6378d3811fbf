"""The cabinet's durable fleet outbox: facts collected from the tables that already hold them.

Every fact the fleet wants is already written durably, in its own transaction, by the part
that owns it: a session's outcome in `cabinet_sessions` (billing), each receipt version in
`receipts` (billing), each stock change in `inventory_moves` (inventory), each alarm raised and
cleared in `cabinet_alarms` (the runner). So instead of a hook in each of those writers, the
outbox *derives* its rows from them (`collect()`), in one transaction per pass:

- append-only tables (receipts, inventory_moves) by a cursor: rows with an id above the
  highest `source_id` already collected for that kind;
- tables whose rows change (a session gets its outcome, an alarm its clear) by an anti-join
  on the outbox's unique (kind, ref): the outcomes and clears not collected yet.

A fact is therefore never lost while the cabinet is offline or stopped (it sits in its own
table until the next pass), and never collected twice (the unique key). Health is the one fact
nobody else stores: `add_health` writes it straight here, keyed by its second.

Each row carries the message id (cabinet/fleet/messages.py) built from the fact's natural
key, and `seq`, its place in the cabinet's stream; the agent publishes unsent rows in seq order
and marks a row sent only when the broker acknowledged it.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import exists, func, inspect, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from billing.models import CabinetSession
from billing.outbox_models import StoredReceipt
from billing.receipt import build_receipt
from cabinet.fleet import messages as m
from cabinet.fleet.tables import OutboxRow
from cabinet.inventory import InventoryMove
from cabinet.journal import AlarmRow

# a session closed this long before the latest one collected is still looked for (a clock
# stepped back, a slow writer); older ones were seen by the process's first, full pass
SESSION_LOOKBACK = dt.timedelta(days=1)
# the order facts of one pass take in the stream when they happened at the same instant
_KIND_ORDER = {kind: i for i, kind in enumerate(("inventory", "session", "receipt", "alarm",
                                                 "health"))}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else m.format_time(value)


class FleetOutbox:
    """collect / add_health / pending / mark_sent over the cabinet's database."""

    def __init__(self, db: sessionmaker, cabinet_id: str,
                 now: Callable[[], dt.datetime],
                 par: Callable[[], Mapping[str, int]] | None = None):
        self._db = db
        # slot -> par of the planogram in force, read at each pass that has moves: each
        # inventory message carries its slot's `par`, so the back office's "below par" follows
        # the moves (and a planogram change) without waiting for a health report
        self._par = par
        self.cabinet_id = m.check_name(cabinet_id, "fleet outbox", "cabinet_id")
        self._now = now
        self._moves_table: bool | None = None   # inventory_moves exists (Inventory makes it)
        # the latest closed_at seen: later passes look at sessions closed since it (less
        # SESSION_LOOKBACK), the first pass of a process at all of them
        self._closed_watermark: dt.datetime | None = None

    # --- collecting ----------------------------------------------------------------------
    def collect(self) -> int:
        """Turn every fact not collected yet into an outbox row; how many were added."""
        with self._db.begin() as s:
            facts = (self._sessions(s) + self._receipts(s) + self._moves(s)
                     + self._alarms(s))
            # stable: within one instant and kind, each query's own order (an alarm's raise
            # before its clear, moves and receipts by id)
            facts.sort(key=lambda f: (f[2], _KIND_ORDER[f[0]]))
            now = self._now()
            for kind, ref, at, source_id, message_id, body in facts:
                s.add(OutboxRow(message_id=message_id, kind=kind, ref=ref, source_id=source_id,
                                at=at, body=json.dumps(body, sort_keys=True,
                                                       ensure_ascii=False), created_at=now))
        return len(facts)

    def _not_collected(self, kind: str, ref: Any):
        return ~exists().where(OutboxRow.kind == kind, OutboxRow.ref == ref)

    def _cursor(self, s: Session, kind: str) -> int:
        return s.scalar(select(func.coalesce(func.max(OutboxRow.source_id), 0))
                        .where(OutboxRow.kind == kind)) or 0

    def _sessions(self, s: Session) -> list[tuple]:
        query = select(CabinetSession).where(CabinetSession.outcome.is_not(None),
                                             self._not_collected("session", CabinetSession.id))
        if self._closed_watermark is not None:  # after the first, full pass: recent ones only
            query = query.where(or_(CabinetSession.closed_at.is_(None),
                                    CabinetSession.closed_at
                                    >= self._closed_watermark - SESSION_LOOKBACK))
        else:
            self._closed_watermark = s.scalar(select(func.max(CabinetSession.closed_at)))
        rows = s.scalars(query.order_by(CabinetSession.closed_at, CabinetSession.id))
        facts = []
        for r in rows:
            at = r.closed_at or r.opened_at
            if r.closed_at is not None and (self._closed_watermark is None
                                            or r.closed_at > self._closed_watermark):
                self._closed_watermark = r.closed_at
            facts.append(("session", r.id, at, None,
                          m.session_message_id(self.cabinet_id, r.id),
                          {"session_id": r.id, "outcome": r.outcome,
                           "reason": r.outcome_reason, "account_id": r.account_id,
                           "opened_at": _iso(r.opened_at), "closed_at": _iso(r.closed_at),
                           "total": r.total, "currency": r.currency,
                           "flags": list(r.flags or ())}))
        return facts

    def _receipts(self, s: Session) -> list[tuple]:
        rows = s.scalars(select(StoredReceipt)
                         .where(StoredReceipt.id > self._cursor(s, "receipt"))
                         .order_by(StoredReceipt.id))
        facts = []
        for r in rows:
            sess = s.get(CabinetSession, r.session_id)
            receipt = build_receipt(s, sess)
            ref = f"{r.session_id}.{r.version}"
            facts.append(("receipt", ref, r.at, r.id,
                          m.receipt_message_id(self.cabinet_id, r.session_id, r.version - 1),
                          {"session_id": r.session_id, "version": r.version,
                           "outcome": r.outcome, "total": receipt.total.amount,
                           "currency": receipt.total.currency,
                           "charged": receipt.charged.amount,
                           "refunded": receipt.refunded.amount, "owed": receipt.owed.amount,
                           "lines": [{"sku": x.sku, "name": x.name, "qty": x.qty,
                                      "unit_price": x.unit_price.amount,
                                      "amount": x.amount.amount} for x in receipt.lines],
                           "text": r.text}))
        return facts

    def _moves(self, s: Session) -> list[tuple]:
        if not self._moves_table:
            self._moves_table = inspect(s.connection()).has_table(
                InventoryMove.__tablename__)
            if not self._moves_table:
                return []
        rows = s.scalars(select(InventoryMove)
                         .where(InventoryMove.id > self._cursor(s, "inventory"))
                         .order_by(InventoryMove.id))
        rows = list(rows)
        pars = dict(self._par()) if rows and self._par is not None else {}
        facts = []
        for r in rows:
            body = {"move_id": r.id, "slot": r.slot_id, "sku": r.sku, "qty": r.qty,
                    "kind": r.kind, "ref": r.ref, "at": _iso(r.at)}
            if r.slot_id in pars:       # a slot the planogram no longer has: no par
                body["par"] = int(pars[r.slot_id])
            facts.append(("inventory", str(r.id), r.at, r.id,
                          m.inventory_message_id(self.cabinet_id, r.id), body))
        return facts

    def _alarms(self, s: Session) -> list[tuple]:
        facts = []
        for transition in m.ALARM_TRANSITIONS:
            ref = AlarmRow.id.cast(OutboxRow.ref.type) + f".{transition}"
            query = select(AlarmRow).where(self._not_collected("alarm", ref))
            if transition == "clear":
                query = query.where(AlarmRow.cleared_at.is_not(None))
            for r in s.scalars(query.order_by(AlarmRow.id)):
                at = r.raised_at if transition == "raise" else r.cleared_at
                facts.append(("alarm", f"{r.id}.{transition}", at, r.id,
                              m.alarm_message_id(self.cabinet_id, r.id, transition),
                              {"alarm_id": r.id, "alarm": r.kind, "transition": transition,
                               "detail": r.detail, "review": bool(r.review),
                               "raised_at": _iso(r.raised_at),
                               "cleared_at": _iso(r.cleared_at), "cleared_by": r.cleared_by}))
        return facts

    def add_health(self, report: dict[str, Any]) -> bool:
        """A health report now (its second is its key); False when this second has one."""
        at = self._now()
        message_id = m.health_message_id(self.cabinet_id, at)
        ref = message_id.rsplit("/", 1)[1]
        body = {**report, "in_service": bool(report.get("in_service", False)),
                "outbox_unsent": self.unsent_count()}
        with self._db.begin() as s:
            if s.scalar(select(OutboxRow.seq).where(OutboxRow.kind == "health",
                                                    OutboxRow.ref == ref)) is not None:
                return False
            s.add(OutboxRow(message_id=message_id, kind="health", ref=ref, source_id=None,
                            at=at, body=json.dumps(body, sort_keys=True, default=str),
                            created_at=at))
        return True

    # --- publishing ----------------------------------------------------------------------
    def pending(self, after_seq: int = 0, limit: int = 100) -> list[m.UpMessage]:
        """Unsent rows with a seq above `after_seq`, in seq order, as up messages."""
        with self._db() as s:
            rows = s.scalars(select(OutboxRow).where(OutboxRow.sent_at.is_(None),
                                                     OutboxRow.seq > after_seq)
                             .order_by(OutboxRow.seq).limit(limit))
            return [m.UpMessage(id=r.message_id, cabinet=self.cabinet_id, kind=r.kind,
                                seq=r.seq, at=r.at, body=json.loads(r.body)) for r in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        seqs = sorted(set(seqs))
        if not seqs:
            return
        with self._db.begin() as s:
            s.execute(update(OutboxRow).where(OutboxRow.seq.in_(seqs),
                                              OutboxRow.sent_at.is_(None))
                      .values(sent_at=self._now()))

    def send_again(self, from_seq: int, to_seq: int) -> int:
        """Mark the sent rows from_seq..to_seq unsent (a `resend` order: the broker acked them
        but delivered them to no one); the agent publishes them again, same ids and bytes.
        How many rows that was."""
        with self._db.begin() as s:
            return s.execute(update(OutboxRow).where(OutboxRow.seq >= from_seq,
                                                     OutboxRow.seq <= to_seq,
                                                     OutboxRow.sent_at.is_not(None))
                             .values(sent_at=None)).rowcount or 0

    def unsent_count(self) -> int:
        with self._db() as s:
            return s.scalar(select(func.count()).select_from(OutboxRow)
                            .where(OutboxRow.sent_at.is_(None))) or 0

    def rows(self) -> Sequence[OutboxRow]:
        """Every row in seq order (tests, `cabinet fleet` diagnostics)."""
        with self._db() as s:
            return list(s.scalars(select(OutboxRow).order_by(OutboxRow.seq)))
