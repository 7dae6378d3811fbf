"""Per-slot evidence from a shelf camera's before/after images, knowing nothing of the products.

The reader learns a camera only from what that camera showed: calibration frames captured
through the cabinet's own camera interface (`cabinet vision calibrate`: the empty shelf and the
shelf filled to the planogram, vision.calibration) and, for identities, a recognizer trained on
product photos (vision.recognizer, optional). It imports nothing from vision.sim and assumes no
colour, shape or background: tests/test_walls.py holds that line.

How a pair is read, per camera:

1. Quality. A dark frame (mean < DARK_MEAN), a blank one (std < BLANK_STD), a missing one, or
   an after-frame bit-identical to the before-frame (a live sensor never repeats its noise: a
   hung camera does) make the camera unusable, with the reason; never "nothing changed".
2. Alignment. The after-frame is aligned to the before-frame (and each to the calibration's
   empty frame, on the pixels outside the slots): a translation, by ECC between the two frames
   and by phase correlation of gradients against the calibration (`align`), both blind to
   brightness gain and offset. A shift over MAX_SHIFT_PX is "too much shake": unusable.
3. Illumination. The moving image's brightness is brought to the reference's with a smooth
   per-channel gain field (a quadratic surface in log-gain fitted on a 8x-shrunk image with
   Tukey-weighted least squares, so the pixels that really changed do not pull it). Against the
   empty shelf the fit uses only pixels outside every slot's region when there are enough.
4. Change mask. Both images shrunk 2x and lightly blurred; a pixel changed when its colour lies
   outside the other image's 3x3-neighbourhood colour range by more than a margin (the larger
   of MIN_MARGIN and 4 robust sigmas of the image difference), in either direction, so residual
   shake of a pixel and sensor noise / JPEG do not count; then a 3x3 opening drops specks.
5. Per slot: `change` is the share of its region in the before/after mask; `occupancy_*` the
   share that differs from the empty-shelf calibration; `fill_*` that occupancy over the
   full-shelf calibration's (about items / capacity); a facing cell is occupied when at least
   CELL_OCCUPIED of the full shelf's difference in that cell is there.
6. Identities (only with a recognizer): each occupied cell is cropped from the aligned image and
   classified; a product name maps to an SKU through `sku_of` (the catalog's photo_product). A
   cell whose best name is no catalog product is not ours (None); one whose best score is below
   `min_score` is UNKNOWN ("?"): neither counted as ours nor as foreign.

Without a recognizer the evidence says where things changed and how full each slot is, and
`identified` is False: `counts_*` are empty and `confidence` is 0, so reconcile's vision term
weighs nothing and the session leans on the weights. Bad arrays or slots raise VisionInputError.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Collection, Mapping, Protocol, Sequence

import cv2
import numpy as np

DARK_MEAN = 20.0
BLANK_STD = 3.0
ALIGN_SHRINK = 4
ECC_ITERATIONS = 60
PHASE_SHRINK = 2
MIN_PHASE_RESPONSE = 0.03  # phase-correlation peak below which no shift is measurable
MAX_SHIFT_PX = 24.0       # full-resolution px; more is too much shake for a fixed shelf camera
LIGHT_SHRINK = 8
MASK_SHRINK = 2
SATURATED = 250          # a raw channel this bright may be clipped
MIN_MARGIN = 16.0         # grey levels a shrunk pixel must leave its neighbours' range by
CELL_OCCUPIED = 0.35      # share of the full shelf's per-cell difference that says "occupied"
EMPTY_CELL_SHARE = 0.12   # without a full-shelf frame: a cell this different from empty is occupied
TOUCHED_CHANGE = 0.008    # share of a slot's region that changed: at least this, something moved
MIN_ID_SCORE = 0.5        # recognizer score below which a cell is not identified
ID_SURE_MARGIN = 0.2      # top-1 minus top-2 score at which an identity is certain
# Appearance of one item, knowing no product: a hue x saturation x value histogram of its crop
# shrunk to APPEARANCE_SIZE, compared by the Bhattacharyya coefficient (1: same colours). The
# line is set on real photos, never on the simulator (`python -m vision.calibration
# appearance`): two different train_* photos of one product (12,026 pairs, centre crops shrunk
# to shelf-camera size) are at least this alike in 99% of pairs; a photo of a thing that is not
# a product (fridge_objects, whole and boxed) falls below it in 74% of pairs with a product.
APPEARANCE_BINS = (12, 4, 4)
APPEARANCE_SIZE = (24, 36)  # w, h: a shelf camera's item
SAME_ITEM_MIN_SIMILARITY = 0.51
# How much a similarity says "the same item" rather than "another product": per 0.05 bin from 0
# to 1, log(P(sim | two photos of one product) / P(sim | photos of two products)), measured by
# the same command on the same real photos (12,026 same-product pairs, 20,000 random pairs of
# different products; add-one smoothed, non-decreasing). A moved item is the same item, so it
# is at least as alike as two photos of its product. Read by `look_log_lr`, which caps it at
# LOOK_LR_CAP: these are photos from shops, not from our cameras, and a look alone must not
# outweigh what weights and counts say: a cap below what a miscount costs (4.5 nats,
# reconcile.COUNT_COST), as strong as the prior against a misplaced item (4 nats).
LOOK_LOG_LR = (-3.6, -3.6, -3.6, -3.6, -3.6, -3.6, -3.48, -3.48, -2.33, -2.01,
               -1.9, -1.73, -1.44, -1.02, -0.32, 0.48, 1.51, 2.92, 4.58, 6.04)
LOOK_LR_CAP = 4.0

# quality flags
DARK, BLANK, MISSING, FROZEN, SHAKE = "camera_dark", "camera_blank", "camera_missing", "camera_frozen", "camera_shake"
NO_CALIBRATION, CALIBRATION_SHIFTED = "no_calibration", "calibration_shifted"
NOT_OURS = None
UNKNOWN = "?"  # an occupied cell the recognizer cannot name surely: neither ours nor foreign


class VisionInputError(ValueError):
    """An image or slot list that cannot be read: names which one and what is wrong."""


class Recognizer(Protocol):
    """vision.recognizer.Recognizer's reading half: product names are photo folder names."""

    def classify(self, crops: Sequence[np.ndarray], top_k: int = 3) -> list[list[tuple[str, float]]]: ...


@dataclass(frozen=True)
class SlotSpec:
    slot_id: str
    roi: tuple[int, int, int, int]  # x, y, w, h in the camera image
    capacity: int


@dataclass(frozen=True)
class SlotEvidence:
    """What the camera saw in one slot.

    Always (when `usable`): `change` (0..1 share of the slot's region that differs between
    before and after) and `change_area_px` (that area in full-resolution pixels). With
    calibration frames: `occupancy_*` (share of the region unlike the empty shelf), `fill_*`
    (occupancy over the full shelf's: ~ items / capacity) and `occupied_*` per facing cell.
    With a recognizer (`identified`): `identities_*` per facing cell (top-k (product name,
    score), empty for an empty cell) and `skus_*` per cell (the SKU, None for an empty cell or a
    thing that is not ours, UNKNOWN when the recognizer is not sure). `flags` name what limits
    the evidence (camera_dark, ...); when `usable` is False the per-cell tuples of the
    unreadable side are empty and `reason` says why."""

    slot_id: str
    change: float
    occupied_before: tuple[bool, ...]
    occupied_after: tuple[bool, ...]
    skus_before: tuple[str | None, ...]
    skus_after: tuple[str | None, ...]
    confidence: float  # 0..1: how sure the identities are (0 without a recognizer)
    usable: bool = True
    reason: str = ""
    change_area_px: int = 0
    occupancy_before: float | None = None
    occupancy_after: float | None = None
    fill_before: float | None = None
    fill_after: float | None = None
    identities_before: tuple[tuple[tuple[str, float], ...], ...] = ()
    identities_after: tuple[tuple[tuple[str, float], ...], ...] = ()
    identified: bool = True
    flags: tuple[str, ...] = ()
    cells_changed: tuple[float, ...] = ()  # per facing cell: share of it in the before/after mask
    # per facing cell occupied before and after whose pixels changed: how alike what is there
    # now is to what was there (appearance_similarity); None for every other cell
    cells_alike: tuple[float | None, ...] = ()
    # signatures (`appearance`) of the items that were in cells that emptied or changed, and
    # (cell, signature) of those now in cells that filled or changed
    gone_looks: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)
    new_looks: tuple[tuple[int, np.ndarray], ...] = field(default=(), compare=False, repr=False)
    # signatures of the items in cells occupied before whose pixels did not change: what the
    # slot's products look like under this camera's light in this session
    kept_looks: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)

    @property
    def unlike(self) -> int:
        """Cells occupied before and after that changed and whose content now looks unlike
        what was there: another thing than before. Two lines, by what else the slot saw:
        - when the cell is the only one of its slot an item could have left (none emptied or
          changed besides it, none filled), what is there now is the item that was there, put
          back, or a thing from elsewhere: unlike when its look is likelier between two
          different products than between two photos of one (look_log_lr below 0, from
          LOOK_SAME_FROM ~0.745): the same item is at least as alike as two photos of its
          product;
        - else items of the slot may have changed places (two taken, one put back in the other's
          cell): what is there now is one of the items that left a cell of the slot (or a
          thing from elsewhere), so it is unlike when it is likelier another product than each
          of them (look_log_lr below 0 against every look that left the slot); without those
          looks, unlike only below SAME_ITEM_MIN_SIMILARITY against its own, which 99% of two
          photos of one product pass."""
        lone = self.departed == 1 and not self.filled
        if lone:
            return sum(a is not None and look_log_lr(a) < 0.0 for a in self.cells_alike)
        now = dict(self.new_looks)
        n = 0
        for i, a in enumerate(self.cells_alike):
            if a is None:
                continue
            look = now.get(i)
            if look is None or not self.gone_looks:
                n += a < SAME_ITEM_MIN_SIMILARITY
            else:
                n += best_look_lr(look, self.gone_looks) < 0.0
        return n

    def _changed_cells(self, occupied: bool) -> int | None:
        """Cells read `occupied` (or empty) both before and after whose pixels changed by at
        least the area that makes a slot touched. None: cannot say."""
        if not self.usable or not self.cells_changed or not self.occupied_before \
                or not self.occupied_after:
            return None
        bar = TOUCHED_CHANGE * len(self.cells_changed)
        return sum(b == occupied and a == occupied and c >= bar for b, a, c in
                   zip(self.occupied_before, self.occupied_after, self.cells_changed))

    @property
    def swappable(self) -> int | None:
        """Cells occupied before and after whose pixels changed (at least the area that makes a
        slot touched): each may now hold another item than before. None: cannot say."""
        return self._changed_cells(True)

    @property
    def changed_empty(self) -> int | None:
        """Cells read empty before and after whose pixels changed (at least the `swappable`
        bar): the occupancy measure, set by the full shelf's items, can miss a small thing put
        in a big cell, so something may have arrived there. None: cannot say."""
        return self._changed_cells(False)

    @property
    def departed(self) -> int | None:
        """Cells from which an item may have left: emptied, or changed while occupied."""
        swaps = self.swappable
        if swaps is None:
            return None
        return swaps + sum(b and not a for b, a in zip(self.occupied_before, self.occupied_after))

    @property
    def filled(self) -> int | None:
        """Cells empty before and occupied after: where something may have arrived."""
        if not self.usable or not self.occupied_before or not self.occupied_after:
            return None
        return sum(a and not b for b, a in zip(self.occupied_before, self.occupied_after))

    @property
    def touched(self) -> bool | None:
        """Whether anything moved in the slot (None: the camera cannot say). An untouched slot
        is the strongest product-agnostic fact: nothing of it was taken, nothing put there."""
        return None if not self.usable else self.change >= TOUCHED_CHANGE

    @property
    def count_change(self) -> int | None:
        """Occupied facings after minus before (None without both sides calibrated): items
        that left (negative) or arrived (positive), whatever they are."""
        if not self.usable or not self.occupied_before or not self.occupied_after:
            return None
        return sum(self.occupied_after) - sum(self.occupied_before)

    @property
    def foreign_before(self) -> int:
        """Occupied cells the recognizer says hold nothing of ours (0 without identities)."""
        if not self.identified:
            return 0
        return sum(o and s is None for o, s in zip(self.occupied_before, self.skus_before))

    @property
    def foreign_after(self) -> int:
        if not self.identified:
            return 0
        return sum(o and s is None for o, s in zip(self.occupied_after, self.skus_after))

    @property
    def unknown_before(self) -> int:
        """Occupied cells the recognizer could not name surely (UNKNOWN)."""
        return sum(s == UNKNOWN for s in self.skus_before)

    @property
    def unknown_after(self) -> int:
        return sum(s == UNKNOWN for s in self.skus_after)

    @property
    def counts_before(self) -> dict[str, int]:
        return dict(Counter(s for s in self.skus_before if s not in (None, UNKNOWN))) if self.identified else {}

    @property
    def counts_after(self) -> dict[str, int]:
        return dict(Counter(s for s in self.skus_after if s not in (None, UNKNOWN))) if self.identified else {}


# --- quality ------------------------------------------------------------------------------------

def check_image(img: Any, what: str) -> np.ndarray | None:
    """None stays None (no frame); anything else must be an HxWx3 uint8 array."""
    if img is None:
        return None
    if not isinstance(img, np.ndarray):
        raise VisionInputError(f"{what}: expected a numpy BGR image, got {type(img).__name__}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise VisionInputError(f"{what}: expected an HxWx3 uint8 BGR image, got "
                               f"{img.dtype} {img.shape}; convert the frame with cv2.cvtColor")
    if img.shape[0] < 16 or img.shape[1] < 16:
        raise VisionInputError(f"{what}: image {img.shape[1]}x{img.shape[0]} is too small to read")
    return img


def unusable_reason(img: np.ndarray | None) -> str:
    """Why a frame cannot be read ('' when it can)."""
    if img is None:
        return "no frame (camera missing)"
    small = img[::4, ::4]
    mean = float(small.mean())
    if mean < DARK_MEAN:
        return f"too dark (mean brightness {mean:.0f} < {DARK_MEAN:.0f}): lens covered or light off"
    std = float(small.std())
    if std < BLANK_STD:
        return f"blank frame (contrast {std:.1f} < {BLANK_STD:.0f}): camera blinded or broken"
    return ""


def _quality_flag(reason: str) -> str:
    return MISSING if reason.startswith("no frame") else DARK if reason.startswith("too dark") else BLANK


# --- appearance -----------------------------------------------------------------------------------

def appearance(crop: np.ndarray) -> np.ndarray:
    """An item's colour signature (knowing no product): the normalised hue x saturation x value
    histogram (APPEARANCE_BINS) of the crop shrunk to APPEARANCE_SIZE."""
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 \
            or crop.shape[2] != 3 or crop.shape[0] < 1 or crop.shape[1] < 1:
        raise VisionInputError(f"appearance crop: expected a non-empty HxWx3 uint8 BGR image, got "
                               f"{getattr(crop, 'dtype', type(crop).__name__)} "
                               f"{getattr(crop, 'shape', '')}")
    small = cv2.resize(crop, APPEARANCE_SIZE, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(APPEARANCE_BINS),
                        [0, 180, 0, 256, 0, 256]).ravel().astype(np.float64)
    return hist / max(hist.sum(), 1e-9)


def look_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya coefficient of two signatures (`appearance`): 1 same colours, 0 none shared."""
    return float(np.sum(np.sqrt(a * b)))


def look_log_lr(similarity: float) -> float:
    """Nats for "the same item" over "another product" at this look_similarity (LOOK_LOG_LR,
    interpolated between bin centres, within +-LOOK_LR_CAP). Knows no product."""
    if not math.isfinite(similarity):
        raise VisionInputError(f"look similarity {similarity!r}: expected a number in 0..1")
    n = len(LOOK_LOG_LR)
    centres = (np.arange(n) + 0.5) / n
    v = float(np.interp(min(max(similarity, 0.0), 1.0), centres, LOOK_LOG_LR))
    return min(max(v, -LOOK_LR_CAP), LOOK_LR_CAP)


def best_look_lr(look: np.ndarray, looks: Sequence[np.ndarray]) -> float:
    """The highest look_log_lr of `look` against any of `looks` (non-empty): how likely it is
    the same item as the one it resembles most."""
    return max(look_log_lr(look_similarity(look, g)) for g in looks)


def _product_like(look: np.ndarray, items: Sequence[np.ndarray]) -> float:
    """How alike `look` is to a product seen as several items (non-empty): the median of its
    similarities to them, the product's look rather than its luckiest item."""
    return float(np.median([look_similarity(look, k) for k in items]))


def _same_from() -> float:
    """The similarity at which look_log_lr reaches 0 (the table's centres, linearly)."""
    n = len(LOOK_LOG_LR)
    for i in range(1, n):
        lo, hi = LOOK_LOG_LR[i - 1], LOOK_LOG_LR[i]
        if lo < 0.0 <= hi:
            return round((i - 0.5 + (-lo) / (hi - lo)) / n, 4)
    raise AssertionError("LOOK_LOG_LR never crosses 0")


# from this similarity on, a look is likelier the same item than another product (~0.745)
LOOK_SAME_FROM = _same_from()


def appearance_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two crops look (look_similarity of their signatures)."""
    return look_similarity(appearance(a), appearance(b))


def strangers(evidence: Mapping[str, "SlotEvidence"],
              camera_of: Mapping[str, str] | None = None,
              sources: Mapping[str, Collection[str]] | None = None,
              products: Mapping[str, Collection[str]] | None = None) -> dict[str, list[int]]:
    """Per slot, the cells (indices) that filled or changed whose item now looks like none of
    the items that left a cell anywhere in `evidence` (all the cabinet's slots) and could have
    come to it: every item now in a cell was there before (a changed cell: it left it and came
    back) or came from a place or from outside, and one that looks unlike all that may have
    come came from outside (a foreign object). Knows no product. Two lines, as in `unlike`:
    - against an item that left a slot seen by the same camera (`camera_of`: slot id ->
      camera), the same-item line: like it from LOOK_SAME_FROM (look_log_lr 0) on, since a
      moved item is the same item under the same light;
    - against one seen by another camera (or when `camera_of` is not given), the product's 1%
      line, SAME_ITEM_MIN_SIMILARITY: another camera's light, tint and angle change an item's
      look as much as two photos of one product differ (the simulated cameras draw one item
      0.65 alike across two of them). And, with `products` (slot id -> the SKUs it held), the
      same item must be at least as alike to the item that left as to the other products
      that camera saw stay (each slot of other SKUs: the median over its items that did not
      move, `kept_looks`), among those less alike to the item that left than the thing is (a
      look-alike of the item, such as another 1 l milk, cannot tell the two apart). That is
      the same-camera rule ("likelier the same item than another product") read in the light
      the item left in, where the other camera's tint shifts every look alike: no line to
      set, the camera's own products are the yardstick.
    `sources` (slot id -> slot ids), when given, says from which slots an item may have come
    to each slot: those the explanation of the weights leaves an item of in the cabinet to
    stand there (reconcile: on another shelf, slots that held a SKU the answer adds to the
    slot's shelf; on its own shelf, slots of a SKU of which more items left cells than the
    answer takes off the shelf). An item the explanation takes out of the cabinet cannot be
    standing here, however alike it looks; without `sources` every slot may be. A source
    that is not in `evidence` (no camera read it), or whose cells were not read (its camera
    has no calibration frames), has no look to compare: the cells of a slot it may have
    filled are not judged."""
    cam = camera_of or {}
    gone = [(sid, cam.get(sid), g) for sid, e in evidence.items() for g in e.gone_looks]
    # per item that left, the slots under its camera holding other products that kept some in
    # place, each with how alike that product is to the item (the median over its kept items)
    rivals: list[list[tuple[str, float]]] = [[] for _ in gone]
    if products is not None:
        for j, (g_slot, g_cam, g) in enumerate(gone):
            mine = set(products.get(g_slot, ()))
            rivals[j] = [(other, _product_like(g, e.kept_looks)) for other, e in evidence.items()
                         if other != g_slot and e.kept_looks and cam.get(other) == g_cam
                         and mine.isdisjoint(products.get(other, ()))]

    def like(look, near, where, came_from, j) -> bool:
        g_slot, g_cam, g = gone[j]
        if came_from is not None and g_slot not in came_from:
            return False
        sim = look_similarity(look, g)
        if where is not None and g_cam == where:
            return look_log_lr(sim) >= 0.0
        if sim < SAME_ITEM_MIN_SIMILARITY:
            return False
        for other, to_item in rivals[j]:
            # a product that looks at least as much like the item as this thing does cannot
            # tell them apart (a look-alike): only one less like the item is a yardstick
            if to_item >= sim:
                continue
            if other not in near:  # this thing against that product, once per thing
                near[other] = _product_like(look, evidence[other].kept_looks)
            if near[other] > sim:
                return False
        return True

    # slots whose cells were read on both sides (calibration frames): only they have looks
    looked = {sid for sid, e in evidence.items() if e.occupied_before and e.occupied_after}
    out: dict[str, list[int]] = {}
    for sid, e in evidence.items():
        where = cam.get(sid)
        came_from = None if sources is None else frozenset(sources.get(sid, ()))
        if came_from is not None and not came_from <= looked:
            continue  # an item may have come from a slot no camera read: no look to compare
        cells = []
        for i, look in e.new_looks:
            near: dict[str, float] = {}  # this thing against each rival product, once
            if not any(like(look, near, where, came_from, j) for j in range(len(gone))):
                cells.append(i)
        if cells:
            out[sid] = cells
    return out


# --- alignment and lighting -----------------------------------------------------------------------

@dataclass(frozen=True)
class Alignment:
    aligned: np.ndarray | None  # the moving image in the reference's pixels; None when it failed
    shift_px: float
    rotation_deg: float
    reason: str = ""


def align(moving: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> Alignment:
    """`moving` shifted onto `reference`; `reason` says why not. A fixed shelf camera shakes by
    a few pixels, so the motion is a translation (0.4 deg of roll is 2 px at the edge, which the
    change mask's neighbourhood tolerance absorbs).

    Two frames of one scene (no mask): ECC on 4x-shrunk blurred grey images, from no motion, so
    it settles on the nearest optimum (a row of like items has a false optimum one item away).
    Against a calibration frame (`mask`: the static pixels, outside the slots, where the items
    cannot mislead it): phase correlation of gradient images at half resolution; a weak peak
    means a plain wall, where a shift can neither be measured nor matter. Both are blind to
    brightness gain and offset."""
    if mask is None:
        ref, mov = _grey_small(reference), _grey_small(moving)
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, 1e-5)
        try:
            cv2.findTransformECC(ref, mov, warp, cv2.MOTION_TRANSLATION, criteria, None, 5)
        except cv2.error:
            return Alignment(None, float("inf"), 0.0, "the images could not be aligned (ECC did not converge)")
        dx, dy = float(warp[0, 2]) * ALIGN_SHRINK, float(warp[1, 2]) * ALIGN_SHRINK
    else:
        a, b = _edges(reference, mask), _edges(moving, mask)
        (dx, dy), response = cv2.phaseCorrelate(a, b, _hann(a.shape))
        dx, dy = dx * PHASE_SHRINK, dy * PHASE_SHRINK
        if response < MIN_PHASE_RESPONSE:
            dx = dy = 0.0
    shift = float(np.hypot(dx, dy))
    if shift > MAX_SHIFT_PX:
        return Alignment(None, shift, 0.0, f"too much shake: moved {shift:.0f} px (limit {MAX_SHIFT_PX:.0f} px)")
    h, w = reference.shape[:2]
    warp = np.float32([[1, 0, -dx], [0, 1, -dy]])
    out = cv2.warpAffine(moving, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Alignment(out, shift, 0.0)


def _grey_small(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = g.shape
    g = cv2.resize(g, (max(8, w // ALIGN_SHRINK), max(8, h // ALIGN_SHRINK)), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(g.astype(np.float32), (0, 0), 1.0)


def _edges(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    h, w = g.shape
    g = cv2.resize(g, (w // PHASE_SHRINK, h // PHASE_SHRINK), interpolation=cv2.INTER_AREA)
    g = cv2.GaussianBlur(g, (0, 0), 1.0)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    if mask is not None:
        m = cv2.resize(mask.astype(np.float32), (mag.shape[1], mag.shape[0]), interpolation=cv2.INTER_AREA)
        mag *= cv2.GaussianBlur(m, (0, 0), 2.0)
    return mag


@lru_cache(maxsize=8)
def _hann(shape: tuple[int, int]) -> np.ndarray:
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)


def _design(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xs / max(1, w - 1) - 0.5, ys / max(1, h - 1) - 0.5
    return np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=-1).reshape(-1, 6)


def relight(img: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """`img` (float32) with a smooth per-channel gain applied so its lighting matches
    `reference`'s; `mask` (HxW bool) says which pixels may be used for the fit."""
    H, W = img.shape[:2]
    sw, sh = max(4, W // LIGHT_SHRINK), max(4, H // LIGHT_SHRINK)
    a = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    b = cv2.resize(reference, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    ok = ((a > 8) & (a < 247) & (b > 8) & (b < 247)).all(axis=2)
    if mask is not None:
        small_mask = cv2.resize(mask.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
        if small_mask[ok].sum() >= 40:
            ok &= small_mask
    X = _design(sh, sw)
    gains = np.empty((sh, sw, 3), np.float32)
    for c in range(3):
        r = (np.log(b[..., c] + 4.0) - np.log(a[..., c] + 4.0)).reshape(-1)
        sel = ok.reshape(-1)
        Xs, rs = X[sel], r[sel]
        if len(rs) < 12:
            gains[..., c] = float(np.exp(np.median(r)))
            continue
        wts = np.ones(len(rs), np.float32)
        coef = np.zeros(6, np.float32)
        for _ in range(5):  # Tukey-weighted least squares: changed pixels lose their pull
            xw = Xs * wts[:, None]
            coef = np.linalg.solve(xw.T @ Xs + 1e-6 * np.eye(6, dtype=np.float32), xw.T @ rs)
            res = rs - Xs @ coef
            s = max(1.4826 * float(np.median(np.abs(res))), 0.01)
            z = np.clip(res / (4.685 * s), -1, 1)
            wts = ((1 - z * z) ** 2).astype(np.float32)
        gains[..., c] = np.exp(X @ coef).reshape(sh, sw)
    # the field is smooth: computed shrunk, stretched to the image
    return img.astype(np.float32) * cv2.resize(gains, (W, H), interpolation=cv2.INTER_LINEAR)


# --- change masks ---------------------------------------------------------------------------------

def _shrunk(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = cv2.resize(img.astype(np.float32), (max(2, w // MASK_SHRINK), max(2, h // MASK_SHRINK)),
                   interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(s, (0, 0), 0.8)


def _clipped(raw: np.ndarray) -> np.ndarray:
    """Per shrunk pixel and channel: whether the raw camera pixels there touch full scale (a
    clipped channel only says "at least this bright")."""
    h, w = raw.shape[:2]
    hot = (raw >= SATURATED).astype(np.float32)
    small = cv2.resize(hot, (max(2, w // MASK_SHRINK), max(2, h // MASK_SHRINK)), interpolation=cv2.INTER_AREA)
    return cv2.dilate((small > 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _outside(img: np.ndarray, img_clip: np.ndarray, ref: np.ndarray, ref_clip: np.ndarray,
             margin: float) -> np.ndarray:
    """Pixels of img outside the per-channel range (+- margin) of ref's 3x3 neighbourhood; a
    clipped channel is only a lower bound, so it is compared one way."""
    kernel = np.ones((3, 3), np.uint8)
    hi, lo = cv2.dilate(ref, kernel), cv2.erode(ref, kernel)
    above = (img > hi + margin) & ~ref_clip
    below = (img < lo - margin) & ~img_clip
    return (above | below).any(axis=2)


def change_mask(a: np.ndarray, b: np.ndarray, raw_a: np.ndarray | None = None,
                raw_b: np.ndarray | None = None) -> np.ndarray:
    """Bool mask (at 1/MASK_SHRINK resolution) of where two aligned, relit images differ;
    `raw_*` are the camera's pixels before relighting, to know which channels were clipped."""
    sa, sb = _shrunk(a), _shrunk(b)
    ca = _clipped(a if raw_a is None else raw_a)
    cb = _clipped(b if raw_b is None else raw_b)
    d = (sa - sb).mean(axis=2)
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    margin = max(MIN_MARGIN, 4.0 * sigma)
    mask = (_outside(sa, ca, sb, cb, margin) | _outside(sb, cb, sa, ca, margin)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool)


def _share(mask: np.ndarray, box: Sequence[int]) -> float:
    x, y, w, h = (int(v) // MASK_SHRINK for v in box)
    part = mask[y:y + max(1, h), x:x + max(1, w)]
    return float(part.mean()) if part.size else 0.0


def facing_cells(roi: Sequence[int], capacity: int) -> list[tuple[int, int, int, int]]:
    """The slot's region cut into `capacity` facing cells (x, y, w, h), left to right."""
    x, y, w, h = (int(v) for v in roi)
    edges = [x + round(i * w / capacity) for i in range(capacity + 1)]
    return [(edges[i], y, edges[i + 1] - edges[i], h) for i in range(capacity)]


def _check_slots(slots: Sequence, shape: tuple[int, ...] | None, camera: str) -> list[SlotSpec]:
    H, W = (shape[0], shape[1]) if shape is not None else (10 ** 9, 10 ** 9)
    specs, seen = [], set()
    for s in slots:
        try:
            spec = SlotSpec(str(s.slot_id if hasattr(s, "slot_id") else s.id),
                            tuple(int(v) for v in s.roi), int(s.capacity))
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


def _item_box(mask: np.ndarray | None, cell: Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the mask's pixels inside the cell, or the cell itself."""
    x, y, w, h = (int(v) for v in cell)
    if mask is not None:
        k = MASK_SHRINK
        part = mask[y // k:(y + h) // k, x // k:(x + w) // k]
        ys, xs = np.nonzero(part)
        if len(xs) >= 8:
            return (x + int(xs.min()) * k, y + int(ys.min()) * k,
                    x + (int(xs.max()) + 1) * k, y + (int(ys.max()) + 1) * k)
    return x, y, x + w, y + h


def _cell_look(img: np.ndarray, empty_mask: np.ndarray, cell: Sequence[int]) -> np.ndarray:
    """The signature (`appearance`) of the item in a facing cell, cropped around what differs
    from the empty shelf there."""
    x0, y0, x1, y1 = _item_box(empty_mask, cell)
    return appearance(img[y0:y1, x0:x1])


def _outside_slots(shape: tuple[int, ...], specs: Sequence[SlotSpec]) -> np.ndarray:
    mask = np.ones(shape[:2], bool)
    for s in specs:
        x, y, w, h = s.roi
        mask[max(0, y - 8):y + h, max(0, x - 8):x + w + 8] = False  # the slot (its board stays)
    return mask


# --- the reader -----------------------------------------------------------------------------------

# per (empty frame, full frame, slots), by content: what each slot and cell of the full shelf
# differs from the empty one (a pure function of the frames, so shared by every reader)
_FULL_SHARES: dict[tuple, dict[str, tuple[float, list[float]]]] = {}

@dataclass
class _Side:
    """One usable frame, aligned to the empty-shelf calibration when there is one."""

    image: np.ndarray
    empty_mask: np.ndarray | None = None  # where it differs from the empty shelf
    identities: dict[tuple[str, int], tuple[tuple[str, float], ...]] = field(default_factory=dict)


class ShelfDiff:
    """Reads the slots of one camera at a time. `recognizer` (optional) names what is in each
    occupied cell; `sku_of` maps its product names to catalog SKUs; `min_score` is the score
    under which a cell is not identified."""

    def __init__(self, recognizer: Recognizer | None = None, *, sku_of: Mapping[str, str] | None = None,
                 min_score: float = MIN_ID_SCORE) -> None:
        if recognizer is not None and not callable(getattr(recognizer, "classify", None)):
            raise VisionInputError(f"recognizer {type(recognizer).__name__}: has no classify(crops, top_k); "
                                   f"pass a vision.recognizer.Recognizer or None")
        self.recognizer = recognizer
        self.sku_of = dict(sku_of or {})
        self.min_score = float(min_score)

    def _against_empty(self, img: np.ndarray, calibration: Any, specs: Sequence[SlotSpec],
                       flags: list[str]) -> np.ndarray | None:
        empty = calibration.empty
        if empty.shape != img.shape:
            flags.append(CALIBRATION_SHIFTED)
            return None
        static = _outside_slots(img.shape, specs)
        al = align(img, empty, static)
        if al.aligned is None:
            flags.append(CALIBRATION_SHIFTED)
            return None
        lit = relight(al.aligned, empty, static)
        return change_mask(lit, empty, al.aligned, empty)

    def _full_shares(self, calibration: Any, specs: Sequence[SlotSpec]) -> dict[str, tuple[float, list[float]]]:
        """Per slot: (share of the region unlike the empty shelf, per-cell shares) when full."""
        full = getattr(calibration, "full", None)
        if full is None:
            return {}
        # by content: every bundle of a cabinet carries the same frames, read anew each time
        key = (hashlib.sha1(calibration.empty.tobytes()).hexdigest(), calibration.empty.shape,
               hashlib.sha1(full.tobytes()).hexdigest(), tuple(specs))
        held = _FULL_SHARES.get(key)
        if held is None:
            mask = self._against_empty(full, calibration, specs, [])
            held = {} if mask is None else {
                s.slot_id: (_share(mask, s.roi), [_share(mask, c) for c in facing_cells(s.roi, s.capacity)])
                for s in specs}
            if len(_FULL_SHARES) >= 32:
                _FULL_SHARES.pop(next(iter(_FULL_SHARES)))
            _FULL_SHARES[key] = held
        return held

    def _identify(self, img: np.ndarray, cells: list[tuple[str, int, tuple[int, int, int, int]]],
                  mask: np.ndarray | None) -> dict[tuple[str, int], tuple[tuple[str, float], ...]]:
        """Top-k names per occupied cell; each crop is the box around what differs from the
        empty shelf in that cell (the item, not the wall behind it), else the whole cell."""
        if self.recognizer is None or not cells:
            return {}
        crops = [img[y0:y1, x0:x1].copy() for x0, y0, x1, y1 in (_item_box(mask, c) for _, _, c in cells)]
        answers = self.recognizer.classify(crops, top_k=3)
        if len(answers) != len(cells):
            raise VisionInputError(f"recognizer: {len(answers)} answers for {len(cells)} crops")
        return {(sid, i): tuple((str(n), float(s)) for n, s in ans) for (sid, i, _), ans in zip(cells, answers)}

    def _label(self, ranked: tuple[tuple[str, float], ...]) -> tuple[str | None, float]:
        """(SKU, None for not ours or UNKNOWN, how sure 0..1) from a cell's ranked names."""
        if not ranked:
            return UNKNOWN, 0.0  # no answer (a crop too small to name): no claim either way
        name, s1 = ranked[0]
        if s1 < self.min_score:
            return UNKNOWN, 0.0  # nothing it knows well: no claim either way
        s2 = ranked[1][1] if len(ranked) > 1 else 0.0
        return self.sku_of.get(name), float(np.clip((s1 - s2) / ID_SURE_MARGIN, 0.0, 1.0))

    def evidence(self, before: np.ndarray | None, after: np.ndarray | None, slots: Sequence, *,
                 camera: str = "shelf camera", calibration: Any = None) -> dict[str, SlotEvidence]:
        """Evidence per slot id. `calibration` is this camera's vision.calibration.CameraCalibration
        (empty shelf, and full shelf when captured) or None."""
        before = check_image(before, f"{camera} before image")
        after = check_image(after, f"{camera} after image")
        if before is not None and after is not None and before.shape != after.shape:
            raise VisionInputError(f"{camera}: before image {before.shape} and after image "
                                   f"{after.shape} differ in size; both must come from one camera")
        shape = before.shape if before is not None else after.shape if after is not None else None
        specs = _check_slots(slots, shape, camera)
        why = {"before": unusable_reason(before), "after": unusable_reason(after)}
        flags = [_quality_flag(r) for r in why.values() if r]
        if not any(why.values()) and np.array_equal(before, after):
            why["after"] = "identical to the before frame, bit for bit: the camera is frozen"
            flags.append(FROZEN)
        change_mask_ = relit_after = None
        if not any(why.values()):
            al = align(after, before)
            if al.aligned is None:
                why["after"] = al.reason
                flags.append(SHAKE)
            else:
                after = al.aligned
                relit_after = relight(after, before)
                change_mask_ = change_mask(relit_after, before, after, before)
        reason = "; ".join(f"{camera} {side}: {r}" for side, r in why.items() if r)
        sides: dict[str, _Side] = {}
        for side, img in (("before", before), ("after", after)):
            if why[side] or img is None:
                continue
            sides[side] = _Side(img)
        if calibration is None:
            flags.append(NO_CALIBRATION)
        else:
            for s in sides.values():
                s.empty_mask = self._against_empty(s.image, calibration, specs, flags)
        full = self._full_shares(calibration, specs) if calibration is not None else {}
        occupied: dict[tuple[str, str], tuple[bool, ...]] = {}
        for side, s in sides.items():
            for spec in specs:
                cells = facing_cells(spec.roi, spec.capacity)
                if s.empty_mask is None:
                    occupied[side, spec.slot_id] = ()
                    continue
                ref = full.get(spec.slot_id, (None, [None] * len(cells)))[1]
                occupied[side, spec.slot_id] = tuple(
                    _share(s.empty_mask, c) >= (CELL_OCCUPIED * r if r else EMPTY_CELL_SHARE)
                    for c, r in zip(cells, ref))
            todo = [(spec.slot_id, i, c) for spec in specs
                    for i, (c, o) in enumerate(zip(facing_cells(spec.roi, spec.capacity),
                                                   occupied[side, spec.slot_id])) if o]
            s.identities = self._identify(s.image, todo, s.empty_mask)
        out = {}
        identified = self.recognizer is not None
        for spec in specs:
            per = {}
            for side in ("before", "after"):
                s = sides.get(side)
                occ = occupied.get((side, spec.slot_id), ())
                ids = tuple(s.identities.get((spec.slot_id, i), ()) if o else () for i, o in enumerate(occ)) \
                    if s is not None else ()
                labels = [self._label(r) if o else (None, 1.0) for o, r in zip(occ, ids)]
                occupancy = fill = None
                if s is not None and s.empty_mask is not None:
                    occupancy = round(_share(s.empty_mask, spec.roi), 4)
                    ref = full.get(spec.slot_id, (0.0, []))[0]
                    fill = round(occupancy / ref, 3) if ref > 0.02 else None
                per[side] = (occ, ids, tuple(lab for lab, _ in labels), [c for _, c in labels], occupancy, fill)
            change = round(_share(change_mask_, spec.roi), 4) if change_mask_ is not None else 0.0
            cells_changed = () if change_mask_ is None else tuple(
                round(_share(change_mask_, c), 4) for c in facing_cells(spec.roi, spec.capacity))
            area = int(round(change * spec.roi[2] * spec.roi[3]))
            cells_alike, gone_looks, new_looks, kept_looks = self._looks(
                sides, relit_after, spec, per["before"][0], per["after"][0], cells_changed)
            sure = per["before"][3] + per["after"][3]
            # without occupancy on both sides (no calibration frames) no cell was looked at:
            # the identities claim nothing, least of all that nothing changed
            looked = bool(per["before"][0]) and bool(per["after"][0])
            confidence = 0.0 if (reason or not identified or not looked) \
                else round(min(sure) if sure else 1.0, 3)
            out[spec.slot_id] = SlotEvidence(
                spec.slot_id, change, per["before"][0], per["after"][0],
                per["before"][2] if identified else (None,) * len(per["before"][0]),
                per["after"][2] if identified else (None,) * len(per["after"][0]),
                confidence, usable=not reason, reason=reason, change_area_px=area,
                occupancy_before=per["before"][4], occupancy_after=per["after"][4],
                fill_before=per["before"][5], fill_after=per["after"][5],
                identities_before=per["before"][1], identities_after=per["after"][1],
                identified=identified, flags=tuple(dict.fromkeys(flags)),
                cells_changed=cells_changed, cells_alike=cells_alike, gone_looks=gone_looks,
                new_looks=new_looks, kept_looks=kept_looks)
        return out

    @staticmethod
    def _looks(sides: Mapping[str, _Side], relit_after: np.ndarray | None, spec: SlotSpec,
               occ_before: Sequence[bool], occ_after: Sequence[bool],
               cells_changed: Sequence[float]) -> tuple[tuple, tuple, tuple, tuple]:
        """(cells_alike, gone_looks, new_looks, kept_looks) of one slot, each item cropped around what
        differs from the empty shelf in its cell (the after image relit to the before's light):
        per cell occupied before and after that changed (the `swappable` bar) the appearance
        similarity of its item before and after (None elsewhere); the signatures of the items
        that were in cells that emptied or changed (what may have left), and (cell index,
        signature) of the items now in cells that filled or changed (what may have arrived); the
        signatures of the items in cells occupied before whose pixels did not change (what
        stayed). All empty without both sides' empty-shelf masks."""
        b, a = sides.get("before"), sides.get("after")
        if b is None or a is None or b.empty_mask is None or a.empty_mask is None \
                or relit_after is None or not occ_before or not occ_after or not cells_changed:
            return (), (), (), ()
        bar = TOUCHED_CHANGE * len(cells_changed)
        lit = np.clip(relit_after, 0, 255).astype(np.uint8)
        alike: list[float | None] = []
        gone, new, kept = [], [], []
        for i, (cell, ob, oa, c) in enumerate(zip(facing_cells(spec.roi, spec.capacity), occ_before,
                                                  occ_after, cells_changed)):
            swapped = ob and oa and c >= bar
            before_look = after_look = None
            if ob and (swapped or not oa):
                before_look = _cell_look(b.image, b.empty_mask, cell)
                gone.append(before_look)
            if oa and (swapped or not ob):
                after_look = _cell_look(lit, a.empty_mask, cell)
                new.append((i, after_look))
            if ob and oa and c < bar:
                kept.append(_cell_look(b.image, b.empty_mask, cell))
            alike.append(round(look_similarity(before_look, after_look), 4) if swapped else None)
        return tuple(alike), tuple(gone), tuple(new), tuple(kept)


def slot_evidence(before: np.ndarray | None, after: np.ndarray | None, slots: Sequence, *,
                  camera: str = "shelf camera", calibration: Any = None,
                  recognizer: Recognizer | None = None,
                  sku_of: Mapping[str, str] | None = None) -> dict[str, SlotEvidence]:
    """Evidence per slot id for one camera; `slots` are SlotSpec (or anything with slot_id or
    id, roi and capacity: planogram slots)."""
    return ShelfDiff(recognizer, sku_of=sku_of).evidence(before, after, slots, camera=camera,
                                                         calibration=calibration)
