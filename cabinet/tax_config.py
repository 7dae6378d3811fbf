"""The configuration's `tax:` section: the cabinet's jurisdiction, its rates by tax class over
time, the rounding rule, the seller's registration number and the customers' locale.

    tax:
      jurisdiction: DE
      currency: EUR
      rounding: half_up            # floor | half_up | half_even | ceil (billing/tax.py)
      registration: DE123456789    # printed on every receipt
      locale: de_DE                # money on receipts and reports (Babel)
      classes:
        dairy:      [{rate: 7, since: 2007-01-01}]
        soft_drink: [{rate: 19, since: 2007-01-01}]
        alcohol:    [{rate: 19, since: 2007-01-01}]

A rate holds from `since` (inclusive) to `until` (exclusive; none: still in force). Every
product of the catalog needs a class the section knows (`tax_setup` checks, naming the SKU).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from billing.money import CURRENCY_EXPONENTS
from billing.receipt import check_locale
from billing.tax import RatePeriod, TaxError, TaxRules, TaxSetup, rate_bp

CLASS_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RateConfig(_Section):
    rate: Any = Field(description="Percent, at most two decimals (19, 7, 5.5)")
    since: dt.date = Field(description="First day the rate is in force (YYYY-MM-DD)")
    until: dt.date | None = Field(default=None, description="First day it no longer is")

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError("a rate is a percentage such as 19, 7 or 5.5")
        try:
            rate_bp(str(v))
        except (TaxError, ArithmeticError, ValueError) as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _order(self) -> RateConfig:
        if self.until is not None and self.until <= self.since:
            raise ValueError(f"until ({self.until}) must be after since ({self.since})")
        return self


class TaxConfig(_Section):
    jurisdiction: str = Field(min_length=2, max_length=16, description="e.g. DE, JP")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="Must equal the catalog's")
    rounding: Literal["floor", "half_up", "half_even", "ceil"] = Field(
        description="Tax rounding, once per rate per receipt (JP: floor; DE: half_up)")
    registration: str | None = Field(default=None, max_length=64,
                                     description="Seller's tax registration number")
    locale: str = Field(default="en", description="Customers' language for money (Babel)")
    classes: dict[str, list[RateConfig]] = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in CURRENCY_EXPONENTS:
            raise ValueError(f"{v} is not a currency this cabinet knows "
                             f"({', '.join(sorted(CURRENCY_EXPONENTS))})")
        return v

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        check_locale(v, "tax.locale")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: dict[str, list[RateConfig]]) -> dict[str, list[RateConfig]]:
        import re
        for name, rates in v.items():
            if not re.match(CLASS_PATTERN, name):
                raise ValueError(f"class {name!r}: lower case letters, digits and _")
            if not rates:
                raise ValueError(f"class {name!r} has no rates")
        return v

    @model_validator(mode="after")
    def _rules_hold(self) -> TaxConfig:
        try:
            self.rules()
        except TaxError as e:
            raise ValueError(str(e)) from None
        return self

    def rules(self) -> TaxRules:
        return TaxRules(
            jurisdiction=self.jurisdiction, currency=self.currency, rounding=self.rounding,
            registration=self.registration,
            classes={name: tuple(RatePeriod(rate_bp(str(r.rate)), r.since, r.until)
                                 for r in rates) for name, rates in self.classes.items()})


def tax_setup(tax: TaxConfig | None, catalog: Any, where: str = "tax") -> TaxSetup | None:
    """Billing's TaxSetup for `catalog` (cabinet.catalog.Catalog), or None without a section.
    Refuses a currency other than the catalog's and a product without a known class."""
    if tax is None:
        return None
    if tax.currency != catalog.currency:
        raise TaxError(f"{where}: currency {tax.currency} differs from the catalog's "
                       f"{catalog.currency}; one cabinet sells in one currency")
    class_of = {}
    for sku, product in catalog.items():
        cls = getattr(product, "tax_class", None)
        if cls is None or cls not in tax.classes:
            line = catalog.line_of(sku) if hasattr(catalog, "line_of") else None
            at = f" (catalog line {line})" if line else ""
            raise TaxError(f"{where}: product {sku!r}{at} has tax_class {cls!r}, which the tax "
                           f"section does not know (known: {', '.join(sorted(tax.classes))}); "
                           f"give it one of these")
        class_of[sku] = cls
    return TaxSetup(tax.rules(), class_of)
