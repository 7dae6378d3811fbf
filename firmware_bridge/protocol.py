"""The MCU wire protocol: bytes in, messages out, and back. No I/O happens here.

A frame on the wire is ``0x00 COBS(msg_id:u8 | seq:u32le | payload | crc16:u16le) 0x00``.
COBS removes every zero from the body, so 0x00 only ever marks frame edges and the parser
resynchronises at the next zero after any garbage. The leading zero flushes debug text or
line noise that came before the frame. CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF,
``binascii.crc_hqx``) covers id, seq and payload.

The parser follows klippy/msgproto.py ``check_packet``: given a buffer it answers "need
more", "skip N bad bytes" or "a frame of N bytes" (see ``check_frame``). ``Decoder.feed``
loops over that answer and counts bad bytes instead of raising, so no input can crash it.
Messages are frozen dataclasses; ``seq`` is the command sequence for commands and replies,
the event number for events, and 0 for heartbeats. docs/protocol.md is the full spec.
"""
from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, fields
from typing import ClassVar

from cobs import cobs

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 1                  # 1.1: LockChange carries the releasing command's seq
PROTOCOL_VERSION = (PROTOCOL_MAJOR << 8) | PROTOCOL_MINOR
MAX_BODY = 250                      # id + seq + payload + crc, before COBS
MAX_ENCODED = MAX_BODY + MAX_BODY // 254 + 2
_HEADER = struct.Struct("<BI")
SEQ_MASK = 0xFFFFFFFF

# Ack status codes
OK, REFUSED, UNKNOWN_COMMAND, GONE, BAD_ARGS = 0, 1, 2, 3, 4
STATUS_NAMES = {OK: "ok", REFUSED: "refused", UNKNOWN_COMMAND: "unknown command",
                GONE: "gone", BAD_ARGS: "bad arguments"}
# Lock change reasons. 0..4 since 1.0; 5..7 (1.1) are releases the host did not command.
BY_COMMAND, PULSE_END, HOST_SILENT, AT_BOOT, DOOR_SHUT = 0, 1, 2, 3, 4
MANUAL_KEY, POWER_GLITCH, UNKNOWN_RELEASE = 5, 6, 7
LOCK_REASONS = {BY_COMMAND: "command", PULSE_END: "pulse ended",
                HOST_SILENT: "host heartbeat stopped", AT_BOOT: "boot",
                DOOR_SHUT: "door closed", MANUAL_KEY: "manual key",
                POWER_GLITCH: "power glitch", UNKNOWN_RELEASE: "unknown"}
NO_RELEASE = 0xFF                   # StateReply.last_release_reason: no release since boot
# what the simulator's uncommanded_unlock fault and the docs call each uncommanded cause
RELEASE_CAUSES = {"manual_key": MANUAL_KEY, "power_glitch": POWER_GLITCH,
                  "unknown": UNKNOWN_RELEASE}
# Reset reasons reported by Identify
RESET_REASONS = {0: "power-on", 1: "software", 2: "watchdog", 3: "brown-out", 4: "pin"}
# Fault codes the MCU reports
FAULT_CODES = {1: "cell_not_ready", 2: "cell_ready", 3: "lock_coil", 4: "rx_overflow"}
# WeightBatch status
CELL_OK, CELL_NOT_READY = 0, 1
ADC_MAX = (1 << 23) - 1             # 24-bit signed ADC rails (HX711-style)
ADC_MIN = -(1 << 23)


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


class ProtocolError(ValueError):
    """A body with a valid CRC whose payload does not match its message layout."""


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")[:64]
    return bytes([len(b)]) + b


def _unpack_str(buf: bytes, off: int) -> tuple[str, int]:
    n = buf[off]
    end = off + 1 + n
    if end > len(buf):
        raise ProtocolError("string runs past the end of the frame")
    return buf[off + 1:end].decode("utf-8", "replace"), end


@dataclass(frozen=True)
class Message:
    """Base of every message. Subclasses declare ID, a struct layout for their fixed fields
    and optionally a trailing variable part (a string or a counts tuple)."""
    ID: ClassVar[int] = 0
    FIXED: ClassVar[struct.Struct] = struct.Struct("<")
    TAIL: ClassVar[tuple[str, ...]] = ()  # trailing variable fields: "str" | "counts"
    # Fixed fields a minor version appended (the dataclass's last fields, after TAIL's): a peer
    # of an older minor sends a payload without them, which decodes to their defaults.
    EXT: ClassVar[struct.Struct] = struct.Struct("<")
    EXT_SINCE: ClassVar[int] = 1        # the minor version that added EXT
    KIND: ClassVar[str] = "command"     # command | reply | event | heartbeat
    seq: int = 0

    @classmethod
    def _ext_count(cls) -> int:
        return len(cls.EXT.unpack(bytes(cls.EXT.size)))

    def payload(self, minor: int = PROTOCOL_MINOR) -> bytes:
        """The payload as a peer of protocol 1.``minor`` sends it (EXT only from EXT_SINCE)."""
        names = [f.name for f in fields(self)][1:]
        n_ext = self._ext_count()
        ext_names = names[len(names) - n_ext:]
        names = names[:len(names) - n_ext]
        split = len(names) - len(self.TAIL)
        out = self.FIXED.pack(*(int(getattr(self, n)) for n in names[:split]))
        for kind, name in zip(self.TAIL, names[split:]):
            value = getattr(self, name)
            if kind == "str":
                out += _pack_str(value)
            else:
                out += bytes([len(value)]) + struct.pack(f"<{len(value)}i", *value)
        if ext_names and minor >= self.EXT_SINCE:
            out += self.EXT.pack(*(int(getattr(self, n)) for n in ext_names))
        return out

    @classmethod
    def from_payload(cls, seq: int, buf: bytes) -> "Message":
        n = cls.FIXED.size
        if len(buf) < n:
            raise ProtocolError(f"{cls.__name__}: payload of {len(buf)} bytes, need {n}")
        values = list(cls.FIXED.unpack_from(buf, 0))
        names = [f.name for f in fields(cls)][1:]
        n_ext = cls._ext_count()
        names = names[:len(names) - len(cls.TAIL) - n_ext]
        types = [f.type for f in fields(cls)][1:]
        values = [bool(v) if t in (bool, "bool") else v for v, t in zip(values, types)]
        off = n
        for kind in cls.TAIL:
            if off >= len(buf):
                raise ProtocolError(f"{cls.__name__}: payload ends before its {kind} field")
            if kind == "str":
                s, off = _unpack_str(buf, off)
                values.append(s)
                continue
            k = buf[off]
            end = off + 1 + 4 * k
            if end > len(buf):
                raise ProtocolError(f"{cls.__name__}: {k} samples run past the frame")
            values.append(tuple(struct.unpack_from(f"<{k}i", buf, off + 1)))
            off = end
        if n_ext and len(buf) - off == cls.EXT.size:      # a peer of EXT_SINCE or newer
            values.extend(cls.EXT.unpack_from(buf, off))
            off = len(buf)
        if off != len(buf):
            raise ProtocolError(f"{cls.__name__}: {len(buf) - off} trailing bytes")
        return cls(seq, *values) if names else cls(seq)


# ---- host -> MCU commands -------------------------------------------------------------
@dataclass(frozen=True)
class Identify(Message):
    ID = 0x01
    FIXED = struct.Struct("<HI")
    host_version: int = PROTOCOL_VERSION
    nonce: int = 0


@dataclass(frozen=True)
class Configure(Message):
    ID = 0x02
    FIXED = struct.Struct("<III")
    host_timeout_ms: int = 3000
    heartbeat_ms: int = 1000
    sample_hz: int = 25


@dataclass(frozen=True)
class Ping(Message):
    ID = 0x03


@dataclass(frozen=True)
class Unlock(Message):
    ID = 0x04
    FIXED = struct.Struct("<I")
    pulse_ms: int = 0


@dataclass(frozen=True)
class UnlockChannel(Message):
    """Release a compartment's own lock (channel 1.., e.g. the age-restricted goods' door) for
    ``pulse_ms``; channel 0, the main door, is ``Unlock``'s. A board without that channel
    answers REFUSED. Its engage and release come as ``ChannelLockChange`` events."""
    ID = 0x09
    FIXED = struct.Struct("<BI")
    channel: int = 1
    pulse_ms: int = 0


@dataclass(frozen=True)
class Lock(Message):
    ID = 0x05


@dataclass(frozen=True)
class GetState(Message):
    ID = 0x06


@dataclass(frozen=True)
class ReplayEvents(Message):
    ID = 0x07
    FIXED = struct.Struct("<I")
    from_seq: int = 1


@dataclass(frozen=True)
class Reboot(Message):
    ID = 0x08


# ---- MCU -> host replies (seq = the command's seq) ------------------------------------
@dataclass(frozen=True)
class Ack(Message):
    ID = 0x81
    KIND = "reply"
    FIXED = struct.Struct("<B")
    TAIL = ("str",)
    status: int = OK
    detail: str = ""


@dataclass(frozen=True)
class IdentifyReply(Message):
    ID = 0x82
    KIND = "reply"
    FIXED = struct.Struct("<HIBBBBHII")
    TAIL = ("str", "str")
    protocol_version: int = PROTOCOL_VERSION
    boot_id: int = 0
    reset_reason: int = 0
    shelves: int = 0
    cells_per_shelf: int = 0
    has_temperature: bool = False
    max_frame: int = MAX_BODY
    max_unlock_ms: int = 0
    last_event_seq: int = 0
    firmware_version: str = ""
    board_serial: str = ""


@dataclass(frozen=True)
class StateReply(Message):
    """The board's state. The 1.1 fields count the lock's releases since boot and say how the
    last one came about (``last_release_reason`` NO_RELEASE: none yet, or a 1.0 board)."""
    ID = 0x83
    KIND = "reply"
    FIXED = struct.Struct("<IIIBBIh")
    EXT = struct.Struct("<HBII")
    boot_id: int = 0
    uptime_ms: int = 0
    last_event_seq: int = 0
    lock_engaged: bool = True
    door_open: bool = False
    unlock_remaining_ms: int = 0
    temperature_centi: int = 0
    releases: int = 0
    last_release_reason: int = 0xFF
    last_release_unlock_seq: int = 0
    last_release_uptime_ms: int = 0


# ---- MCU -> host unsequenced ------------------------------------------------------------
@dataclass(frozen=True)
class Heartbeat(StateReply):
    ID = 0xA0
    KIND = "heartbeat"


# ---- MCU -> host events (seq = event number, from 1 each boot) -------------------------
@dataclass(frozen=True)
class DoorChange(Message):
    ID = 0xA1
    KIND = "event"
    FIXED = struct.Struct("<BI")
    open: bool = False
    uptime_ms: int = 0


@dataclass(frozen=True)
class LockChange(Message):
    """The lock engaged or released, and why. ``unlock_seq`` (1.1) is the seq of the Unlock
    command that released it (0: not released by a command, or a 1.0 board that cannot say)."""
    ID = 0xA2
    KIND = "event"
    FIXED = struct.Struct("<BB")
    EXT = struct.Struct("<I")
    engaged: bool = True
    reason: int = BY_COMMAND
    unlock_seq: int = 0


@dataclass(frozen=True)
class ChannelLockChange(Message):
    """A compartment's lock (channel 1..) engaged or released, and why (LOCK_REASONS)."""
    ID = 0xA6
    KIND = "event"
    FIXED = struct.Struct("<BBB")
    channel: int = 1
    engaged: bool = True
    reason: int = BY_COMMAND


@dataclass(frozen=True)
class DoorForced(Message):
    ID = 0xA3
    KIND = "event"
    FIXED = struct.Struct("<I")
    uptime_ms: int = 0


@dataclass(frozen=True)
class FaultReport(Message):
    ID = 0xA4
    KIND = "event"
    FIXED = struct.Struct("<BB")
    TAIL = ("str",)
    code: int = 0
    shelf: int = 0
    detail: str = ""


@dataclass(frozen=True)
class WeightBatch(Message):
    ID = 0xA5
    KIND = "event"
    FIXED = struct.Struct("<BBI")
    TAIL = ("counts",)
    shelf: int = 0
    status: int = CELL_OK
    uptime_ms: int = 0
    counts: tuple[int, ...] = ()


MESSAGES: dict[int, type[Message]] = {
    m.ID: m for m in (Identify, Configure, Ping, Unlock, Lock, GetState, ReplayEvents, Reboot,
                      Ack, IdentifyReply, StateReply, Heartbeat, DoorChange, LockChange,
                      DoorForced, FaultReport, WeightBatch, UnlockChannel, ChannelLockChange)}
COMMANDS = {name: m for m in MESSAGES.values() if m.KIND == "command"
            for name in [m.__name__.lower()]}


def encode_body(msg: Message, minor: int = PROTOCOL_MINOR) -> bytes:
    body = _HEADER.pack(msg.ID, msg.seq & SEQ_MASK) + msg.payload(minor)
    body += crc16(body).to_bytes(2, "little")
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{type(msg).__name__} is {len(body)} bytes, over {MAX_BODY}")
    return body


def encode(msg: Message, minor: int = PROTOCOL_MINOR) -> bytes:
    """One message as wire bytes, delimiters included, as a peer of 1.``minor`` sends it."""
    return b"\x00" + cobs.encode(encode_body(msg, minor)) + b"\x00"


def decode_body(body: bytes) -> Message:
    """A CRC-checked body (id..crc) to a message; raises ProtocolError when malformed."""
    if len(body) < _HEADER.size + 2:
        raise ProtocolError(f"frame of {len(body)} bytes is shorter than a header")
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        raise ProtocolError("CRC mismatch")
    msg_id, seq = _HEADER.unpack_from(body, 0)
    cls = MESSAGES.get(msg_id)
    if cls is None:
        raise ProtocolError(f"unknown message id 0x{msg_id:02x}")
    return cls.from_payload(seq, body[_HEADER.size:-2])


def check_frame(buf: bytes | bytearray) -> tuple[int, bytes | None]:
    """klippy-style answer for the head of ``buf``: (0, None) need more; (-n, None) skip n
    bytes (a lone 0x00 delimiter is -1 and is not garbage); (n, body) a frame of n bytes
    (delimiter included) whose COBS and CRC checked out."""
    end = buf.find(0)
    if end < 0:
        return (-len(buf), None) if len(buf) > MAX_ENCODED else (0, None)
    if end == 0:
        return -1, None
    if end > MAX_ENCODED:
        return -(end + 1), None
    try:
        body = cobs.decode(bytes(buf[:end]))
    except cobs.DecodeError:
        return -(end + 1), None
    if len(body) < _HEADER.size + 2 or crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        return -(end + 1), None
    return end + 1, body


@dataclass(frozen=True)
class Received:
    """One frame off the wire: its raw bytes and the message (None when the CRC was good
    but the content was not a message we know: a newer MCU, or a bug)."""
    raw: bytes
    message: Message | None
    error: str = ""


class Decoder:
    """Incremental parser: ``feed(bytes) -> list[Received]``. Never raises on input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.bad_bytes = 0
        self.frames = 0
        self.invalid_frames = 0

    def feed(self, data: bytes) -> list[Received]:
        self._buf += data
        out: list[Received] = []
        buf = self._buf
        while buf:
            n, body = check_frame(buf)
            if n == 0:
                break
            if n < 0:
                skipped = -n
                if not (skipped == 1 and buf[0] == 0):
                    # garbage up to and including its terminating zero; the zero itself is
                    # a delimiter, not a bad byte
                    self.bad_bytes += skipped - (1 if buf[skipped - 1] == 0 else 0)
                del buf[:skipped]
                continue
            raw = bytes(buf[:n])
            del buf[:n]
            self.frames += 1
            try:
                out.append(Received(raw, decode_body(body)))
            except (ProtocolError, struct.error, UnicodeDecodeError) as e:
                self.invalid_frames += 1
                out.append(Received(raw, None, str(e)))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
