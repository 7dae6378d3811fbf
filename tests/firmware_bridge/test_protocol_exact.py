"""The codec, exactly: wire bytes, CRCs, size limits, parser answers and error texts.

test_codec.py checks round trips and robustness with hypothesis; a round trip cannot see a
codec that is wrong in the same way both ways, nor an off-by-one at a limit. These tests pin
what docs/protocol.md specifies, computed here from the spec (binascii's CRC-16/CCITT-FALSE and
the cobs package), so a mutant of firmware_bridge/protocol.py has to change a byte to survive.
"""
from __future__ import annotations

import binascii
import struct

import pytest
from cobs import cobs

from firmware_bridge import protocol as P


def frame(msg_id: int, seq: int, payload: bytes) -> tuple[bytes, bytes]:
    """(body, wire bytes) built from the spec, not from the codec under test."""
    body = bytes([msg_id]) + seq.to_bytes(4, "little") + payload
    body += binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")
    return body, b"\x00" + cobs.encode(body) + b"\x00"


# --- CRC and whole frames -------------------------------------------------------------------

def test_crc16_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1      # the published check value
    assert P.crc16(b"") == 0xFFFF               # the initial value
    assert P.crc16(b"\x03\x01\x00\x00\x00") == 0x896A


def test_ping_on_the_wire_byte_for_byte():
    assert P.encode(P.Ping(seq=1)) == bytes.fromhex("00 03 03 01 01 01 03 6a 89 00")


def test_unlock_on_the_wire_byte_for_byte():
    assert P.encode(P.Unlock(seq=7, pulse_ms=1500)) == bytes.fromhex(
        "00 03 04 07 01 01 03 dc 05 01 03 44 4f 00")


def test_encode_body_is_id_seq_payload_crc():
    body, _ = frame(0x04, 7, struct.pack("<I", 1500))
    assert P.encode_body(P.Unlock(seq=7, pulse_ms=1500)) == body


def test_seq_is_masked_to_32_bits():
    body, wire = frame(0x03, 5, b"")
    assert P.encode(P.Ping(seq=(1 << 32) + 5)) == wire
    assert P.encode_body(P.Ping(seq=(1 << 32) + 5)) == body


# --- payload layouts ------------------------------------------------------------------------

@pytest.mark.parametrize("msg, payload", [
    (P.Identify(seq=1, host_version=0x0102, nonce=0xDEADBEEF), struct.pack("<HI", 0x0102, 0xDEADBEEF)),
    (P.Configure(seq=2, host_timeout_ms=3000, heartbeat_ms=1000, sample_hz=25),
     struct.pack("<III", 3000, 1000, 25)),
    (P.Ping(seq=3), b""),
    (P.Lock(seq=4), b""),
    (P.GetState(seq=5), b""),
    (P.Reboot(seq=6), b""),
    (P.ReplayEvents(seq=7, from_seq=42), struct.pack("<I", 42)),
    (P.Ack(seq=8, status=P.REFUSED, detail="door open"), b"\x01\x09door open"),
    (P.Ack(seq=9), b"\x00\x00"),
    (P.StateReply(seq=10, boot_id=3, uptime_ms=1234, last_event_seq=9, lock_engaged=False,
                  door_open=True, unlock_remaining_ms=700, temperature_centi=-250,
                  releases=2, last_release_reason=P.MANUAL_KEY, last_release_unlock_seq=0,
                  last_release_uptime_ms=1200),
     struct.pack("<IIIBBIh", 3, 1234, 9, 0, 1, 700, -250) + struct.pack("<HBII", 2, 5, 0, 1200)),
    (P.DoorChange(seq=11, open=True, uptime_ms=99), struct.pack("<BI", 1, 99)),
    (P.LockChange(seq=12, engaged=False, reason=P.HOST_SILENT), b"\x00\x02" + bytes(4)),
    (P.LockChange(seq=12, engaged=False, reason=P.BY_COMMAND, unlock_seq=0x01020304),
     b"\x00\x00\x04\x03\x02\x01"),
    (P.DoorForced(seq=13, uptime_ms=5), struct.pack("<I", 5)),
    (P.FaultReport(seq=14, code=3, shelf=2, detail="coil"), b"\x03\x02\x04coil"),
    (P.WeightBatch(seq=15, shelf=1, status=P.CELL_NOT_READY, uptime_ms=400, counts=(-1, 8388607)),
     b"\x01\x01" + struct.pack("<I", 400) + b"\x02" + struct.pack("<2i", -1, 8388607)),
    (P.IdentifyReply(seq=16, protocol_version=0x0100, boot_id=7, reset_reason=2, shelves=3,
                     cells_per_shelf=4, has_temperature=True, max_frame=250, max_unlock_ms=9000,
                     last_event_seq=12, firmware_version="fw-1.2", board_serial="SN9"),
     struct.pack("<HIBBBBHII", 0x0100, 7, 2, 3, 4, 1, 250, 9000, 12) + b"\x06fw-1.2\x03SN9"),
])
def test_payload_layout_and_its_decoding(msg, payload):
    assert msg.payload() == payload
    body, wire = frame(msg.ID, msg.seq, payload)
    assert P.encode(msg) == wire
    assert P.decode_body(body) == msg


def test_message_ids_and_kinds_are_the_spec():
    assert {i: (m.__name__, m.KIND) for i, m in P.MESSAGES.items()} == {
        0x01: ("Identify", "command"), 0x02: ("Configure", "command"), 0x03: ("Ping", "command"),
        0x04: ("Unlock", "command"), 0x05: ("Lock", "command"), 0x06: ("GetState", "command"),
        0x07: ("ReplayEvents", "command"), 0x08: ("Reboot", "command"),
        0x81: ("Ack", "reply"), 0x82: ("IdentifyReply", "reply"), 0x83: ("StateReply", "reply"),
        0xA0: ("Heartbeat", "heartbeat"), 0xA1: ("DoorChange", "event"),
        0xA2: ("LockChange", "event"), 0xA3: ("DoorForced", "event"),
        0xA4: ("FaultReport", "event"), 0xA5: ("WeightBatch", "event"),
        0x09: ("UnlockChannel", "command"), 0xA6: ("ChannelLockChange", "event")}


def test_booleans_decode_as_booleans():
    body, _ = frame(0xA0, 0, struct.pack("<IIIBBIh", 1, 2, 3, 1, 0, 0, 0))
    hb = P.decode_body(body)
    assert type(hb) is P.Heartbeat
    assert hb.lock_engaged is True and hb.door_open is False
    assert type(hb.boot_id) is int and hb.boot_id == 1
    body, _ = frame(0xA1, 4, struct.pack("<BI", 1, 10))
    door = P.decode_body(body)
    assert door.open is True and door.seq == 4 and door.uptime_ms == 10


def test_strings_are_cut_at_64_bytes():
    msg = P.Ack(seq=1, status=P.OK, detail="x" * 100)
    assert msg.payload() == b"\x00\x40" + b"x" * 64
    assert P.decode_body(P.encode_body(msg)).detail == "x" * 64
    assert P.Ack(seq=1, detail="y" * 64).payload() == b"\x00\x40" + b"y" * 64


def test_strings_decode_utf8_and_replace_bad_bytes():
    body, _ = frame(0x81, 1, b"\x00\x03\xc3\xa9!")
    assert P.decode_body(body).detail == "é!"
    body, _ = frame(0x81, 1, b"\x00\x02\xff!")
    assert P.decode_body(body).detail == "\ufffd!"


def test_two_strings_in_one_tail():
    body, _ = frame(0x82, 1, struct.pack("<HIBBBBHII", 256, 0, 0, 0, 0, 0, 250, 0, 0)
                    + b"\x00\x02ab")
    reply = P.decode_body(body)
    assert (reply.firmware_version, reply.board_serial) == ("", "ab")


# --- size limit -----------------------------------------------------------------------------

def test_a_body_of_exactly_max_body_is_encoded():
    msg = P.WeightBatch(seq=1, counts=tuple(range(59)))   # 5 + 6 + 1 + 4*59 + 2 = 250
    assert len(P.encode_body(msg)) == P.MAX_BODY == 250
    assert P.Decoder().feed(P.encode(msg))[0].message == msg


def test_a_body_over_max_body_is_refused_with_its_size():
    with pytest.raises(P.ProtocolError) as e:
        P.encode_body(P.WeightBatch(seq=1, counts=tuple(range(60))))
    assert str(e.value) == "WeightBatch is 254 bytes, over 250"
    with pytest.raises(P.ProtocolError):
        P.encode(P.WeightBatch(seq=1, counts=tuple(range(60))))


# --- malformed bodies -----------------------------------------------------------------------

def test_shortest_body_is_header_and_crc():
    body, _ = frame(0x03, 9, b"")
    assert len(body) == 7 and P.decode_body(body) == P.Ping(seq=9)
    with pytest.raises(P.ProtocolError) as e:
        P.decode_body(body[:6])
    assert str(e.value) == "frame of 6 bytes is shorter than a header"


def test_crc_mismatch_is_refused():
    body, _ = frame(0x03, 9, b"")
    for bad in (body[:-2] + bytes([body[-2] ^ 1, body[-1]]), body[:-1] + bytes([body[-1] ^ 0x80])):
        with pytest.raises(P.ProtocolError, match="^CRC mismatch$"):
            P.decode_body(bad)


def test_unknown_message_id_is_named_in_hex():
    body, _ = frame(0x7F, 1, b"")
    with pytest.raises(P.ProtocolError) as e:
        P.decode_body(body)
    assert str(e.value) == "unknown message id 0x7f"


@pytest.mark.parametrize("msg_id, payload, text", [
    (0x04, b"\x01\x02", "Unlock: payload of 2 bytes, need 4"),
    (0x04, b"\x01\x02\x03\x04\x05", "Unlock: 1 trailing bytes"),
    (0x03, b"\x00", "Ping: 1 trailing bytes"),
    (0x81, b"\x00", "Ack: payload ends before its str field"),
    (0x81, b"\x00\x05abc", "string runs past the end of the frame"),
    (0x81, b"\x00\x01ab", "Ack: 1 trailing bytes"),
    (0xA5, b"\x00\x00" + bytes(4), "WeightBatch: payload ends before its counts field"),
    (0xA5, b"\x00\x00" + bytes(4) + b"\x03" + bytes(8), "WeightBatch: 3 samples run past the frame"),
    (0xA5, b"\x00\x00" + bytes(4) + b"\x01" + bytes(5), "WeightBatch: 1 trailing bytes"),
    (0x82, struct.pack("<HIBBBBHII", 1, 0, 0, 0, 0, 0, 0, 0, 0) + b"\x00",
     "IdentifyReply: payload ends before its str field"),
    (0xA2, b"\x00\x00\x01\x02", "LockChange: 2 trailing bytes"),    # a cut 1.1 field
    (0xA2, b"\x00\x00" + bytes(5), "LockChange: 5 trailing bytes"),
])
def test_malformed_payloads_name_the_message_and_the_fault(msg_id, payload, text):
    body, _ = frame(msg_id, 1, payload)
    with pytest.raises(P.ProtocolError) as e:
        P.decode_body(body)
    assert str(e.value) == text


def test_a_string_that_ends_exactly_at_the_frame_end_is_read():
    body, _ = frame(0x81, 1, b"\x00\x03abc")
    assert P.decode_body(body) == P.Ack(seq=1, status=0, detail="abc")


def test_counts_that_end_exactly_at_the_frame_end_are_read():
    body, _ = frame(0xA5, 2, b"\x02\x00" + struct.pack("<I", 7) + b"\x01" + struct.pack("<i", -5))
    assert P.decode_body(body) == P.WeightBatch(seq=2, shelf=2, status=0, uptime_ms=7,
                                                counts=(-5,))


# --- check_frame's answers ------------------------------------------------------------------

def test_check_frame_needs_more_until_a_delimiter_or_too_long():
    assert P.check_frame(b"") == (0, None)
    assert P.check_frame(b"\x05\x01") == (0, None)
    assert P.MAX_ENCODED == 252
    assert P.check_frame(b"\x11" * 252) == (0, None)
    assert P.check_frame(b"\x11" * 253) == (-253, None)
    assert P.check_frame(bytearray(b"\x11" * 300)) == (-300, None)


def test_check_frame_lone_delimiter_is_minus_one():
    assert P.check_frame(b"\x00") == (-1, None)
    assert P.check_frame(b"\x00\x00\x05") == (-1, None)


def test_check_frame_answers_a_frame_with_its_length_and_body():
    body, wire = frame(0x03, 1, b"")
    assert P.check_frame(wire[1:]) == (len(wire) - 1, body)
    assert P.check_frame(bytearray(wire[1:] + b"\x07\x07")) == (len(wire) - 1, body)


def test_check_frame_skips_an_overlong_run_to_its_delimiter():
    assert P.check_frame(b"\x11" * 253 + b"\x00") == (-254, None)


def test_check_frame_skips_bad_cobs_bad_crc_and_short_bodies_with_their_delimiter():
    assert P.check_frame(b"\x05\x01\x00") == (-3, None)                 # COBS says 4 more bytes
    body, wire = frame(0x03, 1, b"")
    broken = cobs.encode(body[:-1] + bytes([body[-1] ^ 1])) + b"\x00"
    assert P.check_frame(broken) == (-len(broken), None)                # CRC
    short = cobs.encode(b"\x03\x01\x00\x00\x00\x00") + b"\x00"          # 6 bytes, no room for CRC
    assert P.check_frame(short) == (-len(short), None)


def test_check_frame_takes_a_body_of_header_and_crc_only():
    body, wire = frame(0x03, 0, b"")
    assert len(body) == P._HEADER.size + 2
    assert P.check_frame(wire[1:]) == (len(wire) - 1, body)


# --- the decoder ----------------------------------------------------------------------------

def test_decoder_delivers_raw_bytes_and_message():
    wire = P.encode(P.Unlock(seq=7, pulse_ms=1500))
    d = P.Decoder()
    got = d.feed(wire)
    assert got == [P.Received(wire[1:], P.Unlock(seq=7, pulse_ms=1500), "")]
    assert (d.frames, d.invalid_frames, d.bad_bytes, d.pending) == (1, 0, 0, 0)


def test_decoder_counts_garbage_but_not_its_delimiter():
    d = P.Decoder()
    got = d.feed(b"\x01\x02\x03\x00" + P.encode(P.Ping(seq=2)))
    assert [r.message for r in got] == [P.Ping(seq=2)]
    assert (d.bad_bytes, d.frames, d.invalid_frames) == (3, 1, 0)


def test_decoder_counts_one_bad_byte_before_a_delimiter():
    d = P.Decoder()
    assert d.feed(b"\x05\x00") == []
    assert d.bad_bytes == 1 and d.pending == 0


def test_decoder_counts_an_overlong_run_without_delimiter_whole():
    d = P.Decoder()
    assert d.feed(b"\x11" * 300) == []
    assert d.bad_bytes == 300 and d.pending == 0
    assert d.feed(P.encode(P.Ping(seq=1)))[0].message == P.Ping(seq=1)
    assert d.bad_bytes == 300


def test_decoder_lone_delimiters_are_not_bad_bytes():
    d = P.Decoder()
    assert d.feed(b"\x00\x00\x00") == []
    assert (d.bad_bytes, d.frames, d.pending) == (0, 0, 0)


def test_decoder_keeps_a_partial_frame_until_the_rest_arrives():
    wire = P.encode(P.ReplayEvents(seq=3, from_seq=10))
    d = P.Decoder()
    assert d.feed(wire[:6]) == []
    assert d.pending == 5                       # the leading delimiter is consumed
    got = d.feed(wire[6:])
    assert [r.message for r in got] == [P.ReplayEvents(seq=3, from_seq=10)]
    assert d.pending == 0 and d.frames == 1


def test_decoder_reports_a_good_crc_with_bad_content_as_invalid():
    _, wire = frame(0x7F, 1, b"")
    _, short = frame(0x04, 2, b"\x01")
    d = P.Decoder()
    got = d.feed(wire + short + P.encode(P.Ping(seq=3)))
    assert got == [P.Received(wire[1:], None, "unknown message id 0x7f"),
                   P.Received(short[1:], None, "Unlock: payload of 1 bytes, need 4"),
                   P.Received(P.encode(P.Ping(seq=3))[1:], P.Ping(seq=3), "")]
    assert (d.frames, d.invalid_frames, d.bad_bytes) == (3, 2, 0)


def test_decoder_reports_a_truncated_fixed_part_as_invalid():
    _, wire = frame(0x82, 1, b"\x01")
    d = P.Decoder()
    got = d.feed(wire)
    assert got[0].message is None
    assert got[0].error == "IdentifyReply: payload of 1 bytes, need 20"
    assert d.invalid_frames == 1


def test_decoder_many_frames_in_one_feed_in_order():
    msgs = [P.DoorChange(seq=i, open=bool(i % 2), uptime_ms=i * 10) for i in range(1, 6)]
    d = P.Decoder()
    got = d.feed(b"".join(P.encode(m) for m in msgs))
    assert [r.message for r in got] == msgs
    assert d.frames == 5


def test_check_frame_decodes_a_one_byte_chunk_rather_than_skipping_one_byte():
    assert P.check_frame(b"\x01\x00") == (-2, None)     # COBS of an empty body: too short
    assert P.check_frame(b"\x05\x00\x00") == (-2, None)  # COBS error, skipped with its zero


def test_check_frame_accepts_up_to_max_encoded_bytes():
    # a 251-byte body (one over MAX_BODY, which only the encoder enforces) encodes to 252
    payload = bytes(range(1, 245))
    body = bytes([0x7E, 1, 2, 3, 4]) + payload
    body += binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")
    assert len(body) == 251 and 0 not in body
    enc = cobs.encode(body)
    assert len(enc) == P.MAX_ENCODED
    assert P.check_frame(enc + b"\x00") == (P.MAX_ENCODED + 1, body)


def test_check_frame_skips_a_crc_valid_body_shorter_than_a_header():
    short = b"\x03\x01\x00\x00"
    short += binascii.crc_hqx(short, 0xFFFF).to_bytes(2, "little")
    wire = cobs.encode(short) + b"\x00"
    assert P.check_frame(wire) == (-len(wire), None)
    d = P.Decoder()
    assert d.feed(b"\x00" + wire) == [] and d.frames == 0
    assert d.bad_bytes == len(wire) - 1


def test_decoder_adds_up_bad_bytes_across_runs_and_feeds():
    d = P.Decoder()
    d.feed(b"\x01\x02\x00\x03\x00")
    assert d.bad_bytes == 3
    d.feed(b"\x04\x05\x06\x00")
    assert d.bad_bytes == 6
