"""`cabinet run`: the long-running controller, one session at a time, forever.

At start (after App.start() validated everything and checked the board): finish the sessions
a crash left open (Controller.recover), look at the board's state (door, temperature) to clear
or raise alarms left from the last run, open the HTTP server (cabinet/web.py), tell systemd we
are ready (sd_notify, below). Then, until SIGTERM or Ctrl-C:

- board events between sessions are handled as they come (one asyncio loop; the serial reader
  thread hands them over through the controller's EventBridge): a forced door, the door left
  open (longer than timeouts.door_open_alarm_s), a temperature alarm, the link lost, an MCU
  reboot and an uncommanded unlock each raise an alarm kept in the database
  (cabinet.journal.Alarms). While any alarm is active the cabinet is out of service (the state
  machine's `fault`); when the last one clears it is back (`repaired`);
- a customer starts a session by a face in front of the face camera (a frame with a face,
  after a frame without one since the last session) or by the touchscreen's start
  (POST /api/session/start, or the kiosk's "tap to start", POST /kiosk/start);
- the kiosk (cabinet/kiosk, served at /kiosk/) shows each screen as it comes: the controller
  publishes a session's screens, the runner the idle ones: Welcome in service (once the last
  session's receipt or refusal has been on show for `screen_hold_s`), OutOfService with the
  reason while an alarm is active or a restock visit runs;
- a restock visit journalled by `cabinet restock start` (another process) stops customer
  sessions: the runner releases the lock for the operator and records the settled weights
  before and after the visit with the visit (cabinet/restock.py); `cabinet restock accept`
  ends it.

A stop request is only looked at between sessions: a session under way is finished first, so
a SIGTERM never leaves a customer's session open; the exit code is 0.

The payment outbox is drained every `outbox_s` (30 s) between sessions, not only at start.

Waits go through the Clock port (the face poll, the door-left-open alarm, the watchdog ping),
so tests can drive them with a ManualClock.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import sys
from typing import Any, Mapping

from cabinet.app import App
from cabinet.controller import AGE_RESTRICTED_TAKEN as AGE_RESTRICTED_NOTED
from cabinet.controller import COMPARTMENT_UNLOCK as COMPARTMENT_UNLOCK_NOTED
from cabinet.controller import uncommanded_channel_release
from cabinet.errors import CabinetError
from cabinet.journal import Alarms, JournalEntry
from cabinet.kiosk.state import (ActionRefused, KioskState, LookAtCamera, OutOfService, Refused,
                                 Welcome)
from cabinet.web import HttpServer, Metrics, make_asgi
from firmware_bridge import events as ev

log = logging.getLogger("cabinet.runner")

# alarm kinds
FORCED_DOOR, DOOR_LEFT_OPEN, TEMPERATURE = "forced_door", "door_left_open", "temperature"
LINK_LOST, MCU_REBOOT, UNCOMMANDED_UNLOCK = "link_lost", "mcu_reboot", "uncommanded_unlock"
BOARD_FAULT = "board_fault"
AGE_RESTRICTED, COMPARTMENT_UNLOCK = "age_restricted_taken", "compartment_unlock"
# the kiosk's out-of-service reason (cabinet.kiosk.OUT_OF_SERVICE_REASONS) for an alarm
OUT_OF_SERVICE_REASON = {FORCED_DOOR: "door_fault", DOOR_LEFT_OPEN: "door_fault",
                         TEMPERATURE: "temperature", LINK_LOST: "link_lost",
                         "remote_out_of_service": "maintenance"}   # cabinet/fleet/actions.py


def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram ("READY=1", "WATCHDOG=1", "STOPPING=1") to systemd's
    $NOTIFY_SOCKET; False (and nothing sent) when not run by systemd. Written by hand: the
    protocol is one datagram on a unix socket ('@' = Linux abstract namespace)."""
    path = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            # never block the controller's loop on a reader that is not reading
            sock.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, address)
        except OSError as e:
            log.warning("sd_notify %s to %s failed: %s", message, path, e)
            return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's WatchdogSec ($WATCHDOG_USEC), when it watches this process."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None


class Runner:
    """The loop of `cabinet run` over a started App."""

    def __init__(self, app: App, *, poll_s: float = 0.2, environ: Mapping[str, str] | None = None,
                 on_ready: Any = None, screen_hold_s: float = 10.0, outbox_s: float = 30.0):
        self.app = app
        self.controller = app.controller
        self.clock = app.clock
        self.alarms = Alarms(app.db)
        self.metrics = Metrics(app.board)
        self.poll_s = poll_s
        self._environ = environ if environ is not None else os.environ
        self._on_ready = on_ready
        self._stop = False
        self._wake: asyncio.Event | None = None
        self._start_requested = False
        self._in_session = False
        self._face_away = True          # a face must leave before it can start another session
        self._looked: tuple | None = None   # (frame, observe_single_face of it): last look
        self._door_open_since: float | None = None
        self._door_open = False
        self._lock_engaged = True
        self._link_up = True
        self._restock_phase: str | None = None
        self.sessions_run = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.http: HttpServer | None = None
        self.port: int | None = None
        # the touchscreen: the controller publishes a session's screens, the runner the rest
        self.kiosk = KioskState(clock=app.clock)
        self.controller.kiosk = self.kiosk
        self.kiosk.set_handlers(start=self._kiosk_start, cancel=self._kiosk_cancel,
                                pin=self.controller.submit_pin, use_qr=self._kiosk_use_qr)
        # QR entry (cabinet/qr.py): the kiosk's code, the phone app's claim, the camera's code
        from cabinet.qr import QrDoor, QrEntry, key_for_cabinet
        self.qr = QrDoor(self, QrEntry(app.db, key_for_cabinet(app.data_path),
                                       self.controller.cabinet_id, now=app.clock.time))
        from billing.pin import Pins
        self.controller.pins = Pins(app.db)     # the second factor: a PIN on the kiosk's pad
        self._face_wait: asyncio.Future | None = None   # a touchscreen start's wait for a face
        self.screen_hold_s = screen_hold_s      # a receipt or a refusal stays this long
        self._last_shown_at: float | None = None  # when a session's last screen came
        self.fleet = None                       # the fleet agent, with a `fleet:` section
        self._between: list = []                # (callable, future): run between sessions
        # the payment outbox, retried every outbox_s between sessions (recover() drained it
        # at start): a capture the gateway did not answer is not left until the next restart
        self.outbox_s = outbox_s
        self._next_outbox_at = self.clock.monotonic() + outbox_s
        self.outbox_drains = 0

    # --- what the HTTP server asks -----------------------------------------------------
    def health(self) -> dict[str, Any]:
        active = self.alarms.active()
        state = self.controller.machine.state
        in_service = not active and state not in ("out_of_service", "restock")
        return {"state": "in_session" if self._in_session else state,
                "in_service": in_service, "link": "up" if self._link_up else "lost",
                "alarms": active, "sessions": self.sessions_run,
                "cabinet_id": self.controller.cabinet_id,
                # the product recognizer's version, or None when shelves are read without one
                "recognizer": getattr(self.controller.recognizer, "version", None)}

    def request_start(self) -> str:
        """The touchscreen's start; the refusal's reason, or "" when accepted."""
        if self._in_session or self._start_requested:
            return "a session is already running: one customer at a time"
        active = self.alarms.active()
        if active or self.controller.machine.state != "idle":
            return f"out of service ({', '.join(active) or self.controller.machine.state})"
        self._start_requested = True
        self._poke()
        return ""

    def _kiosk_start(self) -> None:
        """The kiosk's "tap to start": the touchscreen's start, refused (409) with its reason."""
        refusal = self.request_start()
        if refusal:
            raise ActionRefused(f"start: {refusal}")

    def _kiosk_cancel(self) -> None:
        """The kiosk's Cancel: ends a touchscreen start still waiting for a face (nothing
        has been looked at yet) or a session at the PIN pad; refused (409) while a face is
        being identified."""
        pending = self.controller._pin_future
        if pending is not None and not pending.done():
            self.controller.submit_pin(None)
            return
        if self.qr.withdraw():              # the QR screen: its code can no longer be used
            self._last_shown_at = None
            self.kiosk.publish(Welcome())
            return
        task = self._face_wait
        if task is None or task.done():
            raise ActionRefused("cancel: identification has begun; the session ends by itself "
                                "in a moment")
        task.cancel()

    def _kiosk_use_qr(self) -> None:
        """The kiosk's "Use a QR code instead" while a touchscreen start waits for a face: a
        signed code for the phone app instead (cabinet/qr.py); refused once a face is in."""
        task = self._face_wait
        if task is None or task.done():
            raise ActionRefused("use_qr: identification has begun; the session ends by itself "
                                "in a moment")
        self.qr.show_kiosk_code()
        task.cancel()

    def stop(self) -> None:
        """Stop between sessions (signal handler)."""
        if not self._stop:
            log.warning("stop requested%s", ": after this session" if self._in_session else "")
        self._stop = True
        self._poke()

    def stop_from_thread(self) -> None:
        """stop() from another thread (a service wrapper, a test)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- the fleet agent's calls (cabinet/fleet), from its own thread --------------------
    def between_sessions(self, fn: Any, timeout_s: float = 600.0) -> Any:
        """Run `fn` on the loop between customer sessions; its result or its exception.
        CabinetError when no pause between sessions came within timeout_s, or on stop."""
        import concurrent.futures
        import threading
        fut: concurrent.futures.Future = concurrent.futures.Future()
        done = threading.Event()
        fut.add_done_callback(lambda _: done.set())
        self.loop.call_soon_threadsafe(self._queue_between, fn, fut)
        if not self.clock.wait(done, timeout_s):
            fut.cancel()
            raise CabinetError(f"not done: no pause between sessions within {timeout_s:g} s")
        return fut.result()

    def _queue_between(self, fn: Any, fut: Any) -> None:
        self._between.append((fn, fut))
        self._poke()

    async def _run_between(self) -> None:
        while self._between:
            fn, fut = self._between.pop(0)
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(await self.controller._blocking(fn))
                except Exception as e:
                    fut.set_exception(e)

    def _reload_faces(self) -> None:
        from cabinet import accounts as accounts_mod
        gallery = accounts_mod.load_gallery(self.app.db, self.app.config.thresholds.face_distance,
                                            secrets=getattr(self.app, "secrets", None))
        self.between_sessions(lambda: setattr(self.controller, "gallery", gallery))

    async def _stop_fleet(self) -> None:
        for _, fut in self._between:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(CabinetError("not done: the cabinet is stopping"))
        self._between.clear()
        if self.fleet is not None:
            await asyncio.to_thread(self.fleet.stop)

    # --- the loop ------------------------------------------------------------------------
    async def run(self) -> int:
        loop = self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (RuntimeError, ValueError):   # not the main thread (tests run it in one)
                pass
        for report in await self.controller.recover():
            log.warning("recovered session %s: %s", report.session_id, report.outcome)
            self.metrics.sessions.labels(report.outcome).inc()
        await self._startup_conditions()
        self.fleet = self.app.new_fleet_agent(health=self.health, between=self.between_sessions,
                                              reboot_mcu=lambda: self.app.board.reboot(30.0),
                                              reload_faces=self._reload_faces)
        if self.fleet is not None:
            self.fleet.start()
        http = self.app.config.http
        self.http = HttpServer(make_asgi(self), http.host, http.port)
        self.port = await self.http.start()
        watchdog = asyncio.ensure_future(self._watchdog())
        print(f"cabinet run: {self.controller.cabinet_id} serving on "
              f"http://{http.host}:{self.port}", flush=True)
        log.info("ready: http://%s:%s", http.host, self.port)
        sd_notify("READY=1", self._environ)
        if self._on_ready is not None:
            self._on_ready(self)
        try:
            while not self._stop:
                await self._step()
        finally:
            sd_notify("STOPPING=1", self._environ)
            watchdog.cancel()
            await self._stop_fleet()
            self.kiosk.close()          # ends the kiosk's event streams, or uvicorn waits on them
            await self.http.stop()
        log.info("stopped cleanly after %d session(s)", self.sessions_run)
        return 0

    async def _watchdog(self) -> None:
        interval = watchdog_interval(self._environ)
        if interval is None:
            return
        while True:
            sd_notify("WATCHDOG=1", self._environ)
            await self.clock.sleep_async(interval)

    async def _step(self) -> None:
        """One turn: events, then a session if one may start, else wait for the next thing."""
        queue = self.controller._queue()
        while not queue.empty():
            await self._on_event(queue.get_nowait())
        self._check_timers()
        await self._run_between()
        await self._drain_outbox_when_due()
        self.qr.check_expiry()
        await self._follow_restock()
        self._sync_service()
        self._sync_screen()
        if self.qr.pending and (self._stop or self.controller.machine.state != "idle"
                                or self.alarms.active()):
            self.qr.drop_pending("the cabinet is out of service now; try again later")
        if self._stop:
            return
        if self.controller.machine.state == "idle" and not self.alarms.active():
            frame = None if self.qr.pending else await self._customer_frame()
            if await self.qr.run_pending():
                return
            if frame is not None:
                await self._session(frame)
                return
        if self._stop:      # asked while the camera was read: keep its wake-up, stop now
            return
        self._wake.clear()
        get = asyncio.ensure_future(queue.get())
        wake = asyncio.ensure_future(self._wake.wait())
        timer = asyncio.ensure_future(self.clock.sleep_async(self.poll_s))
        done, pending = await asyncio.wait({get, wake, timer},
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if get in done:
            await self._on_event(get.result())

    async def _customer_frame(self):
        """A face camera frame that starts a session: on a touchscreen start, the camera's
        next frame within timeouts.face_s; else a frame with a face in it, once the last
        face has gone."""
        ctl = self.controller
        if self._start_requested:
            ctl.show(LookAtCamera)
            task = self._face_wait = asyncio.ensure_future(
                ctl.wait_for_face(self.app.timing.face_s))
            try:
                await asyncio.wait({task})
            finally:
                task.cancel()
                self._face_wait = None
                self._start_requested = False
            if task.cancelled() and self.qr.shown is not None:
                log.info("touchscreen start: the customer chose the QR code")
                return None
            if task.cancelled():
                log.info("touchscreen start: cancelled on the kiosk")
                self._last_shown_at = None
                self.kiosk.publish(Welcome())
                return None
            frame = task.result()
            if frame is None:
                log.info("touchscreen start: no face came to the camera")
                ctl.show(lambda: Refused("timed_out"))
                self._last_shown_at = self.clock.monotonic()
            elif await self.qr.at_camera(frame):
                return None
            return frame
        frame = await ctl._blocking(ctl.face_camera.capture)
        if await self.qr.at_camera(frame):
            return None                     # a phone's entry code, not a face
        # the look that found the face is handed to the session, which does not repeat it
        looked = None if frame is None else await ctl._blocking(_look_at, frame)
        self._looked = None if looked is None else (frame, looked)
        faces = 0 if looked is None else looked[0]
        if faces == 0:
            self._face_away = True
            return None
        if not self._face_away:
            return None
        return frame

    async def _session(self, frame, **by_account: Any) -> None:
        """A session for a face frame, or (`by_account`: account_id, entry, on_admission) for
        an account a QR code named (Controller.session_for_account)."""
        self._in_session = True
        self._face_away = False
        seen = len(self.controller.alarms)
        try:
            try:
                looked = self._looked[1] if self._looked is not None \
                    and self._looked[0] is frame else None      # a look at this very frame
                self._looked = None
                report = await (self.controller.session_for_account(**by_account) if by_account
                                else self.controller.session(frame, looked))
            except CabinetError as e:       # the door was open at the start: out of service
                log.error("%s", e)
                self.alarms.raise_(DOOR_LEFT_OPEN, str(e))
                self.metrics.alarms.labels(DOOR_LEFT_OPEN).inc()
                return
        finally:
            self._in_session = False
            self._last_shown_at = self.clock.monotonic()
            await self._after_session(self.controller.alarms[seen:])
        self.sessions_run += 1
        self.metrics.sessions.labels(report.outcome).inc()
        t = report.timings_ms
        if "reconciled" in t:
            start = t.get("settled", t.get("door_closed", 0.0))
            self.metrics.reconcile_seconds.observe(max(0.0, (t["reconciled"] - start) / 1000))
        if "charge_sent" in t:
            self.metrics.session_seconds.observe(t["charge_sent"] / 1000)
        log.info("session %s: %s %s", report.session_id, report.outcome,
                 report.reason or dict(report.basket))

    async def _after_session(self, noted: list[str]) -> None:
        """The controller heard the board during the session: a tamper it noted becomes an
        alarm for review, and the door and lock are read afresh."""
        if "UncommandedUnlock" in noted:
            self._raise(UNCOMMANDED_UNLOCK, "the lock released without a command during a "
                        "session", review=True)
        if "ForcedDoor" in noted:
            self._raise(FORCED_DOOR, "the door was forced during a session", review=True)
        detail = self.controller.alarm_detail
        if COMPARTMENT_UNLOCK_NOTED in noted:
            self._raise(COMPARTMENT_UNLOCK, detail[COMPARTMENT_UNLOCK_NOTED], review=True)
        if AGE_RESTRICTED_NOTED in noted:     # a record for review; the cabinet sells on
            self._raise(AGE_RESTRICTED, detail[AGE_RESTRICTED_NOTED], review=True)
            self._clear(AGE_RESTRICTED, "recorded; the session is in the review queue")
        try:
            state = await self.controller._blocking(self.app.board.state)
        except Exception as e:           # the link: its own events say so
            log.error("board state after the session: %s", e)
            return
        self._door_open, self._lock_engaged = state.door_open, state.lock_engaged
        if not state.door_open:
            self._clear(FORCED_DOOR, "door closed after the session")
            if state.lock_engaged:
                self._clear(UNCOMMANDED_UNLOCK, "lock engaged, door closed after the session")
                # the controller's Lock at the door's close engages every channel; their
                # ChannelLockChanged events say so (read here, or by _on_event later)
                self._clear_compartments("locks engaged, door closed after the session")

    # --- alarms --------------------------------------------------------------------------
    def _raise(self, kind: str, detail: str, *, review: bool = False) -> None:
        if self.alarms.raise_(kind, detail, review=review):
            self.metrics.alarms.labels(kind).inc()
            log.error("alarm %s: %s", kind, detail)

    def _clear(self, kind: str, by: str) -> None:
        if self.alarms.clear(kind, by):
            log.warning("alarm %s cleared: %s", kind, by)

    def _clear_compartments(self, by: str) -> None:
        """compartment_unlock clears only once every compartment lock is engaged again."""
        released = self.controller.compartments_released
        if released:
            if COMPARTMENT_UNLOCK in self.alarms.active():
                log.warning("alarm %s stays: compartment lock channel(s) %s still released",
                            COMPARTMENT_UNLOCK, ", ".join(map(str, sorted(released))))
            return
        self._clear(COMPARTMENT_UNLOCK, by)

    async def _on_event(self, event: Any) -> None:
        self.controller.note_compartment(event)     # which compartment locks stand released
        if isinstance(event, ev.ForcedDoor):
            self._door_open = True
            self._raise(FORCED_DOOR, "the door opened while the lock was engaged", review=True)
        elif isinstance(event, ev.DoorOpened):
            self._door_open = True
            if self._door_open_since is None:
                self._door_open_since = self.clock.monotonic()
        elif isinstance(event, ev.DoorClosed):
            self._door_open, self._door_open_since = False, None
            self._clear(FORCED_DOOR, "door closed")
            self._clear(DOOR_LEFT_OPEN, "door closed")
            if self._lock_engaged:
                self._clear(UNCOMMANDED_UNLOCK, "door closed, lock engaged")
            if self._restock_phase == "open":
                self._restock_phase = "closed"
        elif isinstance(event, ev.UncommandedUnlock):
            self._raise(UNCOMMANDED_UNLOCK, f"the lock released without a command (cause "
                        f"{event.cause}, {event.source})", review=True)
        elif uncommanded_channel_release(event):
            self._raise(COMPARTMENT_UNLOCK, f"compartment lock channel {event.channel} released "
                        f"without a command ({event.reason})", review=True)
        elif isinstance(event, ev.ChannelLockChanged) and event.engaged:
            self._clear_compartments(f"compartment lock channel {event.channel} engaged, "
                                     f"every compartment lock engaged")
        elif isinstance(event, ev.LockChanged):
            self._lock_engaged = event.engaged
            if event.engaged and not self._door_open:
                self._clear(UNCOMMANDED_UNLOCK, "lock engaged, door closed")
        elif isinstance(event, ev.TemperatureAlarm):
            self._raise(TEMPERATURE, f"{event.temperature_c:.1f} C outside "
                        f"{event.low_c:.1f}..{event.high_c:.1f} C")
        elif isinstance(event, ev.TemperatureNormal):
            self._clear(TEMPERATURE, f"back to {event.temperature_c:.1f} C")
        elif isinstance(event, ev.LinkLost):
            self._link_up = False
            self._raise(LINK_LOST, f"{event.port}: {event.reason}")
        elif isinstance(event, ev.LinkRestored):
            self._link_up = True
            self._clear(LINK_LOST, "link restored")
        elif isinstance(event, ev.McuReset):
            self._raise(MCU_REBOOT, f"board rebooted: {event.identity.reset_reason}")
            try:
                self.app.identity = event.identity
                await self.controller._blocking(self.app.check_board)
                state = await self.controller._blocking(self.app.board.state)
            except Exception as e:          # stays out of service, with the reason
                log.error("board check after reboot failed: %s", e)
                return
            self._door_open, self._lock_engaged = state.door_open, state.lock_engaged
            self._clear(MCU_REBOOT, "board identified and calibrated again")
        elif isinstance(event, ev.Fault):
            self._raise(BOARD_FAULT, f"{event.code}: {event.detail}")
            self._clear(BOARD_FAULT, "recorded")

    def _check_timers(self) -> None:
        since = self._door_open_since
        if since is not None and self._restock_phase is None \
                and self.clock.monotonic() - since >= self.app.timing.door_open_alarm_s:
            self._raise(DOOR_LEFT_OPEN, f"the door has been open for "
                        f"{self.app.timing.door_open_alarm_s:g} s")

    async def _drain_outbox_when_due(self) -> None:
        """Every `outbox_s` by the Clock port, between sessions: the outbox's due payment calls
        (billing/outbox.py; a gateway still silent leaves them to their back-off)."""
        now = self.clock.monotonic()
        if self._in_session or now < self._next_outbox_at:
            return
        self._next_outbox_at = now + self.outbox_s
        report = await self.controller._blocking(self.app.billing.drain_outbox)
        self.outbox_drains += 1
        if report.steps:
            log.info("outbox: %d payment call(s) answered, %d still pending", report.done,
                     report.pending)

    def _sync_service(self) -> None:
        """Out of service while an alarm is active; back in service when the last clears."""
        machine = self.controller.machine
        active = self.alarms.active()
        self.metrics.alarms_active.set(len(active))
        if active and machine.state == "idle":
            machine.fire("fault", cause=",".join(active))
        elif not active and machine.state == "out_of_service" and not self._journal_restock():
            machine.fire("repaired", by="alarms cleared")
        self.metrics.in_service.set(1 if machine.state == "idle" and not active else 0)

    def out_of_service_reason(self, active: list[str] | None = None) -> str | None:
        """Why customers cannot shop now, as the kiosk's code; None in service."""
        active = self.alarms.active() if active is None else active
        state = self.controller.machine.state
        if self._restock_phase is not None or state == "restock":
            return "restocking"
        if active:
            return OUT_OF_SERVICE_REASON.get(active[0], "hardware_fault")
        if state == "out_of_service":
            return "maintenance"
        return None

    def _sync_screen(self) -> None:
        """The idle screens: OutOfService(reason) while out of service; else Welcome, once
        the last session's last screen has been on show for screen_hold_s."""
        if self._in_session or self._start_requested:
            return
        screen = self.kiosk.screen
        reason = self.out_of_service_reason()
        if reason is not None:
            self.qr.withdraw()
            if screen != OutOfService(reason):
                self.kiosk.publish(OutOfService(reason))
            self._last_shown_at = None
            return
        if isinstance(screen, Welcome) or self.qr.shown is not None or self.qr.pending:
            return                          # a QR code on show, or its session about to start
        since = self._last_shown_at
        if since is not None and self.clock.monotonic() - since < self.screen_hold_s:
            return
        self._last_shown_at = None
        self.kiosk.publish(Welcome())

    async def _startup_conditions(self) -> None:
        """Alarms left active by the last run are checked against the board now."""
        state = await self.controller._blocking(self.app.board.state)
        self._door_open = bool(state.door_open)
        self._lock_engaged = bool(state.lock_engaged)
        self._clear(LINK_LOST, "board answered at start")
        self._clear(MCU_REBOOT, "board identified at start")
        if not state.door_open:
            for kind in (FORCED_DOOR, DOOR_LEFT_OPEN):
                self._clear(kind, "door closed at start")
            if state.lock_engaged:
                self._clear(UNCOMMANDED_UNLOCK, "lock engaged at start")
        else:
            self._door_open_since = self.clock.monotonic()
        low, high = getattr(self.app.board, "temperature_limits", None) or (None, None)
        temp = state.temperature_c
        if temp is not None and low is not None and high is not None:
            if low <= temp <= high:
                self._clear(TEMPERATURE, f"{temp:.1f} C at start")
            else:
                self._raise(TEMPERATURE, f"{temp:.1f} C outside {low:.1f}..{high:.1f} C at start")
        self._sync_service()

    # --- restock visits (started by `cabinet restock start`) ---------------------------
    def _journal_restock(self) -> bool:
        """Whether the journal's last cabinet-level state is a restock visit."""
        from sqlalchemy import select
        with self.app.db() as s:
            last = s.scalar(select(JournalEntry.dest).where(JournalEntry.session_id.is_(None))
                            .order_by(JournalEntry.id.desc()).limit(1))
        return last == "restock"

    async def _follow_restock(self) -> None:
        """A visit another process journalled: release the lock for the operator, record the
        settled weights before and after; the visit's accept (journalled) ends it."""
        if self._in_session:
            return
        in_visit = self._journal_restock()
        if in_visit and self._restock_phase is None:
            log.warning("restock visit started: no customer sessions until it is accepted")
            self._restock_phase = "pending"
            self._adopt("restock")
        if self._restock_phase is None:
            return
        if not in_visit:
            log.warning("restock visit ended; back to customers")
            self._restock_phase = None
            self._adopt(self.controller.journal.cabinet_state())
            return
        if self._restock_phase == "pending" and await self._record_restock("before"):
            await self.controller._blocking(self.app.board.unlock,
                                            self.app.timing.unlock_pulse_ms)
            self._restock_phase = "open"
        elif self._restock_phase == "closed" and await self._record_restock("after"):
            self._restock_phase = "counted"

    def _adopt(self, state: str) -> None:
        """Take the cabinet-level state another process journalled (no new journal row)."""
        from cabinet.machine import SessionMachine
        self.controller.machine = SessionMachine(self.controller.journal.write, initial=state)

    async def _record_restock(self, phase: str) -> bool:
        """Settled weights with the open visit; False (tried again next turn) when the visit
        file is not there yet."""
        from cabinet.restock import RestockVisits, ShelfWeight
        weights, _ = await self.controller._snapshot()
        shelf_weights = {shelf: ShelfWeight(grams, stable)
                         for shelf, (grams, stable, _samples) in weights.items()}
        try:
            RestockVisits(self.app.data_path).record(phase, shelf_weights)
        except (CabinetError, ValueError) as e:
            log.warning("restock: weights %s not recorded yet: %s", phase, e)
            return False
        log.warning("restock: settled weights %s the visit recorded", phase)
        return True


def _look_at(frame) -> tuple:
    """(faces, the encoded face when exactly one): Controller.session's `observed`."""
    from vision.faces import observe_single_face
    return observe_single_face(frame, bgr=True)


def main(config_path, *, environ: Mapping[str, str] | None = None) -> int:
    """`cabinet run`: start the app (errors propagate to the CLI's exit codes), run forever."""
    app = App(config_path)
    try:
        app.start()
        runner = Runner(app, environ=environ)
        return asyncio.run(runner.run())
    finally:
        app.close()
