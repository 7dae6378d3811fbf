"""The receipt of a session: a frozen value built from the database, and its text rendering.

`Billing.receipt(session_id)` builds one; the kiosk shows `render_text()` and the controller
stores it with the session bundle. It carries what happened to the money, not just the basket:
charged, nothing taken, pending (and why), refunds, and any amount left owing; after an
operator's correction, the corrected basket and its reason. Billing stores each version of the
text (`Billing.stored_receipts`).

Tax (billing/tax.py): with tax rules configured, each line carries its rate, and the receipt
shows per rate the gross, the net and the tax (rounded once per rate, from the tax entries the
ledger keeps), the tax refunded, and the seller's registration number. Money is written with
Babel in the customer's language (`locale`, e.g. "ja_JP", "de_DE"); without one, as "EUR 12.50".
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

from babel.core import Locale, UnknownLocaleError
from babel.numbers import format_currency

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.errors import BillingError
from billing.models import Account, CabinetSession, LedgerEntry, Refund, TaxEntry
from billing.money import Money
from billing.outbox_models import Correction
from billing.tax import RateTotal, rate_text

_OUTCOME_TEXT = {
    "charged": "Charged",
    "nothing_taken": "Nothing taken - no charge, the hold is released",
    "denied": "Denied - the door was not opened",
    "pending": "Payment pending",
    "void": "Void - no charge, the hold is released",
    None: "Open - not settled yet",
}
WIDTH = 44


def check_locale(locale: str, where: str = "locale") -> str:
    """`locale` if Babel knows it ("de_DE", "ja_JP", "en"), else a clear error."""
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError, TypeError) as e:
        raise BillingError(f"{where}: {locale!r} is not a locale Babel knows ({e}); use a "
                           f"language tag such as de_DE, ja_JP or en_GB") from None
    return locale


def money_text(money: Money, locale: str | None = None) -> str:
    """Money in the customer's language and currency (Babel); no locale: 'EUR 12.50'."""
    if locale is None:
        return money.format()
    value = Decimal(money.amount).scaleb(-money.exponent)
    return format_currency(value, money.currency, locale=locale)   # ISO minor-unit digits


@dataclasses.dataclass(frozen=True)
class ReceiptLine:
    sku: str
    name: str
    qty: int
    unit_price: Money
    amount: Money
    tax_rate_bp: int | None = None    # None: sold untaxed / before tax was kept


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
    taxes: tuple[RateTotal, ...] = ()   # per rate of the basket: gross, net, tax
    tax_refunded: Money | None = None
    registration: str | None = None
    locale: str | None = None

    def money(self, money: Money) -> str:
        return money_text(money, self.locale)

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
        m = self.money
        for line in self.lines:
            rate = f" ({rate_text(line.tax_rate_bp)})" if self.taxes and \
                line.tax_rate_bp is not None else ""
            out.append(f"  {line.qty} x {line.name} @ {m(line.unit_price)} = "
                       f"{m(line.amount)}{rate}")
        out += [rule, f"Total     {m(self.total)}"]
        cur = self.total.currency
        for r in self.taxes:
            out.append(f"  {r.label:>6} on {m(Money(r.gross, cur))}: net "
                       f"{m(Money(r.net, cur))}, tax {m(Money(r.tax, cur))}")
        if self.taxes:
            out.append(f"Tax       {m(Money(sum(r.tax for r in self.taxes), cur))} "
                       f"(included)")
        if self.registration:
            out.append(f"Tax reg.  {self.registration}")
        outcome = _OUTCOME_TEXT.get(self.outcome, self.outcome or "")
        if self.outcome == "charged":
            outcome = f"Charged {m(self.charged)}"
        if self.outcome_reason and self.outcome in ("pending", "denied", "void"):
            outcome = f"{outcome}: {self.outcome_reason}"
        out.append(f"Outcome   {outcome}")
        if self.owed.amount:
            out.append(f"Owed      {m(self.owed)} (settle it before the next visit)")
        if self.refunded.amount:
            tax = (f" (tax {m(self.tax_refunded)})" if self.taxes and self.tax_refunded
                   and self.tax_refunded.amount else "")
            out.append(f"Refunded  {m(self.refunded)}{tax}")
        if self.flags:
            out.append(f"Flags     {', '.join(self.flags)}")
        return "\n".join(out) + "\n"


def build_receipt(db: Session, sess: CabinetSession, *, registration: str | None = None,
                  taxed: bool = False, locale: str | None = None) -> Receipt:
    """The receipt of `sess` as the database has it now (money amounts from the ledger; the
    tax per rate from its tax entries when `taxed`)."""
    account = db.get(Account, sess.account_id) if sess.account_id else None
    cur = sess.currency

    def ledger_sum(kind: str) -> Money:
        total = db.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                          .where(LedgerEntry.session_id == sess.id, LedgerEntry.kind == kind))
        return Money(int(total or 0), cur)

    correction = db.scalars(select(Correction).where(Correction.session_id == sess.id)
                            .order_by(Correction.number.desc()).limit(1)).first()
    if correction is not None:  # the operator's basket replaces the reconciled one
        lines = tuple(ReceiptLine(x[0], x[1], x[2], Money(x[3], cur), Money(x[2] * x[3], cur),
                                  x[5] if len(x) > 5 else None)
                      for x in correction.lines)
        total = Money(correction.new_total, cur)
    else:
        lines = tuple(ReceiptLine(x.sku, x.name, x.qty, Money(x.unit_price, cur),
                                  Money(x.amount, cur), x.tax_rate_bp) for x in sess.lines)
        total = Money(sess.total or 0, cur)
    return Receipt(
        cabinet_id=sess.cabinet_id, session_id=sess.id,
        account_name=account.name if account else None,
        opened_at=sess.opened_at, closed_at=sess.closed_at, lines=lines, total=total,
        outcome=sess.outcome, outcome_reason=sess.outcome_reason, charged=ledger_sum("capture"),
        refunded=ledger_sum("refund"), owed=ledger_sum("debt"), flags=tuple(sess.flags or ()),
        corrected=correction.reason if correction is not None else None,
        taxes=tax_totals(db, sess.id) if taxed else (),
        tax_refunded=Money(refunded_tax(db, sess.id), cur), registration=registration,
        locale=locale)


def tax_totals(db: Session, session_id: str) -> tuple[RateTotal, ...]:
    """Per rate, the basket as sold and corrected (refunds are shown apart)."""
    rows = db.execute(select(TaxEntry.rate_bp, func.sum(TaxEntry.gross), func.sum(TaxEntry.net),
                             func.sum(TaxEntry.tax))
                      .where(TaxEntry.session_id == session_id, TaxEntry.kind != "refund")
                      .group_by(TaxEntry.rate_bp).order_by(TaxEntry.rate_bp))
    return tuple(RateTotal(bp, int(g), int(n), int(t)) for bp, g, n, t in rows if g or t)


def refunded_tax(db: Session, session_id: str) -> int:
    """The tax given back by the session's refunds that went through (a positive number)."""
    done = select(Refund.id).where(Refund.session_id == session_id, Refund.status == "refunded")
    total = db.scalar(select(func.coalesce(func.sum(TaxEntry.tax), 0))
                      .where(TaxEntry.session_id == session_id, TaxEntry.kind == "refund",
                             TaxEntry.ref.in_(done)))
    return -int(total or 0)
