"""cabinet/age.py and the planogram's compartments: a restricted compartment opens only for a
verified adult; an unverified customer who takes the lager is flagged, alarmed, not charged."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from cabinet.age import FLAG, NOTICE, door_plan, is_verified, restricted_lines
from cabinet.catalog import load_catalog
from cabinet.errors import FormatError
from cabinet.planogram import load_planogram, planogram_from_doc
from cabinet.yamlsrc import parse_yaml

FIX = Path(__file__).resolve().parents[2] / "fixtures"
VERIFIED = (dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc), "op-anna", "id_card")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(FIX / "catalog.yaml")


def _planogram(catalog, compartments, tmp_path):
    data = yaml.safe_load((FIX / "planogram.yaml").read_text())
    data["compartments"] = compartments
    path = tmp_path / "planogram.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_planogram(path, catalog)


def test_the_lager_is_withheld_flagged_and_alarmed_for_an_unverified_customer(catalog):
    decision = restricted_lines({"lager-330": 1, "cola-330": 2}, catalog, None)
    assert decision.sell == {"cola-330": 2}
    assert decision.withheld == {"lager-330": 1}
    assert decision.flags == (FLAG,) and not decision.ok
    assert "1 x lager-330" in decision.alarm and "not charged" in decision.alarm


def test_a_verified_adult_is_sold_the_lager(catalog):
    decision = restricted_lines({"lager-330": 1, "cola-330": 2}, catalog, VERIFIED)
    assert decision.sell == {"lager-330": 1, "cola-330": 2}
    assert decision.withheld == {} and decision.flags == () and decision.alarm is None


def test_an_incomplete_verification_is_not_one():
    assert is_verified(VERIFIED)
    assert not is_verified(None)
    assert not is_verified((VERIFIED[0], "", "id_card"))
    with pytest.raises(TypeError, match="expected \\(when, by, method\\)"):
        is_verified("yes")


def test_a_restricted_compartment_opens_only_for_a_verified_adult(catalog, tmp_path):
    planogram = _planogram(catalog, [{"id": "bar", "lock_channel": 1, "shelves": ["middle"]}],
                           tmp_path)
    slot = planogram.slot("B4")
    assert planogram.compartment_of("B4").lock_channel == 1 and slot.sku == "lager-330"
    assert planogram.compartment_of("A1") is None
    adult, minor = door_plan(planogram, catalog, VERIFIED), door_plan(planogram, catalog, None)
    assert adult.channels == (0, 1) and adult.notice is None
    assert minor.channels == (0,) and minor.withheld == ("bar",)
    assert minor.notice is None          # the lager is behind its own door: nothing to say
    assert planogram.to_dict()["compartments"] == [
        {"id": "bar", "lock_channel": 1, "shelves": ["middle"], "age_restricted": True}]


def test_restricted_goods_sharing_the_door_get_a_notice(catalog):
    planogram = load_planogram(FIX / "planogram.yaml", catalog)
    assert door_plan(planogram, catalog, None).notice == NOTICE
    assert door_plan(planogram, catalog, VERIFIED).notice is None
    assert "compartments" not in planogram.to_dict()


@pytest.mark.parametrize("compartments, message", [
    ([{"id": "bar", "lock_channel": 1, "shelves": ["cellar"]}], "no such shelf"),
    ([{"id": "a", "lock_channel": 1, "shelves": ["middle"]},
      {"id": "b", "lock_channel": 1, "shelves": ["bottom"]}], "lock channel already used"),
    ([{"id": "a", "lock_channel": 1, "shelves": ["middle"]},
      {"id": "b", "lock_channel": 2, "shelves": ["middle"]}], "already behind compartment"),
    ([{"id": "a", "lock_channel": 0, "shelves": ["middle"]}], "greater than or equal to 1"),
])
def test_bad_compartments_name_their_line(catalog, compartments, message):
    data = yaml.safe_load((FIX / "planogram.yaml").read_text())
    data["compartments"] = compartments
    doc = parse_yaml(yaml.safe_dump(data, sort_keys=False), Path("p.yaml"))
    with pytest.raises(FormatError, match=rf"p.yaml:\d+: compartments.*{message}"):
        planogram_from_doc(doc, catalog)
