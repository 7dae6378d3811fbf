"""Per-slot evidence on rendered before/after pairs: takes, returns, misplaced and foreign
items, under noise, lighting change, JPEG and shake; dark or missing frames; bad input."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vision.diff import ShelfDiff, SlotSpec, VisionInputError, slot_evidence
from vision.sim.render import ProductLook, ShelfView, SlotView, render_shelf

SKUS = ("cola-330", "water-500", "oat-milk", "yog-straw", "juice-or", "choc-bar")
LOOKS = {s: ProductLook.for_sku(s, s.replace("-", " ").title()) for s in SKUS}
GEOMETRY = {"A1": ((20, 20, 290, 140), 4), "A2": ((330, 20, 290, 140), 4), "B1": ((20, 200, 600, 150), 6),
            "C1": ((20, 370, 300, 100), 5)}
SLOTS = [SlotSpec(sid, roi, cap) for sid, (roi, cap) in GEOMETRY.items()]
CONDITIONS = {
    "clean": {},
    "dim": {"lighting": 0.7},
    "bright": {"lighting": 1.3},
    "jpeg": {"jpeg_quality": 55},
    "shake": {"shake_px": 2},
    "all": {"lighting": 0.8, "shake_px": 2, "jpeg_quality": 65},
}
STOCK = {"A1": ("cola-330",) * 3, "A2": ("water-500", "water-500"), "B1": ("oat-milk",) * 5, "C1": ("yog-straw",) * 2}


def view(contents: dict[str, tuple[str, ...]]) -> ShelfView:
    return ShelfView("shelf-1", (640, 480), tuple(
        SlotView(sid, roi, cap, tuple(contents.get(sid, ()))) for sid, (roi, cap) in GEOMETRY.items()))


def evidence(after_contents, condition="clean", before_contents=STOCK):
    before = render_shelf(view(before_contents), LOOKS, seed=11)
    after = render_shelf(view(after_contents), LOOKS, seed=12, **CONDITIONS[condition])
    return slot_evidence(before, after, SLOTS, LOOKS, camera="shelf-1")


@pytest.mark.parametrize("condition", CONDITIONS)
def test_nothing_moved_reads_the_stock_and_no_change(condition):
    ev = evidence(STOCK, condition)
    for sid, items in STOCK.items():
        e = ev[sid]
        assert e.usable and e.change < 0.02, (sid, e)
        assert e.skus_before == e.skus_after == items + (None,) * (GEOMETRY[sid][1] - len(items))
        assert e.occupied_after == tuple(i < len(items) for i in range(GEOMETRY[sid][1]))
        assert e.confidence > 0.5


@pytest.mark.parametrize("condition", CONDITIONS)
def test_taken_item_shows_as_an_emptied_facing(condition):
    ev = evidence({**STOCK, "A1": ("cola-330",) * 2}, condition)
    a1 = ev["A1"]
    assert a1.counts_before == {"cola-330": 3} and a1.counts_after == {"cola-330": 2}
    assert a1.occupied_after == (True, True, False, False)
    assert a1.change > 0.05
    assert all(ev[s].change < 0.02 for s in ("A2", "B1", "C1"))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_returned_item_is_back(condition):
    ev = evidence(STOCK, condition, before_contents={**STOCK, "B1": ("oat-milk",) * 4})
    assert ev["B1"].counts_before == {"oat-milk": 4} and ev["B1"].counts_after == {"oat-milk": 5}
    assert ev["B1"].change > 0.03


@pytest.mark.parametrize("condition", CONDITIONS)
def test_misplaced_item_is_named_in_the_wrong_slot(condition):
    ev = evidence({**STOCK, "A2": ("water-500", "water-500", "juice-or")}, condition)
    assert ev["A2"].skus_after[2] == "juice-or"
    assert ev["A2"].counts_after == {"water-500": 2, "juice-or": 1}
    assert ev["A2"].change > 0.05


@pytest.mark.parametrize("condition", CONDITIONS)
def test_foreign_object_is_occupied_but_not_a_catalog_sku(condition):
    ev = evidence({**STOCK, "C1": ("yog-straw", "half-brick")}, condition)
    c1 = ev["C1"]
    assert c1.occupied_after[:2] == (True, True)
    assert c1.skus_after[:2] == ("yog-straw", None)
    assert c1.foreign_after == 1 and c1.foreign_before == 0


def test_item_swapped_for_a_foreign_object_changes_the_slot():
    ev = evidence({**STOCK, "A1": ("cola-330", "cola-330", "soap")}, "all")
    assert ev["A1"].foreign_after == 1 and ev["A1"].counts_after == {"cola-330": 2}
    assert ev["A1"].change > 0.05


@given(contents=st.fixed_dictionaries({
    sid: st.lists(st.sampled_from(SKUS + ("pebble",)), max_size=cap) for sid, (_, cap) in GEOMETRY.items()}),
    condition=st.sampled_from(sorted(CONDITIONS)), seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_shelf_is_read_cell_by_cell(contents, condition, seed):
    img = render_shelf(view({k: tuple(v) for k, v in contents.items()}), LOOKS, seed=seed, **CONDITIONS[condition])
    reader = ShelfDiff(LOOKS)
    for spec in SLOTS:
        occupied, skus, _ = reader.read_cells(img, spec)
        truth = contents[spec.slot_id]
        want = tuple(None if s == "pebble" else s for s in truth) + (None,) * (spec.capacity - len(truth))
        assert skus == want
        assert occupied == tuple(i < len(truth) for i in range(spec.capacity))


@pytest.mark.parametrize("which", ["before", "after"])
@pytest.mark.parametrize("frame", ["dark", "missing", "blank"])
def test_dark_or_missing_frame_is_flagged_not_read(which, frame):
    good = render_shelf(view(STOCK), LOOKS, seed=1)
    bad = {"dark": np.random.default_rng(0).integers(0, 8, good.shape, dtype=np.uint8),
           "missing": None, "blank": np.full_like(good, 128)}[frame]
    pair = (bad, good) if which == "before" else (good, bad)
    ev = slot_evidence(*pair, SLOTS, LOOKS, camera="shelf-2")
    for e in ev.values():
        assert not e.usable and e.confidence == 0.0
        assert f"shelf-2 {which}" in e.reason
        assert (e.occupied_before if which == "before" else e.occupied_after) == ()
    readable = ev["A1"].skus_after if which == "before" else ev["A1"].skus_before
    assert readable == ("cola-330",) * 3 + (None,)


def test_bad_input_is_refused_with_a_clear_error():
    good = render_shelf(view(STOCK), LOOKS, seed=1)
    with pytest.raises(VisionInputError, match="shelf-3 after image: expected dtype uint8, got float32"):
        slot_evidence(good, good.astype(np.float32), SLOTS, LOOKS, camera="shelf-3")
    with pytest.raises(VisionInputError, match=r"before image: expected shape \(H, W, 3\) BGR, got \(480, 640\)"):
        slot_evidence(good[..., 0], good, SLOTS, LOOKS, camera="shelf-3")
    with pytest.raises(VisionInputError, match="differ in size"):
        slot_evidence(good, good[:240], SLOTS, LOOKS, camera="shelf-3")
    with pytest.raises(VisionInputError, match="expected a numpy image, got list"):
        slot_evidence([[1]], good, SLOTS, LOOKS)
    with pytest.raises(VisionInputError, match="slot Z9: roi"):
        slot_evidence(good, good, [SlotSpec("Z9", (600, 0, 100, 100), 2)], LOOKS)
    with pytest.raises(VisionInputError, match="slot A1: slot listed twice"):
        slot_evidence(good, good, [SLOTS[0], SLOTS[0]], LOOKS)


def test_slot_views_serve_as_slot_specs():
    v = view(STOCK)
    img = render_shelf(v, LOOKS, seed=5)
    ev = slot_evidence(img, img, v.slots, LOOKS)
    assert ev["A1"].change == 0.0 and ev["A1"].counts_after == {"cola-330": 3}


def test_both_frames_missing_still_answers_every_slot():
    ev = slot_evidence(None, None, SLOTS, LOOKS, camera="shelf-4")
    assert set(ev) == set(GEOMETRY)
    assert all(not e.usable and e.occupied_after == () and "shelf-4 after" in e.reason for e in ev.values())
    with pytest.raises(VisionInputError, match="needs slot_id, roi"):
        slot_evidence(None, None, [("A1", (0, 0, 10, 10))], LOOKS)
