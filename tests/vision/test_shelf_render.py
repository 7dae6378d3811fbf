"""The synthetic shelf renderer: deterministic, the right shape, and each camera effect real."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vision.sim.render import (PACKAGES, ProductLook, RenderError, ShelfView, SlotView, facing_boxes,
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
