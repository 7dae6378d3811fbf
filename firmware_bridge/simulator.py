"""A simulated MCU board on a real pseudo-terminal, with fault injection.

``start()`` opens a pty pair, puts both ends in raw mode and runs the firmware loop on a
thread against the master side; the host opens the slave path with pyserial exactly as it
would a USB tty. The loop (``_run``) selects on the master fd with a short timeout and each
turn: decodes host frames, runs commands (dropping duplicates by sequence number, so a
retransmitted unlock runs once), samples the load cells at ``sample_hz`` and sends them in
batches, sends a heartbeat, ends an unlock pulse, and relocks when the host goes quiet for
``host_timeout_s``. Safety is the MCU's: a pulse longer than ``max_unlock_ms`` is refused.

The physical side (``open_door``, ``close_door``, ``set_load``/``load_fn``, ``temperature_c``)
and ``inject``/``clear`` may be called from any thread; one RLock guards the board state.
Every fault of ../shared/design/SERIAL.md is in ``FAULTS`` (docs/protocol.md lists them).

Every timer of the firmware reads ``clock`` (firmware_bridge/clock.py; the system clock by
default): the unlock pulse, the host-quiet relock watchdog, heartbeats, boot time, delayed
replies, the port's return after ``port_vanish`` and the load-cell sample schedule (so with a
ManualClock samples are taken as the test advances time, and the cells settle in clock time).
Two waits stay in real time because they pace the OS, not the firmware: the loop's select()
poll (short, so a ManualClock's advance is seen within a few real milliseconds) and the byte
gap of the ``split`` fault. ``ticked_at`` is the clock time of the loop's last turn: a test
that advances a ManualClock waits until ``ticked_at`` reaches it to know the firmware caught up.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import pty
import random
import select
import threading
import time
import termios
import tty
from collections import Counter, deque
from pathlib import Path
from typing import Callable

from . import protocol as P
from .clock import SYSTEM, Clock, clock_or_system
from .loadcell import Calibration, ShelfCalibration
from .link import port_holders
from .ports import RegistryPortFinder
from .simcells import SimCells
from .simfaults import FAULTS, FaultSet


class SimMCU:
    FAULTS = FAULTS

    def __init__(self, shelves: int = 3, *, load_fn: Callable[[int], float] | None = None,
                 seed: int = 0, counts_per_gram: float = 420.0,
                 zero_counts: tuple[int, ...] | None = None, noise_g: float = 0.3,
                 settle_s: float = 0.4, sample_hz: int = 25, batch_samples: int = 4,
                 max_unlock_ms: int = 10000, host_timeout_s: float = 3.0,
                 heartbeat_s: float = 1.0, board_serial: str = "SIM-0001",
                 firmware_version: str = "sim-1.0.0",
                 protocol_version: int = P.PROTOCOL_VERSION, has_temperature: bool = True,
                 temperature_c: float = 4.0, cells_per_shelf: int = 4, event_ring: int = 4096,
                 registry_dir: str | Path | None = None, boot_time_s: float = 0.05,
                 clock: Clock | None = None, lock_channels: int = 2) -> None:
        if shelves < 1 or shelves > 16:
            raise ValueError(f"SimMCU: shelves must be 1..16, got {shelves}")
        self.shelves = shelves
        self.clock = clock_or_system(clock)
        # real seconds the loop may block in select(): with a manual clock, short enough that
        # an advance is acted on at once
        self._poll_s = 0.05 if self.clock is SYSTEM else 0.002
        self.ticked_at = float("-inf")
        self.load_fn = load_fn or self._settable_load
        self.counts_per_gram = counts_per_gram
        self.zero_counts = tuple(zero_counts) if zero_counts else (0,) * shelves
        self.noise_g = noise_g
        self.settle_s = settle_s
        self.batch_samples = batch_samples
        self.max_unlock_ms = max_unlock_ms
        if not 1 <= lock_channels <= 4:
            raise ValueError(f"SimMCU: lock_channels must be 1..4, got {lock_channels}")
        # channel 0 is the main door's lock; 1.. compartments' own (UnlockChannel)
        self.lock_channels = lock_channels
        self.default_host_timeout_s = host_timeout_s
        self.default_heartbeat_s = heartbeat_s
        self.default_sample_hz = sample_hz
        self.board_serial = board_serial
        self.firmware_version = firmware_version
        self.protocol_version = protocol_version
        self.has_temperature = has_temperature
        self.temperature_c = temperature_c
        self.cells_per_shelf = cells_per_shelf
        self.boot_time_s = boot_time_s
        self.registry = RegistryPortFinder(registry_dir)
        self.faults = FaultSet(random.Random(seed ^ 0x5EED))
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._loads = [0.0] * shelves
        self._thread: threading.Thread | None = None
        self._running = False
        self._wake_r, self._wake_w = -1, -1
        self._master = self._slave = -1
        self._busy_fd = -1
        self._spare_pty: tuple[int, int] | None = None
        self.path = ""
        self.paths: list[str] = []
        # counters a test or the bench can read
        self._exclusive_held = False
        self._exclusive_check_at = 0.0
        self.unlocks_executed = 0
        self.uncommanded_releases = 0
        self.channel_unlocks: Counter[int] = Counter()   # compartment channel -> UnlockChannels run
        self.commands_executed = 0
        self.executed: Counter[tuple[int, int]] = Counter()     # (boot id, seq) -> runs
        self.duplicates_dropped = 0
        self.events_sent = 0
        self.boots = 0
        self.door_open = False
        self._ring: deque[P.Message] = deque(maxlen=event_ring)
        self._delayed: list[tuple[float, bytes]] = []
        self._vanish_until = 0.0
        self.cells = SimCells(shelves, lambda s: self.load_fn(s), self._rng,
                              counts_per_gram=counts_per_gram,
                              zero_counts=self.zero_counts, noise_g=noise_g, settle_s=settle_s,
                              batch_samples=batch_samples)
        self._boot(reason=0)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> str:
        with self._lock:
            if self._running:
                return self.path
            self._open_pty()
            self._wake_r, self._wake_w = os.pipe()
            self._running = True
            now = self.clock.monotonic()
            self._last_host_rx = self.boot_at = self._next_hb = self._next_sample = now
            self._booting_until = 0.0
        self._thread = threading.Thread(target=self._run, name=f"sim-mcu-{self.board_serial}",
                                        daemon=True)
        self._thread.start()
        return self.path

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
            os.write(self._wake_w, b"x")
        if self._thread:
            self._thread.join(timeout=2.0)
        with self._lock:
            self._close_pty()
            if self._spare_pty:
                for fd in self._spare_pty:
                    os.close(fd)
                self._spare_pty = None
            self._vanish_until = 0.0
            self.faults.clear("busy")
            self._release_busy()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> "SimMCU":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_pty(self) -> None:
        if self._spare_pty:
            (self._master, self._slave), self._spare_pty = self._spare_pty, None
        else:
            self._master, self._slave = pty.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.paths.append(self.path)
        self.registry.publish(self.board_serial, self.path)

    def _close_pty(self) -> None:
        self.registry.unpublish(self.board_serial, self.path)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _boot(self, reason: int) -> None:
        with self._lock:
            self.boots += 1
            self.boot_id = self._rng.getrandbits(32) | 1
            self.reset_reason = reason
            self.boot_at = self.clock.monotonic()
            self.lock_engaged = True
            self._unlock_until = 0.0
            # compartments' locks (channel -> engaged, release deadline)
            self.channel_engaged = {c: True for c in range(1, self.lock_channels)}
            self._channel_until = {c: 0.0 for c in range(1, self.lock_channels)}
            self._event_seq = 0
            self._ring.clear()
            self._delayed.clear()
            self._decoder = P.Decoder()
            self._last_cmd_seq: int | None = None
            self._last_reply = b""
            self._wire_minor = self.protocol_version & 0xFF
            self.releases = 0
            self._last_release = (P.NO_RELEASE, 0, 0)     # reason, unlock seq, uptime ms
            self.host_timeout_s = self.default_host_timeout_s
            self.heartbeat_s = self.default_heartbeat_s
            self.sample_hz = self.default_sample_hz
            self._booting_until = self.boot_at + self.boot_time_s
            self._next_hb = self._booting_until
            self._next_sample = self._booting_until
            self.cells.reset()

    # ---- the physical side ---------------------------------------------------------------
    def _settable_load(self, shelf: int) -> float:
        return self._loads[shelf]

    def set_load(self, shelf: int, grams: float) -> None:
        self._loads[shelf] = float(grams)

    def open_door(self, force: bool = False) -> bool:
        with self._lock:
            if self.door_open:
                return True
            if self.lock_engaged and not force:
                return False
            if self.lock_engaged:
                self._event(P.DoorForced(uptime_ms=self._uptime_ms()))
            self.door_open = True
            self._event(P.DoorChange(open=True, uptime_ms=self._uptime_ms()))
            return True

    def close_door(self) -> None:
        with self._lock:
            if self.door_open:
                self.door_open = False
                self._event(P.DoorChange(open=False, uptime_ms=self._uptime_ms()))
                # The latch re-engages as the door shuts: a pulse still running must not
                # let the same customer (or the next person) open it again.
                if not self.lock_engaged:
                    self._relock(P.DOOR_SHUT)

    def reboot(self, reason: str = "watchdog") -> None:
        codes = {v: k for k, v in P.RESET_REASONS.items()}
        self._boot(codes.get(reason, 2))

    def factory_calibration(self) -> Calibration:
        """The true zero and gain of the simulated cells, as a calibration file would hold."""
        return Calibration({s: ShelfCalibration(float(self.zero_counts[s]), self.counts_per_gram)
                            for s in range(self.shelves)}, self.board_serial)

    def inject(self, fault: str, **params: object) -> None:
        self.faults.inject(fault, **params)
        with self._lock:
            if fault == "reboot":
                self.faults.clear("reboot")
                self.reboot(str(params.get("reason", "watchdog")))
            elif fault == "forced_door":
                self.faults.clear("forced_door")
                self.open_door(force=True)
            elif fault == "uncommanded_unlock":
                self.faults.clear("uncommanded_unlock")
                self._uncommanded_release(str(params.get("cause", "unknown")),
                                          float(params.get("duration_s", 1.0)),
                                          int(params.get("channel", 0)))
            elif fault == "busy":
                self._hold_busy()
            elif fault == "port_vanish":
                self._vanish(float(params.get("duration_s", 1.0)))
            elif fault == "flood" and self._master >= 0:
                self.faults.clear("flood")
                for _ in range(int(params.get("count", 1000))):
                    self._event(P.WeightBatch(shelf=0, uptime_ms=self._uptime_ms(),
                                              counts=(self.cells.last_counts[0],)))
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")

    def _uncommanded_release(self, cause: str, duration_s: float, channel: int = 0) -> None:
        """The lock releases without an Unlock: the manual override key, a brown-out of the
        lock driver, or a release the firmware cannot explain. It stays released for
        ``duration_s`` (the key turned back, the coil recovered), then relocks as a pulse does;
        the door shutting relocks it sooner. A 1.0 board has no cause codes: it reports any
        release as reason 0 (command), without a command seq."""
        code = P.RELEASE_CAUSES.get(cause)
        if code is None:
            raise ValueError(f"SimMCU: uncommanded_unlock cause {cause!r} is not one of "
                             f"{', '.join(sorted(P.RELEASE_CAUSES))}")
        if self.protocol_version & 0xFF < 1:
            code = P.BY_COMMAND
        if channel:     # a compartment's own lock (channel 1..), e.g. its manual key
            if channel not in self.channel_engaged:
                raise ValueError(f"SimMCU: uncommanded_unlock channel {channel}: this board "
                                 f"has lock channels 0..{self.lock_channels - 1}")
            self.uncommanded_releases += 1
            self._channel_until[channel] = self.clock.monotonic() + max(0.0, duration_s)
            if self.channel_engaged[channel]:
                self.channel_engaged[channel] = False
                self._event(P.ChannelLockChange(channel=channel, engaged=False, reason=code))
            return
        self.uncommanded_releases += 1
        self._unlock_until = self.clock.monotonic() + max(0.0, duration_s)
        if self.lock_engaged:
            self.lock_engaged = False
            self._released(code, 0)

    def _released(self, reason: int, unlock_seq: int) -> None:
        self.releases += 1
        self._last_release = (reason, unlock_seq, self._uptime_ms())
        self._event(P.LockChange(engaged=False, reason=reason, unlock_seq=unlock_seq))

    def clear(self, fault: str | None = None) -> None:
        self.faults.clear(fault)
        if fault in (None, "busy"):
            self._release_busy()

    def _hold_busy(self) -> None:
        if self._busy_fd < 0 and self.path:
            self._busy_fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            fcntl.flock(self._busy_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.ioctl(self._busy_fd, termios.TIOCEXCL)

    def _release_busy(self) -> None:
        if self._busy_fd >= 0:
            try:
                fcntl.ioctl(self._busy_fd, termios.TIOCNXCL)
            except OSError:
                pass
            os.close(self._busy_fd)
            self._busy_fd = -1

    def _drop_stale_exclusive(self) -> bool:
        """A USB tty's exclusive flag (TIOCEXCL) goes when its last file is closed, also when
        the host was killed. This pty's slave stays open here, which would keep the flag for
        ever; so once the host has gone quiet and no other file has the tty open (a killed
        host's files are closed), the simulated board clears it as the kernel would."""
        if self._slave < 0 or self._busy_fd >= 0 or not self.path:
            return False
        if port_holders(self.path, skip_fds={(os.getpid(), self._slave),
                                             (os.getpid(), self._master)}):
            return False
        try:
            fcntl.ioctl(self._slave, termios.TIOCNXCL)
        except OSError:
            return False
        return True

    def _vanish(self, duration_s: float) -> None:
        self._release_busy()
        # take the next pty now, while the host still holds the old one, so the board comes
        # back under another name as a re-enumerated USB device does
        spare = pty.openpty()
        self._close_pty()
        self._spare_pty = spare
        self._vanish_until = self.clock.monotonic() + duration_s

    # ---- sending -------------------------------------------------------------------------
    def _uptime_ms(self) -> int:
        return int((self.clock.monotonic() - self.boot_at) * 1000) & P.SEQ_MASK

    def _event(self, msg: P.Message) -> None:
        self._event_seq += 1
        msg = dataclasses.replace(msg, seq=self._event_seq)
        self._ring.append(msg)
        self.events_sent += 1
        if self.faults.take("lose_event"):
            return
        self._tx(P.encode(msg, self._wire_minor))

    def _reply(self, raw: bytes) -> None:
        self._last_reply = raw
        if self.faults.take("lose_ack"):
            return
        delay = self.faults.param("late_reply", "delay_s", 0.3)
        if self.faults.take("late_reply"):
            self._delayed.append((self.clock.monotonic() + float(delay), raw))
            return
        self._tx(raw)

    def _tx(self, raw: bytes) -> None:
        if self._master < 0 or self.faults.active("silent") or self.clock.monotonic() < self._booting_until:
            return
        raw = self.faults.mangle_tx(raw)
        if self.faults.active("split"):
            for i in range(len(raw)):
                self._write(raw[i:i + 1])
                time.sleep(0.0002)              # real time: bytes trickle like a slow UART
        else:
            self._write(raw)

    def _write(self, raw: bytes) -> None:
        """Like a UART: waits (briefly) while the host is slow to read; when nobody reads
        at all the bytes go into the void."""
        view = memoryview(raw)
        while view:
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                if not select.select([], [self._master], [], 0.1)[1]:
                    termios.tcflush(self._slave, termios.TCIFLUSH)   # nobody is reading
                    return
            except OSError:
                return

    # ---- the firmware loop ---------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            now = self.clock.monotonic()
            with self._lock:
                if self._vanish_until and now >= self._vanish_until:
                    self._vanish_until = 0.0
                    self.faults.clear("port_vanish")
                    self._open_pty()
                deadline = min(self._next_hb, self._next_sample, now + self._poll_s)
            fds = [self._wake_r] + ([self._master] if self._master >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [],
                                            min(self._poll_s, max(0.0, deadline - now)))
            except (OSError, ValueError):
                time.sleep(0.01)                    # real time: an fd is being swapped
                continue
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            with self._lock:
                if self._master >= 0 and self._master in ready:
                    try:
                        data = os.read(self._master, 4096)
                    except (BlockingIOError, OSError):
                        data = b""
                    if data:
                        self._rx(data)
                now = self.clock.monotonic()
                self._tick(now)
                self.ticked_at = now

    def _rx(self, data: bytes) -> None:
        if self.clock.monotonic() < self._booting_until or self.faults.active("silent"):
            return
        data = self.faults.mangle_rx(data)
        for rec in self._decoder.feed(data):
            if rec.message is None or rec.message.KIND != "command":
                continue
            self._last_host_rx = self.clock.monotonic()
            self._exclusive_held = True             # a host was here: it may hold TIOCEXCL
            if self.faults.take("lose_command"):
                continue
            self._command(rec.message)

    def _command(self, msg: P.Message) -> None:
        if not isinstance(msg, P.Identify) and msg.seq == self._last_cmd_seq:
            self.duplicates_dropped += 1
            self._tx(self._last_reply)
            return
        self._last_cmd_seq = msg.seq
        self.commands_executed += 1
        self.executed[(self.boot_id, msg.seq)] += 1
        seq = msg.seq
        if isinstance(msg, P.Identify):
            # send the events' 1.x fields only to a host that knows them (docs/protocol.md)
            own = self.protocol_version & 0xFF
            same_major = msg.host_version >> 8 == self.protocol_version >> 8
            self._wire_minor = min(own, msg.host_version & 0xFF) if same_major else own
            self._reply(P.encode(P.IdentifyReply(
                seq, self.faults.param("version_mismatch", "version", self.protocol_version)
                if self.faults.active("version_mismatch") else self.protocol_version,
                self.boot_id, self.reset_reason, self.shelves, self.cells_per_shelf,
                self.has_temperature, P.MAX_BODY, self.max_unlock_ms, self._event_seq,
                self.firmware_version, self.board_serial)))
        elif isinstance(msg, P.Configure):
            self.host_timeout_s = max(0.1, msg.host_timeout_ms / 1000)
            self.heartbeat_s = min(5.0, max(0.05, msg.heartbeat_ms / 1000))
            self.sample_hz = min(100, max(1, msg.sample_hz))
            self._reply(P.encode(P.Ack(seq)))
        elif isinstance(msg, P.Unlock):
            if not 0 < msg.pulse_ms <= self.max_unlock_ms:
                self._reply(P.encode(P.Ack(seq, P.REFUSED,
                            f"pulse {msg.pulse_ms} ms is outside 1..{self.max_unlock_ms} ms")))
                return
            self.unlocks_executed += 1
            self._unlock_until = self.clock.monotonic() + msg.pulse_ms / 1000
            if self.lock_engaged:
                self.lock_engaged = False
                self._released(P.BY_COMMAND, msg.seq)
            self._reply(P.encode(P.Ack(seq)))
        elif isinstance(msg, P.UnlockChannel):
            if msg.channel not in self.channel_engaged:
                self._reply(P.encode(P.Ack(seq, P.REFUSED, f"no lock channel {msg.channel} "
                                           f"(this board has 1..{self.lock_channels - 1})"
                                           if self.lock_channels > 1 else
                                           f"no lock channel {msg.channel} on this board")))
                return
            if not 0 < msg.pulse_ms <= self.max_unlock_ms:
                self._reply(P.encode(P.Ack(seq, P.REFUSED,
                            f"pulse {msg.pulse_ms} ms is outside 1..{self.max_unlock_ms} ms")))
                return
            self._channel_until[msg.channel] = self.clock.monotonic() + msg.pulse_ms / 1000
            self.channel_unlocks[msg.channel] += 1
            if self.channel_engaged[msg.channel]:
                self.channel_engaged[msg.channel] = False
                self._event(P.ChannelLockChange(channel=msg.channel, engaged=False,
                                                reason=P.BY_COMMAND))
            self._reply(P.encode(P.Ack(seq)))
        elif isinstance(msg, P.Lock):
            self._relock(P.BY_COMMAND)
            for channel in self.channel_engaged:
                self._relock_channel(channel, P.BY_COMMAND)
            self._reply(P.encode(P.Ack(seq)))
        elif isinstance(msg, P.GetState):
            self._reply(P.encode(self._state(P.StateReply, seq), self._wire_minor))
        elif isinstance(msg, P.ReplayEvents):
            self._replay(seq, msg.from_seq)
        elif isinstance(msg, P.Reboot):
            ack = P.encode(P.Ack(seq))
            self._reply(ack)
            self._boot(reason=1)
            # kept across the software reset, as firmware keeps it in RAM the reset does not
            # clear: a retransmitted Reboot (its ack lost, or read late by a busy host) gets
            # the ack again instead of rebooting the board a second time
            self._last_cmd_seq, self._last_reply = seq, ack
        else:                                        # Ping
            self._reply(P.encode(P.Ack(seq)))

    def _replay(self, seq: int, from_seq: int) -> None:
        if from_seq <= self._event_seq:
            oldest = self._ring[0].seq if self._ring else self._event_seq + 1
            if from_seq < oldest:
                self._reply(P.encode(P.Ack(seq, P.GONE, f"oldest kept event is {oldest}")))
                return
            for msg in list(self._ring)[from_seq - oldest:]:
                self._tx(P.encode(msg, self._wire_minor))
        self._reply(P.encode(P.Ack(seq)))

    def _relock(self, reason: int) -> None:
        self._unlock_until = 0.0
        if not self.lock_engaged:
            self.lock_engaged = True
            self._event(P.LockChange(engaged=True, reason=reason))

    def _relock_channel(self, channel: int, reason: int) -> None:
        self._channel_until[channel] = 0.0
        if not self.channel_engaged[channel]:
            self.channel_engaged[channel] = True
            self._event(P.ChannelLockChange(channel=channel, engaged=True, reason=reason))

    def _state(self, cls: type, seq: int) -> P.Message:
        remaining = 0 if self.lock_engaged else max(0, int((self._unlock_until - self.clock.monotonic()) * 1000))
        temp = (round((self.temperature_c + self._rng.gauss(0, 0.03)) * 100)
                if self.has_temperature else -32768)
        return cls(seq, self.boot_id, self._uptime_ms(), self._event_seq, self.lock_engaged,
                   self.door_open, remaining, max(-32768, min(32767, temp)),
                   self.releases & 0xFFFF, *self._last_release)

    def _tick(self, now: float) -> None:
        if now < self._booting_until:
            return
        for t, raw in [d for d in self._delayed if d[0] <= now]:
            self._delayed.remove((t, raw))
            self._tx(raw)
        if not self.lock_engaged:
            if now >= self._unlock_until:
                self._relock(P.PULSE_END)
            elif now - self._last_host_rx > self.host_timeout_s:
                self._relock(P.HOST_SILENT)
        for channel, engaged in list(self.channel_engaged.items()):
            if not engaged:
                if now >= self._channel_until[channel]:
                    self._relock_channel(channel, P.PULSE_END)
                elif now - self._last_host_rx > self.host_timeout_s:
                    self._relock_channel(channel, P.HOST_SILENT)
        if self._exclusive_held and now - self._last_host_rx > self.host_timeout_s \
                and now >= self._exclusive_check_at:
            # the host is quiet: look (every host timeout) whether it is gone
            self._exclusive_check_at = now + self.host_timeout_s
            self._exclusive_held = not self._drop_stale_exclusive()
        if now >= self._next_sample:
            self._next_sample = max(self._next_sample + 1 / self.sample_hz, now - 0.2)
            self._sample(now)
        if now >= self._next_hb:
            self._next_hb = now + self.heartbeat_s
            self._tx(P.encode(self._state(P.Heartbeat, 0), self._wire_minor))
            every = self.faults.param("debug_text", "every_s", 0.0)
            if self.faults.active("debug_text") or every:
                self._tx_text(f"dbg: up {self._uptime_ms()} ms hx711 ok\r\n".encode())
        if self.faults.active("oversize"):
            self.faults.clear("oversize")
            self._tx(b"\x00" + bytes(self._rng.randrange(1, 256) for _ in range(600)) + b"\x00")

    def _tx_text(self, text: bytes) -> None:
        if self._master >= 0:
            self._write(text)

    def _sample(self, now: float) -> None:
        for msg in self.cells.sample(now, self.faults, self._uptime_ms()):
            self._event(msg)
