"""Per-slot evidence from a shelf camera's before/after images.

Each slot's region of interest is cut into its facing cells (vision.render.facing_boxes). A
cell is reduced to a small appearance signature: a 6x12 thumbnail whose brightness is divided
by the cell's own mean (so a global lighting change cancels) plus its chromaticity (colour
with brightness divided out). The same signature is taken of every catalog look, and of an
empty cell, drawn alone by vision.render.render_cell at the cell's size; a cell is whatever
it is nearest to, or a foreign object when it is near nothing. Coarse thumbnails shrug off
sensor noise, JPEG blocks and a shake of a few pixels.

The change score of a slot is the share of its region that changed between the images: the
after image is brought to the before image's brightness, both are shrunk 4x, and a pixel
counts as changed only when its colour is outside the range of the other image's pixels
around it (by more than a margin), so that a few pixels of shake do not count; a channel
clipped at full brightness only says "at least this bright" and is compared one way.

A dark, blank or missing image gives evidence flagged `usable=False` with the reason, and the
per-cell tuples of that side empty: reconcile then leans on the weights alone. Arrays of the
wrong type or shape, or slots that do not fit the image, raise VisionInputError.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np

from vision.render import ProductLook, facing_boxes, render_cell

SIG_SIZE = (8, 16)  # (w, h) of a cell's thumbnail
CHROMA_WEIGHT = 1.5
EMPTY_DISTANCE = 0.04  # an "empty" cell farther than this from the bare panel holds something
FOREIGN_DISTANCE = 0.15  # a cell farther than this from its nearest look is not that product
FOREIGN_PROTOTYPES = ("foreign-1", "foreign-2", "foreign-3")
CHANGE_MARGIN = 24  # grey levels a shrunk pixel must move to count as changed
SATURATED = 245  # a shrunk pixel this bright may hold clipped ones: its change cannot be told
DARK_MEAN = 20.0
BLANK_STD = 3.0
EMPTY = "__empty__"
CHROMA_FLOOR = 24.0  # keeps the chromaticity of dark pixels from amplifying noise


class VisionInputError(ValueError):
    """An image or slot list that cannot be read: names which one and what is wrong."""


@dataclass(frozen=True)
class SlotSpec:
    slot_id: str
    roi: tuple[int, int, int, int]  # x, y, w, h in the camera image
    capacity: int


@dataclass(frozen=True)
class SlotEvidence:
    """What the camera saw in one slot. skus_* hold None for an empty cell or a foreign object
    (occupied but not in the catalog); when `usable` is False the tuples of the unreadable
    side are empty and `reason` says why."""

    slot_id: str
    change: float  # 0..1, share of the slot's region that changed
    occupied_before: tuple[bool, ...]
    occupied_after: tuple[bool, ...]
    skus_before: tuple[str | None, ...]
    skus_after: tuple[str | None, ...]
    confidence: float  # 0..1, the least sure cell's margin
    usable: bool = True
    reason: str = ""

    @property
    def foreign_before(self) -> int:
        return sum(o and s is None for o, s in zip(self.occupied_before, self.skus_before))

    @property
    def foreign_after(self) -> int:
        return sum(o and s is None for o, s in zip(self.occupied_after, self.skus_after))

    @property
    def counts_before(self) -> dict[str, int]:
        return dict(Counter(s for s in self.skus_before if s is not None))

    @property
    def counts_after(self) -> dict[str, int]:
        return dict(Counter(s for s in self.skus_after if s is not None))


def _signature(cell_bgr: np.ndarray) -> np.ndarray:
    thumb = cv2.resize(cell_bgr, SIG_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    intensity = thumb.mean(axis=2)
    lum = intensity / (intensity.mean() + 1.0)
    chroma = thumb / (intensity[..., None] * 3.0 + CHROMA_FLOOR)
    return np.concatenate([lum.ravel(), CHROMA_WEIGHT * chroma.ravel()])


def check_image(img: object, label: str) -> np.ndarray | None:
    """The image as a contiguous BGR uint8 array; None stays None (a missing frame)."""
    if img is None:
        return None
    if not isinstance(img, np.ndarray):
        raise VisionInputError(f"{label}: expected a numpy image, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise VisionInputError(f"{label}: expected dtype uint8, got {img.dtype}; convert the frame to 8-bit BGR")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 8 or img.shape[1] < 8:
        raise VisionInputError(f"{label}: expected shape (H, W, 3) BGR, got {img.shape}")
    return np.ascontiguousarray(img)


def unusable_reason(img: np.ndarray | None) -> str:
    """Why an image cannot be read ('' when it can): missing, dark, blank or overexposed."""
    if img is None:
        return "no image (camera missing)"
    small = cv2.resize(img, (max(1, img.shape[1] // 4), max(1, img.shape[0] // 4)), interpolation=cv2.INTER_AREA)
    mean, std = float(small.mean()), float(small.std())
    if mean < DARK_MEAN:
        return f"dark image (mean {mean:.1f} of 255)"
    if mean > 245.0:
        return f"overexposed image (mean {mean:.1f} of 255)"
    if std < BLANK_STD:
        return f"blank image (no detail, std {std:.1f})"
    return ""


def _check_slots(slots: Sequence, shape: tuple[int, ...] | None, camera: str) -> list[SlotSpec]:
    """SlotSpecs of the slots (anything with slot_id, roi, capacity); with no image at all
    (`shape` None) the ROIs cannot be checked against it."""
    H, W = shape[:2] if shape is not None else (1 << 30, 1 << 30)
    specs, seen = [], set()
    for s in slots:
        try:
            spec = SlotSpec(str(s.slot_id), tuple(int(v) for v in s.roi), int(s.capacity))
        except (AttributeError, TypeError, ValueError) as e:
            raise VisionInputError(f"{camera}: slot {s!r} needs slot_id, roi (x, y, w, h) and capacity") from e
        x, y, w, h = spec.roi if len(spec.roi) == 4 else (-1, -1, 0, 0)
        where = f"{camera}, slot {spec.slot_id}"
        if spec.slot_id in seen:
            raise VisionInputError(f"{where}: slot listed twice")
        seen.add(spec.slot_id)
        if spec.capacity < 1:
            raise VisionInputError(f"{where}: capacity {spec.capacity} must be at least 1")
        if x < 0 or y < 0 or w < spec.capacity * 4 or h < 8 or x + w > W or y + h > H:
            raise VisionInputError(f"{where}: roi {s.roi} does not fit the {W}x{H} image "
                                   f"with {spec.capacity} facings of at least 4x8 px")
        specs.append(spec)
    return specs


class ShelfDiff:
    """Reads slots against a catalog of looks; keeps the looks' signatures between calls."""

    def __init__(self, looks: Mapping[str, ProductLook], *, empty_distance: float = EMPTY_DISTANCE,
                 foreign_distance: float = FOREIGN_DISTANCE) -> None:
        self.looks = dict(looks)
        self.empty_distance = float(empty_distance)
        self.foreign_distance = float(foreign_distance)
        self._refs: dict[tuple[int, int], tuple[list[str | None], np.ndarray]] = {}

    def _references(self, size: tuple[int, int]) -> tuple[list[str | None], np.ndarray]:
        """Names (EMPTY, None for a foreign-thing prototype, or the SKU) and their signatures."""
        if size not in self._refs:
            names: list[str | None] = [EMPTY, *[None] * len(FOREIGN_PROTOTYPES), *self.looks]
            cells = [render_cell(None, size), *(render_cell(f, size) for f in FOREIGN_PROTOTYPES),
                     *(render_cell(look, size) for look in self.looks.values())]
            self._refs[size] = (names, np.stack([_signature(c) for c in cells]))
        return self._refs[size]

    def read_cells(self, img: np.ndarray, spec: SlotSpec) -> tuple[tuple[bool, ...], tuple[str | None, ...], float]:
        """(occupied, sku or None, least margin) for each facing cell of a slot in one image."""
        occupied, skus, margins = [], [], []
        for x, y, w, h in facing_boxes(spec.roi, spec.capacity):
            names, refs = self._references((w, h))
            d = np.abs(refs - _signature(img[y:y + h, x:x + w])).mean(axis=1)
            order = np.argsort(d)
            best, d1 = names[order[0]], float(d[order[0]])
            runner_up = next((float(d[j]) for j in order[1:] if names[j] != best), 1.0)
            limit = self.empty_distance if best == EMPTY else self.foreign_distance
            if best is not None and d1 > limit:  # near nothing we know: something not ours
                best, margin = None, min(1.0, (d1 - limit) / limit * 4)
            else:
                margin = min(1.0, (runner_up - d1) / max(runner_up, 1e-6) * 2)
                if best is not None:
                    margin = min(margin, (limit - d1) / limit * 4)
            occupied.append(best != EMPTY)
            skus.append(None if best == EMPTY else best)
            margins.append(margin)
        return tuple(occupied), tuple(skus), min(margins) if margins else 1.0

    def evidence(self, before: np.ndarray | None, after: np.ndarray | None, slots: Sequence,
                 *, camera: str = "shelf camera") -> dict[str, SlotEvidence]:
        before = check_image(before, f"{camera} before image")
        after = check_image(after, f"{camera} after image")
        if before is not None and after is not None and before.shape != after.shape:
            raise VisionInputError(f"{camera}: before image {before.shape} and after image "
                                   f"{after.shape} differ in size; both must come from one camera")
        shape = before.shape if before is not None else after.shape if after is not None else None
        specs = _check_slots(slots, shape, camera)
        why_b, why_a = unusable_reason(before), unusable_reason(after)
        reason = "; ".join(f"{camera} {side}: {why}" for side, why in (("before", why_b), ("after", why_a)) if why)
        gain = 1.0
        if not reason:
            gain = float(np.median(before[::4, ::4]) + 1.0) / float(np.median(after[::4, ::4]) + 1.0)
        out = {}
        for spec in specs:
            ob, sb, cb = self.read_cells(before, spec) if not why_b else ((), (), 0.0)
            oa, sa, ca = self.read_cells(after, spec) if not why_a else ((), (), 0.0)
            change = 0.0 if reason else _change(before, after, spec.roi, gain)
            out[spec.slot_id] = SlotEvidence(spec.slot_id, change, ob, oa, sb, sa,
                                             confidence=0.0 if reason else round(min(cb, ca), 3),
                                             usable=not reason, reason=reason)
        return out


def _unexplained(img: np.ndarray, img_clip: np.ndarray, ref: np.ndarray, ref_clip: np.ndarray) -> np.ndarray:
    """Pixels of img outside the per-channel range (+- margin) of ref's 3x3 neighbourhood.
    A clipped channel is only a lower bound on the true value, so it is compared one way."""
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(ref, kernel)
    hi[cv2.dilate(ref_clip, kernel).astype(bool)] = np.inf
    lo = cv2.erode(ref, kernel)
    above = img > hi + CHANGE_MARGIN
    below = (img < lo - CHANGE_MARGIN) & ~img_clip.astype(bool)
    return (above | below).any(axis=2)


def _change(before: np.ndarray, after: np.ndarray, roi: tuple[int, int, int, int], gain: float) -> float:
    """Share of the slot's 4x-shrunk pixels, in either image, that the other image cannot
    explain: a pixel is explained when it lies within the colour range of the other image's
    3x3 neighbourhood around it (mixed edge pixels of a shifted item lie within it), so shake
    and a pixel or two of jitter do not count."""
    x, y, w, h = roi
    size = (max(1, w // 4), max(1, h // 4))
    b = cv2.resize(before[y:y + h, x:x + w], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(after[y:y + h, x:x + w], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    b_clip, a_clip = (b >= SATURATED).astype(np.uint8), (a >= SATURATED).astype(np.uint8)
    a *= np.float32(gain)
    changed = _unexplained(a, a_clip, b, b_clip) | _unexplained(b, b_clip, a, a_clip)
    return round(float(changed.mean()), 4)


def slot_evidence(before: np.ndarray | None, after: np.ndarray | None, slots: Sequence,
                  looks: Mapping[str, ProductLook], *, camera: str = "shelf camera") -> dict[str, SlotEvidence]:
    """Evidence per slot id for one camera; `slots` are SlotSpec (or SlotView: same fields)."""
    return ShelfDiff(looks).evidence(before, after, slots, camera=camera)
