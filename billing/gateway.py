"""The payment gateway client: requests, the API key, one idempotency key per logical request,
retries.

Each write (`authorize` a hold, `capture` it, `void` it, `charge` at once, `refund`) is one
logical request with a key chosen by the caller (billing derives it from the session id and the
step, and stores it before calling). The same key goes out on every retry, so a retry after a
lost answer replays the stored response instead of charging twice. The gateway speaks Stripe's
PaymentIntents with manual capture (billing/gateway_server.py has the sandbox).

The API key comes from configuration (`api_key`) or a key file (`api_key_file`, read once here)
and goes out as `Authorization: Bearer <key>` on every request; it is never logged or shown in
a repr or an error.

Whether to retry is `should_retry(status, exc_kind, attempt, max_retries)` and how long to wait
is `backoff(attempt, jitter)`: pure functions, the randomness passed in as a number, so tests
are exact (stripe-python's habit). The client takes its waiting (`sleep`), its jitter source
(`jitter`, a callable returning [0, 1)) and its HTTP session (`session`, a requests.Session)
from the caller, so a test drives retries, back-off and timeouts without waiting. Transport
errors are translated here, at the boundary, into `GatewayError`s that say whether trying again
later makes sense (`.retryable`):

  PaymentDeclined        the card said no (402): show `reason` to the customer; not retryable
  IdempotencyConflict    the key was used for a different request (409): a bug; not retryable
  AuthenticationFailed   no key or a wrong key (401/403): fix the configuration; not retryable
  InvalidGatewayRequest  the gateway refused the request (400/404/413): not retryable
  GatewayUnavailable     no usable answer after every retry (timeouts, drops, 5xx): retryable
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Callable

import requests

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRYABLE_EXC_KINDS = frozenset({"timeout", "connection"})
INITIAL_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0

log = logging.getLogger(__name__)  # keys, paths and statuses only: never a payment token


class GatewayError(Exception):
    """Base of every gateway failure. `retryable`: would the same request later make sense?"""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None,
                 body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


class PaymentDeclined(GatewayError):
    def __init__(self, reason: str, *, code: str = "card_declined", status: int | None = 402,
                 body: dict[str, Any] | None = None):
        super().__init__(f"payment declined: {reason} ({code})", status=status, body=body)
        self.reason = reason
        self.code = code


class GatewayUnavailable(GatewayError):
    retryable = True


class IdempotencyConflict(GatewayError):
    pass


class InvalidGatewayRequest(GatewayError):
    pass


class AuthenticationFailed(GatewayError):
    """The gateway did not accept our API key (401: none sent, 403: a wrong one)."""


def should_retry(status_code: int | None, exc_kind: str | None, attempt: int,
                 max_retries: int) -> bool:
    """Retry after attempt number `attempt` (0-based)? At most `max_retries` retries.

    A transport failure (`exc_kind` "timeout" or "connection") and 429/5xx are worth another
    try: the idempotency key makes the retry safe even if the first one did take effect.
    Anything else the gateway answered (2xx, 402 decline, 409 conflict, 4xx) is final.
    """
    if attempt >= max_retries:
        return False
    if exc_kind is not None:
        return exc_kind in RETRYABLE_EXC_KINDS
    return status_code in RETRYABLE_STATUSES


def backoff(attempt: int, jitter: float) -> float:
    """Seconds to wait after attempt `attempt` (0-based): exponential, capped, jittered.

    0.25 s, 0.5 s, 1 s, 2 s, 2 s ... each times (0.5 + 0.5 * jitter), so `jitter` in [0, 1]
    (the client draws it from its `jitter` source) spreads the wait over half to all of it.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"gateway backoff: attempt {attempt!r} must be an integer >= 0")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"gateway backoff: jitter {jitter!r} must be in [0, 1] (a draw of "
                         f"random.random())")
    base = min(INITIAL_BACKOFF_S * 2 ** min(attempt, 16), MAX_BACKOFF_S)
    return base * (0.5 + 0.5 * jitter)


class GatewayClient:
    def __init__(self, base_url: str, *, api_key: str | None = None,
                 api_key_file: str | Path | None = None, timeout_s: float = 2.0,
                 max_retries: int = 3, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random,
                 session: requests.Session | None = None):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"gateway client: base URL {base_url!r} must start with http:// "
                             f"or https://")
        if timeout_s <= 0 or max_retries < 0:
            raise ValueError(f"gateway client: timeout_s must be > 0 and max_retries >= 0 "
                             f"(got {timeout_s}, {max_retries})")
        self.base_url = base_url.rstrip("/")
        self._api_key = _api_key_of(api_key, api_key_file)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._sleep = sleep
        self._jitter = jitter
        self._http = session if session is not None else requests.Session()

    def __repr__(self) -> str:  # never shows the key
        return f"GatewayClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    # --- the operations ---------------------------------------------------------------------
    def authorize(self, amount: int, currency: str, payment_method: str,
                  idempotency_key: str) -> dict[str, Any]:
        """Place a hold (a PaymentIntent with manual capture); returns the intent, status
        "requires_capture", or raises."""
        return self._post("/v1/payment_intents", {"amount": amount, "currency": currency,
                                                  "payment_method": payment_method,
                                                  "capture_method": "manual"}, idempotency_key)

    def charge(self, amount: int, currency: str, payment_method: str,
               idempotency_key: str) -> dict[str, Any]:
        """Take `amount` at once (automatic capture); returns the intent, status "succeeded"."""
        return self._post("/v1/payment_intents", {"amount": amount, "currency": currency,
                                                  "payment_method": payment_method,
                                                  "capture_method": "automatic"},
                          idempotency_key)

    def capture(self, intent_id: str, amount: int, idempotency_key: str, *,
                currency: str | None = None) -> dict[str, Any]:
        """Take `amount` (at most the hold) of a hold; returns the intent, status "succeeded"."""
        body: dict[str, Any] = {"amount_to_capture": amount}
        if currency is not None:
            body["currency"] = currency
        return self._post(f"/v1/payment_intents/{intent_id}/capture", body, idempotency_key)

    def void(self, intent_id: str, idempotency_key: str) -> dict[str, Any]:
        """Release a hold; returns the intent, status "canceled"."""
        return self._post(f"/v1/payment_intents/{intent_id}/cancel",
                          {"cancellation_reason": "abandoned"}, idempotency_key)

    def refund(self, intent_id: str, amount: int, idempotency_key: str) -> dict[str, Any]:
        """Give back `amount` of a succeeded intent; returns the refund, status "succeeded"."""
        return self._post("/v1/refunds", {"payment_intent": intent_id, "amount": amount},
                          idempotency_key)

    def retrieve(self, intent_id: str) -> dict[str, Any]:
        """The intent as the gateway has it now (a GET: retried like any safe request)."""
        return self._send("GET", f"/v1/payment_intents/{intent_id}", None, None)

    # --- the retry loop --------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        if not idempotency_key:
            raise ValueError(f"gateway client: POST {path} needs an idempotency key")
        return self._send("POST", path, body, idempotency_key)

    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              idempotency_key: str | None) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            status: int | None = None
            exc_kind: str | None = None
            answer: dict[str, Any] = {}
            try:
                response = self._http.request(method, url, json=body, headers=headers,
                                              timeout=self.timeout_s)
                status = response.status_code
                answer = _json_of(response)
            except requests.Timeout:
                exc_kind = "timeout"
            except requests.ConnectionError:
                exc_kind = "connection"
            except requests.RequestException:
                exc_kind = "transport"
            if should_retry(status, exc_kind, attempt, self.max_retries):
                wait = backoff(attempt, self._jitter())
                log.warning("gateway %s %s (key %s): attempt %d got %s; retrying in %.2f s",
                            method, path, idempotency_key, attempt + 1, exc_kind or status,
                            wait)
                self._sleep(wait)
                attempt += 1
                continue
            return self._translate(f"{method} {path}", idempotency_key, status, exc_kind,
                                   answer, attempt)

    def _translate(self, what: str, key: str | None, status: int | None, exc_kind: str | None,
                   answer: dict[str, Any], attempt: int) -> dict[str, Any]:
        where = f"gateway {self.base_url} {what}" + (f" (key {key})" if key else "")
        if status is not None and 200 <= status < 300:
            return answer
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        message = str(error.get("message") or answer.get("message") or "")
        if exc_kind is not None or status is None or status in RETRYABLE_STATUSES:
            what = exc_kind or f"HTTP {status}"
            raise GatewayUnavailable(f"{where}: no usable answer after {attempt + 1} attempt(s) "
                                     f"(last: {what}); try again later with the same key",
                                     status=status, body=answer)
        if status == 402:
            raise PaymentDeclined(message or "the card was declined",
                                  code=str(error.get("decline_code") or error.get("code")
                                           or "card_declined"),
                                  status=status, body=answer)
        if status in (401, 403):
            raise AuthenticationFailed(f"{where}: HTTP {status}: {message}; check the "
                                       f"gateway API key in the configuration or key file",
                                       status=status, body=answer)
        if status == 409:
            raise IdempotencyConflict(f"{where}: {message or 'key reused for another request'}",
                                      status=status, body=answer)
        raise InvalidGatewayRequest(f"{where}: refused with HTTP {status}: {message}",
                                    status=status, body=answer)


def _api_key_of(api_key: str | None, api_key_file: str | Path | None) -> str:
    if (api_key is None) == (api_key_file is None):
        raise ValueError("gateway client: give the gateway's API key either as api_key or as "
                         "api_key_file (exactly one)")
    if api_key_file is not None:
        try:
            api_key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ValueError(f"gateway client: API key file {api_key_file} cannot be read "
                             f"({e.strerror})") from e
        where = f"API key file {api_key_file}"
    else:
        where = "api_key"
    if not isinstance(api_key, str) or not api_key or any(c.isspace() for c in api_key):
        raise ValueError(f"gateway client: {where}: expected one key without spaces")
    return api_key


def _json_of(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"message": f"non-JSON answer: {response.text[:200]!r}"}
    return data if isinstance(data, dict) else {"message": f"unexpected answer: {data!r}"}
