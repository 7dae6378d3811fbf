"""KioskState: the one place the controller tells the customer's screen what to show.

The controller publishes a *screen* (a frozen dataclass below) whenever its session moves on;
every open kiosk page receives it over server-sent events (`stream()`), coalesced to the
latest screen, because a touchscreen only ever needs to show the present. Preview frames of
the face camera (JPEG bytes) and the QR code's text are kept on the hub, never put in the
stream: the stream carries a version number and the page fetches `preview.jpg` / `qr.png`.

What the page may learn is decided here, by the screen types' fields: a first name (one word,
no digits or '@', so an email or an account id cannot be passed off as one), the basket's
lines and totals, and reason codes the catalogs translate. No account id, email, token, face
distance or PIN is a field of any screen, so none can reach the browser.

The customer's taps come back as actions (`start`, `use_qr`, `cancel`, `pin`): the web app
calls `act(...)`, which checks the action fits the screen on show and calls the handler the
controller registered with `set_handlers(...)` (sync or async). The controller answers by
publishing the next screen (a PIN is answered with `unlocked` or `refused`, or `second_factor`
again with one attempt fewer).

Publishing is thread-safe (the serial reader thread, a worker or the event loop may call it);
streams wake on the event loop they run on. Time (the keep-alive of idle streams) comes from
the Clock port.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, ClassVar, Mapping

from billing.money import CURRENCY_EXPONENTS, check_currency
from firmware_bridge.clock import Clock, clock_or_system

# Why a customer was turned away; the page shows the catalog's `refused.<code>`.
REFUSAL_REASONS = ("face_not_recognised", "account_blocked", "unpaid_debt",
                   "payment_method_invalid", "hold_declined", "pin_wrong", "qr_expired", "qr_used", "qr_invalid",
                   "timed_out", "age_restricted")
# Why the cabinet does not sell; the page shows the catalog's `out_of_service.<code>`.
OUT_OF_SERVICE_REASONS = ("hardware_fault", "link_lost", "door_fault", "temperature",
                          "restocking", "maintenance", "payments_unavailable")
ACTIONS = ("start", "use_qr", "cancel", "pin")
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_PREVIEW_BYTES = 2 * 1024 * 1024
_NAME_RE = re.compile(r"^[^\s@\d<>&\"'/\\]{1,40}$")


class KioskError(ValueError):
    """A screen, frame or action the kiosk refuses; the message names the field and the fix."""


class ActionRefused(KioskError):
    """An action that does not fit the screen on show (HTTP 409)."""


class NoHandler(RuntimeError):
    """The controller registered no handler for an action (HTTP 503)."""


def first_name_of(display_name: str | None) -> str | None:
    """The first word of an account's display name, or None when there is none to show."""
    if not display_name or not display_name.strip():
        return None
    word = display_name.strip().split()[0][:40]
    return word if _NAME_RE.match(word) else None


def _check_name(screen: str, name: str | None) -> None:
    if name is None:
        return
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise KioskError(f"kiosk screen {screen!r}: first_name {name!r} is not a first name "
                         f"(one word, no digits, '@' or markup); pass first_name_of(account.name)")


def _check_choice(screen: str, field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise KioskError(f"kiosk screen {screen!r}: {field} {value!r} is not one of "
                         f"{', '.join(allowed)}; add it to cabinet/kiosk/state.py and the "
                         f"three catalogs in cabinet/kiosk/i18n/")


def _check_count(screen: str, field: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise KioskError(f"kiosk screen {screen!r}: {field} {value!r} must be an integer "
                         f"from {low} to {high}")


@dataclasses.dataclass(frozen=True)
class Screen:
    """A screen of the kiosk; `wire()` is exactly what the page receives."""

    name: ClassVar[str] = ""

    def wire(self) -> dict[str, Any]:
        return {"screen": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Welcome(Screen):
    name: ClassVar[str] = "welcome"


@dataclasses.dataclass(frozen=True)
class LookAtCamera(Screen):
    """Face identification under way; frames come through `KioskState.publish_preview`."""

    name: ClassVar[str] = "look_at_camera"


@dataclasses.dataclass(frozen=True)
class QrCode(Screen):
    """The QR alternative: `code` (the controller's signed short-lived code) is drawn as a PNG
    served at qr.png and never put in the stream."""

    name: ClassVar[str] = "qr"
    code: str
    expires_in_s: int

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not 1 <= len(self.code) <= 1000:
            raise KioskError("kiosk screen 'qr': code must be a non-empty string of at most "
                             "1000 characters (the signed code the phone app scans)")
        _check_count(self.name, "expires_in_s", self.expires_in_s, 1, 3600)

    def wire(self) -> dict[str, Any]:
        return {"screen": self.name, "expires_in_s": self.expires_in_s}


@dataclasses.dataclass(frozen=True)
class SecondFactor(Screen):
    """The face match was uncertain: the customer types their PIN on the pad."""

    name: ClassVar[str] = "second_factor"
    first_name: str | None
    digits: int = 4
    attempts_left: int = 3

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)
        _check_count(self.name, "digits", self.digits, 4, 8)
        _check_count(self.name, "attempts_left", self.attempts_left, 1, 10)


@dataclasses.dataclass(frozen=True)
class Refused(Screen):
    name: ClassVar[str] = "refused"
    reason: str

    def __post_init__(self) -> None:
        _check_choice(self.name, "reason", self.reason, REFUSAL_REASONS)


@dataclasses.dataclass(frozen=True)
class Unlocked(Screen):
    name: ClassVar[str] = "unlocked"
    first_name: str | None
    open_within_s: int = 10
    age_notice: bool = False    # restricted goods share the door and are not for this customer

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)
        _check_count(self.name, "open_within_s", self.open_within_s, 1, 600)
        if not isinstance(self.age_notice, bool):
            raise KioskError("kiosk screen 'unlocked': age_notice must be True or False")


@dataclasses.dataclass(frozen=True)
class DoorOpen(Screen):
    name: ClassVar[str] = "door_open"
    first_name: str | None
    open_too_long: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)
        if not isinstance(self.open_too_long, bool):
            raise KioskError("kiosk screen 'door_open': open_too_long must be True or False")


@dataclasses.dataclass(frozen=True)
class Counting(Screen):
    """Door closed; the controller is working out the basket."""

    name: ClassVar[str] = "counting"
    first_name: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)


@dataclasses.dataclass(frozen=True)
class ReceiptLine:
    name: str
    qty: int
    unit_price: int      # minor units
    amount: int          # minor units

    def check(self, where: str) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 120:
            raise KioskError(f"{where}: the product name must be 1 to 120 characters")
        _check_count(where, "qty", self.qty, 1, 999)
        _check_count(where, "unit_price", self.unit_price, 0, 10**9)
        if self.amount != self.qty * self.unit_price:
            raise KioskError(f"{where}: amount {self.amount} is not qty {self.qty} x "
                             f"unit_price {self.unit_price}")


@dataclasses.dataclass(frozen=True)
class Receipt(Screen):
    """Items, prices and the total (minor units of `currency`); nothing taken = no lines."""

    name: ClassVar[str] = "receipt"
    first_name: str | None
    lines: tuple[ReceiptLine, ...]
    total: int
    currency: str

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)
        try:
            check_currency(self.currency, "kiosk screen 'receipt'")
        except ValueError as e:
            raise KioskError(str(e)) from e
        for i, line in enumerate(self.lines):
            line.check(f"kiosk screen 'receipt' line {i + 1}")
        if self.total != sum(line.amount for line in self.lines):
            raise KioskError(f"kiosk screen 'receipt': total {self.total} is not the sum of "
                             f"its lines ({sum(line.amount for line in self.lines)})")

    @classmethod
    def from_billing(cls, receipt: Any) -> Receipt:
        """From billing.receipt.Receipt: its lines and total, the account's first name only."""
        return cls(first_name=first_name_of(receipt.account_name),
                   lines=tuple(ReceiptLine(line.name, line.qty, line.unit_price.amount,
                                           line.amount.amount) for line in receipt.lines),
                   total=receipt.total.amount, currency=receipt.total.currency)

    def wire(self) -> dict[str, Any]:
        out = super().wire()
        out["exponent"] = CURRENCY_EXPONENTS[self.currency]
        return out


@dataclasses.dataclass(frozen=True)
class PendingReview(Screen):
    """Reconcile was not sure: what is certain is charged, the rest goes to an operator."""

    name: ClassVar[str] = "pending_review"
    first_name: str | None = None
    age_restricted: bool = False    # age-restricted items were taken and not charged

    def __post_init__(self) -> None:
        _check_name(self.name, self.first_name)
        if not isinstance(self.age_restricted, bool):
            raise KioskError("kiosk screen 'pending_review': age_restricted must be True or "
                             "False")


@dataclasses.dataclass(frozen=True)
class OutOfService(Screen):
    name: ClassVar[str] = "out_of_service"
    reason: str

    def __post_init__(self) -> None:
        _check_choice(self.name, "reason", self.reason, OUT_OF_SERVICE_REASONS)


SCREENS: tuple[type[Screen], ...] = (Welcome, LookAtCamera, QrCode, SecondFactor, Refused,
                                     Unlocked, DoorOpen, Counting, Receipt, PendingReview,
                                     OutOfService)
# The screen on show decides which taps mean something.
_ACTIONS_ON = {"start": (Welcome,), "use_qr": (LookAtCamera,),
               "cancel": (LookAtCamera, QrCode, SecondFactor), "pin": (SecondFactor,)}
Handler = Callable[..., "Awaitable[None] | None"]


class KioskState:
    """The hub between the controller and every open kiosk page."""

    def __init__(self, *, clock: Clock | None = None, keepalive_s: float = 15.0):
        self._clock = clock_or_system(clock)
        self._keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._screen: Screen = Welcome()
        self._seq = 1
        self._preview: bytes | None = None
        self._preview_seq = 0
        self._closed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._handlers: dict[str, Handler] = {}

    # -- the controller's side -------------------------------------------------------------

    def publish(self, screen: Screen) -> int:
        """Show `screen` on every kiosk page; returns its sequence number."""
        if not isinstance(screen, Screen) or type(screen) not in SCREENS:
            raise KioskError(f"KioskState.publish: {screen!r} is not a kiosk screen; use one "
                             f"of {', '.join(s.__name__ for s in SCREENS)}")
        with self._lock:
            self._screen = screen
            self._seq += 1
            if not isinstance(screen, LookAtCamera):
                self._preview = None    # a face frame never outlives its screen
            seq = self._seq
        self._wake()
        return seq

    def publish_preview(self, jpeg: bytes) -> bool:
        """Show a face camera frame (JPEG) while `look_at_camera` is on; False (dropped) on
        any other screen, so a late frame from the worker pool is never shown."""
        if not isinstance(jpeg, (bytes, bytearray)) or not bytes(jpeg[:3]) == JPEG_MAGIC:
            raise KioskError("KioskState.publish_preview: the frame is not JPEG bytes (encode "
                             "it with cv2.imencode('.jpg', frame) first)")
        if len(jpeg) > MAX_PREVIEW_BYTES:
            raise KioskError(f"KioskState.publish_preview: {len(jpeg)} bytes is over the "
                             f"{MAX_PREVIEW_BYTES} byte limit; scale the frame down")
        with self._lock:
            if not isinstance(self._screen, LookAtCamera):
                return False
            self._preview = bytes(jpeg)
            self._preview_seq += 1
        self._wake()
        return True

    def set_handlers(self, **handlers: Handler) -> None:
        """Register what the controller does on a tap: start(), use_qr(), cancel(), pin(pin).
        Each may be a plain function or a coroutine function."""
        for action, fn in handlers.items():
            if action not in ACTIONS:
                raise KioskError(f"KioskState.set_handlers: unknown action {action!r}; the "
                                 f"actions are {', '.join(ACTIONS)}")
            if not callable(fn):
                raise KioskError(f"KioskState.set_handlers: the handler for {action!r} is "
                                 f"not callable")
        with self._lock:
            self._handlers.update(handlers)

    def close(self) -> None:
        """End every open stream (call before the web server shuts down)."""
        with self._lock:
            self._closed = True
        self._wake()

    # -- the web app's side ----------------------------------------------------------------

    @property
    def screen(self) -> Screen:
        with self._lock:
            return self._screen

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"seq": self._seq, "preview": self._preview_seq if self._preview else 0,
                    **self._screen.wire()}

    def preview(self) -> bytes | None:
        with self._lock:
            return self._preview

    def qr_code(self) -> str | None:
        with self._lock:
            return self._screen.code if isinstance(self._screen, QrCode) else None

    async def act(self, action: str, *args: Any) -> None:
        """Run the controller's handler for a tap; ActionRefused when it does not fit."""
        with self._lock:
            screen, fn = self._screen, self._handlers.get(action)
        if action not in ACTIONS:
            raise KioskError(f"unknown kiosk action {action!r}")
        if not isinstance(screen, _ACTIONS_ON[action]):
            raise ActionRefused(f"kiosk action {action!r} does not fit the screen "
                                f"{screen.name!r} on show")
        if action == "pin":
            pin = args[0] if args else None
            assert isinstance(screen, SecondFactor)
            if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() \
                    or len(pin) != screen.digits:
                raise KioskError(f"kiosk action 'pin': the PIN must be {screen.digits} digits")
        if fn is None:
            raise NoHandler(f"kiosk action {action!r}: the controller registered no "
                              f"handler (KioskState.set_handlers({action}=...))")
        result = fn(*args)
        if inspect.isawaitable(result):
            await result

    async def stream(self) -> AsyncIterator[dict[str, Any] | None]:
        """The latest snapshot whenever it changes; None after `keepalive_s` of quiet (the
        web app sends an SSE comment so proxies and the page know the line is alive)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.add(waiter)
        last: tuple[int, int] | None = None
        try:
            while True:
                event.clear()
                with self._lock:
                    closed = self._closed
                if closed:
                    return
                snap = self.snapshot()
                key = (snap["seq"], snap["preview"])
                if key != last:
                    last = key
                    yield snap
                    continue
                try:
                    await self._clock.wait_for(event.wait(), self._keepalive_s)
                except asyncio.TimeoutError:
                    yield None
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._waiters)

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:     # that stream's loop has closed
                pass
