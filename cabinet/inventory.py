"""What the controller believes is in each slot, kept in the cabinet's SQLite file.

The belief starts from a restock (an operator fills slots from the planogram) and moves with
each session's reconcile result: items that left a shelf are taken from that shelf's slots of
their SKU; items that arrived on a shelf (put back, or misplaced from elsewhere) go to the slot
of their SKU on that shelf, else to the shelf's slot with the most room. Reconcile bounds its
search with this belief, and every session bundle keeps a copy of it as it was before.

Every change to the belief is also a row of `inventory_moves` (slot, SKU, signed quantity,
kind, reference, UTC time), so the operator's `cabinet inventory` can say per slot what was
sold (`sale`: taken in a session; `return`: put back onto it) and restocked (`restock`) since
the last restock, and what a counted restock found missing (`shrinkage`). `report()` gives one
`SlotInventory` per planogram slot, low-stock marked when on hand is below par.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from typing import Any, Mapping

from sqlalchemy import Integer, MetaData, String, Text, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from billing.db import Base, UTCDateTime, utcnow
from cabinet.planogram import Planogram


class SlotStock(Base):
    __tablename__ = "slot_stock"

    slot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    skus: Mapped[str] = mapped_column(Text, default="[]")   # JSON list, left to right


class InventoryApplied(Base):
    """Sessions whose result already moved the belief: applying twice (a resumed session)
    must not move it twice."""

    __tablename__ = "inventory_applied"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class _MovesBase(DeclarativeBase):
    """The moves table is kept out of `Base.metadata`, whose schema billing/migrations
    (Alembic) owns: Inventory creates it when missing. It belongs in a migration; until one
    exists this keeps a database made by any version working."""

    metadata = MetaData()


class InventoryMove(_MovesBase):
    """One change of one slot's belief: +restocked / -sold / -shrinkage / +returned."""

    __tablename__ = "inventory_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    slot_id: Mapped[str] = mapped_column(String(64), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))     # restock, sale, return, shrinkage
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)  # session or visit id


@dataclasses.dataclass(frozen=True)
class SlotInventory:
    slot: str
    sku: str
    on_hand: int
    par: int
    capacity: int
    sold: int              # taken in sessions since the last restock (returns subtracted)
    restocked: int         # added by the last restock
    last_restock: dt.datetime | None
    foreign: int = 0       # items of another SKU believed to be in the slot (misplaced)

    @property
    def low(self) -> bool:
        return self.on_hand < self.par

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["low"] = self.low
        d["last_restock"] = self.last_restock.isoformat() if self.last_restock else None
        return d


class Inventory:
    def __init__(self, db: sessionmaker, planogram: Planogram):
        self._db = db
        self._planogram = planogram
        bind = db.kw.get("bind")
        if bind is not None:
            _MovesBase.metadata.create_all(bind, checkfirst=True)

    def slots(self) -> dict[str, list[str]]:
        with self._db() as s:
            rows = {r.slot_id: json.loads(r.skus) for r in s.scalars(select(SlotStock))}
        return {slot.id: rows.get(slot.id, []) for slot in self._planogram.slots}

    def restock(self, levels: Mapping[str, int], *, ref: str | None = None,
                shrinkage: Mapping[str, int] | None = None) -> None:
        """Set each named slot to `count` items of its planogram SKU (an operator's restock).

        `shrinkage` (slot -> items found missing before the restock, from a counted restock)
        is recorded first; the rest of the difference is what the operator put in."""
        shrinkage = dict(shrinkage or {})
        at = utcnow()
        ref = ref or f"restock-{at:%Y%m%dT%H%M%S%f}"   # one restock: one reference
        unknown = sorted(set(shrinkage) - set(levels))
        if unknown:
            raise ValueError(f"inventory: shrinkage for slot(s) {unknown} not being restocked")
        with self._db.begin() as s:
            for slot_id, count in levels.items():
                slot = self._planogram.slot(slot_id)
                row = s.get(SlotStock, slot_id) or SlotStock(slot_id=slot_id)
                before = len(json.loads(row.skus)) if row.skus else 0
                lost = int(shrinkage.get(slot_id, 0))
                if lost:
                    s.add(InventoryMove(at=at, slot_id=slot_id, sku=slot.sku, qty=-lost,
                                        kind="shrinkage", ref=ref))
                s.add(InventoryMove(at=at, slot_id=slot_id, sku=slot.sku,
                                    qty=int(count) - (before - lost), kind="restock", ref=ref))
                row.skus = json.dumps([slot.sku] * int(count))
                s.add(row)

    def apply(self, result: Any, session_id: str) -> None:
        """Move the belief by a reconcile result's per-shelf explanation, once per session
        (the check and the move are one transaction)."""
        with self._db.begin() as s:
            if s.get(InventoryApplied, session_id) is not None:
                return
            rows = {r.slot_id: r for r in s.scalars(select(SlotStock))}
            stock = {slot.id: json.loads(rows[slot.id].skus) if slot.id in rows else []
                     for slot in self._planogram.slots}
            before = {k: Counter(v) for k, v in stock.items()}
            self._move(stock, result)
            for slot_id, skus in stock.items():
                for sku, delta in sorted((Counter(skus) - before[slot_id]).items()):
                    s.add(InventoryMove(slot_id=slot_id, sku=sku, qty=delta, kind="return",
                                        ref=session_id))
                for sku, delta in sorted((before[slot_id] - Counter(skus)).items()):
                    s.add(InventoryMove(slot_id=slot_id, sku=sku, qty=-delta, kind="sale",
                                        ref=session_id))
                row = rows.get(slot_id) or SlotStock(slot_id=slot_id)
                row.skus = json.dumps(skus)
                s.add(row)
            s.add(InventoryApplied(session_id=session_id))

    def report(self) -> list[SlotInventory]:
        """Per planogram slot: on hand, par, capacity, sold and restocked since the last
        restock (the newest `restock` move of any slot starts the period)."""
        stock = self.slots()
        with self._db() as s:
            last = s.scalars(select(InventoryMove).where(InventoryMove.kind == "restock")
                             .order_by(InventoryMove.id.desc()).limit(1)).first()
            start_id, last_at = 0, None
            if last is not None:   # the period starts with the first move of the last restock
                start_id = s.scalar(select(func.min(InventoryMove.id)).where(
                    InventoryMove.kind.in_(("restock", "shrinkage")),
                    InventoryMove.ref == last.ref))
                last_at = last.at
            moves = list(s.scalars(select(InventoryMove).where(InventoryMove.id >= start_id)))
        sold: Counter = Counter()
        restocked: Counter = Counter()
        for m in moves:
            if m.kind in ("sale", "return"):
                sold[m.slot_id] -= m.qty
            elif m.kind == "restock":
                restocked[m.slot_id] += m.qty
        out = []
        for slot in self._planogram.slots:
            items = stock[slot.id]
            out.append(SlotInventory(slot.id, slot.sku, len(items), slot.par, slot.capacity,
                                     sold[slot.id], restocked[slot.id], last_at,
                                     sum(1 for k in items if k != slot.sku)))
        return out

    def _move(self, stock: dict[str, list[str]], result: Any) -> None:
        evidence = getattr(result, "evidence", None)
        shelves = evidence.get("shelves", {}) if isinstance(evidence, dict) else {}
        for shelf_id, shelf_ev in shelves.items():
            explained = shelf_ev.get("explained_by", {}) if isinstance(shelf_ev, dict) else {}
            slots = [slot for slot in self._planogram.slots if slot.shelf == shelf_id]
            for sku, delta in explained.items():
                delta = int(delta)
                for _ in range(-delta if delta < 0 else 0):
                    for slot in sorted(slots, key=lambda sl: sl.sku != sku):
                        if sku in stock[slot.id]:
                            items = stock[slot.id]
                            del items[len(items) - 1 - items[::-1].index(sku)]
                            break
                for _ in range(delta if delta > 0 else 0):
                    own = [slot for slot in slots if slot.sku == sku]
                    target = own[0] if own else max(
                        slots, key=lambda sl: sl.capacity - len(stock[sl.id]))
                    stock[target.id].append(sku)
