"""The one way a test waits for another thread or process: poll a condition, bounded.

Timeouts, retries, heartbeats and settle windows run on a ManualClock (firmware_bridge/clock.py)
and never wait. What cannot run on a test's clock is another process (a `cabinet run`
subprocess, a simulated MCU's own thread catching up with the clock, Chromium): for those, a
test polls the condition it needs every `poll_s` real seconds and fails naming it at the
deadline. Never a fixed sleep hoping something has happened meanwhile.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout_s: float = 5.0,
               poll_s: float = 0.01) -> T:
    """`predicate()`'s first truthy value; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)
