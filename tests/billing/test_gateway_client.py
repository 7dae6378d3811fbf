"""The gateway client: pure retry rules, and one idempotency key across real retries."""
from __future__ import annotations

import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.gateway import (INITIAL_BACKOFF_S, MAX_BACKOFF_S, GatewayClient,
                             GatewayUnavailable, IdempotencyConflict, InvalidGatewayRequest,
                             PaymentDeclined, backoff, should_retry)


@pytest.mark.parametrize("status, exc_kind, expected", [
    (None, "timeout", True), (None, "connection", True), (None, "transport", False),
    (500, None, True), (502, None, True), (503, None, True), (504, None, True),
    (429, None, True), (200, None, False), (400, None, False), (402, None, False),
    (404, None, False), (409, None, False),
])
def test_should_retry_table(status, exc_kind, expected):
    assert should_retry(status, exc_kind, 0, 3) is expected


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.none(), st.integers(100, 599)),
       st.one_of(st.none(), st.sampled_from(["timeout", "connection", "transport"])),
       st.integers(0, 20), st.integers(0, 10))
def test_never_more_than_max_retries(status, exc_kind, attempt, max_retries):
    if attempt >= max_retries:
        assert not should_retry(status, exc_kind, attempt, max_retries)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 30), st.integers(0, 2**32))
def test_backoff_is_capped_jittered_and_exact_for_a_seed(attempt, seed):
    wait = backoff(attempt, random.Random(seed))
    base = min(INITIAL_BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S)
    assert base / 2 <= wait <= base
    assert wait == backoff(attempt, random.Random(seed))


def test_backoff_grows_until_the_cap():
    class Fixed(random.Random):
        def random(self):
            return 1.0
    assert [backoff(a, Fixed()) for a in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def client(gateway, sleeps, **kw):
    kw.setdefault("timeout_s", 1.0)
    return GatewayClient(gateway.base_url, max_retries=3, sleep=sleeps.append,
                         rng=random.Random(1), **kw)


@pytest.mark.parametrize("fault", ["500", "drop"])
def test_retries_reuse_one_key_and_capture_once(gateway, fault):
    sleeps: list[float] = []
    gw = client(gateway, sleeps)
    auth = gw.authorize(1000, "EUR", "tok_visa_ok", "s-1:hold")
    gateway.fail_next(3, fault)
    capture = gw.capture(auth["id"], 700, "s-1:capture")
    assert capture["status"] == "captured" and capture["amount"] == 700
    captures = [r for r in gateway.requests_seen() if r.path.endswith("/capture")]
    assert len(captures) == 4
    assert {r.idempotency_key for r in captures} == {"s-1:capture"}
    assert gateway.effects()["capture"] == 1
    rng = random.Random(1)  # the client's rng: the waits are exactly backoff()'s
    assert sleeps == [backoff(attempt, rng) for attempt in range(3)]


def test_a_slow_answer_times_out_and_the_retry_gets_the_stored_result(gateway):
    sleeps: list[float] = []
    gw = client(gateway, sleeps, timeout_s=0.3)
    auth = gw.authorize(1000, "EUR", "tok_visa_ok", "slow:hold")
    gateway.fail_next(1, "slow", delay_s=0.9)
    capture = gw.capture(auth["id"], 100, "slow:capture")
    assert capture["status"] == "captured"
    assert gateway.effects()["capture"] == 1 and len(sleeps) == 1


def test_gives_up_after_max_retries_with_a_retryable_error(gateway):
    sleeps: list[float] = []
    gateway.fail_next(10, "500")
    with pytest.raises(GatewayUnavailable, match="4 attempt") as caught:
        client(gateway, sleeps).authorize(1000, "EUR", "tok_visa_ok", "k")
    assert caught.value.retryable
    assert len(gateway.requests_seen()) == 4 and len(sleeps) == 3
    assert gateway.effects()["authorize"] == 0


def test_a_decline_is_final_and_says_why(gateway):
    sleeps: list[float] = []
    with pytest.raises(PaymentDeclined) as caught:
        client(gateway, sleeps).authorize(1000, "EUR", "tok_insufficient_funds", "k")
    assert caught.value.code == "insufficient_funds"
    assert "insufficient funds" in caught.value.reason and not caught.value.retryable
    assert len(gateway.requests_seen()) == 1 and sleeps == []


def test_conflicts_and_refusals_are_not_retried(gateway):
    sleeps: list[float] = []
    gw = client(gateway, sleeps)
    gw.authorize(1000, "EUR", "tok_visa_ok", "k")
    with pytest.raises(IdempotencyConflict):
        gw.authorize(2000, "EUR", "tok_visa_ok", "k")
    with pytest.raises(InvalidGatewayRequest, match="404"):
        gw.void("auth_424242", "v")
    assert sleeps == []


def test_nobody_listening_is_unavailable_not_a_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    gw = GatewayClient(f"http://127.0.0.1:{port}", max_retries=2, sleep=sleeps.append)
    with pytest.raises(GatewayUnavailable, match="connection"):
        gw.void("auth_1", "k")
    assert len(sleeps) == 2
