"""Synthetic shelf camera images, drawn by our own code from what sits in each slot.

A shelf image is a grey back panel with a dark shelf board under each slot. A slot's region of
interest is cut into `capacity` facing cells of equal width; the k-th item of the slot (left to
right) is drawn in the k-th cell, standing on the cell's floor: a package outline in the SKU's
colour (carton, can, bottle or tub), an accent stripe, a light label band with the name, and
optionally the product's studio packshot pasted over the body. An SKU with no look (something
that is not ours) is drawn as an irregular speckled grey lump. Then the camera: a global lighting
gain, sensor noise, a shake of a few pixels and JPEG compression, all from `seed`, so the same
arguments always give the same pixels.

`render_cell` draws one facing cell alone on the panel; vision.diff renders each catalog look
that way to know what an item (or an empty cell) looks like. A 640x480 shelf takes a few ms.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

PANEL_BGR = (170, 172, 168)
BOARD_BGR = (62, 66, 72)
LABEL_BGR = (236, 238, 235)
TEXT_BGR = (40, 36, 34)
FOREIGN_BGR = (74, 78, 76)
PACKAGES = ("carton", "can", "bottle", "tub")
# (width, height) of a package as a share of its facing cell
_PACKAGE_SIZE = {"carton": (0.78, 0.86), "can": (0.64, 0.62), "bottle": (0.56, 0.92), "tub": (0.84, 0.48)}
SENSOR_NOISE = 4  # +- grey levels


class RenderError(ValueError):
    """A shelf view or look that cannot be drawn; names the camera/slot and what is wrong."""


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True)
class ProductLook:
    """How an SKU looks on the shelf. `package` None picks one from the SKU, deterministically."""

    sku: str
    name: str
    color_bgr: tuple[int, int, int]
    image_path: Path | None = None
    package: str | None = None

    def __post_init__(self) -> None:
        if len(self.color_bgr) != 3 or not all(0 <= int(c) <= 255 for c in self.color_bgr):
            raise RenderError(f"product look {self.sku!r}: color_bgr {self.color_bgr!r} is not 3 values 0..255")
        object.__setattr__(self, "color_bgr", tuple(int(c) for c in self.color_bgr))
        if self.package is not None and self.package not in PACKAGES:
            raise RenderError(f"product look {self.sku!r}: package {self.package!r} is not one of {PACKAGES}")
        if self.image_path is not None:
            object.__setattr__(self, "image_path", Path(self.image_path))

    @classmethod
    def for_sku(cls, sku: str, name: str | None = None, *, image_path: Path | None = None) -> "ProductLook":
        """A look derived from the SKU text alone: hue, saturation, brightness and package."""
        d = _digest(sku)
        hsv = np.uint8([[[d[0] % 180, 150 + d[1] % 106, 120 + d[2] % 111]]])
        b, g, r = (int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        return cls(sku, name or sku, (b, g, r), image_path, PACKAGES[d[3] % len(PACKAGES)])

    @property
    def shape(self) -> str:
        return self.package or PACKAGES[_digest(self.sku)[3] % len(PACKAGES)]

    @property
    def accent_bgr(self) -> tuple[int, int, int]:
        """A second colour from the SKU text, so two SKUs of one colour still differ."""
        d = _digest("accent:" + self.sku)
        hsv = np.uint8([[[d[0] % 180, 120 + d[1] % 136, 90 + d[2] % 166]]])
        b, g, r = (int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        return b, g, r


@dataclass(frozen=True)
class SlotView:
    slot_id: str
    roi: tuple[int, int, int, int]  # x, y, w, h in the camera image
    capacity: int
    skus: tuple[str, ...] = ()  # items in the slot, left to right


@dataclass(frozen=True)
class ShelfView:
    camera: str
    size: tuple[int, int]  # (w, h) of the camera image
    slots: tuple[SlotView, ...] = field(default_factory=tuple)


def facing_boxes(roi: Sequence[int], capacity: int) -> list[tuple[int, int, int, int]]:
    """The `capacity` facing cells (x, y, w, h) of a slot's ROI, left to right."""
    x, y, w, h = (int(v) for v in roi)
    edges = [x + round(i * w / capacity) for i in range(capacity + 1)]
    return [(edges[i], y, edges[i + 1] - edges[i], h) for i in range(capacity)]


def check_view(view: ShelfView) -> None:
    """RenderError naming the camera and slot when a slot does not fit the image."""
    W, H = view.size
    if W < 16 or H < 16:
        raise RenderError(f"camera {view.camera}: image size {view.size} is too small")
    for slot in view.slots:
        where = f"camera {view.camera}, slot {slot.slot_id}"
        x, y, w, h = slot.roi
        if slot.capacity < 1:
            raise RenderError(f"{where}: capacity {slot.capacity} must be at least 1")
        if x < 0 or y < 0 or w < slot.capacity * 4 or h < 8 or x + w > W or y + h > H:
            raise RenderError(f"{where}: roi {slot.roi} does not fit the {W}x{H} image "
                              f"with {slot.capacity} facings of at least 4x8 px")
        if len(slot.skus) > slot.capacity:
            raise RenderError(f"{where}: {len(slot.skus)} items exceed the capacity {slot.capacity}")


@lru_cache(maxsize=256)
def _packshot(path: str, w: int, h: int) -> np.ndarray:
    """The packshot cropped to the product (its near-white studio background cut away)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise RenderError(f"packshot {path}: cannot be read as an image; fix or drop image_path")
    mask = (img.min(axis=2) < 235).astype(np.uint8)
    pts = cv2.findNonZero(mask)
    if pts is not None:
        bx, by, bw, bh = cv2.boundingRect(pts)
        if bw > 8 and bh > 8:
            img = img[by:by + bh, bx:bx + bw]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _draw_product(canvas: np.ndarray, cell: tuple[int, int, int, int], look: ProductLook, dx: int) -> None:
    cx, cy, cw, ch = cell
    sw, sh = _PACKAGE_SIZE[look.shape]
    iw, ih = max(3, round(cw * sw)), max(4, round(ch * sh))
    x0 = cx + (cw - iw) // 2 + dx
    y1 = cy + ch - 1
    y0 = y1 - ih + 1
    color, dark = look.color_bgr, tuple(int(c * 0.55) for c in look.color_bgr)
    shape = look.shape
    if shape == "bottle":
        neck_w, neck_h = max(2, iw // 3), ih // 4
        nx = x0 + (iw - neck_w) // 2
        cv2.rectangle(canvas, (nx, y0), (nx + neck_w - 1, y0 + neck_h), color, -1)
        cv2.rectangle(canvas, (nx, y0), (nx + neck_w - 1, y0 + max(2, neck_h // 4)), look.accent_bgr, -1)
        y0 += neck_h
    elif shape == "carton":
        gable = max(2, ih // 8)
        pts = np.array([[x0, y0 + gable], [x0 + iw // 2, y0], [x0 + iw - 1, y0 + gable]], np.int32)
        cv2.fillConvexPoly(canvas, pts, dark)
        y0 += gable
    radius = max(1, iw // 6) if shape in ("can", "tub") else 0
    cv2.rectangle(canvas, (x0, y0 + radius), (x0 + iw - 1, y1), color, -1)
    if radius:
        cv2.ellipse(canvas, (x0 + iw // 2, y0 + radius), (iw // 2, radius), 0, 180, 360, color, -1)
    body_h = y1 - y0 + 1
    if look.image_path is not None:
        canvas[y0:y1 + 1, x0:x0 + iw] = _packshot(str(look.image_path), iw, body_h)
    else:
        stripe = max(1, body_h // 12)
        sy = y0 + radius + body_h // 8
        cv2.rectangle(canvas, (x0, sy), (x0 + iw - 1, sy + stripe), look.accent_bgr, -1)
        ly0, ly1 = y0 + int(body_h * 0.45), y0 + int(body_h * 0.68)
        cv2.rectangle(canvas, (x0 + 1, ly0), (x0 + iw - 2, ly1), LABEL_BGR, -1)
        if iw >= 20 and ly1 - ly0 >= 8:
            text = look.name[: max(1, iw // 7)]
            scale = min(0.5, (ly1 - ly0) / 30.0)
            cv2.putText(canvas, text, (x0 + 2, ly1 - (ly1 - ly0) // 3), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, TEXT_BGR, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (x0, y0 + radius), (x0 + iw - 1, y1), dark, 1)


def _draw_foreign(canvas: np.ndarray, cell: tuple[int, int, int, int], sku: str, dx: int) -> None:
    cx, cy, cw, ch = cell
    d = _digest("foreign:" + sku)
    n = 7
    center = np.array([cx + cw / 2 + dx, cy + ch * 0.66])
    rx, ry = cw * 0.44, ch * 0.32
    pts = []
    for i in range(n):
        a = 2 * np.pi * i / n
        k = 0.8 + 0.2 * d[i] / 255
        pts.append(center + [np.cos(a) * rx * k, np.sin(a) * ry * k])
    poly = np.round(np.array(pts)).astype(np.int32)
    poly[:, 1] = np.minimum(poly[:, 1], cy + ch - 1)
    cv2.fillPoly(canvas, [poly], FOREIGN_BGR)
    for i in range(8):  # speckles
        px = int(center[0] + (d[8 + i] / 255 - 0.5) * rx)
        py = int(center[1] + (d[16 + i] / 255 - 0.5) * ry)
        cv2.circle(canvas, (px, py), max(1, cw // 20), (60, 62, 64) if i % 2 else (140, 142, 140), -1)
    cv2.polylines(canvas, [poly], True, (50, 52, 54), 1)


def _draw_item(canvas, cell, sku: str, looks: Mapping[str, ProductLook], dx: int) -> None:
    look = looks.get(sku)
    if look is None:
        _draw_foreign(canvas, cell, sku, dx)
    else:
        _draw_product(canvas, cell, look, dx)


def render_cell(item: ProductLook | str | None, size: tuple[int, int]) -> np.ndarray:
    """One facing cell (w, h) alone on the back panel, without noise: a product look, a foreign
    thing (a str: the name of something not in the catalog) or, for None, an empty cell."""
    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = PANEL_BGR
    if isinstance(item, ProductLook):
        _draw_product(canvas, (0, 0, w, h), item, 0)
    elif item is not None:
        _draw_foreign(canvas, (0, 0, w, h), str(item), 0)
    return canvas


def render_shelf(view: ShelfView, looks: Mapping[str, ProductLook], *, seed: int = 0,
                 lighting: float = 1.0, shake_px: int = 0, jpeg_quality: int | None = None) -> np.ndarray:
    """The camera image (H, W, 3) uint8 BGR of a shelf: deterministic for the same arguments."""
    check_view(view)
    if not 0.0 <= lighting <= 4.0:
        raise RenderError(f"camera {view.camera}: lighting {lighting} is outside 0..4")
    W, H = view.size
    rng = np.random.default_rng(seed)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = PANEL_BGR
    for slot in view.slots:
        x, y, w, h = slot.roi
        canvas[min(H, y + h):min(H, y + h + 6), x:x + w] = BOARD_BGR
        for cell, sku in zip(facing_boxes(slot.roi, slot.capacity), slot.skus):
            dx = int(rng.integers(-1, 2)) if cell[2] >= 12 else 0
            _draw_item(canvas, cell, sku, looks, dx)
    # lighting gain, then grey sensor noise (uniform -4..4, sigma ~2.6): cv2 saturating math
    out = cv2.convertScaleAbs(canvas, alpha=float(lighting))
    noise = rng.integers(-SENSOR_NOISE, SENSOR_NOISE + 1, size=(H, W), dtype=np.int16)
    out = cv2.add(out, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)
    if shake_px:
        sx, sy = (int(v) for v in rng.integers(-shake_px, shake_px + 1, size=2))
        padded = cv2.copyMakeBorder(out, shake_px, shake_px, shake_px, shake_px, cv2.BORDER_REPLICATE)
        out = np.ascontiguousarray(padded[shake_px + sy:shake_px + sy + H, shake_px + sx:shake_px + sx + W])
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RenderError(f"camera {view.camera}: JPEG encoding at quality {jpeg_quality} failed")
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
