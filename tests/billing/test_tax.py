"""billing/tax.py: one rounding per rate per receipt, exact figures for Japan and Germany, and
properties (hypothesis) over any basket and any currency exponent."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.tax import (ROUNDINGS, RatePeriod, TaxError, TaxRules, allocate, classify,
                         rate_bp, rate_text, reverse_split, split_basket, tax_included)

DAY = dt.date(2026, 11, 29)
JP = TaxRules("JP", "JPY", "floor", {
    "reduced": (RatePeriod(800, dt.date(2019, 10, 1)),),
    "standard": (RatePeriod(800, dt.date(2014, 4, 1), dt.date(2019, 10, 1)),
                 RatePeriod(1000, dt.date(2019, 10, 1))),
    "alcohol": (RatePeriod(1000, dt.date(2019, 10, 1)),)}, registration="T1234567890123")
DE = TaxRules("DE", "EUR", "half_up", {
    "reduced": (RatePeriod(700, dt.date(2007, 1, 1), dt.date(2020, 7, 1)),
                RatePeriod(500, dt.date(2020, 7, 1), dt.date(2021, 1, 1)),
                RatePeriod(700, dt.date(2021, 1, 1))),
    "standard": (RatePeriod(1900, dt.date(2007, 1, 1), dt.date(2020, 7, 1)),
                 RatePeriod(1600, dt.date(2020, 7, 1), dt.date(2021, 1, 1)),
                 RatePeriod(1900, dt.date(2021, 1, 1)))})


def test_a_mixed_basket_in_jpy_rounds_once_per_rate():
    # onigiri 150 x2, tea 130 (8%); beer 248 x2 (10% alcohol), towel 330 (10% standard)
    items = [("onigiri", 300), ("tea", 130), ("beer", 496), ("towel", 330)]
    classes = {"onigiri": "reduced", "tea": "reduced", "beer": "alcohol", "towel": "standard"}
    split = split_basket(classify(JP, classes, items, DAY), JP.rounding)
    assert [(r.bp, r.gross, r.net, r.tax) for r in split.rates] == [
        (800, 430, 399, 31),        # 430 * 8 / 108 = 31.85 -> 31
        (1000, 826, 751, 75)]       # 826 * 10 / 110 = 75.09 -> 75
    # per line it would have been 22+9 = 31 and 45+30 = 75 here, but e.g. 3 x 100 yen lines:
    per_rate = split_basket([("reduced", 800, 100)] * 3, "floor")
    assert per_rate.rates[0].tax == 22                      # 300 * 8/108 = 22.2
    assert sum(tax_included(100, 800, "floor") for _ in range(3)) == 21   # per line: 7 x 3
    assert [x.tax for x in per_rate.lines] == [8, 7, 7]      # shares add up to the rate's 22
    assert [x.tax for x in split.lines] == [22, 9, 45, 30]
    assert split.gross == 1256 and split.tax == 106


def test_germany_seven_and_nineteen_percent_half_up():
    split = split_basket([("reduced", 700, 249), ("standard", 1900, 199),
                          ("standard", 1900, 350)], DE.rounding)
    assert [(r.bp, r.gross, r.net, r.tax) for r in split.rates] == [
        (700, 249, 233, 16),        # 249 * 7/107 = 16.29 -> 16
        (1900, 549, 461, 88)]       # 549 * 19/119 = 87.65 -> 88 (half up)
    assert [r.label for r in split.rates] == ["7%", "19%"]


def test_rates_follow_their_effective_dates():
    assert DE.rate("standard", dt.date(2020, 6, 30)) == 1900
    assert DE.rate("standard", dt.date(2020, 7, 1)) == 1600
    assert DE.rate("standard", dt.date(2021, 1, 1)) == 1900
    assert JP.rate("standard", dt.date(2019, 9, 30)) == 800
    assert JP.rate("standard", dt.date(2019, 10, 1)) == 1000
    with pytest.raises(TaxError, match="no rate in force on 2013-01-01"):
        JP.rate("standard", dt.date(2013, 1, 1))


def test_bad_rules_and_unknown_classes_are_named():
    with pytest.raises(TaxError, match="unknown tax class 'wine'.*alcohol, reduced, standard"):
        JP.rate("wine", DAY)
    with pytest.raises(TaxError, match="'snack' has no tax class"):
        classify(JP, {}, [("snack", 100)], DAY)
    with pytest.raises(TaxError, match="overlaps"):
        TaxRules("X", "EUR", "floor", {"s": (RatePeriod(100, dt.date(2020, 1, 1)),
                                             RatePeriod(200, dt.date(2021, 1, 1)))})
    with pytest.raises(TaxError, match="rounding 'banker'"):
        TaxRules("X", "EUR", "banker", {"s": (RatePeriod(100, dt.date(2020, 1, 1)),)})
    with pytest.raises(TaxError, match="at most two decimals"):
        rate_bp("7.125")
    assert rate_bp("5.5") == 550 and rate_text(550) == "5.5%" and rate_text(1000) == "10%"


def test_no_rules_means_rate_zero_and_no_tax():
    split = split_basket(classify(None, {}, [("a", 100), ("b", 5)], DAY), "floor")
    assert [(r.bp, r.gross, r.tax) for r in split.rates] == [(0, 105, 0)]


def test_allocate_is_exact_and_proportional():
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(-10, [1, 1, 1]) == [-4, -3, -3]
    assert allocate(7, [0, 0]) == [7, 0]
    assert allocate(100, [3, 1]) == [75, 25]


EXPONENTS = {"JPY": 0, "EUR": 2, "KWD": 3}
baskets = st.lists(st.tuples(st.sampled_from([0, 500, 550, 700, 800, 1000, 1900, 2500]),
                             st.integers(0, 10 ** 7)), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(baskets, st.sampled_from(sorted(ROUNDINGS)), st.sampled_from(sorted(EXPONENTS)))
def test_per_rate_totals_add_up_to_what_was_charged(lines, rounding, currency):
    # prices in minor units of any exponent: the same integer arithmetic for JPY, EUR, KWD
    scaled = [(bp, g * 10 ** EXPONENTS[currency] // 100 if currency != "EUR" else g)
              for bp, g in lines]
    split = split_basket([("c", bp, g) for bp, g in scaled], rounding)
    charged = sum(g for _bp, g in scaled)
    assert split.gross == charged
    assert sum(r.net + r.tax for r in split.rates) == charged
    for r in split.rates:
        assert r.tax == tax_included(r.gross, r.bp, rounding)       # once per rate
        members = [x for x in split.lines if x.bp == r.bp]
        assert sum(x.tax for x in members) == r.tax
        assert sum(x.net for x in members) == r.net
        assert all(0 <= x.tax <= x.gross and x.net + x.tax == x.gross for x in members)
        assert abs(r.tax * (10000 + r.bp) - r.gross * r.bp) < 10000 + r.bp   # within 1 unit


@settings(max_examples=300, deadline=None)
@given(baskets, st.sampled_from(sorted(ROUNDINGS)), st.data())
def test_refunds_reverse_tax_exactly(lines, rounding, data):
    split = split_basket([("c", bp, g) for bp, g in lines], rounding)
    remaining = {r.bp: r.gross for r in split.rates}
    taxed = {r.bp: r.tax for r in split.rates}
    # any number of partial refunds, then the rest: each leaves what stays taxed as a sale
    for _ in range(data.draw(st.integers(0, 3))):
        amount = data.draw(st.integers(0, sum(remaining.values())))
        back = reverse_split(remaining, amount, rounding)
        assert sum(r.gross for r in back.values()) == amount
        for bp, r in back.items():
            remaining[bp] -= r.gross
            taxed[bp] -= r.tax
            assert r.net + r.tax == r.gross and remaining[bp] >= 0
            assert taxed[bp] == tax_included(remaining[bp], bp, rounding)
    back = reverse_split(remaining, sum(remaining.values()), rounding)
    for bp, r in back.items():
        taxed[bp] -= r.tax
    assert all(v == 0 for v in taxed.values())     # a full refund takes back every unit of tax
    with pytest.raises(TaxError, match="not between 0"):
        reverse_split({800: 5}, 6, rounding)
