"""The synthetic shelf renderer: deterministic, the right shape, and each camera effect real."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vision.sim.render import (CAMERA_LIKE, PACKAGES, ItemPose, Optics, ProductLook, RenderError, ShelfView, SlotView, facing_boxes,
                           render_cell, render_shelf)

LOOKS = {s: ProductLook.for_sku(s, s.title()) for s in ("cola-330", "water-500", "oat-milk")}


def shelf(a=("cola-330", "cola-330"), b=("water-500",)) -> ShelfView:
    return ShelfView("shelf-1", (640, 480), (
        SlotView("A1", (20, 20, 290, 140), 4, tuple(a)),
        SlotView("A2", (330, 20, 290, 140), 4, tuple(b)),
    ))


def test_same_arguments_same_pixels_and_shape():
    one = render_shelf(shelf(), LOOKS, seed=7, lighting=0.8, shake_px=2, jpeg_quality=70)
    two = render_shelf(shelf(), LOOKS, seed=7, lighting=0.8, shake_px=2, jpeg_quality=70)
    assert one.shape == (480, 640, 3) and one.dtype == np.uint8
    assert np.array_equal(one, two)
    assert not np.array_equal(one, render_shelf(shelf(), LOOKS, seed=8, lighting=0.8, shake_px=2, jpeg_quality=70))


def test_for_sku_is_deterministic_and_valid():
    a, b = ProductLook.for_sku("cola-330"), ProductLook.for_sku("cola-330")
    assert a == b and a.name == "cola-330"
    assert a.shape in PACKAGES
    looks = [ProductLook.for_sku(f"sku-{i}") for i in range(40)]
    assert len({lk.color_bgr for lk in looks}) > 30  # the SKU text spreads colours out


def test_items_drawn_in_their_facings_and_empty_cells_show_the_panel():
    img = render_shelf(shelf(a=("cola-330",), b=()), LOOKS, seed=1)
    cells = facing_boxes((20, 20, 290, 140), 4)
    stds = [float(img[y:y + h, x:x + w].std()) for x, y, w, h in cells]
    assert stds[0] > 20  # a product
    assert all(s < 5 for s in stds[1:])  # the plain back panel with sensor noise


def test_lighting_scales_brightness_and_jpeg_changes_pixels():
    base = render_shelf(shelf(), LOOKS, seed=3).astype(float)
    dim = render_shelf(shelf(), LOOKS, seed=3, lighting=0.5).astype(float)
    assert 0.45 < dim.mean() / base.mean() < 0.55
    jpeg = render_shelf(shelf(), LOOKS, seed=3, jpeg_quality=30).astype(float)
    assert 0.5 < np.abs(jpeg - base).mean() < 10


def shift_between(still: np.ndarray, moved: np.ndarray, reach: int) -> list[tuple[int, int]]:
    """Every (sx, sy) within reach for which `moved` is `still` shifted by it, pixel for pixel,
    away from the replicated border."""
    H, W = still.shape[:2]
    inner = (slice(reach, H - reach), slice(reach, W - reach))
    return [(sx, sy) for sy in range(-reach, reach + 1) for sx in range(-reach, reach + 1)
            if np.array_equal(moved[inner], still[reach + sy:H - reach + sy, reach + sx:W - reach + sx])]


def test_shake_moves_the_whole_picture_by_at_most_shake_px():
    """Shake is one shift of the finished frame: with the same seed (same sensor noise) the
    shaken frame is the still one moved by a single offset within shake_px."""
    shifts = []
    for seed in range(4, 12):
        still = render_shelf(shelf(), LOOKS, seed=seed)
        moved = render_shelf(shelf(), LOOKS, seed=seed, shake_px=3)
        found = shift_between(still, moved, 3)
        assert len(found) == 1, (seed, found)
        shifts.append(found[0])
    assert len(set(shifts)) > 1 and any(s != (0, 0) for s in shifts), shifts


def test_unknown_sku_is_drawn_as_a_grey_lump():
    img = render_shelf(shelf(a=("a-brick",), b=()), LOOKS, seed=2)
    x, y, w, h = facing_boxes((20, 20, 290, 140), 4)[0]
    cell = img[y:y + h, x:x + w].astype(int)
    hsv = cv2.cvtColor(img[y:y + h, x:x + w], cv2.COLOR_BGR2HSV)
    assert cell.std() > 10
    assert np.median(hsv[..., 1]) < 40  # neutral, not a coloured package


def test_packshot_is_pasted(tmp_path):
    shot = np.full((200, 100, 3), 255, np.uint8)
    shot[20:180, 10:90] = (0, 0, 255)  # a red product on a white studio background
    path = tmp_path / "iconic.png"
    cv2.imwrite(str(path), shot)
    look = ProductLook("red-box", "Red Box", (255, 0, 0), path, "carton")
    cell = render_cell(look, (70, 140))
    red = (cell[..., 2] > 200) & (cell[..., 0] < 60)
    assert red.mean() > 0.3  # the packshot, cropped to the product, fills the body


def test_bad_views_are_refused_with_the_slot_named():
    too_wide = ShelfView("shelf-9", (320, 240), (SlotView("B4", (200, 10, 200, 100), 2, ()),))
    with pytest.raises(RenderError, match="shelf-9, slot B4: roi"):
        render_shelf(too_wide, LOOKS)
    over = ShelfView("shelf-9", (320, 240), (SlotView("B5", (0, 0, 100, 100), 1, ("cola-330",) * 2),))
    with pytest.raises(RenderError, match="B5: 2 items exceed the capacity 1"):
        render_shelf(over, LOOKS)
    with pytest.raises(RenderError, match="color_bgr"):
        ProductLook("x", "X", (300, 0, 0))
    with pytest.raises(RenderError, match="packshot"):
        render_cell(ProductLook("x", "X", (1, 2, 3), "/nonexistent/iconic.jpg"), (60, 120))


# --- looking like a camera (Optics) ------------------------------------------------------------

def solid_photos(tmp_path, name: str, colours) -> tuple:
    """In-store-like photos of one flat colour each (the centre is what an item shows)."""
    out = []
    for i, bgr in enumerate(colours):
        path = tmp_path / f"val_{name}_{i}.png"
        cv2.imwrite(str(path), np.full((120, 90, 3), bgr, np.uint8))
        out.append(path)
    return tuple(out)


def still(**kw) -> Optics:
    """Optics with every per-frame effect off, so a test sees one effect at a time."""
    base = dict(keystone=0.0, vignette=0.0, gradient=0.0, tint=0.0, shake_deg=0.0, blur_sigma=0.0, noise_sigma=0.0)
    return Optics(**{**base, **kw})


def one_slot(skus, poses=(), size=(320, 240)) -> ShelfView:
    return ShelfView("cam-x", size, (SlotView("A1", (20, 60, 280, 160), 4, tuple(skus), tuple(poses)),))


def item_colour(img, cell_index, roi=(20, 60, 280, 160), capacity=4):
    x, y, w, h = facing_boxes(roi, capacity)[cell_index]
    patch = img[y + h // 2:y + h - 4, x + w // 3:x + 2 * w // 3]
    return patch.reshape(-1, 3).mean(axis=0)


def test_each_physical_item_is_drawn_from_its_own_photo(tmp_path):
    photos = solid_photos(tmp_path, "milk", [(0, 0, 220), (0, 200, 0), (200, 0, 0)])
    looks = {"milk": ProductLook("milk", "Milk", (128, 128, 128), package="carton", photos=photos)}
    poses = [ItemPose(serial=s) for s in (0, 1, 2)]
    img = render_shelf(one_slot(["milk"] * 3, poses), looks, optics=still())
    got = [np.argmax(item_colour(img, i)) for i in range(3)]
    assert got == [2, 1, 0]  # red, green, blue: serial k shows photo k
    again = render_shelf(one_slot(["milk"] * 3, [ItemPose(serial=s) for s in (2, 2, 2)]), looks, optics=still())
    assert [np.argmax(item_colour(again, i)) for i in range(3)] == [0, 0, 0]


def test_items_stand_where_the_customer_left_them(tmp_path):
    photos = solid_photos(tmp_path, "box", [(0, 0, 220)])
    looks = {"box": ProductLook("box", "Box", (128, 128, 128), package="carton", photos=photos)}
    upright = render_shelf(one_slot(["box"]), looks, optics=still())
    shifted = render_shelf(one_slot(["box"], [ItemPose(dx=0.8)]), looks, optics=still())
    tilted = render_shelf(one_slot(["box"], [ItemPose(angle=25.0)]), looks, optics=still())
    red = lambda img: (img[..., 2] > 150) & (img[..., 1] < 80)  # noqa: E731
    cols = lambda img: np.nonzero(red(img).any(axis=0))[0]  # noqa: E731
    assert cols(shifted).mean() - cols(upright).mean() == pytest.approx(0.8 * 70, abs=4)
    assert len(cols(tilted)) > len(cols(upright)) + 5  # a tilted box is wider on screen
    pushed = render_shelf(one_slot(["box"], [ItemPose(depth=1.0)]), looks, optics=still())
    assert red(pushed).sum() < 0.85 * red(upright).sum()  # farther back: smaller


def test_a_neighbour_in_front_hides_the_one_behind(tmp_path):
    looks = {"r": ProductLook("r", "R", (0, 0, 0), package="carton", photos=solid_photos(tmp_path, "r", [(0, 0, 220)])),
             "g": ProductLook("g", "G", (0, 0, 0), package="carton", photos=solid_photos(tmp_path, "g", [(0, 200, 0)]))}
    # g stands at the back of cell 1, r in front of cell 0 pushed right into cell 1: r covers g
    img = render_shelf(one_slot(["r", "g"], [ItemPose(dx=0.6), ItemPose(depth=0.5)]), looks, optics=still())
    x, y, w, h = facing_boxes((20, 60, 280, 160), 4)[1]
    region = img[y + h - 30:y + h - 5, x + 5:x + 20]
    assert (region[..., 2] > 150).mean() > 0.8  # red in front where green would be


def test_foreign_things_come_from_their_photos(tmp_path):
    photo = tmp_path / "keys.png"
    cv2.imwrite(str(photo), np.full((100, 100, 3), (0, 220, 220), np.uint8))  # a yellow thing
    img = render_shelf(one_slot(["not-ours"]), {}, optics=still(), foreign_photos=[photo])
    assert tuple(np.round(item_colour(img, 0)).astype(int)) == pytest.approx((0, 220, 220), abs=25)


def test_lighting_shake_blur_and_noise_vary_per_frame_but_replay_from_the_seed(tmp_path):
    looks = {"cola-330": ProductLook.for_sku("cola-330")}
    view = one_slot(["cola-330"] * 2)
    a = render_shelf(view, looks, seed=1, optics=CAMERA_LIKE, shake_px=2, jpeg_quality=80)
    assert np.array_equal(a, render_shelf(view, looks, seed=1, optics=CAMERA_LIKE, shake_px=2, jpeg_quality=80))
    b = render_shelf(view, looks, seed=2, optics=CAMERA_LIKE, shake_px=2, jpeg_quality=80)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2  # another frame: other light, shake, noise
    flat = render_shelf(view, looks, seed=1, optics=still())
    lit = render_shelf(view, looks, seed=1, optics=still(gradient=0.4))
    ratio = lit.astype(float).mean(axis=(0, 2)) / np.maximum(flat.astype(float).mean(axis=(0, 2)), 1)
    assert abs(ratio[:40].mean() - ratio[-40:].mean()) > 0.05  # one side lit more than the other
    blurred = render_shelf(view, looks, seed=1, optics=still(blur_sigma=2.0))
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(flat.astype(int), axis=1)).mean()


def test_the_back_panel_is_fixed_per_camera():
    empty = ShelfView("cam-x", (320, 240), (SlotView("A1", (20, 60, 280, 160), 4, ()),))
    other = ShelfView("cam-y", (320, 240), (SlotView("A1", (20, 60, 280, 160), 4, ()),))
    a, b = (render_shelf(v, {}, seed=1, optics=still()) for v in (empty, empty))
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - render_shelf(other, {}, seed=1, optics=still()).astype(int)).mean() > 1


def test_poses_must_match_the_items():
    with pytest.raises(RenderError, match="cam-x, slot A1: 1 poses for 2 items"):
        render_shelf(one_slot(["a", "b"], [ItemPose()]), {}, optics=still())
