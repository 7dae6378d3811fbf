"""Cameras as small ports: `capture()` gives a BGR uint8 frame, or None when there is none.

The controller sees only the two Protocols. The simulated shelf camera renders whatever the
simulated world says is on the shelf at the moment of capture (through `view_fn`), with its own
lighting, shake and JPEG settings and a fresh sensor-noise seed per frame; faults ("dark",
"missing") can be switched on to play a covered or unplugged camera. The simulated face camera
shows a photo file (or nobody). OpenCVCamera wraps cv2.VideoCapture for a real device index,
a video file or a stream URL, and says which source failed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Protocol, runtime_checkable

import cv2
import numpy as np

from vision.sim.render import ProductLook, ShelfView, render_shelf

SHELF_FAULTS = (None, "dark", "missing")


class CameraError(RuntimeError):
    """A camera that cannot be opened or a photo it cannot show; names the source."""


@runtime_checkable
class ShelfCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


@runtime_checkable
class FaceCamera(Protocol):
    def capture(self) -> np.ndarray | None: ...


class SimShelfCamera:
    """A shelf camera that draws the simulated shelf as it is when `capture()` is called."""

    def __init__(self, view_fn: Callable[[], ShelfView], looks: Mapping[str, ProductLook], *,
                 seed: int = 0, lighting: float = 1.0, shake_px: int = 0,
                 jpeg_quality: int | None = None) -> None:
        self.view_fn = view_fn
        self.looks = dict(looks)
        self.seed = int(seed)
        self.lighting = float(lighting)
        self.shake_px = int(shake_px)
        self.jpeg_quality = jpeg_quality
        self.frames = 0
        self.fault: str | None = None

    def set_fault(self, fault: str | None) -> None:
        """'dark' (a covered lens: black frames), 'missing' (no frames) or None (healthy)."""
        if fault not in SHELF_FAULTS:
            raise CameraError(f"simulated shelf camera: unknown fault {fault!r}; use one of {SHELF_FAULTS}")
        self.fault = fault

    def set_conditions(self, *, lighting: float | None = None, shake_px: int | None = None,
                       jpeg_quality: int | None = None) -> None:
        if lighting is not None:
            self.lighting = float(lighting)
        if shake_px is not None:
            self.shake_px = int(shake_px)
        if jpeg_quality is not None:
            self.jpeg_quality = int(jpeg_quality)

    def capture(self) -> np.ndarray | None:
        if self.fault == "missing":
            return None
        view = self.view_fn()
        self.frames += 1
        if self.fault == "dark":
            w, h = view.size
            rng = np.random.default_rng((self.seed, self.frames))
            return rng.integers(0, 6, size=(h, w, 3), dtype=np.uint8)
        return render_shelf(view, self.looks, seed=self.seed * 1_000_003 + self.frames,
                            lighting=self.lighting, shake_px=self.shake_px,
                            jpeg_quality=self.jpeg_quality)


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
