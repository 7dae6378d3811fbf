"""The fleet wire contract (cabinet/fleet/messages.py): topics, envelopes, ids, signatures."""
from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from hypothesis import given, strategies as st

from cabinet.fleet import messages as m

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def up(**over):
    fields = dict(id=m.session_message_id("cab-1", "s-1"), cabinet="cab-1", kind="session",
                  seq=7, at=T0, body={"session_id": "s-1", "outcome": "charged", "total": 350})
    fields.update(over)
    return m.UpMessage(**fields)


def test_topics_follow_the_contract():
    assert m.up_topic("cab-1", "receipt") == "cabinet/cab-1/up/receipt"
    assert m.status_topic("cab-1") == "cabinet/cab-1/status"
    assert m.down_topic("cab-1", "command") == "cabinet/cab-1/down/command"
    assert m.region_down_topic("tokyo", "faces") == "region/tokyo/down/faces"
    assert m.cabinet_client_id("cab-1") == "cabinet-cab-1"
    assert m.backoffice_client_id("abc") == "fleet-abc"
    assert m.backoffice_client_id().startswith("fleet-") and len(m.backoffice_client_id()) > 20
    assert m.BACKOFFICE_UP_SUBSCRIPTION == "$share/fleet/cabinet/+/up/#"
    assert m.BACKOFFICE_STATUS_SUBSCRIPTION == "$share/fleet/cabinet/+/status"
    assert m.parse_up_topic("cabinet/cab-1/up/alarm") == ("cab-1", "alarm")
    assert m.parse_status_topic("cabinet/cab-1/status") == "cab-1"
    assert m.parse_down_topic("region/tokyo/down/prices") == ("region", "tokyo", "prices")


@pytest.mark.parametrize("bad, field", [
    ("cab/1", "cabinet_id"), ("cab+", "cabinet_id"), ("", "cabinet_id"), ("a b", "cabinet_id")])
def test_a_cabinet_id_that_is_not_one_topic_level_is_refused(bad, field):
    with pytest.raises(m.MessageError) as e:
        m.up_topic(bad, "session")
    assert e.value.field == field


@pytest.mark.parametrize("topic", ["cabinet/cab-1/up", "cabinet/cab-1/down/session",
                                   "cabinet/cab-1/up/sales", "other/cab-1/up/session"])
def test_a_topic_outside_the_contract_is_refused(topic):
    with pytest.raises(m.MessageError, match="topic"):
        m.parse_up_topic(topic)


def test_message_ids_come_from_the_facts_own_keys():
    assert m.session_message_id("cab-1", "s-9") == "cab-1/session/s-9"
    assert m.receipt_message_id("cab-1", "s-9") == "cab-1/receipt/s-9"
    assert m.receipt_message_id("cab-1", "s-9", 2) == "cab-1/receipt/s-9.2"
    assert m.inventory_message_id("cab-1", 41) == "cab-1/inventory/41"
    assert m.alarm_message_id("cab-1", 3, "raise") == "cab-1/alarm/3.raise"
    assert m.alarm_message_id("cab-1", 3, "clear") == "cab-1/alarm/3.clear"
    # health is keyed by its second: two reports in one second are the same message
    later = T0 + dt.timedelta(microseconds=900_000)
    assert m.health_message_id("cab-1", later) == m.health_message_id("cab-1", T0) \
        == "cab-1/health/20260301T120000Z"
    with pytest.raises(m.MessageError, match="'transition'"):
        m.alarm_message_id("cab-1", 3, "ack")
    with pytest.raises(m.MessageError, match="'session_id'"):
        m.session_message_id("cab-1", "a/b")


def test_up_round_trip_is_exact():
    msg = up(at=T0 + dt.timedelta(microseconds=1234))
    raw = m.encode_up(msg)
    obj = json.loads(raw)
    assert obj == {"v": 1, "id": "cab-1/session/s-1", "cabinet": "cab-1", "kind": "session",
                   "seq": 7, "at": "2026-03-01T12:00:00.001234Z",
                   "body": {"session_id": "s-1", "outcome": "charged", "total": 350}}
    assert m.decode_up(raw, topic="cabinet/cab-1/up/session") == msg


@given(seq=st.integers(min_value=1, max_value=2**53),
       name=st.text(min_size=1, max_size=20).filter(str.strip),
       micros=st.integers(min_value=0, max_value=10**12))
def test_up_round_trip_holds_for_any_seq_text_and_time(seq, name, micros):
    msg = m.UpMessage(id=m.inventory_message_id("c", seq), cabinet="c", kind="inventory",
                      seq=seq, at=T0 + dt.timedelta(microseconds=micros),
                      body={"move_id": seq, "slot": name, "sku": "x", "qty": -1, "kind": "sale"})
    assert m.decode_up(m.encode_up(msg)) == msg


def _mutated(**over):
    obj = json.loads(m.encode_up(up()))
    for key, value in over.items():
        if value is KeyError:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize("payload, field", [
    (b"\xff\xfe", "payload"),
    (b"[1, 2]", "payload"),
    (b"{not json", "payload"),
    (_mutated(v=2), "v"),
    (_mutated(v=True), "v"),
    (_mutated(seq=0), "seq"),
    (_mutated(seq="7"), "seq"),
    (_mutated(seq=KeyError), "seq"),
    (_mutated(at="2026-03-01T12:00:00"), "at"),
    (_mutated(at="2026-03-01T21:00:00+09:00"), "at"),
    (_mutated(at="yesterday"), "at"),
    (_mutated(kind="sales"), "kind"),
    (_mutated(cabinet="cab/2"), "cabinet"),
    (_mutated(id="cab-2/session/s-1"), "id"),
    (_mutated(id="cab-1/session/"), "id"),
    (_mutated(body=[]), "body"),
    (_mutated(body={"session_id": "s-1"}), "body.outcome"),
    (_mutated(extra=1), "extra"),
])
def test_a_malformed_up_message_names_its_field(payload, field):
    with pytest.raises(m.MessageError) as e:
        m.decode_up(payload)
    assert e.value.field == field
    assert repr(field) in str(e.value)


def test_an_up_message_on_another_cabinets_topic_is_refused():
    with pytest.raises(m.MessageError) as e:
        m.decode_up(m.encode_up(up()), topic="cabinet/cab-2/up/session")
    assert e.value.field == "cabinet"
    with pytest.raises(m.MessageError) as e:
        m.decode_up(m.encode_up(up()), topic="cabinet/cab-1/up/receipt")
    assert e.value.field == "kind"


@pytest.mark.parametrize("kind, body, field", [
    ("receipt", {"session_id": "s", "total": "3.50", "currency": "EUR"}, "body.total"),
    ("alarm", {"alarm_id": 1, "alarm": "door", "transition": "ack"}, "body.transition"),
    ("health", {"in_service": "yes"}, "body.in_service"),
    ("inventory", {"move_id": 1, "slot": "A1", "sku": "x", "kind": "sale"}, "body.qty"),
])
def test_each_up_kind_checks_its_body(kind, body, field):
    msg = m.UpMessage(id=f"c/{kind}/1", cabinet="c", kind=kind, seq=1, at=T0, body=body)
    with pytest.raises(m.MessageError) as e:
        m.encode_up(msg)
    assert e.value.field == field


def test_status_round_trip_and_refusal():
    raw = m.encode_status("offline", T0)
    assert json.loads(raw) == {"status": "offline", "at": "2026-03-01T12:00:00Z"}
    assert m.decode_status(raw) == m.StatusMessage("offline", T0)
    with pytest.raises(m.MessageError) as e:
        m.decode_status(b'{"status": "away", "at": "2026-03-01T12:00:00Z"}')
    assert e.value.field == "status"


# --- down --------------------------------------------------------------------------------
KEY = m.new_signing_key()


def signed(**over):
    fields = dict(id="cmd-1", kind="command", body={"command": "out_of_service",
                                                    "reason": "cleaning"},
                  issued_at=T0, ttl_s=300)
    fields.update(over)
    return m.sign_down(KEY, **fields)


def test_a_signed_down_message_round_trips_and_verifies():
    msg = signed()
    raw = m.encode_down(msg)
    obj = json.loads(raw)
    assert obj["expires_at"] == "2026-03-01T12:05:00Z" and obj["v"] == 1
    # the signature covers exactly the canonical JSON of the envelope without "sig"
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    KEY.public_key().verify(base64.b64decode(obj["sig"]), canonical)
    back = m.decode_down(raw, topic="cabinet/cab-1/down/command")
    assert back == msg
    m.check_down(back, KEY.public_key(), T0 + dt.timedelta(seconds=10), applied=set())


def test_a_tampered_body_fails_the_signature():
    obj = json.loads(m.encode_down(signed()))
    obj["body"]["command"] = "back_in_service"
    msg = m.decode_down(json.dumps(obj).encode())
    with pytest.raises(m.DownRefused) as e:
        m.check_down(msg, KEY.public_key(), T0, applied=set())
    assert e.value.reason == "bad_signature"


def test_another_key_fails_the_signature():
    with pytest.raises(m.DownRefused) as e:
        m.check_down(signed(), m.new_signing_key().public_key(), T0, applied=set())
    assert e.value.reason == "bad_signature"


def test_an_expired_message_is_refused_at_its_expiry_not_before():
    msg = signed(ttl_s=60)
    m.check_down(msg, KEY.public_key(), T0 + dt.timedelta(seconds=59.999), applied=set())
    with pytest.raises(m.DownRefused) as e:
        m.check_down(msg, KEY.public_key(), T0 + dt.timedelta(seconds=60), applied=set())
    assert e.value.reason == "expired"


def test_an_applied_id_is_a_replay():
    with pytest.raises(m.DownRefused) as e:
        m.check_down(signed(), KEY.public_key(), T0, applied={"cmd-1"})
    assert e.value.reason == "replay"


@pytest.mark.parametrize("kind, body, field", [
    ("command", {"command": "self_destruct"}, "body.command"),
    ("command", {"command": "reboot_mcu", "force": True}, "force"),
    ("standing", {"account_id": 3, "action": "block"}, "body.reason"),
    ("standing", {"account_id": 0, "action": "unblock"}, "body.account_id"),
    ("faces", {"account_id": 3, "name": "Ann", "templates": ["%%%"]}, "body.templates[0]"),
    ("faces", {"account_id": 3, "name": "Ann", "templates": "abc"}, "body.templates"),
    ("planogram", {"planogram": ""}, "body.planogram"),
    ("prices", {"prices": {"cola": 1.5}}, "body.prices.cola"),
    ("prices", {"prices": {}}, "body.prices"),
    ("resend", {"from_seq": 0, "to_seq": 4}, "body.from_seq"),
    ("resend", {"from_seq": 5, "to_seq": 4}, "body.to_seq"),
    ("resend", {"from_seq": 1, "to_seq": m.MAX_RESEND_SPAN + 1}, "body.to_seq"),
    ("resend", {"from_seq": 1}, "to_seq"),
    ("resend", {"from_seq": 1, "to_seq": 2, "all": True}, "all"),
])
def test_each_down_kind_checks_its_body(kind, body, field):
    with pytest.raises(m.MessageError) as e:
        signed(kind=kind, body=body)
    assert e.value.field == field


def test_a_resend_order_round_trips_up_to_its_span():
    msg = signed(kind="resend", body={"from_seq": 7, "to_seq": 6 + m.MAX_RESEND_SPAN})
    assert m.decode_down(m.encode_down(msg), topic=m.down_topic("cab-1", "resend")) == msg


@pytest.mark.parametrize("change, field", [
    ({"sig": "not base64!"}, "sig"),
    ({"expires_at": "2026-03-01T11:00:00Z"}, "expires_at"),
    ({"kind": "coffee"}, "kind"),
    ({"id": ""}, "id"),
    ({"v": 0}, "v"),
])
def test_a_malformed_down_message_names_its_field(change, field):
    obj = json.loads(m.encode_down(signed()))
    obj.update(change)
    with pytest.raises(m.MessageError) as e:
        m.decode_down(json.dumps(obj).encode())
    assert e.value.field == field


def test_a_down_message_on_another_kinds_topic_is_refused():
    with pytest.raises(m.MessageError) as e:
        m.decode_down(m.encode_down(signed()), topic="cabinet/cab-1/down/prices")
    assert e.value.field == "kind"


def test_keys_round_trip_through_pem_and_a_wrong_file_is_named():
    pem = m.public_key_pem(KEY)
    assert m.verify_signature(signed(), m.load_public_key(pem, "fleet.pub"))
    assert m.public_key_pem(m.load_private_key(m.private_key_pem(KEY), "k")) == pem
    with pytest.raises(m.CabinetError, match="fleet.pub: not a PEM public key"):
        m.load_public_key(b"hello", "fleet.pub")
