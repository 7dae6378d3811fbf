"""Restock counting: how many items each slot holds, from its shelf's settled weight.

`count_stock` is a pure function. For each shelf it searches every integer fill of the shelf's
slots (0..capacity each) whose weight could explain the settled reading, scores each fill as a
likelihood (the reading ~ Normal(sum of unit weights, scale noise^2 + sum of item spreads^2),
times the cameras' per-slot counts when given, right with probability VISION_RIGHT), and
normalises them into a posterior. A slot's count is its value in the most likely fill, its
confidence the posterior mass of fills that agree with it. So a shelf of one SKU counts
exactly, while two SKUs whose weights add up alike (2 x 330 g against 1 x 660 g, or two
look-alike milks of one weight) share the mass and get a lower confidence, unless the cameras
tell them apart. Flags per slot: `not_settled` (the shelf never read stable: confidence 0),
`unexplained_weight` (no fill comes within 4 sigma: a foreign object, a wrong item, a dead
cell), `uncertain` (confidence under the threshold). Ties go to the fill nearest the expected.

`RestockVisits` keeps the operator's visits as JSON files under data_dir/restock/ (atomic
writes): who opened the cabinet, when, the stock believed before, and the settled weights the
controller (or the operator, with --weights) recorded before and after; `accept` stores the
counted stock and the shrinkage found, and the caller makes that the inventory in force.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cabinet.catalog import Catalog
from cabinet.errors import CabinetError
from cabinet.inforce import atomic_write
from cabinet.planogram import Planogram

VISION_RIGHT = 0.9        # how often a camera's count of one slot is right
SIGMAS_UNEXPLAINED = 4.0  # a reading this far from the best fill is not explained by the stock
MAX_FILLS = 2_000_000     # fills searched per shelf; more means the planogram needs splitting


@dataclasses.dataclass(frozen=True)
class ShelfWeight:
    """One shelf's settled reading in grams (tared: the load of the items on it)."""

    grams: float
    stable: bool = True


@dataclasses.dataclass(frozen=True)
class SlotCount:
    slot: str
    shelf: str
    sku: str
    expected: int              # the stock believed before the visit
    counted: int               # counted from the weights after the visit
    confidence: float
    counted_before: int | None = None   # counted from the weights before, when recorded
    flags: tuple[str, ...] = ()
    before_confidence: float | None = None

    @property
    def shrinkage(self) -> int | None:
        """Items that went missing before the visit (believed minus found), when the count
        before the visit is known and sure (flag `uncertain_before` otherwise)."""
        if self.counted_before is None or "uncertain_before" in self.flags:
            return None
        return self.expected - self.counted_before

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), flags=list(self.flags), shrinkage=self.shrinkage)


@dataclasses.dataclass(frozen=True)
class RestockReport:
    slots: tuple[SlotCount, ...]

    def flagged(self) -> list[SlotCount]:
        return [s for s in self.slots if s.flags]

    def counts(self) -> dict[str, int]:
        return {s.slot: s.counted for s in self.slots}

    def to_dict(self) -> dict[str, Any]:
        return {"slots": [s.to_dict() for s in self.slots]}


@dataclasses.dataclass(frozen=True)
class _ShelfResult:
    counts: dict[str, int]
    confidence: dict[str, float]
    explained: bool


def count_shelf(grams: float, slots: list[tuple[str, float, float, int]], *, noise_g: float,
                vision: Mapping[str, int] | None = None,
                expected: Mapping[str, int] | None = None) -> _ShelfResult:
    """Most likely count per slot for one shelf reading. `slots`: (slot id, unit weight,
    one item's standard deviation, capacity)."""
    if noise_g <= 0:
        raise ValueError("count_shelf: noise_g must be positive")
    if not slots:
        return _ShelfResult({}, {}, abs(grams) <= SIGMAS_UNEXPLAINED * noise_g)
    caps = [c for _, _, _, c in slots]
    worst_sd = math.sqrt(noise_g ** 2 + sum(c * s ** 2 for _, _, s, c in slots))
    ceiling = grams + (SIGMAS_UNEXPLAINED + 2) * worst_sd
    fills = np.zeros((1, 0), dtype=np.int64)
    mean = np.zeros(1)
    for (_, unit, _, cap) in slots:
        n = np.arange(cap + 1)
        fills = np.hstack([np.repeat(fills, cap + 1, axis=0), np.tile(n, len(fills))[:, None]])
        mean = (mean[:, None] + n[None, :] * unit).reshape(-1)
        keep = mean <= ceiling          # weights only add: prune fills already too heavy
        fills, mean = fills[keep], mean[keep]
        if len(fills) > MAX_FILLS:
            raise CabinetError(f"restock count: a shelf with {len(slots)} slots of capacities "
                               f"{caps} has too many fills to search; split it in the "
                               f"planogram")
    if len(fills) == 0:   # lighter than nothing at all: only the empty fill is left to report
        fills, mean = np.zeros((1, len(slots)), dtype=np.int64), np.zeros(1)
    sigma2 = np.array([s ** 2 for _, _, s, _ in slots])
    var = noise_g ** 2 + fills @ sigma2
    loglik = -0.5 * (grams - mean) ** 2 / var - 0.5 * np.log(var)
    if vision:
        for i, (slot_id, _, _, cap) in enumerate(slots):
            if slot_id in vision:
                seen = fills[:, i] == int(vision[slot_id])
                loglik = loglik + np.where(seen, math.log(VISION_RIGHT),
                                           math.log((1 - VISION_RIGHT) / max(cap, 1)))
    target = np.array([(expected or {}).get(sid, 0) for sid, _, _, _ in slots])
    tie_break = -1e-9 * np.abs(fills - target).sum(axis=1)
    best = int(np.argmax(loglik + tie_break))
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    counts, confidence = {}, {}
    for i, (slot_id, _, _, _) in enumerate(slots):
        counts[slot_id] = int(fills[best, i])
        confidence[slot_id] = float(post[fills[:, i] == fills[best, i]].sum())
    explained = abs(grams - mean[best]) <= SIGMAS_UNEXPLAINED * math.sqrt(var[best])
    return _ShelfResult(counts, confidence, bool(explained))


def _count_all(weights: Mapping[str, ShelfWeight], planogram: Planogram, catalog: Catalog,
               noise_g: float, vision: Mapping[str, int] | None,
               expected: Mapping[str, int]) -> dict[str, tuple[int, float, tuple[str, ...]]]:
    missing = [s.id for s in planogram.shelves if s.id not in weights]
    if missing:
        raise CabinetError(f"restock count: no settled weight for shelf(s) "
                           f"{', '.join(missing)}; record every shelf of the planogram")
    out = {}
    for shelf in planogram.shelves:
        reading = weights[shelf.id]
        slots = planogram.slots_on(shelf.id)
        result = count_shelf(reading.grams, [(s.id, catalog[s.sku].unit_weight_g,
                                               catalog[s.sku].weight_sigma_g, s.capacity)
                                              for s in slots],
                             noise_g=noise_g, vision=vision, expected=expected)
        for s in slots:
            flags = []
            confidence = result.confidence[s.id]
            if not reading.stable:
                flags.append("not_settled")
                confidence = 0.0
            if not result.explained:
                flags.append("unexplained_weight")
            out[s.id] = (result.counts[s.id], confidence, tuple(flags))
    return out


def count_stock(after: Mapping[str, ShelfWeight], planogram: Planogram, catalog: Catalog, *,
                expected: Mapping[str, int], noise_g: float = 2.0,
                before: Mapping[str, ShelfWeight] | None = None,
                vision: Mapping[str, int] | None = None,
                vision_before: Mapping[str, int] | None = None,
                min_confidence: float = 0.95) -> RestockReport:
    """The discrepancy report of a restock: per slot the stock believed (`expected`), what the
    weights after the visit count, the confidence, and (with `before`) what was there before.

    `after`/`before`: shelf id -> settled reading; `vision`: slot id -> items the cameras see
    after the visit, `vision_before` before it."""
    unknown = sorted((set(vision or {}) | set(vision_before or {}))
                     - {s.id for s in planogram.slots})
    if unknown:
        raise CabinetError(f"restock count: vision counts name slot(s) {', '.join(unknown)}, "
                           f"which the planogram in force does not have")
    now = _count_all(after, planogram, catalog, noise_g, vision, expected)
    then = _count_all(before, planogram, catalog, noise_g, vision_before, expected) \
        if before else None
    rows = []
    for s in planogram.slots:
        counted, confidence, flags = now[s.id]
        if confidence < min_confidence and "not_settled" not in flags:
            flags = flags + ("uncertain",)
        counted_before = before_confidence = None
        if then is not None:
            counted_before, before_confidence, before_flags = then[s.id]
            if before_confidence < min_confidence or before_flags:
                flags = flags + ("uncertain_before",)
            before_confidence = round(before_confidence, 6)
        rows.append(SlotCount(s.id, s.shelf, s.sku, int(expected.get(s.id, 0)), counted,
                              round(confidence, 6), counted_before, flags, before_confidence))
    return RestockReport(tuple(rows))


# --- the visits ------------------------------------------------------------------------------

def parse_weights(data: Any, where: str) -> dict[str, ShelfWeight]:
    """`{shelf: grams}` or `{shelf: {grams: G, stable: true|false}}` from a JSON file."""
    if not isinstance(data, dict):
        raise CabinetError(f"{where}: expected a JSON object of shelf id -> grams")
    out = {}
    for shelf, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[shelf] = ShelfWeight(float(value))
        elif isinstance(value, dict) and isinstance(value.get("grams"), (int, float)) \
                and isinstance(value.get("stable", True), bool) \
                and set(value) <= {"grams", "stable"}:
            out[shelf] = ShelfWeight(float(value["grams"]), value.get("stable", True))
        else:
            raise CabinetError(f"{where}: shelf {shelf!r} = {value!r}: expected grams, or "
                               f"{{\"grams\": G, \"stable\": true|false}}")
    return out


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CabinetError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CabinetError(f"{path}: cannot read the {what} file: {e}") from None
    except json.JSONDecodeError as e:
        raise CabinetError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None


class RestockVisits:
    """Visits under `data_dir/restock/<id>.json`, the newest last."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "restock"

    def all(self) -> list[Path]:
        return sorted(self.root.glob("*.json")) if self.root.is_dir() else []

    def latest(self) -> dict[str, Any] | None:
        paths = self.all()
        return read_json(paths[-1], "restock visit") if paths else None

    def open_visit(self) -> dict[str, Any] | None:
        visit = self.latest()
        return visit if visit is not None and visit.get("accepted") is None else None

    def start(self, operator: str, expected: Mapping[str, int], at: dt.datetime,
              before: Mapping[str, ShelfWeight] | None = None,
              vision_before: Mapping[str, int] | None = None) -> dict[str, Any]:
        if not operator.strip():
            raise CabinetError("restock start: name the operator (--operator NAME)")
        current = self.open_visit()
        if current is not None:
            raise CabinetError(f"restock start: visit {current['id']} by {current['operator']} "
                               f"is still open; count and accept it first")
        visit_id = at.strftime("%Y%m%dT%H%M%S%fZ")
        visit = {"id": visit_id, "operator": operator, "started_at": at.isoformat(),
                 "expected": dict(expected), "before": _weights_json(before),
                 "vision_before": None if vision_before is None else dict(vision_before),
                 "after": None, "vision": None, "accepted": None}
        self._write(visit)
        return visit

    def record(self, phase: str, weights: Mapping[str, ShelfWeight]) -> dict[str, Any]:
        """The controller's (or operator's) settled weights of the open visit; phase is
        'before' or 'after'."""
        if phase not in ("before", "after"):
            raise ValueError(f"restock: phase is 'before' or 'after', not {phase!r}")
        visit = self._require_open()
        visit[phase] = _weights_json(weights)
        self._write(visit)
        return visit

    def record_vision(self, counts: Mapping[str, int], phase: str = "after") -> dict[str, Any]:
        """Per-slot item counts the cameras saw before or after the visit."""
        if phase not in ("before", "after"):
            raise ValueError(f"restock: phase is 'before' or 'after', not {phase!r}")
        bad = {k: v for k, v in counts.items()
               if not isinstance(v, int) or isinstance(v, bool) or v < 0}
        if bad:
            raise CabinetError(f"restock: vision counts must be whole numbers >= 0: {bad}")
        visit = self._require_open()
        visit["vision" if phase == "after" else "vision_before"] = dict(counts)
        self._write(visit)
        return visit

    def accept(self, report: RestockReport, at: dt.datetime) -> dict[str, Any]:
        visit = self._require_open()
        visit["accepted"] = {"at": at.isoformat(), "counts": report.counts(),
                             "shrinkage": {s.slot: s.shrinkage for s in report.slots
                                           if s.shrinkage},
                             "report": report.to_dict()}
        self._write(visit)
        return visit

    def _require_open(self) -> dict[str, Any]:
        visit = self.open_visit()
        if visit is None:
            raise CabinetError("restock: no open visit; start one with `cabinet restock start`")
        return visit

    def _write(self, visit: dict[str, Any]) -> None:
        atomic_write(self.root / f"{visit['id']}.json",
                     (json.dumps(visit, indent=2, sort_keys=True) + "\n").encode())


def weights_of(visit_weights: Mapping[str, Any] | None) -> dict[str, ShelfWeight] | None:
    if visit_weights is None:
        return None
    return {k: ShelfWeight(float(v["grams"]), bool(v["stable"]))
            for k, v in visit_weights.items()}


def _weights_json(weights: Mapping[str, ShelfWeight] | None) -> dict[str, Any] | None:
    if weights is None:
        return None
    return {k: {"grams": w.grams, "stable": w.stable} for k, w in weights.items()}
