"""The fleet wire contract: topics, envelopes and signatures, as code both sides import.

Cabinets publish facts up, the back office pushes signed orders down; both go through an MQTT v5
broker at QoS 1 with persistent sessions (docs/fleet.md, "Wire contract"). This module does no
I/O: it builds topics and client ids, encodes and decodes the JSON envelopes, and signs and
verifies down envelopes with Ed25519. Every decode checks every field and raises `MessageError`
naming the field (`up message field 'seq': ...`), so the back office can dead-letter a malformed
message instead of looping on it, and the cabinet can log why it refused one.

Up (cabinet -> back office), topic `cabinet/<cabinet_id>/up/<kind>`:
    {"v": 1, "id": "<cabinet_id>/<kind>/<natural key>", "cabinet": ..., "kind": ...,
     "seq": <int from the cabinet's outbox>, "at": "<ISO-8601 UTC>", "body": {...}}
The id is built from the fact's own key (session id, move id, alarm id + transition, health
second), never from the send, so a redelivery or a re-publish after a restart carries the same
id and the back office's `ON CONFLICT (id) DO NOTHING` makes it harmless.

Down (back office -> cabinet), topic `cabinet/<cabinet_id>/down/<kind>` or
`region/<region>/down/<kind>`:
    {"v": 1, "id", "kind", "issued_at", "expires_at", "body", "sig"}
`sig` is base64 Ed25519 over `canonical_json(envelope without "sig")`. The cabinet refuses a bad
signature, an expired envelope and an id it already applied (`check_down`).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
import uuid
from typing import Any, Callable, Container, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)
from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat,
                                                          PublicFormat, load_pem_private_key,
                                                          load_pem_public_key)

from cabinet.errors import CabinetError

VERSION = 1
QOS = 1
# How long the broker keeps a disconnected client's session (subscriptions and queued QoS 1
# messages): a cabinet offline for up to a week still gets the orders sent meanwhile.
SESSION_EXPIRY_S = 7 * 24 * 3600

UP_KINDS = ("session", "receipt", "inventory", "alarm", "health")
# `resend` (added after contract version 1 shipped, backward compatible: a cabinet that does not
# know it refuses it as malformed and acks it, nothing else changes) asks a cabinet to publish
# its outbox rows from_seq..to_seq again, for messages the broker acknowledged but delivered
# to no one (docs/fleet.md, "Broker restarts")
DOWN_KINDS = ("standing", "faces", "planogram", "prices", "command", "resend")
# the most rows one resend order may ask for (a larger gap takes several orders)
MAX_RESEND_SPAN = 10_000
COMMANDS = ("out_of_service", "back_in_service", "reboot_mcu")
STANDING_ACTIONS = ("block", "unblock", "close")
ALARM_TRANSITIONS = ("raise", "clear")
STATUSES = ("online", "offline")

SHARE_GROUP = "fleet"
BACKOFFICE_UP_SUBSCRIPTION = f"$share/{SHARE_GROUP}/cabinet/+/up/#"
BACKOFFICE_STATUS_SUBSCRIPTION = f"$share/{SHARE_GROUP}/cabinet/+/status"

# A cabinet id or region is one topic level: no '/', '+', '#', no spaces, not empty.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class MessageError(CabinetError):
    """A malformed fleet message or topic: names the message, the field and what is wrong."""

    def __init__(self, what: str, field: str, message: str):
        self.what, self.field, self.message = what, field, message
        super().__init__(f"{what} field {field!r}: {message}")


class DownRefused(CabinetError):
    """A well-formed down message the cabinet will not apply; `reason` is one of
    bad_signature, expired, replay (the log line and the tests key on it)."""

    def __init__(self, message_id: str, reason: str, detail: str):
        self.message_id, self.reason, self.detail = message_id, reason, detail
        super().__init__(f"down message {message_id!r} refused ({reason}): {detail}")


# --- names and topics --------------------------------------------------------------------
def check_name(value: Any, what: str, field: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise MessageError(what, field, f"{value!r} must be 1-64 letters, digits or _.:- "
                                        f"(one MQTT topic level, starting with a letter or digit)")
    return value


def cabinet_client_id(cabinet_id: str) -> str:
    return "cabinet-" + check_name(cabinet_id, "client id", "cabinet_id")


def backoffice_client_id(instance: str | None = None) -> str:
    return "fleet-" + (instance or uuid.uuid4().hex)


def _kind(kind: Any, kinds: tuple[str, ...], what: str, field: str = "kind") -> str:
    if kind not in kinds:
        raise MessageError(what, field, f"{kind!r} is not one of {', '.join(kinds)}")
    return kind


def up_topic(cabinet_id: str, kind: str) -> str:
    return (f"cabinet/{check_name(cabinet_id, 'up topic', 'cabinet_id')}/up/"
            f"{_kind(kind, UP_KINDS, 'up topic')}")


def status_topic(cabinet_id: str) -> str:
    return f"cabinet/{check_name(cabinet_id, 'status topic', 'cabinet_id')}/status"


def down_topic(cabinet_id: str, kind: str) -> str:
    return (f"cabinet/{check_name(cabinet_id, 'down topic', 'cabinet_id')}/down/"
            f"{_kind(kind, DOWN_KINDS, 'down topic')}")


def region_down_topic(region: str, kind: str) -> str:
    return (f"region/{check_name(region, 'down topic', 'region')}/down/"
            f"{_kind(kind, DOWN_KINDS, 'down topic')}")


def cabinet_down_subscription(cabinet_id: str) -> str:
    return f"cabinet/{check_name(cabinet_id, 'down topic', 'cabinet_id')}/down/+"


def region_down_subscription(region: str) -> str:
    return f"region/{check_name(region, 'down topic', 'region')}/down/+"


def parse_up_topic(topic: str) -> tuple[str, str]:
    """`cabinet/<id>/up/<kind>` -> (cabinet id, kind); MessageError for anything else."""
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 4 or parts[0] != "cabinet" or parts[2] != "up":
        raise MessageError("up topic", "topic", f"{topic!r} is not cabinet/<cabinet_id>/up/<kind>")
    return check_name(parts[1], "up topic", "cabinet_id"), _kind(parts[3], UP_KINDS, "up topic")


def parse_status_topic(topic: str) -> str:
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 3 or parts[0] != "cabinet" or parts[2] != "status":
        raise MessageError("status topic", "topic", f"{topic!r} is not cabinet/<cabinet_id>/status")
    return check_name(parts[1], "status topic", "cabinet_id")


def parse_down_topic(topic: str) -> tuple[str, str, str]:
    """-> (scope "cabinet" | "region", cabinet id or region, kind)."""
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) != 4 or parts[0] not in ("cabinet", "region") or parts[2] != "down":
        raise MessageError("down topic", "topic", f"{topic!r} is not cabinet/<cabinet_id>/down/"
                                                  f"<kind> or region/<region>/down/<kind>")
    return (parts[0], check_name(parts[1], "down topic", "target"),
            _kind(parts[3], DOWN_KINDS, "down topic"))


# --- message ids -------------------------------------------------------------------------
def _key(value: Any, field: str) -> str:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if not text or any(c in text for c in "/+#") or not text.isprintable():
        raise MessageError("message id", field, f"{value!r} must be a non-empty string or int "
                                                f"without '/', '+' or '#'")
    return text


def session_message_id(cabinet_id: str, session_id: str) -> str:
    cabinet = check_name(cabinet_id, "message id", "cabinet_id")
    return f"{cabinet}/session/{_key(session_id, 'session_id')}"


def receipt_message_id(cabinet_id: str, session_id: str, correction: int = 0) -> str:
    """A session's receipt; a later correction of it (review, refund) is receipt n of it."""
    key = _key(session_id, "session_id")
    if not isinstance(correction, int) or isinstance(correction, bool) or correction < 0:
        raise MessageError("message id", "correction", f"{correction!r} must be an int >= 0")
    suffix = f".{correction}" if correction else ""
    return f"{check_name(cabinet_id, 'message id', 'cabinet_id')}/receipt/{key}{suffix}"


def inventory_message_id(cabinet_id: str, move_id: int) -> str:
    cabinet = check_name(cabinet_id, "message id", "cabinet_id")
    return f"{cabinet}/inventory/{_key(move_id, 'move_id')}"


def alarm_message_id(cabinet_id: str, alarm_id: int, transition: str) -> str:
    _kind(transition, ALARM_TRANSITIONS, "message id", "transition")
    return (f"{check_name(cabinet_id, 'message id', 'cabinet_id')}/alarm/"
            f"{_key(alarm_id, 'alarm_id')}.{transition}")


def health_message_id(cabinet_id: str, at: dt.datetime) -> str:
    at = _utc(at, "message id", "at")
    return f"{check_name(cabinet_id, 'message id', 'cabinet_id')}/health/{at:%Y%m%dT%H%M%SZ}"


# --- time --------------------------------------------------------------------------------
def _utc(value: Any, what: str, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise MessageError(what, field, f"{value!r} must be a timezone-aware datetime")
    return value.astimezone(dt.timezone.utc)


def format_time(value: dt.datetime) -> str:
    """ISO-8601 UTC with a Z, to the microsecond when there is one."""
    text = _utc(value, "time", "at").isoformat()
    return text.replace("+00:00", "Z")


def parse_time(value: Any, what: str, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise MessageError(what, field, f"{value!r} must be an ISO-8601 UTC string "
                                        f"like 2026-01-31T12:00:00Z")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MessageError(what, field, f"{value!r} is not an ISO-8601 time "
                                        f"like 2026-01-31T12:00:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() != dt.timedelta(0):
        raise MessageError(what, field, f"{value!r} must be in UTC (end it with Z)")
    return parsed.astimezone(dt.timezone.utc)


# --- JSON helpers ------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII escapes (json defaults)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


def _load(payload: bytes | str, what: str) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise MessageError(what, "payload", f"not UTF-8 JSON ({e})") from None
    if not isinstance(obj, dict):
        raise MessageError(what, "payload", f"must be a JSON object, not {type(obj).__name__}")
    return obj


def _fields(obj: Mapping[str, Any], required: tuple[str, ...], what: str,
            optional: tuple[str, ...] = ()) -> None:
    for name in required:
        if name not in obj:
            raise MessageError(what, name, "missing")
    extra = sorted(set(obj) - set(required) - set(optional))
    if extra:
        raise MessageError(what, extra[0], "unknown field (this is contract version 1)")


def _int(value: Any, what: str, field: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(what, field, f"{value!r} must be an integer")
    if minimum is not None and value < minimum:
        raise MessageError(what, field, f"{value!r} must be >= {minimum}")
    return value


def _str(value: Any, what: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MessageError(what, field, f"{value!r} must be a non-empty string")
    return value


def _bool(value: Any, what: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise MessageError(what, field, f"{value!r} must be true or false")
    return value


def _obj(value: Any, what: str, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(what, field, f"must be a JSON object, not {type(value).__name__}")
    return value


def _version(obj: Mapping[str, Any], what: str) -> None:
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise MessageError(what, "v", f"{obj['v']!r} is not the supported version {VERSION}")


# --- up ----------------------------------------------------------------------------------
# The body keys each up kind must carry (more may follow); the rest is the kind's own detail.
UP_BODY: dict[str, dict[str, Callable[[Any, str, str], Any]]] = {
    "session": {"session_id": _str, "outcome": _str},
    "receipt": {"session_id": _str, "total": _int, "currency": _str},
    "inventory": {"move_id": _int, "slot": _str, "sku": _str, "qty": _int, "kind": _str},
    "alarm": {"alarm_id": _int, "alarm": _str,
              "transition": lambda v, w, f: _kind(v, ALARM_TRANSITIONS, w, f)},
    "health": {"in_service": lambda v, w, f: _bool(v, w, f)},
}


@dataclasses.dataclass(frozen=True)
class UpMessage:
    id: str
    cabinet: str
    kind: str
    seq: int
    at: dt.datetime
    body: dict[str, Any]

    def topic(self) -> str:
        return up_topic(self.cabinet, self.kind)


def _check_up(msg: UpMessage, what: str = "up message") -> UpMessage:
    check_name(msg.cabinet, what, "cabinet")
    _kind(msg.kind, UP_KINDS, what)
    _int(msg.seq, what, "seq", minimum=1)
    _utc(msg.at, what, "at")
    prefix = f"{msg.cabinet}/{msg.kind}/"
    if not isinstance(msg.id, str) or not msg.id.startswith(prefix) or len(msg.id) == len(prefix):
        raise MessageError(what, "id", f"{msg.id!r} must be {prefix}<natural key>")
    body = _obj(msg.body, what, "body")
    for name, check in UP_BODY[msg.kind].items():
        if name not in body:
            raise MessageError(what, f"body.{name}", f"missing (a {msg.kind} body needs "
                                                     f"{', '.join(UP_BODY[msg.kind])})")
        check(body[name], what, f"body.{name}")
    return msg


def encode_up(msg: UpMessage) -> bytes:
    _check_up(msg)
    return json.dumps({"v": VERSION, "id": msg.id, "cabinet": msg.cabinet, "kind": msg.kind,
                       "seq": msg.seq, "at": format_time(msg.at), "body": msg.body},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_up(payload: bytes | str, topic: str | None = None) -> UpMessage:
    """The envelope, every field checked; with `topic`, it must match the envelope's
    cabinet and kind (a cabinet cannot publish as another)."""
    what = "up message"
    obj = _load(payload, what)
    _fields(obj, ("v", "id", "cabinet", "kind", "seq", "at", "body"), what)
    _version(obj, what)
    msg = _check_up(UpMessage(id=obj["id"], cabinet=obj["cabinet"], kind=obj["kind"],
                              seq=obj["seq"], at=parse_time(obj["at"], what, "at"),
                              body=obj["body"]), what)
    if topic is not None:
        cabinet, kind = parse_up_topic(topic)
        if (cabinet, kind) != (msg.cabinet, msg.kind):
            raise MessageError(what, "cabinet" if cabinet != msg.cabinet else "kind",
                               f"envelope says {msg.cabinet}/{msg.kind} but it came on {topic}")
    return msg


# --- status ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StatusMessage:
    status: str
    at: dt.datetime


def encode_status(status: str, at: dt.datetime) -> bytes:
    _kind(status, STATUSES, "status message", "status")
    return json.dumps({"status": status, "at": format_time(at)},
                      separators=(",", ":")).encode("utf-8")


def decode_status(payload: bytes | str) -> StatusMessage:
    what = "status message"
    obj = _load(payload, what)
    _fields(obj, ("status", "at"), what)
    return StatusMessage(_kind(obj["status"], STATUSES, what, "status"),
                         parse_time(obj["at"], what, "at"))


# --- down --------------------------------------------------------------------------------
def _check_command(body: dict[str, Any], what: str) -> None:
    _fields(body, ("command",), what, optional=("reason",))
    _kind(body["command"], COMMANDS, what, "body.command")
    if "reason" in body and not isinstance(body["reason"], str):
        raise MessageError(what, "body.reason", f"{body['reason']!r} must be a string")


def _check_standing(body: dict[str, Any], what: str) -> None:
    _fields(body, ("account_id", "action"), what, optional=("reason",))
    _int(body["account_id"], what, "body.account_id", minimum=1)
    _kind(body["action"], STANDING_ACTIONS, what, "body.action")
    if body["action"] == "block":
        if "reason" not in body:
            raise MessageError(what, "body.reason", "missing (a block needs a reason)")
        _str(body["reason"], what, "body.reason")


def _check_faces(body: dict[str, Any], what: str) -> None:
    _fields(body, ("account_id", "name", "templates"), what, optional=("currency",))
    _int(body["account_id"], what, "body.account_id", minimum=1)
    _str(body["name"], what, "body.name")
    if "currency" in body:
        _str(body["currency"], what, "body.currency")
    if not isinstance(body["templates"], list):
        raise MessageError(what, "body.templates", "must be a list of base64 sealed templates "
                                                   "(an empty list erases the account's faces)")
    for i, t in enumerate(body["templates"]):
        b64decode_field(t, what, f"body.templates[{i}]")


def _check_planogram(body: dict[str, Any], what: str) -> None:
    _fields(body, ("planogram",), what)
    _str(body["planogram"], what, "body.planogram")


def _check_prices(body: dict[str, Any], what: str) -> None:
    _fields(body, ("prices",), what)
    prices = _obj(body["prices"], what, "body.prices")
    if not prices:
        raise MessageError(what, "body.prices", "is empty (give {sku: price in minor units})")
    for sku, price in prices.items():
        _int(price, what, f"body.prices.{sku}", minimum=0)


def _check_resend(body: dict[str, Any], what: str) -> None:
    _fields(body, ("from_seq", "to_seq"), what)
    first = _int(body["from_seq"], what, "body.from_seq", minimum=1)
    last = _int(body["to_seq"], what, "body.to_seq", minimum=first)
    if last - first >= MAX_RESEND_SPAN:
        raise MessageError(what, "body.to_seq", f"{last} asks for {last - first + 1} rows; at "
                                                f"most {MAX_RESEND_SPAN} per order (send several)")


DOWN_BODY: dict[str, Callable[[dict[str, Any], str], None]] = {
    "command": _check_command, "standing": _check_standing, "faces": _check_faces,
    "planogram": _check_planogram, "prices": _check_prices, "resend": _check_resend,
}


def b64decode_field(value: Any, what: str, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise MessageError(what, field, "must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(what, field, "is not valid base64") from None


@dataclasses.dataclass(frozen=True)
class DownMessage:
    id: str
    kind: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    body: dict[str, Any]
    sig: str = ""

    def unsigned(self) -> dict[str, Any]:
        """The envelope without "sig": what the signature covers."""
        return {"v": VERSION, "id": self.id, "kind": self.kind,
                "issued_at": format_time(self.issued_at),
                "expires_at": format_time(self.expires_at), "body": self.body}


def _check_down(msg: DownMessage, what: str) -> DownMessage:
    _str(msg.id, what, "id")
    if len(msg.id) > 200:
        raise MessageError(what, "id", "longer than 200 characters")
    _kind(msg.kind, DOWN_KINDS, what)
    issued, expires = _utc(msg.issued_at, what, "issued_at"), _utc(msg.expires_at, what,
                                                                    "expires_at")
    if expires <= issued:
        raise MessageError(what, "expires_at", f"{format_time(expires)} is not after "
                                               f"issued_at {format_time(issued)}")
    DOWN_BODY[msg.kind](_obj(msg.body, what, "body"), what)
    return msg


def sign_down(private_key: Ed25519PrivateKey, *, id: str, kind: str, body: dict[str, Any],
              issued_at: dt.datetime, ttl_s: float) -> DownMessage:
    """A signed down message valid for `ttl_s` seconds from `issued_at`."""
    if not isinstance(ttl_s, (int, float)) or isinstance(ttl_s, bool) or ttl_s <= 0:
        raise MessageError("down message", "ttl_s", f"{ttl_s!r} must be a positive number "
                                                    f"of seconds")
    issued = _utc(issued_at, "down message", "issued_at")
    msg = _check_down(DownMessage(id=id, kind=kind, issued_at=issued,
                                  expires_at=issued + dt.timedelta(seconds=ttl_s), body=body),
                      "down message")
    sig = private_key.sign(canonical_json(msg.unsigned()))
    return dataclasses.replace(msg, sig=base64.b64encode(sig).decode("ascii"))


def encode_down(msg: DownMessage) -> bytes:
    _check_down(msg, "down message")
    b64decode_field(msg.sig, "down message", "sig")
    return json.dumps({**msg.unsigned(), "sig": msg.sig}, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def decode_down(payload: bytes | str, topic: str | None = None) -> DownMessage:
    """The envelope, every field checked (the signature is `check_down`'s job)."""
    what = "down message"
    obj = _load(payload, what)
    _fields(obj, ("v", "id", "kind", "issued_at", "expires_at", "body", "sig"), what)
    _version(obj, what)
    b64decode_field(obj["sig"], what, "sig")
    msg = _check_down(DownMessage(id=obj["id"], kind=obj["kind"],
                                  issued_at=parse_time(obj["issued_at"], what, "issued_at"),
                                  expires_at=parse_time(obj["expires_at"], what, "expires_at"),
                                  body=obj["body"], sig=obj["sig"]), what)
    if topic is not None:
        _, _, kind = parse_down_topic(topic)
        if kind != msg.kind:
            raise MessageError(what, "kind", f"envelope says {msg.kind} but it came on {topic}")
    return msg


def verify_signature(msg: DownMessage, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(msg.sig, validate=True),
                          canonical_json(msg.unsigned()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def check_down(msg: DownMessage, public_key: Ed25519PublicKey, now: dt.datetime,
               applied: Container[str]) -> None:
    """Raise DownRefused (bad_signature, expired, replay) unless the cabinet may apply it.
    The signature goes first: an unsigned message says nothing true about its own expiry."""
    if not verify_signature(msg, public_key):
        raise DownRefused(msg.id, "bad_signature", "the signature does not verify with the "
                                                   "back office's public key in the config")
    now = _utc(now, "down message", "now")
    if now >= msg.expires_at:
        raise DownRefused(msg.id, "expired", f"expired at {format_time(msg.expires_at)}, "
                                             f"now {format_time(now)}")
    if msg.id in applied:
        raise DownRefused(msg.id, "replay", "this id was already applied")


# --- keys --------------------------------------------------------------------------------
def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes, origin: str) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem)
    except ValueError as e:
        raise CabinetError(f"{origin}: not a PEM public key ({e}); make one with "
                           f"`openssl pkey -in signing.pem -pubout`") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CabinetError(f"{origin}: the key is {type(key).__name__}, not Ed25519")
    return key


def load_private_key(pem: bytes, origin: str) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise CabinetError(f"{origin}: not an unencrypted PEM private key ({e}); make one with "
                           f"`openssl genpkey -algorithm ed25519 -out signing.pem`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CabinetError(f"{origin}: the key is {type(key).__name__}, not Ed25519")
    return key
