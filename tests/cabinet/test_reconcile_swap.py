"""Reconcile with what each changed facing cell looks like (vision.diff's appearance
signatures, knowing no product): an item swapped in its own cell for a thing of about its
weight, and a thing put in an empty cell that looks like nothing that left a place.

Weight, facing count and change mask read both as "picked up and put back" or "moved": only
the look of the cell before and after tells them apart (issue 7, item 4; the T6 tamper tier).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cabinet import reconcile as R
from cabinet.bundle import Bundle, BundleRecord, CameraImages, ShelfWeights
from cabinet.catalog import Catalog, Product
from cabinet.planogram import Planogram, Shelf, Slot
from vision.diff import LOOK_SAME_FROM, SlotEvidence

from reconcile_support import cells

CAT = Catalog([Product("milk", "Milk", 150, "EUR", 1067.0, 12.0),
               Product("tea", "Tea", 150, "EUR", 420.0, 8.0),
               Product("cola", "Cola", 150, "EUR", 330.0, 10.0),
               Product("water", "Water", 100, "EUR", 500.0, 10.0),
               Product("oj", "Orange juice", 150, "EUR", 500.0, 10.0)], "EUR")
PLAN = Planogram("cab", (Shelf("top", 0, "cam-top", 10000.0),
                         Shelf("bottom", 1, "cam-bottom", 10000.0)),
                 (Slot("A1", "top", "milk", 4, 0, (0, 0, 40, 10)),
                  Slot("A2", "top", "tea", 4, 0, (40, 0, 40, 10)),
                  Slot("A3", "top", "oj", 4, 0, (80, 0, 40, 10)),
                  Slot("B1", "bottom", "cola", 4, 0, (0, 0, 40, 10)),
                  Slot("B2", "bottom", "water", 4, 0, (40, 0, 40, 10))))
INVENTORY = {"A1": ("milk",) * 3, "A2": ("tea",) * 3, "A3": ("oj",) * 3, "B1": ("cola",) * 3,
             "B2": ("water",) * 2}
IMAGES = {"cam-top": CameraImages(None, None), "cam-bottom": CameraImages(None, None)}
UNLIKE = 0.31  # another thing than before
ALIKE = 0.9    # the same item, put back (as alike as most pairs of photos of one product)


def look(k: int) -> np.ndarray:
    """A colour signature with all its mass in bin k (two different k: nothing in common)."""
    v = np.zeros(192)
    v[k] = 1.0
    return v


def untouched(slot_id: str) -> SlotEvidence:
    n = len(INVENTORY[slot_id])
    return cells(slot_id, "X" * n + ".", "X" * n + ".")


def session(top_g: float, bottom_g: float, *evidence: SlotEvidence,
            notes: dict | None = None, unseen: tuple[str, ...] = ()) -> R.ReconcileResult:
    """Reconcile the two shelves' weight changes with this slot evidence (every other slot
    read untouched; the slots of `unseen` not read at all: a camera the bundle lacks)."""
    seen = {e.slot_id: e for e in evidence}
    per_slot = {s.id: seen.get(s.id) or untouched(s.id) for s in PLAN.slots if s.id not in unseen}
    record = BundleRecord(schema_version=2, session_id="s-1", cabinet_id="cab",
                          opened_at="2026-01-01T00:00:00+00:00",
                          closed_at="2026-01-01T00:01:00+00:00",
                          params={"load_cell_noise_g": 2.0, "min_confidence": 0.95})
    shelves = {"top": ShelfWeights(0, 9000.0, 9000.0 + top_g, True, True),
               "bottom": ShelfWeights(1, 4000.0, 4000.0 + bottom_g, True, True)}
    bundle = Bundle(Path("in-memory"), record, CAT, PLAN, shelves, IMAGES, INVENTORY)
    return R.reconcile(bundle, vision=lambda b, recognizer: (per_slot, notes or {}))


def test_unlike_counts_changed_cells_that_look_like_another_thing():
    e = cells("A1", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    assert (e.swappable, e.unlike) == (1, 1)
    assert cells("A1", "XXX.", "XXX.", " * ", alike=(None, ALIKE, None, None)).unlike == 0
    # from the line on, the same item (the measured look ratio is 0 there); just below, unlike
    assert cells("A1", "XXX.", "XXX.", " * ", alike=(None, LOOK_SAME_FROM, None, None)).unlike == 0
    assert cells("A1", "XXX.", "XXX.", " * ",
                 alike=(None, LOOK_SAME_FROM - 0.01, None, None)).unlike == 1


def test_an_items_own_cell_is_held_to_the_same_item_and_a_shuffled_slot_to_the_product():
    # the only cell of the slot that changed: what is there is the item, put back, or a thing
    # from elsewhere; 0.65 is likelier between two products than two photos of one: unlike
    assert cells("A1", "XXX.", "XXX.", " * ", alike=(None, 0.65, None, None)).unlike == 1
    # another cell of the slot emptied as well: two taken, one put back in the other's cell is
    # another item of the same product, held only to the product's 1% line (0.51)
    assert cells("A1", "XXX.", "XX..", " **", alike=(None, 0.65, None, None)).unlike == 0
    assert cells("A1", "XXX.", "XX..", " **", alike=(None, 0.45, None, None)).unlike == 1


def test_an_item_swapped_for_a_thing_of_its_weight_in_its_own_cell_is_flagged():
    # a milk taken, and a 1,060 g thing put in its cell: weight and count say "put back"
    swap = cells("A1", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    r = session(-7.0, 0.0, swap)
    assert "item_swapped" in r.flags and r.needs_review
    assert r.basket == {}  # nothing charged on a guess (the operator sees the session)
    assert r.evidence["shelves"]["top"]["unlike_cells"] == 1


def test_an_item_put_back_in_its_own_cell_looks_like_itself_and_is_not_flagged():
    back = cells("A1", "XXX.", "XXX.", " * ", alike=(None, ALIKE, None, None))
    r = session(-1.0, 0.0, back)
    assert r.flags == () and r.basket == {}


def test_an_unlike_cell_explained_by_an_item_that_arrived_on_the_shelf_is_no_swap():
    # a milk taken and a cola from the bottom shelf put in its cell: the cell looks unlike the
    # milk, and the explanation brings the cola there
    milk = cells("A1", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    cola = cells("B1", "XXX.", "XX..")
    r = session(-1067.0 + 330.0, -330.0, milk, cola)
    assert "item_swapped" not in r.flags
    assert r.best_guess == {"milk": 1}
    assert r.evidence["shelves"]["top"]["explained_by"] == {"milk": -1, "cola": 1}


def test_an_unlike_cell_in_a_slot_of_several_skus_is_not_counted():
    # items of two SKUs in one slot shift between cells and look unlike: no swap read there
    inv = dict(INVENTORY, A1=("milk", "tea", "milk"))
    per_slot = {s.id: untouched(s.id) for s in PLAN.slots}
    per_slot["A1"] = cells("A1", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    assert R._unlike(_bundle(inv), per_slot, inv, "top") == 0
    assert R._unlike(_bundle(INVENTORY), per_slot, INVENTORY, "top") == 1


def _bundle(inventory) -> Bundle:
    record = BundleRecord(schema_version=2, session_id="s-1", cabinet_id="cab",
                          opened_at="2026-01-01T00:00:00+00:00",
                          closed_at="2026-01-01T00:01:00+00:00",
                          params={"load_cell_noise_g": 2.0, "min_confidence": 0.95})
    shelves = {"top": ShelfWeights(0, 9000.0, 9000.0, True, True),
               "bottom": ShelfWeights(1, 4000.0, 4000.0, True, True)}
    return Bundle(Path("in-memory"), record, CAT, PLAN, shelves, IMAGES, inventory)


def test_a_thing_in_an_empty_cell_that_looks_like_nothing_that_left_is_foreign():
    # a tea left the top shelf; a 420 g thing that looks unlike it arrived in an empty cell of
    # the bottom shelf: weights read "the tea moved down", the looks say it came from outside
    tea = cells("A2", "XXX.", "XX..", gone=(look(3),))
    thing = cells("B2", "XX..", "XXX.", new=((2, look(40)),))
    r = session(-420.0, 420.0, tea, thing)
    assert "foreign_object" in r.flags and r.needs_review
    assert r.evidence["strangers"] == {"B2": [2]}
    assert r.basket == {}  # the tea is not charged: it may be what moved


def test_a_moved_item_that_looks_like_what_left_is_no_stranger():
    tea = cells("A2", "XXX.", "XX..", gone=(look(3),))
    moved = cells("B2", "XX..", "XXX.", new=((2, look(3)),))
    r = session(-420.0, 420.0, tea, moved)
    assert r.flags == () and r.basket == {} and r.evidence["strangers"] == {}


def test_strangers_are_not_read_when_a_camera_could_not_be_read():
    # what left a place under a dark camera has no look: an arrival cannot be called foreign
    tea = cells("A2", "XXX.", "XX..", gone=(look(3),))
    thing = cells("B2", "XX..", "XXX.", new=((2, look(40)),))
    r = session(-420.0, 420.0, tea, thing, notes={"cam-top": "too dark"})
    assert r.evidence["strangers"] == {}


def test_an_unlike_cell_from_an_item_moved_within_its_shelf_is_no_swap():
    # a tea moved from its slot into the milk slot of the same shelf, the milks shifting a cell:
    # the shelf's net change is nothing, but a cell of the shelf emptied to let it move
    tea = cells("A2", "XXX.", "XX..")
    milk = cells("A1", "XXX.", "XXXX", " **", alike=(None, UNLIKE, None, None))
    r = session(0.0, 0.0, tea, milk)
    assert "item_swapped" not in r.flags and r.basket == {}
    # the same unlike cell with no cell of the shelf emptied: a swap
    r = session(0.0, 0.0, cells("A1", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None)))
    assert "item_swapped" in r.flags


def test_an_item_moved_into_the_cell_of_an_item_that_left_the_shelf_is_no_swap():
    # a tea taken from its cell and a milk of the same shelf put in that cell: the cell looks
    # unlike the tea, the milk slot emptied a cell, and the item that left is the tea
    milk = cells("A1", "XXX.", "XX..")
    tea = cells("A2", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    r = session(-420.0, 0.0, milk, tea)
    assert r.evidence["shelves"]["top"]["explained_by"] == {"tea": -1}
    assert "item_swapped" not in r.flags and r.basket == {"tea": 1}
    # the tea's own departure does not stand in for it: with the milk slot untouched, a swap
    r = session(-420.0 + 415.0, 0.0, cells("A2", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None)))
    assert "item_swapped" in r.flags


def test_a_look_alike_weight_returned_into_a_swapped_cell_is_not_charged_from_its_own_slot():
    # an orange juice (500 g) taken from the top shelf, and a water (500 g) from the bottom
    # shelf put in the juice's cell: weights read "the juice put back, a water taken"; the
    # juice's cell looks unlike the juice, so the water may be what is in it, not taken
    oj = cells("A3", "XXX.", "XXX.", " * ", alike=(None, UNLIKE, None, None))
    water = cells("B2", "XX..", "X...")
    r = session(0.0, -500.0, oj, water)
    assert r.best_guess == {"water": 1}  # what the weights prefer
    assert "item_swapped" in r.flags
    assert r.basket == {}  # neither the water (maybe moved) nor the juice (not what weight says)
    # the same with a cola (330 g) taken from the bottom: no 500 g thing, the cola is charged
    cola = cells("B1", "XXX.", "XX..")
    r = session(0.0, -330.0, oj, cola)
    assert "item_swapped" in r.flags and r.basket == {"cola": 1}


# --- what arrived looks like what left (ShelfVision.arrival_looks) ----------------------------

def _moved_water_or_juice(new_look: np.ndarray) -> R.ReconcileResult:
    # an orange juice (500 g) left A3 and a water (500 g) left B2; one item, looking like
    # `new_look`, now stands in an empty cell of the milk slot on the top shelf. Weights and
    # counts read both "the water moved up, the juice sold" and "the juice moved along its
    # shelf, the water sold": only what the item looks like tells which
    oj = cells("A3", "XXX.", "XX..", gone=(look(5),))
    water = cells("B2", "XX..", "X...", gone=(look(7),))
    arrived = cells("A1", "XXX.", "XXXX", new=((3, new_look),))
    return session(0.0, -500.0, oj, water, arrived)


def test_an_item_that_looks_like_the_water_that_left_is_the_water_moved_up():
    r = _moved_water_or_juice(look(7))
    assert r.basket == {"oj": 1} and r.flags == ()
    assert r.evidence["shelves"]["top"]["explained_by"] == {"oj": -1, "water": 1}


def test_an_item_that_looks_like_the_juice_that_left_is_the_juice_moved_along():
    r = _moved_water_or_juice(look(5))
    assert r.basket == {"water": 1} and r.flags == ()


def test_an_item_that_looks_like_neither_leaves_the_two_readings_unsure():
    r = _moved_water_or_juice(look(40))
    assert "low_confidence" in r.flags
    assert r.basket == {}  # neither is certain: nothing charged


def test_the_look_of_an_arrival_is_evidence_not_proof():
    # the same looks, but the top shelf lost 500 g net: the weights say the juice left and
    # nothing came up. A look that says "the water came up" cannot make that a sure answer:
    # flagged, and nothing charged beyond what left the cabinet
    oj = cells("A3", "XXX.", "XX..", gone=(look(5),))
    water = cells("B2", "XX..", "X...", gone=(look(7),))
    arrived = cells("A1", "XXX.", "XXXX", new=((3, look(7)),))
    r = session(-500.0, -500.0, oj, water, arrived)
    assert r.needs_review
    assert all(n <= {"oj": 1, "water": 1}.get(k, 0) for k, n in r.basket.items())


def _pair(similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Two colour signatures whose Bhattacharyya coefficient is `similarity`."""
    a, b = np.zeros(192), np.zeros(192)
    a[0] = 1.0
    b[0], b[1] = similarity ** 2, 1.0 - similarity ** 2
    return a, b


def test_a_thing_only_as_alike_as_two_different_products_is_a_stranger():
    # under the camera the tea left from, 0.65 is above the 1% line of same-product photo pairs
    # (0.51), but two photos of different products are 2.8 times likelier to be that alike than
    # two of one product (LOOK_LOG_LR): an item moved along its shelf is the same item under
    # the same light, so this one came from outside
    for sim, foreign in ((0.65, True), (0.90, False)):
        left, now = _pair(sim)
        tea = cells("A2", "XXX.", "XX..", gone=(left,))
        thing = cells("A1", "XXX.", "XXXX", new=((3, now),))
        r = session(0.0, 0.0, tea, thing)
        assert ("foreign_object" in r.flags) is foreign, sim
        assert r.evidence["strangers"] == ({"A1": [3]} if foreign else {})
    # under another camera (the bottom shelf's) light and angle differ: the product's line
    for sim, foreign in ((0.65, False), (0.45, True)):
        left, now = _pair(sim)
        tea = cells("A2", "XXX.", "XX..", gone=(left,))
        thing = cells("B2", "XX..", "XXX.", new=((2, now),))
        r = session(-420.0, 420.0, tea, thing)
        assert ("foreign_object" in r.flags) is foreign, sim


def test_an_item_that_left_the_cabinet_does_not_stand_in_another_shelfs_cell():
    # the tea left the top shelf and the top shelf is 420 g lighter: the tea was taken. On the
    # bottom shelf a cola left B1 and a thing is now in an empty cell of B2, the shelf's
    # weight unchanged: "the cola moved along its shelf", if the thing is the cola. It looks
    # nothing like the cola; it is 0.65 alike to the tea (above the product's line across
    # cameras), but the weights took the tea out of the cabinet, so the tea is not standing
    # there: it came from outside (T6-00072: a foreign thing of a yoghurt's weight put where
    # the yoghurt was, excused before by a lager that left another shelf)
    left, now = _pair(0.65)
    tea = cells("A2", "XXX.", "XX..", gone=(left,))
    cola = cells("B1", "XXX.", "XX..", gone=(look(9),))
    thing = cells("B2", "XX..", "XXX.", new=((2, now),))
    r = session(-420.0, 0.0, tea, cola, thing)
    assert r.evidence["strangers"] == {"B2": [2]} and "foreign_object" in r.flags
    assert r.basket == {"tea": 1}  # the certain part: the cola's fate is the operator's
    # the same thing where the cola left looks like the cola: the cola, moved along
    cola = cells("B1", "XXX.", "XX..", gone=(now,))
    r = session(-420.0, 0.0, tea, cola, thing)
    assert r.evidence["strangers"] == {} and r.flags == () and r.basket == {"tea": 1}
    # and where the weights bring the tea down (the bottom 420 g heavier, the cola still
    # there), 0.65 across cameras is the tea, moved
    r = session(-420.0, 420.0, tea, thing)
    assert r.evidence["strangers"] == {} and "foreign_object" not in r.flags


def test_strangers_take_items_from_under_another_camera_only_from_the_sources_given():
    from vision.diff import strangers
    left, now = _pair(0.65)
    ev = {"A2": cells("A2", "XXX.", "XX..", gone=(left,)),
          "B2": cells("B2", "XX..", "XXX.", new=((2, now),))}
    two = {"A2": "cam-top", "B2": "cam-bottom"}
    assert strangers(ev, two) == {}                     # any slot may be the source
    assert strangers(ev, two, {"B2": ["A2"]}) == {}     # the tea's slot is one
    assert strangers(ev, two, {"B2": []}) == {"B2": [2]}
    assert strangers(ev, two, {}) == {"B2": [2]}
    # under one camera the same-item line decides, among the sources
    one = {"A2": "cam", "B2": "cam"}
    assert strangers(ev, one, {"B2": ["A2"]}) == {"B2": [2]}
    near, here = _pair(0.9)
    ev["A2"], ev["B2"] = cells("A2", "XXX.", "XX..", gone=(near,)), cells("B2", "XX..", "XXX.", new=((2, here),))
    assert strangers(ev, one, {"B2": ["A2"]}) == {}
    assert strangers(ev, one, {"B2": []}) == {"B2": [2]}  # the tea cannot have come: however alike


def test_a_small_thing_in_a_cell_read_empty_that_changed_may_be_an_item_moved_there():
    # a cola (330 g) left the bottom shelf and the top shelf is 330 g heavier; no top cell
    # reads occupied where it did not, but A3's empty cell changed: the occupancy measure,
    # set by the full shelf's big cartons, can miss a can put there. The cola moved up is the
    # best guess (before: "cola taken and 330 g of something else on top"); the count it
    # contradicts keeps it in review, and nothing is charged
    cola = cells("B1", "XXX.", "XX..", gone=(look(9),))
    a3 = cells("A3", "XXX.", "XXX.", "   *")
    assert a3.changed_empty == 1 and a3.filled == 0 and a3.swappable == 0
    r = session(330.0, -330.0, cola, a3)
    assert r.best_guess == {} and r.basket == {}
    assert "unexplained_weight" not in r.flags and "foreign_object" not in r.flags and r.flags
    # where no top cell changed, nothing can have arrived: weight from elsewhere, flagged
    r = session(330.0, -330.0, cola)
    assert {"foreign_object", "unexplained_weight"} <= set(r.flags) and r.basket == {}
    # and the cola taken with the top shelf unchanged is charged as before
    r = session(0.0, -330.0, cola, a3)
    assert r.flags == () and r.basket == {"cola": 1}


def _bin0(similarity: float, spare: int) -> np.ndarray:
    """A colour signature `similarity` alike to look(0), the rest of its mass in bin `spare`."""
    v = np.zeros(192)
    v[0], v[spare] = similarity ** 2, 1.0 - similarity ** 2
    return v


def test_an_item_from_under_another_camera_looks_more_like_itself_than_like_that_cameras_other_products():
    # the tea left the top shelf and the bottom shelf is 420 g heavier: "the tea moved down".
    # Across cameras the thing now in B2 is 0.65 alike to the tea that left (above the
    # product's line), but 0.80 alike to the milks that stayed on the top shelf, seen in the
    # tea's own light: a moved tea would be likelier the tea than another product there, so
    # this came from outside (T6-00025: a foreign thing of a sour cream's weight on the top
    # shelf, 0.56-0.75 alike to the sour cream that left under another camera)
    thing = look(0)
    tea = cells("A2", "XXX.", "XX..", gone=(_bin0(0.65, 1),))
    new = cells("B2", "XX..", "XXX.", new=((2, thing),))
    milks = cells("A1", "XXX.", "XXX.", kept=(_bin0(0.80, 2), _bin0(0.78, 3), _bin0(0.83, 4)))
    r = session(-420.0, 420.0, tea, new, milks)
    assert r.evidence["strangers"] == {"B2": [2]} and "foreign_object" in r.flags
    assert r.basket == {}  # the tea's fate is the operator's
    # milks that look less like it than the tea does: the tea, moved
    milks = cells("A1", "XXX.", "XXX.", kept=(_bin0(0.40, 2), _bin0(0.45, 3), _bin0(0.50, 4)))
    r = session(-420.0, 420.0, tea, new, milks)
    assert r.evidence["strangers"] == {} and r.flags == () and r.basket == {}
    # one milk alike and two not: the product's look is the median of its items, not the best
    milks = cells("A1", "XXX.", "XXX.", kept=(_bin0(0.90, 2), _bin0(0.45, 3), _bin0(0.50, 4)))
    assert session(-420.0, 420.0, tea, new, milks).evidence["strangers"] == {}
    # milks that look like the tea (0.98 alike to it, a look-alike): more like the thing than
    # the tea is, but no yardstick: they would be as like a moved tea
    milks = cells("A1", "XXX.", "XXX.", kept=(_bin0(0.80, 1),) * 3)
    r = session(-420.0, 420.0, tea, new, milks)
    assert r.evidence["strangers"] == {} and r.flags == ()


def test_strangers_weigh_another_cameras_items_against_only_the_other_products_it_saw_stay():
    from vision.diff import strangers
    thing = look(0)
    ev = {"A1": cells("A1", "XXX.", "XX..", gone=(_bin0(0.65, 1),), kept=(_bin0(0.9, 5),)),
          "A2": cells("A2", "XXX.", "XXX.", kept=(_bin0(0.80, 2),)),
          "B2": cells("B2", "XX..", "XXX.", new=((2, thing),))}
    two = {"A1": "cam-top", "A2": "cam-top", "B2": "cam-bottom"}
    assert strangers(ev, two) == {}  # without products: the product's line alone
    assert strangers(ev, two, products={"A1": {"milk"}, "A2": {"tea"}, "B2": {"water"}}) == {"B2": [2]}
    # a slot of the same product is no rival (nor is the item's own slot's kept item)
    assert strangers(ev, two, products={"A1": {"milk"}, "A2": {"milk"}, "B2": {"water"}}) == {}
    # a rival under the arrival's own camera is in another light: not the yardstick
    bottom = {"A1": "cam-top", "A2": "cam-bottom", "B2": "cam-bottom"}
    assert strangers(ev, bottom, products={"A1": {"milk"}, "A2": {"tea"}, "B2": {"water"}}) == {}


def test_an_item_the_weights_take_off_a_shelf_does_not_stand_in_another_cell_of_it():
    # the tea taken from A2 (the top shelf 420 g lighter, less the thing), a cola gone from the
    # bottom shelf, and a thing of a cola's weight in an empty cell of A1: "the cola moved up,
    # the tea was taken". The thing looks nothing like the cola; it is 0.9 alike to the tea
    # that left under the same camera, but the weights took that tea out of the cabinet, so it
    # is not standing here: it came from outside (T6-00189: a thing of a cola's weight put in
    # the middle shelf, excused by an apple juice that left it and was charged)
    left, now = _pair(0.9)
    tea = cells("A2", "XXX.", "XX..", gone=(left,))
    thing = cells("A1", "XXX.", "XXXX", new=((3, now),))
    cola = cells("B1", "XXX.", "XX..", gone=(look(9),))
    r = session(-420.0 + 330.0, -330.0, tea, thing, cola)
    assert r.best_guess == {"tea": 1}
    assert r.evidence["strangers"] == {"A1": [3]} and "foreign_object" in r.flags
    # the tea moved along its shelf (the top shelf's weight unchanged), the cola taken: the
    # tea is standing there
    r = session(0.0, -330.0, tea, thing, cola)
    assert r.evidence["strangers"] == {} and r.flags == () and r.basket == {"cola": 1}


def test_a_thing_in_the_cell_an_item_left_must_look_like_what_the_weights_bring_there():
    # an orange juice taken from A3 and a thing of a cola's weight put in its cell; a cola gone
    # from the bottom shelf. Weights and counts read "the cola moved into the juice's cell, the
    # juice was taken"; the cell looks unlike the juice, which the arriving cola explains. But
    # the thing looks nothing like the cola that left: it came from outside (T6-00158)
    juice = cells("A3", "XXX.", "XXX.", "  *", alike=(None, None, UNLIKE, None),
                  gone=(look(3),), new=((2, look(0)),))
    r = session(-500.0 + 330.0, -330.0, juice, cells("B1", "XXX.", "XX..", gone=(look(9),)))
    assert r.best_guess == {"oj": 1} and "item_swapped" not in r.flags
    assert r.evidence["strangers"] == {"A3": [2]} and "foreign_object" in r.flags
    # the cola's own look: the cola, moved
    left, now = _pair(0.65)
    juice = cells("A3", "XXX.", "XXX.", "  *", alike=(None, None, UNLIKE, None),
                  gone=(look(3),), new=((2, now),))
    r = session(-500.0 + 330.0, -330.0, juice, cells("B1", "XXX.", "XX..", gone=(left,)))
    assert r.evidence["strangers"] == {} and r.flags == () and r.basket == {"oj": 1}


def test_a_thing_that_may_have_come_from_a_shelf_no_camera_read_is_not_judged():
    # the bundle carries no bottom camera: a cola gone from the bottom shelf (its weight says
    # so) and a thing of its weight on the top shelf, unlike anything that left a cell there.
    # It may be the cola, whose look nobody saw: not a stranger (the second world writes one
    # bundle in ten without one of its cameras; second-T4-00039, a soy yoghurt moved up)
    thing = cells("A1", "XXX.", "XXXX", new=((3, look(0)),))
    r = session(330.0, -330.0, thing, unseen=("B1", "B2"))
    assert r.evidence["strangers"] == {} and "foreign_object" not in r.flags
    # where the answer brings nothing from the unseen shelf, what the top camera saw is judged:
    # the tea that left A2 stays on the shelf (its weight unchanged), and the thing is not it
    tea = cells("A2", "XXX.", "XX..", gone=(look(3),))
    r = session(0.0, -330.0, tea, thing, unseen=("B1", "B2"))
    assert r.evidence["strangers"] == {"A1": [3]} and "foreign_object" in r.flags


def test_a_thing_that_may_have_come_from_a_shelf_whose_cells_were_not_read_is_not_judged():
    # the bottom camera was read but has no calibration frames: its slots say whether they were
    # touched, not what left which cell, so a cola that left has no look. The thing on the top
    # shelf may be it: not judged (as for a camera the bundle lacks)
    thing = cells("A1", "XXX.", "XXXX", new=((3, look(0)),))
    uncounted = [SlotEvidence(sid, 0.2, (), (), (), (), 0.0, identified=False)
                 for sid in ("B1", "B2")]
    r = session(330.0, -330.0, thing, *uncounted)
    assert r.evidence["strangers"] == {} and "foreign_object" not in r.flags
