"""Money, exactly: every message, bound and digit, so a mutant of billing/money.py cannot hide.

test_money.py states the rules; these pin the exact results (the text of each error, the
minor-unit arithmetic, the padding of decimals) that `make mutation` checks are load-bearing.
"""
from __future__ import annotations

import pytest

from billing.money import (CURRENCY_EXPONENTS, InvalidAmount, Money, MoneyError,
                           UnknownCurrency, check_amount, check_currency)

KNOWN = ("AUD, BGN, BHD, CAD, CHF, CZK, DKK, EUR, GBP, HUF, ISK, JPY, KRW, KWD, NOK, NZD, PLN, "
         "RON, SEK, USD")


def test_the_exponents_are_iso_4217():
    assert CURRENCY_EXPONENTS == {
        "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
        "CZK": 2, "HUF": 2, "RON": 2, "BGN": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0,
        "KRW": 0, "ISK": 0, "KWD": 3, "BHD": 3}


def test_unknown_currency_names_the_place_the_code_and_the_known_codes():
    with pytest.raises(UnknownCurrency) as e:
        check_currency("EURO", "config billing.currency")
    assert str(e.value) == ("config billing.currency: currency 'EURO' is not a known ISO 4217 "
                            f"code (known: {KNOWN})")
    assert e.value.code == "EURO"
    assert isinstance(e.value, MoneyError) and isinstance(e.value, ValueError)


def test_unknown_currency_default_place_is_money():
    with pytest.raises(UnknownCurrency) as e:
        Money(1, "XXX")
    assert str(e.value).startswith("money: currency 'XXX' is not")
    with pytest.raises(UnknownCurrency) as e:
        check_currency(7)
    assert str(e.value).startswith("money: currency 7 is not")
    assert e.value.code == 7


def test_check_currency_returns_the_code():
    assert check_currency("JPY") == "JPY"
    assert check_currency("BHD", "anywhere") == "BHD"


def test_check_amount_returns_the_amount_and_takes_bounds_exactly():
    assert check_amount(0) == 0
    assert check_amount(1, allow_zero=False) == 1
    assert check_amount(10**15) == 10**15


def test_check_amount_messages_name_the_place_and_the_bound():
    with pytest.raises(InvalidAmount) as e:
        check_amount(-1, "refund s-1")
    assert str(e.value) == "refund s-1: -1 must be zero or more minor units"
    with pytest.raises(InvalidAmount) as e:
        check_amount(-1, "hold", allow_zero=False)
    assert str(e.value) == "hold: -1 must be more than zero minor units"
    with pytest.raises(InvalidAmount) as e:
        check_amount(0, "hold", allow_zero=False)
    assert str(e.value) == "hold: 0 must be more than zero minor units"
    with pytest.raises(InvalidAmount) as e:
        check_amount(-5)
    assert str(e.value) == "amount: -5 must be zero or more minor units"


@pytest.mark.parametrize("bad", [1.0, True, False, "3", None])
def test_check_amount_refuses_non_integers_with_the_reason(bad):
    with pytest.raises(InvalidAmount) as e:
        check_amount(bad, "line 3")
    assert str(e.value) == (f"line 3: {bad!r} is not an integer number of minor units (cents); "
                            "amounts are never floats")


def test_check_amount_default_place_is_amount():
    with pytest.raises(InvalidAmount) as e:
        check_amount(2.5)
    assert str(e.value).startswith("amount: 2.5 is not an integer")


@pytest.mark.parametrize("bad", [2.0, False, "12"])
def test_money_refuses_non_integer_amounts_with_the_value(bad):
    with pytest.raises(InvalidAmount) as e:
        Money(bad, "EUR")
    assert str(e.value) == f"money: {bad!r} is not an integer number of minor units"


def test_money_may_be_negative_and_zero():
    assert Money(-1, "EUR").amount == -1
    assert Money(0, "JPY").amount == 0


def test_exponent_comes_from_the_currency():
    assert [Money(1, c).exponent for c in ("EUR", "JPY", "KWD")] == [2, 0, 3]


def test_addition_and_subtraction_in_minor_units():
    assert Money(150, "EUR") + Money(220, "EUR") == Money(370, "EUR")
    assert Money(150, "EUR") - Money(220, "EUR") == Money(-70, "EUR")
    assert Money(5, "JPY") - Money(5, "JPY") == Money(0, "JPY")
    assert (Money(7, "KWD") + Money(3, "KWD")).currency == "KWD"
    assert (Money(7, "KWD") - Money(3, "KWD")).currency == "KWD"


def test_combining_currencies_names_both():
    with pytest.raises(MoneyError) as e:
        Money(100, "EUR") - Money(5, "USD")
    assert str(e.value) == ("money: cannot combine EUR and USD amounts (EUR 1.00 and USD 0.05)")
    assert type(e.value) is MoneyError


def test_combining_with_a_non_money_is_a_type_error():
    with pytest.raises(TypeError) as e:
        Money(100, "EUR") + 5
    assert str(e.value) == "money: cannot combine EUR 1.00 with 5"


@pytest.mark.parametrize("amount, currency, text", [
    (1250, "EUR", "12.50"), (5, "EUR", "0.05"), (-5, "EUR", "-0.05"), (100, "EUR", "1.00"),
    (0, "EUR", "0.00"), (-1, "JPY", "-1"), (500, "JPY", "500"), (0, "JPY", "0"),
    (1, "KWD", "0.001"), (-1234, "BHD", "-1.234"), (1000, "KWD", "1.000"),
    (99, "USD", "0.99"),
])
def test_decimal_text_exactly(amount, currency, text):
    assert Money(amount, currency).decimal_text() == text
    assert Money(amount, currency).format() == f"{currency} {text}"
    assert str(Money(amount, currency)) == f"{currency} {text}"


def test_money_of_one_currency_orders_by_amount():
    assert Money(1, "EUR") < Money(2, "EUR")
    assert sorted([Money(3, "USD"), Money(-1, "USD"), Money(0, "USD")]) == [
        Money(-1, "USD"), Money(0, "USD"), Money(3, "USD")]


def test_unknown_currency_built_directly_says_money():
    assert str(UnknownCurrency("ZZZ")).startswith("money: currency 'ZZZ' is not a known")
