"""The cabinet's fleet agent: publishes the outbox to the broker, applies signed orders.

One thread owns one paho-mqtt 2.x client (MQTT v5) and drives it with `loop()` itself, so
every wait that is policy (reconnect back-off, the collect and health cadence) goes through the
Clock port and tests run it on a ManualClock; only the socket poll is real time.

Up: every `collect_every_s` the outbox collects new facts (cabinet/fleet/outbox.py); while
connected, unsent rows go out in seq order at QoS 1, at most `max_inflight` unacknowledged, and
a row is marked sent only when its PUBACK comes. A lost connection drops the in-flight map and
the next connection publishes again from the oldest unsent row: a message may arrive twice,
with the same id, and never not at all. A restarted cabinet does the same from its database.

Session: client id `cabinet-<id>`, clean_start False with a session expiry, so the broker keeps
the down subscriptions and queues orders while the cabinet is away. The last will is a retained
`offline` on `cabinet/<id>/status`; a retained `online` follows each CONNACK; a clean stop
publishes `offline` itself before disconnecting.

Down: messages on `cabinet/<id>/down/+` (and the region's) go to the DownHandler
(cabinet/fleet/down.py), acknowledged (paho manual_ack) only once handled, so a crash while
applying gets the message again and the handler's replay check decides.

Reconnects back off from `reconnect_first_s`, doubling to `reconnect_max_s`, spread by up to
25% (`backoff`, a pure function; the randomness comes in as `jitter`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cabinet.fleet import messages as m
from cabinet.fleet.outbox import FleetOutbox

log = logging.getLogger("cabinet.fleet")


def backoff(attempt: int, *, first_s: float, max_s: float, jitter: float = 0.0) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 = after the first failure):
    first_s, doubling up to max_s, then spread by jitter in [0, 1) up to +25%."""
    if attempt < 0:
        raise ValueError(f"backoff: attempt {attempt} must be >= 0")
    return min(max_s, first_s * 2 ** min(attempt, 40)) * (1 + 0.25 * jitter)


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30

    def __repr__(self) -> str:      # never the password
        return (f"BrokerSettings({'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}, "
                f"user={self.username!r})")


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    cabinet_id: str
    broker: BrokerSettings
    region: str | None = None
    session_expiry_s: int = m.SESSION_EXPIRY_S
    collect_every_s: float = 1.0
    health_every_s: float = 60.0
    reconnect_first_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_inflight: int = 20
    io_poll_s: float = 0.02          # the socket poll of paho's loop (I/O, not a timer)


class FleetAgent:
    def __init__(self, settings: AgentSettings, outbox: FleetOutbox, down: Any, *,
                 clock: Any, health: Callable[[], dict[str, Any]],
                 jitter: Callable[[], float] = random.random):
        self.settings = settings
        self.outbox = outbox
        self.down = down                # .handle(topic, payload) (cabinet/fleet/down.py)
        self.clock = clock
        self._health = health
        self._jitter = jitter
        self.connected = threading.Event()     # CONNACK received, not lost since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._lost = False
        self._inflight: dict[int, int] = {}    # paho mid -> outbox seq, this connection only
        self._cursor = 0                       # highest seq handed to this connection
        self._acked: list[int] = []
        self._more = True                      # the outbox may have something to send
        self._attempt = 0
        self.connects = 0                      # successful CONNACKs (tests, health)
        if getattr(down, "resend", False) is None:
            down.resend = self._resend          # the `resend` order re-publishes through us

    # --- life ----------------------------------------------------------------------------
    def start(self) -> "FleetAgent":
        self._thread = threading.Thread(target=self._run, name="fleet-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("fleet agent: still running %.0f s after stop", timeout_s)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), dt.timezone.utc)

    def _run(self) -> None:
        s = self.settings
        now = self.clock.monotonic()
        next_collect = next_health = next_attempt = now
        while not self._stop.is_set():
            now = self.clock.monotonic()
            try:
                if now >= next_collect:
                    next_collect = now + s.collect_every_s
                    self._more |= self.outbox.collect() > 0
                if now >= next_health:
                    next_health = now + s.health_every_s
                    self._more |= self.outbox.add_health(self._health())
            except Exception:           # the database: log, and try again next time
                log.exception("fleet outbox: collecting failed; retrying")
            if self._client is None:
                if now >= next_attempt and not self._open():
                    delay = backoff(self._attempt, first_s=s.reconnect_first_s,
                                    max_s=s.reconnect_max_s, jitter=self._jitter())
                    self._attempt += 1
                    next_attempt = now + delay
                    log.warning("fleet: broker %s unreachable; next try in %.1f s",
                                s.broker, delay)
                if self._client is None:
                    self.clock.wait(self._stop, max(0.0, min(next_attempt, next_collect,
                                                             next_health) - now))
                continue
            try:
                rc = self._client.loop(timeout=s.io_poll_s)
                lost = f"connection lost ({mqtt.error_string(rc)})" \
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._lost else None
                if lost is None:
                    if self._acked:
                        self.outbox.mark_sent(self._acked)
                        self._acked.clear()
                    if self.connected.is_set() and self._more:
                        self._publish_more()
            except Exception as e:      # the database or the socket: start again afresh
                log.exception("fleet: %s", e)
                lost = f"{type(e).__name__}: {e}"
            if lost is not None:
                self._drop(lost)
                next_attempt = self.clock.monotonic() + backoff(
                    self._attempt, first_s=s.reconnect_first_s, max_s=s.reconnect_max_s,
                    jitter=self._jitter())
                self._attempt += 1
        self._close()

    # --- connection ----------------------------------------------------------------------
    def _open(self) -> bool:
        s, b = self.settings, self.settings.broker
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.cabinet_client_id(
            s.cabinet_id), protocol=mqtt.MQTTv5, manual_ack=True)
        client.max_inflight_messages_set(s.max_inflight)
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        if b.tls:
            try:
                client.tls_set(ca_certs=b.ca_file, certfile=b.cert_file, keyfile=b.key_file)
            except (OSError, ValueError) as e:    # a missing or bad file: say which, retry
                log.error("fleet: TLS files (ca %s, cert %s, key %s): %s", b.ca_file,
                          b.cert_file, b.key_file, e)
                return False
        client.will_set(m.status_topic(s.cabinet_id), m.encode_status("offline", self._now()),
                        qos=m.QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        try:
            client.connect(b.host, b.port, keepalive=b.keepalive_s, clean_start=False,
                           properties=props)
        except (OSError, ValueError) as e:
            log.debug("fleet: connect to %s failed: %s", b, e)
            return False
        self._client, self._lost = client, False
        self._inflight, self._cursor, self._more = {}, 0, True
        return True

    def _drop(self, why: str) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("fleet: %s; %d message(s) in flight will be sent again", why,
                        len(self._inflight))
        self.connected.clear()
        client, self._client = self._client, None
        self._inflight = {}
        if client is not None:
            try:
                client.socket() and client.socket().close()
            except OSError:
                pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("fleet: broker %s refused the connection: %s", self.settings.broker,
                      reason_code)
            self._lost = True
            return
        s = self.settings
        topics = [m.cabinet_down_subscription(s.cabinet_id)]
        if s.region:
            topics.append(m.region_down_subscription(s.region))
        client.subscribe([(t, SubscribeOptions(qos=m.QOS)) for t in topics])
        client.publish(m.status_topic(s.cabinet_id), m.encode_status("online", self._now()),
                       qos=m.QOS, retain=True)
        self._attempt = 0
        self.connects += 1
        self.connected.set()
        log.info("fleet: connected to %s (session %s)", s.broker,
                 "resumed" if flags.session_present else "new")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._lost = True
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return                      # the status message, or a dropped connection's
        if reason_code.is_failure:
            log.error("fleet: broker refused up message seq %d: %s; sent again after the "
                      "next reconnect", seq, reason_code)
            return
        self._acked.append(seq)
        self._more = True

    def _publish_more(self) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            return
        batch = self.outbox.pending(after_seq=self._cursor, limit=room)
        if not batch:
            self._more = False
            return
        for msg in batch:
            info = self._client.publish(msg.topic(), m.encode_up(msg), qos=m.QOS)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost = True
                return
            self._inflight[info.mid] = msg.seq
            self._cursor = msg.seq

    def _resend(self, body: dict[str, Any]) -> str:
        """A `resend` order (on this thread: paho calls back from our own loop()): the rows
        from_seq..to_seq become unsent and the publishing cursor goes back before them, so
        they go out again in seq order, same ids and bytes (the back office keeps one)."""
        first, last = int(body["from_seq"]), int(body["to_seq"])
        again = self.outbox.send_again(first, last)
        self._cursor = min(self._cursor, first - 1)
        self._more = True
        return f"publishing seq {first}..{last} again ({again} sent row(s) marked unsent)"

    def _on_message(self, client, userdata, message) -> None:
        try:
            self.down.handle(message.topic, message.payload)
        except Exception:               # never let one message stop the agent
            log.exception("fleet: handling down message on %s failed", message.topic)
        finally:
            client.ack(message.mid, message.qos)

    def _close(self) -> None:
        """A clean stop: a fresh retained `offline`, its PUBACK awaited for a bounded number
        of socket polls, then DISCONNECT (which, unlike a crash, sends no will)."""
        client = self._client
        if client is None:
            return
        if self.connected.is_set():
            info = client.publish(m.status_topic(self.settings.cabinet_id),
                                  m.encode_status("offline", self._now()), qos=m.QOS,
                                  retain=True)
            for _ in range(100):
                if info.is_published() or client.loop(timeout=self.settings.io_poll_s) \
                        != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if self._acked:
                self.outbox.mark_sent(self._acked)
            client.disconnect()
            client.loop(timeout=self.settings.io_poll_s)
        self._drop("stopped")
