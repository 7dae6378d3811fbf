"""Money: integer minor units with an ISO 4217 currency, and nothing else.

Amounts never travel as floats. `Money(1250, "EUR")` is twelve euros fifty; the number of
decimals comes from the currency's exponent (JPY has none, so `Money(500, "JPY")` is 500 yen).
Only the currencies in `CURRENCY_EXPONENTS` are known; anything else is refused at the edge
with a message naming the code, so a typo in a config or a request never reaches the ledger.
"""
from __future__ import annotations

import dataclasses

# ISO 4217 minor-unit exponents of the currencies this cabinet may sell in.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
    "CZK": 2, "HUF": 2, "RON": 2, "BGN": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0,
    "KRW": 0, "ISK": 0, "KWD": 3, "BHD": 3,
}


class MoneyError(ValueError):
    """A bad amount or currency; raised before anything is written."""


class UnknownCurrency(MoneyError):
    def __init__(self, code: object, where: str = "money"):
        known = ", ".join(sorted(CURRENCY_EXPONENTS))
        super().__init__(f"{where}: currency {code!r} is not a known ISO 4217 code "
                         f"(known: {known})")
        self.code = code


class InvalidAmount(MoneyError):
    pass


def check_currency(code: object, where: str = "money") -> str:
    """Return `code` if it is a known currency, else raise UnknownCurrency."""
    if not isinstance(code, str) or code not in CURRENCY_EXPONENTS:
        raise UnknownCurrency(code, where)
    return code


def check_amount(amount: object, where: str = "amount", *, allow_zero: bool = True) -> int:
    """Return `amount` if it is a non-negative int (bools and floats refused)."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(f"{where}: {amount!r} is not an integer number of minor units "
                            f"(cents); amounts are never floats")
    if amount < 0 or (amount == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise InvalidAmount(f"{where}: {amount} must be {bound} minor units")
    return amount


@dataclasses.dataclass(frozen=True)
class Money:
    """An amount in minor units with its currency. May be negative (a balance).

    Sums, differences and comparisons refuse to mix currencies (EUR 1.00 is not less than
    JPY 500, it is not comparable with it); equality is plain: EUR 1.00 != USD 1.00.
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise InvalidAmount(f"money: {self.amount!r} is not an integer number of minor "
                                f"units")
        check_currency(self.currency)

    @property
    def exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"money: cannot combine {self} with {other!r}")
        if other.currency != self.currency:
            raise MoneyError(f"money: cannot combine {self.currency} and {other.currency} "
                             f"amounts ({self} and {other})")

    def decimal_text(self) -> str:
        """'12.50' for Money(1250, 'EUR'); '-0.05' for Money(-5, 'EUR'); '500' for JPY."""
        sign = "-" if self.amount < 0 else ""
        units, minor = divmod(abs(self.amount), 10 ** self.exponent)
        if self.exponent == 0:
            return f"{sign}{units}"
        return f"{sign}{units}.{minor:0{self.exponent}d}"

    def format(self) -> str:
        """'EUR 12.50': the code first, so receipts read the same in every currency."""
        return f"{self.currency} {self.decimal_text()}"

    def __str__(self) -> str:
        return self.format()
