"""The planogram: which shelf hangs on which load-cell channel, and which SKU sits in which slot.

`planogram.yaml` (docs/formats.md, schema `cabinet/schemas/planogram.schema.json`) is parsed
with line numbers, validated by a pydantic model (unknown keys refused), then put through named
cross-field checks against the catalog: unknown SKU, unknown shelf, ROI outside the camera image,
overlapping ROIs on one camera, duplicate ids, par above capacity, stock above capacity, a shelf
whose full stock exceeds its max load. Each failure is a one-line `FormatError` with the line.

Initial stock (what the demo's simulated world and the inventory start from) is `stock:` per
slot; a slot without it is restocked to capacity.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator)

from cabinet.catalog import Catalog
from cabinet.errors import FormatError, FormatErrors
from cabinet.yamlsrc import Doc, load_yaml, pydantic_errors

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


def _list_to_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


Roi = Annotated[tuple[int, int, int, int], BeforeValidator(_list_to_tuple)]
Size = Annotated[tuple[int, int], BeforeValidator(_list_to_tuple)]


class ShelfModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=ID_PATTERN)
    channel: int = Field(ge=0, le=15, description="MCU load-cell shelf index")
    camera: str = Field(pattern=ID_PATTERN, description="Id of the camera looking at this shelf")
    max_load_g: float = Field(gt=0, le=200000)

    @field_validator("max_load_g", mode="before")
    @classmethod
    def _int_grams_ok(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class SlotModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=ID_PATTERN)
    shelf: str
    sku: str
    capacity: int = Field(ge=1, le=100)
    par: int = Field(default=0, ge=0, description="Restock alert level")
    stock: int | None = Field(default=None, ge=0, description="Initial fill; default capacity")
    roi: Roi = Field(description="x, y, width, height in camera pixels")


class CompartmentModel(BaseModel):
    """Shelves behind a door of their own, with its own lock on the MCU (e.g. alcohol)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=ID_PATTERN)
    lock_channel: int = Field(ge=1, le=3, description="MCU lock channel of the compartment's "
                              "door (0 is the cabinet's main door)")
    shelves: list[str] = Field(min_length=1, description="Shelves behind this door")
    age_restricted: bool = Field(default=True, description="Opens only for a verified adult")


class PlanogramModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    schema_version: int = Field(default=1, ge=1, le=1)
    cabinet_id: str = Field(pattern=ID_PATTERN)
    camera_size: Size = Field(default=(640, 480),
                                         description="width, height of every shelf camera image")
    shelves: list[ShelfModel] = Field(min_length=1)
    slots: list[SlotModel] = Field(min_length=1)
    compartments: list[CompartmentModel] = Field(
        default_factory=list, description="Shelves with a door and lock channel of their own")


@dataclasses.dataclass(frozen=True)
class Compartment:
    id: str
    lock_channel: int
    shelves: tuple[str, ...]
    age_restricted: bool = True


@dataclasses.dataclass(frozen=True)
class Shelf:
    id: str
    channel: int
    camera: str
    max_load_g: float


@dataclasses.dataclass(frozen=True)
class Slot:
    id: str
    shelf: str
    sku: str
    capacity: int
    par: int
    roi: tuple[int, int, int, int]
    stock: int = 0


@dataclasses.dataclass(frozen=True)
class Planogram:
    cabinet_id: str
    shelves: tuple[Shelf, ...]
    slots: tuple[Slot, ...]
    camera_size: tuple[int, int] = (640, 480)
    compartments: tuple[Compartment, ...] = ()

    def compartment_of(self, slot_id: str) -> Compartment | None:
        """The compartment holding the slot's shelf, or None (behind the main door)."""
        shelf = self.slot(slot_id).shelf
        return next((c for c in self.compartments if shelf in c.shelves), None)

    def shelf(self, shelf_id: str) -> Shelf:
        for s in self.shelves:
            if s.id == shelf_id:
                return s
        raise KeyError(f"planogram {self.cabinet_id}: no shelf '{shelf_id}'")

    def slot(self, slot_id: str) -> Slot:
        for s in self.slots:
            if s.id == slot_id:
                return s
        raise KeyError(f"planogram {self.cabinet_id}: no slot '{slot_id}'")

    def has_slot(self, slot_id: str) -> bool:
        return any(s.id == slot_id for s in self.slots)

    def shelf_by_channel(self, channel: int) -> Shelf:
        for s in self.shelves:
            if s.channel == channel:
                return s
        raise KeyError(f"planogram {self.cabinet_id}: no shelf on channel {channel}")

    def slots_on(self, shelf_id: str) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.shelf == shelf_id)

    def slots_seen_by(self, camera: str) -> tuple[Slot, ...]:
        shelves = {s.id for s in self.shelves if s.camera == camera}
        return tuple(s for s in self.slots if s.shelf in shelves)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.camera for s in self.shelves))

    def skus(self) -> frozenset[str]:
        return frozenset(s.sku for s in self.slots)

    def initial_stock(self) -> dict[str, int]:
        """Slot id -> item count the cabinet starts with (`stock:`, else capacity)."""
        return {s.id: s.stock for s in self.slots}

    def to_dict(self) -> dict[str, Any]:
        out = {"schema_version": 1, "cabinet_id": self.cabinet_id,
               "camera_size": list(self.camera_size),
               "shelves": [dataclasses.asdict(s) for s in self.shelves],
               "slots": [dict(dataclasses.asdict(s), roi=list(s.roi)) for s in self.slots]}
        if self.compartments:
            out["compartments"] = [dict(dataclasses.asdict(c), shelves=list(c.shelves))
                                   for c in self.compartments]
        return out


# --- cross-field checks: each a named function returning the errors it finds ----------------

def check_unique_ids(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    errors = []
    for kind, items in (("shelves", m.shelves), ("slots", m.slots)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                errors.append(doc.error((kind, i, "id"), f"duplicate id (first at line "
                                        f"{doc.line((kind, seen[item.id]))}); ids are unique"))
            seen.setdefault(item.id, i)
    channels: dict[int, int] = {}
    for i, s in enumerate(m.shelves):
        if s.channel in channels:
            errors.append(doc.error(("shelves", i, "channel"),
                                    f"channel already used by shelf "
                                    f"'{m.shelves[channels[s.channel]].id}'"))
        channels.setdefault(s.channel, i)
    return errors


def check_skus_in_catalog(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    where = f" ({catalog.path})" if catalog.path else ""
    return [doc.error(("slots", i, "sku"),
                      f"not in the catalog{where}; add it there or fix the SKU")
            for i, s in enumerate(m.slots) if s.sku not in catalog]


def check_shelves_exist(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    ids = [s.id for s in m.shelves]
    return [doc.error(("slots", i, "shelf"), f"no such shelf; shelves are {', '.join(ids)}")
            for i, s in enumerate(m.slots) if s.shelf not in ids]


def check_roi_inside_image(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    w_img, h_img = m.camera_size
    if w_img <= 0 or h_img <= 0:
        return [doc.error(("camera_size",), "width and height must be positive")]
    errors = []
    for i, s in enumerate(m.slots):
        x, y, w, h = s.roi
        if w <= 0 or h <= 0:
            errors.append(doc.error(("slots", i, "roi"), "width and height must be positive"))
        elif x < 0 or y < 0 or x + w > w_img or y + h > h_img:
            errors.append(doc.error(("slots", i, "roi"),
                                    f"outside the {w_img}x{h_img} camera image"))
    return errors


def check_rois_disjoint(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    camera_of = {s.id: s.camera for s in m.shelves}
    errors = []
    for j, b in enumerate(m.slots):
        for i in range(j):
            a = m.slots[i]
            if camera_of.get(a.shelf) is None or camera_of.get(a.shelf) != camera_of.get(b.shelf):
                continue
            ax, ay, aw, ah = a.roi
            bx, by, bw, bh = b.roi
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                errors.append(doc.error(("slots", j, "roi"),
                                        f"overlaps slot '{a.id}' (line {doc.line(('slots', i))}) "
                                        f"on camera '{camera_of[a.shelf]}'"))
                break
    return errors


def check_levels(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    errors = []
    for i, s in enumerate(m.slots):
        if s.par > s.capacity:
            errors.append(doc.error(("slots", i, "par"),
                                    f"par is above the capacity ({s.capacity})"))
        if s.stock is not None and s.stock > s.capacity:
            errors.append(doc.error(("slots", i, "stock"),
                                    f"stock is above the capacity ({s.capacity})"))
    return errors


def check_max_load(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    errors = []
    for i, shelf in enumerate(m.shelves):
        full = sum(s.capacity * catalog[s.sku].unit_weight_g
                   for s in m.slots if s.shelf == shelf.id and s.sku in catalog)
        if full > shelf.max_load_g:
            errors.append(doc.error(("shelves", i, "max_load_g"),
                                    f"the slots at capacity weigh {full:.0f} g, above the "
                                    f"shelf's max load; lower capacities or raise max_load_g"))
    return errors


def check_compartments(doc: Doc, m: PlanogramModel, catalog: Catalog) -> list[FormatError]:
    shelves = [s.id for s in m.shelves]
    errors = []
    owner: dict[str, str] = {}
    channels: dict[int, str] = {}
    for i, c in enumerate(m.compartments):
        if c.lock_channel in channels:
            errors.append(doc.error(("compartments", i, "lock_channel"),
                                    f"lock channel already used by compartment "
                                    f"'{channels[c.lock_channel]}'; each door has its own"))
        channels.setdefault(c.lock_channel, c.id)
        for j, shelf in enumerate(c.shelves):
            if shelf not in shelves:
                errors.append(doc.error(("compartments", i, "shelves", j),
                                        f"no such shelf; shelves are {', '.join(shelves)}"))
            elif shelf in owner:
                errors.append(doc.error(("compartments", i, "shelves", j),
                                        f"already behind compartment '{owner[shelf]}'; a "
                                        f"shelf has one door"))
            owner.setdefault(shelf, c.id)
    return errors


CROSS_CHECKS = (check_unique_ids, check_skus_in_catalog, check_shelves_exist,
                check_roi_inside_image, check_rois_disjoint, check_levels, check_max_load,
                check_compartments)


def planogram_from_doc(doc: Doc, catalog: Catalog) -> Planogram:
    if not isinstance(doc.data, dict):
        raise doc.error((), "a planogram is a mapping with `cabinet_id:`, `shelves:` and "
                        "`slots:`", with_value=False)
    try:
        m = PlanogramModel.model_validate(doc.data)
    except ValidationError as e:
        raise FormatErrors(pydantic_errors(doc, e)).first from None
    errors = [err for check in CROSS_CHECKS for err in check(doc, m, catalog)]
    if errors:
        raise FormatErrors(errors).first
    shelves = tuple(Shelf(s.id, s.channel, s.camera, float(s.max_load_g)) for s in m.shelves)
    slots = tuple(Slot(s.id, s.shelf, s.sku, s.capacity, s.par, tuple(s.roi),
                       s.capacity if s.stock is None else s.stock) for s in m.slots)
    compartments = tuple(Compartment(c.id, c.lock_channel, tuple(c.shelves), c.age_restricted)
                         for c in m.compartments)
    return Planogram(m.cabinet_id, shelves, slots, tuple(m.camera_size), compartments)


def load_planogram(path: str | Path, catalog: Catalog) -> Planogram:
    """Read planogram.yaml and check it against the catalog; one-line FormatError on a fault."""
    return planogram_from_doc(load_yaml(path, "planogram"), catalog)


def planogram_errors(doc: Doc, catalog: Catalog) -> list[FormatError]:
    """Every error of a parsed planogram at once, in line order (empty: it is valid).

    The operator's `cabinet planogram validate` prints them all; `planogram_from_doc` stops at
    the first. Shape errors (pydantic) come alone: the cross-field checks need a whole model."""
    if not isinstance(doc.data, dict):
        return [doc.error((), "a planogram is a mapping with `cabinet_id:`, `shelves:` and "
                          "`slots:`", with_value=False)]
    try:
        m = PlanogramModel.model_validate(doc.data)
    except ValidationError as e:
        return list(FormatErrors(pydantic_errors(doc, e)).errors)
    errors = [err for check in CROSS_CHECKS for err in check(doc, m, catalog)]
    return list(FormatErrors(errors).errors) if errors else []
