"""The reader on the demo cabinet's own shelves, seen by the simulated cameras as the demo runs
them: items drawn from val_* photos and iconic.jpg (the reader learns from neither), poses where
the customer left them, per-frame light, shake, noise, blur and JPEG. The reader is calibrated
the way `cabinet vision calibrate` does it: frames of the emptied and of the full shelves,
captured through the same camera port."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cabinet.catalog import load_catalog
from cabinet.planogram import load_planogram
from cabinet.simworld import SimWorld, shelf_view_fn
from vision.calibration import CameraCalibration, capture_stage
from vision.diff import DARK, ShelfDiff, SlotSpec
from vision.sim.camera import SimShelfCamera
from vision.sim.looks import foreign_photos, product_looks

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CATALOG = load_catalog(FIXTURES / "catalog.yaml")
PLANOGRAM = load_planogram(FIXTURES / "planogram.yaml", CATALOG)
CAMERAS = ("cam_top", "cam_bottom")


class Cabinet:
    """The demo's shelves, cameras and a calibration for each camera."""

    def __init__(self, data_root: Path | None, seed: int = 0):
        self.looks = product_looks(CATALOG, data_root)
        self.foreign = foreign_photos(data_root)
        self.calibration = {}
        for stage in ("empty", "full"):
            world = self._world({s.id: (0 if stage == "empty" else s.capacity) for s in PLANOGRAM.slots}, 90)
            frames = capture_stage({c: self._camera(world, c, 50 + len(stage)) for c in CAMERAS}, 2)
            for cam, frame in frames.items():
                prev = self.calibration.get(cam)
                self.calibration[cam] = CameraCalibration(cam, prev.empty, frame) if prev else \
                    CameraCalibration(cam, frame)
        self.world = self._world(PLANOGRAM.initial_stock(), seed)
        self.cams = {c: self._camera(self.world, c, seed) for c in CAMERAS}
        self.reader = ShelfDiff()

    def _world(self, levels, seed):
        world = SimWorld(PLANOGRAM, CATALOG, seed=seed)
        world.restock(levels)
        return world

    def _camera(self, world, cam, seed):
        return SimShelfCamera(shelf_view_fn(world, PLANOGRAM, cam), self.looks, seed=seed,
                              foreign_photos=self.foreign)

    def session(self, act) -> dict:
        before = {c: cam.capture() for c, cam in self.cams.items()}
        act(self.world)
        out = {}
        for c, cam in self.cams.items():
            specs = [SlotSpec(s.id, s.roi, s.capacity) for s in PLANOGRAM.slots_seen_by(c)]
            out.update(self.reader.evidence(before[c], cam.capture(), specs, camera=c,
                                            calibration=self.calibration[c]))
        return out


@pytest.fixture(scope="module")
def cabinet(request):
    return Cabinet(request.getfixturevalue("shared_data"))


def changed(ev, limit=0.01):
    return sorted(sid for sid, e in ev.items() if e.change > limit)


def counts(e):
    return sum(e.occupied_before), sum(e.occupied_after)


def test_demo_items_are_drawn_only_from_photos_the_reader_never_learns_from(shared_data):
    looks = product_looks(CATALOG, shared_data)
    with_photos = {sku for sku, lk in looks.items() if lk.photos}
    assert {"milk-1l", "milk-medium-1l", "milk-eco-1l", "orange-juice-1l"} <= with_photos
    for look in looks.values():
        assert all(p.name.startswith(("val_", "iconic")) for p in look.photos), look.sku
    assert looks["milk-medium-1l"].photos != looks["milk-eco-1l"].photos
    assert len(looks["milk-1l"].photos) >= 5  # a different photo per item on a shelf of four
    foreign = foreign_photos(shared_data)
    assert foreign and all("fridge_objects" in p.parts for p in foreign)


def test_nothing_moved_changes_no_slot(cabinet):
    ev = cabinet.session(lambda w: None)
    assert changed(ev, 0.005) == []
    assert all(e.usable and counts(e)[0] == counts(e)[1] for e in ev.values())
    assert all(e.touched is False and e.count_change == 0 for e in ev.values())


@pytest.mark.parametrize("slot", ["A4", "C1", "C3"])
def test_a_take_changes_that_slot_only_and_one_facing_empties(cabinet, slot):
    ev = cabinet.session(lambda w: w.take(slot))
    assert changed(ev) == [slot]
    before, after = counts(ev[slot])
    assert after == before - 1
    assert ev[slot].fill_after < ev[slot].fill_before
    assert sorted(sid for sid, e in ev.items() if e.touched) == [slot] and ev[slot].count_change == -1


def test_a_look_alike_milk_returned_to_its_neighbour_shows_in_both_slots(cabinet):
    # A4 and A5 hold Arla 1 l milks of one weight: only the camera can say one moved
    ev = cabinet.session(lambda w: [w.put("A5", item.sku) for item in w.take("A4")])
    assert changed(ev) == ["A4", "A5"]
    assert counts(ev["A4"])[1] == counts(ev["A4"])[0] - 1
    assert counts(ev["A5"])[1] == counts(ev["A5"])[0] + 1
    cabinet.world.leave()


def test_a_foreign_object_left_in_a_slot_occupies_it(cabinet):
    ev = cabinet.session(lambda w: w.put_foreign("C2", 40.0, "keys"))
    assert changed(ev) == ["C2"]
    e = ev["C2"]
    assert counts(e)[1] == counts(e)[0] + 1 and not e.identified and e.counts_after == {}


def test_a_dark_camera_is_reported_not_read(cabinet):
    cabinet.cams["cam_bottom"].set_fault("dark")
    try:
        ev = cabinet.session(lambda w: w.take("C1"))
    finally:
        cabinet.cams["cam_bottom"].set_fault(None)
    bottom = [e for sid, e in ev.items() if sid.startswith("C")]
    assert bottom and all(not e.usable and DARK in e.flags for e in bottom)
    assert all(e.usable for sid, e in ev.items() if sid.startswith("A"))
    cabinet.world.leave()


def test_without_shared_photos_the_flat_shelves_are_still_read():
    flat = Cabinet(None, seed=3)
    assert not any(lk.photos for lk in flat.looks.values())
    ev = flat.session(lambda w: w.take("A2"))
    assert changed(ev) == ["A2"] and counts(ev["A2"])[1] == counts(ev["A2"])[0] - 1
