"""Reconcile on evidence that does not single out what left (issue 7, item 6: "never charge a
product whose shelf evidence does not say it left").

- Look-alikes of one weight: a cell of one look-alike's slot that changed while occupied may
  now hold the other look-alike, returned there in place of an item that left: weight and the
  slots' counts read the same either way, so which of the two was taken is not known.
- A shelf no camera read whose weight did not change: "nothing happened" explains it, and an
  exchange of items that balances to zero is a coincidence the weight cannot confirm.
- Weight arrived on a shelf that the items do not explain: which items arrived is not known
  either, so items charged from other shelves may be lying there.

Each bundle is built here, in memory (no simulator), with the per-slot evidence vision.diff
would give.
"""
from __future__ import annotations

from pathlib import Path

from cabinet import reconcile as R
from cabinet.bundle import Bundle, BundleRecord, CameraImages, ShelfWeights
from cabinet.catalog import Catalog, Product
from cabinet.planogram import Planogram, Shelf, Slot
from vision.diff import SlotEvidence

from reconcile_support import cells

CAT = Catalog([Product("milk", "Milk", 150, "EUR", 1067.0, 12.0),
               Product("milk-eco", "Eco milk", 175, "EUR", 1067.0, 12.0),
               Product("tea", "Tea", 150, "EUR", 420.0, 8.0),
               Product("oj", "Orange juice", 200, "EUR", 1100.0, 12.0),
               Product("lager", "Lager", 180, "EUR", 480.0, 8.0),
               Product("cream", "Sour cream", 120, "EUR", 310.0, 6.0),
               Product("yog", "Yoghurt", 90, "EUR", 170.0, 4.0)], "EUR")
PLAN = Planogram("cab", (Shelf("top", 0, "cam-top", 10000.0),
                         Shelf("middle", 1, "cam-middle", 10000.0),
                         Shelf("bottom", 2, "cam-bottom", 10000.0)),
                 (Slot("A1", "top", "milk", 4, 0, (0, 0, 40, 10)),
                  Slot("A2", "top", "tea", 4, 0, (40, 0, 40, 10)),
                  Slot("A3", "top", "milk-eco", 4, 0, (80, 0, 40, 10)),
                  Slot("B1", "middle", "oj", 4, 0, (0, 0, 40, 10)),
                  Slot("B2", "middle", "lager", 4, 0, (40, 0, 40, 10)),
                  Slot("B3", "middle", "milk-eco", 4, 0, (80, 0, 40, 10)),
                  Slot("C1", "bottom", "cream", 4, 0, (0, 0, 40, 10)),
                  Slot("C2", "bottom", "yog", 4, 0, (40, 0, 40, 10))))
INVENTORY = {"A1": ("milk",) * 3, "A2": ("tea",) * 3, "A3": ("milk-eco",) * 3,
             "B1": ("oj",) * 3, "B2": ("lager",) * 3,
             "B3": ("milk-eco",) * 3, "C1": ("cream",) * 3, "C2": ("yog",) * 3}
ALIKE = 0.9  # looks like what was there: a look-alike does


def untouched(slot_id: str) -> SlotEvidence:
    n = len(INVENTORY[slot_id])
    return cells(slot_id, "X" * n + ".", "X" * n + ".")


def session(deltas: dict[str, float], *evidence: SlotEvidence,
            cameras: tuple[str, ...] = ("top", "middle", "bottom")) -> R.ReconcileResult:
    """A session with these weight changes per shelf; the shelves in `cameras` are read (slots
    not given in `evidence` untouched), the others have no camera at all."""
    seen = {e.slot_id: e for e in evidence}
    per_slot = {s.id: seen.get(s.id) or untouched(s.id) for s in PLAN.slots
                if s.shelf in cameras}
    images = {sh.camera: CameraImages(None, None) for sh in PLAN.shelves if sh.id in cameras}
    record = BundleRecord(schema_version=2, session_id="s-1", cabinet_id="cab",
                          opened_at="2026-01-01T00:00:00+00:00",
                          closed_at="2026-01-01T00:01:00+00:00",
                          params={"load_cell_noise_g": 2.0, "min_confidence": 0.95})
    shelves = {sh.id: ShelfWeights(sh.channel, 5000.0, 5000.0 + deltas.get(sh.id, 0.0), True, True)
               for sh in PLAN.shelves}
    bundle = Bundle(Path("in-memory"), record, CAT, PLAN, shelves, images, INVENTORY)
    return R.reconcile(bundle, vision=lambda b, recognizer: (per_slot, {}))


# --- look-alikes of one weight ----------------------------------------------------------------

def test_a_taken_milk_is_charged_when_no_look_alike_cell_changed():
    r = session({"top": -1067.0}, cells("A1", "XXX.", "XX.."))
    assert r.basket == {"milk": 1}
    assert r.flags == ()


def test_a_look_alike_cell_that_changed_while_occupied_leaves_which_milk_unknown():
    # A1 (milk) lost a facing; a cell of A3 (eco milk, same weight) changed and still looks
    # like a milk: "a milk taken" and "an eco milk taken, a milk put in its cell" read the same
    r = session({"top": -1067.0}, cells("A1", "XXX.", "XX.."),
                cells("A3", "XXX.", "XXX.", " *  ", alike=(None, ALIKE, None, None)))
    assert r.best_guess == {"milk": 1}
    assert "lookalike_uncertain" in r.flags
    assert r.basket == {}


def test_a_look_alike_cell_that_filled_while_another_emptied_leaves_which_milk_unknown():
    # the eco milk's slot kept its count: one cell emptied, an empty one filled (with a milk?)
    r = session({"top": -1067.0}, cells("A1", "XXX.", "XX.."), cells("A3", "XXX.", "X.XX"))
    assert "lookalike_uncertain" in r.flags
    assert "milk" not in r.basket


def test_a_changed_cell_of_a_product_of_another_weight_leaves_the_milk_charged():
    # tea weighs 420 g: a milk in its cell in place of a tea would show on the scale
    r = session({"top": -1067.0}, cells("A1", "XXX.", "XX.."),
                cells("A2", "XXX.", "XXX.", " *  ", alike=(None, ALIKE, None, None)))
    assert r.basket == {"milk": 1}
    assert "lookalike_uncertain" not in r.flags


def test_a_look_alike_returned_on_another_shelf_leaves_which_milk_unknown():
    # the eco milk's slot sits on the middle shelf: "a milk taken from the top" and "an eco
    # milk taken from the middle, a milk put back in its cell" read the same on both scales
    # and both cameras; only the prior against misplaced returns prefers the first
    r = session({"top": -1067.0}, cells("A1", "XXX.", "XX.."),
                cells("B3", "XXX.", "XXX.", " *  ", alike=(None, ALIKE, None, None)))
    assert r.best_guess == {"milk": 1}
    assert r.basket == {}
    assert "lookalike_uncertain" in r.flags


def test_look_alike_doubt_covers_only_as_many_items_as_cells_could_hide():
    # two milks left A1 (both cells emptied), one eco-milk cell changed: at most one of the two
    # can be an eco milk, so one milk is certain
    r = session({"top": -2134.0}, cells("A1", "XXX.", "X..."),
                cells("A3", "XXX.", "XXX.", " *  ", alike=(None, ALIKE, None, None)))
    assert "lookalike_uncertain" in r.flags
    assert r.basket == {"milk": 1}


# --- a shelf no camera read whose weight did not change --------------------------------------

def _exchange_session(bottom_g: float) -> R.ReconcileResult:
    # middle (camera): an orange juice and a lager left their slots (-1580 g); top (camera):
    # something of a yoghurt's weight arrived in an empty cell (+170 g), which only the
    # bottom shelf holds; bottom: no camera, weight `bottom_g`
    return session({"middle": -1580.0, "top": 170.0, "bottom": bottom_g},
                   cells("B1", "XXX.", "XX.."), cells("B2", "XXX.", "XX.."),
                   cells("A2", "XXX.", "XXXX"), cameras=("top", "middle"))


def test_an_unchanged_shelf_without_a_camera_sells_nothing():
    r = _exchange_session(1.0)
    # the weights balance as "lager moved to the bottom, a yoghurt moved to the top, a sour
    # cream taken": the sour cream's departure is a coincidence the weight cannot confirm
    assert r.needs_review
    assert "cream" not in r.basket
    assert "weight_ambiguous" in r.flags


def test_a_shelf_without_a_camera_that_lost_weight_still_sells():
    # the same, but the bottom shelf lost a sour cream's weight as well: no coincidence needed
    r = _exchange_session(-310.0 - 170.0)
    assert "weight_ambiguous" not in r.flags


# --- weight arrived that the items do not explain --------------------------------------------

def test_items_charged_elsewhere_may_lie_on_a_shelf_whose_gain_is_unexplained():
    # weights only: the middle lost an orange juice and a lager (-1580 g); the top gained
    # 1650 g, which no set of items from elsewhere explains within noise. The lager and the
    # juice may both lie on the top shelf with 70 g of something else: neither is charged
    r = session({"middle": -1580.0, "top": 1650.0}, cameras=())
    assert "unexplained_weight" in r.flags
    assert r.basket == {}


# three items moved onto one shelf whose count the camera saw rise by four, read with the
# numbers of such a session (catalog, stock, per-cell evidence, weights): the best explanation
# brings other items onto the top shelf than those that came, and its weight is 37 g off
MOVE_CAT = Catalog([Product(k, k, 100, "EUR", w, 2 * s) for k, w, s in (  # s: one sigma
    ("cola", 343.0, 3.0), ("energy", 260.0, 2.5), ("water", 559.0, 4.0),
    ("milk-medium", 1067.0, 6.0), ("milk-eco", 1067.0, 6.0), ("oj", 1102.0, 6.0),
    ("aj", 745.0, 5.0), ("smoothie", 290.0, 2.5), ("lager", 484.0, 4.5), ("milk", 1067.0, 6.0),
    ("soy", 509.0, 3.5), ("cream", 309.0, 2.5), ("vanilla", 175.0, 2.0))], "EUR")
MOVE_SLOTS = (("A1", "top", "cola", "XXX...", "XXXXX.", "   ** "),
              ("A2", "top", "energy", "X.....", "X.....", ""),
              ("A3", "top", "water", "X.....", "X.....", ""),
              ("A4", "top", "milk-medium", "XX..", "XXX.", "  * "),
              ("A5", "top", "milk-eco", "XX..", "XXX.", "  * "),
              ("B1", "middle", "oj", "XXX.", "XXXX", "   *"),
              ("B2", "middle", "aj", "XXXX", "XXX.", "   *"),
              ("B3", "middle", "smoothie", "XXXX.", "XX...", "  ** "),
              ("B4", "middle", "lager", "XXX..", "XXX..", ""),
              ("C1", "bottom", "milk", "XX..", "X...", " *  "),
              ("C2", "bottom", "soy", "XXXXX", "XXX..", "   **"),
              ("C3", "bottom", "cream", "XXXXX", "XXXXX", ""),
              ("C4", "bottom", "vanilla", "X.....", "X.....", ""))


def test_items_charged_elsewhere_may_lie_on_a_shelf_whose_gain_the_items_do_not_explain():
    plan = Planogram("cab", tuple(Shelf(s, i, f"cam-{s}", 25000.0)
                                  for i, s in enumerate(("top", "middle", "bottom"))),
                     tuple(Slot(sid, shelf, sku, len(b), 0, (10 * i, 0, 10, 10))
                           for i, (sid, shelf, sku, b, _a, _c) in enumerate(MOVE_SLOTS)))
    inventory = {sid: (sku,) * b.count("X") for sid, _s, sku, b, _a, _c in MOVE_SLOTS}
    per_slot = {sid: cells(sid, b, a, c or " " * len(b)) for sid, _s, _k, b, a, c in MOVE_SLOTS}
    record = BundleRecord(schema_version=2, session_id="s-1", cabinet_id="cab",
                          opened_at="2026-01-01T00:00:00+00:00",
                          closed_at="2026-01-01T00:01:00+00:00",
                          params={"load_cell_noise_g": 2.5, "min_confidence": 0.95})
    # truth: a smoothie and a soy yoghurt taken; the apple juice, a milk and a smoothie moved
    # onto the top shelf, a soy yoghurt into the orange juice's slot
    shelves = {"top": ShelfWeights(0, 6078.9, 8170.3, True, True),
               "middle": ShelfWeights(1, 8875.3, 8067.9, True, True),
               "bottom": ShelfWeights(2, 6417.1, 4326.7, True, True)}
    images = {sh.camera: CameraImages(None, None) for sh in plan.shelves}
    bundle = Bundle(Path("in-memory"), record, MOVE_CAT, plan, shelves, images, inventory)
    r = R.reconcile(bundle, vision=lambda b, recognizer: (per_slot, {}))
    assert "unexplained_weight" in r.flags
    assert r.evidence["shelves"]["top"]["residual_g"] < 0  # the items explain more than came
    # 2.1 kg arrived on the top shelf that the items do not explain: the apple juice the best
    # explanation charges (745 g) may be lying there
    assert "aj" not in r.basket
