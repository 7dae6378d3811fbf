"""`cabinet bench fleet` end to end, small: real broker (services.sh's), real `fleet serve`
processes, a database of its own on the test PostgreSQL server; the JSON has exactly the keys
the issue names (and the run's shape), nothing is lost or duplicated although some facts are
published twice, and the lag percentiles are real measurements."""
from __future__ import annotations

import json

import pytest

from cabinet import cli
from cabinet.errors import CabinetError
from cabinet.fleet import bench

KEYS = {"messages_per_s", "lag_p50_ms", "lag_p95_ms", "lost", "duplicated"}


def test_bench_fleet_json_reports_throughput_lag_and_no_loss(mqtt_url, fleet_db, tmp_path,
                                                            capsys):
    from billing.db import make_engine
    server = make_engine(fleet_db).url.set(database="postgres").render_as_string(
        hide_password=False)
    out = tmp_path / "bench-fleet.json"
    code = cli.main(["bench", "fleet", "--cabinets", "20", "--messages", "400", "--rate", "0",
                     "--instances", "1", "--duplicates", "0.05", "--broker", mqtt_url,
                     "--db", server, "--json", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert KEYS <= set(printed)
    assert printed["lost"] == 0 and printed["duplicated"] == 0 and code == 0
    assert printed["messages"] == 400 and printed["cabinets"] == 20
    assert printed["duplicates_sent"] == 20, "5% of 400 facts published a second time"
    assert printed["messages_per_s"] > 0
    assert 0 < printed["lag_p50_ms"] <= printed["lag_p95_ms"] < 60_000


@pytest.mark.parametrize("bad, message", [
    ({"cabinets": 0}, "bench fleet --cabinets 0: give 1 or more"),
    ({"instances": 0}, "bench fleet --instances 0: give 1 or more"),
    ({"duplicates": 1.5}, "bench fleet --duplicates 1.5: give a share from 0 to 1"),
])
def test_bench_fleet_refuses_a_bad_shape_before_starting_anything(bad, message):
    shape = dict(cabinets=1, messages_total=1, rate=0, instances=1, publishers=1, duplicates=0,
                 batch=10, broker_url="mqtt://127.0.0.1:1", server_url="postgresql://x@h/db",
                 timeout_s=1)
    with pytest.raises(CabinetError, match=message):
        bench.run(**{**shape, **bad})
