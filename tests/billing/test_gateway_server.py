"""The sandbox gateway over real HTTP on 127.0.0.1: rules, idempotency, faults, persistence."""
from __future__ import annotations

import select
import subprocess
import sys

import pytest
import requests

from billing.gateway_server import SandboxGateway, main


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


@pytest.mark.parametrize("body, message", [
    ({**OK, "amount": -5}, "'amount' must be a positive integer of minor units, got -5"),
    ({**OK, "amount": 0}, "'amount' must be a positive integer of minor units, got 0"),
    ({**OK, "amount": 1.5}, "'amount' must be a positive integer of minor units, got 1.5"),
    ({**OK, "amount": True}, "'amount' must be a positive integer of minor units, got True"),
    ({**OK, "currency": "euro"}, "'currency' must be an ISO 4217 code such as 'EUR', got "
                                 "'euro'"),
    ({"amount": 100, "currency": "EUR"}, "'payment_token' is required"),
])
def test_bad_authorization_requests_are_refused(gateway, body, message):
    answer = post(gateway, "/v1/authorizations", body)
    assert answer.status_code == 400
    assert answer.json()["error"] == {"type": "invalid_request", "message": message}
    assert gateway.effects() == {"authorize": 0, "decline": 0, "capture": 0, "void": 0,
                                 "refund": 0}


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
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the gateway printed no URL within 20 s"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        answer = requests.post(url + "/v1/authorizations", timeout=5,
                               json=OK,
                               headers={"Idempotency-Key": "standalone"})
        assert answer.json()["status"] == "authorized"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_slow_answer_waits_its_delay_then_answers():
    waits: list[float] = []
    with SandboxGateway(slow_s=3.0, sleep=waits.append) as gw:
        gw.fail_next(1, "slow", delay_s=4.5)
        gw.fail_next(1, "slow")
        assert authorize(gw, "k-1").json()["status"] == "authorized"
        assert authorize(gw, "k-2").json()["status"] == "authorized"
        assert [r.fault for r in gw.requests_seen()] == ["slow", "slow"]
        assert gw.effects()["authorize"] == 2
    assert waits == [4.5, 3.0]


@pytest.mark.parametrize("n, kind, words", [(1, "timeout", "fault 'timeout' is not one of"),
                                            (-1, "500", "cannot inject -1 faults")])
def test_a_bad_fault_is_refused(gateway, n, kind, words):
    with pytest.raises(ValueError, match=words):
        gateway.fail_next(n, kind)


def test_faults_apply_to_posts_only_and_in_order(gateway):
    gateway.fail_next(1, "500")
    assert requests.get(f"{gateway.base_url}/v1/authorizations/auth_1", timeout=5
                        ).status_code == 404
    assert authorize(gateway, "k").status_code == 500
    assert authorize(gateway, "k").status_code == 200
    assert [(r.method, r.fault) for r in gateway.requests_seen()] == \
        [("GET", None), ("POST", "500"), ("POST", None)]


@pytest.mark.parametrize("raw, words", [(b"{not json", "the body is not JSON"),
                                        (b"[1, 2]", "the body must be a JSON object")])
def test_a_body_that_is_not_a_json_object_is_refused(gateway, raw, words):
    answer = requests.post(gateway.base_url + "/v1/authorizations", data=raw, timeout=5,
                           headers={"Idempotency-Key": "k", "Content-Type": "application/json"})
    assert answer.status_code == 400 and words in answer.json()["error"]["message"]
    assert gateway.effects()["authorize"] == 0


def test_an_overlong_idempotency_key_is_refused(gateway):
    answer = authorize(gateway, key="k" * 256)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "the Idempotency-Key is longer than 255"
    assert authorize(gateway, key="k" * 255).status_code == 200


def test_unknown_resources_are_404(gateway):
    assert post(gateway, "/v1/nothing", {}).status_code == 404
    assert post(gateway, "/v1/refunds", {"capture_id": "cap_9", "amount": 1},
                "r").json()["error"]["message"] == "no capture 'cap_9'"
    assert requests.get(gateway.base_url + "/v1/refunds", timeout=5).status_code == 404


def test_a_captured_hold_cannot_be_voided(gateway):
    auth_id = authorize(gateway).json()["id"]
    assert post(gateway, f"/v1/authorizations/{auth_id}/capture", {"amount": 5}, "c").ok
    answer = post(gateway, f"/v1/authorizations/{auth_id}/void", {}, "v")
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_state"
    assert gateway.effects()["void"] == 0


def test_an_unreadable_state_file_is_a_clear_error(tmp_path):
    state = tmp_path / "gateway.json"
    state.write_text("{half", encoding="utf-8")
    with pytest.raises(ValueError, match="state file .*gateway.json is unreadable .*; move it "
                                         "away to start empty"):
        SandboxGateway(state_path=state)


def test_the_command_refuses_a_public_address(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--host", "0.0.0.0"])
    assert caught.value.code == 2
    assert "error: sandbox gateway: host '0.0.0.0' is not a loopback address" in \
        capsys.readouterr().err


def test_reset_forgets_everything_but_keeps_serving(gateway):
    first = authorize(gateway, "k").json()
    gateway.fail_next(2, "500")
    gateway.reset()
    assert (gateway.effects()["authorize"], gateway.requests_seen()) == (0, [])
    again = authorize(gateway, "k").json()   # no fault left, the key is unknown again
    assert again["id"] == first["id"] == "auth_000001" and gateway.effects()["authorize"] == 1


def test_reset_refuses_to_discard_a_state_file(tmp_path):
    gw = SandboxGateway(state_path=tmp_path / "gateway.json")
    with pytest.raises(ValueError, match="reset\\(\\) would discard the state kept in"):
        gw.reset()
