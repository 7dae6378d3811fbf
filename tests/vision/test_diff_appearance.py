"""What a changed facing cell looks like before and after (vision.diff's appearance
signature), knowing no product: a put-back item looks like itself, a thing swapped into its
cell does not. The line (SAME_ITEM_MIN_SIMILARITY) comes from real photos, never from the
simulator: `python -m vision.calibration appearance`. Shelf images here are composed with
numpy from real photos (val_* and fridge_objects, none of which set the line: it is set on
train_* pairs of one product against fridge_objects)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.calibration import CameraCalibration, look_log_lr_table, measure_appearance
from vision.diff import (LOOK_LOG_LR, LOOK_LR_CAP, LOOK_SAME_FROM, SAME_ITEM_MIN_SIMILARITY, SlotSpec,
                         VisionInputError, appearance, look_log_lr,
                         appearance_similarity, slot_evidence, strangers)

W, H = 480, 320
SLOTS = [SlotSpec("A1", (20, 150, 200, 120), 4), SlotSpec("A2", (260, 150, 200, 120), 4)]


def _wall() -> np.ndarray:
    rng = np.random.default_rng(7)
    low = cv2.resize(rng.uniform(70, 190, (5, 7, 3)).astype(np.float32), (W, H),
                     interpolation=cv2.INTER_CUBIC)
    return low + rng.normal(0, 4, (H, W, 3)).astype(np.float32)


WALL = _wall()


def compose(contents: dict[str, list[np.ndarray | None]], *, seed: int, gain: float = 1.0,
            shift: tuple[int, int] = (0, 0), nudge: dict[tuple[str, int], int] | None = None
            ) -> np.ndarray:
    """A shelf picture: each item a photo pasted by slicing on its cell's floor (`nudge`
    moves one item sideways by some pixels: put back a little off)."""
    img = WALL.copy()
    for spec in SLOTS:
        x, y, w, h = spec.roi
        img[y + h:y + h + 6, x:x + w] = 40.0
        cw = w // spec.capacity
        for i, photo in enumerate(contents.get(spec.slot_id, [])):
            if photo is None:
                continue
            iw, ih = int(cw * 0.8), int(h * 0.8)
            x0 = x + i * cw + (cw - iw) // 2 + (nudge or {}).get((spec.slot_id, i), 0)
            img[y + h - ih:y + h, x0:x0 + iw] = cv2.resize(photo, (iw, ih), interpolation=cv2.INTER_AREA)
    img = np.roll(img * gain, shift=(shift[1], shift[0]), axis=(0, 1))
    img += np.random.default_rng(seed).normal(0, 2.5, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _photo(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    return img[h // 5:h - h // 5, w // 4:w - w // 4]


@pytest.fixture(scope="module")
def photos(shared_data):
    grocery = shared_data / "products" / "grocery"
    val = {n: [_photo(p) for p in sorted((grocery / n).glob("val_*.jpg"))]
           for n in ("Arla-Standard-Milk", "Bravo-Orange-Juice")}
    things = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in
              sorted((shared_data / "products" / "fridge_objects" / "images").glob("*.jpg"))]
    return val, things


def test_the_line_is_the_first_percentile_of_real_same_product_pairs(shared_data):
    m = measure_appearance(shared_data)
    assert m["same_pairs"] > 10_000 and m["products"] == 31
    # the constant is what the command measures on the photos, not a number chosen by hand
    assert m["same_p1"] == pytest.approx(SAME_ITEM_MIN_SIMILARITY, abs=0.005)
    # and it catches most things that are not products, some other products
    assert m["not_products_below_p1"] >= 0.7
    assert 0.0 < m["other_products_below_p1"] < m["not_products_below_p1"]
    # the likelihood-ratio table the reconcile's arrival looks read is measured too
    assert m["log_lr"] == pytest.approx(list(LOOK_LOG_LR), abs=0.05)


def test_the_look_ratio_rises_with_similarity_and_is_capped():
    sims = np.linspace(0.0, 1.0, 101)
    nats = [look_log_lr(float(v)) for v in sims]
    assert all(a <= b for a, b in zip(nats, nats[1:]))
    assert nats[-1] == LOOK_LR_CAP and all(abs(v) <= LOOK_LR_CAP for v in nats)
    # alike as two photos of one product usually are (median 0.81): for "the same item"
    assert look_log_lr(0.81) > 0 > look_log_lr(SAME_ITEM_MIN_SIMILARITY)
    # the line `unlike` and `strangers` use: where the ratio crosses 0
    assert look_log_lr(LOOK_SAME_FROM) == pytest.approx(0.0, abs=1e-6)
    assert SAME_ITEM_MIN_SIMILARITY < LOOK_SAME_FROM < 0.81
    with pytest.raises(VisionInputError, match="look similarity"):
        look_log_lr(float("nan"))
    tbl = look_log_lr_table(np.array([0.9, 0.95, 0.85]), np.array([0.3, 0.5, 0.6, 0.95]), step=0.25)
    assert len(tbl) == 4 and tbl == sorted(tbl)


def test_a_crop_is_alike_itself_and_bad_crops_are_refused():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    assert appearance(crop).sum() == pytest.approx(1.0)
    assert appearance_similarity(crop, crop) == pytest.approx(1.0)
    red, blue = np.zeros((30, 20, 3), np.uint8), np.zeros((30, 20, 3), np.uint8)
    red[..., 2], blue[..., 0] = 200, 200
    assert appearance_similarity(red, blue) < SAME_ITEM_MIN_SIMILARITY
    with pytest.raises(VisionInputError, match="appearance crop"):
        appearance(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(VisionInputError, match="appearance crop"):
        appearance(np.zeros((10, 5), np.uint8))


def _read(photos, after_a1, *, nudge=None):
    (val, things) = photos
    milk, juice = val["Arla-Standard-Milk"], val["Bravo-Orange-Juice"]
    empty = np.median(np.stack([compose({}, seed=100 + i) for i in range(3)]), axis=0).astype(np.uint8)
    full = np.median(np.stack([compose({"A1": milk[:4], "A2": juice[:4]}, seed=200 + i)
                               for i in range(3)]), axis=0).astype(np.uint8)
    cal = CameraCalibration("cam", empty, full)
    before = compose({"A1": [milk[0], milk[1], milk[2], None], "A2": [juice[0], juice[1], None, None]}, seed=1)
    after = compose({"A1": after_a1, "A2": [juice[0], juice[1], None, None]}, seed=2, gain=0.9,
                    shift=(2, 1), nudge=nudge)
    return slot_evidence(before, after, SLOTS, camera="cam", calibration=cal)


def test_an_item_put_back_a_little_off_looks_like_itself(photos):
    val, _ = photos
    milk = val["Arla-Standard-Milk"]
    # the milk of cell 1 taken and put back, 4 px off, under dimmer light and a shaken camera
    ev = _read(photos, [milk[0], milk[1], milk[2], None], nudge={("A1", 1): 4})["A1"]
    assert ev.swappable == 1 and ev.cells_alike[0] is None and ev.cells_alike[1] is not None
    assert ev.cells_alike[1] >= SAME_ITEM_MIN_SIMILARITY and ev.unlike == 0
    # another milk of the same product (another photo) in its place: alike too
    ev = _read(photos, [milk[0], milk[3], milk[2], None])["A1"]
    assert ev.swappable == 1 and ev.cells_alike[1] >= SAME_ITEM_MIN_SIMILARITY and ev.unlike == 0


def test_a_thing_swapped_into_a_cell_does_not_look_like_the_item(photos):
    val, things = photos
    milk = val["Arla-Standard-Milk"]
    ev = _read(photos, [milk[0], things[0], milk[2], None])["A1"]
    assert ev.swappable == 1 and ev.count_change == 0  # count and mask: "put back"
    assert ev.cells_alike[1] < SAME_ITEM_MIN_SIMILARITY and ev.unlike == 1
    assert len(ev.gone_looks) == 1 and [i for i, _ in ev.new_looks] == [1]


def test_items_that_changed_places_in_a_slot_look_like_what_left_it(photos):
    """Two cells of a slot gave up an item: what is in the changed one now is one of the items
    that left a cell of the slot (item line against each), or a thing from elsewhere."""
    val, things = photos
    milk = val["Arla-Standard-Milk"]
    # cell 1's milk taken and cell 2's milk pushed into its place: cell 2 emptied
    ev = _read(photos, [milk[0], milk[2], None, None])["A1"]
    assert (ev.departed, ev.filled, ev.unlike) == (2, 0, 0)
    # cell 2's milk taken and a thing where cell 1's milk was
    ev = _read(photos, [milk[0], things[0], None, None])["A1"]
    assert (ev.departed, ev.filled, ev.unlike) == (2, 0, 1)


def test_another_product_where_two_items_left_is_unlike_both_though_above_the_product_line(
        photos, shared_data):
    """A sour cream where cell 1's milk was, cell 2's milk taken: 0.64 alike to the milk (above
    the product's 1% line, which two photos of one product pass), yet likelier another product
    than either milk that left the slot (look_log_lr < 0 against each): unlike."""
    val, _ = photos
    milk = val["Arla-Standard-Milk"]
    cream = _photo(sorted((shared_data / "products" / "grocery" / "Arla-Sour-Cream")
                          .glob("val_*.jpg"))[0])
    ev = _read(photos, [milk[0], cream, None, None])["A1"]
    assert ev.departed == 2 and ev.cells_alike[1] >= SAME_ITEM_MIN_SIMILARITY
    assert ev.unlike == 1


def test_a_thing_in_an_empty_cell_like_nothing_that_left_is_a_stranger(photos):
    val, things = photos
    milk = val["Arla-Standard-Milk"]
    # a milk moved from cell 2 to the empty cell 3: it looks like what left cell 2
    moved = _read(photos, [milk[0], milk[1], None, milk[2]])
    assert strangers(moved) == {}
    # a milk taken from cell 2 and a thing put in cell 3
    thing = _read(photos, [milk[0], milk[1], None, things[0]])
    assert strangers(thing) == {"A1": [3]}
