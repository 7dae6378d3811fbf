"""Synthetic shelf camera images, drawn by our own code from what sits in each slot.

A shelf image is a grey back panel with a dark shelf board under each slot. A slot's region of
interest is cut into `capacity` facing cells of equal width; the k-th item of the slot (left to
right) is drawn in the k-th cell, standing on the cell's floor: a package outline in the SKU's
colour (carton, can, bottle or tub), an accent stripe, a light label band with the name, and
optionally the product's studio packshot pasted over the body. An SKU with no look (something
that is not ours) is drawn as an irregular speckled grey lump. Then the camera: a global lighting
gain, sensor noise, a shake of a few pixels and JPEG compression, all from `seed`, so the same
arguments always give the same pixels.

`render_cell` draws one facing cell alone on the panel (for tests of the drawing). A 640x480
shelf takes a few ms.

Looking like a camera (`optics=Optics(...)`, what the simulated shelf camera uses): a product
whose look has `photos` is drawn from one of them, a different photo per physical item (the
item's `ItemPose.serial` picks it; the photos are the val_* split and iconic.jpg, which the
reader never learns from), cut to the package's silhouette, at the position, scale and tilt
where the item stands (`SlotView.poses`), back items first so neighbours occlude them, each
casting a soft shadow. A thing that is not ours is drawn from `foreign_photos` (photos of
things that are no catalog product). Then the camera: a textured back panel fixed per camera,
a keystone perspective, vignetting, per-frame lighting (gain, a gradient across the shelf and a
colour tint), shake (shift and a small rotation), blur, colour sensor noise and JPEG.
Vision's reader (vision.diff) knows none of this: it learns each camera from calibration frames.
"""
from __future__ import annotations

import hashlib
import math
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
    photos: tuple[Path, ...] = ()  # one is picked per physical item (ItemPose.serial)

    def __post_init__(self) -> None:
        if len(self.color_bgr) != 3 or not all(0 <= int(c) <= 255 for c in self.color_bgr):
            raise RenderError(f"product look {self.sku!r}: color_bgr {self.color_bgr!r} is not 3 values 0..255")
        object.__setattr__(self, "color_bgr", tuple(int(c) for c in self.color_bgr))
        if self.package is not None and self.package not in PACKAGES:
            raise RenderError(f"product look {self.sku!r}: package {self.package!r} is not one of {PACKAGES}")
        if self.image_path is not None:
            object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "photos", tuple(Path(p) for p in self.photos))

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
class ItemPose:
    """Where one physical item stands in its facing cell: `serial` names the item (it picks the
    item's photo), `dx` shifts it sideways (share of the cell width), `depth` pushes it back
    (0 front .. 1 back: drawn earlier, higher and smaller), `angle` tilts it (degrees) and
    `scale` sizes it."""

    serial: int = 0
    dx: float = 0.0
    depth: float = 0.0
    angle: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class SlotView:
    slot_id: str
    roi: tuple[int, int, int, int]  # x, y, w, h in the camera image
    capacity: int
    skus: tuple[str, ...] = ()  # items in the slot, left to right
    poses: tuple[ItemPose, ...] = ()  # one per item when given; default: upright, centred


@dataclass(frozen=True)
class Optics:
    """What makes a rendered shelf look like a camera picture. Fixed per camera: `keystone`
    (share of the width the top edge is narrower), `vignette`; per frame, drawn from the seed:
    lighting `gradient` (largest brightness change across the image) and `tint` (largest
    per-channel gain change), `shake_deg` (largest rotation); and `blur_sigma`, `noise_sigma`."""

    keystone: float = 0.03
    vignette: float = 0.12
    gradient: float = 0.12
    tint: float = 0.04
    shake_deg: float = 0.4
    blur_sigma: float = 0.8
    noise_sigma: float = 2.5


CAMERA_LIKE = Optics()


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
                 lighting: float = 1.0, shake_px: int = 0, jpeg_quality: int | None = None,
                 optics: Optics | None = None, foreign_photos: Sequence[Path] = ()) -> np.ndarray:
    """The camera image (H, W, 3) uint8 BGR of a shelf: deterministic for the same arguments.
    With `optics` it looks like a camera (module doc); without, the flat drawing."""
    check_view(view)
    if not 0.0 <= lighting <= 4.0:
        raise RenderError(f"camera {view.camera}: lighting {lighting} is outside 0..4")
    for slot in view.slots:
        if slot.poses and len(slot.poses) != len(slot.skus):
            raise RenderError(f"camera {view.camera}, slot {slot.slot_id}: {len(slot.poses)} poses "
                              f"for {len(slot.skus)} items; give one pose per item or none")
    if optics is not None:
        return _camera_like(view, looks, seed=seed, lighting=lighting, shake_px=shake_px,
                            jpeg_quality=jpeg_quality, optics=optics,
                            foreign_photos=tuple(Path(p) for p in foreign_photos))
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


# --- looking like a camera ---------------------------------------------------------------------

PHOTO_CROP = (0.56, 0.80)  # share of an in-store photo (w, h) around its centre that shows the item
SHADOW = 0.35              # how much an item's shadow darkens what is under it
ASPECT = {"carton": 2.6, "can": 1.9, "bottle": 3.0, "tub": 1.2}  # tallest height / width


@lru_cache(maxsize=512)
def _photo(path: str) -> np.ndarray:
    """The item part of a photo, at most 256 px high: a studio packshot cut to the product (its
    white background away), an in-store photo cut to its centre (the item held up or faced)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise RenderError(f"photo {path}: cannot be read as an image; fix or remove it")
    if Path(path).stem.startswith("iconic"):
        pts = cv2.findNonZero((img.min(axis=2) < 235).astype(np.uint8))
        if pts is not None:
            bx, by, bw, bh = cv2.boundingRect(pts)
            if bw > 8 and bh > 8:
                img = img[by:by + bh, bx:bx + bw]
    else:
        H, W = img.shape[:2]
        cw, ch = round(W * PHOTO_CROP[0]), round(H * PHOTO_CROP[1])
        img = img[(H - ch) // 2:(H - ch) // 2 + ch, (W - cw) // 2:(W - cw) // 2 + cw]
    if img.shape[0] > 256:
        img = cv2.resize(img, (max(4, round(img.shape[1] * 256 / img.shape[0])), 256),
                         interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    img.flags.writeable = False
    return img


def _silhouette(shape: str, w: int, h: int) -> np.ndarray:
    """uint8 0/255 mask (h, w) of a package outline standing on the patch's bottom edge."""
    m = np.zeros((h, w), np.uint8)
    if shape == "bottle":
        neck_w, neck_h = max(2, w // 3), h // 4
        nx = (w - neck_w) // 2
        m[:neck_h + 1, nx:nx + neck_w] = 255
        top = neck_h
    elif shape == "carton":
        gable = max(2, h // 8)
        cv2.fillConvexPoly(m, np.array([[0, gable], [w // 2, 0], [w - 1, gable]], np.int32), 255)
        top = gable
    else:
        top = 0
    radius = max(1, w // 6) if shape in ("can", "tub") else 0
    m[top + radius:, :] = 255
    if radius:
        cv2.ellipse(m, (w // 2, top + radius), (w // 2, radius), 0, 180, 360, 255, -1)
    return m


def _foreign_silhouette(sku: str, serial: int, w: int, h: int) -> np.ndarray:
    d = _digest(f"foreign:{sku}:{serial}")
    pts = []
    for i in range(9):
        a = 2 * np.pi * i / 9
        k = 0.75 + 0.25 * d[i] / 255
        pts.append([w / 2 + np.cos(a) * w / 2 * k, h / 2 + np.sin(a) * h / 2 * k])
    poly = np.clip(np.round(np.array(pts)), 0, [w - 1, h - 1]).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [poly], 255)
    return m


def _textured(photo: np.ndarray, w: int, h: int, d: bytes) -> np.ndarray:
    """The photo fitted to (w, h), offset a little per item so no two items are one picture."""
    H, W = photo.shape[:2]
    fx, fy = 0.9 + 0.1 * d[0] / 255, 0.9 + 0.1 * d[1] / 255
    cw, ch = max(2, round(W * fx)), max(2, round(H * fy))
    x0, y0 = (W - cw) * d[2] // 255, (H - ch) * d[3] // 255
    return cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)


def _item_patch(sku: str, pose: ItemPose, look: ProductLook | None, cell: tuple[int, int, int, int],
                foreign_photos: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(BGR patch, alpha 0..1 float32) of one item, upright, its base on the patch's bottom."""
    _, _, cw, ch = cell
    d = _digest(f"item:{sku}:{pose.serial}")
    if look is None:  # a thing that is not ours
        w = max(4, round(cw * 0.82 * pose.scale))
        h = max(4, round(min(ch * 0.56, w * 1.4) * pose.scale))
        mask = _foreign_silhouette(sku, pose.serial, w, h)
        if foreign_photos:
            photo = _photo(str(foreign_photos[int.from_bytes(d[4:8], "big") % len(foreign_photos)]))
            tex = _textured(photo, w, h, d)
        else:
            canvas = np.empty((ch, cw, 3), np.uint8)
            canvas[:] = PANEL_BGR
            _draw_foreign(canvas, (0, 0, cw, ch), sku, 0)
            tex = cv2.resize(canvas[ch - h:, :], (w, h)) if h <= ch else cv2.resize(canvas, (w, h))
        return tex, mask.astype(np.float32) / 255.0
    sw, sh = _PACKAGE_SIZE[look.shape]
    w = max(4, round(cw * sw * pose.scale))
    h = max(6, round(min(ch * sh * pose.scale, w * ASPECT[look.shape])))
    mask = _silhouette(look.shape, w, h)
    if look.photos:
        tex = _textured(_photo(str(look.photos[pose.serial % len(look.photos)])), w, h, d)
    else:  # no photo: the catalog colour with an accent stripe and a label band
        tex = np.empty((h, w, 3), np.uint8)
        tex[:] = look.color_bgr
        tex[h // 8:h // 8 + max(1, h // 12)] = look.accent_bgr
        tex[int(h * 0.45):int(h * 0.68), 1:-1] = LABEL_BGR
    return tex, mask.astype(np.float32) / 255.0


def _paste(canvas: np.ndarray, tex: np.ndarray, alpha: np.ndarray, base: tuple[float, float],
           angle: float) -> None:
    """Composite the patch with its bottom centre at `base`, tilted by `angle` degrees, over a
    soft shadow; only the patch's bounding box of the canvas is touched."""
    h, w = alpha.shape
    M = cv2.getRotationMatrix2D((w / 2.0, float(h)), angle, 1.0)
    M[:, 2] += (base[0] - w / 2.0, base[1] - h)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ M.T
    H, W = canvas.shape[:2]
    x0, y0 = (max(0, int(math.floor(v)) - 6) for v in corners.min(axis=0))
    x1, y1 = min(W, int(math.ceil(corners[:, 0].max())) + 6), min(H, int(math.ceil(corners[:, 1].max())) + 6)
    if x1 <= x0 or y1 <= y0:
        return
    M[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    a = cv2.warpAffine(alpha, M, size, flags=cv2.INTER_LINEAR, borderValue=0)
    t = cv2.warpAffine(tex, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    shadow = np.zeros_like(a)
    shadow[3:, 3:] = a[:-3, :-3]
    shadow = cv2.GaussianBlur(shadow, (0, 0), 2.5) * SHADOW
    region *= (1.0 - shadow)[..., None]
    region = region * (1.0 - a[..., None]) + t.astype(np.float32) * a[..., None]
    canvas[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _panel(camera: str, size: tuple[int, int], boards: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """The empty shelf as this camera sees it, without lighting: a back panel with a
    low-frequency stain and fine grain (fixed per camera), and a board under each slot row."""
    W, H = size
    rng = np.random.default_rng(int.from_bytes(_digest("panel:" + camera)[:8], "big"))
    low = cv2.resize(rng.normal(0.0, 1.0, (6, 8)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0.0, 1.0, (H, W)).astype(np.float32)
    base = np.array(PANEL_BGR, np.float32)[None, None, :] * (1.0 + 0.05 * low[..., None])
    panel = base + 3.0 * grain[..., None]
    # a perforated back wall: rows of small holes, offset per camera (what a camera locks on to)
    ox, oy = (int(v) for v in rng.integers(0, 18, size=2))
    for yy in range(oy, H, 18):
        for xx in range(ox + (9 if (yy // 18) % 2 else 0), W, 18):
            cv2.circle(panel, (xx, yy), 2, tuple(float(c) * 0.72 for c in PANEL_BGR), -1, cv2.LINE_AA)
    for x, y, w in boards:
        panel[y:min(H, y + 8), x:x + w] = np.array(BOARD_BGR, np.float32) * (1.0 + 0.08 * grain[y:min(H, y + 8), x:x + w, None])
        panel[min(H - 1, y), x:x + w] = (150, 154, 158)
    out = np.clip(panel, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


def _lighting_field(size: tuple[int, int], rng: np.random.Generator, lighting: float,
                    optics: Optics) -> np.ndarray:
    """(H, W, 3) float32 gain: the frame's lighting, a gradient in a random direction, a colour
    tint and the lens's vignetting."""
    W, H = size
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xs / W - 0.5, ys / H - 0.5
    a = rng.uniform(0, 2 * np.pi)
    g = optics.gradient * rng.uniform(-1.0, 1.0)
    field = lighting * (1.0 + g * (np.cos(a) * u + np.sin(a) * v)) * (1.0 - optics.vignette * 2 * (u * u + v * v))
    tint = 1.0 + optics.tint * rng.uniform(-1.0, 1.0, size=3)
    return field[..., None] * tint[None, None, :].astype(np.float32)


def _camera_like(view: ShelfView, looks: Mapping[str, ProductLook], *, seed: int, lighting: float,
                 shake_px: int, jpeg_quality: int | None, optics: Optics,
                 foreign_photos: Sequence[Path]) -> np.ndarray:
    W, H = view.size
    rng = np.random.default_rng(seed)
    boards = tuple((s.roi[0], s.roi[1] + s.roi[3], s.roi[2]) for s in view.slots)
    canvas = _panel(view.camera, (W, H), boards).copy()
    placed = []
    for slot in view.slots:
        cells = facing_boxes(slot.roi, slot.capacity)
        for i, (cell, sku) in enumerate(zip(cells, slot.skus)):
            pose = slot.poses[i] if i < len(slot.poses) else ItemPose(serial=i)
            placed.append((pose.depth, cell[0], cell, sku, pose))
    for depth, _, cell, sku, pose in sorted(placed, key=lambda p: (-p[0], p[1])):
        cx, cy, cw, ch = cell
        shrink = 1.0 - 0.15 * depth
        pose_now = ItemPose(pose.serial, pose.dx, pose.depth, pose.angle, pose.scale * shrink)
        tex, alpha = _item_patch(sku, pose_now, looks.get(sku), cell, foreign_photos)
        base = (cx + cw / 2.0 + pose.dx * cw, cy + ch - 1 - depth * 0.12 * ch)
        _paste(canvas, tex, alpha, base, pose.angle)
    # the lens: keystone perspective, fixed per camera
    k = optics.keystone * W / 2.0
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    dst = np.float32([[k, 0], [W - k, 0], [W, H], [0, H]])
    img = cv2.warpPerspective(canvas, cv2.getPerspectiveTransform(src, dst), (W, H),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img = img.astype(np.float32) * _lighting_field((W, H), rng, lighting, optics)
    if shake_px:
        sx, sy = rng.uniform(-shake_px, shake_px, size=2)
        M = cv2.getRotationMatrix2D((W / 2.0, H / 2.0), float(rng.uniform(-1, 1) * optics.shake_deg), 1.0)
        M[:, 2] += (sx, sy)
        img = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if optics.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), optics.blur_sigma)
    img += rng.normal(0.0, optics.noise_sigma, size=img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise RenderError(f"camera {view.camera}: JPEG encoding at quality {jpeg_quality} failed")
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
