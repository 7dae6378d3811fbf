"""The receipt of a session: a frozen value built from the database, and its text rendering.

`Billing.receipt(session_id)` builds one; the kiosk shows `render_text()` and the controller
stores it with the session bundle. It carries what happened to the money, not just the basket:
charged, nothing taken, pending (and why), refunds, and any amount left owing; after an
operator's correction, the corrected basket and its reason. Billing stores each version of the
text (`Billing.stored_receipts`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import Account, CabinetSession, LedgerEntry
from billing.money import Money
from billing.outbox_models import Correction

_OUTCOME_TEXT = {
    "charged": "Charged",
    "nothing_taken": "Nothing taken - no charge, the hold is released",
    "denied": "Denied - the door was not opened",
    "pending": "Payment pending",
    "void": "Void - no charge, the hold is released",
    None: "Open - not settled yet",
}
WIDTH = 44


@dataclasses.dataclass(frozen=True)
class ReceiptLine:
    sku: str
    name: str
    qty: int
    unit_price: Money
    amount: Money


@dataclasses.dataclass(frozen=True)
class Receipt:
    cabinet_id: str
    session_id: str
    account_name: str | None
    opened_at: dt.datetime
    closed_at: dt.datetime | None
    lines: tuple[ReceiptLine, ...]
    total: Money
    outcome: str | None          # charged|nothing_taken|denied|pending|void, None while open
    outcome_reason: str | None
    charged: Money               # captured from the card
    refunded: Money
    owed: Money                  # left as debt on the account for this session
    flags: tuple[str, ...]
    corrected: str | None = None  # the reason of the operator's latest correction, if any

    @property
    def at(self) -> dt.datetime:
        return self.closed_at or self.opened_at

    def render_text(self) -> str:
        rule = "-" * WIDTH
        out = [f"Cabinet   {self.cabinet_id}",
               f"Session   {self.session_id}",
               f"Customer  {self.account_name or '-'}",
               f"Time      {self.at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
               rule]
        if self.corrected:
            out.append(f"Corrected basket ({self.corrected}):")
        if not self.lines:
            out.append("  (no items)")
        for line in self.lines:
            out.append(f"  {line.qty} x {line.name} @ {line.unit_price} = {line.amount}")
        out += [rule, f"Total     {self.total}"]
        outcome = _OUTCOME_TEXT.get(self.outcome, self.outcome or "")
        if self.outcome == "charged":
            outcome = f"Charged {self.charged}"
        if self.outcome_reason and self.outcome in ("pending", "denied", "void"):
            outcome = f"{outcome}: {self.outcome_reason}"
        out.append(f"Outcome   {outcome}")
        if self.owed.amount:
            out.append(f"Owed      {self.owed} (settle it before the next visit)")
        if self.refunded.amount:
            out.append(f"Refunded  {self.refunded}")
        if self.flags:
            out.append(f"Flags     {', '.join(self.flags)}")
        return "\n".join(out) + "\n"


def build_receipt(db: Session, sess: CabinetSession) -> Receipt:
    """The receipt of `sess` as the database has it now (money amounts from the ledger)."""
    account = db.get(Account, sess.account_id) if sess.account_id else None
    cur = sess.currency

    def ledger_sum(kind: str) -> Money:
        total = db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                          .where(LedgerEntry.session_id == sess.id, LedgerEntry.kind == kind))
        return Money(int(total or 0), cur)

    correction = db.scalars(select(Correction).where(Correction.session_id == sess.id)
                            .order_by(Correction.number.desc()).limit(1)).first()
    if correction is not None:  # the operator's basket replaces the reconciled one
        lines = tuple(ReceiptLine(sku, name, qty, Money(price, cur), Money(qty * price, cur))
                      for sku, name, qty, price in correction.lines)
        total = Money(correction.new_total, cur)
    else:
        lines = tuple(ReceiptLine(x.sku, x.name, x.qty, Money(x.unit_price, cur),
                                  Money(x.amount, cur)) for x in sess.lines)
        total = Money(sess.total or 0, cur)
    return Receipt(
        cabinet_id=sess.cabinet_id, session_id=sess.id,
        account_name=account.name if account else None,
        opened_at=sess.opened_at, closed_at=sess.closed_at, lines=lines, total=total,
        outcome=sess.outcome, outcome_reason=sess.outcome_reason, charged=ledger_sum("capture"),
        refunded=ledger_sum("refund"), owed=ledger_sum("debt"), flags=tuple(sess.flags or ()),
        corrected=correction.reason if correction is not None else None)
