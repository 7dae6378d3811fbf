"""Runs customer sessions: face -> hold -> before-snapshot -> unlock -> door -> settle -> basket -> charge.

One asyncio loop drives a session. The serial reader thread hands board events to the loop
through `EventBridge`; blocking work (serial requests, face encoding, reconcile) runs in the
loop's default executor, so the loop keeps hearing the door while a face is being encoded.

Order of effects is the point of this module. Each step first fires the state machine (which
journals the transition durably), then performs its effect:
- the before-snapshot (settled weights + shelf images) is in the session bundle before the
  lock is released (invariant 5);
- the lock releases only for an identified account in good standing with a hold placed
  (invariant 1), and only as an MCU-timed pulse (invariant 2);
- every session ends in exactly one outcome recorded by billing (invariant 3).

Time comes from `clock` (firmware_bridge/clock.py, the system clock by default): the face
poll, the identification timeout, the waits for the door with the unlock pulse and the
door-open alarm and maximum, and the session timings all read it, so tests drive every timeout
with a ManualClock instead of sleeping. The settle timeout is the board's `wait_stable`, on the
board's clock (the same clock in a cabinet built from one, see demo.SimCabinet).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import datetime as dt
import logging
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping


from billing.errors import BillingError
from billing.service import Billing, Line
from cabinet import age
from cabinet.bundle import BundleWriter, load_bundle
from cabinet.catalog import load_catalog
from cabinet.config import TimeoutsConfig
from cabinet.errors import CabinetError
from cabinet.inventory import Inventory
from cabinet.journal import Journal
from cabinet.kiosk import state as kiosk
from cabinet.machine import SessionMachine
from cabinet.planogram import load_planogram
from cabinet.reconcile import reconcile, slot_vision
from firmware_bridge import events as ev
from firmware_bridge.clock import Clock, clock_or_system
from firmware_bridge.device import LinkError
from vision.faces import FaceGallery
from vision.identity import ACCEPT, DEFAULT_POLICY, SECOND_FACTOR, FrameTally, IdentityPolicy

log = logging.getLogger("cabinet.controller")

# The kiosk's refusal code for a standing reason (billing/standing.py's texts), by its start.
_STANDING_CODES = (("this account is closed", "account_blocked"),
                   ("account blocked", "account_blocked"),
                   ("no valid payment method", "payment_method_invalid"),
                   ("the payment method was declined", "payment_method_invalid"),
                   ("unpaid debt", "unpaid_debt"),
                   ("the payment for session", "unpaid_debt"))


def standing_refusal_code(reason: str) -> str:
    """The kiosk's reason code (cabinet.kiosk.REFUSAL_REASONS) for billing's standing text;
    an unknown text is shown as a blocked account (the page never shows billing's words)."""
    for start, code in _STANDING_CODES:
        if reason.startswith(start):
            return code
    return "account_blocked"


# Names in Controller.alarms that cabinet run turns into cabinet_alarms rows (runner.py).
AGE_RESTRICTED_TAKEN = "AgeRestrictedTaken"
COMPARTMENT_UNLOCK = "ChannelUncommandedUnlock"


def uncommanded_channel_release(event: Any) -> bool:
    """A compartment's lock (channel 1..) released by anything but a command: the manual key,
    a power glitch, unknown. This host's UnlockChannel releases report `command`."""
    return isinstance(event, ev.ChannelLockChanged) and not event.engaged \
        and event.reason != "command"


def preview_jpeg(frame) -> bytes | None:
    """A face camera frame (BGR) as a JPEG for the kiosk's preview, at most 640 px wide."""
    import cv2
    if frame is None:
        return None
    h, w = frame.shape[:2]
    if w > 640:
        frame = cv2.resize(frame, (640, max(1, int(h * 640 / w))))
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


@dataclasses.dataclass(frozen=True)
class SessionReport:
    session_id: str
    account_id: int | None
    account_name: str | None
    outcome: str                    # charged | nothing_taken | denied | pending
    basket: dict[str, int]
    total: int
    currency: str
    flags: tuple[str, ...]
    reason: str = ""
    receipt_text: str = ""
    bundle_dir: str | None = None
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)


class EventBridge:
    """Hands board events from the serial reader thread to the controller's asyncio loop.

    Events that come while no loop is attached (before the first session, or between two
    `asyncio.run`s) wait in a list and are handed over, in order, at the next `attach`.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._early: list[Any] = []

    def __call__(self, event: Any) -> None:          # called on the reader thread
        with self._guard:
            loop, queue = self._loop, self._queue
            if loop is None or queue is None or loop.is_closed():
                self._early.append(event)
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:        # the loop closed between the check and the call
                self._early.append(event)

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        with self._guard:
            queue: asyncio.Queue = asyncio.Queue()
            old = self._queue
            if old is not None:         # left unread by a previous loop: keep their order
                while not old.empty():
                    queue.put_nowait(old.get_nowait())
            for event in self._early:
                queue.put_nowait(event)
            self._early.clear()
            self._queue, self._loop = queue, loop
            return queue


class Controller:
    """The cabinet's session runner; parts are passed in, configuration read once here."""

    def __init__(self, *, cabinet_id: str, board, bridge: EventBridge, face_camera,
                 shelf_cameras: Mapping[str, Any], billing: Billing, gallery: FaceGallery,
                 accounts: Callable[[int], str | None],
                 planogram_path: Path, catalog_path: Path, journal: Journal,
                 inventory: Inventory, bundles_dir: Path, timing: TimeoutsConfig = TimeoutsConfig(),
                 load_cell_noise_g: float = 2.0, min_confidence: float = 0.95,
                 clock: Clock | None = None, identity_policy: IdentityPolicy = DEFAULT_POLICY,
                 identity_frames: int = 3, shelf_calibration: Any = None,
                 recognizer: Any = None):
        self.cabinet_id = cabinet_id
        self.clock = clock_or_system(clock)
        self.board = board
        self.bridge = bridge
        self.face_camera = face_camera
        self.shelf_cameras = dict(shelf_cameras)
        self.billing = billing
        self.gallery = gallery
        self.account_name = accounts
        # Read once, here. The files must not change while the controller runs (the caller
        # passes copies it keeps, see app.App.put_files_in_force): every bundle copies them as the prices
        # and slots in force, and the charge must use exactly those.
        self.planogram_path = Path(planogram_path)
        self.catalog_path = Path(catalog_path)
        self.catalog = load_catalog(self.catalog_path)
        self.planogram = load_planogram(self.planogram_path, self.catalog)
        self.journal = journal
        self.inventory = inventory
        self.bundles_dir = Path(bundles_dir)
        self.timing = timing
        self.load_cell_noise_g = load_cell_noise_g
        self.min_confidence = min_confidence
        self.identity_policy = identity_policy
        self.identity_frames = max(1, int(identity_frames))
        # What the reader knows of the shelf cameras (vision.calibration.Calibration) and of the
        # products (vision.recognizer.Recognizer); None: not used. Every bundle carries both
        # (frames copied, recognizer and gallery named by hash), so its replay reads the same.
        self.shelf_calibration = shelf_calibration
        self.recognizer = recognizer
        max_pulse = getattr(getattr(board, "identity", None), "max_unlock_ms", None)
        if max_pulse is not None and not 0 < timing.unlock_pulse_ms <= max_pulse:
            raise CabinetError(f"timeouts.unlock_pulse_ms = {timing.unlock_pulse_ms}: the board "
                               f"on {getattr(board, 'port', '?')} allows pulses of 1.."
                               f"{max_pulse} ms; lower it in the configuration")
        # A cabinet that was out of service (or mid-restock) when it stopped stays shut.
        self.machine = SessionMachine(journal.write, initial=journal.cabinet_state())
        self._events: asyncio.Queue | None = None
        self._events_loop: asyncio.AbstractEventLoop | None = None
        self._channels = {shelf.id: shelf.channel for shelf in self.planogram.shelves}
        self.alarms: list[str] = []
        self.alarm_detail: dict[str, str] = {}      # alarm name -> what the latest one said
        # compartment lock channels (1..) the board last reported released, from its
        # ChannelLockChanged events (BoardState has no channels); `note_compartment`
        self.compartments_released: set[int] = set()
        # The touchscreen (cabinet.kiosk.KioskState): each step of a session publishes its
        # screen there; None (the tests of the controller alone, the bench): nothing shown.
        self.kiosk: kiosk.KioskState | None = None
        # The second factor (billing.pin.Pins: has(account), check(account, pin)); None: an
        # uncertain face is refused. The PIN comes from the kiosk (submit_pin).
        self.pins: Any = None
        self.pin_attempts = 3
        self.pin_timeout_s = 60.0
        self._pin_future: asyncio.Future | None = None

    # --- the touchscreen ---------------------------------------------------------------
    def show(self, make: Callable[[], "kiosk.Screen"]) -> None:
        """Publish the screen `make()` builds on the kiosk, if there is one. A screen that
        will not build (a name the kiosk refuses) is logged, never a session's failure."""
        if self.kiosk is None:
            return
        try:
            self.kiosk.publish(make())
        except kiosk.KioskError as e:
            log.error("kiosk: screen not shown: %s", e)

    async def show_preview(self, frame) -> None:
        """A face camera frame on the kiosk's look-at-the-camera screen."""
        if self.kiosk is None or frame is None:
            return
        jpeg = await self._blocking(preview_jpeg, frame)
        if jpeg is not None:
            try:
                self.kiosk.publish_preview(jpeg)
            except kiosk.KioskError as e:
                log.error("kiosk: preview not shown: %s", e)

    def submit_pin(self, pin: str | None) -> None:
        """The PIN typed on the kiosk (None: the customer cancelled); ActionRefused when no
        session is waiting for one."""
        future = self._pin_future
        if future is None or future.done():
            raise kiosk.ActionRefused("pin: no session is waiting for a PIN")
        future.set_result(pin)

    async def _second_factor(self, run: "_Run", candidates: tuple[str, ...], message: str):
        """(account id, refusal text, kiosk code) after the PIN pad: the accounts the face
        was near that have a PIN; `pin_attempts` tries within `pin_timeout_s`. Code None: the
        customer cancelled (the kiosk goes back to its welcome)."""
        if self.pins is None or self.kiosk is None:
            return None, message, "face_not_recognised"
        holders = [int(c) for c in candidates if await self._blocking(self.pins.has, int(c))]
        if not holders:
            return None, f"{message} (no PIN set for a second factor)", "face_not_recognised"
        # several accounts near the face: name none of them
        name = self.first_name(holders[0]) if len(holders) == 1 else None
        deadline = self.clock.monotonic() + self.pin_timeout_s
        attempts = self.pin_attempts
        loop = asyncio.get_running_loop()
        while attempts > 0:
            self.show(lambda: kiosk.SecondFactor(name, attempts_left=attempts))
            future = self._pin_future = loop.create_future()
            try:
                pin = await self.clock.wait_for(future, max(0.0, deadline - self.clock.monotonic()))
            except asyncio.TimeoutError:
                return None, "no PIN was entered in time", "timed_out"
            finally:
                self._pin_future = None
            if pin is None:
                return None, "the customer cancelled at the PIN pad", None
            for account_id in holders:
                if await self._blocking(self.pins.check, account_id, pin):
                    run.identity["second_factor"] = "pin"
                    standing = await self._blocking(self.billing.standing, account_id)
                    if not standing.ok:
                        return account_id, standing.reason, standing_refusal_code(standing.reason)
                    return account_id, "", ""
            attempts -= 1
        return None, f"wrong PIN {self.pin_attempts} times", "pin_wrong"

    def first_name(self, account_id: int | None) -> str | None:
        """The account's first name as the kiosk may show it (None when it may not)."""
        if account_id is None:
            return None
        name = kiosk.first_name_of(self.account_name(account_id))
        try:
            kiosk.Counting(name)            # the kiosk's own check of a first name
        except kiosk.KioskError:
            return None
        return name

    # --- helpers -----------------------------------------------------------------------
    async def _blocking(self, fn: Callable, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    def _queue(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._events is None or self._events_loop is not loop:
            self._events = self.bridge.attach(loop)
            self._events_loop = loop
        return self._events

    async def _wait_event(self, kinds: tuple[type, ...], timeout_s: float):
        """Next event of one of `kinds` within `timeout_s`, else None. Other events are noted."""
        queue = self._queue()
        deadline = self.clock.monotonic() + timeout_s
        while True:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return None
            try:
                event = await self.clock.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:
                return None
            if isinstance(event, kinds):
                return event
            self._note(event)

    def note_compartment(self, event: Any) -> None:
        """Keep `compartments_released` up to date with a ChannelLockChanged (any other
        event: nothing); `cabinet run` passes on the ones it reads between sessions. A board
        that rebooted has every lock engaged."""
        if isinstance(event, ev.ChannelLockChanged):
            if event.engaged:
                self.compartments_released.discard(event.channel)
            else:
                self.compartments_released.add(event.channel)
        elif isinstance(event, ev.McuReset):
            self.compartments_released.clear()

    def _note(self, event: Any) -> None:
        self.note_compartment(event)
        if isinstance(event, (ev.ForcedDoor, ev.Fault, ev.LinkLost, ev.McuReset,
                              ev.UncommandedUnlock)):
            self.alarms.append(type(event).__name__)
            log.warning("board event during session: %s", event)
        elif uncommanded_channel_release(event):
            self._compartment_tamper(event)

    def _compartment_tamper(self, event: Any) -> None:
        """A compartment's lock released without a command: a tamper alarm, as the main
        lock's UncommandedUnlock (cabinet run records it, runner.py)."""
        self.alarms.append(COMPARTMENT_UNLOCK)
        self.alarm_detail[COMPARTMENT_UNLOCK] = (f"compartment lock channel {event.channel} "
                                                 f"released without a command ({event.reason})")
        log.error("tamper: %s", self.alarm_detail[COMPARTMENT_UNLOCK])

    async def _snapshot(self, *, settled_now: bool = False) -> tuple[dict, dict]:
        """Settled weights per shelf id and one image per shelf camera.

        `settled_now`: the door has been shut and locked since the last session, so a shelf
        whose filter already reads stable is settled (no need to wait for a fresh window).
        """
        weights = await self._settle_weights(settled_now=settled_now)
        return weights, await self._capture_shelves()

    async def _settle_weights(self, *, settled_now: bool = False) -> dict:
        """Shelf id -> (grams, stable, the raw samples the reading rests on): the bundle keeps
        the measured window (>= 10 samples once settled), so reconcile estimates the noise."""
        channels = list(self._channels.values())
        readings = self.board.weights() if settled_now else {}
        if not readings or not all(readings[c].stable for c in channels):
            readings = await self._blocking(self.board.wait_stable, channels,
                                            self.timing.settle_s)
        samples_of = getattr(self.board, "samples", None)
        weights = {}
        for shelf_id, channel in self._channels.items():
            r = readings[channel]
            samples = list(samples_of(channel, r)) if samples_of is not None else []
            weights[shelf_id] = (float(r.grams), bool(r.stable), samples or [float(r.grams)])
        return weights

    async def _capture_shelves(self) -> dict:
        frames = await asyncio.gather(*(self._blocking(camera.capture)
                                        for camera in self.shelf_cameras.values()))
        return dict(zip(self.shelf_cameras, frames))

    # --- one session -------------------------------------------------------------------
    async def wait_for_face(self, timeout_s: float, poll_s: float = 0.1):
        """The face camera's next frame, or None when it gave none within the timeout.

        The simulated camera gives frames only while someone stands in front of it; a real
        camera gives them always, so a `cabinet run` loop would look for a face first
        (identification below refuses a frame without one)."""
        deadline = self.clock.monotonic() + timeout_s
        while self.clock.monotonic() < deadline:
            frame = await self._blocking(self.face_camera.capture)
            if frame is not None:
                return frame
            await self.clock.sleep_async(min(poll_s, deadline - self.clock.monotonic()))
        return None

    async def _open(self, **entry: str) -> "_Run":
        """A new session from idle (in service, the door shut), journalled as begun; `entry`
        says how the customer came when it was not their face (entry="qr_kiosk")."""
        self.poll_idle_events()
        if self.machine.state != "idle":
            raise CabinetError(f"cabinet {self.cabinet_id} is {self.machine.state.replace('_', ' ')}"
                               f" ({', '.join(self.alarms) or 'see the journal'}): no session "
                               f"can start until an operator puts it back in service")
        if await self._door_open():
            self.machine.fire("fault", cause="door open while idle and locked")
            self.alarms.append("DoorOpenWhileIdle")
            raise CabinetError(f"cabinet {self.cabinet_id}: the door is open while no session "
                               f"runs; out of service until an operator checks it")
        now = dt.datetime.fromtimestamp(self.clock.time(), dt.timezone.utc)
        session_id = now.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        run = _Run(session_id, self.clock)
        self.machine.session_id = session_id
        self.machine.fire("face_seen", cabinet_id=self.cabinet_id, **entry)
        return run

    async def session(self, frame, observed: tuple | None = None) -> SessionReport:
        """Run one customer session for a face frame, from idle back to idle. `observed`: what
        vision.faces.observe_single_face(frame, bgr=True) answered, when the caller already
        looked for a face in this frame (cabinet run does), so it is not detected again."""
        run = await self._open()
        # The shelves are read while the face is identified: _open found the door shut and
        # the lock holds it, so they show now what they will show at the unlock. Nothing is
        # stored until the account is decided and its hold answered (_admit).
        shelves = asyncio.ensure_future(self._snapshot(settled_now=True))
        previews: list[asyncio.Future] = []     # the kiosk's preview, JPEG-encoded meanwhile
        try:
            if not isinstance(getattr(self.kiosk, "screen", None), kiosk.LookAtCamera):
                self.show(kiosk.LookAtCamera)
            previews.append(asyncio.ensure_future(self.show_preview(frame)))

            try:
                account_id, refusal = await self.clock.wait_for(
                    self._identify(frame, run, observed, previews), self.timing.auth_s)
            except asyncio.TimeoutError:
                return self._deny(run, None, "identification took too long; please try again",
                                  trigger="auth_timeout", code="timed_out")
            if refusal and run.candidates:
                account_id, refusal, code = await self._second_factor(run, run.candidates,
                                                                      refusal)
                if refusal:
                    return self._deny(run, account_id, refusal, code=code)
            elif refusal:
                code = "face_not_recognised" if account_id is None \
                    else standing_refusal_code(refusal)
                return self._deny(run, account_id, refusal, code=code)
            return await self._admit(run, account_id, shelves)
        finally:
            for task in (shelves, *previews):
                await _finished(task)

    async def session_for_account(self, account_id: int, *, entry: str,
                                  on_admission: Callable[[str, str, str], None] | None = None
                                  ) -> SessionReport:
        """Run one session for an account that proved itself another way than its face (a
        kiosk QR code its phone app claimed, an entry code the face camera read; cabinet/qr.py):
        its standing, then exactly the face's path from the hold on (`_admit`).
        `on_admission(outcome, reason, code)` hears "unlocked" or "refused" as soon as known."""
        run = await self._open(entry=entry)
        run.identity = {"entry": entry}
        run.on_admission = on_admission
        try:
            standing = await self._blocking(self.billing.standing, account_id)
        except BillingError as e:
            return self._deny(run, None, str(e), code="account_blocked")
        if not standing.ok:
            return self._deny(run, account_id, standing.reason,
                              code=standing_refusal_code(standing.reason))
        return await self._admit(run, account_id)

    async def _admit(self, run: "_Run", account_id: int,
                     shelves: "asyncio.Future | None" = None) -> SessionReport:
        """An account identified and in good standing: hold, before-snapshot, unlock, then the
        door, reconcile and charge; one path for every way in (face, PIN, QR).

        The before-snapshot is stored while the gateway places the hold (`shelves`: the shelves'
        weights and images already being read, else read now), and the door unlocks only once
        both are done: a declined hold removes the bundle it no longer needs (a crash there
        leaves what a crash before the "authorized" entry always could: a bundle of a session
        the journal ends as denied)."""
        session_id = run.session_id
        if shelves is None:
            shelves = asyncio.ensure_future(self._snapshot(settled_now=True))
        before = asyncio.ensure_future(self._store_before(run, account_id, shelves))
        # Not under the timeout: a hold the gateway is placing must be known, not abandoned
        # (the client's own timeouts and retries bound it).
        try:
            hold = await self._blocking(self.billing.place_hold, session_id, account_id,
                                        cabinet_id=self.cabinet_id)
        except BaseException:
            await _finished(before)
            raise
        run.mark("held")
        if not hold.ok:
            await _finished(before)
            if run.bundle is not None:
                shutil.rmtree(run.bundle.dir, ignore_errors=True)
                run.bundle = None
            code = "hold_declined" if hold.code != "standing" \
                else standing_refusal_code(hold.reason)
            return self._deny(run, account_id, hold.reason, code=code)
        weights, images = await before
        run.mark("before_snapshot")
        run.account_id = account_id
        run.first_name = self.first_name(account_id)
        # Age-restricted goods (cabinet/age.py): the lock channels this customer may open.
        plan = age.door_plan(self.planogram, self.catalog,
                             await self._blocking(self.billing.age_verification, account_id))

        self.machine.fire("authorized", account_id=account_id, hold_auth=hold.auth_id,
                          lock_channels=list(plan.channels), **run.identity)
        try:
            await self._blocking(self.board.unlock, self.timing.unlock_pulse_ms)
        except LinkError as e:
            log.error("session %s: unlock failed: %s", session_id, e)
            run.flags.append("unlock_failed")
            run.admitted("unlock_failed", str(e), "")
            opened = None
        else:
            run.mark("unlocked")
            run.admitted("unlocked", "", "")
            await self._unlock_compartments(run, plan)
            self.show(lambda: kiosk.Unlocked(
                run.first_name, max(1, min(600, round(self.timing.unlock_pulse_ms / 1000))),
                age_notice=plan.notice is not None))
            opened = await self._wait_event((ev.DoorOpened,),
                                            self.timing.unlock_pulse_ms / 1000 + 0.5)
        if opened is None:
            self.machine.fire("unlock_expired")
            if "unlock_failed" not in run.flags:
                run.flags.append("door_never_opened")
            run.bundle.write_after(weights=weights, images=images)
            run.mark("door_closed")
            return await self._reconcile_and_charge(run)
        self.machine.fire("door_opened")
        self.show(lambda: kiosk.DoorOpen(run.first_name))
        return await self._after_door_opened(run)

    async def _unlock_compartments(self, run: "_Run", plan: age.DoorPlan) -> None:
        """Release each compartment the door plan opens for this customer (the restricted
        goods' own lock, only for a verified adult) with the main door's pulse; a compartment
        that stays shut is flagged, the session goes on behind the main door."""
        for channel in plan.channels:
            if channel == 0:
                continue
            try:
                await self._blocking(self.board.unlock, self.timing.unlock_pulse_ms,
                                     channel=channel)
            except LinkError as e:          # CommandRefused too: the board lacks the channel
                log.error("session %s: compartment lock channel %d not released: %s",
                          run.session_id, channel, e)
                if "compartment_unlock_failed" not in run.flags:
                    run.flags.append("compartment_unlock_failed")

    async def _after_door_opened(self, run: "_Run") -> SessionReport:
        """door_open -> door_closed -> (settle) -> reconcile -> charge."""
        if not run.recovered or await self._door_open():
            await self._wait_door_closed(run.flags, run.first_name)
        run.mark("door_shut")               # the DoorClosed event is here: time to receipt starts
        self.machine.fire("door_closed")
        self.show(lambda: kiosk.Counting(run.first_name))
        # The MCU ends the pulse as the door shuts; lock anyway, then make sure the door did
        # not open again in between (the basket is only known once it stays shut).
        await self._blocking(self.board.lock)
        while self._reopened() or await self._door_open():
            if "door_reopened" not in run.flags:
                run.flags.append("door_reopened")
            if await self._door_open():
                self.show(lambda: kiosk.DoorOpen(run.first_name))
                await self._wait_door_closed(run.flags, run.first_name)
                self.show(lambda: kiosk.Counting(run.first_name))
            await self._blocking(self.board.lock)
        run.mark("door_closed")
        return await self._settle_and_charge(run)

    async def _door_open(self) -> bool:
        """The door switch now, asked over the serial line off the event loop."""
        return (await self._blocking(self.board.state)).door_open

    def _reopened(self) -> bool:
        """Whether a DoorOpened is waiting in the queue (the door opened again)."""
        queue = self._queue()
        seen = False
        while not queue.empty():
            event = queue.get_nowait()
            if isinstance(event, ev.DoorOpened):
                seen = True
            else:
                self._note(event)
        return seen

    async def _settle_and_charge(self, run: "_Run") -> SessionReport:
        # The door is shut, so the shelves' images are final while the load cells still swing:
        # the cameras are read, stored and looked at (vision on every shelf camera) meanwhile.
        settle = asyncio.ensure_future(self._settle_weights())
        settle.add_done_callback(lambda _: run.mark("settled"))
        try:
            frames = await self._capture_shelves()
            run.mark("frames")
            await self._blocking(run.bundle.write_after_images, frames)
        except BaseException:
            settle.cancel()             # the session fails here; leave no wait behind it
            raise
        run.mark("captured")
        look = asyncio.ensure_future(self._look(run.bundle.path, dict(run.bundle.decoded)))
        look.add_done_callback(lambda _: run.mark("looked"))
        try:
            weights = await settle
        finally:
            seen = await look
        settled = all(stable for _, stable, _ in weights.values())
        run.bundle.write_after(weights=weights, images={})
        self.machine.fire("settled" if settled else "settle_timeout")
        if not settled:
            run.flags.append("shelf_unsettled")
        return await self._reconcile_and_charge(run, seen)

    async def _look(self, path: Path, known: dict) -> tuple:
        """The bundle as stored so far (its images from `known`, the very pixels the writer
        encoded losslessly, so no PNG is decoded) and what vision reads in its images: the
        function reconcile runs on a replay, one camera per worker thread at once."""
        bundle = await self._blocking(load_bundle, path, known=known)
        cameras = sorted(bundle.images)
        seen = await asyncio.gather(*(
            self._blocking(slot_vision, dataclasses.replace(bundle, images={c: bundle.images[c]}),
                           self.recognizer) for c in cameras))
        per_slot: dict = {}
        notes: dict = {}
        for slots, note in seen:
            per_slot.update(slots)
            notes.update(note)
        return bundle, (per_slot, notes)

    async def _reconcile_and_charge(self, run: "_Run", seen: tuple | None = None
                                    ) -> SessionReport:
        # Reconcile reads the bundle as stored (PNGs included) rather than the frames in
        # memory, so `cabinet reconcile BUNDLE` reproduces exactly what was charged; `seen`:
        # the vision already read from these same stored images while the shelves settled.
        def decide():
            if seen is None:
                return reconcile(load_bundle(run.bundle.path), recognizer=self.recognizer)
            earlier, evidence = seen
            return reconcile(load_bundle(run.bundle.path, known=earlier.decoded),
                             recognizer=self.recognizer, vision=lambda _b, _r: evidence)
        result = await self._blocking(decide)
        run.mark("reconciled")
        run.bundle.write_result(result)
        run.flags.extend(f for f in result.flags if f not in run.flags)
        self.inventory.apply(result, run.session_id)      # once per session, even if resumed
        self.machine.fire("reconciled", basket=dict(result.basket),
                          confidence=round(float(result.confidence), 4), flags=list(run.flags))
        return await self._charge(run, result)

    async def _charge(self, run: "_Run", result) -> SessionReport:
        # Restricted goods an unverified customer took are not sold silently (cabinet/age.py):
        # left out of the charge, the session flagged for the review queue, an alarm raised.
        verification = None if run.account_id is None else \
            await self._blocking(self.billing.age_verification, run.account_id)
        decision = age.restricted_lines(result.basket, self.catalog, verification)
        if decision.withheld:
            run.flags.extend(f for f in decision.flags if f not in run.flags)
            self.alarms.append(AGE_RESTRICTED_TAKEN)
            self.alarm_detail[AGE_RESTRICTED_TAKEN] = f"session {run.session_id}: {decision.alarm}"
            log.error("session %s: %s", run.session_id, decision.alarm)
        lines = [Line(sku, self.catalog[sku].name, qty, self.catalog[sku].price)
                 for sku, qty in sorted(decision.sell.items())]
        # Only restricted goods taken: billing keeps the hold for the operator's decision
        # (pending, state "review"); with other goods, those are charged now (docs/age.md).
        receipt = await self._blocking(self.billing.settle, run.session_id, lines,
                                       flags=tuple(run.flags), review=decision.alarm)
        run.mark("charge_sent")
        self.machine.fire("finished", outcome=receipt.outcome, total=receipt.total.amount,
                          **({"withheld": decision.withheld} if decision.withheld else {}))
        self.machine.session_id = None
        if receipt.outcome == "pending" or decision.withheld:
            self.show(lambda: kiosk.PendingReview(run.first_name,
                                                  age_restricted=bool(decision.withheld)))
        else:
            self.show(lambda: kiosk.Receipt.from_billing(receipt))
        return SessionReport(run.session_id, run.account_id, self.account_name(run.account_id),
                             receipt.outcome, dict(result.basket), receipt.total.amount,
                             receipt.total.currency, tuple(run.flags), "", receipt.render_text(),
                             str(run.bundle.path), run.timings_ms())

    # --- after a crash -----------------------------------------------------------------
    async def recover(self) -> list[SessionReport]:
        """Finish every session the journal shows open (a crash or power cut mid-session).

        The MCU has relocked by itself (the pulse is timed there), so the door is either
        closed or being closed by the customer; each session resumes at its journalled state
        and ends with exactly one outcome. Billing's keys make a repeated capture harmless.
        """
        reports = []
        for session_id, state in self.journal.open_sessions():
            entries = self.journal.entries(session_id)
            data: dict[str, Any] = {}
            for entry in entries:
                data.update(json.loads(entry.data or "{}"))
            run = _Run(session_id, self.clock, recovered=True)
            run.account_id = data.get("account_id")
            run.first_name = self.first_name(run.account_id)
            run.flags = list(data.get("flags", [])) + ["recovered_after_restart"]
            self.machine = SessionMachine(self.journal.write, initial=state)
            self.machine.session_id = session_id
            log.warning("resuming session %s from state %s", session_id, state)
            if state == "face_auth":
                reports.append(self._abandon_auth(run))
                continue
            run.bundle = BundleWriter(self.bundles_dir, session_id)
            if state == "unlocked":
                self.machine.fire("door_opened", recovered=True)
                reports.append(await self._after_door_opened(run))
            elif state == "door_open":
                reports.append(await self._after_door_opened(run))
            elif state == "door_closed":
                reports.append(await self._settle_and_charge(run))
            elif state == "reconcile":
                reports.append(await self._reconcile_and_charge(run))
            elif state == "charge":
                from cabinet.reconcile import ReconcileResult
                text = (run.bundle.path / "result.json").read_text("utf-8")
                result = ReconcileResult.from_json(text)
                self.inventory.apply(result, session_id)
                reports.append(await self._charge(run, result))
        self.machine = SessionMachine(self.journal.write, initial=self.journal.cabinet_state())
        # Refusals journalled whose record (or hold release) the crash cut off.
        for session_id, account_id, reason in self.journal.refusals_unrecorded():
            log.warning("session %s: refused before the restart; recording it", session_id)
            self._release_hold(session_id, account_id, reason)
        # Gateway calls left unanswered by the crash: captures, voids, holds of denied sessions.
        await self._blocking(self.billing.retry_pending)
        return reports

    async def _store_before(self, run: "_Run", account_id: int, shelves: asyncio.Future):
        """The session's bundle: its context, the vision it will be read with, and the
        before-snapshot (the shelves' weights and images once `shelves` has them); returns
        (weights, images) for a door that never opens."""
        run.bundle = BundleWriter(self.bundles_dir, run.session_id)
        run.bundle.write_context(planogram_path=self.planogram_path,
                                 catalog_path=self.catalog_path, account_id=str(account_id),
                                 load_cell_noise_g=self.load_cell_noise_g,
                                 min_confidence=self.min_confidence, planogram=self.planogram,
                                 catalog=self.catalog)
        if self.shelf_calibration is not None or self.recognizer is not None:
            await self._blocking(run.bundle.write_vision, calibration=self.shelf_calibration,
                                 recognizer=self.recognizer)
        # session() checked the door shut and the lock holds it: the shelves' filter reading
        # is the settled baseline, no fresh stability window needed.
        weights, images = await shelves
        inventory = self.inventory.slots()
        await self._blocking(run.bundle.write_before, weights=weights, images=images,
                             inventory=inventory)      # PNGs encoded off the event loop
        return weights, images

    def _abandon_auth(self, run: "_Run") -> SessionReport:
        """Crashed while identifying: the lock never released; release any hold placed."""
        return self._deny(run, run.account_id,
                          "the cabinet restarted while identifying the customer")

    async def _identify(self, frame, run: "_Run", observed: tuple | None = None,
                        previews: list | None = None):
        """(account id, refusal reason or ""): whose face this is, and may they shop.

        Several frames decide, not one (vision/identity.py): the one that started the session
        and the next ones the face camera gives, all inside the auth window. Accept -> the
        account, then its admission (refused, or the PIN pad when its trust asks); second factor -> refused with the kiosk's message until
        the kiosk can take the PIN (never an unlock); refuse -> refused with its message. The
        journal keeps the reason and the distances, never a template."""
        # One frame at a time, the camera's next frame read while this one is encoded; done
        # before the last frame only when no frame still to come can change the accept
        # (vision/identity.py settled_accept: with three frames, two agreeing clearly).
        tally = FrameTally(self.gallery, self.identity_policy, frames=self.identity_frames,
                           bgr=True)
        this, decision = frame, None
        while decision is None:
            following = asyncio.ensure_future(self._blocking(self.face_camera.capture)) \
                if tally.frames_left > 1 else None
            if this is None:
                tally.missed()
            elif observed is not None and this is frame:
                tally.add_observed(*observed)
            else:
                await self._blocking(tally.add, this)
            this = None if following is None else await following
            decision = tally.settled() or (tally.decision() if tally.frames_left == 0 else None)
            if decision is None and this is not None and previews is not None:
                previews.append(asyncio.ensure_future(self.show_preview(this)))
        run.mark("identified")
        run.identity = {
            "identity_outcome": decision.outcome, "identity_reason": decision.reason,
            "frames_seen": decision.frames_seen, "frames_used": decision.frames_used,
            "best_distance": None if decision.best is None else round(decision.best.distance, 4),
            "second_distance": None if decision.second is None
            else round(decision.second.distance, 4)}
        if decision.outcome != ACCEPT:
            if decision.outcome == SECOND_FACTOR:
                log.info("session %s: second factor needed (%s)", run.session_id,
                         decision.reason)
                run.candidates = tuple(decision.candidates)
            return None, decision.message
        account_id = int(decision.account_id)
        admission = await self._blocking(self.billing.admission, account_id)
        if not admission.allowed:
            return account_id, admission.reason
        if admission.entry == "second_factor":
            return await self._trust_second_factor(run, account_id, admission)
        return account_id, ""

    async def _trust_second_factor(self, run: "_Run", account_id: int, admission):
        """A confident face whose account's trust asks for a second factor (billing/standing.py,
        docs/identity.md): the PIN pad, for this account only. Low trust (code
        low_trust_second_factor) is refused where no PIN can be typed; the middle band (a new
        account) is asked where the cabinet has a pad and the account a PIN, else its face and
        the hold admit it (softer than docs/customers.md; docs/identity.md, Limits)."""
        run.identity["trust_entry"] = admission.code
        can_ask = self.pins is not None and self.kiosk is not None \
            and await self._blocking(self.pins.has, account_id)
        if can_ask:
            run.candidates = (str(account_id),)
            return None, admission.reason
        if admission.code == "low_trust_second_factor":
            return account_id, ("this account must confirm with a PIN and none can be typed "
                                "here: set a PIN in the app or use the QR code")
        run.identity["trust_entry"] = "second_factor_unavailable"
        return account_id, ""

    # --- operator restock ---------------------------------------------------------------
    async def restock(self, operator: str, levels: Mapping[str, int] | None = None,
                      *, open_timeout_s: float | None = None) -> dict[str, list[str]]:
        """An operator's restock visit: unlock, wait for the door to open and close, then
        take the planogram's levels (each slot's `stock`, else its capacity) as the stock.

        Only from idle; the unlock is the same MCU-timed pulse a customer gets (invariant 1:
        an operator is the one other reason the lock may release). Returns the new belief.
        """
        if not operator.strip():
            raise CabinetError("restock: name the operator doing it")
        levels = dict(levels) if levels is not None else self.planogram.initial_stock()
        for slot_id, count in levels.items():
            if not self.planogram.has_slot(slot_id):
                raise CabinetError(f"restock: slot '{slot_id}' is not in the planogram")
            if not 0 <= count <= self.planogram.slot(slot_id).capacity:
                raise CabinetError(f"restock: slot {slot_id} holds 0.."
                                   f"{self.planogram.slot(slot_id).capacity}, not {count}")
        self.poll_idle_events()
        self.machine.fire("start_restock", operator=operator, levels=levels)
        await self._blocking(self.board.unlock, self.timing.unlock_pulse_ms)
        wait_s = open_timeout_s if open_timeout_s is not None else \
            self.timing.unlock_pulse_ms / 1000 + 0.5
        opened = await self._wait_event((ev.DoorOpened,), wait_s)
        if opened is None:
            self.machine.fire("end_restock", operator=operator, done=False)
            return self.inventory.slots()
        flags: list[str] = []
        await self._wait_door_closed(flags)
        await self._blocking(self.board.lock)
        self.inventory.restock(levels)
        self.machine.fire("end_restock", operator=operator, done=True, flags=flags)
        return self.inventory.slots()

    # --- outside sessions --------------------------------------------------------------
    def on_idle_event(self, event: Any) -> None:
        """Board events between sessions: a forced door or a lost link takes the cabinet out
        of service (no session starts) until the link is back or an operator clears it."""
        self.note_compartment(event)
        if isinstance(event, (ev.ForcedDoor, ev.LinkLost)) and self.machine.state == "idle":
            self.machine.fire("fault", cause=type(event).__name__, detail=str(event))
            self.alarms.append(type(event).__name__)
            log.error("out of service: %s", event)
        elif isinstance(event, ev.LinkRestored) and self.machine.state == "out_of_service" \
                and self.alarms and self.alarms[-1] == "LinkLost":
            self.machine.fire("repaired", by="link restored")
        elif uncommanded_channel_release(event):
            self._compartment_tamper(event)

    def repair(self, operator: str) -> None:
        """An operator (or technician) puts the cabinet back in service."""
        self.machine.fire("repaired", by=operator)
        self.alarms.clear()

    def poll_idle_events(self) -> None:
        queue = self._queue()
        while not queue.empty():
            self.on_idle_event(queue.get_nowait())

    async def _wait_door_closed(self, flags: list[str], first_name: str | None = None):
        """Wait for the door to close: a kiosk alarm after door_open_alarm_s, an operator
        alert after door_open_max_s, then keep waiting (the basket is unknown while open)."""
        closed = await self._wait_event((ev.DoorClosed,), self.timing.door_open_alarm_s)
        if closed is not None:
            return closed
        self.machine.fire("door_open_alarm", level="kiosk", after_s=self.timing.door_open_alarm_s)
        flags.append("door_open_too_long")
        self.show(lambda: kiosk.DoorOpen(first_name, open_too_long=True))
        log.warning("door open for %.0f s: kiosk alarm", self.timing.door_open_alarm_s)
        closed = await self._wait_event(
            (ev.DoorClosed,), max(0.0, self.timing.door_open_max_s - self.timing.door_open_alarm_s))
        if closed is not None:
            return closed
        self.machine.fire("door_open_alarm", level="operator", after_s=self.timing.door_open_max_s)
        log.error("door open for %.0f s: operator alerted", self.timing.door_open_max_s)
        while True:
            closed = await self._wait_event((ev.DoorClosed,), 60.0)
            if closed is not None or not await self._door_open():
                return closed

    def _deny(self, run: "_Run", account_id: int | None, reason: str,
              trigger: str = "denied", code: str | None = "timed_out") -> SessionReport:
        """Refuse the session; `code` is the kiosk's reason (cabinet.kiosk.REFUSAL_REASONS),
        None when the customer cancelled (the kiosk's welcome again)."""
        self.machine.fire(trigger, reason=reason, account_id=account_id, **run.identity)
        run.admitted("refused", reason, code or "cancelled")
        self.show(lambda: kiosk.Refused(code) if code is not None else kiosk.Welcome())
        self._release_hold(run.session_id, account_id, reason)
        self.machine.session_id = None
        name = self.account_name(account_id) if account_id is not None else None
        return SessionReport(run.session_id, account_id, name, "denied", {}, 0,
                             self.catalog.currency, tuple(run.flags), reason,
                             timings_ms=run.timings_ms())


    def _release_hold(self, session_id: str, account_id: int | None, reason: str) -> None:
        """End a refused session with one outcome and no hold left on the card.

        An authorised hold is voided now; one whose answer never came is marked denied, so
        billing's retry_pending() finds it and voids it; with no hold, the refusal is recorded.
        """
        if self.billing.has_hold(session_id):
            try:
                self.billing.void_session(session_id, reason)
                return
            except BillingError as e:
                log.warning("session %s: hold not voided now (%s); marked for release", session_id, e)
        self.journal.record_denied(session_id, account_id, reason, cabinet_id=self.cabinet_id,
                                   currency=self.catalog.currency)


async def _finished(task: asyncio.Future) -> None:
    """Wait for a task whose result is no longer wanted (a shelf snapshot after a refusal), so
    no camera read outlives its session; its error, if any, is no longer anyone's concern."""
    if not task.done():
        await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


@dataclasses.dataclass
class _Run:
    """What one session carries from phase to phase (rebuilt from the journal on recovery)."""

    session_id: str
    clock: Clock
    recovered: bool = False
    account_id: int | None = None
    bundle: BundleWriter | None = None
    flags: list[str] = dataclasses.field(default_factory=list)
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)
    first_name: str | None = None           # what the kiosk may call the customer
    candidates: tuple[str, ...] = ()        # second factor: the accounts the face was near
    on_admission: Callable[[str, str, str], None] | None = None   # QR entry: told once
    marks: dict[str, float] = dataclasses.field(default_factory=dict)
    t0: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.t0 = self.clock.monotonic()

    def admitted(self, outcome: str, reason: str, code: str) -> None:
        """Tell whoever waits on the door (a QR claim) how it went, once."""
        tell, self.on_admission = self.on_admission, None
        if tell is not None:
            tell(outcome, reason, code)

    def mark(self, name: str) -> None:
        """Seconds since the session started, by the controller's clock (real time with
        the system clock: the session bench reports these)."""
        self.marks[name] = self.clock.monotonic() - self.t0

    def timings_ms(self) -> dict[str, float]:
        return {k: round(v * 1000, 1) for k, v in self.marks.items()}
