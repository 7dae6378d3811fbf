"""cabinet-diag's board commands: info, status, lock, door watch, weights, tare, calibrate,
export, import, reboot.

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
import sys
import time
from pathlib import Path
from typing import Any

from . import events as E
from .diag import EXIT_ERROR, EXIT_OK, Context, DiagError
from .diag_output import clock, jsonable, key_values, table, wall_time
from .loadcell import Calibration, ShelfReading

LINK_EVENTS = (E.McuReset, E.LinkLost, E.LinkRestored)
DOOR_EVENTS = (E.DoorOpened, E.DoorClosed, E.LockChanged, E.ForcedDoor) + LINK_EVENTS


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
        row: list[Any] = [r.shelf, f"{r.grams:.1f}", _state_label(r)]
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
            "last_event_seq": st.last_event_seq, "shelves": shelf_json(settled)}
    lock = "engaged" if st.lock_engaged else f"RELEASED ({st.unlock_remaining_ms} ms left)"
    lines = key_values([("lock", lock), ("door", "OPEN" if st.door_open else "closed"),
                        ("temperature", f"{temp:.1f} C" if has_temp else "no sensor"),
                        ("last event", f"#{st.last_event_seq}")])
    ctx.out.emit(data, lines + [""] + shelf_table(settled, raw=False))
    return EXIT_OK


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
    _drain(ctx.events)
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
        if isinstance(ev, E.LockChanged):
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
    lines = [f"Lock test, pulse {pulse} ms"] + ["  " + l for l in key_values([
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
        return f"lock {'engaged' if ev.engaged else 'released'} ({ev.reason})"
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
            view.show({"t": round(now, 3), "shelves": shelf_json(readings)},
                      [f"Weights at {clock(now)}   (Ctrl-C to stop)", ""]
                      + shelf_table(readings, args.raw))
            stop.tick()
            if not stop.done():
                time.sleep(stop.wait_s(args.interval))
    return EXIT_OK


def _check_shelves(ctx: Context, shelves: list[int]) -> list[int]:
    n = ctx.board().identity.shelves
    bad = [s for s in shelves if not 0 <= s < n]
    if bad:
        raise DiagError(f"Board {ctx.board().identity.board_serial} has shelves 0..{n - 1}; "
                        f"no shelf {', '.join(map(str, bad))}")
    return shelves or list(range(n))


def _calibration_rows(cal: Calibration, shelves: list[int], readings: Any) -> list[str]:
    rows = [[s, f"{cal.for_shelf(s).tare_counts:.0f}", f"{cal.for_shelf(s).counts_per_gram:.2f}",
             f"{readings[s].grams:.1f}" if s in readings else "-"] for s in shelves]
    return table(["SHELF", "TARE COUNTS", "COUNTS/G", "GRAMS NOW"], rows, right=[0, 1, 2, 3])


def _saved_note(saved: str | None) -> str:
    return (f"saved to {saved}" if saved else
            "NOT saved: pass --calibration FILE (or set CABINET_CALIBRATION) to keep it")


def _store_result(ctx: Context, verb: str, shelves: list[int]) -> dict[str, Any]:
    board = ctx.board()
    cal = board.calibration()
    saved = ctx.save_calibration(cal)
    readings = board.weights()
    data = {verb: [{"shelf": s, **jsonable(cal.for_shelf(s)),
                    "grams_now": round(readings[s].grams, 2) if s in readings else None}
                   for s in shelves], "saved_to": saved}
    ctx.out.emit(data, _calibration_rows(cal, shelves, readings) + [_saved_note(saved)])
    return data


def cmd_tare(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    shelves = _check_shelves(ctx, list(args.shelves))
    board.wait_stable(shelves, max(2.0, ctx.timeout_s))
    for s in shelves:
        board.tare(s)
    _store_result(ctx, "tared", shelves)
    return EXIT_OK


def cmd_calibrate(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    (shelf,) = _check_shelves(ctx, [args.shelf])
    if not (args.grams > 0 and math.isfinite(args.grams)):
        raise DiagError(f"calibrate: --grams must be a positive mass, got {args.grams}")
    board.wait_stable([shelf], max(2.0, ctx.timeout_s))
    board.calibrate(shelf, args.grams)
    _store_result(ctx, "calibrated", [shelf])
    return EXIT_OK


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    cal = board.calibration()
    cal = Calibration(dict(cal.shelves), cal.board_serial or board.identity.board_serial)
    text = cal.to_json() + "\n"
    if args.file == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(args.file)
    try:
        path.write_text(text)
    except OSError as e:
        raise DiagError(f"export: cannot write {path}: {e.strerror}") from None
    ctx.out.emit({"exported_to": str(path), "board_serial": cal.board_serial,
                  "shelves": len(cal.shelves)},
                 [f"calibration of board {cal.board_serial} ({len(cal.shelves)} shelves) "
                  f"written to {path}"])
    return EXIT_OK


def load_calibration_file(path: Path, shelves: int, board_serial: str,
                          force: bool) -> Calibration:
    """Read and check a calibration file against the board; raises with the file's name."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DiagError(f"Calibration file {path}: cannot read it ({e.strerror})") from None
    cal = Calibration.from_json(text, str(path))
    extra = sorted(s for s in cal.shelves if not 0 <= s < shelves)
    missing = sorted(s for s in range(shelves) if s not in cal.shelves)
    if extra or missing:
        raise DiagError(f"Calibration file {path}: the board has shelves 0..{shelves - 1}; "
                        + (f"shelves {extra} are not on it" if extra else
                           f"shelves {missing} are missing from the file"))
    for s, c in cal.shelves.items():
        if not (math.isfinite(c.tare_counts) and math.isfinite(c.counts_per_gram)):
            raise DiagError(f"Calibration file {path}: shelf {s}: values must be finite")
    if cal.board_serial and cal.board_serial != board_serial and not force:
        raise DiagError(f"Calibration file {path} belongs to board {cal.board_serial}, this is "
                        f"{board_serial}; pass --force to use it anyway")
    return Calibration(cal.shelves, board_serial)


def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        Calibration.from_json(path.read_text(), str(path))  # a bad file fails before connecting
    except OSError as e:
        raise DiagError(f"Calibration file {path}: cannot read it ({e.strerror})") from None
    if ctx.calibration_path is None:
        raise DiagError("import writes the host's calibration file: pass --calibration FILE "
                        "or set CABINET_CALIBRATION")
    board = ctx.board(load_store=False)
    ident = board.identity
    cal = load_calibration_file(path, ident.shelves, ident.board_serial, args.force)
    board.load_calibration(cal)
    _store_result(ctx, "imported", sorted(cal.shelves))
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

