"""`cabinet fleet serve` against real Mosquitto and PostgreSQL, as real processes.

Each test drives simulated cabinets (cabinet/fleet/sim_fleet.py: the contract's ids, seqs,
persistent sessions, last will) through a broker into back-office subprocesses and then reads
the fleet database as committed: every fact stored once, every derived figure (stock per slot,
sales per day, open alarms, review queue, status, last seen) exactly what the cabinets did,
whatever the broker, the network or a killed instance did meanwhile.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select, text

from cabinet import cli
from cabinet.errors import CabinetError
from cabinet.fleet import messages, serve as serve_mod
from cabinet.fleet.serve import BackOffice, BrokerError, mqtt_client, parse_broker
from cabinet.fleet.sim_fleet import SimCabinet, close_all, connect_all, fleet, flush_all
from cabinet.fleet.store import (Delivery, FleetAlarm, FleetCabinet, FleetDbError,
                                 FleetDeadLetter, FleetDown, FleetInstance, FleetMessage,
                                 FleetReceipt, FleetReview, FleetStock, Ingest, open_fleet_db)
from fleet_support import unique
from firmware_bridge.clock import ManualClock
from waiting import wait_until


def stored(view, cabinets: list[SimCabinet], timeout_s: float = 30.0) -> None:
    """Wait until every fact the cabinets made is in fleet_messages."""
    want = {i for c in cabinets for i in c.expected.ids}
    prefix = _common_prefix([c.id for c in cabinets])
    wait_until(lambda: want <= set(view.ids(prefix)),
               f"{len(want)} messages stored", timeout_s=timeout_s, poll_s=0.05)


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i]


def assert_derived(view, cab: SimCabinet) -> None:
    """The fleet database says exactly what this cabinet did."""
    e = cab.expected
    assert sorted(view.ids_of(cab.id)) == sorted(e.ids)     # no loss, no extra
    [row] = view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)
    assert row.messages == len(e.ids), "a message was applied twice (or not at all)"
    assert row.last_seq == e.last_seq and row.last_seen == e.last_at
    stock = {r.slot: r.qty for r in view.all(FleetStock, FleetStock.cabinet_id == cab.id)}
    assert stock == {slot: q for slot, q in e.stock.items()}
    with view.sessions() as s:
        sales = dict(((d, cur), tot) for d, cur, tot in s.execute(
            select(FleetReceipt.day, FleetReceipt.currency, func.sum(FleetReceipt.total))
            .where(FleetReceipt.cabinet_id == cab.id)
            .group_by(FleetReceipt.day, FleetReceipt.currency)))
    assert sales == dict(e.sales)
    alarms = view.all(FleetAlarm, FleetAlarm.cabinet_id == cab.id)
    assert {a.alarm_id for a in alarms if a.open} == e.open_alarms
    reviews = view.all(FleetReview, FleetReview.cabinet_id == cab.id)
    assert {r.session_id for r in reviews if r.flagged and r.resolved_at is None} == e.review


def assert_derived_all(view, cabs: list[SimCabinet]) -> None:
    """assert_derived for many cabinets at once: one query per table, not five per cabinet."""
    ids = {c.id for c in cabs}
    prefix = _common_prefix(sorted(ids))
    with view.sessions() as s:
        stored_ids = Counter(cid for (cid,) in s.execute(
            select(FleetMessage.cabinet_id).where(FleetMessage.cabinet_id.startswith(prefix))))
        applied = {r.cabinet_id: (r.messages, r.last_seq, r.last_seen) for r in s.scalars(
            select(FleetCabinet).where(FleetCabinet.cabinet_id.startswith(prefix)))}
        stock = {(r.cabinet_id, r.slot): r.qty for r in s.scalars(
            select(FleetStock).where(FleetStock.cabinet_id.startswith(prefix)))}
        sales = {(cid, d, cur): tot for cid, d, cur, tot in s.execute(
            select(FleetReceipt.cabinet_id, FleetReceipt.day, FleetReceipt.currency,
                   func.sum(FleetReceipt.total))
            .where(FleetReceipt.cabinet_id.startswith(prefix))
            .group_by(FleetReceipt.cabinet_id, FleetReceipt.day, FleetReceipt.currency))}
    assert stored_ids == {c.id: len(c.expected.ids) for c in cabs}
    assert applied == {c.id: (len(c.expected.ids), c.expected.last_seq, c.expected.last_at)
                       for c in cabs}, "a message applied twice, or not at all"
    assert stock == {(c.id, slot): q for c in cabs for slot, q in c.expected.stock.items()}
    assert sales == {(c.id, d, cur): t for c in cabs for (d, cur), t in c.expected.sales.items()}


def blocked(view, client_id: str) -> bool:
    """Is this back-office instance's connection waiting for a lock (inside its batch)?"""
    with view.engine.connect() as conn:
        return bool(conn.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
            "wait_event_type = 'Lock' AND application_name = :name"), {"name": client_id}))


def shop(cab: SimCabinet, sales: int = 3) -> None:
    cab.restock(6)
    for i in range(sales):
        cab.sale(flagged=(i == 1))
    a = cab.raise_alarm()
    cab.raise_alarm("temperature_high")
    cab.clear_alarm(a)
    cab.health(True)


# --- one cabinet, one instance -----------------------------------------------------------------
def test_every_fact_is_stored_once_and_derived(broker, serve, fleet_view):
    group = unique("g")
    serve.here(broker.url, slot="a", group=group)
    cab = SimCabinet(unique("one"))
    cab.connect(broker.broker)
    shop(cab, sales=4)
    first = cab.sale(flagged=True)
    cab.correct(first, total=0)          # reviewed: refunded in full
    assert cab.flush() == len(cab.expected.ids)
    stored(fleet_view, [cab])
    assert_derived(fleet_view, cab)
    [row] = fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)
    assert row.status == "online" and row.in_service is True
    assert len(cab.expected.review) == 1 and len(cab.expected.open_alarms) == 1
    cab.close()
    wait_until(lambda: fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)[0]
               .status == "offline", "the cabinet's goodbye stored as offline")


def test_duplicate_deliveries_change_nothing(mqtt_url, serve, fleet_view):
    """On the services.sh broker: every fact published again (an outbox that crashed before
    it recorded the PUBACKs), and twice more in one burst; nothing changes."""
    serve.here(mqtt_url, slot="a", group=unique("g"))
    cab = SimCabinet(unique("dup"))
    cab.connect(parse_broker(mqtt_url))
    shop(cab)
    cab.flush()
    stored(fleet_view, [cab])
    assert_derived(fleet_view, cab)
    delivered = cab.outbox_history()
    cab.publish_again(delivered)
    cab.publish_again(delivered + delivered)
    cab.sale()                           # published after the duplicates, on the same session:
    cab.flush()                          # stored means the duplicates before it were handled
    stored(fleet_view, [cab])
    assert_derived(fleet_view, cab)
    cab.close()


def test_malformed_messages_are_dead_lettered_named_and_acked(broker, serve, fleet_view):
    group = unique("g")
    first = serve.here(broker.url, slot="a", group=group)
    cab = SimCabinet(unique("bad"))
    cab.connect(broker.broker)
    pub = cab.client
    good = messages.UpMessage(id=f"{cab.id}/health/x1", cabinet=cab.id, kind="health", seq=1,
                              at=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc),
                              body={"in_service": True})
    envelope = json.loads(messages.encode_up(good))
    no_seq = {k: v for k, v in envelope.items() if k != "seq"}
    other = dict(envelope, cabinet="someone-else", id="someone-else/health/x1")
    for topic, payload in ((f"cabinet/{cab.id}/up/health", b"\xff not json"),
                           (f"cabinet/{cab.id}/up/health", json.dumps(no_seq).encode()),
                           (f"cabinet/{cab.id}/up/health", json.dumps(other).encode()),
                           (f"cabinet/{cab.id}/status", b'{"status": "asleep", "at": "x"}'),
                           (f"cabinet/{cab.id}/status", b"")):   # a retained status cleared:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)       # not a dead letter
    cab.sale()
    cab.flush()
    stored(fleet_view, [cab])
    where = FleetDeadLetter.topic.startswith(f"cabinet/{cab.id}/")
    dead = wait_until(lambda: len(fleet_view.all(FleetDeadLetter, where)) == 4
                      and fleet_view.all(FleetDeadLetter, where), "4 dead letters")
    errors = sorted(d.error for d in dead)
    assert any("field 'payload'" in e and "not UTF-8 JSON" in e for e in errors), errors
    assert any("field 'seq': missing" in e for e in errors), errors
    assert any("field 'cabinet'" in e and "came on" in e for e in errors), errors
    assert any("status message field 'status'" in e for e in errors), errors
    assert sorted(fleet_view.ids_of(cab.id)) == sorted(cab.expected.ids)
    # acked: a new instance on the same slot (the same session) gets none of them again
    first.stop(drain=False)                     # the session stays, with anything unacked
    serve.here(broker.url, slot="a", group=group)
    cab.sale()
    cab.flush()
    stored(fleet_view, [cab])
    assert fleet_view.count(FleetDeadLetter, where) == 4
    cab.close()


# --- the broker restarts -----------------------------------------------------------------------
def test_a_broker_restart_loses_nothing_queued_for_a_stopped_back_office(broker, serve,
                                                                          fleet_view):
    group = unique("g")
    office = serve.here(broker.url, slot="a", group=group)
    cab = SimCabinet(unique("rst"))
    cab.connect(broker.broker)
    shop(cab)
    cab.flush()
    stored(fleet_view, [cab])
    office.stop(drain=False)                    # the back office is gone (its session stays)
    for _ in range(5):
        cab.sale()
    assert cab.flush() == 15                    # the broker holds them for the slot's session
    broker.restart()                            # ... on disk, across its own restart
    serve.here(broker.url, slot="a", group=group)    # the slot's session resumed
    wait_until(lambda: cab._connected.is_set(), "the cabinet reconnected after the restart",
               timeout_s=15)
    for _ in range(3):                          # and sells on after the restart
        cab.sale()
    assert cab.flush() == 9
    stored(fleet_view, [cab])
    assert_derived(fleet_view, cab)
    cab.close()


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(broker, serve, fleet_view):
    group = unique("g")
    serve.here(broker.url, slot="a", group=group)
    cabs = fleet(5, prefix=unique("mid"))
    for c in cabs:
        c.connect(broker.broker)
        shop(c, sales=10)
    flushing = [threading.Thread(target=c.flush, kwargs={"timeout_s": 5}) for c in cabs]
    for t in flushing:
        t.start()
    broker.restart()
    for t in flushing:
        t.join(30)
    wait_until(lambda: all(c._connected.is_set() for c in cabs), "cabinets reconnected",
               timeout_s=15)
    for c in cabs:          # what the restart interrupted is still in the outbox: again
        wait_until(lambda: c.flush(timeout_s=5) >= 0 and not c.outbox,
                   f"{c.id} outbox empty", timeout_s=30, poll_s=0.2)
    stored(fleet_view, cabs)
    for c in cabs:
        assert_derived(fleet_view, c)
        c.close()


def seqs_stored(view, cabinet_id: str) -> list[int]:
    with view.sessions() as s:
        return list(s.scalars(select(FleetMessage.seq).where(FleetMessage.cabinet_id == cabinet_id)
                              .order_by(FleetMessage.seq)))


GAPS_NOW = serve_mod.GapPolicy(every_s=0.2, grace_s=0.5, retry_s=5.0, ttl_s=60.0)


def test_what_a_broker_restart_drops_is_asked_for_again_and_stored_once(broker, serve,
                                                                         fleet_view, tmp_path):
    """Mosquitto 2.0.11 does not restore a shared subscription across its restart until a
    member of the group subscribes again: what cabinets publish meanwhile is PUBACKed and
    delivered to no one, and they have marked it sent. The back office sees the seq gap once
    later messages arrive, sends each cabinet a signed `resend`, and ends with every seq
    1..N exactly once. Without the resend orders the wait for the dropped ids times out."""
    key = messages.new_signing_key()
    group = unique("g")
    office = serve.here(broker.url, slot="a", group=group, signing_key=key, gaps=GAPS_NOW)
    cabs = fleet(3, prefix=unique("gap"), public_key=key.public_key())
    for c in cabs:
        c.connect(broker.broker)
        shop(c)
        assert c.flush() == len(c.expected.ids)
    stored(fleet_view, cabs)
    office.stop(drain=False)                # no back office subscribed for a while ...
    broker.restart()                        # ... across a broker restart
    wait_until(lambda: all(c._connected.is_set() for c in cabs), "cabinets reconnected",
               timeout_s=15)
    dropped = {}
    for c in cabs:
        before = len(c.expected.ids)
        for _ in range(4):
            c.sale()
        dropped[c.id] = set(c.expected.ids[before:])
        assert c.flush() == len(dropped[c.id])      # acked by the broker: sent, for the cabinet
    key_file = tmp_path / "signing.pem"     # the slot comes back as `cabinet fleet serve`
    key_file.write_bytes(messages.private_key_pem(key))
    serve.start(broker.url, slot="a", group=group,
                args=("--signing-key", str(key_file), "--gap-grace", "0.5", "--gap-every", "0.2"))
    for c in cabs:                           # later facts arrive and show the gap
        c.health(True)
        assert c.flush() == 1
    wait_until(lambda: all(c.expected.ids[-1] in fleet_view.ids_of(c.id) for c in cabs),
               "the facts after the restart window stored", timeout_s=20, poll_s=0.05)
    stored(fleet_view, cabs, timeout_s=30)
    for c in cabs:
        assert seqs_stored(fleet_view, c.id) == list(range(1, c.expected.last_seq + 1))
        assert_derived(fleet_view, c)       # each applied exactly once: 0 lost, 0 duplicated
        first_lost = min(m.seq for m in c.outbox_history() if m.id in dropped[c.id])
        assert c.resends and c.resends[0] == (first_lost, first_lost + 11), \
            f"{c.id}: the resend order did not name the dropped seqs: {c.resends}"
    orders = fleet_view.all(FleetDown, FleetDown.kind == "resend")
    assert {o.topic for o in orders} >= {messages.down_topic(c.id, "resend") for c in cabs}
    close_all(cabs)


def test_a_gap_is_not_asked_for_before_its_grace_nor_again_before_its_retry(broker, serve,
                                                                             fleet_view):
    """A gap younger than the grace may still be in flight on another instance; an order
    already sent is not repeated before `retry_s`; without a signing key nothing is asked."""
    key = messages.new_signing_key()
    clock = ManualClock()
    now = [dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)]
    office = BackOffice(fleet_view.engine.url.render_as_string(hide_password=False),
                        broker.broker, slot="a", group=unique("g"), clock=clock,
                        now=lambda: now[0], signing_key=key,
                        gaps=serve_mod.GapPolicy(every_s=1, grace_s=30, retry_s=120, ttl_s=600))
    cab = SimCabinet(unique("grace"))
    for _ in range(3):
        cab.sale(take=1)                     # seqs 1..9
    kept = [m for m in cab.outbox if m.seq not in (4, 5)]
    office.ingest.store([Delivery(m.topic(), messages.encode_up(m)) for m in kept])
    try:
        now[0] += dt.timedelta(seconds=29)
        assert office.ask_for_gaps() == []                   # younger than the grace
        now[0] += dt.timedelta(seconds=2)
        assert office.ask_for_gaps() == [(cab.id, 4, 5)]
        now[0] += dt.timedelta(seconds=100)
        assert office.ask_for_gaps() == []                   # asked 100 s ago
        now[0] += dt.timedelta(seconds=21)
        assert office.ask_for_gaps() == [(cab.id, 4, 5)]     # still missing after the retry
        office.signing_key = None
        office.subscribed.set()
        office._gap_pass()
        assert fleet_view.count(FleetDown, FleetDown.topic == messages.down_topic(
            cab.id, "resend")) == 2, "a pass without a signing key ordered a resend"
    finally:
        office.engine.dispose()


# --- instances ---------------------------------------------------------------------------------
def test_a_burst_from_200_cabinets_is_stored_once(broker, serve, fleet_view):
    group = unique("g")
    serve.start(broker.url, slot="a", group=group)     # one process, one here
    serve.here(broker.url, slot="b", group=group)
    cabs = fleet(200, prefix=unique("burst"))
    connect_all(cabs, broker.broker)
    for c in cabs:
        c.sale()
        c.health(True)
    flush_all(cabs)                              # all 200 at once: 800 messages
    stored(fleet_view, cabs, timeout_s=60)
    assert_derived_all(fleet_view, cabs)
    close_all(cabs)


def test_a_cabinet_offline_for_an_hour_catches_up(broker, serve, fleet_view):
    serve.here(broker.url, slot="a", group=unique("g"))
    cab = SimCabinet(unique("off"), step_s=60)
    cab.connect(broker.broker)
    cab.restock(20)
    cab.sale()
    cab.flush()
    stored(fleet_view, [cab])
    seen_before = cab.expected.last_at
    cab.drop()                                   # the network goes; the broker sends the will
    wait_until(lambda: fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)[0]
               .status == "offline", "the last will stored as offline")
    for _ in range(60):                          # an hour of sales, one a minute, offline
        cab.sale()
    cab.health(True)
    assert cab.expected.last_at - seen_before >= dt.timedelta(hours=1)
    assert fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)[0].last_seen == \
        seen_before
    cab.connect(broker.broker)
    assert cab.flush() == 60 * 3 + 1
    stored(fleet_view, [cab])
    assert_derived(fleet_view, cab)
    [row] = fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)
    assert row.status == "online"
    seqs = sorted(m.seq for m in fleet_view.all(FleetMessage, FleetMessage.cabinet_id == cab.id))
    assert seqs == list(range(1, cab.seq + 1))
    cab.close()


# --- down: signed, expiring orders --------------------------------------------------------------
def test_send_signs_a_command_the_cabinet_verifies_and_records_it(broker, fleet_db, fleet_view,
                                                                  tmp_path, capsys):
    key_file = tmp_path / "signing.pem"
    assert serve_mod.main(["keygen", str(key_file)]) == 0
    public = messages.load_public_key(capsys.readouterr().out.encode(), "stdout")
    cabinet_id = unique("cmd")
    got: list[mqtt.MQTTMessage] = []
    client, props = mqtt_client(messages.cabinet_client_id(cabinet_id), broker.broker)
    client.on_message = lambda c, u, m: got.append(m)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    serve_mod.connect_blocking(client, broker.broker, props, clean_start=False)
    client.subscribe(messages.cabinet_down_subscription(cabinet_id), qos=1)
    assert subscribed.wait(5), "no SUBACK"
    client.disconnect()                          # offline: the broker queues the order
    client.loop_stop()
    assert serve_mod.main(["send", cabinet_id, "command", "out_of_service", "door", "jammed",
                           "--signing-key", str(key_file), "--ttl", "600", "--db", fleet_db,
                           "--broker", broker.url]) == 0
    sent = json.loads(capsys.readouterr().out)
    serve_mod.connect_blocking(client, broker.broker, props, clean_start=False)
    wait_until(lambda: got, "the queued order delivered on reconnect")
    client.disconnect()
    client.loop_stop()
    msg = messages.decode_down(got[0].payload, got[0].topic)
    assert msg.id == sent["sent"] and msg.body == {"command": "out_of_service",
                                                  "reason": "door jammed"}
    assert got[0].topic == f"cabinet/{cabinet_id}/down/command"
    messages.check_down(msg, public, msg.issued_at, applied=())       # signature good
    assert msg.expires_at - msg.issued_at == dt.timedelta(seconds=600)
    with pytest.raises(messages.DownRefused, match="expired"):
        messages.check_down(msg, public, msg.expires_at, applied=())
    forged = messages.DownMessage(**{**msg.__dict__, "body": {"command": "back_in_service"}})
    with pytest.raises(messages.DownRefused, match="bad_signature"):
        messages.check_down(forged, public, msg.issued_at, applied=())
    [row] = fleet_view.all(FleetDown, FleetDown.id == msg.id)
    assert row.published_at is not None and row.topic == got[0].topic


def test_fleet_commands_exit_2_when_the_broker_or_database_is_away_1_for_bad_input(
        broker, fleet_db, tmp_path, capsys):
    """Through `cabinet fleet ...` (cabinet/cli.py): one line naming the place, no traceback;
    2 for a broker or database that does not answer, 1 for what the operator typed wrong."""
    from billing.db import make_engine
    key = tmp_path / "k.pem"
    assert cli.main(["fleet", "keygen", str(key)]) == 0
    assert "BEGIN PUBLIC KEY" in capsys.readouterr().out
    closed = f"mqtt://127.0.0.1:{_closed_port()}"
    send = ["fleet", "send", "c1", "command", "out_of_service", "--signing-key", str(key)]
    assert cli.main(send + ["--db", fleet_db, "--broker", closed]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cabinet: broker {closed}: ") and "is it running?" in err
    nowhere = make_engine(fleet_db).url.set(port=_closed_port()).render_as_string(
        hide_password=False)
    assert cli.main(send + ["--db", nowhere, "--broker", broker.url]) == 2
    assert "does not answer" in capsys.readouterr().err
    assert cli.main(send + ["--db", fleet_db, "--broker", "http://x"]) == 1
    assert "give mqtt://HOST:PORT" in capsys.readouterr().err
    missing = tmp_path / "nowhere.pem"           # serve's key for resend orders: named, exit 1
    assert cli.main(["fleet", "serve", "--db", fleet_db, "--broker", broker.url,
                     "--signing-key", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"signing key {missing}: not found" in err and "cabinet fleet keygen" in err


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_send_refuses_a_bad_body_and_a_missing_key_naming_them(broker, fleet_db, tmp_path):
    with pytest.raises(CabinetError, match=r"signing key .*missing.pem: not found"):
        serve_mod.main(["send", "c1", "command", "out_of_service", "--signing-key",
                        str(tmp_path / "missing.pem"), "--db", fleet_db, "--broker", broker.url])
    key_file = tmp_path / "k.pem"
    serve_mod.main(["keygen", str(key_file)])
    with pytest.raises(messages.MessageError, match=r"field 'body.command': 'explode'"):
        serve_mod.main(["send", "c1", "command", "explode", "--signing-key", str(key_file),
                        "--db", fleet_db, "--broker", broker.url])
    with pytest.raises(CabinetError, match="fleet keygen .*exists"):
        serve_mod.main(["keygen", str(key_file)])


def test_bad_broker_and_database_urls_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(BrokerError, match=r"give mqtt://HOST:PORT"):
        parse_broker("http://127.0.0.1:1883")
    with pytest.raises(BrokerError, match="the port is not a number"):
        parse_broker("mqtt://127.0.0.1:99999")
    with pytest.raises(BrokerError, match="TLS ca file .*nope.pem: not found"):
        parse_broker("mqtts://broker.example", ca=str(tmp_path / "nope.pem"))
    b = parse_broker("mqtts://cab-7:s%40cret@broker.example", ca=None)
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.example", 8883, True,
                                                               "cab-7", "s@cret")
    with pytest.raises(FleetDbError, match="the fleet database is PostgreSQL"):
        open_fleet_db(f"sqlite:///{tmp_path / 'fleet.db'}")


def test_an_instance_killed_mid_stream_is_taken_over_without_loss_or_duplicates(
        broker, fleet_db, fleet_view, tmp_path):
    """`cabinet fleet serve --instances 2`: a child SIGKILLed while it is inside a batch (held
    there by a table lock, its connection found by its client id) is restarted on its slot by
    the supervisor; the new process resumes the slot's session, gets what the killed one had
    not acked, and nothing is lost or doubled. (An ack before the commit fails this test.)"""
    group = unique("g")
    log = open(tmp_path / "supervisor.log", "wb")
    sup = subprocess.Popen([sys.executable, "-m", "cabinet.fleet.serve", "serve", "--db",
                            fleet_db, "--broker", broker.url, "--instances", "2", "--slot", "w",
                            "--group", group, "--batch", "20"], stdout=log,
                           stderr=subprocess.STDOUT)
    w0 = serve_mod.slot_client_id(group, "w-0")
    ids = [w0, serve_mod.slot_client_id(group, "w-1")]
    try:
        def subscribed(client_id):
            rows = fleet_view.all(FleetInstance, FleetInstance.client_id == client_id)
            return rows and rows[0].subscribed_at is not None and rows[0].stopped_at is None \
                and rows[0]
        wait_until(lambda: all(subscribed(i) for i in ids), "both slots subscribed",
                   timeout_s=30)
        first_pid = subscribed(w0).pid
        cabs = fleet(8, prefix=unique("sup"))
        connect_all(cabs, broker.broker)
        for c in cabs:
            c.restock(10)
            for _ in range(8):
                c.sale()
        flush_all(cabs[:4])
        stored(fleet_view, cabs[:4])
        with fleet_view.engine.connect() as lock:
            tx = lock.begin()
            lock.execute(text("LOCK TABLE fleet_cabinets IN SHARE ROW EXCLUSIVE MODE"))
            flushing = threading.Thread(target=flush_all, args=(cabs[4:],))
            flushing.start()
            wait_until(lambda: blocked(fleet_view, w0), "slot w-0 blocked mid-batch",
                       timeout_s=30)
            os.kill(first_pid, signal.SIGKILL)
            wait_until(lambda: fleet_view.all(FleetInstance, FleetInstance.client_id == w0,
                                              FleetInstance.pid != first_pid),
                       "the supervisor restarting slot w-0", timeout_s=30)
            tx.rollback()
        flushing.join(60)
        stored(fleet_view, cabs, timeout_s=60)
        assert_derived_all(fleet_view, cabs)
        close_all(cabs)
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)
        log.close()
    out = (tmp_path / "supervisor.log").read_text()
    assert '"restarting": "w-0"' in out and sup.returncode == 0, out[-2000:]


def test_the_newest_moves_par_wins_whatever_order_the_moves_arrive_in(fleet_view):
    """A planogram change raises A1's par from 6 to 8: the move made after it carries 8. Stored
    before the older move (another instance's batch), in one batch or in two, par stays 8."""
    for split in (False, True):
        cab = SimCabinet(unique("par"))
        cab.restock(5)                                   # A1 at par 6
        cab._move("A1", "cola-330", 1, "restock", cab.tick(), par=8)
        moves = [m for m in cab.outbox if m.body["slot"] == "A1"]
        assert [m.body["par"] for m in moves] == [6, 8]
        late_first = [Delivery(m.topic(), messages.encode_up(m)) for m in reversed(moves)]
        ingest = Ingest(fleet_view.sessions, "fleet-test")
        for batch in ([late_first[:1], late_first[1:]] if split else [late_first]):
            ingest.store(batch)
        [row] = fleet_view.all(FleetStock, FleetStock.cabinet_id == cab.id)
        assert (row.qty, row.par) == (6, 8), f"split={split}"


def test_a_message_the_database_refuses_is_dead_lettered_alone_and_the_rest_stored(fleet_view):
    """A well-formed message whose value the database cannot hold (a 150-character session id
    for a 100-character column) must not stall the stream: the batch is halved until it is
    alone, it goes to the dead letters with the database's reason, the rest are stored."""
    cab = SimCabinet(unique("poison"))
    cab.restock(5)
    for _ in range(6):
        cab.sale()
    good = [Delivery(m.topic(), messages.encode_up(m)) for m in cab.outbox]
    sid = "s" * 150
    bad = messages.UpMessage(id=messages.receipt_message_id(cab.id, sid), cabinet=cab.id,
                             kind="receipt", seq=999, at=cab.now(),
                             body={"session_id": sid, "total": 100, "currency": "EUR"})
    batch = good[:9] + [Delivery(bad.topic(), messages.encode_up(bad))] + good[9:]
    result = Ingest(fleet_view.sessions, "fleet-test").store(batch)
    assert (result.new, result.dead) == (len(good), 1)
    assert sorted(fleet_view.ids_of(cab.id)) == sorted(cab.expected.ids)
    [dead] = fleet_view.all(FleetDeadLetter, FleetDeadLetter.topic == bad.topic())
    assert "the fleet database refused it" in dead.error and "too long" in dead.error
    assert json.loads(dead.payload)["id"] == bad.id
    [row] = fleet_view.all(FleetCabinet, FleetCabinet.cabinet_id == cab.id)
    assert row.messages == len(good)


def test_a_slot_that_keeps_dying_at_start_is_restarted_later_and_later():
    """The first exit (a killed process) restarts at once; repeated quick exits back off from
    0.5 s, doubling, to 30 s, so a back office that cannot start does not spin."""
    assert [serve_mod.restart_delay(n) for n in range(1, 10)] == \
        [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_database_lost_mid_batch_is_retried_on_the_clock_and_nothing_is_lost(
        broker, fleet_db, fleet_view):
    """The instance's connection is killed (pg_terminate_backend) while it is inside a batch:
    the batch is kept and not acked, the writer waits its backoff on the Clock port (a
    ManualClock here: nothing is retried until the test moves it), then stores it once."""
    clock = ManualClock()
    office = BackOffice(fleet_db, broker.broker, slot="a", group=unique("g"), clock=clock)
    office.start()
    try:
        wait_until(office.subscribed.is_set, "subscribed")
        cab = SimCabinet(unique("pgdown"))
        cab.connect(broker.broker)
        with fleet_view.engine.connect() as lock:
            tx = lock.begin()
            lock.execute(text("LOCK TABLE fleet_cabinets IN SHARE ROW EXCLUSIVE MODE"))
            shop(cab)
            cab.flush()
            wait_until(lambda: blocked(fleet_view, office.client_id), "the batch blocked")
            lock.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                              "application_name = :name AND wait_event_type = 'Lock'"),
                         {"name": office.client_id})
            tx.rollback()
        clock.wait_for_sleepers(1, timeout_s=10)        # the writer waits 0.1 s to retry
        assert fleet_view.ids_of(cab.id) == [], "a batch whose commit failed left rows"
        clock.advance(0.1)
        stored(fleet_view, [cab])
        assert_derived(fleet_view, cab)
        cab.close()
    finally:
        office.stop()
