"""Errors of the cabinet package: each one says which file, which line, which key, what to do.

`FormatError` is the single-line error of every user-facing file (catalog, planogram, scenarios,
accounts, configuration, session bundle): `path:line: key = value: message`. The parts that are
unknown are left out, so a missing file reads `fixtures/catalog.yaml: file not found`. Several
errors of one file (a configuration with three bad keys) travel together in `FormatErrors`, one
line each. Nothing in these classes touches the disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

_MISSING = object()


class CabinetError(Exception):
    """Base of every error the cabinet raises on purpose (bad input, refused operation)."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    text = " ".join(text.split())  # never let a value break the one-line rule
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_path(path: str | Path) -> str:
    """The path as the user typed it, relative to the working directory when that is shorter."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def format_key(loc: Sequence[str | int]) -> str:
    """('slots', 3, 'sku') -> 'slots[3].sku'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class FormatError(CabinetError):
    """One thing wrong in one file: `path:line: key = value: message` on one line."""

    def __init__(self, path: str | Path, line: int | None, key: str | Sequence | None,
                 value: Any = _MISSING, message: str = ""):
        self.path = display_path(path)
        self.line = line
        self.key = format_key(key) if isinstance(key, (tuple, list)) else key
        self.value = None if value is _MISSING else value
        self.has_value = value is not _MISSING
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = ""
        if self.key:
            what = f"{self.key} = {_short(self.value)}: " if self.has_value else f"{self.key}: "
        return f"{where}: {what}{self.message}"

    def __reduce__(self):  # picklable across worker processes
        value = self.value if self.has_value else _MISSING
        return (FormatError, (self.path, self.line, self.key, value, self.message))


class FormatErrors(CabinetError):
    """Every error found in one file, in file order; `str()` is one line per error."""

    def __init__(self, errors: Iterable[FormatError]):
        self.errors: tuple[FormatError, ...] = tuple(
            sorted(errors, key=lambda e: (e.line is None, e.line or 0)))
        if not self.errors:
            raise ValueError("FormatErrors needs at least one error")
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    @property
    def first(self) -> FormatError:
        return self.errors[0]


class ConfigError(FormatErrors):
    """The configuration file is missing or wrong; lists every error found."""


class BundleError(CabinetError):
    """A session bundle directory is missing a file, or a file in it is damaged."""

    def __init__(self, path: str | Path, message: str):
        self.path = display_path(path)
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.path}: {self.message}")
