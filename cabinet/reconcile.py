"""Reconcile: from a session bundle to a basket, with its probability, runner-up and evidence.

Model (docs/session-bundle.md has it in prose). For each shelf s the unknown is x_s, the net
change in count of each SKU on that shelf (negative: removed). A shelf can lose the SKUs it
held before and gain SKUs held on other shelves (a misplaced return or an item moved inside the
cabinet). The basket is b = -sum_s x_s and must be >= 0 for every SKU: what leaves one shelf and
arrives on another is not sold. Each candidate is scored in log space:

  weight   Student-t (T_DOF) in r = measured delta - sum_k x_k w_k with scale^2
           v = noise^2 + sum_k |x_k| (tol_k / 2)^2; noise from the measured samples (robust:
           1.4826 MAD / sqrt(n) a side) or the bundle's parameter, an unsettled side's sample
           scatter; mixed with a flat "something else on or off the shelf" term (OUTLIER_*) open
           to every candidate in both directions: a phone put down, a spike, a faulty cell is
           explained as such, not by a chain of odd moves
  vision   per shelf whose every slot the camera read (vision.diff, product-agnostic): an
           untouched slot lost nothing, an untouched shelf gained nothing, a one-SKU slot lost
           nothing from a cell that neither emptied nor changed, and an arrival the counts did
           not see needs a cell that changed while occupied or while read empty (a small thing
           the occupancy measure missed) (TOUCH_COST); with the bundle's
           calibration frames the occupied-facing counts (COUNT_COST per miscount, the larger
           of the shelf's net count and the per-slot counts, which hold both ways: a one-SKU
           slot that lost n facings lost n of its SKU unless an unseen arrival hides one); with
           a recogniser -BETA * confidence * |x - seen|  (`vision_term`: the seam)
  priors   -ITEM_COST per item leaving a shelf; -MISPLACED_COST per item arriving on a shelf
           beyond those the camera saw arrive, growing by MISPLACED_GROWTH with each further one

Search: per shelf, every candidate within the limits (`_limits`: without a camera count, up to
MAX_REMOVED items lost and MAX_ADDED gained, beyond which the priors alone leave the window;
with one, every arrival it saw and two it could hide, and no item from a cell the camera saw
unchanged) is scored once with numpy (`_shelf_space`), and for each look the best
TOP_K are kept; shelves are then combined by depth-first search with a bound, keeping
combinations within WINDOW nats of the best and with b >= 0. Probabilities are normalised over
what is kept, summed per basket. The answer is the top basket.

Two looks. Weight alone prefers "an apple juice taken" (-745 g) to "an orange juice taken and a
cola put in its place" (-1102 + 343 g) only through the misplaced-item prior, and a wrong prior
overcharges. So the posterior is computed twice, with MISPLACED_COST and with the lenient
LENIENT_MISPLACED_COST; the top basket must hold min_confidence in the first and
LENIENT_MIN_CONFIDENCE in the second, else the session is flagged low_confidence. A shelf
that did not settle counts with its samples' scatter as noise; it is flagged shelf_unsettled
only when a side has fewer than MIN_SAMPLES samples to measure the swing and the answer needs
that shelf's weight (the camera's slot counts do not give it: `_camera_determines`). A shelf
whose camera count is off the answer by one facing, where the settled weight fits the answer
(no outlier) and the answer holds in both looks, is read as that miscount (evidence
`miscounted`; COUNT_COST has already priced it); any other disagreement is vision_disagrees.

When reconcile is not sure it says so and never guesses: the flags name why (low_confidence,
unexplained_weight, shelf_unsettled, shelf_dead, camera_dark, foreign_object, item_swapped,
vision_disagrees), and `basket` then holds only what is certain: for each SKU the least count
among the baskets that make up 99% of the probability in both looks and in a third where rare
events are common (LENIENT_MISPLACED_COST, LENIENT_OUTLIER_COST), minus anything the best
explanation removes from a shelf it cannot explain, cannot read or whose camera saw the slot
untouched, and without items light enough to be part of weight that arrived from nowhere
known. `best_guess` keeps the top basket for the operator's review. Pure: no I/O, no clock,
no randomness; same bundle, same result. An interrupted bundle, or one naming a recogniser
that is not given, is refused (BundleError).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cabinet.bundle import Bundle
from cabinet.errors import BundleError

VERSION = "reconcile-1"
MAX_REMOVED = 8        # items one shelf can lose in one session (more when the camera saw more)
MAX_ADDED = 3          # items one shelf can gain from other shelves without a camera count (a
                       # fourth costs the misplaced prior 40 nats: never within the window)
T_DOF = 4.0            # weight residuals: Student-t with this many degrees of freedom
TOP_K = 40             # candidates kept per shelf
WINDOW = 12.0          # nats below the best at which combinations are dropped
ITEM_COST = 0.7        # prior: each item taken
MISPLACED_COST = 4.0   # prior: an item put on another shelf than it came from ...
MISPLACED_GROWTH = 4.0 # ... and more for each further one on that shelf (chains are rare)
LENIENT_MISPLACED_COST = 1.0  # the second look, which the answer must also survive: misplaced
LENIENT_MIN_CONFIDENCE = 0.99  # items nearly as likely as kept ones, and no rival within ~4.6 nats
BETA = 6.0             # vision: nats per unit of disagreement at full confidence
TOUCH_COST = 20.0      # vision: nats per item leaving an untouched slot or arriving on an untouched shelf (all but impossible)
COUNT_COST = 4.5       # vision: nats per item of disagreement with the occupied-facing counts (~1% of slots miscount)
OUTLIER_RANGE_G = 2000.0  # a foreign object or a fault: any residual in +-1 kg equally likely
OUTLIER_COST = 8.0     # prior against that explanation (about the Gaussian's at 5 sigma)
LENIENT_OUTLIER_COST = 4.0  # ... in the look that charges only what survives rare events being common
OUTLIER_Z = 5.0        # a residual beyond this many sigmas is not explained by the items
UNSETTLED_FACTOR = 5.0 # noise multiplier for a shelf that did not settle
CERTAIN_MASS = 0.99


@dataclasses.dataclass(frozen=True)
class ShelfVision:
    """What the camera says about one shelf: net change per SKU, how sure, foreign items."""

    seen: dict[str, int]
    confidence: float
    foreign_added: int = 0
    usable: bool = True
    # product-agnostic (vision.diff's `touched` and `count_change`; None: the camera cannot say)
    may_lose: Mapping[str, int] | None = None  # SKU -> items held by this shelf's touched slots
    touched: bool | None = None                # any slot of the shelf touched
    count_change: int | None = None            # occupied facings after minus before, whole shelf
    arrived: int = 0                           # items seen arriving: sum of slots' count gains
    drops: Mapping[str, int] | None = None     # SKU -> items seen leaving its own slots
    hideable: int | None = None  # arrivals the counts could hide: cells filled, changed while occupied, or changed while read empty (a small thing), beyond the counts' rises
    # SKU -> per item now in a cell of this shelf that filled or changed, best first: nats for
    # "it is an item of SKU that left a one-SKU slot of another shelf" over "it is the shelf's
    # own" (`_arrival_looks`); a SKU none of whose items was seen leaving has no entry
    arrival_looks: Mapping[str, tuple[float, ...]] | None = None


@dataclasses.dataclass(frozen=True)
class ReconcileResult:
    basket: dict[str, int]
    confidence: float
    runner_up: tuple[dict[str, int], float] | None
    evidence: dict[str, Any]
    flags: tuple[str, ...]
    best_guess: dict[str, int] = dataclasses.field(default_factory=dict)
    version: str = VERSION

    @property
    def needs_review(self) -> bool:
        return bool(self.flags)

    def to_json(self) -> str:
        d = {"version": self.version, "basket": self.basket,
             "confidence": self.confidence, "best_guess": self.best_guess,
             "runner_up": None if self.runner_up is None else
             {"basket": self.runner_up[0], "probability": self.runner_up[1]},
             "flags": list(self.flags), "needs_review": self.needs_review,
             "evidence": self.evidence}
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> "ReconcileResult":
        d = json.loads(text) if isinstance(text, str) else dict(text)
        ru = d.get("runner_up")
        return cls(basket={k: int(v) for k, v in d["basket"].items()},
                   confidence=float(d["confidence"]),
                   runner_up=None if ru is None else
                   ({k: int(v) for k, v in ru["basket"].items()}, float(ru["probability"])),
                   evidence=d.get("evidence", {}), flags=tuple(d.get("flags", ())),
                   best_guess={k: int(v) for k, v in d.get("best_guess", {}).items()},
                   version=d.get("version", VERSION))


# --- candidate enumeration ------------------------------------------------------------------

def _bounded_vectors(bounds: Sequence[int], total: int) -> np.ndarray:
    """All non-negative integer vectors v with v[i] <= bounds[i] and sum(v) <= total."""
    out: list[tuple[int, ...]] = []

    def rec(i: int, left: int, prefix: tuple[int, ...]) -> None:
        if i == len(bounds):
            out.append(prefix)
            return
        for n in range(min(bounds[i], left) + 1):
            rec(i + 1, left - n, prefix + (n,))

    rec(0, total, ())
    return np.array(out, dtype=np.int64).reshape(len(out), len(bounds))


def vision_term(x: np.ndarray, skus: Sequence[str], vision: ShelfVision | None) -> np.ndarray:
    """Log-likelihood of candidate changes x (rows; columns = skus) given the camera's counts.
    The seam between weights and vision: any per-shelf counts plug in here."""
    if vision is None or not vision.usable:
        return np.zeros(len(x))
    seen = np.array([vision.seen.get(k, 0) for k in skus], dtype=np.float64)
    term = -BETA * vision.confidence * np.abs(x - seen).sum(axis=1)
    removed = np.clip(-x, 0, None)
    if vision.may_lose is not None:  # an untouched slot lost nothing
        bound = np.array([vision.may_lose.get(k, 0) for k in skus], dtype=np.int64)
        term = term - TOUCH_COST * np.clip(removed - bound, 0, None).sum(axis=1)
    if vision.touched is False:      # and nothing arrived on a shelf nobody touched
        term = term - TOUCH_COST * np.clip(x, 0, None).sum(axis=1)
    # facing counts: each slot's count that a candidate contradicts is a miscount (COUNT_COST
    # each). The shelf's net count and the per-SKU counts of one-SKU slots are two lower
    # bounds of how many slots miscounted; the larger is charged (one miscount is not paid twice)
    miscounts = np.zeros(len(x))
    if vision.count_change is not None:
        miscounts = np.abs(x.sum(axis=1) - vision.count_change).astype(np.float64)
        # a slot whose count rose received something: a move, a return or a foreign object;
        # or an item of a SKU whose own slots lost more than the shelf's net change says (one
        # taken from its slot and put back in another slot of the shelf)
        returned = 0
        if vision.drops:
            seen_lost = np.array([vision.drops.get(k, 0) for k in skus], dtype=np.int64)
            returned = np.clip(seen_lost + x, 0, None)[:, [k in vision.drops for k in skus]].sum(axis=1)
        term = term - COUNT_COST * np.clip(vision.arrived - np.clip(x, 0, None).sum(axis=1)
                                           - returned, 0, None)
    if vision.drops:
        # a slot holding one SKU that lost n facings lost n of that SKU, unless items seen
        # arriving on the shelf were of it: x_k <= -drops_k + arrived ...
        # (or hidden in a cell that changed while occupied: a return into a look-alike's slot)
        drops = np.array([vision.drops.get(k, 0) for k in skus], dtype=np.int64)
        back = vision.arrived + (vision.hideable or 0)
        bound = np.where(drops > 0, -drops + back, np.iinfo(np.int64).max // 2)
        fewer = np.clip(x - bound, 0, None).sum(axis=1)
        # ... and no more of it than that: each further loss needs an arrival the camera did
        # not see to hide it (a swap in the slot, which the misplaced prior prices), else it
        # is a miscount
        held = np.array([k in vision.drops for k in skus])
        excess = np.clip(-x - drops, 0, None)[:, held].sum(axis=1)
        miscounts = np.maximum(miscounts, fewer + np.clip(excess - _unseen_arrivals(x, skus, vision),
                                                          0, None))
    term = term - COUNT_COST * miscounts
    if vision.hideable is not None:
        # an arrival the counts did not see went into a cell whose pixels changed: where none
        # did, it is all but impossible, as on an untouched shelf
        term = term - TOUCH_COST * np.clip(_unseen_arrivals(x, skus, vision) - vision.hideable,
                                           0, None)
    if vision.arrival_looks:
        # what arrived looks like what left: the n items of SKU k a candidate brings onto the
        # shelf take the n best-matching new looks (beyond the new looks, no evidence)
        for j, k in enumerate(skus):
            nats = vision.arrival_looks.get(k)
            if not nats:
                continue
            cum = np.concatenate(([0.0], np.cumsum(nats)))
            term = term + cum[np.clip(x[:, j], 0, len(nats))]
    return term


def _unseen_arrivals(x: np.ndarray, skus: Sequence[str], vision: ShelfVision) -> np.ndarray:
    """Per candidate, the items that arrived in a slot of the shelf beyond the counts' rises:
    from other shelves (x > 0), or from another slot of this shelf (a one-SKU slot that lost
    more facings than the shelf's net change of its SKU). Each hides in a cell that changed
    while occupied, where it may also hide a loss the counts do not show."""
    arrived = np.clip(x, 0, None).sum(axis=1)
    if vision.drops:
        seen_lost = np.array([vision.drops.get(k, 0) for k in skus], dtype=np.int64)
        arrived = arrived + np.clip(seen_lost + x, 0, None)[:, [k in vision.drops for k in skus]].sum(axis=1)
    return np.clip(arrived - vision.arrived, 0, None)


def _student_t(residual: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Log density of a Student-t (T_DOF) residual with scale sqrt(var): a load cell's rare
    spikes and drift are heavier-tailed than a Gaussian, so one odd reading costs nats, not
    the hundreds that would make a chain of moves look better."""
    nu = T_DOF
    return (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * np.log(nu * math.pi * var)
            - (nu + 1) / 2 * np.log1p(residual ** 2 / (nu * var)))


def _limits(vision: "ShelfVision | None") -> tuple[int, int]:
    """How many items a shelf may lose and gain: fixed without a camera count; with one, at
    least what it saw leave or arrive (a customer may move three items onto one shelf)."""
    if vision is None or not vision.usable or vision.count_change is None:
        return MAX_REMOVED, MAX_ADDED
    left = vision.arrived - vision.count_change  # items seen leaving: sum of slots' drops
    # arrivals: all those seen, and up to two the counts could hide (a third unseen one costs
    # the misplaced prior 24 nats, twice the window: no weight makes it a rival)
    hidden = 2 if vision.hideable is None else min(2, vision.hideable)
    return max(MAX_REMOVED, left + 2), vision.arrived + hidden


@dataclasses.dataclass(frozen=True)
class _ShelfCandidates:
    shelf: str
    x: np.ndarray          # (n, len(skus)) net change per SKU
    score: np.ndarray      # (n,) total log score
    weight_ll: np.ndarray  # (n,) weight log-likelihood only
    residual: np.ndarray   # (n,) grams
    sigma: np.ndarray      # (n,) grams
    outlier: np.ndarray    # (n,) the flat term explains the weight better than the Gaussian


@dataclasses.dataclass(frozen=True)
class _ShelfSpace:
    """Every candidate of one shelf, scored once without the misplaced-item prior (which each
    look adds): the weight and vision terms are the costly part and do not depend on it."""
    shelf: str
    x: np.ndarray          # (n, len(skus)) net change per SKU
    base: np.ndarray       # (n,) weight + vision + items-taken prior
    weight_ll: np.ndarray
    residual: np.ndarray
    var: np.ndarray
    outlier: np.ndarray
    added: np.ndarray      # (n,) arrivals beyond those the camera saw
    counted: bool          # the camera counted the shelf: the nominal misplaced prior holds
    flat: np.ndarray | None = None  # (n,) the "something else" term, for the outlier look


def _shelf_space(shelf: str, delta: float | None, noise: float, skus: list[str],
                 stock: np.ndarray, addable: np.ndarray, w: np.ndarray, var1: np.ndarray,
                 vision: ShelfVision | None) -> _ShelfSpace:
    removable = [i for i in range(len(skus)) if stock[i] > 0]
    gainable = [i for i in range(len(skus)) if addable[i]]
    max_removed, max_added = _limits(vision)
    counted = vision is not None and vision.usable and vision.count_change is not None
    bound = {i: int(stock[i]) for i in removable}
    if vision is not None and vision.usable and vision.may_lose is not None:
        # an untouched slot lost nothing (TOUCH_COST, beyond the window): not enumerated
        bound = {i: min(n, int(vision.may_lose.get(skus[i], 0))) for i, n in bound.items()}
    rem = _bounded_vectors([bound[i] for i in removable], max_removed)
    add = _bounded_vectors([max_added] * len(gainable), max_added)
    x = np.zeros((len(rem) * len(add), len(skus)), dtype=np.int64)
    rr = np.repeat(np.arange(len(rem)), len(add))
    aa = np.tile(np.arange(len(add)), len(rem))
    if removable:
        x[:, removable] -= rem[rr]
    if gainable:
        x[:, gainable] += add[aa]
    if removable and gainable:  # a SKU both lost and gained: only its net change counts
        both = [j for j, i in enumerate(gainable) if i in removable]
        lost = [removable.index(gainable[j]) for j in both]
        if both:
            x = x[~((rem[rr][:, lost] > 0) & (add[aa][:, both] > 0)).any(axis=1)]
    var = noise ** 2 + np.abs(x) @ var1
    flat = None
    if delta is None:
        weight_ll = np.zeros(len(x))
        residual = np.zeros(len(x))
        outlier = np.zeros(len(x), dtype=bool)
    else:
        residual = delta - x @ w
        gauss = _student_t(residual, var)
        # something else on or off the shelf (a phone put down, a spike, a faulty cell), in
        # either direction, whatever items the candidate moves
        flat = np.full(len(x), -math.log(OUTLIER_RANGE_G) - OUTLIER_COST)
        weight_ll = np.logaddexp(gauss, flat)
        # beyond OUTLIER_Z sigmas the heavy tail still ranks candidates, but the weight is
        # not explained: flagged, and what that shelf lost is not charged
        outlier = (gauss < flat) | (np.abs(residual) > OUTLIER_Z * np.sqrt(var))
        flat = np.logaddexp(gauss, flat + OUTLIER_COST - LENIENT_OUTLIER_COST)
    added = np.clip(x, 0, None).sum(axis=1)
    if counted:
        # arrivals the camera saw are evidence, not the rare misplaced return the prior is about
        added = np.clip(added - vision.arrived, 0, None)
    vis = vision_term(x, skus, vision)
    items = -ITEM_COST * np.clip(-x, 0, None).sum(axis=1)
    base = weight_ll + items + vis
    if flat is not None:
        flat = flat + items + vis
    return _ShelfSpace(shelf, x, base, weight_ll, residual, var, outlier, added, counted, flat)


def _select(space: _ShelfSpace, misplaced: tuple[float, float] = (MISPLACED_COST, MISPLACED_GROWTH),
            lenient_outlier: bool = False) -> _ShelfCandidates:
    """The shelf's TOP_K candidates within WINDOW of its best under one look's priors (and
    the best candidate that needs no other shelf, always)."""
    if space.counted:
        # the camera counted what arrived: the lenient look is for shelves only weighed
        misplaced = (MISPLACED_COST, MISPLACED_GROWTH)
    added = space.added
    base = space.flat if lenient_outlier and space.flat is not None else space.base
    score = base - misplaced[0] * added - misplaced[1] * added * (added - 1) / 2
    keep = np.argsort(-score, kind="stable")[:TOP_K]
    keep = keep[score[keep] >= score[keep[0]] - WINDOW]
    x = space.x
    if not (x[keep] <= 0).all(axis=1).any():  # keep one candidate that needs no other shelf
        only_removals = np.flatnonzero((x <= 0).all(axis=1))
        keep = np.append(keep, only_removals[np.argmax(score[only_removals])])
    return _ShelfCandidates(space.shelf, x[keep], score[keep], space.weight_ll[keep],
                            space.residual[keep], np.sqrt(space.var[keep]), space.outlier[keep])


def _shelf_candidates(shelf: str, delta: float | None, noise: float, skus: list[str],
                      stock: np.ndarray, addable: np.ndarray, w: np.ndarray, var1: np.ndarray,
                      vision: ShelfVision | None,
                      misplaced: tuple[float, float] = (MISPLACED_COST, MISPLACED_GROWTH)
                      ) -> _ShelfCandidates:
    return _select(_shelf_space(shelf, delta, noise, skus, stock, addable, w, var1, vision),
                   misplaced)


def _combine(cands: list[_ShelfCandidates], nskus: int) -> list[tuple[float, tuple[int, ...]]]:
    """Branch and bound over shelves (candidates sorted best first): combinations
    (score, index per shelf) within WINDOW of the best whose basket is >= 0 for every SKU."""
    best_rest = [0.0] * (len(cands) + 1)
    for i in range(len(cands) - 1, -1, -1):
        best_rest[i] = best_rest[i + 1] + float(cands[i].score[0])
    rows = [[tuple(int(v) for v in row) for row in c.x] for c in cands]
    scores = [[float(v) for v in c.score] for c in cands]
    # a feasible start: the best removal-only candidate of each shelf
    start = 0.0
    for r, sc in zip(rows, scores):
        start += max(s for row, s in zip(r, sc) if all(v <= 0 for v in row))
    best = [start]
    found: list[tuple[float, tuple[int, ...]]] = []

    def rec(i: int, total: float, net: tuple[int, ...], picks: tuple[int, ...]) -> None:
        if i == len(cands):
            if all(v <= 0 for v in net):  # nothing arrives from outside the cabinet
                found.append((total, picks))
                best[0] = max(best[0], total)
            return
        for j, (row, sc) in enumerate(zip(rows[i], scores[i])):
            if total + sc + best_rest[i + 1] < best[0] - WINDOW:
                break  # sorted: every later candidate is worse still
            rec(i + 1, total + sc, tuple(a + b for a, b in zip(net, row)), picks + (j,))

    rec(0, 0.0, (0,) * nskus, ())
    return [f for f in found if f[0] >= best[0] - WINDOW]


def _posterior(shelf_args: list, skus: list[str], misplaced: tuple[float, float],
               lenient_outlier: bool = False
               ) -> tuple[list[_ShelfCandidates], list[tuple[tuple, float]], dict, int]:
    """Candidates per shelf, baskets ranked by probability (basket as sorted (sku, n) pairs),
    the best combination (index per shelf) of each basket, and how many combinations were kept,
    under the given misplaced-item prior (cost of the first, growth with each further one)."""
    cands = [_select(a if isinstance(a, _ShelfSpace) else _shelf_space(*a), misplaced,
                     lenient_outlier) for a in shelf_args]
    combos = _combine(cands, len(skus))
    top = max(sc for sc, _ in combos)
    weights = np.exp(np.array([sc for sc, _ in combos]) - top)
    weights /= weights.sum()
    by_basket: dict[tuple, float] = {}
    best_pick: dict[tuple, tuple[float, tuple[int, ...]]] = {}
    for (score, picks), p in zip(combos, weights):
        net = sum((cands[i].x[j] for i, j in enumerate(picks)), np.zeros(len(skus), np.int64))
        key = tuple((skus[i], int(-n)) for i, n in enumerate(net) if n < 0)
        by_basket[key] = by_basket.get(key, 0.0) + float(p)
        if key not in best_pick or score > best_pick[key][0]:
            best_pick[key] = (score, picks)
    ranked = sorted(by_basket.items(), key=lambda kv: (-kv[1], kv[0]))
    return cands, ranked, {k: v[1] for k, v in best_pick.items()}, len(combos)


# --- evidence from the bundle ---------------------------------------------------------------

MIN_SAMPLES = 3  # samples a side below which the scatter says nothing


def _robust_sigma(samples: Sequence[float]) -> float | None:
    """A sample's standard deviation from the median absolute deviation (a spike among the
    samples does not inflate it); None with fewer than MIN_SAMPLES."""
    if len(samples) < MIN_SAMPLES:
        return None
    arr = np.asarray(samples, dtype=np.float64)
    return 1.4826 * float(np.median(np.abs(arr - np.median(arr))))


def _noise(shelf: Any, default: float) -> float:
    """Std dev of the measured delta: the configured noise, or more if the samples say so.
    A settled value averages its window, so each side with MIN_SAMPLES or more adds its robust
    sample sigma over sqrt(n) (a spike among the samples does not inflate it; the heavy-tailed
    weight term takes care of a spike that made it into the settled value)."""
    parts = []
    for samples in (shelf.samples_before, shelf.samples_after):
        sigma = _robust_sigma(samples)
        if sigma is not None:
            parts.append(sigma / math.sqrt(len(samples)))
    est = math.sqrt(sum(p * p for p in parts)) if parts else 0.0
    return max(default, est)


def _unsettled_noise(shelf: Any, noise: float) -> float:
    """A shelf still swinging: its value is off by about one sample's scatter (the swing is
    not averaged away), which the unsettled side's samples measure; without them, assume
    UNSETTLED_FACTOR times the noise."""
    sides = [s for s, stable in ((shelf.samples_before, shelf.before_stable),
                                 (shelf.samples_after, shelf.after_stable)) if not stable]
    sigmas = [_robust_sigma(s) for s in sides]
    if not sigmas or any(v is None for v in sigmas):
        return noise * UNSETTLED_FACTOR
    return max(noise, math.sqrt(sum(v * v for v in sigmas)))


def _swing_measured(shelf: Any) -> bool:
    """Whether every unsettled side of a shelf has the MIN_SAMPLES its scatter needs."""
    return all(len(samples) >= MIN_SAMPLES for samples, stable in (
        (shelf.samples_before, shelf.before_stable), (shelf.samples_after, shelf.after_stable))
        if not stable)


def _camera_determines(sv: "ShelfVision | None", x: np.ndarray, skus: list[str]) -> bool:
    """Whether the camera's slot counts alone give a shelf's explanation `x`, so that its
    weight is not needed: the count is read, every item x takes was seen leaving its own
    one-SKU slot, and nothing arrived nor could an arrival hide."""
    if sv is None or not sv.usable or sv.count_change is None or sv.drops is None \
            or sv.arrived or sv.hideable is None or sv.hideable > 0:
        return False
    want = {k: -int(n) for k, n in sv.drops.items() if n}
    got = {k: int(x[i]) for i, k in enumerate(skus) if x[i]}
    return got == want and int(x.sum()) == sv.count_change


def slot_vision(bundle: Bundle, recognizer: Any = None) -> tuple[dict, dict]:
    """Per-slot evidence from vision.diff for every camera with images (against the bundle's
    own calibration frames when it carries them; identities when a recognizer is given), and
    a note per camera that could not be read."""
    from vision.diff import ShelfDiff, SlotSpec, VisionInputError
    from cabinet.catalog import sku_by_photo_product

    per_slot: dict[str, Any] = {}
    notes: dict[str, str] = {}
    reader = ShelfDiff(recognizer, sku_of=sku_by_photo_product(bundle.catalog)
                       if recognizer is not None else None)
    for camera, imgs in sorted(bundle.images.items()):
        slots = bundle.planogram.slots_seen_by(camera)
        if not slots:
            continue
        specs = [SlotSpec(s.id, s.roi, s.capacity) for s in slots]
        try:
            ev = reader.evidence(imgs.before, imgs.after, specs, camera=camera,
                                 calibration=bundle.calibration.get(camera))
        except VisionInputError as e:
            notes[camera] = str(e)
            continue
        per_slot.update(ev)
        if any(not e.usable for e in ev.values()):
            notes[camera] = next(e.reason for e in ev.values() if not e.usable)
    return per_slot, notes


def _shelf_vision(bundle: Bundle, per_slot: Mapping[str, Any],
                  inventory: Mapping[str, Sequence[str]]) -> dict[str, ShelfVision]:
    out = {}
    for shelf in bundle.planogram.shelves:
        slots = bundle.planogram.slots_on(shelf.id)
        evs = [per_slot[s.id] for s in slots if s.id in per_slot]
        if not evs:
            continue
        seen: dict[str, int] = {}
        for e in evs:
            before, after = e.counts_before, e.counts_after
            for sku in set(before) | set(after):
                seen[sku] = seen.get(sku, 0) + after.get(sku, 0) - before.get(sku, 0)
        usable = all(e.usable for e in evs) and len(evs) == len(slots)
        may_lose: dict[str, int] | None = None
        touched = None
        count = None
        arrived = 0
        drops = None
        hideable = None
        if usable:
            may_lose = {}
            for e in evs:
                if e.touched:
                    held = inventory.get(e.slot_id, ())
                    left = getattr(e, "departed", None)
                    if left is not None and len(set(held)) == 1:
                        # a one-SKU slot lost at most one item per cell that emptied or
                        # changed while occupied; its unchanged cells kept theirs
                        may_lose[held[0]] = may_lose.get(held[0], 0) + min(left, len(held))
                        continue
                    for k in held:
                        may_lose[k] = may_lose.get(k, 0) + 1
            touched = any(e.touched for e in evs)
            changes = [e.count_change for e in evs]
            count = None if any(c is None for c in changes) else int(sum(changes))
            arrived = 0 if count is None else int(sum(max(c, 0) for c in changes))
            if count is not None:  # cells a recogniser calls not ours are no catalog item
                foreign = sum(max(0, e.foreign_after - e.foreign_before) for e in evs)
                count, arrived = count - foreign, max(0, arrived - foreign)
            if count is not None:
                drops = {}
                mixed = set()
                for e in evs:
                    held = set(inventory.get(e.slot_id, ()))
                    if len(held) > 1:
                        mixed |= held
                    elif len(held) == 1:  # facings lost (0 when none were)
                        k = next(iter(held))
                        drops[k] = drops.get(k, 0) + max(0, -e.count_change)
                drops = {k: n for k, n in drops.items() if k not in mixed}
                # a cell that filled, changed while occupied, or changed while read empty (a
                # small thing in a big cell the occupancy measure misses) may hold an arrival
                per_slot_hide = [(e.filled, e.swappable, e.changed_empty, e.count_change)
                                 for e in evs]
                if all(f is not None and w is not None and q is not None
                       for f, w, q, _ in per_slot_hide):
                    hideable = sum(max(0, f + w + q - max(c, 0)) for f, w, q, c in per_slot_hide)
        out[shelf.id] = ShelfVision(
            {k: v for k, v in seen.items() if v}, min(e.confidence for e in evs),
            sum(max(0, e.foreign_after - e.foreign_before) for e in evs),
            usable, may_lose, touched, count, arrived, drops, hideable,
            _arrival_looks(bundle, per_slot, inventory, shelf.id) if usable else None)
    return out


def _arrival_looks(bundle: Bundle, per_slot: Mapping[str, Any],
                   inventory: Mapping[str, Sequence[str]], shelf: str) -> dict[str, tuple[float, ...]]:
    """ShelfVision.arrival_looks. Each item now in a cell of this shelf that filled or changed
    (a new look) is either an item of the shelf's own (put back, moved along, shifted: it looks
    like a look that left a cell of this shelf) or one that arrived from another shelf (it
    looks like a look that left a one-SKU slot of SKU k there). Per SKU k whose items left such
    a slot, per new look, best first: nats for "from k" over "the shelf's own" (look_log_lr
    against k's departed looks, less that against the shelf's own departed looks; 0 for the
    latter when none left). Looks against looks: no product is known."""
    from vision.diff import best_look_lr as best

    mine = {s.id for s in bundle.planogram.slots_on(shelf)}
    new = [look for sid in sorted(mine) if sid in per_slot
           for _, look in getattr(per_slot[sid], "new_looks", ())]
    if not new:
        return {}
    own = [g for sid in sorted(mine) if sid in per_slot for g in getattr(per_slot[sid], "gone_looks", ())]
    base = [best(n, own) if own else 0.0 for n in new]
    gone: dict[str, list] = {}
    for sid, e in sorted(per_slot.items()):
        held = set(inventory.get(sid, ()))
        if sid in mine or len(held) != 1:
            continue
        gone.setdefault(next(iter(held)), []).extend(getattr(e, "gone_looks", ()))
    return {k: tuple(sorted((best(n, looks) - b for n, b in zip(new, base)), reverse=True))
            for k, looks in sorted(gone.items()) if looks}


def _unlike(bundle: Bundle, per_slot: Mapping[str, Any], inventory: Mapping[str, Sequence[str]],
            shelf: str) -> int:
    """Cells of the shelf's one-SKU slots, occupied before and after, whose item now looks
    unlike the one there before (vision.diff's `unlike`): a put-back item of the slot's SKU
    looks like it. In a slot of several SKUs items shifting between cells look unlike too, so
    those are not counted."""
    return sum(getattr(per_slot[s.id], "unlike", 0) for s in bundle.planogram.slots_on(shelf)
               if s.id in per_slot and len(set(inventory.get(s.id, ()))) == 1)


def _moved_within(bundle: Bundle, per_slot: Mapping[str, Any], inventory: Mapping[str, Sequence[str]],
                 shelf: str, x: np.ndarray, skus: Sequence[str]) -> int:
    """Items that may have moved inside the shelf (which its net change cannot show) into a
    cell that now looks unlike its item: per slot, the cells that emptied or changed (each
    gave up an item), less the items of the slot's one SKU the explanation says left the
    shelf, less the slot's unlike cells (an item does not stand in for itself); then less
    what left the shelf from slots of several SKUs, which count all their departed cells."""
    lost = {k: int(-n) for k, n in zip(skus, x) if n < 0}
    stayed = 0
    for s in bundle.planogram.slots_on(shelf):
        e = per_slot.get(s.id)
        if e is None or e.departed is None:
            continue
        held = set(inventory.get(s.id, ()))
        gave = e.departed
        if len(held) == 1:
            k = next(iter(held))
            took = min(gave, lost.get(k, 0))
            lost[k] = lost.get(k, 0) - took
            # what is left stayed on the shelf, but not to stand in for itself
            gave = gave - took - getattr(e, "unlike", 0)
        stayed += max(0, gave)
    return max(0, stayed - sum(lost.values()))


def _swap_weights(bundle: Bundle, per_slot: Mapping[str, Any], inventory: Mapping[str, Sequence[str]],
                  catalog: Any, shelf: str, residual: float, sigma: float
                  ) -> list[tuple[float, float, int]]:
    """Per one-SKU slot of the shelf with unlike cells: the range of weights the thing now in
    such a cell may have (the slot's SKU weight plus the explanation's residual, +- OUTLIER_Z
    sigma) and how many cells."""
    out = []
    for s in bundle.planogram.slots_on(shelf):
        e = per_slot.get(s.id)
        held = set(inventory.get(s.id, ()))
        n = getattr(e, "unlike", 0) if e is not None and len(held) == 1 else 0
        if n:
            w0 = catalog[next(iter(held))].unit_weight_g + residual
            out.append((w0 - OUTLIER_Z * sigma, w0 + OUTLIER_Z * sigma, n))
    return out


def _lookalike_hiding(bundle: Bundle, per_slot: Mapping[str, Any],
                      inventory: Mapping[str, Sequence[str]], catalog: Any, noise: float,
                      basket: Mapping[str, int]) -> dict[str, int]:
    """Per SKU k of the basket, how many of its items the camera could not tell from a
    look-alike's: an item of k put into a cell of a one-SKU slot of another SKU k' that weighs
    the same (within 3 sigma of the two products' tolerances and the cell noise), in place of
    a k' item that left. Weight cannot tell these apart; the camera's slot counts cannot
    either (the k' slot keeps its count); only the cell's look could, and a look-alike looks
    alike. Such a cell is one that changed while occupied (`swappable`), or that filled while
    another cell of the slot emptied."""
    out: dict[str, int] = {}
    for k, n in basket.items():
        if n <= 0 or k not in catalog:
            continue
        wk, sk = catalog[k].unit_weight_g, catalog[k].weight_sigma_g
        hide = 0
        for sid, e in per_slot.items():
            held = set(inventory.get(sid, ()))
            if len(held) != 1 or k in held or not getattr(e, "usable", False):
                continue
            other = next(iter(held))
            if other not in catalog:
                continue
            tol = 3.0 * math.sqrt(sk ** 2 + catalog[other].weight_sigma_g ** 2 + noise ** 2)
            if abs(catalog[other].unit_weight_g - wk) > tol:
                continue
            swaps, departed, filled = e.swappable, e.departed, e.filled
            if swaps is None or departed is None or filled is None:
                continue
            hide += swaps + min(filled, departed - swaps)
        if hide:
            out[k] = min(n, hide)
    return out


def _strangers(bundle: Bundle, per_slot: Mapping[str, Any], notes: Mapping[str, str],
               flags: set[str], inventory: Mapping[str, Sequence[str]],
               answer: Mapping[str, np.ndarray], skus: Sequence[str]) -> dict[str, list[int]]:
    """Cells that now hold a thing that looks like no item that could have come to it
    (vision.diff.strangers, product-agnostic): an item that left under the same camera (the
    same-item line), or one from a slot under another camera (the product's line, and more
    like the item than like that camera's other products). Only items the best explanation
    leaves in the cabinet could have come: from a slot of another shelf, one of a SKU the
    answer brings onto this shelf; from a slot of this shelf, one of a SKU of which more items
    left cells of the shelf than the answer takes off it. An item the explanation takes out
    of the cabinet is not standing here. Read only when no camera failed (a camera the bundle
    does not carry at all leaves only the cells its slots may have filled unjudged): weight
    and count say "an item moved here", but it came from outside: foreign_object, the
    operator looks."""
    if not per_slot or notes:
        return {}
    from vision.diff import strangers

    camera = {sh.id: sh.camera for sh in bundle.planogram.shelves}
    shelf_of = {s.id: s.shelf for s in bundle.planogram.slots}
    index = {k: i for i, k in enumerate(skus)}
    came_from = {}  # per shelf, the slots an item now on it may have come from
    for shelf, x in answer.items():
        arriving = {skus[i] for i, n in enumerate(x) if n > 0}
        mine = [g for g in per_slot if shelf_of.get(g) == shelf]
        left = {}  # per SKU, the items that left a cell of this shelf (or may have: changed)
        for g in mine:
            for k in set(inventory.get(g, ())):
                left[k] = left.get(k, 0) + len(per_slot[g].gone_looks)
        staying = {k for k, n in left.items() if n > max(0, -int(x[index[k]]))}
        # (slots no camera read, a camera the bundle does not carry, are sources too: what
        # came from them has no look to compare, so a cell they may have filled is not judged)
        came_from[shelf] = [g for g in inventory if
                            (not arriving.isdisjoint(inventory.get(g, ())) and shelf_of.get(g) != shelf)
                            or (g in mine and not staying.isdisjoint(inventory.get(g, ())))]
    sources = {sid: came_from.get(shelf_of[sid], []) for sid in per_slot if sid in shelf_of}
    odd = strangers(per_slot, {s.id: camera[s.shelf] for s in bundle.planogram.slots}, sources,
                    {sid: set(inventory.get(sid, ())) for sid in per_slot})
    if odd:
        flags.add("foreign_object")
    return odd


def check_recognizer(bundle: Bundle, recognizer: Any) -> None:
    """The recognizer a bundle names must be the one given, by version: the same bundle gives
    the same basket on any machine, or says what is missing."""
    named = bundle.record.recognizer
    if named is None:
        return
    if recognizer is None:
        raise BundleError(bundle.path / "bundle.json", f"recognizer: model {named.version} not "
                          f"found: install models/ at that version or pass --model")
    if getattr(recognizer, "version", None) != named.version:
        raise BundleError(bundle.path / "bundle.json", f"recognizer: the bundle was read with "
                          f"model {named.version}, the one given is "
                          f"{getattr(recognizer, 'version', '?')}: install models/ at that "
                          f"version or pass --model")


def reconcile(bundle: Bundle, *, recognizer: Any = None,
              vision: Callable[[Bundle, Any], tuple[dict, dict]] | None = slot_vision
              ) -> ReconcileResult:
    """The most likely basket of a session bundle; see the module doc for the model.
    `recognizer` (vision.recognizer.Recognizer) must be the one the bundle names (none when it
    names none); `vision=None` reconciles from weights alone. An interrupted bundle (no
    after-snapshot) is refused with BundleError."""
    bundle.require_complete()
    check_recognizer(bundle, recognizer)
    if bundle.record.recognizer is None:
        recognizer = None  # the bundle was read without one: so is its replay
    catalog, planogram = bundle.catalog, bundle.planogram
    params = bundle.params
    inventory = {s.id: bundle.inventory_before.get(s.id, (s.sku,) * s.capacity)
                 for s in planogram.slots}
    skus = sorted({k for items in inventory.values() for k in items})
    index = {k: i for i, k in enumerate(skus)}
    w = np.array([catalog[k].unit_weight_g for k in skus], dtype=np.float64)
    var1 = np.array([catalog[k].weight_sigma_g ** 2 for k in skus], dtype=np.float64)
    stock = {sh.id: np.zeros(len(skus), dtype=np.int64) for sh in planogram.shelves}
    for slot in planogram.slots:
        for k in inventory[slot.id]:
            stock[slot.shelf][index[k]] += 1
    total = sum(stock.values(), np.zeros(len(skus), dtype=np.int64))

    flags: set[str] = set()
    per_slot, notes = ({}, {})
    if vision is not None and bundle.images:
        per_slot, notes = vision(bundle, recognizer)
        if notes:
            flags.add("camera_dark")
    shelf_vis = _shelf_vision(bundle, per_slot, inventory)

    shelf_info, shelf_args = {}, []
    swing_unmeasured: set[str] = set()
    for shelf in planogram.shelves:
        rec = bundle.shelves.get(shelf.id)
        delta = None
        noise = params.load_cell_noise_g
        if rec is None or rec.before_g is None or rec.after_g is None:
            flags.add("shelf_dead")
        else:
            delta = rec.after_g - rec.before_g
            noise = _noise(rec, params.load_cell_noise_g)
            if not (rec.before_stable and rec.after_stable):
                # a swing its samples measure is noise like any other (the posterior says
                # whether the answer survives it); one they cannot measure is a flag
                if not _swing_measured(rec):
                    swing_unmeasured.add(shelf.id)
                noise = _unsettled_noise(rec, noise)
        sv = shelf_vis.get(shelf.id)
        if sv is not None and sv.foreign_added:
            flags.add("foreign_object")
        addable = (total - stock[shelf.id]) > 0
        shelf_args.append((shelf.id, delta, noise, skus, stock[shelf.id], addable, w, var1, sv))
        shelf_info[shelf.id] = (delta, noise, sv)

    spaces = [_shelf_space(*a) for a in shelf_args]
    cands, ranked, best_pick, ncombos = _posterior(spaces, skus, (MISPLACED_COST, MISPLACED_GROWTH))
    best_key, confidence = ranked[0]
    picks = best_pick[best_key]
    # The same evidence under a lenient prior on misplaced items: how much of the answer rests
    # on "customers rarely put things back in the wrong place"? Where a move-based explanation
    # fits the evidence about as well, the top basket is not sure, whatever the nominal prior says.
    _, ranked_lenient, _, _ = _posterior(spaces, skus, (LENIENT_MISPLACED_COST, MISPLACED_GROWTH))
    lenient = dict(ranked_lenient).get(best_key, 0.0)

    shelves_ev, unexplained, arrived_unexplained_g = {}, [], 0.0
    answer: dict[str, np.ndarray] = {}  # shelf -> the best explanation's change per SKU
    shelves_miscounted: list[str] = []   # one facing miscounted, outweighed by the scale
    swapped_in: list[tuple[float, float, int]] = []  # (weight lo, hi, cells) of things in swapped cells
    for (shelf_id, (delta, noise, sv)), c, j in zip(shelf_info.items(), cands, picks):
        x = c.x[j]
        answer[shelf_id] = x
        z = None if delta is None else float(c.residual[j] / c.sigma[j])
        if delta is not None and c.outlier[j]:
            flags.add("unexplained_weight")
            unexplained.append((shelf_id, x))
            if c.residual[j] > 0:
                flags.add("foreign_object")
            # weight arrived that the items do not explain: neither the residual nor which
            # items the explanation brings onto the shelf is known, so all the shelf gained
            # may be items moved there from other shelves (three moved onto one shelf)
            gained = max(float(c.residual[j]), float(delta) if np.any(x > 0) else 0.0)
            if gained > 0:
                arrived_unexplained_g += gained + 3 * float(c.sigma[j])
        if delta is not None and np.any(x < 0) and (sv is None or not sv.usable) \
                and abs(delta) <= OUTLIER_Z * noise:
            # a shelf no camera read whose weight did not change: "nothing happened" explains
            # it within noise, and an exchange of items that balances to zero is a coincidence
            # the weight cannot confirm: what the explanation takes from it is not charged
            flags.add("weight_ambiguous")
            unexplained.append((shelf_id, x))
        if delta is None:
            unexplained.append((shelf_id, x))
        if shelf_id in swing_unmeasured and not _camera_determines(sv, x, skus):
            # a swing too few samples measure, and the answer needs this shelf's weight
            flags.add("shelf_unsettled")
        miscount = sv is not None and sv.usable and sv.count_change is not None \
            and int(x.sum()) != sv.count_change
        if miscount and abs(int(x.sum()) - sv.count_change) == 1 and not c.outlier[j] \
                and shelf_id not in swing_unmeasured and confidence >= params.min_confidence \
                and lenient >= LENIENT_MIN_CONFIDENCE:
            # one facing miscounted (the counts' COUNT_COST prices ~1% of slots) against a
            # settled weight that the explanation fits within noise, and no explanation the
            # count allows comes near it in either look: the posterior has already weighed the
            # camera against the scale and found the count wrong
            miscount = False
            shelves_miscounted.append(shelf_id)
        if sv is not None and sv.usable and (
                any(-int(x[i]) > (sv.may_lose or {}).get(k, 0) for i, k in enumerate(skus)
                    if sv.may_lose is not None) or miscount):
            # the best explanation takes from a slot the camera saw untouched, or does not
            # match the shelf's count (a foreign object, or a miscount): not charged from there
            flags.add("vision_disagrees")
            unexplained.append((shelf_id, x))
        unlike = _unlike(bundle, per_slot, inventory, shelf_id) if sv is not None and sv.usable else 0
        if unlike and unlike > int(np.clip(x, 0, None).sum()) + _moved_within(
                bundle, per_slot, inventory, shelf_id, x, skus):
            # a cell of a one-SKU slot now holds something that looks unlike the item that was
            # there, and the explanation brings no other item onto the shelf to be it (nor
            # could one have moved there from an emptied cell of the shelf): the item swapped
            # for something else (of about its weight); the operator looks
            flags.add("item_swapped")
            if delta is not None:
                swapped_in.extend(_swap_weights(bundle, per_slot, inventory, catalog, shelf_id,
                                                float(c.residual[j]), float(c.sigma[j])))
        if sv is not None and sv.usable and sv.confidence >= 0.6 and any(
                sv.seen.get(k, 0) != int(x[i]) for i, k in enumerate(skus)):
            flags.add("vision_disagrees")
        shelves_ev[shelf_id] = {
            "delta_g": None if delta is None else round(delta, 3),
            "explained_by": {skus[i]: int(n) for i, n in enumerate(x) if n},
            "residual_g": None if delta is None else round(float(c.residual[j]), 3),
            "sigma_g": round(float(c.sigma[j]), 3), "noise_g": round(noise, 3),
            "z": None if z is None else round(z, 3),
            "likelihood": round(float(c.weight_ll[j]), 4),
            "vision_seen": None if sv is None else dict(sorted(sv.seen.items())),
            "touched": None if sv is None else sv.touched,
            "count_change": None if sv is None else sv.count_change,
            "vision_confidence": None if sv is None else round(sv.confidence, 3)}
        if sv is not None and sv.usable:
            shelves_ev[shelf_id]["unlike_cells"] = unlike

    odd = _strangers(bundle, per_slot, notes, flags, inventory, answer, skus)
    if confidence < params.min_confidence or lenient < LENIENT_MIN_CONFIDENCE:
        flags.add("low_confidence")
    confidence = min(confidence, lenient)
    best_guess = dict(best_key)
    basket = best_guess
    # the most of each SKU that a plausible basket charges (those holding CERTAIN_MASS)
    most: dict[str, int] = {}
    mass = 0.0
    for key, p in ranked:
        for k, n in key:
            most[k] = max(most.get(k, 0), n)
        mass += p
        if mass >= CERTAIN_MASS - 1e-9:
            break
    lookalike = _lookalike_hiding(bundle, per_slot, inventory, catalog,
                                  params.load_cell_noise_g, most)
    if lookalike:
        # an item charged may be its look-alike's, which a swap of cells hid from the camera
        flags.add("lookalike_uncertain")
    if flags:
        # charge only what every plausible explanation agrees on; when the cameras contradict
        # the best explanation, every explanation kept counts as plausible
        mass = 1.0 if "vision_disagrees" in flags else CERTAIN_MASS
        # and under priors that make rare events common: misplaced items and weight from
        # something else on or off a shelf (a spike, a phone, a leaning hand)
        _, ranked_rare, _, _ = _posterior(spaces, skus, (LENIENT_MISPLACED_COST, MISPLACED_GROWTH),
                                          lenient_outlier=True)
        basket = _certain([ranked, ranked_lenient, ranked_rare], skus, unexplained, mass)
        if arrived_unexplained_g > 0:
            # weight arrived on a shelf from nowhere known: any item light enough to be part
            # of it may have been moved there rather than taken
            basket = {k: n for k, n in basket.items()
                      if catalog[k].unit_weight_g > arrived_unexplained_g}
        for lo, hi, n in swapped_in:
            # the thing in a swapped cell weighs what the shelf says; a product of that weight
            # charged from elsewhere may be that thing, moved (a look-alike returned into
            # another's cell), not taken: not charged
            basket = {k: (m - n if lo <= catalog[k].unit_weight_g <= hi else m)
                      for k, m in basket.items()}
            basket = {k: m for k, m in basket.items() if m > 0}
        # of a SKU whose items a look-alike's cells could hide, no more than the most any
        # plausible basket charges less those cells
        basket = {k: min(m, most.get(k, 0) - lookalike[k]) if k in lookalike else m
                  for k, m in basket.items()}
        basket = {k: m for k, m in basket.items() if m > 0}
    runner = None if len(ranked) < 2 else (dict(ranked[1][0]), round(ranked[1][1], 6))
    slots_ev = {sid: {"change": e.change, "count_before": sum(e.occupied_before),
                      "count_after": sum(e.occupied_after), "skus_after": list(e.skus_after),
                      "foreign_after": e.foreign_after, "confidence": e.confidence,
                      "usable": e.usable, "reason": e.reason}
                for sid, e in sorted(per_slot.items())}
    evidence = {"shelves": shelves_ev, "slots": slots_ev, "cameras": dict(sorted(notes.items())),
                "combinations": ncombos, "strangers": odd,
                "miscounted": shelves_miscounted,
                "confidence_nominal": round(dict(ranked)[best_key], 6),
                "confidence_lenient": round(lenient, 6)}
    return ReconcileResult(dict(sorted(basket.items())), round(confidence, 6), runner, evidence,
                           tuple(sorted(flags)), dict(sorted(best_guess.items())))


def _certain(rankings: list[list[tuple[tuple, float]]], skus: list[str],
             unexplained: list[tuple[str, np.ndarray]], certain_mass: float = CERTAIN_MASS
             ) -> dict[str, int]:
    """What is certain: the least count per SKU over the baskets holding `certain_mass` of the
    probability in any of the rankings (one per prior), less what the best explanation takes
    from shelves it cannot explain."""
    kept = []
    for ranked in rankings:
        mass = 0.0
        for key, p in ranked:
            kept.append(dict(key))
            mass += p
            if mass >= certain_mass - 1e-9:
                break
    certain = {k: min(b.get(k, 0) for b in kept) for k in kept[0]}
    for _shelf, x in unexplained:
        for i, n in enumerate(x):
            if n < 0 and skus[i] in certain:
                certain[skus[i]] = max(0, certain[skus[i]] + int(n))
    return {k: v for k, v in certain.items() if v > 0}
