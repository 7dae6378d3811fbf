"""vision.diff on the demo cabinet's own shelves: the demo catalog's looks, drawn in catalog
colours and (through the shared_data gate) with the product packshots from ../shared/data, as
the simulated cameras draw them; its planogram's slot geometry, any catalog item in any slot,
foreign things, under the simulator's noise, lighting, shake and JPEG. Every cell must be read
right, and sure."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cabinet.catalog import load_catalog, product_looks
from cabinet.planogram import load_planogram
from vision.diff import EMPTY_RMS, ShelfDiff, SlotSpec, lighting_gain, pad_image, slot_evidence
from vision.sim.render import ProductLook, ShelfView, SlotView, render_shelf

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CATALOG = load_catalog(FIXTURES / "catalog.yaml")
PLANOGRAM = load_planogram(FIXTURES / "planogram.yaml", CATALOG)
FLAT_LOOKS = product_looks(CATALOG)  # no packshots: a clone without ../shared/data
SKUS = sorted(FLAT_LOOKS)
CONDITIONS = {
    "clean": {},
    "dim": {"lighting": 0.6},
    "bright": {"lighting": 1.4},
    "jpeg": {"jpeg_quality": 40},
    "shake": {"shake_px": 3},
    "all": {"lighting": 0.8, "shake_px": 2, "jpeg_quality": 60},
    "all-bright": {"lighting": 1.35, "shake_px": 3, "jpeg_quality": 50},
}
SURE = 0.9


@pytest.fixture(scope="module", params=["catalog-colours", pytest.param("packshots", marks=pytest.mark.shared_data)])
def looks(request) -> dict[str, ProductLook]:
    """The looks cabinet.demo's cameras and reconcile use: product_looks(catalog, data root)."""
    if request.param == "catalog-colours":
        return FLAT_LOOKS
    with_shots = product_looks(CATALOG, request.getfixturevalue("shared_data"))
    assert sorted(with_shots) == SKUS
    missing = [p.sku for p in CATALOG.values() if p.images and with_shots[p.sku].image_path is None]
    assert not missing, f"catalog images not found in ../shared/data: {missing}"
    return with_shots


def shelf_view(shelf: str, contents: dict[str, tuple[str, ...]]) -> ShelfView:
    cam = PLANOGRAM.shelf(shelf).camera
    return ShelfView(cam, tuple(PLANOGRAM.camera_size), tuple(
        SlotView(s.id, tuple(s.roi), s.capacity, tuple(contents.get(s.id, ())))
        for s in PLANOGRAM.slots_on(shelf)))


def stocked(shelf: str) -> dict[str, tuple[str, ...]]:
    return {s.id: (s.sku,) * s.stock for s in PLANOGRAM.slots_on(shelf)}


def specs(shelf: str) -> list[SlotSpec]:
    return [SlotSpec(s.id, tuple(s.roi), s.capacity) for s in PLANOGRAM.slots_on(shelf)]


def cells(items: tuple[str, ...], capacity: int, looks) -> tuple[str | None, ...]:
    return tuple(k if k in looks else None for k in items) + (None,) * (capacity - len(items))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_middle_shelf_with_a_cola_in_the_orange_juice_slot(condition, looks):
    """The session reconcile once overcharged: an orange juice taken from B1 and a cola from
    the top shelf put in its place. Vision must say so plainly: B1 one juice fewer and a cola,
    every other slot unchanged."""
    before = stocked("middle")
    after = {**before, "B1": before["B1"][:-1] + ("cola-330",)}
    ev = slot_evidence(render_shelf(shelf_view("middle", before), looks, seed=3),
                       render_shelf(shelf_view("middle", after), looks, seed=4, **CONDITIONS[condition]),
                       specs("middle"), looks, camera="cam_middle")
    assert ev["B1"].counts_before == {"orange-juice-1l": 3}
    assert ev["B1"].counts_after == {"orange-juice-1l": 2, "cola-330": 1}
    assert ev["B1"].change > 0.05
    for sid in ("B2", "B3", "B4"):
        assert ev[sid].counts_before == ev[sid].counts_after, sid
    assert all(e.confidence >= SURE and e.foreign_after == 0 for e in ev.values()), ev


@given(shelf=st.sampled_from(["top", "middle", "bottom"]),
       fill=st.lists(st.lists(st.one_of(st.sampled_from(SKUS), st.sampled_from(["brick", "soap", "phone"])),
                              max_size=6), min_size=4, max_size=4),
       condition=st.sampled_from(sorted(CONDITIONS)), seed=st.integers(0, 10_000))
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_any_item_in_any_demo_slot_is_named_surely(looks, shelf, fill, condition, seed):
    slots = PLANOGRAM.slots_on(shelf)
    contents = {s.id: tuple(items[:s.capacity]) for s, items in zip(slots, fill)}
    img = render_shelf(shelf_view(shelf, contents), looks, seed=seed, **CONDITIONS[condition])
    reader = ShelfDiff(looks)
    for spec in specs(shelf):
        items = contents.get(spec.slot_id, ())
        occupied, skus, sure = reader.read_cells(img, spec)
        assert skus == cells(items, spec.capacity, looks), spec.slot_id
        assert occupied == tuple(i < len(items) for i in range(spec.capacity))
        assert sure >= SURE, (spec.slot_id, sure)


@pytest.mark.parametrize("lighting", [0.6, 1.0, 1.4])
def test_white_tubs_in_bright_light_are_not_the_empty_panel(lighting):
    """A near-white tub clips in bright light; compared with a clipped reference it still differs
    from the panel. (The old per-cell brightness normalisation read it as an empty facing.)"""
    contents = {"C3": ("sour-cream-300",) * 3, "C4": ("vanilla-yoghurt-150",) * 2}
    img = render_shelf(shelf_view("bottom", contents), FLAT_LOOKS, seed=9, lighting=lighting)
    assert lighting_gain(img) == pytest.approx(lighting, abs=0.03)
    reader = ShelfDiff(FLAT_LOOKS)
    c3, c4 = specs("bottom")[2:]
    assert reader.read_cells(img, c3)[1] == ("sour-cream-300",) * 3 + (None, None)
    assert reader.read_cells(img, c4)[1] == ("vanilla-yoghurt-150",) * 2 + (None,) * 4


def test_a_product_drawn_unlike_any_look_is_foreign_not_a_guess(tmp_path):
    """A camera showing something we have no look for (here: a packshot the reader was not
    given) reads it as occupied by something not ours, never as the nearest SKU."""
    shot = np.full((200, 100, 3), 255, np.uint8)
    rng = np.random.default_rng(0)
    shot[10:190, 8:92] = rng.integers(0, 255, (180, 84, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "odd.png"), shot)
    odd = {**FLAT_LOOKS, "odd-1l": ProductLook("odd-1l", "Odd", (40, 200, 40), tmp_path / "odd.png", "carton")}
    img = render_shelf(shelf_view("middle", {"B2": ("apple-juice-750", "odd-1l")}), odd, seed=1)
    occupied, skus, sure = ShelfDiff(FLAT_LOOKS).read_cells(img, specs("middle")[1])
    assert occupied == (True, True, False, False)
    assert skus == ("apple-juice-750", None, None, None)


def test_empty_cells_match_the_panel_closely(looks):
    img = render_shelf(shelf_view("top", {}), looks, seed=2, shake_px=3, jpeg_quality=40)
    reader = ShelfDiff(looks)
    padded, gain = pad_image(img), lighting_gain(img)
    x, y, w, h = PLANOGRAM.slot("A1").roi
    d = reader.distances(padded, (x, y, w // 6, h), gain)
    assert d[0] < EMPTY_RMS / 2 < d[1:].min()
