"""The Clock port: every timeout, retry, settle window and heartbeat asks a clock for the time.

Why here: firmware_bridge is the lowest layer that waits on time (link heartbeats, retransmits,
the simulated MCU's unlock pulse), and `cabinet` imports it; `billing` and `vision` take plain
callables (`sleep`, `now`) instead, so no package imports another it should not.

Two clocks, one contract:
- `SystemClock` is the real thing (time.monotonic, time.time, blocking and asyncio sleeps).
- `ManualClock` stands still until a test calls `advance(seconds)`. Threads blocked in
  `sleep`/`wait`, and coroutines in `sleep_async`/`wait_for`, wake exactly when the clock passes
  their deadline, so a 30 s door-open timeout is tested in microseconds and never races the
  machine's load. `sleepers()` says how many are waiting, so a test can advance only once the
  code under test has reached its wait (`wait_for_sleepers`). `deadlines()` lists when each
waiter is due, `wait_until_idle(n)` blocks (in real time, bounded) until n threads wait and none
of them is past due, and `advance_to_next()` moves time exactly to the earliest deadline, so a
test can step a retransmit or reconnect schedule deadline by deadline and read exact times.

`wait(event, timeout)` is the one primitive threads need besides `sleep`: "until this happens,
or until the clock says the timeout passed". With a ManualClock, the event is still noticed at
once (it is checked every few real milliseconds); only the timeout is virtual.
"""
from __future__ import annotations

import asyncio
import threading
import time as _time
from typing import Any, Awaitable, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float: ...                      # seconds, never goes back
    def time(self) -> float: ...                           # wall clock, UTC epoch seconds
    def sleep(self, seconds: float) -> None: ...           # block this thread
    def wait(self, event: threading.Event, timeout: float | None) -> bool: ...
    async def sleep_async(self, seconds: float) -> None: ...
    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T: ...


class SystemClock:
    """Real time. Stateless; `SYSTEM` is the shared instance."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            _time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(None if timeout is None else max(0.0, timeout))

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        return await asyncio.wait_for(aw, timeout)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM = SystemClock()


class ManualClock:
    """A clock that moves only when told to; safe to use from any thread and any event loop."""

    _EVENT_POLL_S = 0.002       # real seconds between looks at a threading.Event in wait()

    def __init__(self, start: float = 1000.0, wall_start: float = 1_800_000_000.0):
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._cond = threading.Condition()
        self._timers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._blocked = 0           # threads inside sleep()/wait()
        self._thread_deadlines: list[float] = []     # one per blocked thread (inf: no timeout)

    # --- reading -------------------------------------------------------------------------
    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def time(self) -> float:
        with self._cond:
            return self._now + self._wall_offset

    def deadlines(self) -> list[float]:
        """When each waiting thread and coroutine is due, soonest first (inf: no timeout)."""
        with self._cond:
            self._timers = [t for t in self._timers if not t[2].done()]
            return sorted(self._thread_deadlines + [t[0] for t in self._timers])

    def sleepers(self) -> int:
        """Threads and coroutines now waiting on this clock."""
        with self._cond:
            self._timers = [t for t in self._timers if not t[2].done()]
            return self._blocked + len(self._timers)

    # --- moving --------------------------------------------------------------------------
    def advance(self, seconds: float) -> float:
        """Move time forward and wake everyone whose deadline has come; returns the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock.advance({seconds}): time never goes back")
        with self._cond:
            self._now += seconds
            now = self._now
            due = [t for t in self._timers if t[0] <= now]
            self._timers = [t for t in self._timers if t[0] > now]
            self._cond.notify_all()
        for _, loop, fut in due:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)
        return now

    def advance_to_next(self) -> float:
        """Advance exactly to the earliest finite deadline of a waiter; returns the new time."""
        with self._cond:
            now = self._now
        due = [d for d in self.deadlines() if d != float("inf")]
        if not due:
            raise RuntimeError("ManualClock.advance_to_next: nobody waits with a timeout")
        return self.advance(max(0.0, due[0] - now))

    def wait_until_idle(self, count: int = 1, timeout_s: float = 5.0) -> None:
        """Block (in real time, bounded) until exactly ``count`` threads wait on this clock and
        none of them is past its deadline: everything due at the current time has run."""
        deadline = _time.monotonic() + timeout_s
        while True:
            with self._cond:
                waiting = list(self._thread_deadlines)
                now = self._now
            if len(waiting) == count and all(d > now for d in waiting):
                return
            if _time.monotonic() >= deadline:
                raise TimeoutError(f"ManualClock: expected {count} idle waiter(s) within "
                                   f"{timeout_s} s of real time, found deadlines {waiting} at "
                                   f"now={now}")
            _time.sleep(0.001)

    def wait_for_sleepers(self, count: int = 1, timeout_s: float = 5.0) -> None:
        """Block (in real time, bounded) until at least `count` waiters sit on this clock.

        Tests call it before `advance` so the code under test has reached its wait; a bound
        that passes raises, naming what was expected, instead of hanging the suite.
        """
        deadline = _time.monotonic() + timeout_s
        while self.sleepers() < count:
            if _time.monotonic() >= deadline:
                raise TimeoutError(f"ManualClock: expected {count} waiter(s) within {timeout_s} s"
                                   f" of real time, found {self.sleepers()}")
            _time.sleep(0.001)

    # --- waiting (threads) ---------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        with self._cond:
            deadline = self._now + max(0.0, seconds)
            self._blocked += 1
            self._thread_deadlines.append(deadline)
            try:
                while self._now < deadline:
                    self._cond.wait()
            finally:
                self._blocked -= 1
                self._thread_deadlines.remove(deadline)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        with self._cond:
            deadline = None if timeout is None else self._now + max(0.0, timeout)
            mark = float("inf") if deadline is None else deadline
            self._blocked += 1
            self._thread_deadlines.append(mark)
        try:
            while True:
                if event.is_set():
                    return True
                with self._cond:
                    if deadline is not None and self._now >= deadline:
                        return event.is_set()
                    self._cond.wait(self._EVENT_POLL_S)
        finally:
            with self._cond:
                self._blocked -= 1
                self._thread_deadlines.remove(mark)

    # --- waiting (asyncio) ---------------------------------------------------------------
    def _timer(self, seconds: float) -> asyncio.Future:
        """A future of the running loop, resolved when the clock passes now + seconds."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            deadline = self._now + max(0.0, seconds)
            if deadline <= self._now:
                fut.set_result(None)
            else:
                self._timers.append((deadline, loop, fut))
        return fut

    async def sleep_async(self, seconds: float) -> None:
        await self._timer(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        task = asyncio.ensure_future(aw)
        if timeout is None:
            return await task
        timer = self._timer(timeout)
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            timer.cancel()
            raise
        if task.done():
            timer.cancel()
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise asyncio.TimeoutError(f"no result within {timeout} s (manual clock)")

    def __repr__(self) -> str:
        return f"ManualClock(now={self.monotonic():.3f})"


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def clock_or_system(clock: Any) -> Clock:
    """The clock a part was given, or the system clock."""
    return SYSTEM if clock is None else clock
