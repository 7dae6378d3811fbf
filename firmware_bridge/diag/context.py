"""What every cabinet-diag command gets: options, output, the lazily opened ``Board``.

Also the exit codes and the errors commands raise. The command modules (commands.py,
calibration.py, wire.py) import from here and from output.py; cli.py imports them; nothing here
imports a command module, so imports point one way: cli -> commands -> context -> output.
"""
from __future__ import annotations

import argparse
import os
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..errors import LinkError
from ..loadcell import Calibration
from .output import Output, frame_lines

PROG = "cabinet-diag"
EXIT_OK, EXIT_ERROR, EXIT_CONNECTION, EXIT_INTERRUPTED = 0, 1, 2, 130
TraceSink = Callable[[str, float, bytes, Any], None]   # direction, wall time, raw, message


class DiagError(Exception):
    """A command-level failure (bad file, bad argument, a check that failed): exit 1."""


class ConnectionProblem(Exception):
    """No port to talk to, found before the link was tried: exit 2."""


class UsageError(Exception):
    pass


class Context:
    """What a command gets: the options, the output, and the board (opened on first use)."""

    def __init__(self, args: argparse.Namespace, out: Output, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.port: str = args.port or (f"serial:{args.serial}" if args.serial else "")
        self.timeout_s: float = args.timeout
        self.calibration_path: Path | None = Path(args.calibration) if args.calibration else None
        self.events: queue.Queue[Any] = queue.Queue()
        self.trace_sinks: list[TraceSink] = []
        if args.trace:
            self.trace_sinks.append(self._trace_to_stderr)
        self._board: Any = None

    def load_calibration(self) -> Calibration | None:
        path = self.calibration_path
        if path is None or not path.exists():
            return None
        try:
            return Calibration.load(path)
        except OSError as e:
            raise DiagError(f"Calibration file {path}: cannot read it ({e.strerror})") from None

    def board(self, *, load_store: bool = True) -> Any:
        """The open board; ``load_store=False`` opens it without reading the calibration
        store (import replaces the store, so a corrupt one must not block it)."""
        if self._board is None:
            if not self.port:
                raise ConnectionProblem(
                    "No port given: pass --port PATH (or --serial SN), or set CABINET_PORT; "
                    f"`{PROG} ports` lists the candidates")
            from ..device import Board
            from ..ports import SERIAL_PREFIX, default_finder
            finder: Any = default_finder()
            if not self.port.startswith(SERIAL_PREFIX):
                finder = GivenPathFirst(self.port, finder)
            board = Board(self.port, timeout_s=self.timeout_s,
                          calibration=self.load_calibration() if load_store else None,
                          on_event=self.events.put, finder=finder, on_trace=self._on_frame)
            board.open()
            self._board = board
        return self._board

    def _on_frame(self, direction: str, at: float, raw: bytes, message: Any) -> None:
        for sink in list(self.trace_sinks):
            sink(direction, at, raw, message)

    def _trace_to_stderr(self, direction: str, at: float, raw: bytes, message: Any) -> None:
        self.err.write("".join(f"trace {line}\n" for line in frame_lines(direction, at, raw,
                                                                           message)))
        self.err.flush()

    def save_calibration(self, calibration: Calibration) -> str | None:
        """Write the calibration store atomically; None when there is no store to write."""
        path = self.calibration_path
        if path is None:
            return None
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(calibration.to_json() + "\n")
            os.replace(tmp, path)
        except OSError as e:
            raise DiagError(f"Calibration file {path}: cannot write it ({e.strerror}); "
                            f"the new values are in use only until this command ends") from None
        return str(path)

    def close(self) -> None:
        if self._board is not None:
            board, self._board = self._board, None
            try:
                board.close()
            except LinkError:
                pass


class GivenPathFirst:
    """Port finder for an explicit --port: on a reconnect (after a reboot, say) go back to
    the path the technician named while it exists, and only look the board up by serial
    number when it has gone. Two simulators with the same serial must not swap boards
    under a diagnostic session."""

    def __init__(self, path: str, fallback: Any) -> None:
        self.path = path
        self.fallback = fallback

    def find(self, board_serial: str) -> str | None:
        return self.path if os.path.exists(self.path) else self.fallback.find(board_serial)
