"""The sandbox payment gateway: a real HTTP server on loopback that behaves like a card acquirer.

Two layers. `_Book` is the gateway's memory and rules, no I/O: authorisations, captures,
refunds, and the idempotency store (key -> fingerprint of the request and the response it got).
`SandboxGateway` puts it behind a stdlib ThreadingHTTPServer speaking JSON and adds fault
injection for tests.

Idempotency (the Stripe rule): every POST carries an `Idempotency-Key` header. A key seen with
the same method, path and body gets the stored response again and has no second effect; the
same key with anything different gets 409. Injected 500s are not stored (the request never
happened), so a retry with the same key does the real work.

Faults (`fail_next(n, kind)`, applied to the next n POSTs):
  "500"   answer 500 and do nothing;
  "drop"  do the work (the effect happens and is stored under the key), then close the
          connection without an answer: the client cannot know whether it worked;
  "slow"  do the work, then wait `delay_s` before answering (longer than a client's timeout);
          the wait goes through the gateway's `sleep`, which a test may replace.
`effects()` counts what really happened (authorize, decline, capture, void, refund), so a test
can assert that a capture happened exactly once however many requests were made.

Test payment tokens: tok_visa_ok (authorized), tok_declined, tok_insufficient_funds,
tok_expired; any other token is declined as invalid_token.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

TEST_TOKENS: dict[str, str | None] = {  # token -> decline code (None: authorized)
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
FAULT_KINDS = ("500", "drop", "slow")
_AUTH_ACTION = re.compile(r"^/v1/authorizations/([A-Za-z0-9_]+)/(capture|void)$")
_AUTH_GET = re.compile(r"^/v1/authorizations/([A-Za-z0-9_]+)$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class _BadRequest(Exception):
    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _error(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": kind, "message": message}}


def _positive_int(body: dict[str, Any], field: str) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _BadRequest(400, "invalid_request",
                          f"'{field}' must be a positive integer of minor units, got {value!r}")
    return value


class _Book:
    """The gateway's state and rules; every public method runs under the caller's lock."""

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.authorizations: dict[str, dict[str, Any]] = state.get("authorizations", {})
        self.captures: dict[str, dict[str, Any]] = state.get("captures", {})
        self.refunds: dict[str, dict[str, Any]] = state.get("refunds", {})
        self.idempotency: dict[str, dict[str, Any]] = state.get("idempotency", {})
        self.effects: collections.Counter[str] = collections.Counter(state.get("effects", {}))
        self.next_id: int = state.get("next_id", 1)

    def snapshot(self) -> dict[str, Any]:
        return {"authorizations": self.authorizations, "captures": self.captures,
                "refunds": self.refunds, "idempotency": self.idempotency,
                "effects": dict(self.effects), "next_id": self.next_id}

    def _new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}_{self.next_id - 1:06d}"

    def post(self, path: str, key: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
        if not key:
            return _error(400, "invalid_request", "the Idempotency-Key header is required on "
                                                  "every POST")
        if len(key) > 255:
            return _error(400, "invalid_request", "the Idempotency-Key is longer than 255")
        fingerprint = hashlib.sha256(b"POST " + path.encode() + b"\n" + raw).hexdigest()
        stored = self.idempotency.get(key)
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                return _error(409, "idempotency_conflict",
                              f"Idempotency-Key {key!r} was already used with a different "
                              f"request ({stored['path']}); use a new key for a new request")
            return stored["status"], stored["body"]
        try:
            body = json.loads(raw.decode("utf-8") or "null")
            if not isinstance(body, dict):
                raise _BadRequest(400, "invalid_request", "the body must be a JSON object")
            status, answer = self._route(path, body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            status, answer = _error(400, "invalid_request", f"the body is not JSON: {e}")
        except _BadRequest as e:
            status, answer = _error(e.status, e.kind, e.message)
        self.idempotency[key] = {"fingerprint": fingerprint, "path": path,
                                 "status": status, "body": answer}
        return status, answer

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        match = _AUTH_GET.match(path)
        if match and match.group(1) in self.authorizations:
            return 200, self.authorizations[match.group(1)]
        return _error(404, "not_found", f"no such resource: GET {path}")

    def _route(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/authorizations":
            return self._authorize(body)
        if path == "/v1/refunds":
            return self._refund(body)
        match = _AUTH_ACTION.match(path)
        if match:
            auth = self.authorizations.get(match.group(1))
            if auth is None:
                raise _BadRequest(404, "not_found", f"no authorization {match.group(1)!r}")
            return self._capture(auth, body) if match.group(2) == "capture" else self._void(auth)
        raise _BadRequest(404, "not_found", f"no such resource: POST {path}")

    def _authorize(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        amount = _positive_int(body, "amount")
        currency, token = body.get("currency"), body.get("payment_token")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise _BadRequest(400, "invalid_request", f"'currency' must be an ISO 4217 code "
                                                      f"such as 'EUR', got {currency!r}")
        if not isinstance(token, str) or not token:
            raise _BadRequest(400, "invalid_request", "'payment_token' is required")
        decline = TEST_TOKENS.get(token, "invalid_token")
        auth = {"id": self._new_id("auth"), "amount": amount, "currency": currency,
                "status": "declined" if decline else "authorized", "captured_amount": 0,
                "capture_id": None}
        if decline:
            auth.update(decline_code=decline, message=DECLINE_MESSAGES[decline])
        self.authorizations[auth["id"]] = auth
        self.effects["decline" if decline else "authorize"] += 1
        return (402 if decline else 200), dict(auth)

    def _capture(self, auth: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        amount = _positive_int(body, "amount")
        if auth["status"] != "authorized":
            raise _BadRequest(400, "invalid_state", f"authorization {auth['id']} is "
                                                    f"{auth['status']}; only an authorized "
                                                    f"one can be captured")
        if amount > auth["amount"]:
            raise _BadRequest(400, "amount_too_large", f"capture of {amount} exceeds the "
                                                       f"{auth['amount']} authorized")
        capture = {"id": self._new_id("cap"), "authorization_id": auth["id"], "amount": amount,
                   "currency": auth["currency"], "refunded_amount": 0, "status": "captured"}
        self.captures[capture["id"]] = capture
        auth.update(status="captured", captured_amount=amount, capture_id=capture["id"])
        self.effects["capture"] += 1
        return 200, dict(capture)

    def _void(self, auth: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if auth["status"] != "authorized":
            raise _BadRequest(400, "invalid_state", f"authorization {auth['id']} is "
                                                    f"{auth['status']}; only an authorized "
                                                    f"one can be voided")
        auth["status"] = "voided"
        self.effects["void"] += 1
        return 200, dict(auth)

    def _refund(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        amount = _positive_int(body, "amount")
        capture = self.captures.get(body.get("capture_id"))  # type: ignore[arg-type]
        if capture is None:
            raise _BadRequest(404, "not_found", f"no capture {body.get('capture_id')!r}")
        left = capture["amount"] - capture["refunded_amount"]
        if amount > left:
            raise _BadRequest(400, "amount_too_large", f"refund of {amount} exceeds the "
                                                       f"{left} left on {capture['id']}")
        refund = {"id": self._new_id("re"), "capture_id": capture["id"], "amount": amount,
                  "currency": capture["currency"], "status": "refunded"}
        self.refunds[refund["id"]] = refund
        capture["refunded_amount"] += amount
        self.effects["refund"] += 1
        return 200, dict(refund)


@dataclasses.dataclass(frozen=True)
class RequestSeen:
    method: str
    path: str
    idempotency_key: str | None
    fault: str | None


class SandboxGateway:
    """A loopback-only sandbox acquirer; `start()` returns its base URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 state_path: str | Path | None = None, slow_s: float = 3.0,
                 sleep: Callable[[float], None] = time.sleep):
        if not _is_loopback(host):
            raise ValueError(f"sandbox gateway: host {host!r} is not a loopback address; the "
                             f"sandbox only listens on 127.0.0.1, ::1 or localhost")
        self._host, self._port = host, port
        self._state_path = Path(state_path) if state_path is not None else None
        self._slow_s = slow_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._book = _Book(self._load_state())
        self._faults: collections.deque[tuple[str, float]] = collections.deque()
        self._seen: list[RequestSeen] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

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
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> SandboxGateway:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- test controls ---------------------------------------------------------------------
    def fail_next(self, n: int, kind: str = "500", *, delay_s: float | None = None) -> None:
        """Inject `kind` into the next `n` POSTs (see the module notes)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"sandbox gateway: fault {kind!r} is not one of {FAULT_KINDS}")
        if n < 0:
            raise ValueError(f"sandbox gateway: cannot inject {n} faults")
        with self._lock:
            self._faults.extend([(kind, self._slow_s if delay_s is None else delay_s)] * n)

    def reset(self) -> None:
        """Forget every authorisation, key, pending fault and request seen: a fresh sandbox on
        the same port, so tests can share one server instead of starting one each."""
        if self._state_path is not None:
            raise ValueError(f"sandbox gateway: reset() would discard the state kept in "
                             f"{self._state_path}; move that file away instead")
        with self._lock:
            self._book = _Book(None)
            self._faults.clear()
            self._seen.clear()

    def effects(self) -> dict[str, int]:
        """How many times each effect really happened: authorize, decline, capture, ..."""
        with self._lock:
            return {k: self._book.effects.get(k, 0)
                    for k in ("authorize", "decline", "capture", "void", "refund")}

    def requests_seen(self) -> list[RequestSeen]:
        with self._lock:
            return list(self._seen)

    def authorization(self, auth_id: str) -> dict[str, Any] | None:
        with self._lock:
            auth = self._book.authorizations.get(auth_id)
            return dict(auth) if auth else None

    # --- request handling (called from server threads) -------------------------------------
    def _handle(self, method: str, path: str, key: str | None,
                raw: bytes) -> tuple[int | None, dict[str, Any], float]:
        """(status or None for a dropped connection, body, seconds to wait before answering)"""
        with self._lock:
            fault, delay = (self._faults.popleft() if method == "POST" and self._faults
                            else (None, 0.0))
            self._seen.append(RequestSeen(method, path, key, fault))
            if fault == "500":
                return 500, {"error": {"type": "api_error", "message": "injected fault"}}, 0.0
            if method == "GET":
                status, body = self._book.get(path)
            else:
                status, body = self._book.post(path, key, raw)
                self._save_state()
        if fault == "drop":
            return None, {}, 0.0
        return status, body, (delay if fault == "slow" else 0.0)

    def _load_state(self) -> dict[str, Any] | None:
        if self._state_path is None or not self._state_path.exists():
            return None
        try:
            return json.loads(self._state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"sandbox gateway: state file {self._state_path} is unreadable "
                             f"({e}); move it away to start empty") from e

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        tmp = self._state_path.with_suffix(self._state_path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._book.snapshot()), encoding="utf-8")
        os.replace(tmp, self._state_path)


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
        server_version = "SandboxGateway/1"

        def do_GET(self) -> None:
            self._serve("GET", b"")

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            self._serve("POST", self.rfile.read(length) if length > 0 else b"")

        def _serve(self, method: str, raw: bytes) -> None:
            status, body, delay = gateway._handle(method, self.path,
                                                  self.headers.get("Idempotency-Key"), raw)
            if status is None:  # "drop": the effect happened, the answer never leaves
                self.close_connection = True
                return
            if delay:
                gateway._sleep(delay)
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the demo read state through effects()/requests_seen()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing.gateway_server",
                                     description="Run the sandbox payment gateway on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state", default=None, help="JSON file that keeps state across runs")
    args = parser.parse_args(argv)
    try:
        gateway = SandboxGateway(args.host, args.port, state_path=args.state)
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
