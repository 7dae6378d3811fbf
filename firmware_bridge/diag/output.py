"""How cabinet-diag writes: aligned tables for people, one JSON object per line for scripts.

Every command hands its result to ``Output`` once, as plain data (dicts, lists, dataclasses):
``emit(data, lines)`` prints ``data`` as one JSON line under ``--json`` and the pre-rendered
human ``lines`` otherwise, so the two views can never disagree about what was measured.
Live views (``weights --live``, ``diag`` progress) go through ``LiveView``: on a terminal it
moves the cursor back up and overwrites the previous frame (ANSI CSI ``F``/``K``/``J``); when
stdout is a pipe or file it prints each frame as plain lines; under ``--json`` each refresh is
one NDJSON line. Time is shown as local wall-clock with milliseconds; the board's events carry
host monotonic times, which ``wall_time`` converts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from ..protocol import LOCK_REASONS, NO_RELEASE

CSI = "\x1b["
HIDE_CURSOR, SHOW_CURSOR = CSI + "?25l", CSI + "?25h"


def wall_time(monotonic_at: float) -> float:
    """Host monotonic time (what events carry) as a Unix timestamp."""
    return time.time() - (time.monotonic() - monotonic_at)


def clock(ts: float) -> str:
    """A Unix timestamp as local HH:MM:SS.mmm."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples, bytes and floats made JSON-friendly (NaN becomes null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex(" ")
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    return value


def grams(value: float) -> str:
    """Grams to one decimal, without the '-0.0' that noise around zero would print."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
          right: Iterable[int] = ()) -> list[str]:
    """Rows under a header, columns padded to their widest cell; ``right`` columns (numbers)
    are right-aligned so digits line up."""
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_set = set(right)
    out = []
    for r in cells:
        parts = [r[i].rjust(widths[i]) if i in right_set else r[i].ljust(widths[i])
                 for i in range(len(headers))]
        out.append("  ".join(parts).rstrip())
    return out


def key_values(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    """``label   value`` lines with the values in one column."""
    pairs = [(k, _cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0)
    return [f"{k.ljust(width)}  {v}".rstrip() for k, v in pairs]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_message(msg: Any) -> str:
    """A decoded protocol message as ``Name field=value ...`` (seq first)."""
    if msg is None:
        return "(not a known message)"
    parts = [type(msg).__name__]
    names = reason_names(msg)
    for f in dataclasses.fields(msg):
        v = getattr(msg, f.name)
        if isinstance(v, str):
            v = repr(v)
        elif isinstance(v, tuple):
            v = "[" + ",".join(str(x) for x in v) + "]"
        if f.name in names:
            v = f"{v}({names[f.name]})"
        parts.append(f"{f.name}={v}")
    return " ".join(parts)


def reason_names(msg: Any) -> dict[str, str]:
    """Lock change reasons by name: ``reason`` of LockChange, ``last_release_reason`` of a
    StateReply or Heartbeat (what monitor shows beside the number)."""
    out = {}
    for field in ("reason", "last_release_reason"):
        code = getattr(msg, field, None)
        if isinstance(code, int) and type(msg).__name__ in ("LockChange", "StateReply",
                                                            "Heartbeat"):
            out[field] = ("none" if code == NO_RELEASE and field != "reason"
                          else LOCK_REASONS.get(code, f"unknown code {code}"))
    return out


def frame_lines(direction: str, at: float, raw: bytes, msg: Any) -> list[str]:
    """A frame as monitor and --trace show it: time, direction, decoded; then its bytes."""
    arrow = "->" if direction == "tx" else "<-"
    return [f"{clock(at)} {arrow} {format_message(msg)}", f"{'':16}{raw.hex(' ')}"]


def message_json(msg: Any) -> dict[str, Any] | None:
    if msg is None:
        return None
    names = {f"{k}_name": v for k, v in reason_names(msg).items()}
    return {"type": type(msg).__name__, **jsonable(msg), **names}


class Output:
    """Where a command's results go: ``json_mode`` picks NDJSON, ``tty`` picks redraws."""

    def __init__(self, stream: TextIO, *, json_mode: bool, tty: bool | None = None) -> None:
        self.stream = stream
        self.json_mode = json_mode
        self.tty = stream.isatty() if tty is None else tty

    def emit(self, data: Any, lines: Iterable[str] = ()) -> None:
        if self.json_mode:
            self.json(data)
        else:
            self.lines(lines)

    def json(self, data: Any) -> None:
        self.stream.write(json.dumps(jsonable(data), sort_keys=False) + "\n")
        self.stream.flush()

    def lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.stream.write(line + "\n")
        self.stream.flush()

    def live(self) -> "LiveView":
        return LiveView(self)


class LiveView:
    """A block of lines redrawn in place on a terminal, appended elsewhere, NDJSON in --json.

    Use as a context manager so the cursor comes back even on Ctrl-C."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.redraw = out.tty and not out.json_mode
        self._height = 0
        self.frames = 0

    def __enter__(self) -> "LiveView":
        if self.redraw:
            self.out.stream.write(HIDE_CURSOR)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.redraw:
            self.out.stream.write(SHOW_CURSOR)
            self.out.stream.flush()

    def show(self, data: Any, lines: Sequence[str]) -> None:
        self.frames += 1
        out = self.out
        if out.json_mode:
            out.json(data)
            return
        s = out.stream
        if not self.redraw:
            if self.frames > 1:
                s.write("\n")
            out.lines(lines)
            return
        if self._height:
            s.write(f"{CSI}{self._height}F")     # back to the first line of the last frame
        for line in lines:
            s.write(f"{CSI}2K{line}\n")          # clear the old line, write the new one
        s.write(f"{CSI}J")                       # clear whatever the old frame had below
        s.flush()
        self._height = len(lines)
