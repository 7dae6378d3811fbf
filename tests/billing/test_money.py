"""Money: integer minor units with a currency; formatting from the currency's exponent."""
from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.money import (CURRENCY_EXPONENTS, InvalidAmount, Money, MoneyError,
                           UnknownCurrency, check_amount, check_currency)

# ISO 4217 minor units of the currencies the cabinet sells in, copied from the standard's table
# (not from billing.money), so a wrong exponent there is caught here.
ISO_4217_MINOR_UNITS = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
    "CZK": 2, "HUF": 2, "RON": 2, "BGN": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0,
    "KRW": 0, "ISK": 0, "KWD": 3, "BHD": 3,
}


def test_the_known_currencies_have_their_iso_4217_exponents():
    assert CURRENCY_EXPONENTS == ISO_4217_MINOR_UNITS
    assert {c: Money(1, c).exponent for c in ISO_4217_MINOR_UNITS} == ISO_4217_MINOR_UNITS


@pytest.mark.parametrize("amount, currency, text", [
    (1250, "EUR", "EUR 12.50"), (5, "EUR", "EUR 0.05"), (0, "USD", "USD 0.00"),
    (-150, "EUR", "EUR -1.50"), (-5, "EUR", "EUR -0.05"), (100, "EUR", "EUR 1.00"),
    (500, "JPY", "JPY 500"), (0, "JPY", "JPY 0"), (-7, "ISK", "ISK -7"),
    (1234, "KWD", "KWD 1.234"), (7, "BHD", "BHD 0.007"), (-1, "KWD", "KWD -0.001"),
    (123456789, "GBP", "GBP 1234567.89"),
])
def test_formats_from_the_currency_exponent(amount, currency, text):
    money = Money(amount, currency)
    assert money.format() == text and str(money) == text
    assert money.decimal_text() == text.split(" ")[1]


@settings(max_examples=100, deadline=None)
@given(st.integers(-10**12, 10**12), st.sampled_from(sorted(ISO_4217_MINOR_UNITS)))
def test_decimal_text_holds_the_exact_amount_with_no_rounding(amount, currency):
    text = Money(amount, currency).decimal_text()
    exponent = ISO_4217_MINOR_UNITS[currency]
    assert Decimal(text) * 10 ** exponent == amount
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert decimals == exponent


@pytest.mark.parametrize("currency", ["eur", "XXX", "", None, "EURO", 978])
def test_unknown_currency_is_refused_with_its_code(currency):
    with pytest.raises(UnknownCurrency, match=f"money: currency {currency!r} is not a known "
                                              f"ISO 4217 code") as caught:
        Money(100, currency)
    assert caught.value.code == currency
    assert "(known: AUD, BGN, BHD, CAD" in str(caught.value)


def test_check_currency_returns_a_known_code_and_names_the_place():
    assert check_currency("JPY") == "JPY"
    with pytest.raises(UnknownCurrency, match="^config billing: currency 'EURO'"):
        check_currency("EURO", "config billing")


@pytest.mark.parametrize("amount", [1.5, 1250.0, "100", True, False, None])
def test_amounts_are_integers_never_floats(amount):
    with pytest.raises(InvalidAmount, match=f"money: {amount!r} is not an integer number of "
                                            f"minor units"):
        Money(amount, "EUR")


def test_check_amount_accepts_zero_and_positive_integers():
    assert check_amount(0) == 0 and check_amount(1) == 1 and check_amount(10**9) == 10**9
    assert check_amount(1, "hold", allow_zero=False) == 1


def test_check_amount_refuses_negatives():
    with pytest.raises(InvalidAmount, match="^refund: -1 must be zero or more minor units$"):
        check_amount(-1, "refund")


def test_check_amount_refuses_zero_only_when_told_to():
    with pytest.raises(InvalidAmount, match="^hold: 0 must be more than zero minor units$"):
        check_amount(0, "hold", allow_zero=False)
    with pytest.raises(InvalidAmount, match="^hold: -3 must be more than zero minor units$"):
        check_amount(-3, "hold", allow_zero=False)


@pytest.mark.parametrize("amount", [2.0, 0.5, "5", True, None])
def test_check_amount_refuses_what_is_not_an_integer(amount):
    with pytest.raises(InvalidAmount, match=f"^price: {amount!r} is not an integer number of "
                                            f"minor units"):
        check_amount(amount, "price")


def test_money_errors_are_value_errors():
    assert issubclass(UnknownCurrency, MoneyError) and issubclass(InvalidAmount, MoneyError)
    assert issubclass(MoneyError, ValueError)


def test_arithmetic_within_one_currency_is_exact():
    assert Money(150, "EUR") + Money(220, "EUR") == Money(370, "EUR")
    assert Money(150, "EUR") - Money(220, "EUR") == Money(-70, "EUR")
    assert Money(500, "JPY") - Money(500, "JPY") == Money(0, "JPY")


@pytest.mark.parametrize("combine", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a < b, lambda a, b: a <= b,
    lambda a, b: a > b, lambda a, b: a >= b,
])
def test_currencies_never_mix(combine):
    with pytest.raises(MoneyError, match=r"cannot combine EUR and USD amounts "
                                         r"\(EUR 0.01 and USD 0.01\)"):
        combine(Money(1, "EUR"), Money(1, "USD"))


@pytest.mark.parametrize("other", [1, 1.0, "EUR 1.00", None])
def test_money_combines_only_with_money(other):
    with pytest.raises(TypeError, match="money: cannot combine EUR 0.01 with"):
        Money(1, "EUR") + other
    with pytest.raises(TypeError, match="money: cannot combine EUR 0.01 with"):
        Money(1, "EUR") - other


def test_comparisons_follow_the_amount():
    low, high = Money(199, "EUR"), Money(200, "EUR")
    assert (low < high, low <= high, low > high, low >= high) == (True, True, False, False)
    assert (high < low, high <= low, high > low, high >= low) == (False, False, True, True)
    assert (low < low, low <= low, low > low, low >= low) == (False, True, False, True)
    assert sorted([high, low, Money(-1, "EUR")]) == [Money(-1, "EUR"), low, high]


def test_equality_needs_the_same_amount_and_currency():
    assert Money(100, "EUR") == Money(100, "EUR")
    assert Money(100, "EUR") != Money(100, "USD")
    assert Money(100, "EUR") != Money(101, "EUR")
    assert hash(Money(100, "EUR")) == hash(Money(100, "EUR"))


def test_money_is_immutable():
    money = Money(100, "EUR")
    with pytest.raises(dataclasses.FrozenInstanceError):
        money.amount = 1  # type: ignore[misc]
