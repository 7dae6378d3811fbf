"""The sandbox gateway over real HTTP on 127.0.0.1: rules, idempotency, faults, persistence."""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from billing.gateway_server import SandboxGateway


def post(gw, path, body, key="k-1"):
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(gw.base_url + path, json=body, headers=headers, timeout=5)


def authorize(gw, key="auth-1", amount=1000, token="tok_visa_ok"):
    return post(gw, "/v1/authorizations",
                {"amount": amount, "currency": "EUR", "payment_token": token}, key)


def test_only_loopback_addresses_are_accepted():
    with pytest.raises(ValueError, match="not a loopback address"):
        SandboxGateway("0.0.0.0")


def test_authorize_capture_and_read_back(gateway):
    auth = authorize(gateway).json()
    assert auth["status"] == "authorized" and auth["amount"] == 1000
    cap = post(gateway, f"/v1/authorizations/{auth['id']}/capture", {"amount": 640}, "cap-1")
    assert cap.status_code == 200 and cap.json()["amount"] == 640
    seen = requests.get(f"{gateway.base_url}/v1/authorizations/{auth['id']}", timeout=5).json()
    assert seen["status"] == "captured" and seen["captured_amount"] == 640
    assert gateway.effects()["capture"] == 1


@pytest.mark.parametrize("token, code", [("tok_declined", "card_declined"),
                                         ("tok_insufficient_funds", "insufficient_funds"),
                                         ("tok_expired", "expired_card"),
                                         ("tok_made_up", "invalid_token")])
def test_test_tokens_decline_with_their_code(gateway, token, code):
    answer = authorize(gateway, token=token)
    assert answer.status_code == 402
    assert answer.json()["status"] == "declined" and answer.json()["decline_code"] == code


def test_same_key_same_body_replays_without_a_second_effect(gateway):
    first, again = authorize(gateway, "same").json(), authorize(gateway, "same").json()
    assert first == again
    assert gateway.effects()["authorize"] == 1


def test_same_key_different_body_is_a_conflict(gateway):
    authorize(gateway, "same", amount=1000)
    answer = authorize(gateway, "same", amount=999)
    assert answer.status_code == 409 and "different request" in answer.json()["error"]["message"]
    assert gateway.effects()["authorize"] == 1


def test_posts_need_an_idempotency_key(gateway):
    answer = post(gateway, "/v1/authorizations",
                  {"amount": 1, "currency": "EUR", "payment_token": "tok_visa_ok"}, key=None)
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["error"]["message"]


OK = {"amount": 100, "currency": "EUR", "payment_token": "tok_visa_ok"}


@pytest.mark.parametrize("body", [{**OK, "amount": -5}, {**OK, "amount": 1.5},
                                  {**OK, "currency": "euro"},
                                  {"amount": 100, "currency": "EUR"}])
def test_bad_authorization_requests_are_refused(gateway, body):
    assert post(gateway, "/v1/authorizations", body).status_code == 400
    assert gateway.effects()["authorize"] == 0


def test_capture_rules(gateway):
    auth_id = authorize(gateway).json()["id"]
    too_much = post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 1001}, "c-1")
    assert too_much.status_code == 400 and too_much.json()["error"]["type"] == "amount_too_large"
    assert post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 5}, "c-2").ok
    second = post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 5}, "c-3")
    assert second.status_code == 400 and second.json()["error"]["type"] == "invalid_state"
    assert post(gateway, "/v1/authorizations/auth_999999/capture", {"amount": 5},
                "c-4").status_code == 404
    assert gateway.effects()["capture"] == 1


def test_a_voided_hold_cannot_be_captured(gateway):
    auth_id = authorize(gateway).json()["id"]
    voided = post(gateway, f"/v1/authorizations/{auth_id}/void", {}, "v-1").json()
    assert voided["status"] == "voided"
    assert post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 5},
                "c-1").status_code == 400


def test_refunds_never_exceed_the_capture(gateway):
    auth_id = authorize(gateway).json()["id"]
    cap_id = post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 500},
                  "c").json()["id"]
    assert post(gateway, "/v1/refunds", {"capture_id": cap_id, "amount": 300}, "r-1").ok
    over = post(gateway, "/v1/refunds", {"capture_id": cap_id, "amount": 201}, "r-2")
    assert over.status_code == 400 and "200 left" in over.json()["error"]["message"]
    assert gateway.effects()["refund"] == 1


def test_an_injected_500_does_nothing_and_is_not_stored(gateway):
    gateway.fail_next(1, "500")
    assert authorize(gateway, "k").status_code == 500
    assert gateway.effects()["authorize"] == 0
    assert authorize(gateway, "k").json()["status"] == "authorized"
    assert gateway.effects()["authorize"] == 1


def test_a_drop_does_the_work_but_never_answers(gateway):
    gateway.fail_next(1, "drop")
    with pytest.raises(requests.ConnectionError):
        authorize(gateway, "k")
    assert gateway.effects()["authorize"] == 1
    assert authorize(gateway, "k").json()["id"] == "auth_000001"
    assert gateway.effects()["authorize"] == 1


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "gateway.json"
    with SandboxGateway(state_path=state) as first:
        auth = authorize(first, "k").json()
    with SandboxGateway(state_path=state) as second:
        assert authorize(second, "k").json() == auth
        assert second.effects()["authorize"] == 1


def test_runs_standalone_and_prints_its_url():
    proc = subprocess.Popen([sys.executable, "-m", "billing.gateway_server", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        answer = requests.post(url + "/v1/authorizations", timeout=5,
                               json=OK,
                               headers={"Idempotency-Key": "standalone"})
        assert answer.json()["status"] == "authorized"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
