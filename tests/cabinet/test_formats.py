"""The YAML formats: the demo fixtures load, every bad variant is one line naming file and
line, loaders round-trip, and the shipped JSON Schemas match the models."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from cabinet.catalog import catalog_from_doc, load_catalog
from vision.sim.looks import product_looks
from cabinet.config import load_config, validate_main
from cabinet.errors import ConfigError, FormatError
from cabinet.formats import SCHEMA_DIR, render, schemas
from cabinet.planogram import load_planogram, planogram_from_doc
from cabinet.scenario import (CloseDoor, Move, OpenDoor, Put, Take, Wait, load_accounts,
                              load_scenarios)
from cabinet.yamlsrc import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
BAD = FIX / "bad"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(FIX / "catalog.yaml")


@pytest.fixture(scope="module")
def planogram(catalog):
    return load_planogram(FIX / "planogram.yaml", catalog)


def test_demo_fixtures_load(catalog, planogram):
    assert catalog.currency == "EUR" and 9 <= len(catalog) <= 13
    assert all(isinstance(p.price, int) and p.price > 0 for p in catalog.values())
    # weights are distinct except the 1 l milks: look-alikes of one weight on purpose (issue 7)
    same = [sku for sku, p in catalog.items()
            if sum(q.unit_weight_g == p.unit_weight_g for q in catalog.values()) > 1]
    assert sorted(same) == ["milk-1l", "milk-eco-1l", "milk-medium-1l"]
    assert [s.channel for s in planogram.shelves] == [0, 1, 2]
    assert len(planogram.cameras) == 3 and planogram.camera_size == (640, 480)
    for shelf in planogram.shelves:
        assert 3 <= len(planogram.slots_on(shelf.id)) <= 5
    assert planogram.initial_stock()["A1"] == 5 and planogram.initial_stock()["A3"] == 6
    assert planogram.slot("B4").sku == "lager-330" and catalog["lager-330"].age_restricted


def test_demo_scenarios_cover_the_issue(planogram):
    scenarios = {s.name: s for s in load_scenarios(FIX / "scenarios.yaml", planogram)}
    assert len(scenarios) >= 6
    assert scenarios["single-purchase"].expect.basket == {"cola-330": 1}
    assert len(scenarios["multi-item"].expect.basket) == 3
    assert any(isinstance(a, Put) for a in scenarios["put-back"].actions)
    moved = scenarios["moved-item"]
    assert any(isinstance(a, Move) for a in moved.actions)
    assert "smoothie-250" not in moved.expect.basket  # moved inside the cabinet: not sold
    assert scenarios["unknown-face"].expect.outcome == "denied"
    assert scenarios["unknown-face"].actions == ()
    browse = scenarios["browse-only"]
    assert browse.expect == browse.expect.__class__("nothing_taken", {})
    assert isinstance(browse.actions[0], OpenDoor) and isinstance(browse.actions[-1], CloseDoor)
    assert isinstance(browse.actions[1], Wait)


def test_fallback_faces_make_a_stranger(planogram):
    """With only obama and biden photos: customers show obama, the stranger shows biden,
    and biden's account enrols no face in that mode."""
    scenarios = load_scenarios(FIX / "scenarios.yaml", planogram)
    accounts = load_accounts(FIX / "accounts.yaml")
    enrolled_fb = {a.person_for(fallback=True) for a in accounts} - {None}
    enrolled = {a.person_for(fallback=False) for a in accounts} - {None}
    assert enrolled_fb == {"obama"}
    for s in scenarios:
        assert s.person_for(fallback=True) in {"obama", "biden"}, s.name
        for fallback, people in ((False, enrolled), (True, enrolled_fb)):
            person = s.person_for(fallback=fallback)
            assert (person in people) == (s.expect.outcome != "denied"), (s.name, fallback)


BAD_CASES = [
    ("catalog_malformed.yaml", 8, None),
    ("catalog_unknown_key.yaml", 9, "products[0].weigth_g"),
    ("catalog_negative_price.yaml", 6, "products[0].price"),
    ("catalog_float_price.yaml", 6, "products[0].price"),
    ("catalog_duplicate_sku.yaml", 5, "products[1].sku"),
    ("planogram_unknown_sku.yaml", 9, "slots[1].sku"),
    ("planogram_bad_roi.yaml", 9, "slots[1].roi"),
    ("planogram_overlap.yaml", 9, "slots[1].roi"),
    ("planogram_par_above_capacity.yaml", 9, "slots[1].par"),
    ("planogram_unknown_shelf.yaml", 9, "slots[1].shelf"),
    ("planogram_duplicate_id.yaml", 9, "slots[1].id"),
    ("scenarios_wrong_basket.yaml", 9, "scenarios[0].expect.basket"),
    ("scenarios_unknown_slot.yaml", 6, "scenarios[0].actions[0].take.slot"),
    ("scenarios_put_not_held.yaml", 7, "scenarios[0].actions[1].put.sku"),
    ("config_malformed.yaml", 4, None),
    ("config_unknown_key.yaml", 5, "timeouts.setle_s"),
]


def _load(name: str, catalog, planogram):
    path = BAD / name
    if name.startswith("catalog_"):
        return load_catalog(path)
    if name.startswith("planogram_"):
        return load_planogram(path, catalog)
    if name.startswith("scenarios_"):
        return load_scenarios(path, planogram)
    return load_config(path)


@pytest.mark.parametrize("name,line,key", BAD_CASES)
def test_bad_fixture_is_one_line_with_file_and_line(name, line, key, catalog, planogram,
                                                     monkeypatch):
    monkeypatch.chdir(ROOT)   # paths are shown relative to the working directory
    with pytest.raises((FormatError, ConfigError)) as info:
        _load(name, catalog, planogram)
    text = str(info.value)
    assert "\n" not in text
    if key is None:
        assert text.startswith(f"fixtures/bad/{name}:{line}: malformed YAML: "), text
    else:
        assert text.startswith(f"fixtures/bad/{name}:{line}: {key} = "), text


@pytest.mark.parametrize("loader", ["catalog", "planogram", "scenarios", "accounts", "config"])
def test_missing_file_is_one_line(loader, catalog, planogram, tmp_path):
    missing = tmp_path / f"{loader}.yaml"
    call = {"catalog": lambda: load_catalog(missing),
            "planogram": lambda: load_planogram(missing, catalog),
            "scenarios": lambda: load_scenarios(missing, planogram),
            "accounts": lambda: load_accounts(missing),
            "config": lambda: load_config(missing)}[loader]
    with pytest.raises((FormatError, ConfigError)) as info:
        call()
    assert str(info.value) == f"{missing}: {loader if loader != 'config' else 'configuration'}" \
        f" file not found"


def test_config_lists_every_error():
    with pytest.raises(ConfigError) as info:
        load_config(BAD / "config_bad_values.yaml")
    lines = str(info.value).splitlines()
    assert [re.match(r".*:(\d+): ", l).group(1) for l in lines] == ["3", "5", "7"]
    assert "serial.port = 'ttyUSB0'" in lines[0]
    out = io.StringIO()
    assert validate_main(BAD / "config_bad_values.yaml", out) == 1
    assert out.getvalue().splitlines() == lines
    out = io.StringIO()
    assert validate_main(FIX / "cabinet.yaml", out) == 0 and out.getvalue().endswith("ok\n")


def test_config_resolves_paths_against_its_file():
    cfg = load_config(FIX / "cabinet.yaml")
    assert cfg.catalog_path == FIX / "catalog.yaml"
    assert load_planogram(cfg.planogram_path, load_catalog(cfg.catalog_path)).cabinet_id
    assert cfg.serial.port == "sim" and cfg.gateway_url == "sim"
    assert cfg.timeouts.unlock_pulse_ms == 5000 and cfg.timeouts.settle_s == 5.0


def test_empty_config_takes_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("# nothing\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.database_url.startswith("sqlite:///") and cfg.thresholds.face_distance == 0.60


def test_catalog_round_trips(catalog):
    again = catalog_from_doc(parse_yaml(yaml.safe_dump(catalog.to_dict()), "again.yaml"))
    assert dict(again) == dict(catalog) and again.currency == catalog.currency


def test_planogram_round_trips(catalog, planogram):
    text = yaml.safe_dump(planogram.to_dict())
    assert planogram_from_doc(parse_yaml(text, "again.yaml"), catalog) == planogram


def test_duplicate_yaml_keys_and_documents_are_refused(tmp_path):
    with pytest.raises(FormatError, match=r"x.yaml:3: currency: this key appears twice"):
        parse_yaml("currency: EUR\nproducts: []\ncurrency: USD\n", "x.yaml")
    with pytest.raises(FormatError, match=r"x.yaml:2: .*one YAML document"):
        parse_yaml("a: 1\n---\nb: 2\n", "x.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: 1\nname: caf\xe9\n")
    with pytest.raises(FormatError, match=r"latin1.yaml:2: not UTF-8"):
        load_catalog(bad)


def test_scenario_shorthands_and_door(planogram, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("scenarios:\n  - name: s\n    actions:\n      - open_door\n      - take: A1\n"
                 "      - wait: 2\n      - close_door\n      - wait: {seconds: 1}\n"
                 "    expect: {outcome: charged, basket: {cola-330: 1}}\n")
    (s,) = load_scenarios(f, planogram)
    assert s.actions == (OpenDoor(), Take("A1", 1), Wait(2.0), CloseDoor(), Wait(1.0))
    f.write_text("scenarios:\n  - name: s\n    actions:\n      - close_door\n      - take: A1\n"
                 "    expect: {outcome: charged, basket: {cola-330: 1}}\n")
    with pytest.raises(FormatError, match=r"s.yaml:5: .*door is closed"):
        load_scenarios(f, planogram)


def test_scenarios_share_one_cabinet_stock(planogram, tmp_path):
    """Replayed in file order: the second customer cannot take what the first took."""
    f = tmp_path / "s.yaml"
    f.write_text("scenarios:\n" + "".join(
        f"  - name: s{i}\n    actions: [{{take: {{slot: B1, qty: 2}}}}]\n"
        f"    expect: {{outcome: charged, basket: {{orange-juice-1l: 2}}}}\n" for i in range(2)))
    with pytest.raises(FormatError, match=r"s.yaml:6: scenarios\[1\].actions\[0\].take.qty = 2: slot B1 holds 1 item"):
        load_scenarios(f, planogram)


def test_shipped_schemas_match_the_models():
    for name, schema in schemas().items():
        assert (SCHEMA_DIR / name).read_text() == render(schema), \
            f"{name} is stale: run python -m cabinet.formats"


def test_product_looks_use_catalog_colour(catalog):
    looks = product_looks(catalog)
    assert looks["cola-330"].color_bgr == (0x2b, 0x39, 0xc0)
    assert looks["milk-1l"].package == "carton"


def test_photo_product_names_one_sku_and_maps_recogniser_names(catalog):
    from cabinet.catalog import sku_by_photo_product
    from cabinet.errors import FormatError
    names = sku_by_photo_product(catalog)
    assert names["Arla-Medium-Fat-Milk"] == "milk-medium-1l" and names["Arla-Standard-Milk"] == "milk-1l"
    assert names["cola-330"] == "cola-330"  # no photos of it: known only if enrolled, by its SKU
    assert "Cola" not in names and len(names) == len(catalog) + 9  # 9 SKUs have photo folders
    text = yaml.safe_dump(catalog.to_dict()).replace("photo_product: Arla-Medium-Fat-Milk",
                                                     "photo_product: Arla-Standard-Milk")
    with pytest.raises(FormatError, match=r"products\[9\].photo_product = 'Arla-Standard-Milk': already names SKU 'milk-medium-1l'"):
        catalog_from_doc(parse_yaml(text, "dup.yaml"))
    bad = yaml.safe_dump(catalog.to_dict()).replace("photo_product: Arla-Medium-Fat-Milk",
                                                    "photo_product: ../etc")
    with pytest.raises(FormatError, match="photo_product"):
        catalog_from_doc(parse_yaml(bad, "bad.yaml"))
