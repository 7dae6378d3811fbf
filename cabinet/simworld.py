"""The physical world of the simulated cabinet: real items in slots and a customer's hands.

The simulated MCU reads each shelf's true load from here (`shelf_load`), the simulated shelf
cameras render each shelf from here (`shelf_view`), and a scripted customer changes it (`take`,
`put`). Each item gets its own true weight at restock (unit weight plus a spread inside the
catalog tolerance), so the load cells see what a real scale would. The controller never reads
this module's state: it only sees bytes from the MCU and pixels from the cameras.
"""
from __future__ import annotations

import dataclasses
import random
import threading
from collections import Counter

from typing import Callable

from cabinet.catalog import Catalog
from cabinet.planogram import Planogram
from vision.sim.render import ItemPose, ShelfView, SlotView


@dataclasses.dataclass(frozen=True)
class Item:
    """One physical item: its own weight, a serial (the simulated camera draws each serial from
    its own photo) and where it stands in its facing: sideways shift (share of the facing's
    width), depth (0 front .. 1 back), tilt in degrees and scale."""

    sku: str
    grams: float
    serial: int = 0
    dx: float = 0.0
    depth: float = 0.0
    angle: float = 0.0
    scale: float = 1.0


class SimWorld:
    """Items per slot (left to right) and in the customer's hands; thread-safe."""

    def __init__(self, planogram: Planogram, catalog: Catalog, *, seed: int = 0,
                 shelf_tray_g: float = 0.0):
        self._planogram = planogram
        self._catalog = catalog
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._tray_g = shelf_tray_g
        self._slots: dict[str, list[Item]] = {slot.id: [] for slot in planogram.slots}
        self._hands: list[Item] = []
        self._wobble: dict[int, tuple[float, int]] = {}    # channel -> (grams, reads so far)
        self._serials = 0
        self._poses = random.Random(f"poses:{seed}")  # apart, so poses never change the weights

    # --- operator side -----------------------------------------------------------------
    def restock(self, levels: dict[str, int]) -> None:
        """An operator's restock: each named slot holds exactly `count` items of its planogram
        SKU afterwards (misplaced and foreign things taken out, the rest topped up)."""
        with self._lock:
            for slot_id, count in levels.items():
                slot = self._planogram.slot(slot_id)
                items = [item for item in self._slots[slot_id] if item.sku == slot.sku][:count]
                while len(items) < count:
                    items.append(self._new_item(slot.sku))
                self._slots[slot_id] = items

    def _new_item(self, sku: str) -> Item:
        product = self._catalog[sku]
        spread = product.weight_tolerance_g / 2.0
        self._serials += 1
        # an operator faces items neatly: a little shift and tilt, all at the front
        return Item(sku, product.unit_weight_g + self._rng.gauss(0.0, spread), self._serials,
                    self._poses.uniform(-0.05, 0.05), 0.0, self._poses.uniform(-2.0, 2.0),
                    self._poses.uniform(0.97, 1.03))

    def _left_by_a_customer(self, item: Item) -> Item:
        """Where a customer puts an item down: off centre, maybe pushed back, tilted."""
        return dataclasses.replace(item, dx=self._poses.uniform(-0.2, 0.2),
                                   depth=self._poses.choice((0.0, 0.0, 0.3, 0.6)),
                                   angle=self._poses.uniform(-12.0, 12.0))

    # --- customer side -----------------------------------------------------------------
    def take(self, slot_id: str, qty: int = 1) -> list[Item]:
        """Take items from the front (right end) of a slot into the customer's hands."""
        with self._lock:
            items = self._slots[slot_id]
            if qty > len(items):
                raise ValueError(f"simulated customer: slot {slot_id} holds {len(items)} "
                                 f"item(s), cannot take {qty}")
            taken = [items.pop() for _ in range(qty)]
            self._hands.extend(taken)
            return taken

    def put(self, slot_id: str, sku: str, qty: int = 1) -> None:
        """Put items of `sku` from the customer's hands into a slot (put-back or misplaced)."""
        with self._lock:
            for _ in range(qty):
                for i in range(len(self._hands) - 1, -1, -1):
                    if self._hands[i].sku == sku:
                        self._slots[slot_id].append(self._left_by_a_customer(self._hands.pop(i)))
                        break
                else:
                    raise ValueError(f"simulated customer: holds no '{sku}' to put in "
                                     f"slot {slot_id}")

    def put_foreign(self, slot_id: str, grams: float, label: str = "foreign") -> None:
        """Leave an object that is not ours (tamper scenarios)."""
        with self._lock:
            self._serials += 1
            self._slots[slot_id].append(self._left_by_a_customer(Item(label, grams, self._serials)))

    def wobble(self, channel: int, grams: float) -> None:
        """Something keeps the shelf on load-cell channel `channel` moving (a customer leaning
        on it, a bottle rolling): its load swings by +/- `grams` from one read to the next, so
        it never settles, until `wobble(channel, 0)`."""
        if not any(shelf.channel == channel for shelf in self._planogram.shelves):
            raise ValueError(f"simulated world: no shelf on load-cell channel {channel}")
        with self._lock:
            if grams:
                self._wobble[channel] = (float(grams), 0)
            else:
                self._wobble.pop(channel, None)

    def hands(self) -> Counter:
        with self._lock:
            return Counter(item.sku for item in self._hands)

    def leave(self) -> Counter:
        """The customer walks away with what they hold: the ground-truth basket."""
        with self._lock:
            basket = Counter(item.sku for item in self._hands)
            self._hands.clear()
            return basket

    # --- sensors -----------------------------------------------------------------------
    def shelf_load(self, channel: int) -> float:
        """True grams on the shelf wired to MCU load-cell channel `channel`."""
        with self._lock:
            total = self._tray_g
            for shelf in self._planogram.shelves:
                if shelf.channel != channel:
                    continue
                for slot in self._planogram.slots:
                    if slot.shelf == shelf.id:
                        total += sum(item.grams for item in self._slots[slot.id])
            if channel in self._wobble:
                grams, reads = self._wobble[channel]
                self._wobble[channel] = (grams, reads + 1)
                total += grams if reads % 2 else -grams
            return total

    def slot_skus(self, slot_id: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(item.sku for item in self._slots[slot_id])

    def slot_items(self, slot_id: str) -> tuple[Item, ...]:
        """The items in a slot, left to right, with their serials and poses."""
        with self._lock:
            return tuple(self._slots[slot_id])

    def stock(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return {slot_id: tuple(i.sku for i in items) for slot_id, items in self._slots.items()}


def shelf_view_fn(world: SimWorld, planogram: Planogram, camera: str) -> Callable[[], ShelfView]:
    """What a simulated shelf camera draws at each capture: the world's items in the slots this
    camera sees, each with its serial and pose."""
    slots = planogram.slots_seen_by(camera)

    def view() -> ShelfView:
        out = []
        for slot in slots:
            items = world.slot_items(slot.id)
            out.append(SlotView(slot.id, tuple(slot.roi), slot.capacity, tuple(i.sku for i in items),
                                tuple(ItemPose(i.serial, i.dx, i.depth, i.angle, i.scale) for i in items)))
        return ShelfView(camera, tuple(planogram.camera_size), tuple(out))
    return view
