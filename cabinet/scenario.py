"""Scripted customers (scenarios.yaml) and the demo's accounts (accounts.yaml).

A scenario names the face the customer shows, then a list of actions, each a one-key mapping:
`take: {slot, qty}`, `put: {slot, sku, qty}` (from the hand into a slot: a put-back, or a
misplaced return), `move: {src, dst, qty}` (take from one slot, put into another),
`open_door`, `close_door`, `wait: {seconds}`. `take: A1` is short for `take: {slot: A1}`.
The door opens before the first action and closes after the last unless the scenario scripts
them; a `denied` scenario never opens it. The loader replays the scenarios in file order on the
planogram's initial stock (the demo runs them that way on one cabinet), computes the basket each
customer walks away with, and refuses an `expect:` that disagrees, so a fixture cannot lie.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cabinet.errors import FormatErrors
from cabinet.planogram import ID_PATTERN, Planogram
from cabinet.yamlsrc import Doc, load_yaml, pydantic_errors

OUTCOMES = ("charged", "nothing_taken", "denied", "pending")
PAYMENT_TOKENS = ("tok_visa_ok", "tok_declined", "tok_insufficient_funds", "tok_expired")


@dataclasses.dataclass(frozen=True)
class Take:
    slot: str
    qty: int = 1


@dataclasses.dataclass(frozen=True)
class Put:
    slot: str
    sku: str
    qty: int = 1


@dataclasses.dataclass(frozen=True)
class Move:
    src: str
    dst: str
    qty: int = 1


@dataclasses.dataclass(frozen=True)
class OpenDoor:
    pass


@dataclasses.dataclass(frozen=True)
class CloseDoor:
    pass


@dataclasses.dataclass(frozen=True)
class Wait:
    seconds: float


Action = Union[Take, Put, Move, OpenDoor, CloseDoor, Wait]


@dataclasses.dataclass(frozen=True)
class Expectation:
    outcome: str
    basket: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    person: str | None
    photo: int
    actions: tuple[Action, ...]
    expect: Expectation
    fallback_person: str | None = None
    description: str = ""

    def person_for(self, *, fallback: bool) -> str | None:
        """The face directory to show: `fallback_person` when only the fallback faces exist."""
        return self.fallback_person if fallback and self.fallback_person else self.person


@dataclasses.dataclass(frozen=True)
class Account:
    id: str
    name: str
    person: str | None
    payment_token: str
    status: str
    fallback_person: str | None = None

    def person_for(self, *, fallback: bool) -> str | None:
        """The enrolled face directory; with only the fallback faces, `fallback_person` (None:
        this account is not enrolled by face in that mode)."""
        return self.fallback_person if fallback else self.person


# --- file models (pydantic, unknown keys refused) ---------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TakeParams(_Strict):
    slot: str
    qty: int = Field(default=1, ge=1, le=50)


class PutParams(_Strict):
    slot: str
    sku: str
    qty: int = Field(default=1, ge=1, le=50)


class MoveParams(_Strict):
    src: str
    dst: str
    qty: int = Field(default=1, ge=1, le=50)


class WaitParams(_Strict):
    seconds: float = Field(ge=0, le=600)


class ExpectModel(_Strict):
    outcome: Literal["charged", "nothing_taken", "denied", "pending"]
    basket: dict[str, int] = Field(default_factory=dict)


class ScenarioModel(_Strict):
    name: str = Field(pattern=ID_PATTERN)
    description: str = ""
    person: str | None = Field(default=None, description="Face directory under faces/")
    fallback_person: str | None = Field(default=None, description="Face used when only the "
                                        "fallback faces (obama, biden) exist")
    photo: int = Field(default=0, ge=0, description="Photo index, modulo the person's photos")
    actions: list[Any] = Field(default_factory=list, description="One-key mappings, see docs")
    expect: ExpectModel


class ScenariosFile(_Strict):
    schema_version: int = Field(default=1, ge=1, le=1)
    scenarios: list[ScenarioModel] = Field(min_length=1)


class AccountModel(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    person: str | None = None
    fallback_person: str | None = None
    payment_token: str = Field(description="Sandbox token: " + ", ".join(PAYMENT_TOKENS))
    status: Literal["active", "blocked", "closed"] = "active"


class AccountsFile(_Strict):
    schema_version: int = Field(default=1, ge=1, le=1)
    accounts: list[AccountModel] = Field(min_length=1)


_STEP_PARAMS: dict[str, type[BaseModel] | None] = {
    "take": TakeParams, "put": PutParams, "move": MoveParams, "wait": WaitParams,
    "open_door": None, "close_door": None}


def _parse_action(doc: Doc, loc: tuple, raw: Any) -> Action:
    if isinstance(raw, str) and raw in ("open_door", "close_door"):
        raw = {raw: None}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise doc.error(loc, "an action is a one-key mapping: take, put, move, wait, "
                        "open_door or close_door")
    (kind, params), = raw.items()
    if kind not in _STEP_PARAMS:
        raise doc.error(loc + (kind,), f"unknown action; use one of {', '.join(_STEP_PARAMS)}",
                        with_value=False)
    model = _STEP_PARAMS[kind]
    if model is None:
        if params not in (None, {}):
            raise doc.error(loc + (kind,), "takes no parameters")
        return OpenDoor() if kind == "open_door" else CloseDoor()
    if kind == "take" and isinstance(params, str):
        params = {"slot": params}
    if kind == "wait" and isinstance(params, (int, float)) and not isinstance(params, bool):
        params = {"seconds": float(params)}
    if kind == "wait" and isinstance(params, dict) and isinstance(params.get("seconds"), int):
        params = dict(params, seconds=float(params["seconds"]))
    try:
        p = model.model_validate(params)
    except ValidationError as e:
        raise FormatErrors(pydantic_errors(doc, e, loc + (kind,))).first from None
    if kind == "take":
        return Take(p.slot, p.qty)
    if kind == "put":
        return Put(p.slot, p.sku, p.qty)
    if kind == "move":
        return Move(p.src, p.dst, p.qty)
    return Wait(p.seconds)


# --- replay: the ground-truth basket ----------------------------------------------------------

def replay(actions: tuple[Action, ...], stock: dict[str, list[str]], planogram: Planogram,
           on_error: Any = None) -> dict[str, int]:
    """Apply the actions to `stock` (slot -> SKUs left to right, changed in place) and return
    the basket the customer leaves with. Items are taken from the right end (the front).
    `on_error(index, loc_suffix, message)` raises; by default a ValueError."""
    def fail(i: int, key: tuple, msg: str) -> None:
        if on_error:
            on_error(i, key, msg)
        raise ValueError(f"action {i}: {msg}")

    hands: list[str] = []
    door_open = False
    for i, a in enumerate(actions):
        if isinstance(a, OpenDoor):
            door_open = True
        elif isinstance(a, CloseDoor):
            door_open = False
        elif isinstance(a, (Take, Put, Move)):
            if not door_open:
                fail(i, (), "the door is closed at this point; open_door first")
            for slot_id in ([a.src, a.dst] if isinstance(a, Move) else [a.slot]):
                if not planogram.has_slot(slot_id):
                    fail(i, ("slot",) if not isinstance(a, Move) else
                         (("src",) if slot_id == a.src else ("dst",)),
                         f"no slot '{slot_id}' in the planogram")
            if isinstance(a, (Take, Move)):
                src = a.slot if isinstance(a, Take) else a.src
                if len(stock[src]) < a.qty:
                    fail(i, ("qty",), f"slot {src} holds {len(stock[src])} item(s) at this "
                         f"point; cannot take {a.qty}")
                moved = [stock[src].pop() for _ in range(a.qty)]
                if isinstance(a, Take):
                    hands.extend(moved)
                else:
                    stock[a.dst].extend(moved)
            else:
                for _ in range(a.qty):
                    if a.sku not in hands:
                        fail(i, ("sku",), f"the customer holds no '{a.sku}' at this point")
                    hands.remove(a.sku)
                    stock[a.slot].append(a.sku)
            for slot_id in ([a.dst] if isinstance(a, Move) else
                            [a.slot] if isinstance(a, Put) else []):
                cap = planogram.slot(slot_id).capacity
                if len(stock[slot_id]) > cap:
                    fail(i, (), f"slot {slot_id} would hold {len(stock[slot_id])} items, above "
                         f"its capacity {cap}")
    basket: dict[str, int] = {}
    for sku in hands:
        basket[sku] = basket.get(sku, 0) + 1
    return dict(sorted(basket.items()))


def _with_door(actions: list[Action], locs: list[tuple], outcome: str, base: tuple
               ) -> tuple[tuple[Action, ...], list[tuple]]:
    """Add the implicit open_door/close_door (not for a refused customer), keeping locations."""
    if outcome != "denied":
        if not any(isinstance(a, OpenDoor) for a in actions):
            actions, locs = [OpenDoor()] + actions, [base] + locs
        if not any(isinstance(a, CloseDoor) for a in actions):
            actions, locs = actions + [CloseDoor()], locs + [base]
    return tuple(actions), locs


def check_expectation(doc: Doc, i: int, m: ScenarioModel, truth: dict[str, int],
                      actions: tuple[Action, ...]) -> None:
    loc = ("scenarios", i, "expect")
    want = {k: v for k, v in m.expect.basket.items() if v}
    if want != truth:
        raise doc.error(loc + ("basket",), f"the actions leave the customer with {truth or '{}'}"
                        f"; fix the expected basket or the actions")
    outcome = m.expect.outcome
    if outcome == "denied" and any(isinstance(a, (Take, Put, Move, OpenDoor)) for a in actions):
        raise doc.error(loc + ("outcome",), "a refused customer cannot open the door or touch "
                        "items; remove those actions")
    if outcome == "charged" and not truth:
        raise doc.error(loc + ("outcome",), "nothing is taken, so the outcome is nothing_taken")
    if outcome == "nothing_taken" and truth:
        raise doc.error(loc + ("outcome",), "items are taken, so the outcome is charged")


def scenarios_from_doc(doc: Doc, planogram: Planogram) -> list[Scenario]:
    if not isinstance(doc.data, dict):
        raise doc.error((), "a scenarios file is a mapping with `scenarios:`", with_value=False)
    try:
        f = ScenariosFile.model_validate(doc.data)
    except ValidationError as e:
        raise FormatErrors(pydantic_errors(doc, e)).first from None
    skus = planogram.skus()
    stock = {s.id: [s.sku] * s.stock for s in planogram.slots}
    names: set[str] = set()
    out = []
    for i, m in enumerate(f.scenarios):
        base = ("scenarios", i)
        if m.name in names:
            raise doc.error(base + ("name",), "duplicate scenario name")
        names.add(m.name)
        for sku in m.expect.basket:
            if sku not in skus:
                raise doc.error(base + ("expect", "basket", sku),
                                "SKU not stocked by the planogram", value=sku)
        actions, locs = [], []
        for j, raw in enumerate(m.actions):
            actions.append(_parse_action(doc, base + ("actions", j), raw))
            kind = next(iter(raw)) if isinstance(raw, dict) else None
            locs.append(base + ("actions", j) + ((kind,) if kind else ()))
        for a, loc in zip(actions, locs):
            if isinstance(a, Put) and a.sku not in skus:
                raise doc.error(loc + ("sku",), "SKU not stocked by the planogram")
        full, full_locs = _with_door(actions, locs, m.expect.outcome, base)

        def on_error(k: int, key: tuple, msg: str, _locs=full_locs, _base=base) -> None:
            loc = _locs[k]
            if loc == _base:
                raise doc.error(loc + ("actions",), msg, with_value=False)
            raise doc.error(loc + key, msg)

        truth = replay(full, stock, planogram, on_error)
        check_expectation(doc, i, m, truth, full)
        out.append(Scenario(m.name, m.person, m.photo, full,
                            Expectation(m.expect.outcome, truth), m.fallback_person,
                            m.description))
    return out


def load_scenarios(path: str | Path, planogram: Planogram) -> list[Scenario]:
    """Read scenarios.yaml, replay it on the planogram's initial stock, check each expect:."""
    return scenarios_from_doc(load_yaml(path, "scenarios"), planogram)


def load_accounts(path: str | Path) -> list[Account]:
    """Read accounts.yaml (the demo's customers); unknown keys and duplicate ids refused."""
    doc = load_yaml(path, "accounts")
    if not isinstance(doc.data, dict):
        raise doc.error((), "an accounts file is a mapping with `accounts:`", with_value=False)
    try:
        f = AccountsFile.model_validate(doc.data)
    except ValidationError as e:
        raise FormatErrors(pydantic_errors(doc, e)).first from None
    seen: set[str] = set()
    for i, a in enumerate(f.accounts):
        if a.id in seen:
            raise doc.error(("accounts", i, "id"), "duplicate account id")
        seen.add(a.id)
    return [Account(a.id, a.name, a.person, a.payment_token, a.status, a.fallback_person)
            for a in f.accounts]
