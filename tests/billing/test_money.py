"""Money: integer minor units with a currency; formatting from the currency's exponent."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.money import (CURRENCY_EXPONENTS, InvalidAmount, Money, MoneyError,
                           UnknownCurrency, check_amount)


@pytest.mark.parametrize("amount, currency, text", [
    (1250, "EUR", "EUR 12.50"), (5, "EUR", "EUR 0.05"), (0, "USD", "USD 0.00"),
    (-150, "EUR", "EUR -1.50"), (500, "JPY", "JPY 500"), (1234, "KWD", "KWD 1.234"),
])
def test_formats_from_the_currency_exponent(amount, currency, text):
    assert Money(amount, currency).format() == text == str(Money(amount, currency))


@pytest.mark.parametrize("currency", ["eur", "XXX", "", None, "EURO"])
def test_unknown_currency_is_refused_with_its_code(currency):
    with pytest.raises(UnknownCurrency, match="not a known ISO 4217 code"):
        Money(100, currency)


@pytest.mark.parametrize("amount", [1.5, "100", True, None])
def test_amounts_are_integers_never_floats(amount):
    with pytest.raises(InvalidAmount, match="minor units"):
        Money(amount, "EUR")


def test_check_amount_refuses_negative_and_optionally_zero():
    assert check_amount(0) == 0
    with pytest.raises(InvalidAmount, match="zero or more"):
        check_amount(-1, "refund")
    with pytest.raises(InvalidAmount, match="more than zero"):
        check_amount(0, "hold", allow_zero=False)


def test_arithmetic_only_within_one_currency():
    assert Money(150, "EUR") + Money(220, "EUR") == Money(370, "EUR")
    assert Money(150, "EUR") - Money(220, "EUR") == Money(-70, "EUR")
    with pytest.raises(MoneyError, match="cannot combine EUR and USD"):
        Money(1, "EUR") + Money(1, "USD")


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**12, 10**12), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_decimal_text_holds_the_exact_amount(amount, currency):
    text = Money(amount, currency).decimal_text()
    assert int(text.replace(".", "")) == amount
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert decimals == CURRENCY_EXPONENTS[currency]
