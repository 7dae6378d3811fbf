"""The Clock port: a ManualClock wakes threads and coroutines exactly when told, never before."""
from __future__ import annotations

import asyncio
import threading

import pytest

from firmware_bridge.clock import SYSTEM, Clock, ManualClock, SystemClock


def test_both_clocks_satisfy_the_port():
    assert isinstance(SYSTEM, Clock)
    assert isinstance(ManualClock(), Clock)


def test_manual_clock_stands_still_until_advanced():
    clock = ManualClock(start=5.0, wall_start=100.0)
    assert clock.monotonic() == 5.0 and clock.time() == 100.0
    assert clock.advance(2.5) == 7.5
    assert clock.monotonic() == 7.5 and clock.time() == 102.5
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)
    assert clock.monotonic() == 7.5


def test_a_sleeping_thread_wakes_only_when_its_deadline_passes():
    clock = ManualClock()
    woke = threading.Event()
    t = threading.Thread(target=lambda: (clock.sleep(10.0), woke.set()))
    t.start()
    clock.wait_for_sleepers(1)
    clock.advance(9.999)
    assert not woke.wait(0.05)
    clock.advance(0.001)
    assert woke.wait(2.0)
    t.join(2.0)
    assert clock.sleepers() == 0


def test_wait_returns_true_at_once_when_the_event_is_set_and_false_at_the_virtual_timeout():
    clock = ManualClock()
    event = threading.Event()
    results = []
    t = threading.Thread(target=lambda: results.append(clock.wait(event, 3.0)))
    t.start()
    clock.wait_for_sleepers(1)
    event.set()
    t.join(2.0)
    assert results == [True]

    event.clear()
    t = threading.Thread(target=lambda: results.append(clock.wait(event, 3.0)))
    t.start()
    clock.wait_for_sleepers(1)
    clock.advance(3.0)
    t.join(2.0)
    assert results == [True, False]


def test_async_sleep_and_wait_for_follow_the_manual_clock():
    clock = ManualClock()

    async def main():
        order = []

        async def sleeper(name, s):
            await clock.sleep_async(s)
            order.append(name)

        a = asyncio.create_task(sleeper("a", 2.0))
        b = asyncio.create_task(sleeper("b", 1.0))
        never = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(clock.wait_for(never, 5.0))
        await asyncio.sleep(0)
        assert clock.sleepers() == 3
        clock.advance(1.0)
        await asyncio.sleep(0.01)
        assert order == ["b"]
        clock.advance(1.0)
        await asyncio.sleep(0.01)
        assert order == ["b", "a"] and not waiting.done()
        clock.advance(3.0)
        with pytest.raises(asyncio.TimeoutError):
            await waiting
        assert never.cancelled()

        done = asyncio.get_running_loop().create_future()
        got = asyncio.create_task(clock.wait_for(done, 5.0))
        await asyncio.sleep(0)
        done.set_result(42)
        assert await got == 42
        return clock.sleepers()

    assert asyncio.run(main()) == 0


def test_wait_for_sleepers_names_what_it_missed():
    with pytest.raises(TimeoutError, match="expected 1 waiter"):
        ManualClock().wait_for_sleepers(1, timeout_s=0.01)


def test_system_clock_really_waits():
    clock = SystemClock()
    event = threading.Event()
    t0 = clock.monotonic()
    assert clock.wait(event, 0.01) is False
    assert clock.monotonic() > t0


def test_deadlines_idle_and_advance_to_next_step_a_thread_deadline_by_deadline():
    clock = ManualClock(start=0.0)
    ticks: list[float] = []
    stop = threading.Event()

    def ticker():                           # waits 0.5, then 1.0, then 2.0 s of clock time
        for gap in (0.5, 1.0, 2.0):
            if clock.wait(stop, gap):
                return
            ticks.append(clock.monotonic())

    t = threading.Thread(target=ticker)
    t.start()
    clock.wait_until_idle(1)
    assert clock.deadlines() == [0.5]
    assert clock.advance_to_next() == 0.5
    clock.wait_until_idle(1)
    assert clock.deadlines() == [1.5] and ticks == [0.5]
    clock.advance_to_next()
    clock.wait_until_idle(1)
    assert ticks == [0.5, 1.5] and clock.deadlines() == [3.5]
    stop.set()
    t.join(2.0)
    assert ticks == [0.5, 1.5] and clock.deadlines() == []
    with pytest.raises(RuntimeError, match="nobody waits"):
        clock.advance_to_next()


def test_wait_until_idle_names_the_deadlines_it_saw():
    clock = ManualClock(start=0.0)
    with pytest.raises(TimeoutError, match=r"expected 1 idle waiter.*found deadlines \[\]"):
        clock.wait_until_idle(1, timeout_s=0.01)
