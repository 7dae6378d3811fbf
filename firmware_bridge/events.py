"""What the board tells the controller, as frozen dataclasses.

``Board`` turns protocol messages (firmware_bridge/protocol.py) into these and hands them to
its ``on_event`` callback from the link's reader thread, in MCU event order, each exactly once
(gaps are filled by replay before anything later is delivered). Callers put them on their
own queue; they must not block in the callback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """The identify handshake's answer: who the board is and what it can do."""
    protocol_version: str
    firmware_version: str
    board_serial: str
    boot_id: int
    reset_reason: str
    shelves: int
    cells_per_shelf: int
    has_temperature: bool
    max_frame: int
    max_unlock_ms: int
    port: str = ""


@dataclass(frozen=True)
class DoorOpened:
    at: float                 # host monotonic time the event was handled


@dataclass(frozen=True)
class DoorClosed:
    at: float


@dataclass(frozen=True)
class LockChanged:
    engaged: bool
    # engaging: command | pulse ended | host heartbeat stopped | door closed | boot | resync;
    # releasing: command | manual key | power glitch | unknown | resync
    reason: str
    at: float
    unlock_id: int | None = None    # the releasing Unlock's seq, when the board names it (1.1)


@dataclass(frozen=True)
class ChannelLockChanged:
    """A compartment's own lock (MCU lock channel 1..) engaged or released."""
    channel: int
    engaged: bool
    reason: str               # as LockChanged's
    at: float


@dataclass(frozen=True)
class UncommandedUnlock:
    """The lock released and this host did not command it: a tamper alarm. ``cause`` is what
    the MCU reported (manual key, power glitch, unknown; ``command`` for an Unlock this host
    did not send) or ``unknown`` where the board cannot say (protocol 1.0) or the release was
    only seen in a resync. Delivered once per release, also when its event came by replay or
    after an MCU reset. ``source``: ``event`` (the MCU's LockChange) or ``resync`` (found in
    a GetState after events were lost)."""
    cause: str
    at: float
    event_seq: int | None       # the MCU's event number (None when found by a resync)
    boot_id: int
    source: str = "event"
    unlock_id: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class LockRelease:
    """One release as ``Board.releases()`` keeps it, commanded or not (cabinet-diag shows
    them)."""
    cause: str
    commanded: bool
    at: float
    unlock_id: int | None
    event_seq: int | None
    source: str


@dataclass(frozen=True)
class ForcedDoor:
    """The door opened while the lock was engaged: an alarm."""
    at: float


@dataclass(frozen=True)
class Fault:
    code: str                 # cell_not_ready, cell_saturated, cell_stuck, event_gap_lost, ...
    detail: str
    shelf: int | None = None


@dataclass(frozen=True)
class McuReset:
    """The MCU rebooted (a new boot id). The link has re-identified and resynced."""
    identity: Identity


@dataclass(frozen=True)
class LinkLost:
    port: str
    reason: str


@dataclass(frozen=True)
class LinkRestored:
    port: str
    identity: Identity


@dataclass(frozen=True)
class TemperatureAlarm:
    temperature_c: float
    low_c: float
    high_c: float


@dataclass(frozen=True)
class TemperatureNormal:
    temperature_c: float


BoardEvent = (DoorOpened | DoorClosed | LockChanged | ChannelLockChanged | UncommandedUnlock
              | ForcedDoor | Fault
              | McuReset | LinkLost | LinkRestored | TemperatureAlarm | TemperatureNormal)
