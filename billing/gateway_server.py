"""The sandbox payment gateway: a real HTTP server on loopback that behaves like Stripe's
PaymentIntents with manual capture.

Two layers. `_Book` is the gateway's memory and rules, no I/O: payment intents, refunds, and the
idempotency store (key -> fingerprint of the request and the answer it got). `SandboxGateway`
puts it behind a stdlib ThreadingHTTPServer speaking JSON, keeps it on disk, checks the API key
and the request size, and injects faults on demand.

The API (JSON bodies, amounts in minor units, `Authorization: Bearer <key>` on every request):
  POST /v1/payment_intents            {amount, currency, payment_method, capture_method}
       capture_method "manual" (default) places a hold: status requires_capture;
       "automatic" charges at once: status succeeded. A decline answers 402 with the intent
       (status requires_payment_method) in error.payment_intent.
  POST /v1/payment_intents/ID/capture {amount_to_capture?, currency?}  -> succeeded
  POST /v1/payment_intents/ID/cancel  {cancellation_reason?}           -> canceled
  POST /v1/refunds                    {payment_intent, amount?, currency?}
  GET  /v1/payment_intents/ID, GET /v1/refunds/ID
Ids are random (`pi_`/`re_` + secrets.token_urlsafe), so nobody can guess another's intent.
Amounts are positive integers at most `max_amount` major units (scaled by the currency's ISO
4217 exponent); a capture or refund naming another currency than the intent's is refused.

Idempotency (the Stripe rule): every POST carries an `Idempotency-Key` header. A key seen with
the same path and body gets the stored answer again and has no second effect; the same key
with anything different gets 409. Injected 500s are not stored (the request never happened).

Durability: with a `data_dir`, every change is appended to `data_dir/journal.jsonl` (one JSON
line: the objects it changed, the idempotency record, the effect) and fsynced before the answer
leaves; a restarted gateway replays the journal, so it knows every intent and every key. A torn
last line (power cut mid-write) is dropped on load; a bad line elsewhere is an error naming it.
Without a `data_dir` the state lives in memory (tests that share one server).

Faults (`fail_next(n, kind)`, or `--fault KIND[xN]` on the command line):
  "500"        answer 500 and do nothing;
  "drop"       do the work (stored under the key), then close the connection without answer;
  "slow"       do the work, then wait `delay_s` before answering (the gateway's `sleep`);
  "timeout"    wait `delay_s`, do nothing, close without answer (the request was lost);
  "duplicate"  the request arrives twice (a network duplicate): both are processed, the
               second as a replay of the first, and the second's answer is sent;
  "decline", "insufficient_funds", "expired_card": apply to the next n intent creations,
               which are declined with that code whatever the card.
`--flaky RATE` draws one of 500/drop/slow/duplicate for each POST with that probability.
`effects()` counts what really happened (authorize, decline, capture, charge, void, refund).

Test payment methods: tok_visa_ok (authorised), tok_declined, tok_insufficient_funds,
tok_expired; any other is declined as invalid_token.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import os
import random
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

TEST_TOKENS: dict[str, str | None] = {  # payment method -> decline code (None: authorised)
    "tok_visa_ok": None,
    "tok_declined": "card_declined",
    "tok_insufficient_funds": "insufficient_funds",
    "tok_expired": "expired_card",
}
DECLINE_MESSAGES = {
    "card_declined": "The card was declined.",
    "insufficient_funds": "The card has insufficient funds.",
    "expired_card": "The card has expired.",
    "invalid_token": "The payment method is not valid.",
}
DECLINE_FAULTS = ("decline", "insufficient_funds", "expired_card")
POST_FAULTS = ("500", "drop", "slow", "timeout", "duplicate")
FAULT_KINDS = POST_FAULTS + DECLINE_FAULTS
FLAKY_KINDS = ("500", "drop", "slow", "duplicate")

# ISO 4217 active codes by minor-unit exponent (everything not listed under 0, 3 or 4 is 2).
_EXP0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXP3 = "BHD IQD JOD KWD LYD OMR TND"
_EXP4 = "CLF UYW"
_EXP2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR "
    "FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW "
    "KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN "
    "NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD "
    "SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS "
    "VED VES WST XCD YER ZAR ZMW ZWL")
ISO_4217_EXPONENTS: dict[str, int] = {
    **{c: 0 for c in _EXP0.split()}, **{c: 2 for c in _EXP2.split()},
    **{c: 3 for c in _EXP3.split()}, **{c: 4 for c in _EXP4.split()}}

DEFAULT_MAX_AMOUNT = 10_000          # major units (EUR 10,000.00, JPY 10,000)
DEFAULT_MAX_BODY = 16 * 1024         # bytes
DEFAULT_READ_TIMEOUT_S = 5.0
_ID = r"([A-Za-z0-9_-]+)"
_PI_ACTION = re.compile(rf"^/v1/payment_intents/{_ID}/(capture|cancel)$")
_PI_GET = re.compile(rf"^/v1/payment_intents/{_ID}$")
_RE_GET = re.compile(rf"^/v1/refunds/{_ID}$")
JOURNAL = "journal.jsonl"
KEY_FILE = "api_key"


class _Refused(Exception):
    def __init__(self, status: int, kind: str, message: str, *, code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.code, self.param = code, param


def _error(status: int, kind: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"type": kind, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return status, {"error": body}


def _invalid(message: str, param: str | None = None, code: str = "parameter_invalid") -> _Refused:
    return _Refused(400, "invalid_request_error", message, code=code, param=param)


class _Book:
    """The gateway's state and rules; callers hold the gateway's lock around every call."""

    def __init__(self, *, max_amount: int = DEFAULT_MAX_AMOUNT,
                 now: Callable[[], float] = time.time):
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, dict[str, Any]] = {}
        self.effects: collections.Counter[str] = collections.Counter()
        self.max_amount = max_amount
        self._now = now
        self._changed: dict[str, dict[str, Any]] = {}
        self._effect: str | None = None

    # --- durability: what one request changed, and replaying it ---------------------------
    def apply(self, record: dict[str, Any]) -> None:
        for obj in record.get("objects", []):
            (self.intents if obj["object"] == "payment_intent" else self.refunds)[obj["id"]] = obj
        if record.get("idem"):
            self.idempotency[record["idem"]["key"]] = record["idem"]
        if record.get("effect"):
            self.effects[record["effect"]] += 1

    def post(self, path: str, key: str | None, raw: bytes,
             decline: str | None = None) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        """(status, answer, journal record or None when nothing changed)."""
        if not key:
            return (*_error(400, "invalid_request_error", "the Idempotency-Key header is "
                                  "required on every POST"), None)
        if len(key) > 255:
            return (*_error(400, "invalid_request_error", "the Idempotency-Key is longer than "
                                                         "255 characters"), None)
        fingerprint = hashlib.sha256(b"POST " + path.encode() + b"\n" + raw).hexdigest()
        stored = self.idempotency.get(key)
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                return (*_error(409, "idempotency_error",
                                f"Idempotency-Key {key!r} was already used with a different "
                                f"request ({stored['path']}); use a new key for a new request"),
                        None)
            return stored["status"], stored["body"], None
        self._changed, self._effect = {}, None
        try:
            body = json.loads(raw.decode("utf-8") or "null")
            if not isinstance(body, dict):
                raise _invalid("the body must be a JSON object")
            status, answer = self._route(path, body, decline)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            status, answer = _error(400, "invalid_request_error", f"the body is not JSON: {e}")
        except _Refused as e:
            status, answer = _error(e.status, e.kind, e.message, code=e.code, param=e.param)
        idem = {"key": key, "fingerprint": fingerprint, "path": path, "status": status,
                "body": answer}
        record = {"objects": list(self._changed.values()), "idem": idem, "effect": self._effect}
        self.apply(record)
        return status, answer, record

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        for pattern, table in ((_PI_GET, self.intents), (_RE_GET, self.refunds)):
            match = pattern.match(path)
            if match and match.group(1) in table:
                return 200, table[match.group(1)]
        return _error(404, "invalid_request_error", f"no such resource: GET {path}",
                      code="resource_missing")

    # --- rules -----------------------------------------------------------------------------
    def _route(self, path: str, body: dict[str, Any],
               decline: str | None) -> tuple[int, dict[str, Any]]:
        if path == "/v1/payment_intents":
            return self._create(body, decline)
        if path == "/v1/refunds":
            return self._refund(body)
        match = _PI_ACTION.match(path)
        if match:
            intent = self.intents.get(match.group(1))
            if intent is None:
                raise _Refused(404, "invalid_request_error", f"no payment intent "
                               f"{match.group(1)!r}", code="resource_missing")
            intent = dict(intent)
            if match.group(2) == "capture":
                return self._capture(intent, body)
            return self._cancel(intent, body)
        raise _Refused(404, "invalid_request_error", f"no such resource: POST {path}",
                       code="resource_missing")

    def _currency(self, body: dict[str, Any], field: str = "currency") -> str:
        value = body.get(field)
        if not isinstance(value, str) or value.upper() not in ISO_4217_EXPONENTS:
            raise _invalid(f"'{field}' must be an ISO 4217 currency code such as 'EUR', got "
                           f"{value!r}", field, "currency_invalid")
        return value.upper()

    def _amount(self, body: dict[str, Any], field: str, currency: str) -> int:
        value = body.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _invalid(f"'{field}' must be a positive integer of minor units, got "
                           f"{value!r}", field)
        limit = self.max_amount * 10 ** ISO_4217_EXPONENTS[currency]
        if value > limit:
            raise _invalid(f"'{field}' {value} is above the maximum of {limit} minor units "
                           f"({self.max_amount} {currency})", field, "amount_too_large")
        return value

    def _same_currency(self, body: dict[str, Any], obj: dict[str, Any]) -> None:
        if "currency" in body and self._currency(body) != obj["currency"]:
            raise _invalid(f"{obj['id']} is in {obj['currency']}, not {body['currency']}; "
                           f"captures and refunds keep the intent's currency", "currency",
                           "currency_mismatch")

    def _keep(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._changed[obj["id"]] = obj
        return dict(obj)

    def _create(self, body: dict[str, Any], forced: str | None) -> tuple[int, dict[str, Any]]:
        currency = self._currency(body)
        amount = self._amount(body, "amount", currency)
        method = body.get("payment_method")
        if not isinstance(method, str) or not method:
            raise _invalid("'payment_method' is required", "payment_method",
                           "parameter_missing")
        capture_method = body.get("capture_method", "manual")
        if capture_method not in ("manual", "automatic"):
            raise _invalid(f"'capture_method' must be 'manual' or 'automatic', got "
                           f"{capture_method!r}", "capture_method")
        decline = {"decline": "card_declined"}.get(forced or "", forced) \
            or TEST_TOKENS.get(method, "invalid_token")
        intent = {"id": "pi_" + secrets.token_urlsafe(18), "object": "payment_intent",
                  "amount": amount, "currency": currency, "capture_method": capture_method,
                  "payment_method": method, "created": int(self._now()),
                  "amount_capturable": 0, "amount_received": 0, "amount_refunded": 0,
                  "last_payment_error": None, "cancellation_reason": None}
        if decline:
            intent.update(status="requires_payment_method", last_payment_error={
                "code": "card_declined", "decline_code": decline,
                "message": DECLINE_MESSAGES[decline]})
            self._effect = "decline"
            return _error(402, "card_error", DECLINE_MESSAGES[decline], code="card_declined",
                          decline_code=decline, payment_intent=self._keep(intent))
        if capture_method == "manual":
            intent.update(status="requires_capture", amount_capturable=amount)
            self._effect = "authorize"
        else:
            intent.update(status="succeeded", amount_received=amount)
            self._effect = "charge"
        return 200, self._keep(intent)

    def _capture(self, intent: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if intent["status"] != "requires_capture":
            raise _Refused(400, "invalid_request_error", f"payment intent {intent['id']} is "
                           f"{intent['status']}; only one that requires_capture can be "
                           f"captured", code="payment_intent_unexpected_state")
        self._same_currency(body, intent)
        amount = intent["amount_capturable"]
        if "amount_to_capture" in body:
            amount = self._amount(body, "amount_to_capture", intent["currency"])
        if amount > intent["amount_capturable"]:
            raise _invalid(f"capture of {amount} exceeds the {intent['amount_capturable']} "
                           f"capturable on {intent['id']}", "amount_to_capture",
                           "amount_too_large")
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._effect = "capture"
        return 200, self._keep(intent)

    def _cancel(self, intent: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if intent["status"] not in ("requires_capture", "requires_payment_method"):
            raise _Refused(400, "invalid_request_error", f"payment intent {intent['id']} is "
                           f"{intent['status']}; only one that requires_capture can be "
                           f"canceled", code="payment_intent_unexpected_state")
        reason = body.get("cancellation_reason")
        intent.update(status="canceled", amount_capturable=0,
                      cancellation_reason=reason if isinstance(reason, str) else None,
                      canceled_at=int(self._now()))
        self._effect = "void"
        return 200, self._keep(intent)

    def _refund(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = self.intents.get(body.get("payment_intent"))  # type: ignore[arg-type]
        if intent is None:
            raise _Refused(404, "invalid_request_error", f"no payment intent "
                           f"{body.get('payment_intent')!r}", code="resource_missing")
        intent = dict(intent)
        if intent["status"] != "succeeded":
            raise _Refused(400, "invalid_request_error", f"payment intent {intent['id']} is "
                           f"{intent['status']}; only a succeeded one can be refunded",
                           code="payment_intent_unexpected_state")
        self._same_currency(body, intent)
        left = intent["amount_received"] - intent["amount_refunded"]
        amount = self._amount(body, "amount", intent["currency"]) if "amount" in body else left
        if amount > left or amount <= 0:
            raise _invalid(f"refund of {amount} exceeds the {left} left on {intent['id']}",
                           "amount", "amount_too_large")
        refund = {"id": "re_" + secrets.token_urlsafe(18), "object": "refund",
                  "payment_intent": intent["id"], "amount": amount,
                  "currency": intent["currency"], "status": "succeeded",
                  "created": int(self._now())}
        intent["amount_refunded"] += amount
        self._keep(intent)
        self._effect = "refund"
        return 200, self._keep(refund)


class _Journal:
    """Append-only JSON lines under the gateway's folder, fsynced before each answer."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise ValueError(f"sandbox gateway: the data folder {folder} does not exist; "
                             f"create it first")
        self.path = folder / JOURNAL
        self._file: Any = None

    def load(self, book: _Book) -> int:
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        good = 0
        for n, line in enumerate(lines, 1):
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                record = json.loads(line)
                book.apply(record)
            except (ValueError, KeyError, TypeError) as e:
                if n == len(lines):  # a torn last write: the request never got its answer
                    with open(self.path, "r+b") as f:
                        f.truncate(good)
                    break
                raise ValueError(f"sandbox gateway: {self.path} line {n} is unreadable ({e}); "
                                 f"move the folder away to start empty") from e
            good += len(line) + 1
        return len(lines)

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "ab")
        self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclasses.dataclass(frozen=True)
class RequestSeen:
    method: str
    path: str
    idempotency_key: str | None
    fault: str | None
    status: int | None = None


def load_api_key(path: str | Path, *, create: bool = False) -> str:
    """The API key in `path` (one line); with `create`, a new random key is written first if
    the file does not exist (mode 0600)."""
    path = Path(path)
    if create and not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("sk_test_" + secrets.token_urlsafe(24) + "\n")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(f"API key file {path}: cannot be read ({e.strerror}); write the "
                         f"gateway's key there on one line") from e
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"API key file {path}: expected one key on one line without spaces")
    return key


class SandboxGateway:
    """A loopback-only sandbox acquirer; `start()` returns its base URL, `api_key` its key."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 data_dir: str | Path | None = None, api_key: str | None = None,
                 max_amount: int = DEFAULT_MAX_AMOUNT, max_body: int = DEFAULT_MAX_BODY,
                 read_timeout_s: float = DEFAULT_READ_TIMEOUT_S, slow_s: float = 3.0,
                 flaky: float = 0.0, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not _is_loopback(host):
            raise ValueError(f"sandbox gateway: host {host!r} is not a loopback address; the "
                             f"sandbox only listens on 127.0.0.1, ::1 or localhost")
        for name, value in (("max_amount", max_amount), ("max_body", max_body)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"sandbox gateway: {name} must be a positive integer, got "
                                 f"{value!r}")
        if not 0.0 <= flaky <= 1.0:
            raise ValueError(f"sandbox gateway: flaky {flaky!r} must be a rate in [0, 1]")
        self._host, self._port = host, port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._journal = _Journal(self._data_dir) if self._data_dir is not None else None
        if api_key is None:
            api_key = (load_api_key(self._data_dir / KEY_FILE, create=True)
                       if self._data_dir is not None
                       else "sk_test_" + secrets.token_urlsafe(24))
        if not isinstance(api_key, str) or not api_key or any(c.isspace() for c in api_key):
            raise ValueError("sandbox gateway: the API key must be a non-empty string without "
                             "spaces")
        self.api_key = api_key
        self._max_amount = max_amount
        self.max_body = max_body
        self.read_timeout_s = read_timeout_s
        self._slow_s = slow_s
        self._flaky = flaky
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._book = self._load()
        self._faults: collections.deque[tuple[str, float]] = collections.deque()
        self._declines: collections.deque[str] = collections.deque()
        self._seen: list[RequestSeen] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"SandboxGateway({self.base_url or 'not started'}, data_dir={self._data_dir})"

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        if self._server is not None:
            return self.base_url  # type: ignore[return-value]
        server_class = _Server6 if ":" in self._host else _Server
        self._server = server_class((self._host, self._port), _make_handler(self))
        host, port = self._server.server_address[:2]
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="sandbox-gateway", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None
        if self._journal is not None:
            with self._lock:
                self._journal.close()

    def __enter__(self) -> SandboxGateway:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- test controls ---------------------------------------------------------------------
    def fail_next(self, n: int, kind: str = "500", *, delay_s: float | None = None) -> None:
        """Inject `kind` into the next `n` POSTs (declines: the next n creations)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"sandbox gateway: fault {kind!r} is not one of {FAULT_KINDS}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"sandbox gateway: cannot inject {n!r} faults")
        with self._lock:
            if kind in DECLINE_FAULTS:
                self._declines.extend([kind] * n)
            else:
                self._faults.extend([(kind, self._slow_s if delay_s is None else delay_s)] * n)

    def reset(self) -> None:
        """Forget every intent, key, pending fault and request seen: a fresh sandbox on the
        same port, so tests can share one server instead of starting one each."""
        if self._data_dir is not None:
            raise ValueError(f"sandbox gateway: reset() would discard the state kept in "
                             f"{self._data_dir}; move that folder away instead")
        with self._lock:
            self._book = _Book(max_amount=self._max_amount)
            self._faults.clear()
            self._declines.clear()
            self._seen.clear()

    def effects(self) -> dict[str, int]:
        """How many times each effect really happened: authorize, decline, capture, ..."""
        with self._lock:
            return {k: self._book.effects.get(k, 0)
                    for k in ("authorize", "decline", "capture", "charge", "void", "refund")}

    def requests_seen(self) -> list[RequestSeen]:
        with self._lock:
            return list(self._seen)

    def intent(self, intent_id: str) -> dict[str, Any] | None:
        with self._lock:
            intent = self._book.intents.get(intent_id)
            return dict(intent) if intent else None

    def intents(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i) for i in self._book.intents.values()]

    # --- request handling (called from server threads) -------------------------------------
    def _authorized(self, header: str | None) -> tuple[int, dict[str, Any]] | None:
        """None if the Authorization header carries our key, else the 401/403 answer."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "authentication_error", "no API key: send 'Authorization: "
                          "Bearer <key>' (the key is in the gateway's api_key file)")
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return _error(403, "authentication_error", "the API key is not valid for this "
                          "gateway")
        return None

    def _handle(self, method: str, path: str, key: str | None, raw: bytes,
                auth: str | None) -> tuple[int | None, dict[str, Any], float]:
        """(status or None for a dropped connection, body, seconds to wait before answering)"""
        refused = self._authorized(auth)
        fault, delay = None, 0.0
        with self._lock:
            if refused is None and method == "POST":
                if self._faults:
                    fault, delay = self._faults.popleft()
                elif self._flaky and self._rng.random() < self._flaky:
                    fault, delay = self._rng.choice(FLAKY_KINDS), self._slow_s
        if fault == "timeout":
            self._sleep(delay)
        with self._lock:
            if refused is not None:
                status, body = refused
            elif fault == "500":
                status, body = _error(500, "api_error", "injected fault")
            elif fault == "timeout":
                status, body = None, {}
            elif method == "GET":
                status, body = self._book.get(path)
            else:
                decline = (self._declines.popleft()
                           if self._declines and path == "/v1/payment_intents" else None)
                for _ in range(2 if fault == "duplicate" else 1):
                    status, body, record = self._book.post(path, key, raw, decline)
                    if record is not None and self._journal is not None:
                        self._journal.append(record)
            self._seen.append(RequestSeen(method, path, key, fault, status))
        if fault in ("drop", "timeout"):
            return None, {}, 0.0
        return status, body, (delay if fault == "slow" else 0.0)

    def _load(self) -> _Book:
        book = _Book(max_amount=self._max_amount)
        if self._journal is not None:
            self._journal.load(book)
        return book


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer (after a timeout) is not news


class _Server6(_Server):
    address_family = socket.AF_INET6


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _make_handler(gateway: SandboxGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SandboxGateway/2"
        protocol_version = "HTTP/1.1"
        timeout = gateway.read_timeout_s  # socket timeout: a client that stalls is cut off

        def do_GET(self) -> None:
            self._serve("GET", b"")

        def do_POST(self) -> None:
            length_text = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or length_text is None:
                return self._answer(*_error(411, "invalid_request_error", "send the body "
                                    "with a Content-Length header"), close=True)
            try:
                length = int(length_text)
                if length < 0:
                    raise ValueError(length_text)
            except ValueError:
                return self._answer(*_error(400, "invalid_request_error", f"Content-Length "
                                    f"{length_text!r} is not a byte count"), close=True)
            if length > gateway.max_body:
                return self._answer(*_error(413, "invalid_request_error", f"the body of "
                                    f"{length} bytes is over the {gateway.max_body} allowed"),
                                    close=True)
            try:
                raw = self.rfile.read(length)
            except (TimeoutError, OSError):
                return self._answer(*_error(408, "invalid_request_error", f"the body did not "
                                    f"arrive within {gateway.read_timeout_s} s"), close=True)
            if len(raw) < length:
                self.close_connection = True
                return None
            self._serve("POST", raw)

        def _serve(self, method: str, raw: bytes) -> None:
            status, body, delay = gateway._handle(method, self.path,
                                                  self.headers.get("Idempotency-Key"), raw,
                                                  self.headers.get("Authorization"))
            if status is None:  # "drop"/"timeout": no answer ever leaves
                self.close_connection = True
                return
            if delay:
                gateway._sleep(delay)
            self._answer(status, body)

        def _answer(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
            payload = json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="sandbox"')
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet, and never a header: tests read state through requests_seen()

    return Handler


def _fault_arg(text: str) -> tuple[str, int]:
    kind, _, count = text.partition("x")
    if kind not in FAULT_KINDS or (count and not count.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND or KINDxN, KIND one of "
                                         f"{', '.join(FAULT_KINDS)}")
    return kind, int(count or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing.gateway_server",
                                     description="Run the sandbox payment gateway on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data", default=None, help="folder that keeps the state (journal) "
                        "and, unless --api-key-file is given, the API key across runs")
    parser.add_argument("--api-key-file", default=None, help="file holding the API key "
                        "(created with a random key if missing)")
    parser.add_argument("--max-amount", type=int, default=DEFAULT_MAX_AMOUNT,
                        help="largest amount accepted, in major units of the currency")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="bytes")
    parser.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S)
    parser.add_argument("--fault", action="append", type=_fault_arg, default=[],
                        metavar="KIND[xN]", help="inject a fault into the next N posts")
    parser.add_argument("--slow-s", type=float, default=3.0, help="delay of slow/timeout")
    parser.add_argument("--flaky", type=float, default=0.0, help="rate of random faults")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        api_key = load_api_key(args.api_key_file, create=True) if args.api_key_file else None
        if args.data is not None:
            Path(args.data).mkdir(parents=True, exist_ok=True)
        gateway = SandboxGateway(args.host, args.port, data_dir=args.data, api_key=api_key,
                                 max_amount=args.max_amount, max_body=args.max_body,
                                 read_timeout_s=args.read_timeout, slow_s=args.slow_s,
                                 flaky=args.flaky, seed=args.seed)
        for kind, n in args.fault:
            gateway.fail_next(n, kind)
        url = gateway.start()
    except (ValueError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    print(url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
