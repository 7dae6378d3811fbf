"""The simulated shelf camera: renders the simulated world's shelf at the moment of capture.

It satisfies vision.cameras.ShelfCamera, so the controller and `cabinet vision calibrate` use it
exactly as they use a real camera. By default it looks like a camera (vision.sim.render.Optics):
items drawn from real photos where their look has them, foreign things from `foreign_photos`,
a fresh seed per frame for lighting, shake and noise. Faults ("dark", "missing", "frozen") play
a covered, unplugged or hung camera.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from vision.cameras import CameraError
from vision.sim.render import CAMERA_LIKE, Optics, ProductLook, ShelfView, render_shelf

SHELF_FAULTS = (None, "dark", "missing", "frozen")


class SimShelfCamera:
    """A shelf camera that draws the simulated shelf as it is when `capture()` is called."""

    def __init__(self, view_fn: Callable[[], ShelfView], looks: Mapping[str, ProductLook], *,
                 seed: int = 0, lighting: float = 1.0, shake_px: int = 2,
                 jpeg_quality: int | None = 85, optics: Optics | None = CAMERA_LIKE,
                 foreign_photos: Sequence[Path] = ()) -> None:
        self.view_fn = view_fn
        self.looks = dict(looks)
        self.seed = int(seed)
        self.lighting = float(lighting)
        self.shake_px = int(shake_px)
        self.jpeg_quality = jpeg_quality
        self.optics = optics
        self.foreign_photos = tuple(Path(p) for p in foreign_photos)
        self.frames = 0
        self.fault: str | None = None
        self._last: np.ndarray | None = None

    def set_fault(self, fault: str | None) -> None:
        """'dark' (a covered lens: black frames), 'missing' (no frames), 'frozen' (the last
        frame again, bit for bit, as a hung driver gives) or None (healthy)."""
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
        if self.fault == "frozen" and self._last is not None:
            return self._last.copy()
        view = self.view_fn()
        self.frames += 1
        if self.fault == "dark":
            w, h = view.size
            rng = np.random.default_rng((self.seed, self.frames))
            return rng.integers(0, 6, size=(h, w, 3), dtype=np.uint8)
        frame = render_shelf(view, self.looks, seed=self.seed * 1_000_003 + self.frames,
                             lighting=self.lighting, shake_px=self.shake_px,
                             jpeg_quality=self.jpeg_quality, optics=self.optics,
                             foreign_photos=self.foreign_photos)
        self._last = frame
        return frame.copy()
