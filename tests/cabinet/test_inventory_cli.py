"""The operator's restock visit (start, count, accept) and `cabinet inventory`: the record in
the journal, the discrepancy report from settled weights, the counted stock in force, shrinkage,
sales and low-stock marks."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from cabinet import ops_cli
from cabinet.catalog import load_catalog
from cabinet.inventory import Inventory
from cabinet.planogram import load_planogram
from cabinet.reconcile import ReconcileResult
from tests.cabinet.test_planogram_ops import (FIXTURES, cli, edited_planogram, journal,
                                              make_config, run)

CATALOG = load_catalog(FIXTURES / "catalog.yaml")
PLANOGRAM = load_planogram(FIXTURES / "planogram.yaml", CATALOG)


def weights_file(path: Path, counts: dict[str, int], unstable: tuple[str, ...] = ()) -> Path:
    """Settled weights of the fixture planogram's shelves holding `counts` items per slot."""
    data = {shelf.id: {"grams": sum(counts.get(s.id, 0) * CATALOG[s.sku].unit_weight_g
                                    for s in PLANOGRAM.slots_on(shelf.id)),
                       "stable": shelf.id not in unstable}
            for shelf in PLANOGRAM.shelves}
    path.write_text(json.dumps(data))
    return path


def vision_file(path: Path, counts: dict[str, int]) -> Path:
    """What the cameras count in every slot (weight alone cannot split look-alike milks)."""
    path.write_text(json.dumps({s.id: counts.get(s.id, 0) for s in PLANOGRAM.slots}))
    return path


FULL = {s.id: s.capacity for s in PLANOGRAM.slots}


def cabinet_state(cfg: Path) -> str:
    entries = journal(cfg).entries(None)
    return entries[-1].dest if entries else "idle"


def inventory(cfg: Path) -> dict[str, dict]:
    code, out, err = run(cfg, "inventory", "--json")
    assert code == 0, err
    return {row["slot"]: row for row in json.loads(out)}


def test_a_restock_visit_counts_the_shelves_and_accepting_puts_the_count_in_force(tmp_path):
    cfg = make_config(tmp_path)
    # before the visit the cabinet believes the demo's initial stock
    believed = PLANOGRAM.initial_stock()
    inv = Inventory(ops_cli.Cabinet(cfg).db(), PLANOGRAM)
    inv.restock(believed)
    # two colas and a water went missing between sessions (shrinkage)
    found = dict(believed, A1=believed["A1"] - 2, A3=believed["A3"] - 1)
    before = weights_file(tmp_path / "before.json", found)
    seen = vision_file(tmp_path / "seen-before.json", found)
    code, out, err = run(cfg, "restock", "start", "--operator", "ann", "--weights", str(before),
                         "--vision", str(seen))
    assert code == 0, err
    assert cabinet_state(cfg) == "restock"
    # while the cabinet is being restocked, planogram changes wait
    code, _, err = run(cfg, "planogram", "apply", str(edited_planogram(tmp_path)), "--yes")
    assert code == 1 and "the cabinet is restock, not idle" in err
    # the operator fills every slot; the cameras count them (the look-alike milks need them)
    after = weights_file(tmp_path / "after.json", FULL)
    vision = vision_file(tmp_path / "vision.json", FULL)
    code, out, err = run(cfg, "restock", "count", "--weights", str(after), "--vision",
                         str(vision), "--json")
    assert code == 0, err
    rows = {r["slot"]: r for r in json.loads(out)["slots"]}
    for slot_id, n in FULL.items():
        assert (rows[slot_id]["expected"], rows[slot_id]["counted"]) == (believed[slot_id], n)
        assert rows[slot_id]["confidence"] > 0.95 and rows[slot_id]["flags"] == []
    assert rows["A1"]["shrinkage"] == 2 and rows["A3"]["shrinkage"] == 1
    assert rows["B1"]["shrinkage"] == 0
    code, out, err = run(cfg, "restock", "accept")
    assert code == 0, err
    assert "shrinkage found: A1: 2, A3: 1" in out
    assert cabinet_state(cfg) == "idle"
    stock = inventory(cfg)
    assert {k: v["on_hand"] for k, v in stock.items()} == FULL
    assert {k: v["restocked"] for k, v in stock.items()} == {
        k: FULL[k] - found[k] for k in FULL}
    assert all(not v["low"] and v["sold"] == 0 for v in stock.values())
    # the cabinet is idle again: the planogram change goes through now
    assert run(cfg, "planogram", "apply", str(edited_planogram(tmp_path)), "--yes")[0] == 0


def test_sales_since_the_last_restock_and_low_stock_marks(tmp_path):
    cfg = make_config(tmp_path)
    cab = ops_cli.Cabinet(cfg)
    inv = Inventory(cab.db(), PLANOGRAM)
    inv.restock({s.id: 3 for s in PLANOGRAM.slots})
    sale = ReconcileResult(basket={"cola-330": 2}, confidence=1.0, runner_up=None,
                           evidence={"shelves": {"top": {"explained_by": {"cola-330": -2}}}},
                           flags=())
    inv.apply(sale, "s-1")
    inv.apply(sale, "s-1")   # a resumed session moves the stock once
    stock = inventory(cfg)
    assert (stock["A1"]["on_hand"], stock["A1"]["sold"], stock["A1"]["low"]) == (1, 2, True)
    assert (stock["A2"]["on_hand"], stock["A2"]["sold"], stock["A2"]["low"]) == (3, 0, False)
    assert stock["B1"]["restocked"] == 3
    code, table, _ = run(cfg, "inventory")
    a1 = next(line for line in table.splitlines() if line.startswith("A1 "))
    assert a1.split() == ["A1", "cola-330", "1", "2", "6", "LOW", "2", "3"]
    # a new restock starts a new period
    inv.restock({"A1": 6})
    stock = inventory(cfg)
    assert (stock["A1"]["on_hand"], stock["A1"]["sold"], stock["A1"]["restocked"]) == (6, 0, 5)


def test_a_shelf_that_did_not_settle_blocks_accept_until_forced(tmp_path):
    cfg = make_config(tmp_path)
    assert run(cfg, "restock", "start")[0] == 0
    code, _, err = run(cfg, "restock", "count")
    assert code == 1 and "no settled weights after restocking yet" in err
    after = weights_file(tmp_path / "after.json", {"C1": 2}, unstable=("bottom",))
    seen = vision_file(tmp_path / "seen.json", {"C1": 2})
    code, out, _ = run(cfg, "restock", "count", "--weights", str(after), "--vision", str(seen))
    assert code == 0
    c1 = next(line for line in out.splitlines() if line.startswith("C1 "))
    assert c1.split()[-2:] == ["0.000", "not_settled"]
    code, _, err = run(cfg, "restock", "accept")
    assert code == 1 and "--force" in err
    assert [part.split(" ")[1] for part in err.split("refused: ")[1].split("; ")[:-1]] == [
        "C1", "C2", "C3", "C4"]   # the bottom shelf only: the others were counted sure
    assert "slot C1 not_settled" in err
    assert cabinet_state(cfg) == "restock"
    assert inventory(cfg)["C1"]["on_hand"] == 0
    code, _, err = run(cfg, "restock", "accept", "--force")
    assert code == 0, err
    assert inventory(cfg)["C1"]["on_hand"] == 2 and cabinet_state(cfg) == "idle"


def test_restock_is_refused_while_a_session_is_open_and_twice(tmp_path):
    from cabinet.machine import TransitionRecord
    cfg = make_config(tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    journal(cfg).write(TransitionRecord("s-7", "face_seen", "idle", "face_auth", now, {}))
    code, _, err = run(cfg, "restock", "start")
    assert code == 1 and "session s-7 is open (face auth)" in err
    assert not (tmp_path / "var" / "restock").exists()
    journal(cfg).write(TransitionRecord("s-7", "denied", "face_auth", "idle", now, {}))
    assert run(cfg, "restock", "start", "--operator", "ann")[0] == 0
    code, _, err = run(cfg, "restock", "start", "--operator", "bob")
    assert code == 1 and "by ann is still open" in err
    assert len(list((tmp_path / "var" / "restock").iterdir())) == 1


def test_a_bad_weights_file_is_named_and_records_nothing(tmp_path):
    cfg = make_config(tmp_path)
    bad = tmp_path / "w.json"
    bad.write_text('{"top": "heavy"}')
    code, _, err = run(cfg, "restock", "start", "--weights", str(bad))
    assert code == 1 and f"{bad}: shelf 'top' = 'heavy'" in err
    assert cabinet_state(cfg) == "idle" and not (tmp_path / "var" / "restock").exists()
    bad.write_text("{")
    assert run(cfg, "restock", "start")[0] == 0
    code, _, err = run(cfg, "restock", "count", "--weights", str(bad))
    assert code == 1 and f"{bad}:1: not JSON" in err
    missing_shelf = tmp_path / "some.json"
    missing_shelf.write_text('{"top": 0}')
    code, _, err = run(cfg, "restock", "count", "--weights", str(missing_shelf))
    assert code == 1 and "no settled weight for shelf(s) middle, bottom" in err
    visit = json.loads(next((tmp_path / "var" / "restock").iterdir()).read_text())
    assert visit["after"] is None


def test_restock_and_inventory_as_commands(tmp_path):
    cfg = make_config(tmp_path)
    p = cli("restock", "start", "--operator", "ann", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    after = weights_file(tmp_path / "after.json", {"C1": 3})
    seen = vision_file(tmp_path / "seen.json", {"C1": 3})
    p = cli("restock", "count", "--weights", str(after), "--vision", str(seen), "--config",
            str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].split() == ["slot", "sku", "expected", "before",
                                                "counted", "confidence", "flags"]
    p = cli("restock", "accept", "--config", str(cfg), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["counts"]["C1"] == 3
    p = cli("inventory", "--json", "--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert {r["slot"]: r["on_hand"] for r in json.loads(p.stdout)}["C1"] == 3


@pytest.mark.parametrize("argv", [["restock", "count"], ["restock", "accept"]])
def test_count_and_accept_need_an_open_visit(tmp_path, argv):
    cfg = make_config(tmp_path)
    code, _, err = run(cfg, *argv)
    assert code == 1 and "no open visit; start one with `cabinet restock start`" in err


def test_without_config_the_simulated_cabinet_is_used_and_validate_writes_nothing(tmp_path):
    root = FIXTURES.parent
    var = root / "var"
    before = sorted(p.name for p in var.iterdir()) if var.is_dir() else None
    p = cli("planogram", "validate", str(FIXTURES / "planogram.yaml"), cwd=tmp_path)
    assert (p.returncode, p.stdout) == (0, f"{FIXTURES / 'planogram.yaml'}: ok\n"), p.stderr
    assert (sorted(q.name for q in var.iterdir()) if var.is_dir() else None) == before
    assert not (FIXTURES / "var").exists()


def test_a_bad_configuration_lists_its_errors_and_nothing_runs(tmp_path):
    cfg = make_config(tmp_path)
    cfg.write_text(cfg.read_text() + "data_dri: elsewhere\n")
    code, out, err = run(cfg, "inventory")
    assert (code, out) == (1, "")
    assert err == f"{cfg}:6: data_dri = 'elsewhere': unknown key; check its spelling against " \
                  f"docs/formats.md\n"
    assert not (tmp_path / "cabinet.sqlite").exists()
