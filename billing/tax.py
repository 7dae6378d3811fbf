"""Tax: classes, rates by jurisdiction with effective dates, tax-inclusive prices split into net
and tax. Pure: no database, no clock, no I/O.

Shelf prices are tax-inclusive (what the customer sees). A receipt's lines are grouped by rate
(not by class: in Japan "alcohol" and "standard" are both 10%), and the tax of each group is
computed ONCE from the group's gross total and rounded by the jurisdiction's rule:

    tax = gross * rate / (100 + rate), rounded to whole minor units

Japan's qualified-invoice rules (適格請求書) ask for exactly this: one rounding per rate per
invoice; the seller picks floor, round or ceiling and keeps to it (`rounding: floor` is the
usual choice and the demo's). Germany (UStG §14) shows the tax per rate on the invoice; the
usual commercial rounding is half up (`rounding: half_up`). Each line's share of its group's
tax is then allocated in proportion to the line's gross (largest remainder, ties to the earlier
line), so the lines' taxes add up to the group's tax exactly and the ledger can store net and
tax per line in integer minor units.

Amounts are integers in minor units; the currency's exponent does not enter the arithmetic
(JPY 0, EUR 2, KWD 3 all round to one minor unit). Rates are percentages with at most two
decimals, stored as basis points (19% -> 1900, 5.5% -> 550).

Refunds and corrections reverse tax exactly: what a session has left per rate is split again
with the same rule, and the reversal is the difference (`reverse_split`), so a full refund
takes back every minor unit of tax and a partial one leaves the remainder taxed as if it had
been the sale.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Iterable, Mapping, Sequence

from billing.money import check_currency

ROUNDINGS = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN,
             "ceil": ROUND_CEILING}
UNTAXED = 0     # rate of lines sold with no tax configured


class TaxError(ValueError):
    """Bad tax rules or a product whose tax class the rules do not know."""


def rate_bp(percent: Decimal | str | int) -> int:
    """Basis points of a percentage: '19' -> 1900, '5.5' -> 550; more decimals refused."""
    value = Decimal(str(percent))
    bp = value * 100
    if value < 0 or value >= 100 or bp != bp.to_integral_value():
        raise TaxError(f"tax rate {percent!r}: expected a percentage from 0 to below 100 with "
                       f"at most two decimals (e.g. 19, 7, 5.5)")
    return int(bp)


def rate_text(bp: int) -> str:
    """'19%' for 1900, '5.5%' for 550."""
    value = Decimal(bp) / 100
    return f"{value.normalize():f}%"


def tax_included(gross: int, bp: int, rounding: str) -> int:
    """The tax inside a tax-inclusive `gross` (minor units) at `bp` basis points."""
    if rounding not in ROUNDINGS:
        raise TaxError(f"tax rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
    if bp == 0 or gross == 0:
        return 0
    exact = Decimal(gross) * bp / (10000 + bp)
    return int(exact.to_integral_value(rounding=ROUNDINGS[rounding]))


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split `amount` in proportion to non-negative `weights` (largest remainder, ties to the
    earlier index); the parts add up to `amount` exactly. All-zero weights: all to the first."""
    if not weights:
        if amount:
            raise TaxError(f"allocate: {amount} to share among nothing")
        return []
    total = sum(weights)
    if total == 0:
        return [amount] + [0] * (len(weights) - 1)
    sign = -1 if amount < 0 else 1
    whole = abs(amount)
    parts = [whole * w // total for w in weights]
    rest = whole - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-(whole * weights[i] % total), i))
    for i in order[:rest]:
        parts[i] += 1
    return [sign * p for p in parts]


@dataclasses.dataclass(frozen=True)
class RatePeriod:
    """A rate in force from `start` (inclusive) until `end` (exclusive; None: still)."""

    bp: int
    start: dt.date
    end: dt.date | None = None

    def covers(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


@dataclasses.dataclass(frozen=True)
class TaxRules:
    """One jurisdiction: its currency, rounding rule, the seller's registration number and, per
    tax class, the rates over time."""

    jurisdiction: str
    currency: str
    rounding: str
    classes: Mapping[str, tuple[RatePeriod, ...]]
    registration: str | None = None

    def __post_init__(self) -> None:
        where = f"tax rules {self.jurisdiction!r}"
        check_currency(self.currency, where)
        if self.rounding not in ROUNDINGS:
            raise TaxError(f"{where}: rounding {self.rounding!r} must be one of "
                           f"{', '.join(ROUNDINGS)}")
        if not self.classes:
            raise TaxError(f"{where}: no tax classes; give at least one (e.g. standard)")
        for name, periods in self.classes.items():
            if not periods:
                raise TaxError(f"{where}: class {name!r} has no rates")
            ordered = sorted(periods, key=lambda p: p.start)
            for a, b in zip(ordered, ordered[1:]):
                if a.end is None or a.end > b.start:
                    raise TaxError(f"{where}: class {name!r}: the rate from {a.start} overlaps "
                                   f"the one from {b.start}; end the first one (until:) on or "
                                   f"before {b.start}")

    def rate(self, tax_class: str, day: dt.date) -> int:
        """Basis points of `tax_class` on `day`."""
        periods = self.classes.get(tax_class)
        if periods is None:
            raise TaxError(f"tax rules {self.jurisdiction!r}: unknown tax class {tax_class!r} "
                           f"(known: {', '.join(sorted(self.classes))}); give the product one "
                           f"of these in the catalog")
        for period in periods:
            if period.covers(day):
                return period.bp
        raise TaxError(f"tax rules {self.jurisdiction!r}: class {tax_class!r} has no rate in "
                       f"force on {day}; add one to the configuration's tax section")


@dataclasses.dataclass(frozen=True)
class TaxLine:
    tax_class: str | None
    bp: int
    gross: int
    net: int
    tax: int


@dataclasses.dataclass(frozen=True)
class RateTotal:
    bp: int
    gross: int
    net: int
    tax: int

    @property
    def label(self) -> str:
        return rate_text(self.bp)


@dataclasses.dataclass(frozen=True)
class TaxSplit:
    """A basket split by rate: its lines (same order as given) and one total per rate."""

    lines: tuple[TaxLine, ...]
    rates: tuple[RateTotal, ...]          # ascending by rate

    @property
    def gross(self) -> int:
        return sum(r.gross for r in self.rates)

    @property
    def tax(self) -> int:
        return sum(r.tax for r in self.rates)


def split_rates(grosses: Mapping[int, int], rounding: str) -> dict[int, RateTotal]:
    """Per-rate totals of gross amounts by rate: the tax rounded once per rate."""
    out = {}
    for bp, gross in sorted(grosses.items()):
        tax = tax_included(gross, bp, rounding)
        out[bp] = RateTotal(bp, gross, gross - tax, tax)
    return out


def split_basket(lines: Iterable[tuple[str | None, int, int]], rounding: str) -> TaxSplit:
    """Split (tax class, basis points, gross) lines: once per rate, then shared by line."""
    lines = list(lines)
    for i, (_cls, bp, gross) in enumerate(lines):
        if isinstance(gross, bool) or not isinstance(gross, int) or gross < 0:
            raise TaxError(f"tax line {i + 1}: gross {gross!r} must be a non-negative integer "
                           f"of minor units")
        if isinstance(bp, bool) or not isinstance(bp, int) or not 0 <= bp < 10000:
            raise TaxError(f"tax line {i + 1}: rate {bp!r} must be basis points 0..9999")
    grosses: dict[int, int] = {}
    for _cls, bp, gross in lines:
        grosses[bp] = grosses.get(bp, 0) + gross
    rates = split_rates(grosses, rounding)
    taxes: list[int] = [0] * len(lines)
    for bp, total in rates.items():
        idx = [i for i, line in enumerate(lines) if line[1] == bp]
        for i, share in zip(idx, allocate(total.tax, [lines[i][2] for i in idx])):
            taxes[i] = share
    out = tuple(TaxLine(c, bp, g, g - t, t) for (c, bp, g), t in zip(lines, taxes))
    return TaxSplit(out, tuple(rates.values()))


def classify(rules: TaxRules | None, class_of: Mapping[str, str], items: Iterable[tuple[str, int]],
             day: dt.date) -> list[tuple[str | None, int, int]]:
    """(sku, gross) items -> (class, basis points, gross) for `split_basket`; no rules: the
    untaxed rate 0 for everything."""
    out = []
    for sku, gross in items:
        if rules is None:
            out.append((None, UNTAXED, gross))
            continue
        cls = class_of.get(sku)
        if cls is None:
            raise TaxError(f"tax: product {sku!r} has no tax class; give it one in the "
                           f"catalog (tax_class: one of {', '.join(sorted(rules.classes))})")
        out.append((cls, rules.rate(cls, day), gross))
    return out


def reverse_split(remaining: Mapping[int, int], amount: int, rounding: str) -> dict[int, RateTotal]:
    """Take `amount` back from what is left per rate (gross by basis points), in proportion to
    it; returns per rate the gross, net and tax taken back (positive numbers). The tax taken
    back is the tax of what was left minus the tax of what stays, so the sum of everything
    recorded for a rate is always the rate's rounded tax of its remaining gross."""
    left = sum(remaining.values())
    if amount < 0 or amount > left:
        raise TaxError(f"tax reversal: {amount} is not between 0 and the {left} left to reverse")
    rates = sorted(remaining)
    parts = allocate(amount, [remaining[bp] for bp in rates])
    out = {}
    for bp, part in zip(rates, parts):
        before = tax_included(remaining[bp], bp, rounding)
        after = tax_included(remaining[bp] - part, bp, rounding)
        out[bp] = RateTotal(bp, part, part - (before - after), before - after)
    return out


@dataclasses.dataclass(frozen=True)
class TaxSetup:
    """What Billing needs to tax a basket: the rules in force and each product's tax class."""

    rules: TaxRules
    class_of: Mapping[str, str]

    @property
    def rounding(self) -> str:
        return self.rules.rounding
