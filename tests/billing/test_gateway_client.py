"""The gateway client: pure retry rules, and one idempotency key across real retries.

Nothing here waits: the client's `sleep` records the waits, its `jitter` source is a fixed
sequence, and a late answer is a requests.Session that gets the real answer from the sandbox
and then raises the ReadTimeout a slow network would have caused.
"""
from __future__ import annotations

import socket

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.gateway import (AuthenticationFailed, GatewayClient, GatewayUnavailable,
                             IdempotencyConflict, InvalidGatewayRequest, PaymentDeclined,
                             backoff, should_retry)

# Written out, not imported: a change to the module's sets must show up here.
RETRIED_STATUSES = {429, 500, 502, 503, 504}
RETRIED_EXC_KINDS = {"timeout", "connection"}


@pytest.mark.parametrize("status, exc_kind, expected", [
    (None, "timeout", True), (None, "connection", True), (None, "transport", False),
    (500, None, True), (502, None, True), (503, None, True), (504, None, True),
    (429, None, True), (200, None, False), (400, None, False), (402, None, False),
    (404, None, False), (409, None, False), (501, None, False), (None, None, False),
])
def test_should_retry_table(status, exc_kind, expected):
    assert should_retry(status, exc_kind, 0, 3) is expected


statuses = st.one_of(st.none(), st.integers(100, 599), st.sampled_from(sorted(RETRIED_STATUSES)))
exc_kinds = st.one_of(st.none(), st.sampled_from(["timeout", "connection", "transport"]))


@settings(max_examples=60, deadline=None)
@given(statuses, exc_kinds, st.integers(1, 10), st.data())
def test_while_retries_are_left_the_answer_decides(status, exc_kind, max_retries, data):
    attempt = data.draw(st.integers(0, max_retries - 1))
    expected = (exc_kind in RETRIED_EXC_KINDS) if exc_kind is not None \
        else (status in RETRIED_STATUSES)
    assert should_retry(status, exc_kind, attempt, max_retries) is expected


@settings(max_examples=60, deadline=None)
@given(statuses, exc_kinds, st.integers(0, 10), st.integers(0, 10))
def test_once_the_retries_are_spent_nothing_is_retried(status, exc_kind, max_retries, extra):
    assert should_retry(status, exc_kind, max_retries + extra, max_retries) is False


def test_the_last_retry_is_the_one_numbered_max_retries_minus_one():
    assert should_retry(503, None, 2, 3) is True
    assert should_retry(503, None, 3, 3) is False
    assert should_retry(None, "timeout", 0, 0) is False


def test_backoff_doubles_from_a_quarter_second_up_to_two_seconds():
    assert [backoff(a, 1.0) for a in range(7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]


def test_jitter_scales_the_wait_between_half_and_all_of_it():
    assert [backoff(a, 0.0) for a in range(5)] == [0.125, 0.25, 0.5, 1.0, 1.0]
    assert backoff(0, 0.5) == 0.1875 and backoff(3, 0.5) == 1.5


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_backoff_is_capped_and_grows_with_the_jitter(attempt, j1, j2):
    base = min(0.25 * 2 ** min(attempt, 10), 2.0)
    low, high = sorted((j1, j2))
    assert base / 2 <= backoff(attempt, low) <= backoff(attempt, high) <= base


@pytest.mark.parametrize("attempt, jitter, words", [
    (-1, 0.5, "attempt -1"), (True, 0.5, "attempt True"), (1.0, 0.5, "attempt 1.0"),
    (0, 1.5, "jitter 1.5"), (0, -0.01, "jitter -0.01"),
])
def test_backoff_refuses_what_it_cannot_mean(attempt, jitter, words):
    with pytest.raises(ValueError, match=words):
        backoff(attempt, jitter)


def fixed(*values: float):
    """A jitter source that hands out `values` in order and fails loudly past the end."""
    it = iter(values)
    return lambda: next(it)


def client(gateway, sleeps, *, jitter=(0.0, 0.5, 1.0), **kw):
    kw.setdefault("timeout_s", 1.0)
    kw.setdefault("max_retries", 3)
    kw.setdefault("api_key", gateway.api_key)
    return GatewayClient(gateway.base_url, sleep=sleeps.append, jitter=fixed(*jitter), **kw)


class LateAnswers(requests.Session):
    """The sandbox does the work and answers, but the first `late` answers come after the
    client's timeout: the request took effect, the client sees requests.ReadTimeout."""

    def __init__(self, late: int):
        super().__init__()
        self.late = late
        self.timeouts: list[float] = []

    def request(self, method, url, **kwargs):
        self.timeouts.append(kwargs["timeout"])
        response = super().request(method, url, **kwargs)
        if self.late > 0:
            self.late -= 1
            raise requests.ReadTimeout(f"read timed out (timeout={kwargs['timeout']})")
        return response


class BrokenTransport(requests.Session):
    """A transport failure that is neither a timeout nor a refused connection."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def request(self, method, url, **kwargs):
        self.calls += 1
        raise requests.exceptions.ContentDecodingError("garbled gzip stream")


class NotJson(requests.Session):
    """A proxy in front of the gateway that answers HTML."""

    def __init__(self, status: int):
        super().__init__()
        self.status = status

    def request(self, method, url, **kwargs):
        response = requests.Response()
        response.status_code, response._content = self.status, b"<html>Bad Gateway</html>"
        return response


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_retries_reuse_one_key_and_capture_once(gateway, fault):
    sleeps: list[float] = []
    gw = client(gateway, sleeps)
    auth = gw.authorize(1000, "EUR", "tok_visa_ok", "s-1:hold")
    gateway.fail_next(3, fault)
    capture = gw.capture(auth["id"], 700, "s-1:capture")
    assert (capture["status"], capture["amount_received"], capture["id"]) == \
        ("succeeded", 700, auth["id"])
    captures = [r for r in gateway.requests_seen() if r.path.endswith("/capture")]
    assert [(r.idempotency_key, r.fault) for r in captures] == \
        [("s-1:capture", fault)] * 3 + [("s-1:capture", None)]
    assert gateway.effects()["capture"] == 1
    assert sleeps == [0.125, 0.375, 1.0]  # backoff(0, 0.0), backoff(1, 0.5), backoff(2, 1.0)


def test_a_late_answer_times_out_and_the_retry_gets_the_stored_result(gateway):
    sleeps: list[float] = []
    late = LateAnswers(late=0)
    gw = client(gateway, sleeps, timeout_s=0.3, session=late)
    auth = gw.authorize(1000, "EUR", "tok_visa_ok", "slow:hold")
    late.late = 2
    capture = gw.capture(auth["id"], 100, "slow:capture")
    assert (capture["status"], capture["amount_received"]) == ("succeeded", 100)
    assert gateway.effects()["capture"] == 1
    assert [r.idempotency_key for r in gateway.requests_seen()][1:] == ["slow:capture"] * 3
    assert sleeps == [0.125, 0.375] and late.timeouts == [0.3] * 4


def test_late_answers_every_time_give_up_as_unavailable(gateway):
    sleeps: list[float] = []
    gw = client(gateway, sleeps, session=LateAnswers(late=4))
    with pytest.raises(GatewayUnavailable, match=r"after 4 attempt\(s\) \(last: timeout\)"):
        gw.authorize(1000, "EUR", "tok_visa_ok", "k")
    assert gateway.effects()["authorize"] == 1  # it happened; the same key will replay it
    assert sleeps == [0.125, 0.375, 1.0]


def test_gives_up_after_max_retries_with_a_retryable_error(gateway):
    sleeps: list[float] = []
    gateway.fail_next(10, "500")
    with pytest.raises(GatewayUnavailable,
                       match=r"after 4 attempt\(s\) \(last: HTTP 500\); try again later "
                             r"with the same key") as caught:
        client(gateway, sleeps, jitter=(1.0, 1.0, 1.0)).authorize(1000, "EUR", "tok_visa_ok",
                                                                   "k")
    assert caught.value.retryable and caught.value.status == 500
    assert len(gateway.requests_seen()) == 4 and sleeps == [0.25, 0.5, 1.0]
    assert gateway.effects()["authorize"] == 0


def test_no_retries_means_one_attempt(gateway):
    sleeps: list[float] = []
    gateway.fail_next(1, "500")
    with pytest.raises(GatewayUnavailable, match=r"after 1 attempt\(s\)"):
        client(gateway, sleeps, max_retries=0).authorize(1000, "EUR", "tok_visa_ok", "k")
    assert len(gateway.requests_seen()) == 1 and sleeps == []


def test_a_decline_is_final_and_says_why(gateway):
    sleeps: list[float] = []
    with pytest.raises(PaymentDeclined) as caught:
        client(gateway, sleeps).authorize(1000, "EUR", "tok_insufficient_funds", "k")
    declined = caught.value
    assert (declined.code, declined.reason, declined.status, declined.retryable) == \
        ("insufficient_funds", "The card has insufficient funds.", 402, False)
    assert str(declined) == ("payment declined: The card has insufficient funds. "
                             "(insufficient_funds)")
    assert len(gateway.requests_seen()) == 1 and sleeps == []


def test_a_reused_key_is_a_conflict_and_is_not_retried(gateway):
    sleeps: list[float] = []
    gw = client(gateway, sleeps)
    gw.authorize(1000, "EUR", "tok_visa_ok", "k")
    with pytest.raises(IdempotencyConflict, match="already used with a different request") \
            as caught:
        gw.authorize(2000, "EUR", "tok_visa_ok", "k")
    assert caught.value.status == 409 and not caught.value.retryable
    assert len(gateway.requests_seen()) == 2 and sleeps == []
    assert gateway.effects()["authorize"] == 1


def test_a_refused_request_is_not_retried(gateway):
    sleeps: list[float] = []
    with pytest.raises(InvalidGatewayRequest, match="refused with HTTP 404: no payment intent "
                                                    "'pi_424242'") as caught:
        client(gateway, sleeps).void("pi_424242", "v")
    assert caught.value.status == 404 and not caught.value.retryable
    assert len(gateway.requests_seen()) == 1 and sleeps == []


def test_each_operation_reaches_its_endpoint(gateway):
    sleeps: list[float] = []
    gw = client(gateway, sleeps)
    one = gw.authorize(1000, "EUR", "tok_visa_ok", "a-1")
    two = gw.authorize(500, "EUR", "tok_visa_ok", "a-2")
    capture = gw.capture(one["id"], 640, "c-1", currency="EUR")
    refund = gw.refund(capture["id"], 40, "r-1")
    voided = gw.void(two["id"], "v-1")
    charged = gw.charge(300, "EUR", "tok_visa_ok", "x-1")
    seen = gw.retrieve(one["id"])
    assert (one["status"], one["amount"], one["currency"], one["capture_method"]) == \
        ("requires_capture", 1000, "EUR", "manual")
    assert (refund["status"], refund["amount"], refund["payment_intent"]) == \
        ("succeeded", 40, capture["id"])
    assert (voided["id"], voided["status"]) == (two["id"], "canceled")
    assert (charged["status"], charged["amount_received"], charged["capture_method"]) == \
        ("succeeded", 300, "automatic")
    assert (seen["amount_received"], seen["amount_refunded"]) == (640, 40)
    assert [(r.method, r.path, r.idempotency_key) for r in gateway.requests_seen()] == [
        ("POST", "/v1/payment_intents", "a-1"), ("POST", "/v1/payment_intents", "a-2"),
        ("POST", f"/v1/payment_intents/{one['id']}/capture", "c-1"),
        ("POST", "/v1/refunds", "r-1"),
        ("POST", f"/v1/payment_intents/{two['id']}/cancel", "v-1"),
        ("POST", "/v1/payment_intents", "x-1"),
        ("GET", f"/v1/payment_intents/{one['id']}", None)]
    assert sleeps == []


def test_nobody_listening_is_unavailable_not_a_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    gw = GatewayClient(f"http://127.0.0.1:{port}", api_key="k", max_retries=2,
                       sleep=sleeps.append, jitter=fixed(1.0, 1.0))
    with pytest.raises(GatewayUnavailable, match=r"after 3 attempt\(s\) \(last: connection\)"):
        gw.void("auth_1", "k")
    assert sleeps == [0.25, 0.5]


def test_another_transport_failure_is_unavailable_without_retrying():
    sleeps: list[float] = []
    broken = BrokenTransport()
    gw = GatewayClient("http://127.0.0.1:9", api_key="k", sleep=sleeps.append, session=broken)
    with pytest.raises(GatewayUnavailable, match=r"after 1 attempt\(s\) \(last: transport\)"):
        gw.void("auth_1", "k")
    assert broken.calls == 1 and sleeps == []


def test_an_answer_that_is_not_json_is_quoted_in_the_error():
    gw = GatewayClient("http://127.0.0.1:9", api_key="k", sleep=[].append,
                       session=NotJson(400))
    with pytest.raises(InvalidGatewayRequest, match=r"HTTP 400: non-JSON answer: "
                                                    r"'<html>Bad Gateway</html>'"):
        gw.void("auth_1", "k")


def test_a_post_without_an_idempotency_key_is_refused_before_sending(gateway):
    with pytest.raises(ValueError, match="needs an idempotency key"):
        client(gateway, []).authorize(1000, "EUR", "tok_visa_ok", "")
    assert gateway.requests_seen() == []


@pytest.mark.parametrize("url, kw, words", [
    ("ftp://gw", {}, "must start with http:// or https://"),
    ("gw.example", {}, "must start with http://"),
    ("http://gw", {"timeout_s": 0}, "timeout_s must be > 0"),
    ("http://gw", {"max_retries": -1}, "max_retries >= 0"),
])
def test_a_bad_client_setting_is_refused(url, kw, words):
    with pytest.raises(ValueError, match=words):
        GatewayClient(url, api_key="k", **kw)


def test_the_base_url_loses_its_trailing_slash():
    assert GatewayClient("https://gw.example/", api_key="k").base_url == "https://gw.example"


# --- the API key ---------------------------------------------------------------------------

def test_the_key_goes_out_on_every_request_and_a_wrong_one_is_final(gateway):
    sleeps: list[float] = []
    with pytest.raises(AuthenticationFailed, match=r"HTTP 403: .*check the gateway API key") \
            as caught:
        client(gateway, sleeps, api_key="sk_test_wrong").authorize(100, "EUR", "tok_visa_ok",
                                                                    "k")
    assert caught.value.status == 403 and not caught.value.retryable
    assert "sk_test_wrong" not in str(caught.value)
    assert len(gateway.requests_seen()) == 1 and sleeps == []
    assert gateway.effects()["authorize"] == 0


def test_the_key_file_is_read_once_and_never_shown(gateway, tmp_path):
    path = tmp_path / "gateway.key"
    path.write_text(gateway.api_key + "\n")
    gw = GatewayClient(gateway.base_url, api_key_file=path, sleep=[].append)
    path.write_text("sk_test_changed_later\n")
    assert gw.authorize(100, "EUR", "tok_visa_ok", "k")["status"] == "requires_capture"
    assert gateway.api_key not in repr(gw)


@pytest.mark.parametrize("kw, words", [
    ({}, "exactly one"),
    ({"api_key": "a", "api_key_file": "b"}, "exactly one"),
    ({"api_key": "two words"}, "api_key: expected one key"),
    ({"api_key_file": "/nonexistent/gateway.key"}, "/nonexistent/gateway.key cannot be read"),
])
def test_a_missing_or_bad_key_setting_is_refused(kw, words):
    with pytest.raises(ValueError, match=words):
        GatewayClient("http://127.0.0.1:9", **kw)


def test_the_key_is_not_logged_on_retries(gateway, caplog):
    gateway.fail_next(2, "500")
    with caplog.at_level("DEBUG"):
        client(gateway, []).authorize(100, "EUR", "tok_visa_ok", "k")
    assert len(caplog.records) >= 2
    assert gateway.api_key not in caplog.text
