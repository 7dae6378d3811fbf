"""The cabinet's fleet agent against a real Mosquitto broker on loopback.

A paho subscriber stands in for the back office. The cabinet's parts are the real ones on a
SQLite file (billing with the sandbox gateway, alarms, inventory moves); the agent's time (the
collect and health cadence, reconnect back-off, expiry) is a ManualClock, so an hour offline
takes a second. What runs in real time is the broker and the sockets, waited on with
tests/waiting.wait_until.

The broker is tests/fleet/conftest.py's `broker`: a Mosquitto of the test's own on a free
loopback port, with persistence, so a restart keeps the subscriber's session as a production
broker would.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import update

from billing import Billing, GatewayClient, init_db, make_engine, session_factory
from billing.crypto import SecretBox
from billing.gateway_server import SandboxGateway
from billing.records import Line
from cabinet.fleet import messages as m
from cabinet.fleet.actions import REMOTE_OUT_OF_SERVICE, CabinetActions
from cabinet.fleet.agent import AgentSettings, BrokerSettings, FleetAgent
from cabinet.fleet.down import DownHandler
from cabinet.fleet.outbox import FleetOutbox
from cabinet.fleet.tables import OutboxRow
from cabinet.inventory import InventoryMove
from cabinet.journal import Alarms
from firmware_bridge.clock import ManualClock
from waiting import wait_until

CAB = "cab-1"
KEY = SecretBox(bytes(range(32)), origin="the fleet tests' key")
ROOT = Path(__file__).resolve().parents[2]


class BackOffice:
    """The back office's stand-in: a persistent-session paho subscriber on the up and status
    topics that keeps every delivery, duplicates included."""

    def __init__(self, port: int):
        self.deliveries: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=m.backoffice_client_id("test-" + uuid.uuid4().hex),
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("cabinet/+/up/#", 1), ("cabinet/+/status", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.deliveries.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def ups(self) -> list[m.UpMessage]:
        with self._lock:
            got = [d for d in self.deliveries if "/up/" in d[0]]
        return [m.decode_up(payload, topic=topic) for topic, payload, _ in got]

    def statuses(self) -> list[str]:
        with self._lock:
            got = [d for d in self.deliveries if d[0].endswith("/status")]
        return [m.decode_status(payload).status for _, payload, _ in got]

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def gateway():
    gw = SandboxGateway()
    url = gw.start()
    yield gw, url
    gw.stop()


class Cabinet:
    """The parts of one cabinet the agent reads and acts on, on one SQLite file."""

    def __init__(self, folder: Path, clock: ManualClock, gateway: tuple[SandboxGateway, str]):
        self.folder = folder
        self.url = f"sqlite:///{folder}/cabinet.db"
        folder.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.url)
        init_db(self.engine)
        InventoryMove.metadata.create_all(self.engine)
        self.db = session_factory(self.engine)
        self.clock = clock
        self.billing = Billing(self.db, GatewayClient(gateway[1], api_key=gateway[0].api_key),
                               cabinet_id=CAB, clock=self.now, secrets=KEY)
        self.account = self.billing.open_account("Ann", "tok_visa_ok").id
        self.alarms = Alarms(self.db, now=self.now)
        self.outbox = FleetOutbox(self.db, CAB, self.now)
        self.sold: list[str] = []
        self.moves = 0

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), dt.timezone.utc)

    def sell(self) -> str:
        """A session that sells one can: its hold, its capture, its stock move."""
        sid = f"s-{len(self.sold) + 1}"
        self.billing.place_hold(sid, self.account)
        self.billing.settle(sid, [Line("cola-330", "Cola", 1, 180)])
        self.move(sid)
        self.sold.append(sid)
        return sid

    def move(self, ref: str = "count") -> None:
        with self.db.begin() as s:
            s.add(InventoryMove(at=self.now(), slot_id="A1", sku="cola-330", qty=-1,
                                kind="sale", ref=ref))
        self.moves += 1

    def agent(self, port: int, *, max_inflight: int = 20, signing=None,
              broker: BrokerSettings | None = None, region: str | None = None) -> FleetAgent:
        actions = CabinetActions(db=self.db, billing=self.billing, operations=None,
                                 alarms=self.alarms, incoming_dir=self.folder / "incoming",
                                 now=self.now)
        self.down = DownHandler(self.db, (signing or SIGNING).public_key(), actions,
                                now=self.now)
        settings = AgentSettings(cabinet_id=CAB,
                                 broker=broker or BrokerSettings("127.0.0.1", port),
                                 region=region,
                                 collect_every_s=1.0, health_every_s=60.0,
                                 reconnect_first_s=1.0, reconnect_max_s=8.0,
                                 max_inflight=max_inflight)
        return FleetAgent(settings, self.outbox, self.down, clock=self.clock,
                          health=lambda: {"in_service": not self.alarms.active()},
                          jitter=lambda: 0.0)

    def close(self) -> None:
        self.engine.dispose()


SIGNING = m.new_signing_key()


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def cabinet(tmp_path, clock, gateway):
    cab = Cabinet(tmp_path / "cabinet", clock, gateway)
    yield cab
    cab.close()


@pytest.fixture
def running(request):
    """Stops every agent and back office a test started, even when it fails."""
    things: list = []
    yield things
    for thing in reversed(things):
        thing.stop() if isinstance(thing, FleetAgent) else thing.close()


def _ids(messages) -> list[str]:
    return [msg.id for msg in messages]


# --- up ----------------------------------------------------------------------------------
def test_an_hour_offline_is_caught_up_every_message_once_in_order(broker, cabinet, clock,
                                                                  running):
    """The broker is down for an hour of sales; when it is back, the back office gets every
    fact of the hour exactly once, in the outbox's order, and every row is marked sent."""
    broker.stop()                                      # the cabinet starts offline
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    t0 = clock.time()
    expected_health = []
    for minute in range(60):
        clock.wait_until_idle(1)                       # the agent waits on the clock
        if minute % 5 == 0:
            cabinet.sell()
        if minute == 20:
            cabinet.alarms.raise_("temperature", "9.5 C")
        if minute == 35:
            cabinet.alarms.clear("temperature", "back to 4 C")
        clock.advance(60)
    clock.wait_until_idle(1)
    assert not agent.connected.is_set() and agent.connects == 0
    hour = [dt.datetime.fromtimestamp(t0 + 60 * k, dt.timezone.utc) for k in range(61)]
    expected_health = [m.health_message_id(CAB, at) for at in hour]
    assert cabinet.outbox.unsent_count() == 12 * 3 + 2 + 61   # all kept while offline

    broker.start()
    office = BackOffice(broker.port)
    running.append(office)
    clock.advance(8)                                   # the longest back-off
    total = 12 * 3 + 2 + 61
    wait_until(lambda: len(office.ups()) >= total, f"{total} up messages at the back office", 20)
    wait_until(lambda: cabinet.outbox.unsent_count() == 0, "every outbox row marked sent", 10)
    got = office.ups()
    assert len(got) == total                            # nothing twice
    assert [msg.seq for msg in got] == list(range(1, total + 1))   # in order, none missing
    expected = ([m.session_message_id(CAB, s) for s in cabinet.sold]
                + [m.receipt_message_id(CAB, s) for s in cabinet.sold]
                + [m.inventory_message_id(CAB, i) for i in range(1, 13)]
                + [m.alarm_message_id(CAB, 1, "raise"), m.alarm_message_id(CAB, 1, "clear")]
                + expected_health)
    assert sorted(_ids(got)) == sorted(expected)
    # each session's stock move, outcome and receipt go out in that order
    ids = _ids(got)
    for i, sid in enumerate(cabinet.sold, start=1):
        assert ids.index(m.inventory_message_id(CAB, i)) < ids.index(
            m.session_message_id(CAB, sid)) < ids.index(m.receipt_message_id(CAB, sid))
    receipt = next(msg for msg in got if msg.id == m.receipt_message_id(CAB, "s-1"))
    assert (receipt.body["total"], receipt.body["currency"], receipt.body["charged"]) == \
        (180, "EUR", 180)
    assert "online" in office.statuses()


def test_a_broker_restart_mid_publish_loses_nothing_and_redelivers_the_same_ids(
        broker, cabinet, clock, running):
    office = BackOffice(broker.port)
    running.append(office)
    agent = cabinet.agent(broker.port, max_inflight=5)
    running.append(agent.start())
    wait_until(agent.connected.is_set, "the agent connected")
    total = 1500
    for _ in range(total):
        cabinet.move()
    clock.advance(1)                                   # the next collect takes them all
    wait_until(lambda: len(office.ups()) >= 100, "the first 100 messages", 20)
    broker.stop()
    unsent_at_restart = cabinet.outbox.unsent_count()
    assert unsent_at_restart > 0                        # it really was mid-stream
    wait_until(lambda: not agent.connected.is_set(), "the agent seeing the broker go")
    broker.start()
    clock.wait_for_sleepers(1)
    clock.advance(8)                                   # past the back-off
    wait_until(agent.connected.is_set, "the agent reconnected", 10)
    wait_until(lambda: cabinet.outbox.unsent_count() == 0, "every row acknowledged", 30)
    expected = {m.inventory_message_id(CAB, i) for i in range(1, total + 1)}
    wait_until(lambda: expected <= set(_ids(office.ups())), "every move at the back office", 20)
    got = [msg for msg in office.ups() if msg.kind == "inventory"]
    by_id: dict[str, set[bytes]] = {}
    for msg in got:
        by_id.setdefault(msg.id, set()).add(m.encode_up(msg))
    assert set(by_id) == expected                       # nothing lost
    assert all(len(versions) == 1 for versions in by_id.values())  # a redelivery is identical
    first_seen = sorted({msg.seq for msg in got})
    assert first_seen == sorted(row.seq for row in cabinet.outbox.rows()
                                if row.kind == "inventory")
    assert agent.connects == 2


def test_a_redelivery_after_a_lost_acknowledgement_carries_the_same_ids(broker, cabinet, clock,
                                                                       running):
    """A crash between the PUBACK and its commit: the restarted agent sends those rows again,
    byte for byte, so the back office's ON CONFLICT (id) DO NOTHING keeps one of each."""
    office = BackOffice(broker.port)
    running.append(office)
    for _ in range(3):
        cabinet.sell()
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    rows = 3 * 3 + 1                           # 3 sessions, receipts, moves; one health
    wait_until(lambda: len(cabinet.outbox.rows()) == rows and cabinet.outbox.unsent_count() == 0,
               "the first run's rows collected and sent", 10)
    wait_until(lambda: len(office.ups()) == rows, "the first run at the back office", 10)
    agent.stop()
    first = {msg.id: m.encode_up(msg) for msg in office.ups()}
    with cabinet.db.begin() as s:            # the acknowledgements never reached the disk
        s.execute(update(OutboxRow).where(OutboxRow.kind == "receipt").values(sent_at=None))
    again = cabinet.agent(broker.port)
    running.append(again.start())
    wait_until(lambda: cabinet.outbox.unsent_count() == 0, "the second run's rows sent", 10)
    wait_until(lambda: len(office.ups()) == len(first) + 3, "the 3 receipts a second time", 10)
    repeats = office.ups()[len(first):]
    assert [msg.kind for msg in repeats] == ["receipt"] * 3
    assert all(first[msg.id] == m.encode_up(msg) for msg in repeats)


def test_the_last_will_says_offline_when_the_cabinet_dies(broker, cabinet, running, tmp_path):
    """A cabinet process killed outright: the broker publishes its retained `offline` will."""
    office = BackOffice(broker.port)
    running.append(office)
    script = (
        "import sys, threading\n"
        "from billing import make_engine, session_factory\n"
        "from cabinet.fleet import messages as m\n"
        "from cabinet.fleet.agent import AgentSettings, BrokerSettings, FleetAgent\n"
        "from cabinet.fleet.outbox import FleetOutbox\n"
        "from firmware_bridge.clock import SYSTEM\n"
        "import datetime as dt\n"
        "db = session_factory(make_engine(sys.argv[1]))\n"
        "now = lambda: dt.datetime.now(dt.timezone.utc)\n"
        "agent = FleetAgent(AgentSettings(cabinet_id='cab-1', broker=BrokerSettings("
        "'127.0.0.1', int(sys.argv[2]))), FleetOutbox(db, 'cab-1', now), None, clock=SYSTEM,"
        " health=lambda: {'in_service': True}).start()\n"
        "agent.connected.wait(20)\n"
        "print('connected', flush=True)\n"
        "threading.Event().wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, cabinet.url, str(broker.port)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        wait_until(lambda: "online" in office.statuses(), "the cabinet's online status", 10)
        assert "offline" not in office.statuses()
        proc.kill()
        proc.wait(10)
        wait_until(lambda: office.statuses()[-1:] == ["offline"], "the last will", 10)
    finally:
        proc.kill()
        proc.wait(10)
    # retained: a back office that starts later still learns the cabinet is offline
    late = BackOffice(broker.port)
    running.append(late)
    wait_until(lambda: late.statuses() == ["offline"], "the retained offline status", 10)
    assert late.deliveries[0][2] is True


def test_a_clean_stop_publishes_offline_itself(broker, cabinet, clock, running):
    office = BackOffice(broker.port)
    running.append(office)
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    wait_until(lambda: "online" in office.statuses(), "online", 10)
    agent.stop()
    wait_until(lambda: office.statuses()[-1:] == ["offline"], "offline after the stop", 10)


# --- down --------------------------------------------------------------------------------
def _command(clock, command: str, id: str, *, key=SIGNING, issued_ago_s: float = 0,
             ttl_s: float = 300) -> bytes:
    issued = dt.datetime.fromtimestamp(clock.time() - issued_ago_s, dt.timezone.utc)
    return m.encode_down(m.sign_down(key, id=id, kind="command", body={"command": command},
                                     issued_at=issued, ttl_s=ttl_s))


def test_signed_commands_apply_once_and_replayed_expired_or_forged_ones_are_refused(
        broker, cabinet, clock, running):
    office = BackOffice(broker.port)
    running.append(office)
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    wait_until(agent.connected.is_set, "the agent connected")
    topic = m.down_topic(CAB, "command")
    handled = lambda n: lambda: len(cabinet.down.outcomes) >= n  # noqa: E731

    off = _command(clock, "out_of_service", "cmd-1")
    office.send(topic, off)
    wait_until(handled(1), "the out_of_service command handled", 10)
    assert cabinet.alarms.active() == [REMOTE_OUT_OF_SERVICE]
    office.send(topic, _command(clock, "back_in_service", "cmd-2"))
    wait_until(handled(2), "the back_in_service command handled", 10)
    assert cabinet.alarms.active() == []

    office.send(topic, off)                                  # the same message again
    wait_until(handled(3), "the replay handled", 10)
    office.send(topic, _command(clock, "out_of_service", "cmd-3", issued_ago_s=600))
    wait_until(handled(4), "the expired command handled", 10)
    office.send(topic, _command(clock, "out_of_service", "cmd-4", key=m.new_signing_key()))
    wait_until(handled(5), "the forged command handled", 10)
    office.send(m.down_topic(CAB, "command"), b'{"v": 1, "id": "cmd-5"}')
    wait_until(handled(6), "the malformed command handled", 10)

    assert [(o.message_id, o.outcome, o.reason) for o in cabinet.down.outcomes] == [
        ("cmd-1", "applied", ""), ("cmd-2", "applied", ""), ("cmd-1", "refused", "replay"),
        ("cmd-3", "refused", "expired"), ("cmd-4", "refused", "bad_signature"),
        (None, "refused", "malformed")]
    assert cabinet.alarms.active() == []                     # none of the refused did a thing
    assert cabinet.down.applied() == ["cmd-1", "cmd-2"]


def test_a_resend_order_publishes_exactly_those_rows_again_byte_for_byte(
        broker, cabinet, clock, running):
    """The back office lost seq 2..4 (a broker restart with no shared subscriber): its signed
    `resend` makes the agent publish those outbox rows again, same ids and bytes, and nothing
    else; an expired or forged resend publishes nothing."""
    office = BackOffice(broker.port)
    running.append(office)
    for _ in range(2):
        cabinet.sell()
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    rows = 2 * 3 + 1
    wait_until(lambda: len(office.ups()) == rows and cabinet.outbox.unsent_count() == 0,
               "the first rows sent and acknowledged", 10)
    first = {msg.seq: m.encode_up(msg) for msg in office.ups()}
    topic = m.down_topic(CAB, "resend")

    def resend(id: str, *, key=SIGNING, issued_ago_s: float = 0) -> bytes:
        issued = dt.datetime.fromtimestamp(clock.time() - issued_ago_s, dt.timezone.utc)
        return m.encode_down(m.sign_down(key, id=id, kind="resend",
                                         body={"from_seq": 2, "to_seq": 4},
                                         issued_at=issued, ttl_s=300))

    office.send(topic, resend("resend-old", issued_ago_s=600))
    office.send(topic, resend("resend-forged", key=m.new_signing_key()))
    office.send(topic, resend("resend-1"))
    wait_until(lambda: len(cabinet.down.outcomes) >= 3, "the three resends handled", 10)
    assert [(o.message_id, o.outcome, o.reason) for o in cabinet.down.outcomes] == [
        ("resend-old", "refused", "expired"), ("resend-forged", "refused", "bad_signature"),
        ("resend-1", "applied", "")]
    wait_until(lambda: len(office.ups()) >= rows + 3, "seq 2..4 a second time", 10)
    wait_until(lambda: cabinet.outbox.unsent_count() == 0, "the rows marked sent again", 10)
    again = office.ups()[rows:]
    assert [msg.seq for msg in again] == [2, 3, 4]
    assert [m.encode_up(msg) for msg in again] == [first[2], first[3], first[4]]
    office.send(topic, resend("resend-1"))                  # the same order: a replay
    wait_until(lambda: len(cabinet.down.outcomes) >= 4, "the replayed resend handled", 10)
    assert cabinet.down.outcomes[-1].reason == "replay"
    clock.advance(1)                                         # a collect pass, nothing new
    cabinet.move()                                           # ... then a new fact
    clock.advance(1)
    wait_until(lambda: len(office.ups()) >= rows + 4, "the next fact", 10)
    assert [msg.seq for msg in office.ups()[rows + 3:]] == [rows + 1]


def test_an_order_sent_while_the_cabinet_is_away_is_applied_when_it_is_back(
        broker, cabinet, clock, running):
    """The persistent session: the broker queues the order for the absent cabinet."""
    office = BackOffice(broker.port)
    running.append(office)
    agent = cabinet.agent(broker.port)
    running.append(agent.start())
    wait_until(agent.connected.is_set, "the agent connected")
    agent.stop()
    office.send(m.down_topic(CAB, "command"), _command(clock, "out_of_service", "cmd-away"))
    assert cabinet.alarms.active() == []
    back = cabinet.agent(broker.port)
    running.append(back.start())
    wait_until(lambda: cabinet.down.applied() == ["cmd-away"], "the queued order applied", 10)
    assert cabinet.alarms.active() == [REMOTE_OUT_OF_SERVICE]


def test_a_region_order_is_applied_and_the_same_order_on_both_topics_only_once(
        broker, cabinet, clock, running):
    office = BackOffice(broker.port)
    running.append(office)
    agent = cabinet.agent(broker.port, region="tokyo")
    running.append(agent.start())
    wait_until(agent.connected.is_set, "the agent connected")
    order = _command(clock, "out_of_service", "region-1")
    office.send(m.region_down_topic("osaka", "command"), _command(clock, "out_of_service",
                                                                 "not-ours"))
    office.send(m.region_down_topic("tokyo", "command"), order)
    office.send(m.down_topic(CAB, "command"), order)
    wait_until(lambda: len(cabinet.down.outcomes) >= 2, "both copies handled", 10)
    assert [(o.message_id, o.outcome, o.reason) for o in cabinet.down.outcomes] == [
        ("region-1", "applied", ""), ("region-1", "refused", "replay")]
    assert cabinet.alarms.active() == [REMOTE_OUT_OF_SERVICE]


# --- cabinet run -------------------------------------------------------------------------
def _run_config(folder: Path, port: int, public_key: Path) -> Path:
    """fixtures/cabinet.yaml with its data under `folder`, no accounts to enrol (no faces
    needed here), HTTP on any port, and a fleet section for this test's broker."""
    import yaml
    fixtures = ROOT / "fixtures"
    data = yaml.safe_load((fixtures / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram", "scenarios"):
        data[key] = str(fixtures / data[key])
    data["accounts"] = None
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    data["http"] = {"host": "127.0.0.1", "port": 0}
    data["fleet"] = {"broker": f"mqtt://127.0.0.1:{port}", "public_key": str(public_key),
                     "collect_every_s": 0.2, "health_every_s": 2,
                     "reconnect_first_s": 0.2, "reconnect_max_s": 1}
    path = folder / "cabinet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_cabinet_run_with_a_fleet_section_reports_and_obeys_the_back_office(broker, tmp_path,
                                                                            running):
    """`cabinet run` as the product runs: online, health, an order to go out of service and
    back, a board reboot between sessions (its alarm reported up), offline at SIGTERM."""
    import urllib.error
    import urllib.request
    from firmware_bridge.clock import SYSTEM
    key_file = tmp_path / "fleet.pub"
    key_file.write_bytes(m.public_key_pem(SIGNING))
    cfg = _run_config(tmp_path, broker.port, key_file)
    office = BackOffice(broker.port)
    running.append(office)
    proc = subprocess.Popen([sys.executable, "-m", "cabinet.cli", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            stderr=open(tmp_path / "stderr.log", "wb"))

    def health() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def order(command: str, id: str) -> None:
        office.send(m.down_topic(cab_id, "command"), _command(SYSTEM, command, id))

    def alarms_up(kind: str) -> list[str]:
        return [msg.body["transition"] for msg in office.ups()
                if msg.kind == "alarm" and msg.body["alarm"] == kind]

    try:
        line = proc.stdout.readline()
        assert "serving on http://127.0.0.1:" in line, (line, (tmp_path / "stderr.log")
                                                         .read_text()[-2000:])
        port = int(line.rsplit(":", 1)[1])
        cab_id = line.split()[2]
        wait_until(lambda: "online" in office.statuses(), "the cabinet online", 30, 0.1)
        wait_until(lambda: any(msg.kind == "health" for msg in office.ups()), "a health report",
                   30, 0.1)
        report = next(msg.body for msg in office.ups() if msg.kind == "health")
        assert report["in_service"] is True and report["alarms"] == []
        assert report["below_par"] == []            # the planogram's initial stock is above par
        assert health()[0] == 200

        order("out_of_service", "run-1")
        status, body = wait_until(lambda: (h := health())[0] == 503 and h, "503 by order", 30,
                                  0.1)
        assert body["alarms"] == ["remote_out_of_service"]
        wait_until(lambda: alarms_up("remote_out_of_service") == ["raise"],
                   "the order's alarm reported up", 30, poll_s=0.1)
        order("back_in_service", "run-2")
        wait_until(lambda: health()[0] == 200, "200 by order", 30, poll_s=0.1)

        order("reboot_mcu", "run-3")
        try:
            wait_until(lambda: alarms_up("mcu_reboot") == ["raise", "clear"],
                       "the board's reboot reported up, raised and cleared", 60, poll_s=0.1)
        except AssertionError as e:
            lines = [x for x in (tmp_path / "stderr.log").read_text().splitlines()
                     if "fleet" in x or "alarm" in x or "reboot" in x]
            raise AssertionError(f"{e}; up: {alarms_up('mcu_reboot')}; log: {lines[-8:]}")
        assert health()[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    wait_until(lambda: office.statuses()[-1:] == ["offline"], "offline after SIGTERM", 10, 0.1)
    log = (tmp_path / "stderr.log").read_text()
    for id in ("run-1", "run-2", "run-3"):
        assert f"fleet: applied command {id}" in log


# --- what each order does (the DownHandler and CabinetActions, no broker needed) ----------
class Orders:
    """A cabinet's down path with its files in force (the demo's catalog and planogram under
    its own data_dir), signed orders handed straight to the DownHandler."""

    def __init__(self, cabinet: Cabinet, clock: ManualClock):
        from cabinet.inforce import InForce
        from cabinet.planogram_ops import Operations
        fixtures = ROOT / "fixtures"
        self.cabinet, self.clock = cabinet, clock
        self.ops = Operations(InForce(cabinet.folder / "data", {
            "catalog": fixtures / "catalog.yaml", "planogram": fixtures / "planogram.yaml"}),
            lambda: cabinet.db)
        self.reboots = self.reloads = 0
        actions = CabinetActions(db=cabinet.db, billing=cabinet.billing, operations=self.ops,
                                 alarms=cabinet.alarms, incoming_dir=cabinet.folder / "fleet",
                                 now=cabinet.now, reboot_mcu=self._reboot,
                                 reload_faces=self._reload)
        self.down = DownHandler(cabinet.db, SIGNING.public_key(), actions, now=cabinet.now)
        self.n = 0

    def _reboot(self) -> None:
        self.reboots += 1

    def _reload(self) -> None:
        self.reloads += 1

    def send(self, kind: str, body: dict, id: str | None = None):
        self.n += 1
        msg = m.sign_down(SIGNING, id=id or f"{kind}-{self.n}", kind=kind, body=body,
                          issued_at=self.cabinet.now(), ttl_s=60)
        return self.down.handle(m.down_topic(CAB, kind), m.encode_down(msg))

    def open_session(self, sid: str = "s-open") -> None:
        from cabinet.journal import Journal
        from cabinet.machine import TransitionRecord
        Journal(self.cabinet.db).write(TransitionRecord(sid, "face_seen", "idle", "face_auth",
                                                        self.cabinet.now(), {}))


@pytest.fixture
def orders(cabinet, clock):
    return Orders(cabinet, clock)


def _account(cabinet: Cabinet, account_id: int):
    from billing.models import Account
    with cabinet.db() as s:
        return s.get(Account, account_id)


def test_standing_orders_block_unblock_and_name_an_unknown_account(orders, cabinet):
    ann = cabinet.account
    done = orders.send("standing", {"account_id": ann, "action": "block", "reason": "fraud"})
    assert (done.outcome, _account(cabinet, ann).status) == ("applied", "blocked")
    assert _account(cabinet, ann).blocked_reason == "fraud"
    assert orders.send("standing", {"account_id": ann, "action": "unblock"}).outcome == "applied"
    assert _account(cabinet, ann).status == "active"
    done = orders.send("standing", {"account_id": 999, "action": "close"})
    assert (done.outcome, done.reason) == ("refused", "refused") and "999" in done.detail
    assert orders.reloads == 2                    # the gallery follows the standing


def test_face_templates_sealed_for_the_account_replace_its_own(orders, cabinet):
    from billing.models import FaceTemplate
    from cabinet.accounts import load_gallery
    enc = [bytes(range(i, i + 16)) * 32 for i in (1, 2)]       # 512 bytes: 128 float32
    sealed = [base64.b64encode(KEY.seal(e, account_id=7, purpose="face_template")).decode()
              for e in enc]
    done = orders.send("faces", {"account_id": 7, "name": "Bo", "templates": sealed})
    assert done.outcome == "applied" and "(new)" in done.detail
    assert _account(cabinet, 7).name == "Bo"
    with cabinet.db() as s:
        rows = s.query(FaceTemplate).filter_by(account_id=7).order_by(FaceTemplate.id).all()
        assert [base64.b64encode(r.encoding).decode() for r in rows] == sealed  # as received
    assert len(load_gallery(cabinet.db, secrets=KEY)) == 2 and orders.reloads == 1

    # sealed for account 8: it must not open as account 7's face; nothing changes
    wrong = base64.b64encode(KEY.seal(enc[0], account_id=8, purpose="face_template")).decode()
    done = orders.send("faces", {"account_id": 7, "name": "Bo", "templates": [wrong]})
    assert (done.outcome, done.reason) == ("refused", "refused")
    assert "template 0 does not open" in done.detail
    with cabinet.db() as s:
        assert s.query(FaceTemplate).filter_by(account_id=7).count() == 2


def test_prices_go_in_force_through_the_catalog_apply_and_wait_for_an_open_session(orders):
    catalog, _ = orders.ops.in_force()
    assert catalog["cola-330"].price == 180
    orders.open_session()
    done = orders.send("prices", {"prices": {"cola-330": 199}})
    assert (done.outcome, done.reason) == ("refused", "refused")
    assert "session s-open is open" in done.detail
    assert orders.ops.in_force()[0]["cola-330"].price == 180          # nothing changed

    from cabinet.journal import Journal
    from cabinet.machine import TransitionRecord
    Journal(orders.cabinet.db).write(TransitionRecord("s-open", "done", "face_auth", "idle",
                                                      orders.cabinet.now(), {}))
    done = orders.send("prices", {"prices": {"cola-330": 199, "energy-250": 230}})
    assert done.outcome == "applied", done.detail
    catalog = orders.ops.in_force()[0]
    assert (catalog["cola-330"].price, catalog["energy-250"].price) == (199, 230)
    done = orders.send("prices", {"prices": {"caviar": 9999}})
    assert done.outcome == "refused" and "caviar" in done.detail


def test_a_planogram_with_errors_is_refused_at_its_line_and_a_good_one_applied(orders):
    text = (ROOT / "fixtures" / "planogram.yaml").read_text()
    bad = text.replace("sku: cola-330", "sku: caviar-50", 1)
    done = orders.send("planogram", {"planogram": bad})
    assert done.outcome == "refused" and "caviar-50" in done.detail
    assert orders.ops.in_force()[1].slot("A1").sku == "cola-330"
    good = text.replace("sku: cola-330, capacity: 6, par: 2", "sku: cola-330, capacity: 6, "
                        "par: 3", 1)
    assert good != text
    done = orders.send("planogram", {"planogram": good})
    assert done.outcome == "applied", done.detail
    assert orders.ops.in_force()[1].slot("A1").par == 3


def test_reboot_waits_for_no_open_session_and_runs_once(orders):
    orders.open_session("s-9")
    done = orders.send("command", {"command": "reboot_mcu"}, id="r-1")
    assert done.outcome == "refused" and "session s-9 is open" in done.detail
    assert orders.reboots == 0
    from cabinet.journal import Journal
    from cabinet.machine import TransitionRecord
    Journal(orders.cabinet.db).write(TransitionRecord("s-9", "done", "face_auth", "idle",
                                                      orders.cabinet.now(), {}))
    assert orders.send("command", {"command": "reboot_mcu"}, id="r-2").outcome == "applied"
    assert orders.reboots == 1
    again = orders.send("command", {"command": "reboot_mcu"}, id="r-2")
    assert (again.outcome, again.reason, orders.reboots) == ("refused", "replay", 1)


def test_applied_ids_survive_a_restart(orders, cabinet):
    assert orders.send("command", {"command": "out_of_service"}, id="x-1").outcome == "applied"
    fresh = Orders(cabinet, orders.clock)             # a new process on the same database
    assert fresh.send("command", {"command": "out_of_service"}, id="x-1").reason == "replay"


# --- the outbox ----------------------------------------------------------------------------
def test_collecting_twice_adds_nothing_and_later_facts_follow(cabinet):
    cabinet.sell()
    assert cabinet.outbox.collect() == 3
    assert cabinet.outbox.collect() == 0
    cabinet.alarms.raise_("forced_door", "forced")
    assert cabinet.outbox.collect() == 1
    cabinet.alarms.clear("forced_door", "door closed")
    assert cabinet.outbox.collect() == 1
    cabinet.billing.refund("s-1", 180, "goodwill")   # a new receipt version
    assert cabinet.outbox.collect() == 1
    rows = cabinet.outbox.rows()
    assert [r.message_id for r in rows] == [
        "cab-1/inventory/1", "cab-1/session/s-1", "cab-1/receipt/s-1", "cab-1/alarm/1.raise",
        "cab-1/alarm/1.clear", "cab-1/receipt/s-1.1"]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    last = cabinet.outbox.pending(after_seq=rows[-2].seq)
    assert [msg.body["refunded"] for msg in last] == [180]


def test_health_names_the_slots_below_par(cabinet):
    from cabinet.catalog import load_catalog
    from cabinet.fleet.wiring import with_stock
    from cabinet.inventory import Inventory
    from cabinet.planogram import load_planogram
    fixtures = ROOT / "fixtures"
    planogram = load_planogram(fixtures / "planogram.yaml", load_catalog(fixtures / "catalog.yaml"))
    inventory = Inventory(cabinet.db, planogram)
    inventory.restock(planogram.initial_stock())
    assert with_stock({"in_service": True}, inventory)["below_par"] == []
    inventory.restock({"A1": 1, "B1": 1})                  # par 2 and 1
    assert with_stock({"in_service": True}, inventory) == {
        "in_service": True, "below_par": [{"slot": "A1", "sku": "cola-330", "on_hand": 1,
                                           "par": 2}]}


def test_a_health_report_is_one_per_second(cabinet, clock):
    assert cabinet.outbox.add_health({"in_service": True, "alarms": []}) is True
    assert cabinet.outbox.add_health({"in_service": True}) is False
    clock.advance(1)
    assert cabinet.outbox.add_health({"in_service": False}) is True
    bodies = [msg.body for msg in cabinet.outbox.pending()]
    assert [b["in_service"] for b in bodies] == [True, False]
    assert bodies[1]["outbox_unsent"] == 1


# --- configuration -------------------------------------------------------------------------
def _config(tmp_path: Path, fleet: dict) -> Path:
    import yaml
    path = tmp_path / "cabinet.yaml"
    path.write_text(yaml.safe_dump({"fleet": fleet}, sort_keys=False))
    return path


def test_a_fleet_section_becomes_the_agents_settings(tmp_path):
    from cabinet.config import load_config
    from cabinet.fleet.wiring import settings_for
    (tmp_path / "fleet.pub").write_bytes(m.public_key_pem(SIGNING))
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = load_config(_config(tmp_path, {
        "broker": "mqtts://broker.example.com", "public_key": "fleet.pub", "region": "tokyo",
        "username": "cab-0042", "password_file": "pw", "tls_ca_file": "ca.pem",
        "health_every_s": 30}))
    settings, key = settings_for(cfg, "cab-0042")
    assert m.public_key_pem(key) == m.public_key_pem(SIGNING)
    b = settings.broker
    assert (b.host, b.port, b.tls, b.username, b.password) == (
        "broker.example.com", 8883, True, "cab-0042", "s3cret")
    assert b.ca_file == str(tmp_path / "ca.pem")
    assert (settings.region, settings.health_every_s) == ("tokyo", 30.0)
    assert "s3cret" not in repr(b)


@pytest.mark.parametrize("fleet, where", [
    ({"broker": "http://b", "public_key": "k"}, "fleet.broker"),
    ({"broker": "mqtt://user:pw@b", "public_key": "k"}, "fleet.broker"),
    ({"broker": "mqtt://b:99999", "public_key": "k"}, "fleet.broker"),
    ({"broker": "mqtt://b"}, "fleet.public_key"),
    ({"broker": "mqtt://b", "public_key": "k", "tls_ca_file": "ca"}, "fleet.tls_ca_file"),
    ({"broker": "mqtts://b", "public_key": "k", "tls_cert_file": "c"}, "fleet.tls_key_file"),
    ({"broker": "mqtt://b", "public_key": "k", "password_file": "p"}, "fleet.password_file"),
    ({"broker": "mqtt://b", "public_key": "k", "region": "a/b"}, "fleet.region"),
    ({"broker": "mqtt://b", "public_key": "k", "pasword": "x"}, "fleet.pasword"),
    ({"broker": "mqtt://b", "public_key": "k", "reconnect_first_s": 90}, "fleet.reconnect_first_s"),
])
def test_a_bad_fleet_section_is_an_error_at_its_key(tmp_path, fleet, where):
    from cabinet.config import load_config
    from cabinet.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, fleet))
    assert any(where in str(err) for err in e.value.errors), [str(x) for x in e.value.errors]


def test_an_unreadable_public_key_names_the_key_and_the_file(tmp_path):
    from cabinet.config import load_config
    from cabinet.errors import CabinetError
    from cabinet.fleet.wiring import settings_for
    cfg = load_config(_config(tmp_path, {"broker": "mqtt://b", "public_key": "missing.pub"}))
    with pytest.raises(CabinetError, match=r"fleet.public_key = 'missing.pub': cannot read the "
                                           r"public key .*missing.pub"):
        settings_for(cfg, "cab-1")
    (tmp_path / "missing.pub").write_text("not a key")
    with pytest.raises(CabinetError, match="fleet.public_key.*not a PEM public key"):
        settings_for(cfg, "cab-1")


def test_a_session_closed_behind_the_latest_is_collected_within_the_lookback(cabinet, clock):
    """Later passes look only at sessions closed since the latest one collected, less
    SESSION_LOOKBACK; a process's first pass looks at them all."""
    from billing.models import CabinetSession
    from cabinet.fleet.outbox import SESSION_LOOKBACK

    def closed(sid: str, ago: dt.timedelta) -> None:
        with cabinet.db.begin() as s:
            s.add(CabinetSession(id=sid, cabinet_id=CAB, state="closed", outcome="denied",
                                 opened_at=cabinet.now() - ago, closed_at=cabinet.now() - ago,
                                 currency="EUR", flags=[]))

    closed("s-now", dt.timedelta(0))
    assert cabinet.outbox.collect() == 1
    closed("s-hour-ago", dt.timedelta(hours=1))                       # within the lookback
    closed("s-long-ago", SESSION_LOOKBACK + dt.timedelta(hours=1))    # behind it
    assert len(cabinet.outbox.rows()) == 1 and cabinet.outbox.collect() == 1
    assert cabinet.outbox.rows()[-1].ref == "s-hour-ago"
    restarted = FleetOutbox(cabinet.db, CAB, cabinet.now)              # a full first pass
    assert restarted.collect() == 1 and restarted.rows()[-1].ref == "s-long-ago"


def test_backoff_doubles_to_its_cap_and_spreads_by_at_most_a_quarter():
    from cabinet.fleet.agent import backoff
    assert [backoff(a, first_s=1, max_s=60) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(2, first_s=1, max_s=60, jitter=0.999) == pytest.approx(4 * 1.24975)
    with pytest.raises(ValueError, match="attempt -1"):
        backoff(-1, first_s=1, max_s=60)


def test_a_missing_tls_file_is_logged_and_retried_while_facts_keep_being_kept(
        cabinet, clock, running, tmp_path, caplog):
    agent = cabinet.agent(1, broker=BrokerSettings("127.0.0.1", 1, tls=True,
                                                   ca_file=str(tmp_path / "no-ca.pem")))
    running.append(agent.start())
    clock.wait_until_idle(1)
    cabinet.sell()
    clock.advance(1)
    clock.wait_until_idle(1)
    assert "TLS files (ca " in caplog.text and "no-ca.pem" in caplog.text
    assert not agent.connected.is_set()
    assert [r.kind for r in cabinet.outbox.rows()] == ["health", "inventory", "session",
                                                       "receipt"]


# --- TLS and credentials -----------------------------------------------------------------
def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    now = dt.datetime.now(dt.timezone.utc)
    since, until = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(since).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(since).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_broker(broker, tmp_path):
    """The test's broker again, now TLS-only with a password per cabinet."""
    folder = tmp_path / "tls"
    folder.mkdir()
    ca, cert, key = _certificates(folder)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwords"), "cab-1",
                    "right horse"], check=True, capture_output=True)
    broker.stop()
    conf = broker.folder / "mosquitto.conf"
    conf.write_text(conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                    + f"password_file {folder / 'passwords'}\ncafile {ca}\ncertfile {cert}\n"
                      f"keyfile {key}\n")
    broker.start()
    return broker, ca


def test_tls_and_a_password_from_the_settings_connect_and_a_wrong_one_is_refused(
        tls_broker, cabinet, clock, running, caplog):
    broker, ca = tls_broker
    wrong = cabinet.agent(broker.port, broker=BrokerSettings(
        "127.0.0.1", broker.port, tls=True, ca_file=str(ca), username="cab-1", password="no"))
    running.append(wrong.start())
    wait_until(lambda: "refused the connection" in caplog.text, "the broker refusing", 10)
    assert not wrong.connected.is_set()
    wrong.stop()
    right = cabinet.agent(broker.port, broker=BrokerSettings(
        "127.0.0.1", broker.port, tls=True, ca_file=str(ca), username="cab-1",
        password="right horse"))
    running.append(right.start())
    wait_until(right.connected.is_set, "the cabinet connected over TLS with its password", 10)
    cabinet.sell()
    clock.advance(1)
    wait_until(lambda: cabinet.outbox.unsent_count() == 0
               and [r.kind for r in cabinet.outbox.rows()] == ["health", "inventory", "session",
                                                                "receipt"],
               "the sale published over TLS", 10)
