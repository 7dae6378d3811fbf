"""The product-agnostic reader on images composed with plain numpy, not by the simulator.

A "camera" here is a smooth random back wall; items are random colour-block textures (and, with
the shared data, rectangles cut from product photos) pasted by array slicing; lighting, shake,
sensor noise and JPEG are applied with numpy and cv2.imencode. The reader has never seen any of
it: it learns the camera from calibration frames composed the same way (empty, full).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.calibration import CameraCalibration
from vision.diff import (CALIBRATION_SHIFTED, DARK, FROZEN, ID_SURE_MARGIN, NO_CALIBRATION, SHAKE, ShelfDiff, SlotSpec,
                         UNKNOWN, VisionInputError, align, slot_evidence)

W, H = 480, 320
SLOTS = [SlotSpec("A1", (20, 150, 200, 120), 4), SlotSpec("A2", (260, 150, 200, 120), 4)]
FULL = {"A1": ["p0", "p1", "p2", "p3"], "A2": ["q0", "q1", "q2", "q3"]}
CONDITIONS = {
    "clean": {},
    "dimmer": {"gain": 0.75},
    "side-light": {"gain": 1.1, "gradient": 0.25},
    "shake": {"shift": (3, -2)},
    "jpeg": {"jpeg": 60},
    "all": {"gain": 0.85, "gradient": 0.2, "shift": (-2, 2), "jpeg": 70},
}


def wall() -> np.ndarray:
    rng = np.random.default_rng(7)
    low = cv2.resize(rng.uniform(70, 190, (5, 7, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    return low + rng.normal(0, 4, (H, W, 3)).astype(np.float32)


WALL = wall()


def texture(key: str, w: int, h: int, photos: dict[str, np.ndarray] | None = None) -> np.ndarray:
    if photos and key in photos:
        return cv2.resize(photos[key], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    rng = np.random.default_rng(abs(hash(key)) % 2 ** 32)
    blocks = rng.uniform(0, 255, (4, 3, 3)).astype(np.float32)
    return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)


def compose(contents: dict[str, list[str | None]], *, gain: float = 1.0, gradient: float = 0.0,
            shift: tuple[int, int] = (0, 0), jpeg: int | None = None, seed: int = 0,
            photos: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """A shelf picture: items pasted by slicing, standing on each cell's floor."""
    img = WALL.copy()
    for spec in SLOTS:
        x, y, w, h = spec.roi
        img[y + h:y + h + 6, x:x + w] = 40.0  # the shelf board
        cw = w // spec.capacity
        for i, key in enumerate(contents.get(spec.slot_id, [])):
            if key is None:
                continue
            iw, ih = int(cw * 0.8), int(h * 0.8)
            x0 = x + i * cw + (cw - iw) // 2
            img[y + h - ih:y + h, x0:x0 + iw] = texture(key, iw, ih, photos)
    xs = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :, None]
    img = img * gain * (1.0 + gradient * xs)
    img = np.roll(img, shift=(shift[1], shift[0]), axis=(0, 1))
    img += np.random.default_rng(seed).normal(0, 2.5, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if jpeg is not None:
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, jpeg])[1], cv2.IMREAD_COLOR)
    return out


def calibration(photos=None) -> CameraCalibration:
    empty = np.median(np.stack([compose({}, seed=100 + i) for i in range(3)]), axis=0).astype(np.uint8)
    full = np.median(np.stack([compose(FULL, seed=200 + i, photos=photos) for i in range(3)]),
                     axis=0).astype(np.uint8)
    return CameraCalibration("cam", empty, full)


CAL = calibration()
STOCK = {"A1": ["p0", "p1", "p2", None], "A2": ["q0", "q1", None, None]}


def read(after_contents, condition="clean", before_contents=STOCK, **kw):
    before = compose(before_contents, seed=1)
    after = compose(after_contents, seed=2, **CONDITIONS[condition])
    return slot_evidence(before, after, SLOTS, camera="cam", calibration=kw.pop("calibration", CAL), **kw)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_nothing_moved_is_no_change_under_light_shake_noise_and_jpeg(condition):
    ev = read(STOCK, condition)
    for e in ev.values():
        assert e.usable and e.reason == "" and e.flags == ()
        assert e.change < 0.01, (e.slot_id, e.change)
        assert e.occupied_before == e.occupied_after
    assert ev["A1"].occupied_after == (True, True, True, False)
    assert ev["A2"].occupied_after == (True, True, False, False)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_taken_item_changes_its_slot_only_and_empties_its_facing(condition):
    ev = read({"A1": ["p0", "p1", None, None], "A2": STOCK["A2"]}, condition)
    a1, a2 = ev["A1"], ev["A2"]
    assert a1.change > 0.08 and a2.change < 0.01
    assert a1.change_area_px > 0.08 * 200 * 120
    assert a1.occupied_before == (True, True, True, False)
    assert a1.occupied_after == (True, True, False, False)
    assert a1.fill_before == pytest.approx(0.75, abs=0.12) and a1.fill_after == pytest.approx(0.5, abs=0.12)
    assert a2.fill_after == pytest.approx(0.5, abs=0.12)
    assert (a1.touched, a1.count_change, a2.touched, a2.count_change) == (True, -1, False, 0)


def test_a_returned_item_and_a_swapped_item():
    back = read({"A1": ["p0", "p1", "p2", "p9"], "A2": STOCK["A2"]})["A1"]
    assert back.change > 0.08 and back.occupied_after == (True, True, True, True)
    assert back.touched and back.count_change == 1
    # a swap keeps the count but not the picture: change without a count change
    swap = read({"A1": ["p0", "x1", "p2", None], "A2": STOCK["A2"]})["A1"]
    assert swap.change > 0.08
    assert swap.occupied_before == swap.occupied_after == (True, True, True, False)
    assert swap.touched and swap.count_change == 0


def test_without_a_recognizer_there_are_no_identities_and_no_claims():
    e = read({"A1": ["p0", None, None, None], "A2": STOCK["A2"]})["A1"]
    assert not e.identified and e.confidence == 0.0
    assert e.counts_before == e.counts_after == {} and e.foreign_after == 0
    assert e.skus_after == (None,) * 4 and e.identities_after == ((),) * 4


def test_without_calibration_change_is_still_read_and_occupancy_is_not_guessed():
    ev = read({"A1": ["p0", None, None, None], "A2": STOCK["A2"]}, calibration=None)
    assert ev["A1"].change > 0.1 and ev["A2"].change < 0.01
    for e in ev.values():
        assert e.usable and e.flags == (NO_CALIBRATION,)
        assert e.occupancy_after is None and e.fill_after is None and e.occupied_after == ()
        assert e.count_change is None
    assert ev["A1"].touched and not ev["A2"].touched


def test_a_moved_camera_is_flagged_against_its_calibration():
    moved = compose(STOCK, seed=3, shift=(0, 0))
    far = CameraCalibration("cam", np.ascontiguousarray(np.roll(CAL.empty, 60, axis=1)), None)
    e = slot_evidence(moved, compose(STOCK, seed=4), SLOTS, calibration=far)["A1"]
    assert CALIBRATION_SHIFTED in e.flags and e.occupancy_after is None
    assert e.usable and e.change < 0.01  # before/after still agree


class NotARecognizer:
    pass


@pytest.mark.parametrize("side", ["before", "after"])
@pytest.mark.parametrize("fault", ["dark", "missing", "blank"])
def test_a_dark_missing_or_blank_frame_is_unusable_never_unchanged(side, fault):
    good = compose(STOCK, seed=1)
    bad = {"dark": np.random.default_rng(0).integers(0, 8, good.shape, dtype=np.uint8),
           "missing": None, "blank": np.full_like(good, 128)}[fault]
    pair = (bad, good) if side == "before" else (good, bad)
    ev = slot_evidence(*pair, SLOTS, camera="cam-2", calibration=CAL)
    for e in ev.values():
        assert not e.usable and e.confidence == 0.0 and f"cam-2 {side}" in e.reason
        assert e.touched is None and e.count_change is None  # unknown, never "untouched"
        assert (e.occupied_before if side == "before" else e.occupied_after) == ()
    readable = ev["A1"].occupied_after if side == "before" else ev["A1"].occupied_before
    assert readable == (True, True, True, False)  # the good side is still read
    assert {"dark": DARK, "missing": "camera_missing", "blank": "camera_blank"}[fault] in ev["A1"].flags


def test_a_frozen_camera_is_flagged_not_read_as_nothing_changed():
    frame = compose(STOCK, seed=1)
    e = slot_evidence(frame, frame.copy(), SLOTS, camera="cam-3", calibration=CAL)["A1"]
    assert not e.usable and FROZEN in e.flags and "frozen" in e.reason


def test_too_much_shake_is_flagged():
    before = compose(STOCK, seed=1)
    after = compose(STOCK, seed=2, shift=(40, 0))
    e = slot_evidence(before, after, SLOTS, camera="cam-4", calibration=CAL)["A1"]
    assert not e.usable and SHAKE in e.flags and "too much shake" in e.reason


def test_alignment_recovers_a_small_shift():
    before = compose(STOCK, seed=1)
    al = align(compose(STOCK, seed=2, shift=(5, -3)), before)
    assert al.aligned is not None and al.shift_px == pytest.approx(np.hypot(5, 3), abs=0.6)


def test_bad_input_is_refused_with_a_clear_error():
    good = compose(STOCK)
    with pytest.raises(VisionInputError, match="cam-5 after image: expected an HxWx3 uint8 BGR image, got float32"):
        slot_evidence(good, good.astype(np.float32), SLOTS, camera="cam-5")
    with pytest.raises(VisionInputError, match=r"cam-5 before image: expected an HxWx3 uint8 BGR image, got uint8 \(320, 480\)"):
        slot_evidence(good[..., 0], good, SLOTS, camera="cam-5")
    with pytest.raises(VisionInputError, match="differ in size"):
        slot_evidence(good, good[:200], SLOTS, camera="cam-5")
    with pytest.raises(VisionInputError, match="expected a numpy BGR image, got list"):
        slot_evidence([[1]], good, SLOTS)
    with pytest.raises(VisionInputError, match="slot Z9: roi"):
        slot_evidence(good, good, [SlotSpec("Z9", (400, 0, 100, 100), 2)])
    with pytest.raises(VisionInputError, match="slot A1: slot listed twice"):
        slot_evidence(good, good, [SLOTS[0], SLOTS[0]])
    with pytest.raises(VisionInputError, match="needs slot_id, roi"):
        slot_evidence(None, None, [("A1", (0, 0, 10, 10))])
    with pytest.raises(VisionInputError, match="recognizer NotARecognizer: has no classify"):
        ShelfDiff(NotARecognizer())


def test_both_frames_missing_still_answers_every_slot():
    ev = slot_evidence(None, None, SLOTS, camera="cam-6")
    assert set(ev) == {"A1", "A2"}
    assert all(not e.usable and e.occupied_after == () and "cam-6 after" in e.reason for e in ev.values())


class HistogramRecognizer:
    """A real (if small) recognizer: the hue-saturation histogram of a crop against every
    train_* photo's, best Bhattacharyya coefficient per product as its score. It learns from
    train_* only; the shelf shows val_* photos."""

    def __init__(self, train: dict[str, list[np.ndarray]]):
        self.items = [(n, self._hist(p)) for n, ps in sorted(train.items()) for p in ps]

    @staticmethod
    def _hist(img: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        h = cv2.calcHist([hsv], [0, 1], None, [18, 4], [0, 180, 0, 256]).ravel()
        return h / max(float(h.sum()), 1.0)

    def classify(self, crops, top_k=3):
        out = []
        for crop in crops:
            q = self._hist(crop)
            best: dict[str, float] = {}
            for name, h in self.items:
                best[name] = max(best.get(name, 0.0), float(np.sqrt(q * h).sum()))
            out.append(sorted(best.items(), key=lambda kv: -kv[1])[:top_k])
        return out


def _photo(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    return img[h // 5:h - h // 5, w // 4:w - w // 4]


def test_real_photos_pasted_with_numpy_are_read_and_named_by_a_recognizer(shared_data):
    grocery = shared_data / "products" / "grocery"
    names = ["Arla-Standard-Milk", "Valio-Vanilla-Yoghurt", "Alpro-Blueberry-Soyghurt", "Bravo-Orange-Juice"]
    train = {n: [_photo(p) for p in sorted((grocery / n).glob("train_*.jpg"))] for n in names}
    rec = HistogramRecognizer(train)
    val = {n: sorted((grocery / n).glob("val_*.jpg")) for n in names}
    photos = {f"{n}:{i}": _photo(p) for n in names for i, p in enumerate(val[n])}
    # (this toy recognizer calls milk val photo 1 a blueberry soyghurt by a hair: left out)
    milk = [f"Arla-Standard-Milk:{i}" for i in (0, 2, 3, 4)]
    yog = [f"Valio-Vanilla-Yoghurt:{i}" for i in range(4)]
    cal = calibration(photos={**{f"p{i}": photos[milk[i]] for i in range(4)},
                              **{f"q{i}": photos[yog[i]] for i in range(4)}})
    before = compose({"A1": milk[:3] + [None], "A2": yog[:2] + [None, None]}, seed=1, photos=photos)
    after = compose({"A1": milk[:2] + [None, None], "A2": yog[:2] + [milk[2], None]}, seed=2,
                    photos=photos, gain=0.9, shift=(2, 1))
    sku_of = {"Arla-Standard-Milk": "milk-1l", "Valio-Vanilla-Yoghurt": "vanilla-yoghurt-150"}
    ev = slot_evidence(before, after, SLOTS, calibration=cal, recognizer=rec, sku_of=sku_of)
    a1, a2 = ev["A1"], ev["A2"]
    assert a1.identified and a1.counts_before == {"milk-1l": 3} and a1.counts_after == {"milk-1l": 2}
    # the milk put back among the yoghurts is named where it stands: a misplaced return
    assert a2.skus_after == ("vanilla-yoghurt-150", "vanilla-yoghurt-150", "milk-1l", None)
    assert a2.identities_after[2][0][0] == "Arla-Standard-Milk"
    assert a1.change > 0.08 and a2.change > 0.08
    for e in (a1, a2):  # as sure as the closest call between a cell's two best names
        margins = [min(1.0, (r[0][1] - r[1][1]) / ID_SURE_MARGIN)
                   for r in e.identities_before + e.identities_after if r]
        assert 0 < e.confidence == pytest.approx(min(margins), abs=1e-3)


def test_a_name_outside_the_catalog_is_foreign_and_an_unsure_one_is_unknown(shared_data):
    grocery = shared_data / "products" / "grocery"
    names = ["Arla-Standard-Milk", "Bravo-Orange-Juice"]
    rec = HistogramRecognizer({n: [_photo(p) for p in sorted((grocery / n).glob("train_*.jpg"))] for n in names})
    photos = {f"{n}:{i}": _photo(p) for n in names for i, p in enumerate(sorted((grocery / n).glob("val_*.jpg")))}
    cal = calibration(photos={"p0": photos["Arla-Standard-Milk:0"], "p1": photos["Bravo-Orange-Juice:0"]})
    shelf = compose({"A1": ["Arla-Standard-Milk:0", "Bravo-Orange-Juice:0", None, None]}, seed=1, photos=photos)
    after = compose({"A1": ["Arla-Standard-Milk:0", "Bravo-Orange-Juice:0", None, None]}, seed=2, photos=photos)
    # the juice is a product the recognizer knows but the catalog does not sell: not ours
    e = slot_evidence(shelf, after, SLOTS[:1], calibration=cal, recognizer=rec,
                      sku_of={"Arla-Standard-Milk": "milk-1l"})["A1"]
    assert e.skus_after == ("milk-1l", None, None, None)
    assert (e.foreign_after, e.unknown_after, e.counts_after) == (1, 0, {"milk-1l": 1})
    # a recognizer held to a bar it never reaches names nothing and calls nothing foreign
    unsure = ShelfDiff(rec, sku_of={"Arla-Standard-Milk": "milk-1l"}, min_score=1.01)
    e = unsure.evidence(shelf, after, SLOTS[:1], calibration=cal)["A1"]
    assert e.skus_after == (UNKNOWN, UNKNOWN, None, None)
    assert (e.foreign_after, e.unknown_after, e.counts_after, e.confidence) == (0, 2, {}, 0.0)
