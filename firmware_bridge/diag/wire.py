"""cabinet-diag's wire-level commands: ports, monitor, counters, console, diag.

These look below the ``Board`` API at the link itself. ``monitor`` and ``diag`` register a
sink on the raw-frame trace hook (``Context.trace_sinks``, fed from the link's reader and
writer) before the board is opened, so the identify handshake shows too; sinks only put frames
on a queue, and the main thread prints, so Ctrl-C and ``--count``/``--seconds`` stop cleanly.
``console`` sends commands by name through ``Board.raw_command`` and prints the decoded reply:
``NAME [arg=value ...]``, e.g. ``unlock pulse_ms=300``, ``replay_events from_seq=1``.
"""
from __future__ import annotations

import argparse
import dataclasses
import queue
import shlex
import sys
import time
from typing import Any

from serial.tools import list_ports

from .. import protocol as P
from .context import EXIT_ERROR, EXIT_OK, Context, DiagError
from .commands import StopAfter
from .output import (format_message, frame_lines, jsonable, key_values, message_json,
                          table)
from ..diagnostics import ShelfDiagnostics
from ..errors import CommandRefused, LinkDown
from ..ports import RegistryPortFinder


def cmd_ports(ctx: Context, args: argparse.Namespace) -> int:
    found = []
    for info in sorted(list_ports.comports(), key=lambda i: i.device):
        found.append({"port": info.device, "kind": "usb" if info.vid is not None else "serial",
                      "serial_number": info.serial_number, "description": info.description})
    for serial_no, path in RegistryPortFinder().boards().items():
        found.append({"port": path, "kind": "simulator", "serial_number": serial_no,
                      "description": "cabinet sim mcu"})
    lines = (table(["PORT", "KIND", "SERIAL", "DESCRIPTION"],
                   [[p["port"], p["kind"], p["serial_number"], p["description"]] for p in found])
             if found else ["no serial ports found: check the board's USB cable and power"])
    ctx.out.emit({"ports": found}, lines)
    return EXIT_OK


def frame_json(direction: str, at: float, raw: bytes, msg: Any) -> dict[str, Any]:
    return {"t": round(at, 4), "dir": direction, "len": len(raw), "hex": raw.hex(),
            "message": message_json(msg)}


def cmd_monitor(ctx: Context, args: argparse.Namespace) -> int:
    skip = {s.lower() for s in args.skip}
    known = {m.__name__.lower() for m in P.MESSAGES.values()}
    unknown = sorted(skip - known)
    if unknown:
        raise DiagError(f"monitor: --skip {', '.join(unknown)}: no such message type; types: "
                        f"{', '.join(sorted(m.__name__ for m in P.MESSAGES.values()))}")
    frames: queue.Queue[tuple[str, float, bytes, Any]] = queue.Queue()
    ctx.trace_sinks.append(lambda d, at, raw, msg: frames.put((d, at, raw, msg)))
    ctx.board()
    if not ctx.out.json_mode:
        ctx.out.lines([f"monitoring {ctx.port}: -> host to MCU, <- MCU to host (Ctrl-C to stop)"])
    stop = StopAfter(args)
    while not stop.done():
        try:
            frame = frames.get(timeout=stop.wait_s(0.1))
        except queue.Empty:
            continue
        msg = frame[3]
        if msg is not None and type(msg).__name__.lower() in skip:
            continue
        stop.tick()
        ctx.out.emit(frame_json(*frame), frame_lines(*frame))
    return EXIT_OK


def cmd_counters(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    for _ in range(max(0, args.pings)):
        board.raw_command("ping")
    c = board.counters()
    data = jsonable(c)
    units = {"bytes_in": "bytes", "bytes_out": "bytes"}
    pairs = []
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        label = f.name.replace("_", " ")
        if f.name.endswith("_ms"):
            label, v = label[:-3], f"{v:.2f} ms"
        elif f.name in units:
            v = f"{v} {units[f.name]}"
        pairs.append((label, v))
    ctx.out.emit(data, [f"link counters after {args.pings} pings (this session only)"]
                 + ["  " + line for line in key_values(pairs)])
    return EXIT_OK


def _console_help() -> list[str]:
    rows = []
    for name, cls in sorted(P.COMMANDS.items()):
        fields = [f"{f.name}=N" for f in dataclasses.fields(cls) if f.name != "seq"]
        rows.append([name, " ".join(fields)])
    return (table(["COMMAND", "ARGUMENTS"], rows)
            + ["", "e.g. `unlock pulse_ms=300`; `help`; `quit` (or Ctrl-D)"])


def parse_console_line(line: str) -> tuple[str, dict[str, int]]:
    parts = shlex.split(line)
    name, args = parts[0], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise CommandRefused(f"argument {part!r}: write it as name=value")
        try:
            args[key] = int(value, 0)
        except ValueError:
            raise CommandRefused(f"argument {key}={value!r}: not an integer") from None
    return name, args


def run_console_line(ctx: Context, line: str) -> bool:
    """Run one console line; False when the MCU refused it or it was not understood."""
    name, args = parse_console_line(line)
    reply = ctx.board().raw_command(name, **args)
    ok = not (isinstance(reply, P.Ack) and reply.status != P.OK)
    status = P.STATUS_NAMES.get(reply.status, str(reply.status)) if isinstance(reply, P.Ack) \
        else "ok"
    text = (format_message(reply) if not isinstance(reply, P.Ack) else
            f"ok (seq {reply.seq})" if ok else f"{status}: {reply.detail}")
    ctx.out.emit({"command": name, "args": args, "status": status,
                  "reply": message_json(reply)}, [text])
    return ok


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    if args.commands:
        failed = False
        for line in args.commands:
            try:
                failed |= not run_console_line(ctx, line)
            except (CommandRefused, ValueError) as e:
                ctx.err.write(f"cabinet-diag: console: {e}\n")
                failed = True
        return EXIT_ERROR if failed else EXIT_OK
    interactive = sys.stdin.isatty()
    if interactive and not ctx.out.json_mode:
        ident = board.identity
        ctx.out.lines([f"console on {ctx.port}: board {ident.board_serial}, firmware "
                       f"{ident.firmware_version}; `help` lists commands"])
    while True:
        try:
            line = input("mcu> " if interactive else "")
        except EOFError:
            return EXIT_OK
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("quit", "exit"):
            return EXIT_OK
        if line in ("help", "?"):
            ctx.out.lines(_console_help())
            continue
        try:
            run_console_line(ctx, line)
        except (CommandRefused, ValueError) as e:
            ctx.out.emit({"command": line, "error": str(e)}, [f"error: {e}"])
        except LinkDown as e:
            ctx.out.emit({"command": line, "error": str(e)}, [f"link: {e}"])


def cmd_diag(ctx: Context, args: argparse.Namespace) -> int:
    board = ctx.board()
    ident = board.identity
    diags = ShelfDiagnostics(ident.shelves, float(getattr(board, "sample_hz", 25)))
    before = board.counters()
    ctx.trace_sinks.append(diags.feed)
    if ctx.out.tty and not ctx.out.json_mode:
        ctx.out.lines([f"sampling {ident.shelves} shelves for {args.seconds:g} s ..."])
    time.sleep(max(0.0, args.seconds))
    ctx.trace_sinks.remove(diags.feed)
    after = board.counters()
    cal = board.calibration()
    report = diags.report({s: cal.for_shelf(s).counts_per_gram for s in range(ident.shelves)})
    link = {k: getattr(after, k) - getattr(before, k)
            for k in ("bad_bytes", "invalid_frames", "retransmits", "gaps", "link_losses")}
    data = {"seconds": args.seconds, "shelves": [jsonable(d) | {"ok": d.ok} for d in report],
            "link": link, "ok": all(d.ok for d in report)}
    rows = [[d.shelf, f"{d.rate_hz:.1f}", d.samples, d.errors, f"{d.saturated_pct:.0f}%",
             d.spikes, f"{d.noise_g:.2f}", f"{d.noise_counts:.0f}",
             "ok" if d.ok else "; ".join(d.problems)] for d in report]
    lines = table(["SHELF", "RATE HZ", "SAMPLES", "ERRORS", "SATURATED", "SPIKES", "NOISE G",
                   "NOISE CNT", "VERDICT"], rows, right=range(8))
    lines += ["", "link during the sample: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                         for k, v in link.items())]
    ctx.out.emit(data, lines)
    return EXIT_OK if data["ok"] else EXIT_ERROR
