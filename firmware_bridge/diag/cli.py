"""cabinet-diag: the technician's diagnostic CLI over the serial line to the cabinet's board.

``main`` parses the command line (global options are accepted before or after the command,
as in ``cabinet-diag --port P info --json``), fills what was not given from the environment
(CABINET_PORT, CABINET_SERIAL, CABINET_TIMEOUT, CABINET_CALIBRATION), runs one command from
commands.py, calibration.py or wire.py against a ``Board`` that ``Context``
opens lazily, and turns every failure into one line on stderr and an exit code:

    0 ok    1 command or device error (refused, bad file, a shelf that needs attention,
            a bad command line)    2 connection error (no port, busy, silent MCU, protocol
            version)    130 interrupted (Ctrl-C)

The board keeps no calibration; the host does. cabinet-diag reads the calibration file given
by --calibration (the controller's file) when it opens the board and writes tare, calibrate
and import results back to it atomically. docs/diag.md is the technician's guide.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

from ..errors import CommandRefused, LinkError
from ..loadcell import CalibrationError
from . import calibration as K
from . import commands as C
from . import wire as W
from .context import (EXIT_CONNECTION, EXIT_ERROR, EXIT_INTERRUPTED, PROG, ConnectionProblem,
                      Context, DiagError, UsageError)
from .output import Output


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad command line; 2 means a connection error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """Global options, on the top parser (with defaults) and on every command (without, so a
    value given before the command is not reset by the command's parser)."""
    p = argparse.ArgumentParser(add_help=False)
    sup = {} if defaults else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("connection and output")
    g.add_argument("--port", metavar="PATH", help="serial port (env CABINET_PORT); "
                   "serial:SN finds the board by its serial number", **sup)
    g.add_argument("--serial", metavar="SN", help="find the board by its USB/board serial "
                   "number instead of a tty name (env CABINET_SERIAL)", **sup)
    g.add_argument("--timeout", metavar="S", type=float, help="seconds to wait for each "
                   "reply (env CABINET_TIMEOUT, default 1.0)", **sup)
    g.add_argument("--calibration", metavar="FILE", help="the host's calibration file "
                   "(env CABINET_CALIBRATION); tare, calibrate and import write to it", **sup)
    g.add_argument("--trace", action="store_true", help="print every frame to stderr", **sup)
    g.add_argument("--json", action="store_true", help="JSON output (one object per line "
                   "for live views)", **sup)
    return p


def build_parser() -> argparse.ArgumentParser:
    glob = _global_options(defaults=False)
    parser = _Parser(prog=PROG, parents=[_global_options(defaults=True)],
                     description="Diagnose the cabinet's lock, door and load-cell board over "
                                 "its serial line.",
                     epilog="exit codes: 0 ok, 1 command or device error, 2 connection "
                            "error, 130 interrupted. Guide: docs/diag.md")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, func: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[glob], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    command("ports", W.cmd_ports, "list serial ports and simulated boards")
    command("info", C.cmd_info, "identify the board: versions, serial, boot id, reset reason")
    command("status", C.cmd_status, "lock, door, temperature and shelf weights now")
    lock = command("lock", C.cmd_lock, "lock tests")
    lock.add_argument("action", choices=["test", "engage"],
                      help="test: release for a pulse and time the MCU's relock; "
                           "engage: lock now")
    lock.add_argument("--pulse-ms", type=int, default=500, help="unlock pulse (default 500)")
    lock.add_argument("--channel", type=int, default=0,
                      help="lock channel: 0 the main door (default), 1.. a compartment's own")
    door = command("door", C.cmd_door_watch, "stream door and lock events")
    door.add_argument("action", choices=["watch"])
    _stop_options(door)
    w = command("weights", C.cmd_weights, "shelf weights (settled, or --live)")
    w.add_argument("--live", action="store_true", help="redraw until Ctrl-C")
    w.add_argument("--raw", action="store_true", help="also show raw ADC counts")
    w.add_argument("--interval", type=float, default=0.25, metavar="S",
                   help="live refresh period (default 0.25 s)")
    w.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="one-shot: wait up to S s for settled readings (default 2)")
    _stop_options(w)
    t = command("tare", K.cmd_tare, "zero shelves (empty and still)")
    t.add_argument("shelves", nargs="*", type=int, metavar="SHELF", help="default: all")
    c = command("calibrate", K.cmd_calibrate, "set a shelf's gain from a known mass on it")
    c.add_argument("shelf", type=int)
    c.add_argument("--grams", type=float, required=True, help="the known mass on the shelf")
    e = command("export", K.cmd_export, "write the calibration in use to a JSON file")
    e.add_argument("file", help="destination ('-' for stdout)")
    i = command("import", K.cmd_import, "load a calibration JSON file into the store")
    i.add_argument("file")
    i.add_argument("--force", action="store_true", help="accept a file from another board")
    command("reboot", C.cmd_reboot, "reboot the MCU and report its new boot id")
    d = command("diag", W.cmd_diag, "per-shelf sample rate, errors, saturation, noise")
    d.add_argument("--seconds", type=float, default=3.0, help="how long to sample (default 3)")
    m = command("monitor", W.cmd_monitor, "timestamped raw and decoded frames")
    m.add_argument("--skip", action="append", default=[], metavar="TYPE",
                   help="hide a message type, e.g. --skip WeightBatch (repeatable)")
    _stop_options(m)
    k = command("counters", W.cmd_counters, "link counters: bytes, retransmits, invalid, RTT")
    k.add_argument("--pings", type=int, default=5, help="pings to send first (default 5)")
    cons = command("console", W.cmd_console, "send raw protocol commands")
    cons.add_argument("-c", dest="commands", action="append", default=[], metavar="CMD",
                      help="run CMD (e.g. 'unlock pulse_ms=300') and exit; repeatable")
    return parser


def _stop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, metavar="N", help="stop after N events/frames/refreshes")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")


def _apply_env(args: argparse.Namespace, env: dict[str, str]) -> None:
    args.port = args.port or env.get("CABINET_PORT") or None
    args.serial = args.serial or env.get("CABINET_SERIAL") or None
    args.calibration = args.calibration or env.get("CABINET_CALIBRATION") or None
    if args.timeout is None:
        raw = env.get("CABINET_TIMEOUT", "1.0")
        try:
            args.timeout = float(raw)
        except ValueError:
            raise UsageError(f"{PROG}: CABINET_TIMEOUT={raw!r} is not a number of seconds") \
                from None
    if args.timeout <= 0:
        raise UsageError(f"{PROG}: --timeout must be positive, got {args.timeout}")


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None, env: dict[str, str] | None = None) -> int:
    out_stream = stdout or sys.stdout
    err = stderr or sys.stderr
    ctx: Context | None = None
    try:
        args = build_parser().parse_args(argv)
        _apply_env(args, dict(os.environ if env is None else env))
        ctx = Context(args, Output(out_stream, json_mode=args.json), err)
        return int(args.func(ctx, args))
    except SystemExit as e:                      # --help, --version: argparse's own exit
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_ERROR
    except KeyboardInterrupt:
        return _fail(err, "interrupted", EXIT_INTERRUPTED, quiet=True)
    except UsageError as e:
        return _fail(err, str(e), EXIT_ERROR, prefix=False)
    except (ConnectionProblem,) as e:
        return _fail(err, str(e), EXIT_CONNECTION)
    except CommandRefused as e:
        return _fail(err, str(e), EXIT_ERROR)
    except LinkError as e:
        return _fail(err, str(e), EXIT_CONNECTION)
    except (DiagError, CalibrationError) as e:
        return _fail(err, str(e), EXIT_ERROR)
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        if os.environ.get("CABINET_DIAG_DEBUG"):
            raise
        return _fail(err, f"internal error: {type(e).__name__}: {e} (set CABINET_DIAG_DEBUG=1 "
                          f"for the traceback)", EXIT_ERROR)
    finally:
        if ctx is not None:
            try:
                ctx.close()
            except KeyboardInterrupt:
                pass


def _fail(err: TextIO, message: str, code: int, *, prefix: bool = True,
          quiet: bool = False) -> int:
    try:
        err.write(("\n" if quiet else "") + (f"{PROG}: " if prefix else "") + message + "\n")
        err.flush()
    except (BrokenPipeError, ValueError):
        pass
    return code

