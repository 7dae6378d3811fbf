"""`cabinet report sales|stock`, `cabinet receipt SESSION` and `cabinet accounts verify-age` on a
small database built here through the real Billing and sandbox gateway (exact figures)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import pytest

from billing import Billing, GatewayClient, Line
from billing.gateway_server import SandboxGateway
from cabinet import cli, report_cli
from cabinet.catalog import load_catalog
from cabinet.config import load_config
from cabinet.inventory import Inventory
from cabinet.ops_cli import open_db
from cabinet.planogram import load_planogram
from cabinet.tax_config import tax_setup

FIX = Path(__file__).resolve().parents[2] / "fixtures"
DAY1 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY2 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.timezone.utc)
COLA = Line("cola-330", "Cola 330 ml can", 2, 180)          # soft_drink 19%
MILK = Line("milk-1l", "Milk 1 l", 1, 149)                 # dairy 7%
LAGER = Line("lager-330", "Lager 330 ml", 1, 195)          # alcohol 19%


class _Result:
    """What Inventory.apply reads of a reconcile result: the per-shelf explanation."""

    def __init__(self, explained: dict[str, dict[str, int]]):
        self.evidence = {"shelves": {k: {"explained_by": v} for k, v in explained.items()}}


@pytest.fixture(scope="module")
def gateway():
    gw = SandboxGateway()
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def shop(tmp_path, gateway):
    """A cabinet configuration of its own (the demo's files) with three sessions over two
    days, a refund on the second, and a restock with shrinkage found."""
    fx = tmp_path / "fixtures"
    shutil.copytree(FIX, fx, ignore=shutil.ignore_patterns("bad"))
    config = fx / "cabinet.yaml"
    cfg = load_config(config)
    catalog = load_catalog(fx / "catalog.yaml")
    db = open_db(cfg)
    now = {"t": DAY1}
    client = GatewayClient(gateway.base_url, api_key=gateway.api_key, timeout_s=1.0,
                           max_retries=1, sleep=lambda s: None, jitter=lambda: 1.0)
    billing = Billing(db, client, hold_amount=2000, currency="EUR", cabinet_id="demo-cabinet-1",
                      clock=lambda: now["t"], tax=tax_setup(cfg.tax, catalog))
    alice = billing.open_account("Alice", "tok_visa_ok")
    for sid, lines in (("s-1", [COLA, MILK]), ("s-2", [LAGER])):
        billing.place_hold(sid, alice.id)
        billing.settle(sid, lines)
    now["t"] = DAY2
    billing.place_hold("s-3", alice.id)
    billing.settle("s-3", [Line("milk-1l", "Milk 1 l", 2, 149)])
    assert billing.refund("s-1", 180, "one can was dented").status == "refunded"
    planogram = load_planogram(fx / "planogram.yaml", catalog)
    inventory = Inventory(db, planogram)
    inventory.restock(planogram.initial_stock())
    inventory.apply(_Result({"top": {"cola-330": -2}}), "s-1")
    inventory.restock({"A1": 6}, shrinkage={"A1": 1})
    return config, alice


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = report_cli.main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_sales_per_day_and_rate_are_the_receipts_figures(shop):
    config, _ = shop
    code, out, _ = _run(["report", "sales", "--json", "--config", str(config)])
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"from", "to", "rows"}
    rows = [(r["day"], r["rate"], r["gross"], r["net"], r["tax"], r["refunds"],
             r["refund_tax"], r["sessions"], r["items"]) for r in doc["rows"]]
    assert rows == [
        # 19%: receipts 360 -> tax 57 and 195 -> 31: 88, not 555 re-rounded (89)
        ("2026-03-01", "7%", 149, 139, 10, 0, 0, 1, 1),
        ("2026-03-01", "19%", 555, 467, 88, 0, 0, 2, 3),
        # the refund of 180 of s-1 is spread 53 : 127 over what s-1 had left at 7% and 19%;
        # its tax is what the rest no longer carries: 10 - 6 and 57 - 37
        ("2026-03-02", "7%", 298, 279, 19, 53, 4, 1, 2),
        ("2026-03-02", "19%", 0, 0, 0, 127, 20, 0, 0)]
    assert set(doc["rows"][0]) == {"day", "rate", "rate_bp", "currency", "gross", "net", "tax",
                                   "refunds", "refund_tax", "sessions", "items"}


def test_sales_period_and_csv(shop):
    config, _ = shop
    code, out, _ = _run(["report", "sales", "--csv", "--from", "2026-03-02", "--to",
                         "2026-03-02", "--config", str(config)])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["day"], r["rate"], r["currency"], r["gross"], r["tax"], r["refunds"],
             r["refund_tax"], r["items"]) for r in rows] == [
        ("2026-03-02", "7%", "EUR", "2.98", "0.19", "0.53", "0.04", "2"),
        ("2026-03-02", "19%", "EUR", "0.00", "0.00", "1.27", "0.20", "0")]
    code, _, err = _run(["report", "sales", "--from", "2026-03-02", "--to", "2026-03-01",
                         "--config", str(config)])
    assert code == 1 and "--to 2026-03-01 is before --from 2026-03-02" in err


def test_sales_text_writes_money_in_german(shop):
    config, _ = shop
    code, out, _ = _run(["report", "sales", "--config", str(config)])
    assert code == 0
    assert "5,55\xa0€" in out and "0,88\xa0€" in out
    assert "total    19%: gross 5,55\xa0€, net 4,67\xa0€, tax 0,88\xa0€, refunds 1,27\xa0€" in out


def test_stock_per_slot(shop):
    config, _ = shop
    code, out, _ = _run(["report", "stock", "--json", "--config", str(config)])
    rows = {r["slot"]: r for r in json.loads(out)["rows"]}
    assert rows["A1"] == {"slot": "A1", "sku": "cola-330", "on_hand": 6, "sold": 2,
                          "restocked": 5 + 4, "shrinkage": 1}
    assert rows["B4"] == {"slot": "B4", "sku": "lager-330", "on_hand": 3, "sold": 0,
                          "restocked": 3, "shrinkage": 0}
    code, out, _ = _run(["report", "stock", "--csv", "--to", "2000-01-01", "--config",
                         str(config)])
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert parsed[0] == {"slot": "A1", "sku": "cola-330", "on_hand": "6", "sold": "0",
                         "restocked": "0", "shrinkage": "0"}


def test_receipt_reprints_a_known_session_and_refuses_an_unknown_one(shop, capsys):
    config, _ = shop
    assert cli.main(["receipt", "s-1", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 x Cola 330 ml can @ 1,80\xa0€ = 3,60\xa0€ (19%)" in out
    assert "    7% on 1,49\xa0€: net 1,39\xa0€, tax 0,10\xa0€" in out
    assert "   19% on 3,60\xa0€: net 3,03\xa0€, tax 0,57\xa0€" in out
    assert "Refunded  1,80\xa0€ (tax 0,24\xa0€)" in out
    assert "Tax reg.  DE123456789" in out
    assert cli.main(["receipt", "s-1", "--stored", "--config", str(config)]) == 0
    assert "Tax reg.  DE123456789" in capsys.readouterr().out
    assert cli.main(["receipt", "s-404", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "receipt: no session 's-404'" in err and "Traceback" not in err


def test_verify_age_records_who_how_and_when(shop, capsys):
    config, alice = shop
    before = dt.datetime.now(dt.timezone.utc)
    assert cli.main(["accounts", "verify-age", str(alice.id), "--by", "op-anna", "--method",
                     "id_card", "--config", str(config)]) == 0
    assert f"account {alice.id}: age verified by op-anna (id_card) at" in capsys.readouterr().out
    cfg = load_config(config)
    from billing.models import Account
    with open_db(cfg)() as s:
        account = s.get(Account, alice.id)
        assert (account.age_verified_by, account.age_verification_method) == ("op-anna",
                                                                               "id_card")
        assert before <= account.age_verified_at <= dt.datetime.now(dt.timezone.utc)
    assert cli.main(["accounts", "verify-age", "999", "--by", "op-anna", "--method", "id_card",
                     "--config", str(config)]) == 1
    assert "999" in capsys.readouterr().err
