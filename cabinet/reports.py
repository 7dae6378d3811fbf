"""Reports for the operator and the accountant, read from the cabinet's database.

`sales(db, start, end)`: per UTC day and per tax rate, from billing's tax entries
(billing/models.py TaxEntry, written at settlement, refund and correction): gross (tax
included), net and tax sold (sales and corrections), refunds and the tax they gave back (only
refunds that went through), the sessions sold at that rate and the items in them. The per-rate
figures are the ones on the receipts: rounded once per rate per receipt, so a day's tax is the
sum of its receipts' taxes, never a re-rounding of the day's gross.

`stock(db, planogram, start, end)`: per planogram slot: on hand now, and within the period the
items sold (returns subtracted), restocked, and the shrinkage found missing when a restock was
counted (cabinet/inventory.py's moves).

Amounts are integers in minor units of one currency; `money_text` (Babel) writes them for a
person, `Money.decimal_text` for a CSV.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from billing.models import LineItem, Refund, TaxEntry
from billing.tax import rate_text


@dataclasses.dataclass(frozen=True)
class SalesRow:
    day: dt.date
    rate_bp: int
    currency: str
    gross: int
    net: int
    tax: int
    refunds: int          # gross refunded (positive)
    refund_tax: int       # tax given back by those refunds (positive)
    sessions: int
    items: int

    @property
    def rate(self) -> str:
        return rate_text(self.rate_bp)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["day"] = self.day.isoformat()
        d["rate"] = self.rate
        return d


@dataclasses.dataclass(frozen=True)
class StockRow:
    slot: str
    sku: str
    on_hand: int
    sold: int
    restocked: int
    shrinkage: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _in(day: dt.date, start: dt.date | None, end: dt.date | None) -> bool:
    return (start is None or day >= start) and (end is None or day <= end)


def check_period(start: dt.date | None, end: dt.date | None) -> None:
    if start is not None and end is not None and end < start:
        raise ValueError(f"report: --to {end} is before --from {start}; give a period that "
                         f"ends on or after it starts")


def sales(db: sessionmaker, start: dt.date | None = None,
          end: dt.date | None = None) -> list[SalesRow]:
    """Per day (UTC) and rate, in that order; both ends of the period included."""
    check_period(start, end)
    with db() as s:
        entries = list(s.scalars(select(TaxEntry).order_by(TaxEntry.id)))
        refunded = set(s.scalars(select(Refund.id).where(Refund.status == "refunded")))
        items: dict[tuple[str, int], int] = defaultdict(int)
        for session_id, bp, qty in s.execute(select(LineItem.session_id, LineItem.tax_rate_bp,
                                                    LineItem.qty)):
            items[(session_id, bp)] += qty
    acc: dict[tuple[dt.date, int], dict[str, Any]] = {}
    for e in entries:
        day = e.at.astimezone(dt.timezone.utc).date()
        if not _in(day, start, end):
            continue
        row = acc.setdefault((day, e.rate_bp), {"currency": e.currency, "gross": 0, "net": 0,
                                                "tax": 0, "refunds": 0, "refund_tax": 0,
                                                "sessions": set(), "items": 0})
        if row["currency"] != e.currency:
            raise ValueError(f"report: {day} has sales in {row['currency']} and "
                             f"{e.currency}; report one cabinet's database at a time")
        if e.kind == "refund":
            if e.ref in refunded:
                row["refunds"] -= e.gross
                row["refund_tax"] -= e.tax
            continue
        row["gross"] += e.gross
        row["net"] += e.net
        row["tax"] += e.tax
        if e.kind == "sale" and e.session_id not in row["sessions"]:
            row["sessions"].add(e.session_id)
            row["items"] += items.get((e.session_id, e.rate_bp), 0)
    return [SalesRow(day, bp, r["currency"], r["gross"], r["net"], r["tax"], r["refunds"],
                     r["refund_tax"], len(r["sessions"]), r["items"])
            for (day, bp), r in sorted(acc.items())]


def sales_totals(rows: Iterable[SalesRow]) -> dict[int, dict[str, int]]:
    """The period's totals per rate (basis points -> figures)."""
    out: dict[int, dict[str, int]] = {}
    for r in rows:
        t = out.setdefault(r.rate_bp, {k: 0 for k in ("gross", "net", "tax", "refunds",
                                                      "refund_tax", "sessions", "items")})
        for k in t:
            t[k] += getattr(r, k)
    return out


def stock(db: sessionmaker, planogram: Any, start: dt.date | None = None,
          end: dt.date | None = None) -> list[StockRow]:
    """Per planogram slot, in planogram order."""
    from cabinet.inventory import Inventory, InventoryMove
    check_period(start, end)
    inventory = Inventory(db, planogram)      # creates the moves table of an older database
    on_hand = {k: len(v) for k, v in inventory.slots().items()}
    sold: dict[str, int] = defaultdict(int)
    restocked: dict[str, int] = defaultdict(int)
    shrinkage: dict[str, int] = defaultdict(int)
    with db() as s:
        for m in s.scalars(select(InventoryMove).order_by(InventoryMove.id)):
            if not _in(m.at.astimezone(dt.timezone.utc).date(), start, end):
                continue
            if m.kind in ("sale", "return"):
                sold[m.slot_id] -= m.qty
            elif m.kind == "restock":
                restocked[m.slot_id] += m.qty
            elif m.kind == "shrinkage":
                shrinkage[m.slot_id] -= m.qty
    return [StockRow(slot.id, slot.sku, on_hand.get(slot.id, 0), sold[slot.id],
                     restocked[slot.id], shrinkage[slot.id]) for slot in planogram.slots]
