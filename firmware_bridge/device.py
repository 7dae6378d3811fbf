"""``Board``: the MCU as the controller and ``cabinet-diag`` see it.

Board sits on a ``Link`` (firmware_bridge/link.py) as its listener. Numbered MCU events
arrive here in order, exactly once, on the link's reader thread: door and lock changes become
``events.py`` dataclasses for ``on_event`` (LinkLost, LinkRestored and McuReset come from the
link's keeper thread; ``on_event`` must only queue them); weight batches feed one ``ShelfFilter`` per shelf
(firmware_bridge/loadcell.py); heartbeats refresh the temperature and its alarm. After an MCU
reset the link re-identifies and Board compares a fresh ``GetState`` with what it believed,
announcing ``McuReset`` and any lock/door change the reboot caused. Commands are blocking
calls that return once the MCU has executed and acknowledged them.

Time comes from ``clock`` (firmware_bridge/clock.py; the system clock by default), handed to
the Link too: ``wait_stable``'s window, the reboot deadline, request deadlines, heartbeats and
reconnects all follow it, so a test that passes a ManualClock drives them with ``advance``.
"""
from __future__ import annotations

import logging
import struct
import threading
from collections import deque
from dataclasses import dataclass, fields
from typing import Callable

from . import events as E
from . import protocol as P
from .clock import Clock, clock_or_system
from .errors import (CommandRefused, LinkDown, LinkError, PortBusy, PortNotFound,
                     ProtocolVersionMismatch)
from .link import Link, LinkCounters, Trace
from .loadcell import (Calibration, CalibrationError, ShelfCalibration, ShelfFilter,
                       ShelfReading)
from .ports import PortFinder

__all__ = ["Board", "BoardState", "Identity", "ShelfReading", "ShelfStats", "Calibration",
           "LinkCounters", "LinkError", "PortNotFound", "PortBusy", "LinkDown",
           "CommandRefused", "ProtocolVersionMismatch"]
Identity = E.Identity
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardState:
    lock_engaged: bool
    door_open: bool
    unlock_remaining_ms: int
    temperature_c: float | None
    last_event_seq: int
    shelves: tuple[ShelfReading, ...]
    boot_id: int = 0
    uptime_ms: int = 0
    releases: int | None = None             # lock releases since boot (None: a 1.0 board)
    last_release_cause: str | None = None   # how the last one came about (None: none yet)
    last_release_unlock_id: int | None = None
    last_release_ago_ms: int | None = None


@dataclass(frozen=True)
class _SentUnlock:
    seq: int
    sent_at: float
    until: float                # after this a release is no longer this unlock's doing


@dataclass(frozen=True)
class ShelfStats:
    """Per-shelf diagnostics for the technician."""
    shelf: int
    samples: int
    sample_hz: float
    spikes: int
    saturated_samples: int
    not_ready_batches: int
    noise_g: float


class Board:
    def __init__(self, port: str, *, timeout_s: float = 1.0,
                 calibration: Calibration | None = None,
                 on_event: Callable[[object], None] | None = None,
                 finder: PortFinder | None = None, on_trace: Trace | None = None,
                 temperature_limits: tuple[float, float] | None = (0.0, 8.0),
                 heartbeat_s: float = 0.5, mcu_heartbeat_s: float = 1.0,
                 host_timeout_s: float = 3.0, missed_heartbeats: int = 3,
                 reconnect: bool = True, reconnect_max_s: float = 2.0, sample_hz: int = 25,
                 stable_window_s: float = 1.0, stable_band_g: float = 2.0,
                 zero_hold_s: float = 3.0, clock: Clock | None = None,
                 settle_samples: int = 10) -> None:
        self.port = port
        self.clock = clock_or_system(clock)
        self.timeout_s = timeout_s
        self.on_event = on_event
        self.temperature_limits = temperature_limits
        self.sample_hz = sample_hz
        self._cal = calibration or Calibration({})
        self._filter_opts = dict(sample_hz=sample_hz, window_s=stable_window_s,
                                 stable_band_g=stable_band_g, zero_hold_s=zero_hold_s,
                                 settle_samples=settle_samples)
        self._link = Link(port, self, finder=finder, timeout_s=timeout_s,
                          heartbeat_s=heartbeat_s, mcu_heartbeat_s=mcu_heartbeat_s,
                          host_timeout_s=host_timeout_s, missed_heartbeats=missed_heartbeats,
                          sample_hz=sample_hz, reconnect=reconnect,
                          reconnect_max_s=reconnect_max_s, on_trace=on_trace, clock=self.clock)
        self._identity: Identity | None = None
        self._filters: dict[int, ShelfFilter] = {}
        self._lock_engaged = True
        self._door_open = False
        self._last_hb: P.Heartbeat | None = None
        self._temp_alarm = False
        self._faulted: set[tuple[str, int]] = set()
        self._baseline: dict[int, ShelfReading] = {}
        self._changed = threading.Event()       # set whenever the link (re)identifies
        self._lost_announced = False
        # releases: the unlocks this host sent (by seq), whether the current release of the
        # lock has been judged commanded or not, and the recent releases for cabinet-diag
        self._unlock_lock = threading.Lock()
        self._sent_unlocks: deque[_SentUnlock] = deque(maxlen=64)
        self._release_judged = True
        self._releases: deque[E.LockRelease] = deque(maxlen=32)
        self._minor = P.PROTOCOL_MINOR
        # what tells a release whose event was lost for good: the MCU's release count (1.1)
        # against the releases seen this boot, compared once every event up to a heartbeat's
        # last one has arrived; for a 1.0 board, a resync's released lock, judged once the
        # events the MCU had sent by then have arrived (the release's own event may be one)
        self._last_seq = 0                      # the last MCU event delivered (this boot)
        self._release_count: int | None = None  # releases since boot accounted for (1.1)
        self._resync_check: tuple[int, str] | None = None   # (MCU's last event, what was lost)

    # ---- lifecycle -----------------------------------------------------------------------
    def open(self) -> Identity:
        self._link.open()
        assert self._identity is not None
        return self._identity

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> "Board":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise LinkDown(f"Board on {self.port}: not open; call open() first")
        return self._identity

    def set_trace(self, on_trace: Trace | None) -> None:
        """Raw frame hook: (direction 'rx'|'tx', wall time, raw bytes, message or None)."""
        self._link.on_trace = on_trace

    # ---- commands ------------------------------------------------------------------------
    def _who(self) -> str:
        serial_no = self._identity.board_serial if self._identity else "?"
        return f"Board {serial_no} on {self._link.port}"

    def _ack(self, msg: P.Message, what: str, timeout_s: float | None = None,
             on_send: Callable[[int], None] | None = None) -> P.Message:
        reply = self._link.request(msg, timeout_s, on_send=on_send)
        if isinstance(reply, P.Ack) and reply.status != P.OK:
            raise CommandRefused(f"{self._who()}: {what} refused "
                                 f"({P.STATUS_NAMES.get(reply.status, reply.status)}): "
                                 f"{reply.detail}")
        return reply

    def state(self) -> BoardState:
        r = self._link.request(P.GetState())
        if not isinstance(r, P.StateReply):
            raise LinkDown(f"{self._who()}: answered GetState with {type(r).__name__}")
        return self._state_from(r)

    def _state_from(self, r: P.StateReply) -> BoardState:
        temp = None if r.temperature_centi == -32768 else r.temperature_centi / 100
        releases = cause = unlock_id = ago = None
        if self._minor >= 1:
            releases = r.releases
            if r.last_release_reason != P.NO_RELEASE:
                cause = _cause_name(r.last_release_reason)
                unlock_id = r.last_release_unlock_seq or None
                ago = max(0, (r.uptime_ms - r.last_release_uptime_ms) & P.SEQ_MASK)
        return BoardState(r.lock_engaged, r.door_open, r.unlock_remaining_ms, temp,
                          r.last_event_seq, tuple(self.weights().values()), r.boot_id,
                          r.uptime_ms, releases, cause, unlock_id, ago)

    def unlock(self, pulse_ms: int, channel: int = 0) -> None:
        """Release the lock for ``pulse_ms``; returns once the MCU has done it. The MCU
        relocks by itself when the pulse ends (or when this host stops sending heartbeats).
        The command's seq is recorded before it is sent: the MCU's release event names it,
        which is how a commanded release is told from an ``UncommandedUnlock``.

        ``channel`` 1.. releases a compartment's own lock (e.g. the age-restricted goods'
        door) instead of the main door's; its changes come as ``ChannelLockChanged``."""
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 255:
            raise ValueError(f"{self._who()}: lock channel {channel!r} must be 0 (the main "
                             f"door) or a compartment's channel 1..255")
        if channel:
            pulse_ms = int(pulse_ms)
            reply = self._link.request(P.UnlockChannel(channel=channel, pulse_ms=pulse_ms))
            if isinstance(reply, P.Ack) and reply.status != P.OK:
                raise CommandRefused(f"{self._who()}: unlock of lock channel {channel} for "
                                     f"{pulse_ms} ms refused "
                                     f"({P.STATUS_NAMES.get(reply.status, reply.status)}): "
                                     f"{reply.detail}")
            return
        self._baseline = {s: f.last_stable for s, f in self._filters.items() if f.last_stable}
        pulse_ms = int(pulse_ms)
        reply = self._link.request(P.Unlock(pulse_ms=pulse_ms),
                                   on_send=lambda seq: self._sent_unlock(seq, pulse_ms))
        if isinstance(reply, P.Ack) and reply.status != P.OK:
            raise CommandRefused(f"{self._who()}: unlock for {pulse_ms} ms refused "
                                 f"({P.STATUS_NAMES.get(reply.status, reply.status)}): "
                                 f"{reply.detail}")

    def releases(self) -> tuple[E.LockRelease, ...]:
        """The lock releases seen since open (the last 32), commanded or not, oldest first."""
        with self._unlock_lock:
            return tuple(self._releases)

    def _sent_unlock(self, seq: int, pulse_ms: int) -> None:
        now = self.clock.monotonic()
        # the MCU runs it at the latest by the request's deadline; its pulse ends after that
        until = now + self.timeout_s + max(0, pulse_ms) / 1000 + 0.5
        with self._unlock_lock:
            self._sent_unlocks.append(_SentUnlock(seq, now, until))

    def lock(self) -> None:
        self._ack(P.Lock(), "lock")

    def reboot(self, timeout_s: float = 5.0) -> Identity:
        """Reboot the MCU and wait (``timeout_s`` of clock time in all) until the link has
        re-identified it under a new boot id. The Reboot's ack may be lost to the very reset
        it announces (the link drops a request in flight when it sees the new boot id): the
        new boot id is the answer then, and only a board that does not come back fails."""
        old = self.identity.boot_id
        deadline = self.clock.monotonic() + timeout_s
        self._changed.clear()
        sent: list[int] = []
        unacked: LinkDown | None = None
        try:
            self._ack(P.Reboot(), "reboot", on_send=sent.append)
        except LinkDown as e:
            if not sent:                        # never reached the board: nothing to wait for
                raise
            unacked = e
        while self.identity.boot_id == old or not self._link.up:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                why = f" (the reboot was not acknowledged: {unacked})" if unacked else ""
                raise LinkDown(f"{self._who()}: did not come back within {timeout_s} s "
                               f"after reboot{why}") from unacked
            self.clock.wait(self._changed, left)
            self._changed.clear()
        return self.identity

    def raw_command(self, name: str, **args: object) -> P.Message:
        """Send any command by name (``ping``, ``get_state``, ``unlock pulse_ms=500``...)."""
        key = name.replace("_", "").replace("-", "").lower()
        cls = P.COMMANDS.get(key)
        if cls is None:
            raise CommandRefused(f"unknown command {name!r}; known: "
                                 f"{', '.join(sorted(P.COMMANDS))}")
        names = {f.name for f in fields(cls)} - {"seq"}
        bad = set(args) - names
        if bad:
            raise CommandRefused(f"command {name!r} has no argument {', '.join(sorted(bad))}; "
                                 f"it takes: {', '.join(sorted(names)) or 'nothing'}")
        try:
            msg = cls(0, **{k: int(v) for k, v in args.items()})
            P.encode(msg)
        except (ValueError, TypeError, OverflowError, struct.error, P.ProtocolError) as e:
            raise CommandRefused(f"command {name!r}: bad arguments: {e}") from None
        if isinstance(msg, P.Unlock):                   # a technician's unlock is commanded too
            pulse = msg.pulse_ms
            return self._link.request(msg, on_send=lambda seq: self._sent_unlock(seq, pulse))
        return self._link.request(msg)

    def counters(self) -> LinkCounters:
        return self._link.counters()

    # ---- load cells ----------------------------------------------------------------------
    def _filter(self, shelf: int) -> ShelfFilter:
        f = self._filters.get(shelf)
        if f is None:
            raise CommandRefused(f"{self._who()}: no shelf {shelf}; this board has shelves "
                                 f"0..{len(self._filters) - 1}")
        return f

    def weights(self) -> dict[int, ShelfReading]:
        return {s: f.reading() for s, f in sorted(self._filters.items())}

    def wait_stable(self, shelves: list[int] | None = None,
                    timeout_s: float = 3.0) -> dict[int, ShelfReading]:
        """Settled readings of ``shelves`` (all by default) from samples taken after this
        call; a shelf that does not settle within ``timeout_s`` comes back with
        ``stable=False``. A sample reaches the filtered value up to a batch plus the filter's
        lag (about 8 sample periods) after it is taken, so readings stamped earlier than that
        after the call are not taken as settled. For an immediate answer use ``weights()``."""
        wanted = list(self._filters) if shelves is None else list(shelves)
        for s in wanted:
            self._filter(s)
        clock = self.clock
        start = clock.monotonic() + 8 / self.sample_hz
        out: dict[int, ShelfReading] = {}
        while True:
            for s in wanted:
                r = self._filters[s].reading()
                if s not in out and r.stable and r.at > start:
                    out[s] = r
            if len(out) == len(wanted) or clock.monotonic() - start >= timeout_s - 8 / self.sample_hz:
                break
            clock.sleep(0.02)
        return {s: out.get(s) or self._filters[s].reading() for s in wanted}

    def samples(self, shelf: int, reading: ShelfReading | None = None) -> tuple[float, ...]:
        """The raw samples (grams, oldest first, before any filtering) of the window `reading`
        rests on (a reading of this shelf from ``weights()`` or ``wait_stable()``; default: the
        shelf's reading now): for a settled reading, the samples its settle test passed on.
        The filter keeps about two stability windows of samples, so ask soon after the
        reading; older samples are gone and fewer come back. Safe from any thread."""
        f = self._filter(shelf)
        r = f.reading() if reading is None else reading
        if r.shelf != shelf:
            raise ValueError(f"{self._who()}: a reading of shelf {r.shelf} asked for the "
                             f"samples of shelf {shelf}")
        return f.raw_samples(r.since, r.at)

    def baseline(self) -> dict[int, ShelfReading]:
        """The last stable reading of each shelf before the most recent unlock."""
        return dict(self._baseline)

    def tare(self, shelf: int, timeout_s: float = 3.0) -> ShelfCalibration:
        self.wait_stable([shelf], timeout_s)
        try:
            return self._filter(shelf).tare()
        except CalibrationError as e:
            raise CommandRefused(f"{self._who()}: {e}") from None

    def calibrate(self, shelf: int, grams: float, timeout_s: float = 3.0) -> ShelfCalibration:
        self.wait_stable([shelf], timeout_s)
        try:
            return self._filter(shelf).calibrate(grams)
        except CalibrationError as e:
            raise CommandRefused(f"{self._who()}: {e}") from None

    def calibration(self) -> Calibration:
        serial_no = self._identity.board_serial if self._identity else ""
        return Calibration({s: f.calibration() for s, f in self._filters.items()}, serial_no)

    def load_calibration(self, cal: Calibration) -> None:
        self._cal = cal
        for s, f in self._filters.items():
            c = cal.for_shelf(s)
            f.tare_counts, f.counts_per_gram = c.tare_counts, c.counts_per_gram

    def shelf_stats(self, shelf: int) -> ShelfStats:
        f = self._filter(shelf)
        win = [v for _, v in f._window]
        noise = (max(win) - min(win)) / abs(f.counts_per_gram) / 4 if len(win) > 2 else 0.0
        return ShelfStats(shelf, f.samples, self.sample_hz, f.spikes, f.saturated_samples,
                          f.not_ready_batches, noise)

    # ---- link listener (called from the link's threads) ----------------------------------
    def _emit(self, ev: object) -> None:
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:                               # a caller bug must not kill the link
                log.exception("%s: on_event callback failed for %r", self._who(), ev)

    def link_up(self, ident: P.IdentifyReply, *, reset: bool, restored: bool) -> None:
        self._minor = ident.protocol_version & 0xFF
        self._identity = Identity(
            f"{ident.protocol_version >> 8}.{ident.protocol_version & 0xFF}",
            ident.firmware_version, ident.board_serial, ident.boot_id,
            P.RESET_REASONS.get(ident.reset_reason, f"code {ident.reset_reason}"),
            ident.shelves, ident.cells_per_shelf, ident.has_temperature, ident.max_frame,
            ident.max_unlock_ms, self._link.port)
        for s in range(ident.shelves):
            if s not in self._filters:
                self._filters[s] = ShelfFilter(s, self._cal.for_shelf(s), **self._filter_opts)
        try:
            st = self._link.request(P.GetState())
        except LinkDown:
            st = None
        if reset:
            self._emit(E.McuReset(self._identity))
        if restored and self._lost_announced:
            self._lost_announced = False
            self._emit(E.LinkRestored(self._link.port, self._identity))
        if isinstance(st, P.StateReply):
            now = self.clock.monotonic()
            if reset and st.lock_engaged != self._lock_engaged:
                self._emit(E.LockChanged(st.lock_engaged, "resync", now))
            if reset and st.door_open != self._door_open:
                self._emit(E.DoorOpened(now) if st.door_open else E.DoorClosed(now))
            if reset:
                # a released lock after a reboot was released in the new boot: its event is
                # replayed from the new boot's ring and judged then (or, if the ring lost it,
                # by the release count or the resync check)
                self._release_judged = st.lock_engaged
            if reset or not restored:
                first_seq = 0 if reset else ident.last_event_seq
                self._last_seq, self._resync_check = first_seq, None
                self._release_count = (0 if reset else st.releases) if self._minor >= 1 \
                    else None
            if reset or not restored:
                self._lock_engaged, self._door_open = st.lock_engaged, st.door_open
                for f in self._filters.values():
                    f.door(not st.door_open, now)
        self._changed.set()

    def link_lost(self, reason: str) -> None:
        self._lost_announced = True
        self._emit(E.LinkLost(self._link.port, reason))

    def link_events_lost(self, first: int, last: int) -> None:
        self._emit(E.Fault("event_gap_lost", f"{self._who()}: events {first}..{last} were "
                           f"overwritten before they could be replayed; state resynced"))
        try:
            hb = self._link.request(P.GetState())   # events are held back meanwhile
        except LinkDown:
            hb = self._last_hb
        if isinstance(hb, P.StateReply):
            now = self.clock.monotonic()
            if hb.door_open != self._door_open:
                self._door_open = hb.door_open
                self._emit(E.DoorOpened(now) if hb.door_open else E.DoorClosed(now))
            unjudged = not hb.lock_engaged and (self._lock_engaged or not self._release_judged)
            if hb.lock_engaged != self._lock_engaged:
                self._lock_engaged = hb.lock_engaged
                self._emit(E.LockChanged(hb.lock_engaged, "resync", now))
            if hb.lock_engaged:
                self._release_judged = True
            elif unjudged:
                self._release_judged = False
            if unjudged and self._minor < 1:
                # the release's event may still come (it may lie after the lost range): decide
                # once the events the MCU had sent by now have arrived (1.1: the count does)
                self._resync_check = (hb.last_event_seq, f"events {first}..{last} were lost")

    def link_heartbeat(self, hb: P.Heartbeat, now: float) -> None:
        self._last_hb = hb
        self._count_releases(hb, now)
        self._settle_resync(now)
        if hb.temperature_centi == -32768 or self.temperature_limits is None:
            return
        t = hb.temperature_centi / 100
        low, high = self.temperature_limits
        if not self._temp_alarm and not low <= t <= high:
            self._temp_alarm = True
            self._emit(E.TemperatureAlarm(t, low, high))
        elif self._temp_alarm and low + 0.5 <= t <= high - 0.5:
            self._temp_alarm = False
            self._emit(E.TemperatureNormal(t))

    def link_event(self, msg: P.Message, now: float) -> None:
        self._last_seq = msg.seq
        self._on_event(msg, now)
        self._settle_resync(now)

    def _on_event(self, msg: P.Message, now: float) -> None:
        if isinstance(msg, P.WeightBatch):
            f = self._filters.get(msg.shelf)
            if f is None:
                return
            if msg.status == P.CELL_NOT_READY:
                f.not_ready(now)
                return
            f.add(msg.counts, now)
            r = f.reading()
            self._fault_edge("cell_saturated", msg.shelf, r.saturated, "reads the ADC limit")
            self._fault_edge("cell_stuck", msg.shelf, r.stuck, "repeats one value")
        elif isinstance(msg, P.DoorChange):
            if msg.open == self._door_open:     # already known from a resync
                return
            self._door_open = msg.open
            for f in self._filters.values():
                f.door(not msg.open, now)
            self._emit(E.DoorOpened(now) if msg.open else E.DoorClosed(now))
        elif isinstance(msg, P.LockChange):
            if msg.engaged:
                self._release_judged = True
                if not self._lock_engaged:
                    self._lock_engaged = True
                    self._emit(E.LockChanged(True, _cause_name(msg.reason), now))
            else:
                # every release event comes here once (the link drops replayed duplicates),
                # also when a resync already showed the lock released
                if self._release_count is not None:
                    self._release_count = (self._release_count + 1) & 0xFFFF
                self._judge_release(msg.reason, msg.unlock_seq, msg.seq, now, source="event")
        elif isinstance(msg, P.ChannelLockChange):
            self._emit(E.ChannelLockChanged(msg.channel, msg.engaged, _cause_name(msg.reason),
                                            now))
        elif isinstance(msg, P.DoorForced):
            self._emit(E.ForcedDoor(now))
        elif isinstance(msg, P.FaultReport):
            code = P.FAULT_CODES.get(msg.code, f"mcu_fault_{msg.code}")
            self._emit(E.Fault(code, msg.detail, msg.shelf))

    def _count_releases(self, hb: P.Heartbeat, now: float) -> None:
        """Every event the MCU had sent by this heartbeat has arrived: releases it counts
        beyond those seen were in events lost for good (a release and its relock both inside
        a lost range leave no other trace)."""
        if self._release_count is None or self._minor < 1 or self._last_seq < hb.last_event_seq:
            return
        missed = ((hb.releases - self._release_count + 0x8000) & 0xFFFF) - 0x8000
        self._release_count = hb.releases
        for _ in range(min(missed, 16)):      # a negative or zero count: none missed
            self._judge_release(P.UNKNOWN_RELEASE, 0, None, now, source="resync",
                                lost=f"the board counts {hb.releases} release(s) since boot, "
                                     f"{missed} release(s) more than this host saw; their "
                                     f"events were lost")

    def _settle_resync(self, now: float) -> None:
        check = self._resync_check
        if check is None or self._last_seq < check[0]:
            return
        self._resync_check = None
        # the release's own event, had it come meanwhile, would have judged it
        lost = check[1]
        if not self._lock_engaged and not self._release_judged:
            self._judge_release(P.UNKNOWN_RELEASE, 0, None, now, source="resync",
                                lost=f"{lost}; the lock was found released")

    def _judge_release(self, reason: int, unlock_seq: int, event_seq: int | None, now: float,
                       *, source: str, lost: str = "") -> None:
        """Decide whether this host commanded a release, announce it (LockChanged unless a
        resync already did) and, when it did not, raise UncommandedUnlock."""
        cause = _cause_name(reason)
        detail = ""
        if reason == P.BY_COMMAND and unlock_seq:       # a 1.1 board names the Unlock's seq
            commanded = self._take_sent(lambda u: u.seq == unlock_seq)
            if not commanded:
                detail = (f"released by an Unlock with seq {unlock_seq} that this host did not "
                          f"send (another program on the port?)")
        elif reason == P.BY_COMMAND or source == "resync":
            # a 1.0 board cannot say which command, and a resync does not know: an unlock this
            # host sent whose pulse may still be running explains the release
            commanded = self._take_sent(lambda u: u.sent_at <= now <= u.until)
            if not commanded:
                cause = "unknown"
                detail = (lost if lost else
                          f"a protocol 1.{self._minor} board reports no cause for a release "
                          f"and this host sent no unlock")
        else:
            commanded = False
            detail = f"the MCU reports: {cause}"
        if commanded:
            cause = "command"
        unlock_id = unlock_seq or None
        with self._unlock_lock:
            self._releases.append(E.LockRelease(cause, commanded, now, unlock_id, event_seq,
                                                source))
        self._release_judged = True
        if source == "event" and self._lock_engaged:   # a resync announced its own
            self._lock_engaged = False
            self._emit(E.LockChanged(False, cause, now, unlock_id))
        if not commanded:
            boot_id = self._identity.boot_id if self._identity else 0
            log.warning("%s: lock released without a command: %s (%s)", self._who(), cause,
                        detail)
            self._emit(E.UncommandedUnlock(cause, now, event_seq, boot_id, source, unlock_id,
                                           f"{self._who()}: {detail}"))

    def _take_sent(self, match: Callable[[_SentUnlock], bool]) -> bool:
        with self._unlock_lock:
            for u in reversed(self._sent_unlocks):
                if match(u):
                    self._sent_unlocks.remove(u)
                    return True
        return False

    def _fault_edge(self, code: str, shelf: int, now_on: bool, what: str) -> None:
        key = (code, shelf)
        if now_on and key not in self._faulted:
            self._faulted.add(key)
            self._emit(E.Fault(code, f"{self._who()}: shelf {shelf} load cell {what}", shelf))
        elif not now_on and key in self._faulted:
            self._faulted.discard(key)


def _cause_name(reason: int) -> str:
    return P.LOCK_REASONS.get(reason, f"unknown (code {reason})")
