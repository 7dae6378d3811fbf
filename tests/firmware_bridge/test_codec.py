"""The codec alone: round trips, and no input can crash the parser."""
from __future__ import annotations

import dataclasses

from hypothesis import given, settings, strategies as st

from firmware_bridge import protocol as P

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, P.SEQ_MASK)
text = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 60)


def _tail_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.type in (str, "str") or "tuple" in str(f.type)]


def _msg_strategy():
    opts = []
    for cls in P.MESSAGES.values():
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name == "seq":
                kw[f.name] = u32
            elif f.type in (bool, "bool"):
                kw[f.name] = st.booleans()
            elif f.type in (str, "str"):
                kw[f.name] = text
            elif "tuple" in str(f.type):
                kw[f.name] = st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=40).map(tuple)
            else:
                # numeric fields: FIXED's, then (after any string/counts tail) EXT's
                fmt = cls.FIXED.format.lstrip("<") + cls.EXT.format.lstrip("<")
                names = [x.name for x in dataclasses.fields(cls)][1:]
                names = [n for n in names if n not in _tail_names(cls)]
                code = fmt[names.index(f.name)]
                kw[f.name] = {"B": u8, "H": u16, "I": u32, "h": st.integers(-32768, 32767)}[code]
        opts.append(st.builds(cls, **kw))
    return st.one_of(opts)


@settings(max_examples=300, deadline=None)
@given(_msg_strategy())
def test_every_message_round_trips(msg):
    raw = P.encode(msg)
    assert raw[0] == 0 and raw[-1] == 0 and 0 not in raw[1:-1]
    got = P.Decoder().feed(raw)
    assert [r.message for r in got] == [msg]


@settings(max_examples=300, deadline=None)
@given(_msg_strategy())
def test_a_1_0_peer_payload_decodes_with_the_1_1_fields_at_their_defaults(msg):
    old = P.Decoder().feed(P.encode(msg, minor=0))[0].message
    ext = [f.name for f in dataclasses.fields(msg)][-len(msg.EXT.format.lstrip("<")):] \
        if msg.EXT.size else []
    defaults = {f.name: f.default for f in dataclasses.fields(msg) if f.name in ext}
    assert old == dataclasses.replace(msg, **defaults)
    assert len(P.encode_body(msg, minor=0)) == len(P.encode_body(msg)) - msg.EXT.size


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_crashes_and_is_counted(data):
    d = P.Decoder()
    got = d.feed(data)
    after = d.feed(P.encode(P.Ping(7)))
    assert after[-1].message == P.Ping(7)    # a good frame still gets through afterwards
    framed = [r for r in got + after[:-1]]   # what the garbage held that passed the CRC
    # every non-delimiter byte of the garbage is either counted bad or inside such a frame
    in_frames = sum(1 for r in framed for b in r.raw if b)
    assert d.bad_bytes + in_frames == sum(1 for b in data if b)
    assert d.invalid_frames == sum(1 for r in framed if r.message is None)


@settings(max_examples=100, deadline=None)
@given(st.lists(_msg_strategy(), min_size=1, max_size=5), st.binary(max_size=50))
def test_garbage_around_frames_loses_no_frame(msgs, junk):
    d = P.Decoder()
    got = d.feed(junk + b"".join(P.encode(m) + junk for m in msgs))
    assert [r.message for r in got if r.message] == msgs


def test_split_at_every_byte():
    msgs = [P.WeightBatch(5, 1, 0, 99, (1, 2, -3)), P.Ack(3, P.REFUSED, "no"), P.Heartbeat(0)]
    raw = b"".join(P.encode(m) for m in msgs)
    d = P.Decoder()
    out = []
    for i in range(len(raw)):
        out += d.feed(raw[i:i + 1])
    assert [r.message for r in out] == msgs and d.bad_bytes == 0


def test_bad_crc_is_skipped_and_counted_then_parser_resyncs():
    good = P.encode(P.Ping(1))
    bad = bytearray(P.encode(P.Ping(2)))
    bad[-2] ^= 0x40
    d = P.Decoder()
    got = d.feed(bytes(bad) + good)
    assert [r.message for r in got] == [P.Ping(1)]
    assert d.bad_bytes == len(bad) - 2          # everything but the two delimiters


def test_oversize_frame_is_dropped_without_unbounded_buffering():
    d = P.Decoder()
    d.feed(b"\x00" + b"\x55" * 5000)
    assert d.pending <= P.MAX_ENCODED and d.bad_bytes >= 5000 - P.MAX_ENCODED
    got = d.feed(b"\x00" + P.encode(P.Ping(3)))
    assert [r.message for r in got] == [P.Ping(3)]


def test_check_frame_answers_like_klippy():
    raw = P.encode(P.Ping(1))
    assert P.check_frame(raw[1:5]) == (0, None)                  # need more
    assert P.check_frame(b"\x00abc")[0] == -1                    # a delimiter
    n, body = P.check_frame(raw[1:])
    assert n == len(raw) - 1 and P.decode_body(body) == P.Ping(1)
    assert P.check_frame(b"xyz\x00")[0] == -4                   # skip 4 bad bytes


def test_valid_crc_with_unknown_id_is_reported_not_raised():
    body = bytes([0x7E]) + (1).to_bytes(4, "little")
    body += P.crc16(body).to_bytes(2, "little")
    from cobs import cobs
    got = P.Decoder().feed(b"\x00" + cobs.encode(body) + b"\x00")
    assert got[0].message is None and "unknown message id" in got[0].error


def test_truncated_payload_with_valid_crc_is_an_invalid_frame():
    body = bytes([P.Unlock.ID]) + (1).to_bytes(4, "little") + b"\x01"
    body += P.crc16(body).to_bytes(2, "little")
    from cobs import cobs
    d = P.Decoder()
    got = d.feed(b"\x00" + cobs.encode(body) + b"\x00")
    assert got[0].message is None and d.invalid_frames == 1
