"""The configuration's tax section (cabinet/tax_config.py) and the fixtures' two variants."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.tax import TaxError
from cabinet.catalog import load_catalog
from cabinet.config import load_config
from cabinet.errors import ConfigError
from cabinet.tax_config import TaxConfig, tax_setup

FIX = Path(__file__).resolve().parents[2] / "fixtures"
DAY = dt.date(2026, 11, 29)


def test_the_demo_sells_in_eur_with_german_rates():
    setup = tax_setup(load_config(FIX / "cabinet.yaml").tax, load_catalog(FIX / "catalog.yaml"))
    assert (setup.rules.jurisdiction, setup.rules.currency, setup.rules.rounding) == (
        "DE", "EUR", "half_up")
    assert setup.rules.rate(setup.class_of["milk-1l"], DAY) == 700
    assert setup.rules.rate(setup.class_of["cola-330"], DAY) == 1900
    assert setup.rules.rate(setup.class_of["lager-330"], DAY) == 1900
    assert setup.rules.rate("dairy", dt.date(2020, 8, 1)) == 500   # the 2020 cut


def test_the_japanese_variant_has_eight_and_ten_percent():
    cfg = load_config(FIX / "cabinet-jp.yaml")
    setup = tax_setup(cfg.tax, load_catalog(FIX / "catalog-jp.yaml"))
    assert (setup.rules.currency, setup.rules.rounding, setup.rules.registration) == (
        "JPY", "floor", "T1234567890123")
    assert setup.rules.rate(setup.class_of["milk-1l"], DAY) == 800
    assert setup.rules.rate(setup.class_of["cola-330"], DAY) == 800
    assert setup.rules.rate(setup.class_of["lager-330"], DAY) == 1000
    assert cfg.tax.locale == "ja_JP"


def test_a_catalog_in_another_currency_or_an_unknown_class_is_named():
    jp = load_config(FIX / "cabinet-jp.yaml").tax
    with pytest.raises(TaxError, match="currency JPY differs from the catalog's EUR"):
        tax_setup(jp, load_catalog(FIX / "catalog.yaml"))
    de = load_config(FIX / "cabinet.yaml").tax
    narrow = de.model_copy(update={"classes": {"dairy": de.classes["dairy"]}})
    with pytest.raises(TaxError, match=r"product 'cola-330' \(catalog line \d+\) has tax_class "
                                       r"'soft_drink', which the tax section does not know"):
        tax_setup(narrow, load_catalog(FIX / "catalog.yaml"))
    assert tax_setup(None, load_catalog(FIX / "catalog.yaml")) is None


def _section(**over):
    base = {"jurisdiction": "DE", "currency": "EUR", "rounding": "half_up",
            "classes": {"std": [{"rate": 19, "since": dt.date(2021, 1, 1)}]}}
    base.update(over)
    return base


@pytest.mark.parametrize("over, message", [
    ({"rounding": "nearest"}, "rounding"),
    ({"currency": "XYZ"}, "XYZ is not a currency"),
    ({"locale": "xx_YY"}, "not a locale Babel knows"),
    ({"classes": {"std": [{"rate": "7.125", "since": dt.date(2021, 1, 1)}]}},
     "at most two decimals"),
    ({"classes": {"std": [{"rate": 7, "since": dt.date(2021, 1, 1)},
                          {"rate": 19, "since": dt.date(2022, 1, 1)}]}}, "overlaps"),
    ({"classes": {"std": [{"rate": 7, "since": dt.date(2021, 1, 1),
                           "until": dt.date(2020, 1, 1)}]}}, "must be after since"),
])
def test_bad_tax_sections_say_what_is_wrong(over, message):
    with pytest.raises(ValidationError, match=message):
        TaxConfig.model_validate(_section(**over))


def test_a_bad_tax_section_in_a_file_names_its_line(tmp_path):
    text = (FIX / "cabinet.yaml").read_text().replace("rounding: half_up", "rounding: up")
    (tmp_path / "cabinet.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"cabinet.yaml:\d+: tax.rounding"):
        load_config(tmp_path / "cabinet.yaml")
