"""cabinet-diag's calibration commands: tare, calibrate, export, import.

The board keeps no calibration; the host does (as Klipper does). ``Context`` loads the store
(--calibration / CABINET_CALIBRATION, the controller's file) into the ``Board`` when it opens
it; tare and calibrate ask the Board's load-cell filters (which refuse an unstable,
saturated, stuck or not-ready cell, and a calibration whose counts barely moved), then write
the Board's whole calibration back to the store atomically. ``import`` checks the file
completely (JSON, every shelf of this board and no other, finite numbers, the same board
serial unless --force) before anything is written, so a bad file changes nothing.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from .context import EXIT_OK, Context, DiagError
from .output import grams, jsonable, table
from ..loadcell import Calibration


def _check_shelves(ctx: Context, shelves: list[int]) -> list[int]:
    n = ctx.board().identity.shelves
    bad = [s for s in shelves if not 0 <= s < n]
    if bad:
        raise DiagError(f"Board {ctx.board().identity.board_serial} has shelves 0..{n - 1}; "
                        f"no shelf {', '.join(map(str, bad))}")
    return shelves or list(range(n))


def _calibration_rows(cal: Calibration, shelves: list[int], readings: Any) -> list[str]:
    rows = [[s, f"{cal.for_shelf(s).tare_counts:.0f}", f"{cal.for_shelf(s).counts_per_gram:.2f}",
             grams(readings[s].grams) if s in readings else "-"] for s in shelves]
    return table(["SHELF", "TARE COUNTS", "COUNTS/G", "GRAMS NOW"], rows, right=[0, 1, 2, 3])


def _saved_note(saved: str | None) -> str:
    return (f"saved to {saved}" if saved else
            "NOT saved: pass --calibration FILE (or set CABINET_CALIBRATION) to keep it")


def fresh_readings(board: Any, since: float, wait_s: float = 1.0) -> dict[int, Any]:
    """Readings computed from samples newer than ``since`` (so with the new calibration)."""
    deadline = time.monotonic() + wait_s
    while True:
        readings = board.weights()
        if all(r.at > since for r in readings.values()) or time.monotonic() >= deadline:
            return readings
        time.sleep(0.02)


def _store_result(ctx: Context, verb: str, shelves: list[int]) -> dict[str, Any]:
    board = ctx.board()
    cal = board.calibration()
    saved = ctx.save_calibration(cal)
    readings = fresh_readings(board, time.monotonic())
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
        ctx.out.stream.write(text)
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
