"""Finding the board by its serial number, not by its tty name.

A USB board can come back as /dev/ttyACM1 after it was /dev/ttyACM0. The link remembers the
board serial from the identify handshake and asks a ``PortFinder`` where that serial lives
now. ``UsbPortFinder`` scans /dev/serial/by-id and pyserial's list_ports (what pyserial's
``hwgrep://`` does); ``RegistryPortFinder`` reads the small directory the simulator publishes
to (one file per board serial holding the pty path, the simulator's pid and the pty node's
identity, so an entry left by a killed simulator, or naming a pty number since reused by
another program, is ignored), since a pty has no USB serial number.
A port given as ``serial:SN`` is resolved through the finder before opening.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from serial.tools import list_ports

SERIAL_PREFIX = "serial:"


def default_registry_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"cabinet-sim-ports-{os.getuid()}"


class PortFinder(Protocol):
    def find(self, board_serial: str) -> str | None: ...


class UsbPortFinder:
    def __init__(self, by_id_dir: str | Path = "/dev/serial/by-id") -> None:
        self.by_id_dir = Path(by_id_dir)

    def find(self, board_serial: str) -> str | None:
        for info in list_ports.comports():
            if info.serial_number and info.serial_number == board_serial:
                return info.device
        if self.by_id_dir.is_dir():
            for link in sorted(self.by_id_dir.iterdir()):
                if board_serial in link.name:
                    return str(link.resolve())
        return None


class RegistryPortFinder:
    """The simulator's stand-in for USB serial numbers: ``<dir>/<serial>`` holds the path."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_registry_dir()

    def _file(self, board_serial: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in board_serial)
        return self.directory / safe

    def publish(self, board_serial: str, path: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{self._file(board_serial)}.{os.getpid()}.tmp")
        tmp.write_text(f"{path}\n{os.getpid()}\n{_node(path)}\n")
        os.replace(tmp, self._file(board_serial))

    def unpublish(self, board_serial: str, path: str | None = None) -> None:
        f = self._file(board_serial)
        try:
            if path is None or f.read_text().split("\n")[0] == path:
                f.unlink()
        except OSError:
            pass

    def find(self, board_serial: str) -> str | None:
        try:
            path, pid, node, *_ = self._file(board_serial).read_text().split("\n") + ["", ""]
        except OSError:
            return None
        # an entry left by a simulator that was killed, or whose pty was closed and its number
        # reused, may name a pty another program has now
        if not path or not os.path.exists(path) or not _alive(pid.strip()):
            return None
        return path if not node.strip() or node.strip() == _node(path) else None

    def boards(self) -> dict[str, str]:
        if not self.directory.is_dir():
            return {}
        out = {}
        for f in sorted(self.directory.iterdir()):
            if not f.name.endswith(".tmp"):
                path = self.find(f.name)
                if path:
                    out[f.name] = path
        return out


def _node(path: str) -> str:
    """A tty node's identity: a node re-created at the same path (a reused pty number) differs."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_rdev}:{st.st_ctime_ns}"


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True                      # written by hand: trust it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ChainPortFinder:
    def __init__(self, *finders: PortFinder) -> None:
        self.finders = finders

    def find(self, board_serial: str) -> str | None:
        for f in self.finders:
            path = f.find(board_serial)
            if path:
                return path
        return None


def default_finder() -> ChainPortFinder:
    return ChainPortFinder(UsbPortFinder(), RegistryPortFinder())
