"""Age-restricted goods: what the door, the compartments and the settlement may do for a customer,
as pure functions of the catalog, the planogram and the account's age verification.

The verification comes from billing (`Billing.age_verification(account_id)`: (when, by whom,
how) or None); an operator records it from an ID check (`cabinet accounts verify-age`), a
customer never declares it. The controller (cabinet/controller.py) asks:

  - at the door, `door_plan(planogram, catalog, verification)`: which lock channels to release
    (the main door 0, and each compartment's channel only for a verified adult) and the notice
    to show an unverified customer when restricted goods share the main door;
  - after reconcile, `restricted_lines(basket, catalog, verification)`: which lines may be sold
    and which restricted ones are withheld; an unverified customer who took a restricted item
    gets the session flagged for review (`FLAG`) and an alarm, and the item is not sold
    silently (it is left out of the charge until an operator reviews it).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

FLAG = "age_restricted_unverified"
NOTICE = ("Age-restricted items (e.g. alcohol) need an age check by staff first; please do not "
          "take them: they would be held for review")


def is_verified(verification: Any) -> bool:
    """An operator's ID check is on record: (when, by, method) with all three set."""
    if verification is None:
        return False
    try:
        if not isinstance(verification, (tuple, list)):
            raise TypeError
        at, by, method = verification
    except (TypeError, ValueError):
        raise TypeError(f"age verification: expected (when, by, method) from "
                        f"Billing.age_verification or None, got {verification!r}") from None
    return bool(at and by and method)


@dataclasses.dataclass(frozen=True)
class DoorPlan:
    channels: tuple[int, ...]          # lock channels to release (0: the main door)
    withheld: tuple[str, ...]          # compartments left locked (ids)
    notice: str | None                 # to show at the door, None: nothing to say


def door_plan(planogram: Any, catalog: Mapping[str, Any], verification: Any) -> DoorPlan:
    adult = is_verified(verification)
    channels, withheld = [0], []
    for c in planogram.compartments:
        if c.age_restricted and not adult:
            withheld.append(c.id)
        else:
            channels.append(c.lock_channel)
    behind = {shelf for c in planogram.compartments for shelf in c.shelves}
    shared = any(catalog[s.sku].age_restricted for s in planogram.slots
                 if s.shelf not in behind and s.sku in catalog)
    return DoorPlan(tuple(channels), tuple(withheld), NOTICE if shared and not adult else None)


@dataclasses.dataclass(frozen=True)
class AgeDecision:
    sell: dict[str, int]               # sku -> qty to charge
    withheld: dict[str, int]           # restricted sku -> qty NOT charged, held for review
    flags: tuple[str, ...]             # add to the session's flags
    alarm: str | None                  # the alarm's detail, None: no alarm

    @property
    def ok(self) -> bool:
        return not self.withheld


def restricted_lines(basket: Mapping[str, int], catalog: Mapping[str, Any],
                     verification: Any) -> AgeDecision:
    """Split a reconciled basket (sku -> qty taken) by the customer's age verification."""
    adult = is_verified(verification)
    sell, withheld = {}, {}
    for sku, qty in basket.items():
        if qty <= 0:
            continue
        product = catalog.get(sku) if hasattr(catalog, "get") else catalog[sku]
        if product is None:
            raise KeyError(f"age check: SKU {sku!r} of the basket is not in the catalog")
        if product.age_restricted and not adult:
            withheld[sku] = qty
        else:
            sell[sku] = qty
    if not withheld:
        return AgeDecision(sell, {}, (), None)
    items = ", ".join(f"{q} x {s}" for s, q in sorted(withheld.items()))
    return AgeDecision(sell, withheld, (FLAG,),
                       f"unverified customer took age-restricted goods ({items}); not "
                       f"charged, review the session")
