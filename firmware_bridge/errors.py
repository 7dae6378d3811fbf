"""The link's errors. Each says which port or board failed and what to do about it."""
from __future__ import annotations


class LinkError(Exception):
    """Base of every error of the serial link and the board."""


class PortNotFound(LinkError):
    def __init__(self, port: str) -> None:
        self.port = port
        super().__init__(f"Serial port {port} does not exist: check the board's USB cable and "
                         f"power, or list ports with `cabinet-diag ports`")


class PortBusy(LinkError):
    """Another program holds the port exclusively (TIOCEXCL and flock; link.open_exclusive)."""

    def __init__(self, port: str, holders: list[str] | tuple[str, ...] = ()) -> None:
        self.port = port
        self.holders = tuple(holders)
        by = f" ({', '.join(self.holders)})" if self.holders else ""
        super().__init__(f"Serial port {port} is in use by another program{by}: it holds the "
                         f"port exclusively; stop the cabinet controller (the cabinet service, "
                         f"`cabinet demo`) or the other cabinet-diag session on it first")


class LinkDown(LinkError):
    """The MCU is not answering, or the port went away; a retry later may work."""


class CommandRefused(LinkError):
    """The MCU (or the host-side load-cell logic) refused a command; retrying will not help."""


class ProtocolVersionMismatch(LinkError):
    def __init__(self, port: str, board: str, host: str) -> None:
        super().__init__(f"Board on {port} speaks protocol {board}, this host speaks {host}: "
                         f"update the firmware or the cabinet software so the major versions match")
