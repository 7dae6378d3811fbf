"""What the controller believes is in each slot, kept in the cabinet's SQLite file.

The belief starts from a restock (an operator fills slots from the planogram) and moves with
each session's reconcile result: items that left a shelf are taken from that shelf's slots of
their SKU; items that arrived on a shelf (put back, or misplaced from elsewhere) go to the slot
of their SKU on that shelf, else to the shelf's slot with the most room. Reconcile bounds its
search with this belief, and every session bundle keeps a copy of it as it was before.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from billing.db import Base
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


class Inventory:
    def __init__(self, db: sessionmaker, planogram: Planogram):
        self._db = db
        self._planogram = planogram

    def slots(self) -> dict[str, list[str]]:
        with self._db() as s:
            rows = {r.slot_id: json.loads(r.skus) for r in s.scalars(select(SlotStock))}
        return {slot.id: rows.get(slot.id, []) for slot in self._planogram.slots}

    def restock(self, levels: dict[str, int]) -> None:
        """Set each named slot to `count` items of its planogram SKU (an operator's restock)."""
        with self._db.begin() as s:
            for slot_id, count in levels.items():
                slot = self._planogram.slot(slot_id)
                row = s.get(SlotStock, slot_id) or SlotStock(slot_id=slot_id)
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
            self._move(stock, result)
            for slot_id, skus in stock.items():
                row = rows.get(slot_id) or SlotStock(slot_id=slot_id)
                row.skus = json.dumps(skus)
                s.add(row)
            s.add(InventoryApplied(session_id=session_id))

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
