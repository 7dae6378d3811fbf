"""The small interfaces the cabinet's parts are built behind (cabinet/app.py picks the adapter).

Each has a real adapter and a simulated one; the controller and the runner see only these:

| port       | real adapter                                   | simulated adapter                      |
|------------|------------------------------------------------|----------------------------------------|
| Board      | firmware_bridge.device.Board on a serial port  | the same Board on SimMCU's pty         |
| ShelfCamera/FaceCamera | vision.cameras.OpenCVCamera (index, file, URL) | SimShelfCamera / SimFaceCamera |
| Gateway    | billing.gateway.GatewayClient on an https URL  | the same client on SandboxGateway      |
| Database   | a SQLAlchemy sessionmaker on PostgreSQL/SQLite | SQLite under data_dir                  |
| Clock      | firmware_bridge.clock.SYSTEM                   | ManualClock (tests)                    |

The board and the gateway are real protocol clients in both worlds: what is simulated is the
far end (the MCU, the payment provider), so the bytes and requests are the real ones.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from firmware_bridge.clock import Clock  # noqa: F401  (re-exported: the Clock port)


@runtime_checkable
class Board(Protocol):
    port: str

    def open(self) -> Any: ...
    def close(self) -> None: ...
    def state(self) -> Any: ...
    def unlock(self, pulse_ms: int) -> Any: ...
    def lock(self) -> Any: ...
    def weights(self) -> dict[int, Any]: ...
    def wait_stable(self, shelves: list[int] | None = None, timeout_s: float = ...) -> dict: ...
    def counters(self) -> Any: ...
    def calibration(self) -> Any: ...


@runtime_checkable
class ShelfCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


@runtime_checkable
class FaceCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


@runtime_checkable
class Gateway(Protocol):
    """What billing.service.Billing calls (billing.gateway.GatewayClient)."""
    base_url: str

    def authorize(self, *args: Any, **kwargs: Any) -> Any: ...
    def capture(self, *args: Any, **kwargs: Any) -> Any: ...
    def void(self, *args: Any, **kwargs: Any) -> Any: ...


class Database(Protocol):
    """A sessionmaker: `with db() as s` reads, `with db.begin() as s` writes."""

    def __call__(self) -> Any: ...
    def begin(self) -> Any: ...


Sleep = Callable[[float], None]
