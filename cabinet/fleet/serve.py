"""`cabinet fleet serve`: the back office, a stateless process between the broker and PostgreSQL.

How it works: a paho-mqtt v5 client subscribes to the shared subscriptions of the wire contract
(`$share/<group>/cabinet/+/up/#` and `.../status`), so any number of instances split the load.
Its network thread only queues each delivery; one writer thread takes what is queued (up to
`batch_max`), stores it in one transaction (cabinet/fleet/store.py: insert ON CONFLICT (id) DO
NOTHING, derive from the new rows, dead-letter what does not decode) and only after the commit
acks each message (paho's manual_ack, PUBACKs in arrival order). A process killed between the
broker's delivery and the commit has acked nothing: the broker redelivers.

Where the broker redelivers: Mosquitto keeps a shared subscriber's unacked and queued messages
with its session (it does not hand them to another member of the group; mosquitto issues #1747,
#2662). So an instance's client id is stable per *slot* (`fleet-<uuid5(group/slot)>`, the
contract's `fleet-<uuid>` shape), its session persistent: whatever restarts a slot (the
`--instances N` supervisor here, systemd, Kubernetes) resumes the slot's session and receives
what the killed process never acked. A slot taken away for good drains first: `stop()`
unsubscribes, stores and acks what is in flight, then ends its session (expiry 0).

Down: `send()` signs an order (messages.sign_down, the Ed25519 key from a key file), records it
in `fleet_down` and publishes it at QoS 1 to the cabinet's (or region's) down topic; the
cabinet's persistent session holds it while the cabinet is offline, and the expiry bounds how
late it may still be applied.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import text, update

from cabinet.errors import CabinetError
from cabinet.fleet import messages
from cabinet.fleet.store import (GAP_LOCK, Delivery, FleetDown, FleetInstance, Ingest,
                                 find_gaps, open_fleet_db, utcnow)
from firmware_bridge.clock import SYSTEM

log = logging.getLogger("cabinet.fleet.serve")
SLOT_NAMESPACE = uuid.UUID("6f1c2a3e-0b7d-4c55-9a10-5f1ee7c0ffee")


class BrokerError(CabinetError):
    """A broker URL or TLS file that is wrong (the command line's exit code 1)."""


class BrokerUnavailable(BrokerError):
    """The broker does not answer (exit code 2: something not there, not a wrong input)."""


@dataclasses.dataclass(frozen=True)
class GapPolicy:
    """How the back office asks cabinets for messages it never got (docs/fleet.md, "Broker
    restarts"): every `every_s` one instance looks for seq gaps whose next message was stored
    `grace_s` ago, and sends each cabinet a signed `resend` valid for `ttl_s`; a gap still open
    `retry_s` after its order is asked for again."""
    every_s: float = 10.0
    grace_s: float = 30.0
    retry_s: float = 120.0
    ttl_s: float = 600.0


@dataclasses.dataclass(frozen=True)
class Broker:
    """Where the broker is and how to log in: `mqtt://[user[:password]@]host[:port]` or
    `mqtts://...` (TLS with `ca`, and `cert`/`key` for a client certificate)."""
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str, *, ca: str | None = None, cert: str | None = None,
                 key: str | None = None) -> Broker:
    parts = urlsplit(url or "")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BrokerError(f"broker URL {url!r}: give mqtt://HOST:PORT or mqtts://HOST:PORT "
                          f"(user and password as mqtt://USER:PASSWORD@HOST:PORT)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise BrokerError(f"broker URL {url!r}: the port is not a number 1-65535") from None
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path and not Path(path).is_file():
            raise BrokerError(f"broker TLS {name} file {path}: not found")
    return Broker(parts.hostname, port, parts.scheme == "mqtts",
                  unquote(parts.username) if parts.username else None,
                  unquote(parts.password) if parts.password else None, ca, cert, key)


def mqtt_client(client_id: str, broker: Broker, *, manual_ack: bool = False,
                session_expiry_s: int = messages.SESSION_EXPIRY_S,
                receive_maximum: int | None = None) -> tuple[mqtt.Client, Properties]:
    """A paho v5 client set up for `broker` and its CONNECT properties (persistent session)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca, certfile=broker.cert, keyfile=broker.key)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    client.reconnect_delay_set(0.05, 2.0)
    client.max_queued_messages_set(0)
    return client, props


def slot_client_id(group: str, slot: str) -> str:
    messages.check_name(group, "back office", "group")
    messages.check_name(slot, "back office", "slot")
    return messages.backoffice_client_id(uuid.uuid5(SLOT_NAMESPACE, f"{group}/{slot}").hex)


class BackOffice:
    """One back-office instance: subscribe, batch, store, ack after commit."""

    def __init__(self, db_url: str, broker: Broker, *, slot: str = "0",
                 group: str = messages.SHARE_GROUP, batch_max: int = 500,
                 clock: Any = SYSTEM, now: Callable[[], dt.datetime] = utcnow,
                 signing_key: Any = None, gaps: GapPolicy = GapPolicy()):
        self.broker, self.group, self.slot, self.batch_max = broker, group, slot, batch_max
        # without a signing key no resend can be ordered: gaps stay (the console's "missing")
        self.signing_key, self.gaps = signing_key, gaps
        self._next_gap_pass = 0.0
        self.resends: list[tuple[str, int, int]] = []     # this instance's orders (cab, a, b)
        self.clock, self.now = clock, now
        self.client_id = slot_client_id(group, slot)
        self.engine, self.sessions = open_fleet_db(db_url, application_name=self.client_id)
        self.ingest = Ingest(self.sessions, self.client_id, now=now)
        self.inbox: queue.Queue[Delivery] = queue.Queue()
        self.generation = 0                 # bumps on every (re)connect: old mids are void
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.stored = self.duplicates = self.dead = 0
        self._recorded_generation = -1
        self.client, self._props = mqtt_client(self.client_id, broker, manual_ack=True,
                                               receive_maximum=max(20, 2 * batch_max))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._writer = threading.Thread(target=self._write_loop, name="fleet-writer",
                                        daemon=True)

    # --- the network thread: queue only ------------------------------------------------------
    def _topics(self) -> list[str]:
        return [f"$share/{self.group}/cabinet/+/up/#", f"$share/{self.group}/cabinet/+/status"]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.broker.url, reason_code)
            return
        self.generation += 1
        client.subscribe([(t, SubscribeOptions(qos=messages.QOS)) for t in self._topics()])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if all(not rc.is_failure for rc in reason_codes):
            self.subscribed.set()
        else:
            log.error("broker refused the subscriptions: %s", reason_codes)

    def _on_message(self, client, userdata, msg) -> None:
        self.inbox.put(Delivery(msg.topic, msg.payload, msg.mid, msg.qos, self.generation))

    # --- the writer thread: store, then ack -------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            self._record_subscribed()
            self._gap_pass()
            try:
                first = self.inbox.get(timeout=0.05)
            except queue.Empty:
                if self.stopping.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            self._store(batch)

    def _store(self, batch: list[Delivery]) -> None:
        delay = 0.1
        while True:
            try:
                result = self.ingest.store(batch)
                break
            except Exception as e:   # the database is away: keep the batch, ack nothing, retry
                log.warning("fleet database: storing %d message(s) failed (%s: %s); retrying "
                            "in %.1f s", len(batch), type(e).__name__,
                            str(e).splitlines()[0][:200], delay)
                self.clock.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stored += result.new
        self.duplicates += result.duplicates
        self.dead += result.dead
        if result.dead:
            log.warning("%d malformed message(s) into fleet_dead_letters", result.dead)
        generation = self.generation
        for d in batch:
            if d.generation == generation and d.qos > 0:
                self.client.ack(d.mid, d.qos)

    def _gap_pass(self) -> None:
        if self.signing_key is None or not self.subscribed.is_set() \
                or self.clock.monotonic() < self._next_gap_pass:
            return
        self._next_gap_pass = self.clock.monotonic() + self.gaps.every_s
        try:
            self.ask_for_gaps()
        except Exception as e:      # the database or the broker away: the next pass tries again
            log.warning("looking for missing messages failed (%s: %s)", type(e).__name__,
                        str(e).splitlines()[0][:200])

    def ask_for_gaps(self) -> list[tuple[str, int, int]]:
        """One pass: find the gaps (one instance at a time, by an advisory lock), record a
        signed `resend` per gap in fleet_down, publish them after the commit."""
        now = self.now()
        orders = []
        with self.sessions.begin() as s:
            if not s.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": GAP_LOCK}):
                return []
            for cabinet, first, last in find_gaps(s, now=now, grace_s=self.gaps.grace_s,
                                                  retry_s=self.gaps.retry_s):
                body = {"from_seq": first, "to_seq": last}
                msg = messages.sign_down(self.signing_key, id=f"resend-{uuid.uuid4().hex}",
                                         kind="resend", body=body, issued_at=now,
                                         ttl_s=self.gaps.ttl_s)
                topic = messages.down_topic(cabinet, "resend")
                s.add(FleetDown(id=msg.id, topic=topic, kind="resend", issued_at=msg.issued_at,
                                expires_at=msg.expires_at, body=body))
                orders.append((topic, msg, (cabinet, first, last)))
        for topic, msg, gap in orders:
            self.client.publish(topic, messages.encode_down(msg), qos=messages.QOS)
            log.warning("cabinet %s: seq %d..%d never arrived; asked for them again (%s)",
                        gap[0], gap[1], gap[2], msg.id)
            self.resends.append(gap)
        return [gap for _, _, gap in orders]

    def _record_subscribed(self) -> None:
        if self.subscribed.is_set() and self._recorded_generation != self.generation:
            generation = self.generation
            try:
                with self.sessions.begin() as s:
                    s.execute(update(FleetInstance)
                              .where(FleetInstance.client_id == self.client_id)
                              .values(subscribed_at=self.now(), stopped_at=None))
            except Exception as e:      # the database is away: the next pass tries again
                log.warning("fleet database: recording the subscription failed (%s)", e)
                return
            self._recorded_generation = generation

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> "BackOffice":
        from sqlalchemy.dialects.postgresql import insert
        with self.sessions.begin() as s:
            row = {"client_id": self.client_id, "pid": os.getpid(), "started_at": self.now(),
                   "subscribed_at": None, "stopped_at": None}
            s.execute(insert(FleetInstance).values(row).on_conflict_do_update(
                index_elements=["client_id"], set_=row))
        self._writer.start()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15,
                                  clean_start=False, properties=self._props)
        self.client.loop_start()
        return self

    def stop(self, *, drain: bool = True, timeout_s: float = 10.0) -> None:
        """Drain: unsubscribe (nothing new comes), store and ack what came, end the session.
        Without drain the session stays at the broker (a restart of the slot resumes it)."""
        if self.stopping.is_set():
            return
        if drain and self.client.is_connected():
            self.client.unsubscribe(self._topics())
        self.stopping.set()
        self._writer.join(timeout_s)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0 if drain else messages.SESSION_EXPIRY_S
        self.client.disconnect(properties=props)
        self.client.loop_stop()
        with self.sessions.begin() as s:
            s.execute(update(FleetInstance).where(FleetInstance.client_id == self.client_id)
                      .values(stopped_at=self.now()))
        self.engine.dispose()


def end_session(broker: Broker, client_id: str, timeout_s: float = 10.0) -> None:
    """Discard a client's session at the broker (its subscriptions and queued messages): a
    back-office slot retired for good, or a benchmark's slots when it is done. Connects as the
    client with clean_start and session expiry 0, then disconnects."""
    client, props = mqtt_client(client_id, broker, session_expiry_s=0)
    connect_blocking(client, broker, props, timeout_s=timeout_s, clean_start=True)
    client.disconnect()
    client.loop_stop()


# --- down: signed, expiring orders -----------------------------------------------------------------
def load_signing_key(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CabinetError(f"signing key {p}: not found; make one with `cabinet fleet keygen "
                           f"{p}` and give the cabinets its public key")
    return messages.load_private_key(p.read_bytes(), str(p))


def down_body(kind: str, args: list[str], body_json: str | None) -> dict[str, Any]:
    """The body of a down order from the command line: `command out_of_service [REASON]`, or
    any kind from --body (JSON text, or @FILE)."""
    if body_json:
        text = Path(body_json[1:]).read_text("utf-8") if body_json.startswith("@") else body_json
        try:
            body = json.loads(text)
        except ValueError as e:
            raise CabinetError(f"fleet send --body: not JSON ({e})") from None
        if not isinstance(body, dict):
            raise CabinetError("fleet send --body: must be a JSON object")
        return body
    if kind == "command" and args:
        body: dict[str, Any] = {"command": args[0]}
        if len(args) > 1:
            body["reason"] = " ".join(args[1:])
        return body
    raise CabinetError(f"fleet send {kind}: give the body with --body JSON (or @FILE); only "
                       f"`command` takes its name as an argument (e.g. command out_of_service)")


def send(sessions: Any, client: mqtt.Client, key: Any, *, target: str, kind: str,
         body: dict[str, Any], ttl_s: float, region: bool = False,
         now: Callable[[], dt.datetime] = utcnow, timeout_s: float = 10.0) -> messages.DownMessage:
    """Sign, record, publish at QoS 1 and wait for the broker's PUBACK."""
    topic = (messages.region_down_topic if region else messages.down_topic)(target, kind)
    msg = messages.sign_down(key, id=f"{kind}-{uuid.uuid4().hex}", kind=kind, body=body,
                             issued_at=now(), ttl_s=ttl_s)
    payload = messages.encode_down(msg)
    with sessions.begin() as s:
        s.add(FleetDown(id=msg.id, topic=topic, kind=kind, issued_at=msg.issued_at,
                        expires_at=msg.expires_at, body=body))
    info = client.publish(topic, payload, qos=messages.QOS)
    info.wait_for_publish(timeout_s)
    if not info.is_published():
        raise BrokerUnavailable(f"fleet send: the broker did not acknowledge {msg.id} on "
                                f"{topic} within {timeout_s} s (is it running?); recorded, "
                                f"not published")
    with sessions.begin() as s:
        s.execute(update(FleetDown).where(FleetDown.id == msg.id).values(published_at=now()))
    return msg


def connect_blocking(client: mqtt.Client, broker: Broker, props: Properties,
                     timeout_s: float = 10.0, clean_start: bool = True) -> None:
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    try:
        client.connect(broker.host, broker.port, keepalive=15, clean_start=clean_start,
                       properties=props)
    except OSError as e:
        raise BrokerUnavailable(f"broker {broker.url}: {e.strerror or e}; is it running?") \
            from None
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise BrokerUnavailable(f"broker {broker.url}: no CONNACK within {timeout_s} s")


# --- the command line --------------------------------------------------------------------------------
def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    p.add_argument("--ca", help="TLS: the CA certificate file")
    p.add_argument("--cert", help="TLS: this client's certificate file")
    p.add_argument("--key", dest="tls_key", help="TLS: this client's key file")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet fleet", description="the fleet's back office")
    sub = p.add_subparsers(dest="fleet_command", required=True)
    sv = sub.add_parser("serve", help="store every cabinet's messages in PostgreSQL")
    sv.add_argument("--db", required=True, help="the fleet database: postgresql://...")
    _broker_args(sv)
    sv.add_argument("--instances", type=int, default=1,
                    help="processes to run (slots SLOT-0..SLOT-N-1), each restarted if it dies")
    sv.add_argument("--slot", default="0", help="this instance's slot name (its MQTT session)")
    sv.add_argument("--group", default=messages.SHARE_GROUP, help="the shared-subscription group")
    sv.add_argument("--batch", type=int, default=500, help="messages per transaction at most")
    sv.add_argument("--signing-key", help="the back office's Ed25519 key (PEM): with it, seq "
                                          "gaps are asked for again by signed `resend` orders")
    sv.add_argument("--gap-grace", type=float, default=GapPolicy.grace_s,
                    help="seconds a gap must be old before it is asked for")
    sv.add_argument("--gap-every", type=float, default=GapPolicy.every_s,
                    help="seconds between two looks for gaps")
    sd = sub.add_parser("send", help="sign and publish an order to a cabinet or region")
    sd.add_argument("target", help="cabinet id (or region with --region)")
    sd.add_argument("kind", choices=messages.DOWN_KINDS)
    sd.add_argument("args", nargs="*", help="for `command`: its name, e.g. out_of_service")
    sd.add_argument("--body", help="the order's body as JSON text or @FILE")
    sd.add_argument("--region", action="store_true", help="target is a region")
    sd.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    sd.add_argument("--signing-key", required=True, help="the back office's Ed25519 key (PEM)")
    sd.add_argument("--db", required=True, help="the fleet database (records what was sent)")
    _broker_args(sd)
    kg = sub.add_parser("keygen", help="write a new Ed25519 signing key; print its public key")
    kg.add_argument("file", type=Path)
    co = sub.add_parser("console", help="the operator console with the fleet view, on its own")
    co.add_argument("--db", required=True, help="the fleet database: postgresql://...")
    co.add_argument("--config", type=Path, required=True,
                    help="a configuration whose database holds the console's operators "
                         "(`cabinet operators add NAME --config FILE`)")
    co.add_argument("--host", default="127.0.0.1")
    co.add_argument("--port", type=int, default=8090)
    return p


def _serve(args: argparse.Namespace) -> int:
    broker = parse_broker(args.broker, ca=args.ca, cert=args.cert, key=args.tls_key)
    if args.instances < 1:
        raise CabinetError(f"fleet serve --instances {args.instances}: give 1 or more")
    if args.instances > 1:
        return _supervise(args)
    key = load_signing_key(args.signing_key) if args.signing_key else None
    office = BackOffice(args.db, broker, slot=args.slot, group=args.group,
                        batch_max=args.batch, signing_key=key,
                        gaps=GapPolicy(every_s=args.gap_every, grace_s=args.gap_grace)).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(json.dumps({"serving": office.client_id, "slot": args.slot, "broker": broker.url}),
          flush=True)
    done.wait()
    office.stop(drain=False)
    print(json.dumps({"stopped": office.client_id, "stored": office.stored,
                      "duplicates": office.duplicates, "dead_letters": office.dead}), flush=True)
    return 0


def restart_delay(quick_exits: int) -> float:
    """Seconds before restarting a slot that exited `quick_exits` times in a row within
    QUICK_EXIT_S of its start: at once the first time (a killed process), then 0.5 s doubling
    to 30 s (a process that cannot start must not spin)."""
    return 0.0 if quick_exits <= 1 else min(30.0, 0.5 * 2 ** (quick_exits - 2))


QUICK_EXIT_S = 10.0


def _supervise(args: argparse.Namespace, clock: Any = SYSTEM) -> int:
    """N instances as child processes; one that dies is restarted on its slot (its session)."""
    engine, _ = open_fleet_db(args.db)      # a bad URL or a database away: said once, here
    engine.dispose()

    def spawn(slot: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "cabinet.fleet.serve", "serve", "--db", args.db,
               "--broker", args.broker, "--slot", slot, "--group", args.group,
               "--batch", str(args.batch), "--gap-grace", str(args.gap_grace),
               "--gap-every", str(args.gap_every)]
        for flag, value in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.tls_key),
                            ("--signing-key", args.signing_key)):
            if value:
                cmd += [flag, value]
        return subprocess.Popen(cmd)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    slots = [f"{args.slot}-{k}" for k in range(args.instances)]
    children = {slot: spawn(slot) for slot in slots}
    started = {slot: clock.monotonic() for slot in slots}
    quick = {slot: 0 for slot in slots}
    due: dict[str, float] = {}
    while not clock.wait(stop, 0.2):
        now = clock.monotonic()
        for slot in slots:
            child = children[slot]
            if slot not in due and child.poll() is not None:
                quick[slot] = quick[slot] + 1 if now - started[slot] < QUICK_EXIT_S else 1
                delay = restart_delay(quick[slot])
                log.warning("fleet serve: slot %s exited (%s); restarting it in %.1f s", slot,
                            child.returncode, delay)
                print(json.dumps({"restarting": slot, "exit": child.returncode,
                                  "in_s": delay}), flush=True)
                due[slot] = now + delay
            if slot in due and now >= due[slot]:
                del due[slot]
                children[slot], started[slot] = spawn(slot), now
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        child.wait(30)
    return 0


def _send(args: argparse.Namespace) -> int:
    broker = parse_broker(args.broker, ca=args.ca, cert=args.cert, key=args.tls_key)
    key = load_signing_key(args.signing_key)
    body = down_body(args.kind, args.args, args.body)
    engine, sessions = open_fleet_db(args.db)
    client, props = mqtt_client(f"fleet-send-{uuid.uuid4().hex[:12]}", broker,
                                session_expiry_s=0)
    connect_blocking(client, broker, props)
    try:
        msg = send(sessions, client, key, target=args.target, kind=args.kind, body=body,
                   ttl_s=args.ttl, region=args.region)
    finally:
        client.disconnect()
        client.loop_stop()
        engine.dispose()
    print(json.dumps({"sent": msg.id, "kind": msg.kind, "target": args.target,
                      "expires_at": messages.format_time(msg.expires_at)}))
    return 0


def _keygen(path: Path) -> int:
    if path.exists():
        raise CabinetError(f"fleet keygen {path}: the file exists; refusing to overwrite a key")
    key = messages.new_signing_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(messages.private_key_pem(key))
    sys.stdout.write(messages.public_key_pem(key).decode("ascii"))
    return 0


def console_asgi(db_url: str, config_path: Path) -> Any:
    """The console (login, audit, every page) mounted at /console, with the fleet view on."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from cabinet.config import load_config
    from cabinet.console.app import ConsoleDeps, console_app
    from cabinet.ops_cli import open_db
    cfg = load_config(config_path)
    _, fleet_sessions = open_fleet_db(db_url)
    deps = ConsoleDeps(config=cfg, db=open_db(cfg), fleet_db=fleet_sessions)
    return Starlette(routes=[Mount("/console", console_app(deps))])


def _console(args: argparse.Namespace) -> int:
    import uvicorn
    app = console_asgi(args.db, args.config)
    print(json.dumps({"console": f"http://{args.host}:{args.port}/console/fleet"}), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.fleet_command == "serve":
        return _serve(args)
    if args.fleet_command == "send":
        return _send(args)
    if args.fleet_command == "console":
        return _console(args)
    return _keygen(args.file)


if __name__ == "__main__":
    from cabinet import logs
    logs.setup(verbose=False)
    try:
        sys.exit(main())
    except CabinetError as e:
        print(f"cabinet fleet: {e}", file=sys.stderr)
        sys.exit(1)
