"""Planogram and catalog changes for operators: validate, diff, apply, rollback.

An operator edits a copy of `planogram.yaml` or `catalog.yaml` and runs, in order:

- validate: every error of the file at once, each `file:line: key = value: what to do`;
  a planogram is checked against the catalog in force, a catalog against the planogram in
  force (a product that a slot still sells cannot go). Reads only; writes nothing.
- diff: what would change against the file in force, one `Change` per difference (slots added
  or removed, SKU, price, par, capacity, ...; products added or removed, price, weight, ...).
- apply: validate, refuse while the cabinet is busy (an open customer session in the journal,
  or the cabinet not idle: out of service, restocking), then put the file in force atomically
  (cabinet.inforce keeps the previous one). Returns the diff it applied.
- rollback: the previous version back in force, with the same refusals and the same checks
  (rolling a catalog back must not strand a slot of the planogram in force).

`Operations` binds these to one configuration: its data_dir holds the files in force, its
database the journal that says whether the cabinet is busy.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy.orm import sessionmaker

from cabinet.catalog import Catalog, catalog_errors, catalog_from_doc
from cabinet.errors import CabinetError, FormatError, FormatErrors
from cabinet.inforce import KINDS, InForce
from cabinet.journal import Journal
from cabinet.planogram import Planogram, planogram_errors, planogram_from_doc
from cabinet.yamlsrc import Doc, load_yaml, parse_yaml


class Refused(CabinetError):
    """An apply or rollback refused because of the cabinet's state; nothing changed."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One difference: `what` (slot id or SKU), `field` ('slot' / 'product' for whole ones),
    `old` and `new` (None where the thing did not or will not exist)."""

    kind: str   # 'planogram' or 'catalog'
    what: str
    field: str
    old: Any
    new: Any

    @property
    def action(self) -> str:
        if self.field in ("slot", "shelf", "product"):
            return "added" if self.old is None else "removed"
        return "changed"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "field": self.field,
                "action": self.action, "old": self.old, "new": self.new}


# --- pure parts: parse, check, compare ---------------------------------------------------------

def _doc(source: Path | tuple[bytes, Path], what: str) -> Doc:
    """Parse a file, or (bytes, the name they came from)."""
    if isinstance(source, tuple):
        data, name = source
        try:
            return parse_yaml(data.decode("utf-8"), name)
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise FormatError(name, line, None, message="not UTF-8 text") from None
    return load_yaml(source, what)


def catalog_problems(catalog_doc: Doc, planogram_doc: Doc) -> list[FormatError]:
    """Every error of a catalog file, then what it would break in the planogram in force."""
    errors = catalog_errors(catalog_doc)
    if errors:
        return errors
    catalog = catalog_from_doc(catalog_doc)
    out = []
    for i, slot in enumerate(planogram_doc.get(("slots",), []) or []):
        sku = slot.get("sku") if isinstance(slot, dict) else None
        if isinstance(sku, str) and sku not in catalog:
            out.append(FormatError(
                catalog_doc.path, None, None,
                message=f"slot {slot.get('id')} of the planogram in force "
                        f"({planogram_doc.path}:{planogram_doc.line(('slots', i))}) sells SKU "
                        f"'{sku}', which this catalog does not have; keep the product, or "
                        f"apply a planogram without it first"))
    if out:
        return out
    return [FormatError(catalog_doc.path, None, None,
                        message=f"the planogram in force would not hold with this catalog: "
                                f"{err}")
            for err in planogram_errors(planogram_doc, catalog)]


def diff_catalogs(old: Catalog, new: Catalog) -> list[Change]:
    out = []
    if old.currency != new.currency:
        out.append(Change("catalog", "*", "currency", old.currency, new.currency))
    for sku in old:
        if sku not in new:
            out.append(Change("catalog", sku, "product", old[sku].name, None))
    for sku, p in new.items():
        if sku not in old:
            out.append(Change("catalog", sku, "product", None, p.name))
            continue
        before = dataclasses.asdict(old[sku])
        for field, value in dataclasses.asdict(p).items():
            if field != "currency" and before[field] != value:
                out.append(Change("catalog", sku, field, _plain(before[field]), _plain(value)))
    return out


def diff_planograms(old: Planogram, new: Planogram, old_catalog: Catalog,
                    new_catalog: Catalog) -> list[Change]:
    out = []
    if old.cabinet_id != new.cabinet_id:
        out.append(Change("planogram", "*", "cabinet_id", old.cabinet_id, new.cabinet_id))
    if old.camera_size != new.camera_size:
        out.append(Change("planogram", "*", "camera_size", list(old.camera_size),
                          list(new.camera_size)))
    old_shelves = {s.id: s for s in old.shelves}
    new_shelves = {s.id: s for s in new.shelves}
    for sid in old_shelves.keys() - new_shelves.keys():
        out.append(Change("planogram", sid, "shelf", old_shelves[sid].camera, None))
    for sid, shelf in new_shelves.items():
        if sid not in old_shelves:
            out.append(Change("planogram", sid, "shelf", None, shelf.camera))
            continue
        for field in ("channel", "camera", "max_load_g"):
            a, b = getattr(old_shelves[sid], field), getattr(shelf, field)
            if a != b:
                out.append(Change("planogram", sid, field, a, b))
    old_slots = {s.id: s for s in old.slots}
    for slot in old.slots:
        if not new.has_slot(slot.id):
            out.append(Change("planogram", slot.id, "slot", slot.sku, None))
    for slot in new.slots:
        was = old_slots.get(slot.id)
        if was is None:
            out.append(Change("planogram", slot.id, "slot", None, slot.sku))
            continue
        for field in ("shelf", "sku", "capacity", "par", "roi"):
            a, b = getattr(was, field), getattr(slot, field)
            if a != b:
                out.append(Change("planogram", slot.id, field, _plain(a), _plain(b)))
        a_price = _price(old_catalog, was.sku)
        b_price = _price(new_catalog, slot.sku)
        if a_price != b_price:
            out.append(Change("planogram", slot.id, "price", a_price, b_price))
    return sorted(out, key=lambda c: (c.what, c.field))


_ITEM = re.compile(r"^(slots|shelves|products)\[(\d+)\]")


def _named(doc: Doc, errors: list[FormatError]) -> list[FormatError]:
    """Say which slot, shelf or product an error is about: `slot A3: ...`, not only
    `slots[2].sku`, so the operator finds it in the editor by name as well as by line."""
    out = []
    for err in errors:
        m = _ITEM.match(err.key or "")
        ident = doc.get((m.group(1), int(m.group(2)), "sku" if m.group(1) == "products"
                         else "id")) if m else None
        if isinstance(ident, str):
            label = {"slots": "slot", "shelves": "shelf", "products": "product"}[m.group(1)]
            value = err.value if err.has_value else dataclasses.MISSING
            err = FormatError(err.path, err.line, f"{label} {ident}: {err.key}",
                              *(() if value is dataclasses.MISSING else (value,)),
                              message=err.message)
        out.append(err)
    return out


def _price(catalog: Catalog, sku: str) -> int | None:
    return catalog[sku].price if sku in catalog else None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def render_changes(changes: Sequence[Change]) -> str:
    """A table for the terminal: what, field, old -> new."""
    if not changes:
        return "no changes"
    rows = [(c.what, c.field, c.action, "" if c.old is None else json.dumps(c.old),
             "" if c.new is None else json.dumps(c.new)) for c in changes]
    head = ("what", "field", "action", "in force", "new")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# --- bound to a cabinet's configuration ------------------------------------------------------

class Operations:
    """validate / diff / apply / rollback against one cabinet's files in force and journal."""

    def __init__(self, store: InForce, db: Callable[[], sessionmaker] | None = None):
        self.store = store
        self._db = db   # opened only by apply and rollback: validate and diff write nothing

    # --- reading -----------------------------------------------------------------------------
    def _in_force_doc(self, kind: str) -> Doc:
        return _doc((self.store.read(kind), self.store.path(kind)), kind)

    def in_force(self) -> tuple[Catalog, Planogram]:
        catalog = catalog_from_doc(self._in_force_doc("catalog"))
        return catalog, planogram_from_doc(self._in_force_doc("planogram"), catalog)

    def validate(self, kind: str, source: Path | tuple[bytes, Path]) -> list[FormatError]:
        """Every error of the file (empty list: valid). Writes nothing."""
        _check_kind(kind)
        try:
            doc = _doc(source, kind)
        except FormatError as e:
            return [e]
        if kind == "planogram":
            return _named(doc, planogram_errors(
                doc, catalog_from_doc(self._in_force_doc("catalog"))))
        return _named(doc, catalog_problems(doc, self._in_force_doc("planogram")))

    def diff(self, kind: str, source: Path | tuple[bytes, Path]) -> list[Change]:
        """What putting the file in force would change; FormatErrors if it is not valid."""
        errors = self.validate(kind, source)
        if errors:
            raise FormatErrors(errors)
        catalog, planogram = self.in_force()
        doc = _doc(source, kind)
        if kind == "catalog":
            return diff_catalogs(catalog, catalog_from_doc(doc))
        return diff_planograms(planogram, planogram_from_doc(doc, catalog), catalog, catalog)

    # --- writing -----------------------------------------------------------------------------
    def busy(self) -> str | None:
        """Why the cabinet cannot take a change now (None: it is idle, no session open)."""
        if self._db is None:
            return None
        journal = Journal(self._db())
        open_sessions = journal.open_sessions()
        if open_sessions:
            sid, state = open_sessions[0]
            return (f"session {sid} is open ({state.replace('_', ' ')}); wait until it ends "
                    f"(`cabinet run` finishes it, also after a restart)")
        cabinet_level = journal.entries(None)
        state = cabinet_level[-1].dest if cabinet_level else "idle"
        if state != "idle":
            return (f"the cabinet is {state.replace('_', ' ')}, not idle; finish the restock "
                    f"(`cabinet restock accept`) or put it back in service first")
        return None

    def apply(self, kind: str, source: Path) -> list[Change]:
        """Validate, check the cabinet is idle, put the file in force; the applied diff."""
        _check_kind(kind)
        data = _doc(Path(source), kind).text.encode("utf-8")  # read once: what is checked
        changes = self.diff(kind, (data, Path(source)))       # is what goes in force
        reason = self.busy()
        if reason:
            raise Refused(f"{kind} apply refused: {reason}; nothing changed")
        self.store.apply(kind, data)
        return changes

    def rollback_changes(self, kind: str) -> tuple[bytes, list[Change]]:
        """The previous version and what putting it back would change; Refused when there is
        none or it does not hold with the files in force now."""
        _check_kind(kind)
        previous = self.store.previous(kind)
        if previous is None:
            raise Refused(f"{kind} rollback refused: no earlier version in "
                          f"{self.store.root / 'history' / kind}; nothing changed")
        name = self.store.root / "history" / kind / f"previous-{kind}.yaml"
        errors = self.validate(kind, (previous, name))
        if errors:
            raise Refused(f"{kind} rollback refused: the previous version does not hold with "
                          f"the files in force now; nothing changed: "
                          + "; ".join(str(e) for e in errors))
        return previous, self.diff(kind, (previous, name))

    def rollback(self, kind: str) -> list[Change]:
        """The previous version back in force (checked like an apply); the diff it applied."""
        previous, changes = self.rollback_changes(kind)
        reason = self.busy()
        if reason:
            raise Refused(f"{kind} rollback refused: {reason}; nothing changed")
        self.store.rollback(kind)
        if self.store.read(kind) != previous:  # pragma: no cover - the lock forbids it
            raise CabinetError(f"{kind} rollback: another operator changed it meanwhile; "
                               f"check `cabinet {kind} diff`")
        return changes


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'; use one of {KINDS}")
