"""Operators change planograms and catalogs: validate (every error, nothing written), diff,
apply (atomic, refused while the cabinet is busy) and rollback (bytes restored exactly); and the
JSON Schemas editors use hold for the fixtures."""
from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cabinet import ops_cli
from cabinet.inforce import InForce
from cabinet.journal import Journal
from cabinet.machine import TransitionRecord
from cabinet.planogram_ops import Operations, Refused

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
SCHEMAS = ROOT / "cabinet" / "schemas"


def make_config(tmp_path: Path) -> Path:
    """A cabinet of its own: copies of the demo's catalog and planogram, data and database in
    tmp_path."""
    for kind in ("catalog", "planogram"):
        shutil.copy(FIXTURES / f"{kind}.yaml", tmp_path / f"{kind}.yaml")
    cfg = tmp_path / "cabinet.yaml"
    cfg.write_text("schema_version: 1\ndatabase_url: sqlite:///cabinet.sqlite\n"
                   "data_dir: var\ncatalog: catalog.yaml\nplanogram: planogram.yaml\n")
    return cfg


def run(cfg: Path, *argv: str, answer: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ops_cli.main([*argv, "--config", str(cfg)], out=out, err=err,
                        ask=lambda prompt: answer)
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def journal(cfg: Path) -> Journal:
    return Journal(ops_cli.Cabinet(cfg).db())


def edited_planogram(tmp_path: Path) -> Path:
    text = (FIXTURES / "planogram.yaml").read_text()
    text = text.replace("{id: A1, shelf: top, sku: cola-330, capacity: 6, par: 2, stock: 5,",
                        "{id: A1, shelf: top, sku: cola-330, capacity: 5, par: 3, stock: 5,")
    text = text.replace("{id: A3, shelf: top, sku: water-500,", "{id: A3, shelf: top, "
                        "sku: energy-250,")
    text = re.sub(r"\n  - \{id: C4,[^\n]*", "", text)
    text += "  - {id: C5, shelf: bottom, sku: milk-1l, capacity: 2, par: 1, roi: [600, 10, 30, 30]}\n"
    path = tmp_path / "new-planogram.yaml"
    path.write_text(text)
    return path


BAD = """\
schema_version: 1
cabinet_id: demo-cabinet-1
camera_size: [640, 480]
shelves:
  - {id: top, channel: 0, camera: cam_top, max_load_g: 1500}
slots:
  - {id: A1, shelf: top, sku: cola-330, capacity: 4, par: 2, roi: [10, 280, 118, 160]}
  - {id: A2, shelf: top, sku: cola-500, capacity: 2, par: 1, roi: [135, 280, 118, 160]}
  - {id: A1, shelf: top, sku: water-500, capacity: 2, par: 1, roi: [260, 280, 118, 160]}
  - {id: A4, shelf: top, sku: water-500, capacity: 2, par: 1, roi: [600, 280, 118, 160]}
  - {id: A5, shelf: top, sku: energy-250, capacity: 1, par: 3, roi: [400, 10, 100, 100]}
"""


def test_a_bad_planogram_lists_every_error_with_its_line_and_changes_nothing(tmp_path):
    cfg = make_config(tmp_path)
    assert run(cfg, "planogram", "apply", str(FIXTURES / "planogram.yaml"), "--yes")[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    before = snapshot(tmp_path)
    code, out, _ = run(cfg, "planogram", "validate", str(bad))
    assert code == 1
    lines = out.splitlines()
    cat = {p["sku"]: p for p in yaml.safe_load((FIXTURES / "catalog.yaml").read_text())[
        "products"]}
    full = sum(n * cat[sku]["unit_weight_g"] for sku, n in (
        ("cola-330", 4), ("water-500", 2), ("water-500", 2), ("energy-250", 1)))
    expected = [
        (5, "shelf top:", f"the slots at capacity weigh {full:.0f} g, above the shelf's max"),
        (8, "slot A2:", "'cola-500': not in the catalog"),
        (9, "slot A1:", "duplicate id (first at line 7)"),
        (10, "slot A4:", "outside the 640x480 camera image"),
        (11, "slot A5:", "par is above the capacity (1)"),
    ]
    assert len(lines) == len(expected), out
    for line, (number, who, what) in zip(lines, expected):
        assert line.startswith(f"{bad}:{number}: {who}"), line
        assert what in line, line
    assert snapshot(tmp_path) == before


def test_validate_of_a_good_file_says_ok_and_writes_nothing(tmp_path):
    cfg = make_config(tmp_path)
    before = snapshot(tmp_path)
    assert run(cfg, "planogram", "validate", str(FIXTURES / "planogram.yaml")) == (
        0, f"{FIXTURES / 'planogram.yaml'}: ok\n", "")
    assert run(cfg, "catalog", "validate", str(FIXTURES / "catalog.yaml"))[0] == 0
    assert run(cfg, "planogram", "diff", str(edited_planogram(tmp_path)))[0] == 0
    after = snapshot(tmp_path)
    assert after.pop("new-planogram.yaml")
    assert after == before   # no var/, no database


def test_a_file_that_does_not_parse_is_one_error_with_its_line(tmp_path):
    cfg = make_config(tmp_path)
    bad = tmp_path / "broken.yaml"
    bad.write_text("schema_version: 1\nslots: [\n")
    code, out, _ = run(cfg, "planogram", "validate", str(bad), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and len(doc["errors"]) == 1
    assert doc["errors"][0].startswith(f"{bad}:3: malformed YAML")


def test_diff_shows_slots_skus_prices_par_and_capacity(tmp_path):
    cfg = make_config(tmp_path)
    code, out, _ = run(cfg, "planogram", "diff", str(edited_planogram(tmp_path)), "--json")
    assert code == 0
    got = {(c["what"], c["field"]): (c["action"], c["old"], c["new"]) for c in json.loads(out)}
    assert got == {
        ("A1", "capacity"): ("changed", 6, 5),
        ("A1", "par"): ("changed", 2, 3),
        ("A3", "sku"): ("changed", "water-500", "energy-250"),
        ("A3", "price"): ("changed", 120, 220),
        ("C4", "slot"): ("removed", "vanilla-yoghurt-150", None),
        ("C5", "slot"): ("added", None, "milk-1l"),
    }
    code, table, _ = run(cfg, "planogram", "diff", str(edited_planogram(tmp_path)))
    assert table.splitlines()[0].split() == ["what", "field", "action", "in", "force", "new"]
    assert re.search(r"^A3\s+price\s+changed\s+120\s+220$", table, re.M)


def test_catalog_diff_shows_prices_and_products(tmp_path):
    cfg = make_config(tmp_path)
    cat = yaml.safe_load((FIXTURES / "catalog.yaml").read_text())
    cat["products"][0]["price"] = 199
    cat["products"].append({"sku": "tea-500", "name": "Iced tea", "price": 250,
                            "unit_weight_g": 520.0, "weight_tolerance_g": 6.0})
    new = tmp_path / "new-catalog.yaml"
    new.write_text(yaml.safe_dump(cat, sort_keys=False))
    code, out, _ = run(cfg, "catalog", "diff", str(new), "--json")
    assert code == 0
    assert [(c["what"], c["field"], c["old"], c["new"]) for c in json.loads(out)] == [
        ("cola-330", "price", 180, 199), ("tea-500", "product", None, "Iced tea")]


def test_apply_then_rollback_restores_the_bytes_exactly(tmp_path):
    cfg = make_config(tmp_path)
    original = (tmp_path / "planogram.yaml").read_bytes()
    new = edited_planogram(tmp_path)
    code, out, _ = run(cfg, "planogram", "apply", str(new), "--yes")
    assert code == 0
    assert re.search(r"^A3\s+price\s+changed\s+120\s+220$", out, re.M)
    in_force = tmp_path / "var" / "in-force" / "planogram.yaml"
    assert in_force.read_bytes() == new.read_bytes()
    code, out, _ = run(cfg, "planogram", "rollback", "--yes")
    assert code == 0 and "rolled back" in out
    assert in_force.read_bytes() == original
    code, _, err = run(cfg, "planogram", "rollback", "--yes")
    assert code == 1 and "no earlier version" in err
    assert in_force.read_bytes() == original


def test_apply_asks_first_and_no_changes_nothing(tmp_path):
    cfg = make_config(tmp_path)
    before = snapshot(tmp_path)
    code, out, _ = run(cfg, "planogram", "apply", str(edited_planogram(tmp_path)), answer="n")
    assert code == 1 and out.rstrip().endswith("planogram: nothing changed")
    after = snapshot(tmp_path)
    after.pop("new-planogram.yaml")
    assert after == before
    assert run(cfg, "planogram", "apply", str(edited_planogram(tmp_path)), answer="y")[0] == 0
    assert (tmp_path / "var" / "in-force" / "planogram.yaml").exists()


def test_an_invalid_planogram_is_not_applied(tmp_path):
    cfg = make_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, _, err = run(cfg, "planogram", "apply", str(bad), "--yes")
    assert code == 1
    assert len(err.splitlines()) == 5 and "slot A2:" in err
    assert not (tmp_path / "var").exists()


def test_apply_and_rollback_are_refused_while_a_session_is_open(tmp_path):
    cfg = make_config(tmp_path)
    assert run(cfg, "planogram", "apply", str(edited_planogram(tmp_path)), "--yes")[0] == 0
    now = dt.datetime.now(dt.timezone.utc)
    journal(cfg).write(TransitionRecord("s-42", "face_seen", "idle", "face_auth", now, {}))
    journal(cfg).write(TransitionRecord("s-42", "authorized", "face_auth", "unlocked", now, {}))
    before = snapshot(tmp_path / "var")
    code, _, err = run(cfg, "planogram", "apply", str(FIXTURES / "planogram.yaml"), "--yes")
    assert code == 1
    assert "session s-42 is open (unlocked)" in err and "nothing changed" in err
    code, _, err = run(cfg, "planogram", "rollback", "--yes")
    assert code == 1 and "session s-42 is open" in err
    assert snapshot(tmp_path / "var") == before
    # the session ends: the same apply goes through
    journal(cfg).write(TransitionRecord("s-42", "unlock_expired", "unlocked", "reconcile",
                                        now, {}))
    journal(cfg).write(TransitionRecord("s-42", "reconciled", "reconcile", "charge", now, {}))
    journal(cfg).write(TransitionRecord("s-42", "finished", "charge", "idle", now, {}))
    assert run(cfg, "planogram", "rollback", "--yes")[0] == 0


def test_apply_is_refused_while_the_cabinet_is_not_idle(tmp_path):
    cfg = make_config(tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    journal(cfg).write(TransitionRecord(None, "fault", "idle", "out_of_service", now,
                                        {"cause": "ForcedDoor"}))
    code, _, err = run(cfg, "catalog", "apply", str(FIXTURES / "catalog.yaml"), "--yes")
    assert code == 1 and "the cabinet is out of service, not idle" in err
    assert not (tmp_path / "var" / "in-force").exists()


def test_a_catalog_that_drops_a_sold_sku_is_refused_naming_the_slot(tmp_path):
    cfg = make_config(tmp_path)
    cat = yaml.safe_load((FIXTURES / "catalog.yaml").read_text())
    cat["products"] = [p for p in cat["products"] if p["sku"] != "water-500"]
    new = tmp_path / "new-catalog.yaml"
    new.write_text(yaml.safe_dump(cat, sort_keys=False))
    code, out, _ = run(cfg, "catalog", "validate", str(new))
    assert code == 1
    (line,) = out.splitlines()
    assert "slot A3 of the planogram in force" in line and "'water-500'" in line
    assert f"{tmp_path / 'planogram.yaml'}:15" in line
    code, _, err = run(cfg, "catalog", "apply", str(new), "--yes")
    assert code == 1 and "slot A3" in err
    assert not (tmp_path / "var").exists()


def test_a_catalog_rollback_that_would_strand_a_slot_is_refused(tmp_path):
    cfg = make_config(tmp_path)
    cat = yaml.safe_load((FIXTURES / "catalog.yaml").read_text())
    cat["products"].append({"sku": "tea-500", "name": "Iced tea", "price": 250,
                            "unit_weight_g": 520.0, "weight_tolerance_g": 6.0})
    new_cat = tmp_path / "new-catalog.yaml"
    new_cat.write_text(yaml.safe_dump(cat, sort_keys=False))
    assert run(cfg, "catalog", "apply", str(new_cat), "--yes")[0] == 0
    plano = (FIXTURES / "planogram.yaml").read_text().replace("sku: water-500", "sku: tea-500")
    new_plano = tmp_path / "new-planogram.yaml"
    new_plano.write_text(plano)
    assert run(cfg, "planogram", "apply", str(new_plano), "--yes")[0] == 0
    before = snapshot(tmp_path / "var")
    code, _, err = run(cfg, "catalog", "rollback", "--yes")
    assert code == 1
    assert "slot A3" in err and "'tea-500'" in err and "nothing changed" in err
    assert snapshot(tmp_path / "var") == before


def test_catalog_apply_and_rollback_and_a_weight_that_overloads_a_shelf(tmp_path):
    cfg = make_config(tmp_path)
    original = (tmp_path / "catalog.yaml").read_bytes()
    cat = yaml.safe_load(original)
    cat["products"][0]["price"] = 199
    cheaper = tmp_path / "price.yaml"
    cheaper.write_text(yaml.safe_dump(cat, sort_keys=False))
    code, out, _ = run(cfg, "catalog", "apply", str(cheaper), "--yes", "--json")
    assert code == 0
    assert [(c["what"], c["field"], c["old"], c["new"]) for c in json.loads(out)["changes"]] \
        == [("cola-330", "price", 180, 199)]
    in_force = tmp_path / "var" / "in-force" / "catalog.yaml"
    assert in_force.read_bytes() == cheaper.read_bytes()
    cat["products"][0]["unit_weight_g"] = 3000.0   # six colas now outweigh the top shelf
    heavy = tmp_path / "heavy.yaml"
    heavy.write_text(yaml.safe_dump(cat, sort_keys=False))
    code, _, err = run(cfg, "catalog", "apply", str(heavy), "--yes")
    assert code == 1
    assert "the planogram in force would not hold with this catalog" in err
    assert "max_load_g = 20000" in err
    assert in_force.read_bytes() == cheaper.read_bytes()
    assert run(cfg, "catalog", "rollback", "--yes")[0] == 0
    assert in_force.read_bytes() == original


def test_operations_refuse_without_touching_the_store(tmp_path):
    store = InForce(tmp_path / "var", {"catalog": FIXTURES / "catalog.yaml",
                                       "planogram": FIXTURES / "planogram.yaml"})
    ops = Operations(store)
    with pytest.raises(Refused, match="no earlier version"):
        ops.rollback("catalog")
    with pytest.raises(ValueError, match="unknown kind 'stock'"):
        ops.validate("stock", FIXTURES / "planogram.yaml")
    assert not (tmp_path / "var").exists()


# --- as an operator runs them ------------------------------------------------------------------

def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cabinet.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_validate_apply_rollback_as_commands(tmp_path):
    cfg = make_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    p = cli("planogram", "validate", "bad.yaml", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 1
    assert [line.split(": ")[0] for line in p.stdout.splitlines()] == [
        f"bad.yaml:{n}" for n in (5, 8, 9, 10, 11)]   # named as the operator typed it
    new = edited_planogram(tmp_path)
    p = cli("planogram", "apply", str(new), "--config", str(cfg), "--yes", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    in_force = tmp_path / "var" / "in-force" / "planogram.yaml"
    assert in_force.read_bytes() == new.read_bytes()
    p = cli("planogram", "apply", str(bad), "--config", str(cfg), "--yes", cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert in_force.read_bytes() == new.read_bytes()
    p = cli("planogram", "rollback", "--config", str(cfg), "--yes", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert in_force.read_bytes() == (FIXTURES / "planogram.yaml").read_bytes()


# --- the schemas editors use ---------------------------------------------------------------------

def schema_errors(value, schema: dict, root: dict, where: str = "$") -> list[str]:
    """The JSON Schema keywords our two schemas use (draft 2020-12), enough to check files."""
    if "$ref" in schema:
        return schema_errors(value, root["$defs"][schema["$ref"].split("/")[-1]], root, where)
    if "anyOf" in schema:
        options = [schema_errors(value, s, root, where) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else [f"{where}: matches no anyOf option"]
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "array": list, "object": dict, "null": type(None)}
    t = schema.get("type")
    if t and (not isinstance(value, kinds[t]) or (t in ("integer", "number")
                                                  and isinstance(value, bool))):
        return [f"{where}: not {t}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            errors.append(f"{where}: length")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", -1e18) or value > schema.get("maximum", 1e18) or \
                ("exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]):
            errors.append(f"{where}: out of range")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1e9):
            errors.append(f"{where}: item count")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub:
                errors += schema_errors(item, sub, root, f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unknown key {k}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], root, f"{where}.{k}")
    return errors


@pytest.mark.parametrize("kind", ["catalog", "planogram"])
def test_the_fixtures_hold_to_their_schema(kind):
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    data = yaml.safe_load((FIXTURES / f"{kind}.yaml").read_text())
    assert schema_errors(data, schema, schema) == []


@pytest.mark.parametrize("name, found", [
    ("catalog_float_price.yaml", "price: not integer"),
    ("catalog_negative_price.yaml", "price: out of range"),
    ("catalog_unknown_key.yaml", "unknown key"),
])
def test_the_schema_catches_what_editors_can_see(name, found):
    schema = json.loads((SCHEMAS / "catalog.schema.json").read_text())
    data = yaml.safe_load((FIXTURES / "bad" / name).read_text())
    assert any(found in e for e in schema_errors(data, schema, schema))


def test_the_planogram_schema_refuses_a_slot_without_a_roi_and_a_bad_roi():
    schema = json.loads((SCHEMAS / "planogram.schema.json").read_text())
    data = yaml.safe_load((FIXTURES / "planogram.yaml").read_text())
    del data["slots"][0]["roi"]
    data["slots"][1]["roi"] = [1, 2, 3]
    data["slots"][2]["par"] = -1
    assert schema_errors(data, schema, schema) == [
        "$.slots[0]: missing roi", "$.slots[1].roi: item count", "$.slots[2].par: out of range"]
