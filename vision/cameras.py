"""Cameras as small ports: `capture()` gives a BGR uint8 frame, or None when there is none.

The controller sees only the two Protocols. The simulated shelf camera lives with the simulator
(vision.sim.camera): nothing here knows how a simulated shelf is drawn. The simulated face
camera shows a photo file (or nobody). OpenCVCamera wraps cv2.VideoCapture for a real device index,
a video file or a stream URL, and says which source failed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np


class CameraError(RuntimeError):
    """A camera that cannot be opened or a photo it cannot show; names the source."""


@runtime_checkable
class ShelfCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


@runtime_checkable
class FaceCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


class SimFaceCamera:
    """A face camera that shows a photo file as its frame; `show(None)`: nobody is there."""

    def __init__(self) -> None:
        self._frame: np.ndarray | None = None
        self.photo: Path | None = None

    def show(self, photo_path: str | Path | None) -> None:
        if photo_path is None:
            self._frame, self.photo = None, None
            return
        path = Path(photo_path)
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if frame is None:
            raise CameraError(f"simulated face camera: cannot show {path}: "
                              f"{'not a readable image' if path.is_file() else 'no such file'}")
        self._frame, self.photo = frame, path

    def capture(self) -> np.ndarray | None:
        return None if self._frame is None else self._frame.copy()


class OpenCVCamera:
    """A real camera (device index), video file or stream URL through cv2.VideoCapture."""

    def __init__(self, source: int | str) -> None:
        self.source = source
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"camera {source!r}: cannot open it; check the device index, "
                              f"file path or URL and that no other program holds it")

    def capture(self) -> np.ndarray | None:
        """The next frame as BGR uint8, or None when the source gives none (unplugged, ended)."""
        if self._cap is None:
            return None
        try:
            ok, frame = self._cap.read()
        except cv2.error:
            return None
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "OpenCVCamera":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
