"""The link: owns the pyserial port, gets commands acknowledged and events delivered in order.

Two threads. The *reader* reads the port, feeds the codec and dispatches: a reply wakes the
waiting ``request``; a heartbeat refreshes liveness and reveals event gaps or a new boot id;
a numbered event is delivered in order (later ones wait in a buffer while a gap is filled by
``ReplayEvents``). The *keeper* pings the MCU (the MCU relocks when the pings stop), asks for
replays, declares the link lost after ``missed_heartbeats`` quiet heartbeat periods or when
the port errors, and reconnects with a doubling delay, re-identifying and resyncing: to the tty
the board answered on while that node still exists unchanged (a reboot does not move a board),
else to where a ``PortFinder`` finds its serial number now (a re-enumerated USB device).

``request`` sends one command at a time (window of one) and retransmits the same bytes (same
seq, so the MCU runs it once) on an adaptive timeout: RFC 6298 SRTT/RTTVAR with Karn's rule,
``min_rto_s`` 25 ms, doubling per retry, capped at ``max_rto_s``. A reply that arrives after
its request is done is counted and ignored. The connect handshake (Identify, Configure) is
different: both are harmless to repeat and nothing is measured yet, and a handshake lost to a
noisy line is lost to noise, not congestion, so it retransmits every ``min_rto_s`` without
backing off until its deadline (a 1 s deadline at 3% bad bytes leaves ~40 tries, not 4).

Every deadline (request timeouts, retransmits, heartbeats, quiet detection, reconnect delays)
is read from ``clock`` (firmware_bridge/clock.py), so tests drive them with a ManualClock. Only
the reader thread's short pause while the port is closed is real time: it polls the OS, it
times nothing.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import random
import re
import termios
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import serial

from . import protocol as P
from .clock import Clock, clock_or_system
from .errors import LinkDown, LinkError, PortBusy, PortNotFound, ProtocolVersionMismatch
from .ports import SERIAL_PREFIX, PortFinder, default_finder

Trace = Callable[[str, float, bytes, "P.Message | None"], None]
log = logging.getLogger(__name__)


class LinkListener(Protocol):
    def link_event(self, msg: P.Message, now: float) -> None: ...
    def link_heartbeat(self, hb: P.Heartbeat, now: float) -> None: ...
    def link_up(self, ident: P.IdentifyReply, *, reset: bool, restored: bool) -> None: ...
    def link_lost(self, reason: str) -> None: ...
    def link_events_lost(self, first: int, last: int) -> None: ...


@dataclass(frozen=True)
class LinkCounters:
    port: str
    up: bool
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    bad_bytes: int
    invalid_frames: int
    retransmits: int
    late_replies: int
    duplicate_events: int
    events: int
    gaps: int
    replays: int
    link_losses: int
    reconnects: int
    resets: int
    rtt_srtt_ms: float
    rtt_rttvar_ms: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    rto_ms: float
    duplicates: int                     # duplicate events dropped + late replies ignored
    last_event_seq: int = 0             # the MCU event number delivered last (in order)
    listener_errors: int = 0            # events whose listener raised (logged; the link goes on)


class _Pending:
    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.done = threading.Event()
        self.reply: P.Message | None = None


class Link:
    def __init__(self, port: str, listener: LinkListener, *, finder: PortFinder | None = None,
                 timeout_s: float = 1.0, heartbeat_s: float = 0.5, mcu_heartbeat_s: float = 1.0,
                 host_timeout_s: float = 3.0, missed_heartbeats: int = 3, sample_hz: int = 25,
                 min_rto_s: float = 0.025, max_rto_s: float = 1.0,
                 reconnect: bool = True, reconnect_min_s: float = 0.05,
                 reconnect_max_s: float = 2.0, on_trace: Trace | None = None,
                 clock: Clock | None = None) -> None:
        self.clock = clock_or_system(clock)
        self.port_name = port
        self.port = port                        # the path actually open (after finding)
        self.listener = listener
        self.finder = finder or default_finder()
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.mcu_heartbeat_s = mcu_heartbeat_s
        self.host_timeout_s = host_timeout_s
        self.missed_heartbeats = missed_heartbeats
        self.sample_hz = sample_hz
        self.min_rto_s, self.max_rto_s = min_rto_s, max_rto_s
        self.reconnect = reconnect
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.on_trace = on_trace
        self.identity: P.IdentifyReply | None = None
        self.up = False
        self._port: serial.Serial | None = None
        self._decoder = P.Decoder()
        self._cmd_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ev_lock = threading.RLock()
        self._wake = threading.Event()
        self._pending: _Pending | None = None
        self._finder_knows = False               # the finder located this board once
        self._node: tuple[int, int] | None = None   # (rdev, ctime) of the tty it answered on
        self._seq = random.Random().randrange(1, 1 << 16)
        self._running = False
        self._threads: list[threading.Thread] = []
        self._last_rx = 0.0
        self._gone: str = ""
        self._reset_seen = False
        self._last_event: int | None = None      # None: not delivering (connecting or reset)
        self._mcu_last = 0
        self._buffer: dict[int, P.Message] = {}
        self._last_replay = 0.0
        self._srtt = self._rttvar = 0.0
        self._rto = max(min_rto_s, 0.1)
        self._rtts: deque[float] = deque(maxlen=2000)
        self._n = dict(bytes_in=0, bytes_out=0, frames_out=0, retransmits=0, late_replies=0,
                       duplicate_events=0, events=0, gaps=0, replays=0, link_losses=0,
                       reconnects=0, resets=0, listener_errors=0)

    # ---- opening and closing -------------------------------------------------------------
    def open(self) -> P.IdentifyReply:
        self._running = True
        self._threads = [threading.Thread(target=self._read_loop, name="link-reader", daemon=True),
                         threading.Thread(target=self._keep_loop, name="link-keeper", daemon=True)]
        self._threads[0].start()
        try:
            ident = self._connect(first=True)
        except BaseException:
            self.close()
            raise
        self._threads[1].start()
        return ident

    def close(self) -> None:
        self._running = False
        self._wake.set()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(timeout=2.0)
        self._close_port()
        self.up = False

    def _resolve(self) -> str:
        name = self.port_name
        serial_no = self.identity.board_serial if self.identity else ""
        if name.startswith(SERIAL_PREFIX):
            serial_no = name[len(SERIAL_PREFIX):]
        if self._node is not None and _node_id(self.port) == self._node:
            # The tty this board answered on is still the same node (a reboot, a quiet line,
            # a port error that did not re-create it): the board is behind it, so go back
            # there. A serial-number lookup could name another board with the same serial
            # (simulators on one machine all say SIM-0001), busy or not ours.
            return self.port
        if serial_no:
            found = self.finder.find(serial_no)
            if found:
                return found
        if name.startswith(SERIAL_PREFIX) or self._finder_knows:
            # the finder knew this board: its old tty name may now be another device's
            raise PortNotFound(f"{SERIAL_PREFIX}{serial_no}")
        if self._node is not None:
            # Reopening the path this board answered on. A tty node that was re-created since
            # (a pty number reused by another simulator, a re-enumerated USB device) is another
            # device: opening it, even only to ask who it is, would lock it away from its
            # owner for the length of a handshake, so it is not touched.
            node = _node_id(name)
            if node is None:
                raise PortNotFound(name)
            if node != self._node:
                raise LinkDown(f"Serial port {name} was re-created since board {serial_no} "
                               f"answered on it and now belongs to another device; still "
                               f"looking for the board")
        return name

    def _open_port(self, path: str) -> serial.Serial:
        return open_exclusive(path)

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            close_exclusive(port)

    def _connect(self, first: bool) -> P.IdentifyReply:
        path = self._resolve()
        self._gone = ""
        self._port = self._open_port(path)
        self.port = path
        self._last_rx = self.clock.monotonic()
        try:
            ident = self.request(P.Identify(nonce=random.getrandbits(32)), _internal=True)
            if not isinstance(ident, P.IdentifyReply):
                raise LinkDown(f"Board on {path}: answered identify with {type(ident).__name__}")
            if ident.protocol_version >> 8 != P.PROTOCOL_MAJOR:
                raise ProtocolVersionMismatch(path, _version(ident.protocol_version),
                                              _version(P.PROTOCOL_VERSION))
            self.request(P.Configure(host_timeout_ms=int(self.host_timeout_s * 1000),
                                     heartbeat_ms=int(self.mcu_heartbeat_s * 1000),
                                     sample_hz=self.sample_hz), _internal=True)
            if self.identity and ident.board_serial != self.identity.board_serial:
                raise LinkDown(f"Board on {path} is {ident.board_serial!r}, expected "
                               f"{self.identity.board_serial!r}; still looking for it")
        except BaseException:
            self._close_port()
            raise
        if not self._finder_knows:
            self._finder_knows = self.finder.find(ident.board_serial) == path
        self._node = _node_id(path)
        reset = self.identity is not None and ident.boot_id != self.identity.boot_id
        with self._ev_lock:
            self.identity = ident
            self._reset_seen = False
            self._mcu_last = ident.last_event_seq
            start = self._last_event
            if first:
                start = ident.last_event_seq
                self._buffer = {k: v for k, v in self._buffer.items() if k > start}
            elif reset or start is None:
                self._n["resets"] += 1
                start, self._buffer = 0, {}
            self._last_event = None             # hold events until the listener has caught up
            self.up = True
        self.listener.link_up(ident, reset=reset, restored=not first)
        with self._ev_lock:
            self._last_event = start
            self._flush()
        return ident

    # ---- commands ------------------------------------------------------------------------
    def request(self, msg: P.Message, timeout_s: float | None = None, *,
                _internal: bool = False,
                on_send: Callable[[int], None] | None = None) -> P.Message:
        """Send a command and wait for its reply, retransmitting on the adaptive timeout.
        ``on_send(seq)`` is called with the command's seq before its first byte is written
        (the Board records the unlocks it sends, whose seq the MCU's LockChange names)."""
        name = type(msg).__name__
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._cmd_lock:
            if not (self.up or _internal) or self._port is None:
                raise LinkDown(f"Board on {self.port_name}: link is down, cannot send {name}")
            self._seq = (self._seq + 1) & P.SEQ_MASK or 1
            pending = _Pending(self._seq)
            msg = dataclasses.replace(msg, seq=self._seq)
            raw = P.encode(msg)
            if on_send is not None:
                on_send(self._seq)
            self._pending = pending
            clock = self.clock
            deadline = clock.monotonic() + timeout
            rto, tries = (self.min_rto_s, 0) if _internal else (self._rto, 0)
            try:
                while True:
                    sent = clock.monotonic()
                    self._write(raw, msg)
                    tries += 1
                    wait = min(rto, deadline - sent)
                    if clock.wait(pending.done, max(0.0, wait)):
                        if pending.reply is None:
                            raise LinkDown(f"Board on {self.port_name}: link lost during {name}")
                        if tries == 1:
                            self._rtt_sample(clock.monotonic() - sent)
                        return pending.reply
                    if clock.monotonic() >= deadline or not self._running:
                        raise LinkDown(f"Board on {self.port_name}: no answer to {name} within "
                                       f"{timeout:.2f} s ({tries} tries)")
                    self._n["retransmits"] += 1
                    rto = retransmit_timeout(rto, self.max_rto_s, handshake=_internal)
            finally:
                self._pending = None

    def _write(self, raw: bytes, msg: P.Message | None = None) -> None:
        port = self._port
        if port is None:
            raise LinkDown(f"Board on {self.port_name}: port is closed")
        try:
            with self._write_lock:
                port.write(raw)
        except (serial.SerialException, OSError, TypeError, AttributeError) as e:
            self._port_gone(f"write failed: {e}")
            raise LinkDown(f"Board on {self.port_name}: write failed: {e}") from e
        self._n["bytes_out"] += len(raw)
        self._n["frames_out"] += 1
        if self.on_trace:
            self.on_trace("tx", self.clock.time(), raw, msg)

    def _rtt_sample(self, r: float) -> None:
        self._rtts.append(r)
        self._srtt, self._rttvar, self._rto = next_rto(self._srtt, self._rttvar, r,
                                                       self.min_rto_s, self.max_rto_s)

    # ---- the reader thread ---------------------------------------------------------------
    def _read_loop(self) -> None:
        while self._running:
            port = self._port
            if port is None or self._gone:
                time.sleep(0.01)                # polls the OS for a port; times nothing
                continue
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                if port is self._port:
                    self._port_gone(f"read failed: {e}")
                continue
            if data:
                self._on_bytes(data)

    def _port_gone(self, reason: str) -> None:
        if not self._gone:
            self._gone = f"port gone ({reason})"
            self._wake.set()

    def _on_bytes(self, data: bytes) -> None:
        now = self.clock.monotonic()
        self._n["bytes_in"] += len(data)
        for rec in self._decoder.feed(data):
            msg = rec.message
            if self.on_trace:
                self.on_trace("rx", self.clock.time(), rec.raw, msg)
            if msg is None:
                continue
            self._last_rx = now
            if msg.KIND == "reply":
                p = self._pending
                if p is not None and msg.seq == p.seq and not p.done.is_set():
                    p.reply = msg
                    p.done.set()
                else:
                    self._n["late_replies"] += 1
            elif msg.KIND == "event":
                self._on_event(msg, now)
            elif isinstance(msg, P.Heartbeat):
                self._on_heartbeat(msg, now)

    def _on_heartbeat(self, hb: P.Heartbeat, now: float) -> None:
        with self._ev_lock:
            if self.identity and hb.boot_id != self.identity.boot_id:
                if not self._reset_seen:
                    self._reset_seen = True
                    self._last_event, self._buffer = None, {}
                    self._wake.set()
                return
            self._mcu_last = max(self._mcu_last, hb.last_event_seq)
            if self._last_event is not None and self._mcu_last > self._last_event:
                self._wake.set()
        self.listener.link_heartbeat(hb, now)

    def _on_event(self, msg: P.Message, now: float) -> None:
        with self._ev_lock:
            last = self._last_event
            if last is not None and msg.seq <= last or msg.seq in self._buffer:
                self._n["duplicate_events"] += 1
                return
            self._buffer[msg.seq] = msg
            self._mcu_last = max(self._mcu_last, msg.seq)
            if last is not None:
                if msg.seq == last + 1:
                    self._flush(now)
                elif len(self._buffer) == 1:
                    self._n["gaps"] += 1
                    self._wake.set()

    def _flush(self, now: float | None = None) -> None:
        now = self.clock.monotonic() if now is None else now
        buf = self._buffer
        while self._last_event is not None and self._last_event + 1 in buf:
            self._last_event += 1
            self._n["events"] += 1
            msg = buf.pop(self._last_event)
            try:
                self.listener.link_event(msg, now)
            except Exception:
                # a fault in one consumer of events must not stop the reader thread, which
                # every command's reply and every later event depends on: log it with its
                # traceback, count it, and deliver the next event
                self._n["listener_errors"] += 1
                log.exception("Board on %s: the event listener failed on %r", self.port_name, msg)

    # ---- the keeper thread ---------------------------------------------------------------
    def _keep_loop(self) -> None:
        clock = self.clock
        next_ping = clock.monotonic() + self.heartbeat_s
        attempt, next_try = 0, 0.0
        while self._running:
            clock.wait(self._wake, self._keeper_wait(clock.monotonic(), next_ping, next_try))
            self._wake.clear()
            now = clock.monotonic()
            try:
                if not self.up:
                    if self.reconnect and now >= next_try:
                        try:
                            self._connect(first=False)
                            self._n["reconnects"] += 1
                            attempt, next_ping = 0, now + self.heartbeat_s
                        except LinkError:
                            next_try = clock.monotonic() + reconnect_delay(
                                attempt, self.reconnect_min_s, self.reconnect_max_s)
                            attempt += 1
                    continue
                quiet = now - self._last_rx
                if self._gone or quiet >= self.missed_heartbeats * self.mcu_heartbeat_s - 1e-9:
                    self._lose(self._gone or f"no frame from the MCU for {quiet:.1f} s")
                    next_try = now + self.reconnect_min_s
                    continue
                if self._reset_seen:
                    self._lose("MCU rebooted (new boot id)", quiet=True)
                    next_try = now
                    continue
                self._fill_gap(now)
                if now >= next_ping:
                    next_ping = now + self.heartbeat_s
                    # a ping unanswered for a heartbeat period is moot (the next one follows),
                    # and a longer wait here would delay noticing a silent MCU
                    self.request(P.Ping(), min(self.timeout_s, self.heartbeat_s))
            except LinkDown:
                continue

    _KEEPER_MAX_WAIT_S = 0.1

    def _keeper_wait(self, now: float, next_ping: float, next_try: float) -> float:
        """Clock seconds until the keeper has something to do: the next ping, the moment the
        MCU has been quiet too long, a replay that may be asked again, or the next reconnect
        attempt. Anything sooner (a gap, a reset, a port error) sets ``_wake``."""
        if self.up:
            due = [next_ping, self._last_rx + self.missed_heartbeats * self.mcu_heartbeat_s]
            with self._ev_lock:
                if self._last_event is not None and (self._buffer
                                                     or self._mcu_last > self._last_event):
                    due.append(self._last_replay + max(2 * self._rto, 0.05))
        else:
            due = [next_try] if self.reconnect else []
        return max(0.0, min([now + self._KEEPER_MAX_WAIT_S, *due]) - now)

    def _lose(self, reason: str, quiet: bool = False) -> None:
        self.up = False
        self._n["link_losses"] += 0 if quiet else 1
        p = self._pending
        if p is not None:
            p.done.set()
        self._close_port()
        if not quiet:
            self.listener.link_lost(reason)

    def _fill_gap(self, now: float) -> None:
        with self._ev_lock:
            last = self._last_event
            if last is None or not (self._buffer or self._mcu_last > last):
                return
            if now - self._last_replay < max(2 * self._rto, 0.05):
                return
            self._last_replay = now
            first = last + 1
        self._n["replays"] += 1
        reply = self.request(P.ReplayEvents(from_seq=first))
        if isinstance(reply, P.Ack) and reply.status == P.GONE:
            m = re.search(r"(\d+)\s*$", reply.detail)
            oldest = int(m.group(1)) if m else self._mcu_last + 1
            with self._ev_lock:
                if self._last_event is None or self._last_event >= oldest - 1:
                    return
                lost = (self._last_event + 1, oldest - 1)
                self._last_event = None         # hold events while the listener resyncs
            try:
                self.listener.link_events_lost(*lost)
            finally:
                with self._ev_lock:
                    self._last_event = oldest - 1
                    self._buffer = {k: v for k, v in self._buffer.items() if k >= oldest}
                    self._flush()

    def counters(self) -> LinkCounters:
        with self._ev_lock:                     # events and last_event_seq move together
            n = dict(self._n)
            last = self._last_event or 0
        rtts = sorted(self._rtts)
        pct = (lambda q: 1000 * rtts[min(len(rtts) - 1, int(q * len(rtts)))] if rtts else 0.0)
        return LinkCounters(port=self.port, up=self.up,
                            frames_in=self._decoder.frames, bad_bytes=self._decoder.bad_bytes,
                            invalid_frames=self._decoder.invalid_frames,
                            rtt_srtt_ms=1000 * self._srtt, rtt_rttvar_ms=1000 * self._rttvar,
                            rtt_p50_ms=pct(0.5), rtt_p99_ms=pct(0.99), rto_ms=1000 * self._rto,
                            duplicates=n["duplicate_events"] + n["late_replies"],
                            last_event_seq=last, **n)


def retransmit_timeout(rto: float, max_s: float, *, handshake: bool = False) -> float:
    """The wait before the next retransmit, after one of ``rto`` went unanswered: doubled up to
    ``max_s`` for commands (Karn back-off), unchanged for the connect handshake."""
    return rto if handshake else min(rto * 2, max_s)


def reconnect_delay(attempt: int, min_s: float, max_s: float) -> float:
    """Seconds to wait after failed reconnect attempt number ``attempt`` (0-based)."""
    return min(max_s, min_s * 2 ** min(attempt, 30))


def next_rto(srtt: float, rttvar: float, sample: float, min_s: float,
             max_s: float) -> tuple[float, float, float]:
    """RFC 6298 / Klipper: the new (srtt, rttvar, rto) after an RTT sample (srtt 0: first)."""
    if srtt == 0.0:
        srtt, rttvar = sample, sample / 2
    else:
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - sample)
        srtt = 0.875 * srtt + 0.125 * sample
    return srtt, rttvar, min(max_s, max(min_s, srtt + 4 * rttvar))


def open_exclusive(path: str) -> serial.Serial:
    """Open a tty for this process alone. pyserial's ``exclusive=True`` takes a flock, which
    only binds programs that ask for it (another pyserial, cabinet-diag); TIOCEXCL then makes
    the kernel refuse every further open(2) of the tty with EBUSY, whatever the program, for
    any user without CAP_SYS_ADMIN (root is exempt; the flock still stops a root opener that
    uses pyserial). ``close_exclusive`` clears TIOCEXCL before closing, since the flag stays on
    the tty (a pty's slave lives on while its master is open). Failures are the link's errors:
    PortNotFound, PortBusy (naming the port and who holds it) or LinkDown."""
    try:
        port = serial.Serial(path, 115200, timeout=0.05, write_timeout=1.0, exclusive=True)
    except serial.SerialException as e:
        code = getattr(e, "errno", None)
        if code == errno.ENOENT or not os.path.exists(path):
            raise PortNotFound(path) from e
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) \
                or "exclusively lock" in str(e):
            raise PortBusy(path, port_holders(path)) from e
        raise LinkDown(f"Serial port {path}: cannot open it: {e}") from e
    except OSError as e:
        raise LinkDown(f"Serial port {path}: cannot open it: {e}") from e
    try:
        fcntl.ioctl(port.fd, termios.TIOCEXCL)
    except OSError as e:
        port.close()
        raise LinkDown(f"Serial port {path}: cannot make it exclusive (TIOCEXCL): {e}") from e
    return port


def close_exclusive(port: serial.Serial) -> None:
    """Clear TIOCEXCL and close; a port that vanished meanwhile is closed all the same."""
    try:
        if port.fd is not None:
            fcntl.ioctl(port.fd, termios.TIOCNXCL)
    except (OSError, TypeError, AttributeError):
        pass
    try:
        port.close()
    except (OSError, serial.SerialException):
        pass


def port_holders(path: str, skip_fds: set[tuple[int, int]] | None = None) -> list[str]:
    """Processes with ``path`` open, as 'pid N (command line)', read from /proc; empty where
    /proc does not say (another user's processes, no procfs). This process counts only with
    ``skip_fds`` ((pid, fd) pairs to leave out), else it is left out whole."""
    try:
        target = os.stat(path).st_rdev
    except OSError:
        return []
    out = []
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == os.getpid() and skip_fds is None:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            if skip_fds and (pid, int(fd)) in skip_fds:
                continue
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if st.st_rdev == target and (st.st_mode & 0o170000) == 0o020000:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    cmd = "?"
                out.append(f"pid {pid} ({cmd[:80]})")
                break
    return out


def _node_id(path: str) -> tuple[int, int] | None:
    """What tells one tty node from a later one at the same path: (device number, ctime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev, st.st_ctime_ns


def _version(v: int) -> str:
    return f"{v >> 8}.{v & 0xFF}"

