"""The sandbox gateway over real HTTP on 127.0.0.1: PaymentIntents with manual capture, the API
key, bounds on amounts, currencies and bodies, idempotency, faults, and its journal on disk.

Most tests share the session's server (conftest `gateway`, reset per test); the durability
tests start their own with a data folder, and the process tests run `python -m
billing.gateway_server` and kill it with SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from billing.gateway_server import JOURNAL, SandboxGateway, main

PI = "/v1/payment_intents"


def post(gw, path, body, key="k-1", *, api_key=None, **kw):
    headers = {"Idempotency-Key": key} if key else {}
    headers["Authorization"] = f"Bearer {api_key or gw.api_key}"
    return requests.post(gw.base_url + path, json=body, headers=headers, timeout=5, **kw)


def get(gw, path):
    return requests.get(gw.base_url + path, timeout=5,
                        headers={"Authorization": f"Bearer {gw.api_key}"})


def hold(gw, amount=1000, key="h-1", currency="EUR", method="tok_visa_ok"):
    return post(gw, PI, {"amount": amount, "currency": currency, "payment_method": method,
                         "capture_method": "manual"}, key)


def error_of(response):
    return response.json()["error"]


# --- the PaymentIntent life ----------------------------------------------------------------

def test_a_hold_is_captured_and_read_back(gateway):
    created = hold(gateway).json()
    assert (created["status"], created["amount_capturable"], created["amount_received"]) == \
        ("requires_capture", 1000, 0)
    captured = post(gateway, f"{PI}/{created['id']}/capture", {"amount_to_capture": 640},
                    "c-1").json()
    assert (captured["status"], captured["amount_received"], captured["amount_capturable"]) \
        == ("succeeded", 640, 0)
    assert get(gateway, f"{PI}/{created['id']}").json() == captured
    assert gateway.effects() == {"authorize": 1, "decline": 0, "capture": 1, "charge": 0,
                                 "void": 0, "refund": 0}


def test_a_capture_without_an_amount_takes_the_whole_hold(gateway):
    intent_id = hold(gateway, 750).json()["id"]
    assert post(gateway, f"{PI}/{intent_id}/capture", {}, "c").json()["amount_received"] == 750


def test_an_automatic_payment_succeeds_at_once(gateway):
    paid = post(gateway, PI, {"amount": 300, "currency": "EUR", "payment_method": "tok_visa_ok",
                              "capture_method": "automatic"}).json()
    assert (paid["status"], paid["amount_received"]) == ("succeeded", 300)
    assert gateway.effects()["charge"] == 1 and gateway.effects()["authorize"] == 0


def test_ids_are_random_and_unguessable(gateway):
    ids = [hold(gateway, key=f"h-{i}").json()["id"] for i in range(20)]
    assert len(set(ids)) == 20
    assert all(i.startswith("pi_") and len(i) >= 3 + 24 for i in ids)
    assert len({i[3:7] for i in ids}) > 10   # no shared counter prefix


@pytest.mark.parametrize("method, code", [
    ("tok_declined", "card_declined"), ("tok_insufficient_funds", "insufficient_funds"),
    ("tok_expired", "expired_card"), ("tok_stolen_from_somewhere", "invalid_token")])
def test_test_payment_methods_decline_with_their_code(gateway, method, code):
    answer = hold(gateway, method=method)
    error = error_of(answer)
    assert answer.status_code == 402
    assert (error["type"], error["decline_code"]) == ("card_error", code)
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert gateway.effects()["decline"] == 1 and gateway.effects()["authorize"] == 0


def test_a_canceled_hold_cannot_be_captured(gateway):
    intent_id = hold(gateway).json()["id"]
    canceled = post(gateway, f"{PI}/{intent_id}/cancel", {}, "v-1").json()
    assert (canceled["status"], canceled["amount_capturable"]) == ("canceled", 0)
    refused = post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 5}, "c-1")
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "payment_intent_unexpected_state"
    assert "is canceled" in error_of(refused)["message"]


def test_a_captured_hold_cannot_be_canceled(gateway):
    intent_id = hold(gateway).json()["id"]
    assert post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 5}, "c").ok
    refused = post(gateway, f"{PI}/{intent_id}/cancel", {}, "v")
    assert refused.status_code == 400 and "is succeeded" in error_of(refused)["message"]
    assert gateway.effects()["void"] == 0


def test_capture_rules(gateway):
    intent_id = hold(gateway, 1000).json()["id"]
    too_much = post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 1001}, "c-1")
    assert too_much.status_code == 400 and error_of(too_much)["code"] == "amount_too_large"
    assert post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 5}, "c-2").ok
    again = post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 5}, "c-3")
    assert again.status_code == 400
    missing = post(gateway, f"{PI}/pi_doesnotexist/capture", {"amount_to_capture": 5}, "c-4")
    assert missing.status_code == 404 and error_of(missing)["code"] == "resource_missing"
    assert gateway.effects()["capture"] == 1


def test_a_capture_in_another_currency_is_refused(gateway):
    intent_id = hold(gateway, 1000, currency="EUR").json()["id"]
    refused = post(gateway, f"{PI}/{intent_id}/capture",
                   {"amount_to_capture": 500, "currency": "USD"}, "c-1")
    assert refused.status_code == 400 and error_of(refused)["code"] == "currency_mismatch"
    assert "is in EUR, not USD" in error_of(refused)["message"]
    assert gateway.intent(intent_id)["status"] == "requires_capture"
    same = post(gateway, f"{PI}/{intent_id}/capture",
                {"amount_to_capture": 500, "currency": "EUR"}, "c-2")
    assert same.ok and gateway.effects()["capture"] == 1


def test_refunds_never_exceed_what_was_received(gateway):
    intent_id = hold(gateway).json()["id"]
    not_yet = post(gateway, "/v1/refunds", {"payment_intent": intent_id, "amount": 1}, "r-0")
    assert not_yet.status_code == 400 and "requires_capture" in error_of(not_yet)["message"]
    post(gateway, f"{PI}/{intent_id}/capture", {"amount_to_capture": 500}, "c-1")
    refund = post(gateway, "/v1/refunds", {"payment_intent": intent_id, "amount": 300}, "r-1")
    assert refund.ok and refund.json()["id"].startswith("re_")
    over = post(gateway, "/v1/refunds", {"payment_intent": intent_id, "amount": 201}, "r-2")
    assert over.status_code == 400 and "exceeds the 200 left" in error_of(over)["message"]
    other = post(gateway, "/v1/refunds", {"payment_intent": intent_id, "amount": 10,
                                          "currency": "GBP"}, "r-3")
    assert other.status_code == 400 and error_of(other)["code"] == "currency_mismatch"
    assert get(gateway, f"{PI}/{intent_id}").json()["amount_refunded"] == 300
    assert get(gateway, f"/v1/refunds/{refund.json()['id']}").json()["amount"] == 300


# --- what the gateway refuses ----------------------------------------------------------------

@pytest.mark.parametrize("body, code, words", [
    ({"amount": 0, "currency": "EUR", "payment_method": "tok_visa_ok"}, "parameter_invalid",
     "'amount' must be a positive integer"),
    ({"amount": -5, "currency": "EUR", "payment_method": "tok_visa_ok"}, "parameter_invalid",
     "positive integer"),
    ({"amount": 12.5, "currency": "EUR", "payment_method": "tok_visa_ok"}, "parameter_invalid",
     "positive integer"),
    ({"amount": True, "currency": "EUR", "payment_method": "tok_visa_ok"}, "parameter_invalid",
     "positive integer"),
    ({"amount": 100, "currency": "XYZ", "payment_method": "tok_visa_ok"}, "currency_invalid",
     "ISO 4217"),
    ({"amount": 100, "currency": "euro", "payment_method": "tok_visa_ok"}, "currency_invalid",
     "ISO 4217"),
    ({"amount": 100, "payment_method": "tok_visa_ok"}, "currency_invalid", "'currency'"),
    ({"amount": 100, "currency": "EUR"}, "parameter_missing", "'payment_method' is required"),
    ({"amount": 100, "currency": "EUR", "payment_method": "tok_visa_ok",
      "capture_method": "later"}, "parameter_invalid", "'capture_method'"),
])
def test_bad_payment_intents_are_refused_naming_the_field(gateway, body, code, words):
    answer = post(gateway, PI, body)
    assert answer.status_code == 400 and error_of(answer)["code"] == code
    assert words in error_of(answer)["message"]
    assert gateway.intents() == []


@pytest.mark.parametrize("currency, limit", [("EUR", 1_000_000), ("JPY", 10_000),
                                             ("KWD", 10_000_000)])
def test_amounts_above_the_maximum_are_refused_by_the_currency_exponent(gateway, currency,
                                                                        limit):
    assert hold(gateway, limit, "ok", currency).ok
    over = hold(gateway, limit + 1, "over", currency)
    assert over.status_code == 400 and error_of(over)["code"] == "amount_too_large"
    assert f"above the maximum of {limit} minor units (10000 {currency})" in \
        error_of(over)["message"]
    assert len(gateway.intents()) == 1


def test_the_maximum_is_configurable():
    with SandboxGateway(max_amount=50) as gw:
        assert hold(gw, 5000).ok
        assert hold(gw, 5001, "h-2").status_code == 400


def test_same_key_same_body_replays_without_a_second_effect(gateway):
    first = hold(gateway, key="same")
    second = hold(gateway, key="same")
    assert first.json() == second.json() and second.status_code == 200
    assert gateway.effects()["authorize"] == 1 and len(gateway.intents()) == 1


def test_same_key_different_body_is_a_conflict(gateway):
    hold(gateway, 1000, key="same")
    conflict = hold(gateway, 2000, key="same")
    assert conflict.status_code == 409 and error_of(conflict)["type"] == "idempotency_error"
    assert "already used with a different request" in error_of(conflict)["message"]
    assert gateway.effects()["authorize"] == 1


def test_a_refused_request_is_answered_the_same_when_repeated(gateway):
    bad = {"amount": 100, "currency": "XYZ", "payment_method": "tok_visa_ok"}
    assert post(gateway, PI, bad, "bad").json() == post(gateway, PI, bad, "bad").json()


def test_posts_need_an_idempotency_key(gateway):
    answer = post(gateway, PI, {"amount": 1, "currency": "EUR", "payment_method": "tok_visa_ok"},
                  key=None)
    assert answer.status_code == 400 and "Idempotency-Key" in error_of(answer)["message"]
    assert gateway.intents() == []


def test_an_overlong_idempotency_key_is_refused(gateway):
    answer = hold(gateway, key="k" * 256)
    assert answer.status_code == 400 and "longer than 255" in error_of(answer)["message"]


@pytest.mark.parametrize("raw, words", [(b"[1, 2]", "JSON object"), (b"{nope", "not JSON"),
                                        (b"\xff\xfe", "not JSON")])
def test_a_body_that_is_not_a_json_object_is_refused(gateway, raw, words):
    answer = requests.post(gateway.base_url + PI, data=raw, timeout=5, headers={
        "Idempotency-Key": "k", "Authorization": f"Bearer {gateway.api_key}"})
    assert answer.status_code == 400 and words in error_of(answer)["message"]


def test_unknown_resources_are_404(gateway):
    assert post(gateway, "/v1/nothing", {}).status_code == 404
    assert post(gateway, "/v1/refunds", {"payment_intent": "pi_x", "amount": 1},
                "r").status_code == 404
    assert get(gateway, "/v1/refunds").status_code == 404
    assert get(gateway, f"{PI}/pi_nobody").status_code == 404


# --- the API key -----------------------------------------------------------------------------

def test_a_request_without_a_key_is_401_and_does_nothing(gateway):
    body = {"amount": 100, "currency": "EUR", "payment_method": "tok_visa_ok"}
    answer = requests.post(gateway.base_url + PI, json=body, timeout=5,
                           headers={"Idempotency-Key": "k"})
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(answer)["type"] == "authentication_error"
    assert requests.get(gateway.base_url + f"{PI}/pi_x", timeout=5).status_code == 401
    assert gateway.intents() == []
    # nothing was stored under the key: the same key with the key header does the work
    assert post(gateway, PI, body, "k").status_code == 200


@pytest.mark.parametrize("header", ["Bearer sk_test_wrong", "Basic dXNlcjpwYXNz", "Bearer",
                                    "sk_test_nothing"])
def test_a_wrong_key_is_refused(gateway, header):
    answer = requests.post(gateway.base_url + PI, timeout=5, json={"amount": 1},
                           headers={"Idempotency-Key": "k", "Authorization": header})
    assert answer.status_code == (403 if header == "Bearer sk_test_wrong" else 401)
    assert gateway.intents() == []
    assert gateway.api_key not in answer.text


def test_someone_elses_capture_is_refused_without_the_key(gateway):
    intent_id = hold(gateway).json()["id"]
    stranger = post(gateway, f"{PI}/{intent_id}/capture", {}, "steal", api_key="sk_test_guess")
    assert stranger.status_code == 403
    assert gateway.intent(intent_id)["status"] == "requires_capture"


# --- request bodies --------------------------------------------------------------------------

def test_an_oversize_body_is_413_and_never_read(gateway):
    body = {"amount": 100, "currency": "EUR", "payment_method": "tok_visa_ok",
            "metadata": "x" * 20_000}
    answer = post(gateway, PI, body)
    assert answer.status_code == 413 and "over the 16384 allowed" in error_of(answer)["message"]
    assert gateway.intents() == [] and gateway.requests_seen() == []


def raw_exchange(gw, head: bytes, body: bytes = b"", *, wait_s: float = 5.0) -> bytes:
    host, port = gw.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as s:
        s.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_post_without_content_length_is_411(gateway):
    head = (f"POST {PI} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.api_key}\r\n"
            f"Idempotency-Key: k\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    answer = raw_exchange(gateway, head, b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")
    assert gateway.intents() == []


def test_a_body_that_never_arrives_times_out_with_408():
    with SandboxGateway(read_timeout_s=0.2) as gw:
        head = (f"POST {PI} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.api_key}\r\n"
                f"Idempotency-Key: k\r\nContent-Length: 500\r\n\r\n").encode()
        answer = raw_exchange(gw, head, b'{"amount": ')  # then nothing: a stalled client
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"did not arrive within 0.2 s" in answer
        assert gw.intents() == []


# --- faults ----------------------------------------------------------------------------------

def test_an_injected_500_does_nothing_and_is_not_stored(gateway):
    gateway.fail_next(1, "500")
    assert hold(gateway, key="k").status_code == 500
    assert gateway.intents() == []
    assert hold(gateway, key="k").status_code == 200
    assert gateway.effects()["authorize"] == 1


def test_a_drop_does_the_work_but_never_answers(gateway):
    gateway.fail_next(1, "drop")
    with pytest.raises(requests.ConnectionError):
        hold(gateway, key="k")
    assert gateway.effects()["authorize"] == 1
    replay = hold(gateway, key="k").json()
    assert replay["id"] == gateway.intents()[0]["id"] and gateway.effects()["authorize"] == 1


def test_a_timeout_loses_the_request_after_its_delay(gateway):
    waits: list[float] = []
    original, gateway._sleep = gateway._sleep, waits.append   # the shared server's, restored
    try:
        gateway.fail_next(1, "timeout", delay_s=7.5)
        with pytest.raises(requests.ConnectionError):
            hold(gateway, key="k")
    finally:
        gateway._sleep = original
    assert waits == [7.5] and gateway.intents() == []
    assert hold(gateway, key="k").ok and gateway.effects()["authorize"] == 1


def test_a_duplicate_delivery_has_one_effect_and_one_answer(gateway):
    gateway.fail_next(1, "duplicate")
    answer = hold(gateway, key="dup")
    assert answer.ok and gateway.effects()["authorize"] == 1 and len(gateway.intents()) == 1
    seen = gateway.requests_seen()
    assert [(r.path, r.fault, r.status) for r in seen] == [(PI, "duplicate", 200)]


def test_a_slow_answer_waits_its_delay_through_the_gateway_sleep():
    waits: list[float] = []
    released = threading.Event()

    def sleep(s: float) -> None:
        waits.append(s)
        released.wait(10)

    with SandboxGateway(slow_s=9.0, sleep=sleep) as gw:
        gw.fail_next(1, "slow")
        with pytest.raises(requests.ReadTimeout):
            requests.post(gw.base_url + PI, timeout=0.3, json={
                "amount": 100, "currency": "EUR", "payment_method": "tok_visa_ok"},
                headers={"Idempotency-Key": "s", "Authorization": f"Bearer {gw.api_key}"})
        released.set()
        assert waits == [9.0] and gw.effects()["authorize"] == 1   # it did the work


@pytest.mark.parametrize("kind, code", [("decline", "card_declined"),
                                        ("insufficient_funds", "insufficient_funds")])
def test_an_injected_decline_hits_the_next_creation_only(gateway, kind, code):
    intent_id = hold(gateway, key="first").json()["id"]
    gateway.fail_next(1, kind)
    assert post(gateway, f"{PI}/{intent_id}/capture", {}, "c").ok   # not a creation
    declined = hold(gateway, key="second")
    assert declined.status_code == 402 and error_of(declined)["decline_code"] == code
    assert hold(gateway, key="third").ok


@pytest.mark.parametrize("n, kind, words", [(1, "explode", "is not one of"),
                                            (-1, "500", "cannot inject")])
def test_a_bad_fault_is_refused(gateway, n, kind, words):
    with pytest.raises(ValueError, match=words):
        gateway.fail_next(n, kind)


def test_faults_apply_to_posts_only_and_in_order(gateway):
    gateway.fail_next(1, "500")
    assert get(gateway, f"{PI}/pi_1").status_code == 404
    assert hold(gateway, key="a").status_code == 500
    assert hold(gateway, key="b").status_code == 200


def test_a_flaky_gateway_injects_faults_at_its_rate():
    with SandboxGateway(flaky=1.0, seed=3, slow_s=0.0) as gw:
        for i in range(12):
            try:
                hold(gw, key=f"k{i}")
            except requests.ConnectionError:
                pass
        faults = {r.fault for r in gw.requests_seen()}
        assert faults <= {"500", "drop", "slow", "duplicate"} and len(faults) >= 3
    with SandboxGateway(flaky=0.0) as calm:
        assert all(hold(calm, key=f"k{i}").ok for i in range(5))


def test_reset_forgets_everything_but_keeps_serving(gateway):
    hold(gateway)
    gateway.fail_next(2, "500")
    gateway.reset()
    assert gateway.intents() == [] and gateway.requests_seen() == []
    assert hold(gateway).status_code == 200


# --- durability ------------------------------------------------------------------------------

def test_state_and_keys_survive_a_restart(tmp_path):
    with SandboxGateway(data_dir=tmp_path) as gw:
        key = gw.api_key
        created = hold(gw, key="h").json()
        post(gw, f"{PI}/{created['id']}/capture", {"amount_to_capture": 400}, "c")
    with SandboxGateway(data_dir=tmp_path) as again:
        assert again.api_key == key   # kept in the folder's api_key file
        assert get(again, f"{PI}/{created['id']}").json()["amount_received"] == 400
        assert hold(again, key="h").json() == created          # the key is remembered
        assert again.effects()["authorize"] == 1 and again.effects()["capture"] == 1
        assert (tmp_path / "api_key").stat().st_mode & 0o077 == 0


def test_a_torn_last_line_is_dropped_and_the_rest_kept(tmp_path):
    with SandboxGateway(data_dir=tmp_path) as gw:
        kept = hold(gw, key="h").json()["id"]
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(b'{"objects": [{"id": "pi_torn", "obj')
    with SandboxGateway(data_dir=tmp_path) as again:
        assert [i["id"] for i in again.intents()] == [kept]
        hold(again, key="h2")
    lines = (tmp_path / JOURNAL).read_bytes().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_a_bad_line_inside_the_journal_is_a_clear_error(tmp_path):
    with SandboxGateway(data_dir=tmp_path) as gw:
        hold(gw, key="a")
        hold(gw, key="b")
    lines = (tmp_path / JOURNAL).read_bytes().splitlines()
    (tmp_path / JOURNAL).write_bytes(lines[0] + b"\nnot json\n" + lines[1] + b"\n")
    with pytest.raises(ValueError, match=r"journal.jsonl line 2 is unreadable"):
        SandboxGateway(data_dir=tmp_path)


def test_a_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist; create it first"):
        SandboxGateway(data_dir=tmp_path / "nope")


def test_reset_refuses_to_discard_a_data_folder(tmp_path):
    gw = SandboxGateway(data_dir=tmp_path)
    with pytest.raises(ValueError, match="move that folder away"):
        gw.reset()


def test_only_loopback_addresses_are_accepted():
    with pytest.raises(ValueError, match="not a loopback address"):
        SandboxGateway("0.0.0.0")


def test_the_key_never_shows_in_the_repr(gateway):
    assert gateway.api_key not in repr(gateway)


# --- the process -----------------------------------------------------------------------------

def start_process(data: Path, *extra: str, port: int = 0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "billing.gateway_server", "--data",
                             str(data), "--port", str(port), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    line = ""
    deadline = time.monotonic() + 20
    while not line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().strip()
    assert line.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() else line
    return proc, line


class Remote:
    def __init__(self, url: str, api_key: str):
        self.base_url, self.api_key = url, api_key


def test_the_process_survives_sigkill_mid_session(tmp_path):
    proc, url = start_process(tmp_path)
    try:
        remote = Remote(url, (tmp_path / "api_key").read_text().strip())
        intent = hold(remote, key="s-1:hold").json()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    port = int(url.rsplit(":", 1)[1])
    proc, url2 = start_process(tmp_path, port=port)
    try:
        assert url2 == url
        assert get(remote, f"{PI}/{intent['id']}").json()["status"] == "requires_capture"
        captured = post(remote, f"{PI}/{intent['id']}/capture", {"amount_to_capture": 10}, "c")
        assert captured.json()["status"] == "succeeded"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_command_line_injects_faults(tmp_path):
    proc, url = start_process(tmp_path, "--fault", "500x2", "--fault", "insufficient_funds")
    try:
        remote = Remote(url, (tmp_path / "api_key").read_text().strip())
        assert [hold(remote, key="k").status_code for _ in range(3)] == [500, 500, 402]
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_command_reads_its_key_file(tmp_path):
    key_file = tmp_path / "gw.key"
    key_file.write_text("sk_test_from_file\n")
    proc, url = start_process(tmp_path / "data", "--api-key-file", str(key_file))
    try:
        assert hold(Remote(url, "sk_test_from_file")).ok
        assert hold(Remote(url, "sk_test_other"), key="x").status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("argv, words", [(["--host", "0.0.0.0"], "not a loopback address"),
                                         (["--fault", "boom"], "expected KIND or KINDxN")])
def test_the_command_refuses_bad_arguments(capsys, argv, words):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2 and words in capsys.readouterr().err
