"""The values Billing is given and hands back, and the checks on what it is given.

Results are frozen dataclasses; amounts in them are `Money`. The checks run before any
transaction, so bad input raises a clear error and writes nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from billing.errors import BillingError, InvalidLine
from billing.money import Money, check_amount


@dataclasses.dataclass(frozen=True)
class Line:
    """One basket line as the controller reconciled it; unit_price in minor units."""

    sku: str
    name: str
    qty: int
    unit_price: int


@dataclasses.dataclass(frozen=True)
class Standing:
    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class HoldResult:
    ok: bool
    session_id: str
    reason: str                   # for the kiosk: "" when ok, else why the door stays shut
    amount: Money | None = None
    auth_id: str | None = None
    code: str | None = None       # decline code, "standing", "unavailable", ...


@dataclasses.dataclass(frozen=True)
class RefundResult:
    session_id: str
    amount: Money
    status: str                   # refunded | requested (retried later) | failed
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Retried:
    session_id: str
    what: str                     # settle | hold_cleanup | refund
    result: str                   # the session's outcome, the hold's or the refund's status


def check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not session_id or len(session_id) > 64:
        raise BillingError(f"billing: session id {session_id!r} must be a non-empty string of "
                           f"at most 64 characters")
    return session_id


def check_lines(session_id: str, lines: Sequence[Line]) -> list[Line]:
    checked = []
    for i, line in enumerate(lines):
        where = f"settle {session_id} line {i + 1}"
        if not isinstance(line, Line):
            raise InvalidLine(f"{where}: expected a billing.Line, got {line!r}")
        if not isinstance(line.sku, str) or not line.sku or not isinstance(line.name, str):
            raise InvalidLine(f"{where}: the SKU must be a non-empty string ({line!r})")
        if isinstance(line.qty, bool) or not isinstance(line.qty, int) or line.qty <= 0:
            raise InvalidLine(f"{where} ({line.sku}): quantity {line.qty!r} must be a positive "
                              f"integer (items put back are not lines)")
        check_amount(line.unit_price, f"{where} ({line.sku}) unit price")
        checked.append(line)
    return checked


def check_flags(session_id: str, flags: Iterable[str]) -> list[str]:
    flags = list(flags)
    for flag in flags:
        if not isinstance(flag, str) or not flag:
            raise BillingError(f"settle {session_id}: flag {flag!r} must be a non-empty string")
    return flags


def basket_text(lines: list[Line]) -> str:
    return ", ".join(f"{x.qty} x {x.sku}" for x in lines) or "empty"
