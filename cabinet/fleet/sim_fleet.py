"""Simulated cabinets that speak the wire contract, for the back office's tests and benchmark.

A `SimCabinet` makes the facts a selling cabinet would (sessions, receipts, inventory moves,
alarms, health), each with the contract's stable message id and the next outbox seq, and keeps
them in an outbox until the broker acknowledges them (QoS 1 PUBACK), so it can go offline,
keep selling on its own clock, and catch up later, exactly like the real agent's durable outbox
(cabinet/fleet/agent.py) in miniature. It also keeps what the back office should end up with
(`expected`): stock per slot, sales per day, alarms open, sessions awaiting review, the ids.

It connects as the contract says: client id `cabinet-<id>`, MQTT v5, persistent session, a
retained "offline" status as its last will and a retained "online" once connected. `drop()`
cuts the socket without a DISCONNECT (the broker then publishes the will), `close()` says
goodbye. Time is the cabinet's own: simulated (`start`, `step_s` per sale) for the tests, or
the real clock (`now=`) for the benchmark's lag.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import random
import threading
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cabinet.fleet import messages
from cabinet.fleet.serve import Broker, BrokerError, mqtt_client

SLOTS = (("A1", "cola-330", 6), ("A2", "water-500", 6), ("B1", "crisps-salt", 4),
         ("B2", "choc-bar", 4))
PRICES = {"cola-330": 180, "water-500": 120, "crisps-salt": 150, "choc-bar": 210}


@dataclasses.dataclass
class Expected:
    """What the back office must derive from this cabinet's facts, each counted once."""
    ids: list[str] = dataclasses.field(default_factory=list)
    stock: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    sales: dict[tuple[dt.date, str], int] = dataclasses.field(
        default_factory=lambda: collections.Counter())
    open_alarms: set[int] = dataclasses.field(default_factory=set)
    review: set[str] = dataclasses.field(default_factory=set)
    last_at: dt.datetime | None = None
    last_seq: int = 0


class SimCabinet:
    def __init__(self, cabinet_id: str, *, start: dt.datetime | None = None,
                 step_s: float = 60.0, seed: int = 0,
                 now: Callable[[], dt.datetime] | None = None, currency: str = "EUR",
                 public_key=None):
        self.id = messages.check_name(cabinet_id, "sim cabinet", "cabinet_id")
        # with the back office's public key, the cabinet obeys signed `resend` orders as the
        # real agent does: the facts from_seq..to_seq published again, same ids and bytes
        self.public_key = public_key
        self.resends: list[tuple[int, int]] = []       # the orders obeyed (from, to)
        self._applied: set[str] = set()
        self.clock_at = start or dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.timezone.utc)
        self.step = dt.timedelta(seconds=step_s)
        self.real_now = now
        self.currency = currency
        self.rng = random.Random(seed)
        self.seq = 0
        self.sessions = self.moves = self.alarm_ids = 0
        self.outbox: list[messages.UpMessage] = []     # in seq order, until PUBACKed
        self._sent: tuple[messages.UpMessage, ...] = ()  # what the broker acknowledged
        self.expected = Expected()
        self.client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()

    # --- facts -------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        return self.real_now() if self.real_now else self.clock_at

    def tick(self) -> dt.datetime:
        if not self.real_now:
            self.clock_at += self.step
        return self.now()

    def _fact(self, kind: str, msg_id: str, body: dict, at: dt.datetime) -> messages.UpMessage:
        with self._lock:
            self.seq += 1
            msg = messages.UpMessage(id=msg_id, cabinet=self.id, kind=kind, seq=self.seq, at=at,
                                     body=body)
            messages.encode_up(msg)       # every fact passes the contract's own checks
            self.outbox.append(msg)
        e = self.expected
        e.ids.append(msg_id)
        e.last_at = at if e.last_at is None else max(e.last_at, at)
        e.last_seq = self.seq
        return msg

    def _move(self, slot: str, sku: str, qty: int, kind: str, at: dt.datetime,
              par: int | None = None) -> None:
        self.moves += 1
        body = {"move_id": self.moves, "slot": slot, "sku": sku, "qty": qty, "kind": kind}
        if par is not None:
            body["par"] = par
        self._fact("inventory", messages.inventory_message_id(self.id, self.moves), body, at)
        self.expected.stock[slot] += qty

    def restock(self, units: int = 8) -> None:
        at = self.tick()
        for slot, sku, par in SLOTS:
            self._move(slot, sku, units, "restock", at, par=par)

    def sale(self, *, flagged: bool = False, take: int | None = None) -> str:
        """A customer takes 1-2 items (or `take`) from one slot; session, receipt, move."""
        at = self.tick()
        self.sessions += 1
        sid = f"{self.id}-s{self.sessions}"
        slot, sku, _ = SLOTS[self.rng.randrange(len(SLOTS))]
        n = take if take is not None else self.rng.randint(1, 2)
        total = n * PRICES[sku]
        body = {"session_id": sid, "outcome": "pending" if flagged else "charged"}
        if flagged:
            body["flags"] = ["low_confidence"]
            self.expected.review.add(sid)
        self._fact("session", messages.session_message_id(self.id, sid), body, at)
        self._fact("receipt", messages.receipt_message_id(self.id, sid),
                   {"session_id": sid, "total": total, "currency": self.currency}, at)
        self.expected.sales[(at.date(), self.currency)] += total
        self._move(slot, sku, -n, "sale", at)
        return sid

    def correct(self, sid: str, total: int, correction: int = 1) -> None:
        """A reviewed session's corrected receipt: its total replaces the first one's."""
        at = self.tick()
        old = None
        for m in self.outbox_history():
            if m.kind == "receipt" and m.body["session_id"] == sid:
                old = m
        if old is None:
            raise ValueError(f"sim cabinet {self.id}: no receipt for session {sid}")
        self._fact("receipt", messages.receipt_message_id(self.id, sid, correction),
                   {"session_id": sid, "total": total, "currency": self.currency}, at)
        self.expected.sales[(old.at.date(), self.currency)] += total - old.body["total"]
        self.expected.review.discard(sid)

    def raise_alarm(self, name: str = "door_open_too_long") -> int:
        at = self.tick()
        self.alarm_ids += 1
        self._fact("alarm", messages.alarm_message_id(self.id, self.alarm_ids, "raise"),
                   {"alarm_id": self.alarm_ids, "alarm": name, "transition": "raise"}, at)
        self.expected.open_alarms.add(self.alarm_ids)
        return self.alarm_ids

    def clear_alarm(self, alarm_id: int, name: str = "door_open_too_long") -> None:
        at = self.tick()
        self._fact("alarm", messages.alarm_message_id(self.id, alarm_id, "clear"),
                   {"alarm_id": alarm_id, "alarm": name, "transition": "clear"}, at)
        self.expected.open_alarms.discard(alarm_id)

    def health(self, in_service: bool = True) -> None:
        at = self.tick()
        self._fact("health", messages.health_message_id(self.id, at),
                   {"in_service": in_service}, at)

    def outbox_history(self) -> list[messages.UpMessage]:
        return list(self._sent) + list(self.outbox)

    # --- the network ---------------------------------------------------------------------------
    def connect(self, broker: Broker, timeout_s: float = 10.0) -> None:
        client, props = mqtt_client(messages.cabinet_client_id(self.id), broker)
        client.max_inflight_messages_set(1000)
        # Cabinets come back after the back office does: Mosquitto 2.0 does not restore a
        # shared subscription across its own restart until a member resubscribes (docs/fleet.md)
        client.reconnect_delay_set(0.5, 5.0)
        will = Properties(PacketTypes.WILLMESSAGE)
        client.will_set(messages.status_topic(self.id),
                        messages.encode_status("offline", self.now()), qos=1, retain=True,
                        properties=will)
        self._connected.clear()

        def on_connect(c, u, f, rc, p):
            if not rc.is_failure:
                if self.public_key is not None:
                    c.subscribe(messages.down_topic(self.id, "resend"), qos=messages.QOS)
                c.publish(messages.status_topic(self.id),
                          messages.encode_status("online", self.now()), qos=1, retain=True)
                self._connected.set()

        client.on_connect = on_connect
        client.on_message = self._on_down
        client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        try:
            client.connect(broker.host, broker.port, keepalive=10, clean_start=False,
                           properties=props)
        except OSError as e:
            raise BrokerError(f"sim cabinet {self.id}: broker {broker.url}: {e}") from None
        client.loop_start()
        self.client = client
        if not self._connected.wait(timeout_s):
            raise BrokerError(f"sim cabinet {self.id}: no CONNACK from {broker.url} "
                              f"within {timeout_s} s")

    def flush(self, timeout_s: float = 30.0) -> int:
        """Publish the outbox in seq order and drop what the broker acknowledged; returns how
        many were acknowledged (fewer if the connection broke: they stay for the next flush)."""
        if self.client is None:
            raise BrokerError(f"sim cabinet {self.id}: not connected")
        with self._lock:
            pending = list(self.outbox)
        infos = [(m, self.client.publish(m.topic(), messages.encode_up(m), qos=messages.QOS))
                 for m in pending]
        acked = []
        for m, info in infos:
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            acked.append(m)
        done = {m.id for m in acked}
        with self._lock:
            self.outbox = [m for m in self.outbox if m.id not in done]
            self._sent = tuple(self._sent) + tuple(acked)
        return len(acked)

    def _on_down(self, client, userdata, msg) -> None:
        """A signed `resend`: verified as the agent's DownHandler does (signature, expiry,
        replay), then the facts in the range published again (without waiting: the paho
        network thread calls this)."""
        try:
            order = messages.decode_down(msg.payload, topic=msg.topic)
            messages.check_down(order, self.public_key, dt.datetime.now(dt.timezone.utc),
                                self._applied)
        except (messages.MessageError, messages.DownRefused):
            return
        self._applied.add(order.id)
        first, last = order.body["from_seq"], order.body["to_seq"]
        again = [m for m in self.outbox_history() if first <= m.seq <= last]
        for m in again:
            client.publish(m.topic(), messages.encode_up(m), qos=messages.QOS)
        with self._lock:
            self.resends.append((first, last))

    def publish_again(self, msgs: list[messages.UpMessage], timeout_s: float = 10.0) -> None:
        """Re-publish facts already delivered, as an outbox does after a crash before it
        recorded the PUBACK: same ids, so the back office must change nothing."""
        infos = [self.client.publish(m.topic(), messages.encode_up(m), qos=messages.QOS)
                 for m in msgs]
        for info in infos:
            info.wait_for_publish(timeout_s)

    def drop(self) -> None:
        """The network goes: no DISCONNECT, the broker publishes the will ("offline")."""
        if self.client is not None:
            self.client.loop_stop()
            sock = self.client.socket()
            if sock is not None:
                sock.close()
            self.client = None

    def close(self, *, forget: bool = False) -> None:
        """Goodbye: a retained "offline" and the end of the session (expiry 0), so a finished
        test or benchmark leaves nothing queued at the broker; `forget` clears the retained
        status instead (a benchmark's cabinets leave no trace on a shared broker)."""
        if self.client is not None:
            status = b"" if forget else messages.encode_status("offline", self.now())
            self.client.publish(messages.status_topic(self.id), status, qos=1,
                                retain=True).wait_for_publish(5)
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
            self.client.loop_stop()
            self.client = None


def fleet(n: int, *, prefix: str = "cab", **kw) -> list[SimCabinet]:
    """`n` cabinets named <prefix>-000 ..., each with its own seed."""
    return [SimCabinet(f"{prefix}-{i:03d}", seed=i, **kw) for i in range(n)]


def in_parallel(jobs: list[Callable[[], object]], width: int = 16) -> None:
    """Run the jobs on `width` threads (200 cabinets connect in a fraction of the serial time);
    the first error is raised once every thread is done."""
    errors: list[BaseException] = []

    def worker(chunk: list[Callable[[], object]]) -> None:
        for job in chunk:
            try:
                job()
            except BaseException as e:     # re-raised below, after every thread finished
                errors.append(e)
    threads = [threading.Thread(target=worker, args=(jobs[i::width],)) for i in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def connect_all(cabinets: list[SimCabinet], broker: Broker) -> None:
    in_parallel([lambda c=c: c.connect(broker) for c in cabinets])


def flush_all(cabinets: list[SimCabinet], timeout_s: float = 30.0) -> None:
    in_parallel([lambda c=c: c.flush(timeout_s) for c in cabinets])


def close_all(cabinets: list[SimCabinet], *, forget: bool = False) -> None:
    in_parallel([lambda c=c: c.close(forget=forget) for c in cabinets if c.client is not None])
