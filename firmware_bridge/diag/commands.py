"""cabinet-diag's board commands: info, status, lock, door watch, weights, reboot.

Each ``cmd_*(ctx, args) -> exit code`` asks the ``Board`` (device.py) through ``ctx.board()``,
builds one plain result and hands it to ``ctx.out`` as JSON and as aligned human lines.
Board events arrive on ``ctx.events`` (a queue filled from the link's reader thread), which is
how ``lock test`` sees the MCU's own relock and ``door watch`` streams. Shelves are numbered
from 0, as on the wire. A result the technician must act on (the MCU did not relock, a shelf
was refused) is still printed in full, then the command exits 1.
"""
from __future__ import annotations

import argparse
import math
import queue
import time
from typing import Any

from .. import events as E
from .context import EXIT_ERROR, EXIT_OK, Context, DiagError
from .output import clock, grams, jsonable, key_values, table, wall_time
from ..loadcell import ShelfReading

LINK_EVENTS = (E.McuReset, E.LinkLost, E.LinkRestored)
DOOR_EVENTS = (E.DoorOpened, E.DoorClosed, E.LockChanged, E.UncommandedUnlock,
               E.ForcedDoor) + LINK_EVENTS


def identity_dict(ident: Any) -> dict[str, Any]:
    return jsonable(ident)


def cmd_info(ctx: Context, args: argparse.Namespace) -> int:
    ident = ctx.board().identity
    d = identity_dict(ident)
    ctx.out.emit(d, key_values([
        ("port", d.get("port") or ctx.port), ("board serial", ident.board_serial),
        ("protocol", ident.protocol_version), ("firmware", ident.firmware_version),
        ("boot id", f"0x{ident.boot_id:08x}"), ("reset reason", ident.reset_reason),
        ("shelves", f"{ident.shelves} x {ident.cells_per_shelf} cells"),
        ("temperature", "sensor fitted" if ident.has_temperature else "no sensor"),
        ("max frame", f"{ident.max_frame} bytes"),
        ("max unlock", f"{ident.max_unlock_ms} ms")]))
    return EXIT_OK


def _state_label(r: ShelfReading) -> str:
    if not r.ready:
        return "NOT READY"
    if r.saturated:
        return "SATURATED"
    if r.stuck:
        return "STUCK"
    return "stable" if r.stable else "moving"


def shelf_rows(readings: dict[int, ShelfReading] | Any, raw: bool) -> list[list[Any]]:
    items = readings.values() if isinstance(readings, dict) else readings
    rows = []
    for r in sorted(items, key=lambda r: r.shelf):
        row: list[Any] = [r.shelf, grams(r.grams), _state_label(r)]
        if raw:
            row.append(r.raw_counts)
        rows.append(row)
    return rows


def shelf_table(readings: Any, raw: bool) -> list[str]:
    headers = ["SHELF", "GRAMS", "STATE"] + (["RAW COUNTS"] if raw else [])
    return table(headers, shelf_rows(readings, raw), right=[0, 1, 3])


def shelf_json(readings: Any) -> list[dict[str, Any]]:
    items = readings.values() if isinstance(readings, dict) else readings
    out = []
    for r in sorted(items, key=lambda r: r.shelf):
        d = jsonable(r)
        d.pop("at", None)
        d["grams"] = round(r.grams, 2)
        out.append(d)
    return out


def first_readings(board: Any, wait_s: float = 1.0) -> None:
    """Right after open the filters have no samples yet; give the first batches time."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if all(r.at > 0 for r in board.weights().values()):
            return
        time.sleep(0.02)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    settled = board.wait_stable(None, 1.5)     # a fresh filter is not "stable" until its
    st = board.state()                         # window fills: give it that second
    temp = st.temperature_c
    has_temp = temp is not None and not (isinstance(temp, float) and math.isnan(temp))
    data = {"lock_engaged": st.lock_engaged, "door_open": st.door_open,
            "unlock_remaining_ms": st.unlock_remaining_ms,
            "temperature_c": temp if has_temp else None,
            "last_event_seq": st.last_event_seq, "releases": st.releases,
            "last_release": None if st.last_release_cause is None else {
                "cause": st.last_release_cause, "unlock_id": st.last_release_unlock_id,
                "ago_ms": st.last_release_ago_ms},
            "shelves": shelf_json(settled)}
    lock = "engaged" if st.lock_engaged else f"RELEASED ({st.unlock_remaining_ms} ms left)"
    lines = key_values([("lock", lock), ("door", "OPEN" if st.door_open else "closed"),
                        ("temperature", f"{temp:.1f} C" if has_temp else "no sensor"),
                        ("last event", f"#{st.last_event_seq}"),
                        ("lock releases", release_summary(st))])
    ctx.out.emit(data, lines + [""] + shelf_table(settled, raw=False))
    return EXIT_OK


def release_summary(st: Any) -> str:
    """``status``'s line on the lock's releases since the MCU booted, with the last cause."""
    if st.releases is None:
        return "not reported (a protocol 1.0 board gives no causes)"
    if st.last_release_cause is None:
        return f"{st.releases} since boot"
    by = (f"command, unlock #{st.last_release_unlock_id}" if st.last_release_cause == "command"
          and st.last_release_unlock_id else st.last_release_cause)
    alarm = "" if st.last_release_cause == "command" else "  NOT COMMANDED"
    return (f"{st.releases} since boot; last by {by}, "
            f"{st.last_release_ago_ms / 1000:.1f} s ago{alarm}")


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def cmd_lock(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    if args.action == "engage":
        board.lock()
        st = board.state()
        ctx.out.emit({"lock_engaged": st.lock_engaged, "door_open": st.door_open},
                     [f"lock {'engaged' if st.lock_engaged else 'STILL RELEASED'}"])
        return EXIT_OK if st.lock_engaged else EXIT_ERROR
    pulse = args.pulse_ms
    ident = board.identity
    if not 0 < pulse <= ident.max_unlock_ms:
        raise DiagError(f"lock test: --pulse-ms {pulse} is outside 1..{ident.max_unlock_ms} ms, "
                        f"the longest pulse board {ident.board_serial} allows")
    was_open = board.state().door_open
    channel = getattr(args, "channel", 0) or 0     # 1..: a compartment's own lock
    _drain(ctx.events)
    if channel:
        board.unlock(pulse, channel=channel)
    else:
        board.unlock(pulse)
    acked = time.monotonic()
    unlocked_at = relocked_at = None
    reason, door_opened, forced = "", False, False
    deadline = acked + pulse / 1000 + max(2.0, 2 * ctx.timeout_s)
    while time.monotonic() < deadline and relocked_at is None:
        try:
            ev = ctx.events.get(timeout=0.05)
        except queue.Empty:
            continue
        if isinstance(ev, E.ChannelLockChanged if channel else E.LockChanged) and \
                getattr(ev, "channel", 0) == channel:
            if not ev.engaged and unlocked_at is None:
                unlocked_at = ev.at
            elif ev.engaged:
                relocked_at, reason = ev.at, ev.reason
        door_opened |= isinstance(ev, E.DoorOpened)
        forced |= isinstance(ev, E.ForcedDoor)
    if unlocked_at is None:
        unlocked_at = acked                      # already released: the ack is the best mark
    host_locked = relocked_at is None
    if host_locked:
        board.lock()                             # never leave the cabinet open after a test
    by_mcu = not host_locked and reason != "command"
    measured = (relocked_at - unlocked_at) * 1000 if relocked_at is not None else None
    ok = by_mcu and not forced
    data = {"pulse_ms": pulse, "unlocked": True, "relocked": not host_locked,
            "relocked_by": "mcu" if by_mcu else ("host" if host_locked else reason),
            "relock_reason": reason or None,
            "unlocked_at": round(wall_time(unlocked_at), 3),
            "relocked_at": round(wall_time(relocked_at), 3) if relocked_at else None,
            "measured_pulse_ms": round(measured, 1) if measured is not None else None,
            "door_opened": door_opened, "door_was_open": was_open, "forced_door": forced,
            "ok": ok}
    if channel:
        data["channel"] = channel
    title = f"Lock test, pulse {pulse} ms" + (f", lock channel {channel}" if channel else "")
    lines = [title] + ["  " + l for l in key_values([
        ("unlocked at", clock(wall_time(unlocked_at))),
        ("relocked at", f"{clock(wall_time(relocked_at))}  (by the MCU: {reason})" if by_mcu
         else "NOT by the MCU within the pulse; the host locked it" if host_locked
         else f"{clock(wall_time(relocked_at))}  ({reason})"),
        ("pulse measured", f"{measured:.0f} ms (asked {pulse} ms)" if measured is not None
         else "-"),
        ("door opened", ("yes" if door_opened else "no") + (" (FORCED)" if forced else ""))])]
    lines.append("Result: OK" if ok else "Result: FAILED: " + (
        "the MCU did not end the pulse; check the lock driver" if not by_mcu
        else "forced-door alarm during the test"))
    ctx.out.emit(data, lines)
    return EXIT_OK if ok else EXIT_ERROR


def event_name(ev: Any) -> str:
    name = type(ev).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def event_text(ev: Any) -> str:
    if isinstance(ev, E.DoorOpened):
        return "door opened"
    if isinstance(ev, E.DoorClosed):
        return "door closed"
    if isinstance(ev, E.LockChanged):
        by = f"{ev.reason}, unlock #{ev.unlock_id}" if ev.unlock_id else ev.reason
        return f"lock {'engaged' if ev.engaged else 'released'} ({by})"
    if isinstance(ev, E.UncommandedUnlock):
        where = f"event #{ev.event_seq}" if ev.event_seq is not None else ev.source
        return f"UNCOMMANDED UNLOCK: {ev.cause} ({where}); {ev.detail}"
    if isinstance(ev, E.ForcedDoor):
        return "FORCED DOOR: opened while locked"
    if isinstance(ev, E.McuReset):
        return f"MCU reset: boot id 0x{ev.identity.boot_id:08x}, {ev.identity.reset_reason}"
    if isinstance(ev, E.LinkLost):
        return f"LINK LOST on {ev.port}: {ev.reason}"
    if isinstance(ev, E.LinkRestored):
        return f"link restored on {ev.port}"
    return f"{type(ev).__name__} {jsonable(ev)}"


def event_json(ev: Any) -> dict[str, Any]:
    d = jsonable(ev)
    at = d.pop("at", None)
    return {"t": round(wall_time(at) if at is not None else time.time(), 3),
            "event": event_name(ev), **d}


class StopAfter:
    """--count N / --seconds S for streams; neither given means until Ctrl-C."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.count = getattr(args, "count", None)
        seconds = getattr(args, "seconds", None)
        self.deadline = time.monotonic() + seconds if seconds is not None else None
        self.seen = 0

    def tick(self, n: int = 1) -> None:
        self.seen += n

    def done(self) -> bool:
        return ((self.count is not None and self.seen >= self.count)
                or (self.deadline is not None and time.monotonic() >= self.deadline))

    def wait_s(self, most: float) -> float:
        if self.deadline is None:
            return most
        return max(0.0, min(most, self.deadline - time.monotonic()))


def cmd_door_watch(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    st = board.state()
    now = time.time()
    ctx.out.emit({"t": round(now, 3), "event": "state", "door_open": st.door_open,
                  "lock_engaged": st.lock_engaged},
                 [f"{clock(now)}  door {'OPEN' if st.door_open else 'closed'}, lock "
                  f"{'engaged' if st.lock_engaged else 'released'}; watching (Ctrl-C to stop)"])
    stop = StopAfter(args)
    while not stop.done():
        try:
            ev = ctx.events.get(timeout=stop.wait_s(0.1))
        except queue.Empty:
            continue
        if not isinstance(ev, DOOR_EVENTS):
            continue
        stop.tick()
        at = getattr(ev, "at", None)
        ctx.out.emit(event_json(ev), [f"{clock(wall_time(at) if at else time.time())}  "
                                      f"{event_text(ev)}"])
    return EXIT_OK


def cmd_weights(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    shelves = list(range(board.identity.shelves))
    if not args.live:
        readings = (board.wait_stable(shelves, args.settle) if args.settle > 0
                    else board.weights())
        ctx.out.emit({"t": round(time.time(), 3), "shelves": shelf_json(readings)},
                     shelf_table(readings, args.raw))
        return EXIT_OK
    first_readings(board)
    stop = StopAfter(args)
    with ctx.out.live() as view:
        while not stop.done():
            readings = board.weights()
            now = time.time()
            up = board.counters().up
            link = "" if up else "   LINK DOWN: values are stale, reconnecting"
            view.show({"t": round(now, 3), "link_up": up, "shelves": shelf_json(readings)},
                      [f"Weights at {clock(now)}   (Ctrl-C to stop){link}", ""]
                      + shelf_table(readings, args.raw))
            stop.tick()
            if not stop.done():
                time.sleep(stop.wait_s(args.interval))
    return EXIT_OK


def cmd_reboot(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    old = board.identity
    _drain(ctx.events)
    new = board.reboot()
    if new is None or getattr(new, "boot_id", old.boot_id) == old.boot_id:
        deadline = time.monotonic() + max(5.0, 3 * ctx.timeout_s)
        while time.monotonic() < deadline:
            try:
                ev = ctx.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(ev, (E.McuReset, E.LinkRestored)):
                new = ev.identity
                break
    if new is None or new.boot_id == old.boot_id:
        raise DiagError(f"reboot: board {old.board_serial} acknowledged but did not come back "
                        f"with a new boot id within the wait; run `cabinet-diag info`")
    data = {"old_boot_id": old.boot_id, "new_boot_id": new.boot_id,
            "reset_reason": new.reset_reason, "firmware_version": new.firmware_version}
    ctx.out.emit(data, key_values([("old boot id", f"0x{old.boot_id:08x}"),
                                   ("new boot id", f"0x{new.boot_id:08x}"),
                                   ("reset reason", new.reset_reason)]))
    return EXIT_OK

