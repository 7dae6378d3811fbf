"""Per-slot evidence from a shelf camera's before/after images.

Each slot's region of interest is cut into its facing cells (vision.render.facing_boxes), and
each cell is matched against what it could hold: every catalog look, an empty cell and a few
foreign things, each drawn alone by vision.render.render_cell at the cell's size.

Reading a cell. The camera's lighting gain is measured once per image, on the back panel
(the commonest neutral grey); the references are brought to that gain and clipped at 255 the
way a camera clips, so a bright white tub stays a tub and does not fade into the panel. Cell
and references are shrunk 3x and lightly blurred (sensor noise, JPEG blocks and sub-pixel
offsets wash out; colours and shapes stay), and each reference is slid over the cell's
window +-6 px to absorb camera shake and an item standing a pixel off centre. The distance is
the RMS grey-level difference at the best offset. A cell is the nearest reference; it is a
foreign object when that is a foreign thing, or when nothing is near (an empty cell must be
within EMPTY_RMS of the bare panel, a product within FOREIGN_RMS of its look). Its confidence
is how clearly the nearest label beats the nearest other label (distance ratio) and how far
the match stays inside its limit; the slot's confidence is its least sure cell. On rendered
shelves under the noise, lighting, shake and JPEG of the simulator the right reference is
within ~15 grey levels and every other label at least ~2x farther.

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
from functools import lru_cache
from typing import Mapping, Sequence

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vision.sim.render import PANEL_BGR, ProductLook, facing_boxes, render_cell

SCALE = 3            # cells are compared shrunk this many times
SHIFT = 2            # ... with references slid +-SHIFT shrunk pixels (+-6 px) over them
BLUR_SIGMA = 0.8     # shrunk pixels; washes out noise, JPEG and sub-pixel offsets
EMPTY_RMS = 6.0      # grey levels: an "empty" cell farther than this from the panel holds something
FOREIGN_RMS = 24.0   # grey levels: a cell farther than this from its nearest look is not that product
SURE_RATIO = 0.5     # nearest/next-other distance at or below which a cell is read with certainty
UNSURE_RATIO = 0.8   # ... and at or above which it is a toss-up (confidence 0)
FOREIGN_PROTOTYPES = ("foreign-1", "foreign-2", "foreign-3")
CHANGE_MARGIN = 24  # grey levels a shrunk pixel must move to count as changed
SATURATED = 245  # a shrunk pixel this bright may hold clipped ones: its change cannot be told
DARK_MEAN = 20.0
BLANK_STD = 3.0
EMPTY = "__empty__"
REFERENCE_CACHE = 128  # (looks, cell size, gain) entries of prepared references kept
GAIN_STEP = 0.02       # references are drawn for the measured gain rounded to this
_PANEL = np.array(PANEL_BGR, np.float32)


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


def lighting_gain(img: np.ndarray) -> float:
    """The camera's brightness relative to the rendered panel, measured on the panel itself:
    the commonest brightness among neutral pixels of the panel's tint (white labels are neutral
    too, but the panel is the larger area). Falls back to the median when nothing is neutral."""
    small = img[::8, ::8].astype(np.float32)
    grey = small.mean(axis=2)
    tint = _PANEL / _PANEL.mean()
    neutral = (np.abs(small / (grey[..., None] + 1.0) - tint).max(axis=2) < 0.04) \
        & (small.max(axis=2) < 250)
    ratio = grey[neutral] / float(_PANEL.mean())
    if ratio.size < 30:
        return float(np.clip(np.median(grey) / _PANEL.mean(), 0.2, 4.0))
    hist, edges = np.histogram(ratio, bins=np.arange(0.1, 3.0, 0.02))
    k = int(np.argmax(hist))
    near = ratio[(ratio >= edges[max(0, k - 1)]) & (ratio < edges[min(len(edges) - 1, k + 2)])]
    return float(np.clip(np.median(near), 0.2, 4.0))


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA)


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


@lru_cache(maxsize=REFERENCE_CACHE)
def _references(looks: tuple[ProductLook, ...], size: tuple[int, int],
                gain: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(references as rows, their squared norms, shrunk cell size) for cells of `size` seen at
    `gain`: the empty panel, the foreign prototypes and each look, drawn alone on the panel,
    brought to the gain, clipped like a camera, shrunk and blurred, with the panel around each
    kept so that blur at the borders matches what the camera sees. Pure, so memoised across
    calls and readers (the demo's cabinet has a handful of cell sizes and one lighting)."""
    cells = [render_cell(None, size), *(render_cell(f, size) for f in FOREIGN_PROTOTYPES),
             *(render_cell(look, size) for look in looks)]
    w, h = size
    small = (max(2, round(w / SCALE)), max(2, round(h / SCALE)))
    pad = SHIFT * SCALE
    panel = tuple(float(v) for v in np.clip(_PANEL * gain, 0, 255))
    rows = []
    for cell in cells:
        cam = np.clip(cell.astype(np.float32) * np.float32(gain), 0, 255)
        ext = cv2.copyMakeBorder(cam, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=panel)
        ref = _shrink(ext, (small[0] + 2 * SHIFT, small[1] + 2 * SHIFT))
        rows.append(ref[SHIFT:SHIFT + small[1], SHIFT:SHIFT + small[0]].ravel())
    refs = np.ascontiguousarray(np.stack(rows))
    norms = (refs * refs).sum(axis=1)
    refs.flags.writeable = norms.flags.writeable = False
    return refs, norms, small


class ShelfDiff:
    """Reads slots against a catalog of looks (the drawn references are memoised by
    `_references`, so any number of readers and cameras share them)."""

    def __init__(self, looks: Mapping[str, ProductLook], *, empty_distance: float = EMPTY_RMS,
                 foreign_distance: float = FOREIGN_RMS) -> None:
        self.looks = dict(looks)
        self.empty_distance = float(empty_distance)
        self.foreign_distance = float(foreign_distance)
        self._names: list[str | None] = [EMPTY, *[None] * len(FOREIGN_PROTOTYPES), *self.looks]
        self._looks = tuple(self.looks.values())

    def distances(self, padded: np.ndarray, box: tuple[int, int, int, int], gain: float) -> np.ndarray:
        """RMS grey-level distance of one cell (x, y, w, h in the unpadded image; `padded` is the
        image with SHIFT * SCALE px replicated around it: `pad_image`) to every reference."""
        x, y, w, h = box
        refs, norms, (sw, sh) = _references(self._looks, (w, h), round(gain / GAIN_STEP) * GAIN_STEP)
        pad = SHIFT * SCALE
        window = _shrink(padded[y:y + h + 2 * pad, x:x + w + 2 * pad],
                         (sw + 2 * SHIFT, sh + 2 * SHIFT)).astype(np.float32)
        offsets = sliding_window_view(window, (sh, sw, 3)).reshape(-1, refs.shape[1])
        # squared distances at every offset, reference by reference (matrix-vector products stay
        # on one core: on a loaded 2-core box a threaded matrix product costs more than it saves)
        cross = np.stack([offsets @ r for r in refs], axis=1)
        ssd = (offsets * offsets).sum(axis=1)[:, None] + norms[None, :] - 2.0 * cross
        return np.sqrt(np.maximum(ssd.min(axis=0), 0.0) / refs.shape[1])

    def _label(self, d: np.ndarray) -> tuple[str | None, float]:
        """(EMPTY, SKU or None for a foreign object; confidence 0..1) from the distances."""
        names = self._names
        order = np.argsort(d, kind="stable")
        best, d1 = names[order[0]], float(d[order[0]])
        d2 = next((float(d[j]) for j in order[1:] if names[j] != best), 4.0 * FOREIGN_RMS)
        limit = self.empty_distance if best == EMPTY else self.foreign_distance
        if best is not None and d1 > limit:  # near nothing we know: something not ours
            return None, float(np.clip((d1 - limit) / (0.3 * limit), 0.0, 1.0))
        ratio = d1 / max(d2, 1e-6)
        sure = float(np.clip((UNSURE_RATIO - ratio) / (UNSURE_RATIO - SURE_RATIO), 0.0, 1.0))
        if best is not None:
            sure = min(sure, float(np.clip((limit - d1) / (0.3 * limit), 0.0, 1.0)))
        return best, sure

    def read_cells(self, img: np.ndarray, spec: SlotSpec, *, gain: float | None = None,
                   padded: np.ndarray | None = None) -> tuple[tuple[bool, ...], tuple[str | None, ...], float]:
        """(occupied, sku or None, least confidence) for each facing cell of a slot in one image.
        `gain` and `padded` (see `distances`) are measured from `img` when not given."""
        if gain is None:
            gain = lighting_gain(img)
        if padded is None:
            padded = pad_image(img)
        occupied, skus, margins = [], [], []
        for box in facing_boxes(spec.roi, spec.capacity):
            label, sure = self._label(self.distances(padded, box, gain))
            occupied.append(label != EMPTY)
            skus.append(None if label == EMPTY else label)
            margins.append(sure)
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
        read_b = None if why_b else {"gain": lighting_gain(before), "padded": pad_image(before)}
        read_a = None if why_a else {"gain": lighting_gain(after), "padded": pad_image(after)}
        out = {}
        for spec in specs:
            ob, sb, cb = self.read_cells(before, spec, **read_b) if read_b else ((), (), 0.0)
            oa, sa, ca = self.read_cells(after, spec, **read_a) if read_a else ((), (), 0.0)
            change = 0.0 if reason else _change(before, after, spec.roi, gain)
            out[spec.slot_id] = SlotEvidence(spec.slot_id, change, ob, oa, sb, sa,
                                             confidence=0.0 if reason else round(min(cb, ca), 3),
                                             usable=not reason, reason=reason)
        return out


def pad_image(img: np.ndarray) -> np.ndarray:
    """The image with SHIFT * SCALE px replicated around it, for `distances`."""
    pad = SHIFT * SCALE
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


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
