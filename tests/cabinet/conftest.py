"""Fixtures shared by the cabinet tests: a fresh simulated cabinet per test, built cheaply.

`make_cabinet(...)` builds a `SimCabinet` (simulated MCU on a pty, SQLite file, sandbox gateway,
enrolled faces) in the test's own folder and closes it after the test, so no test sees what
another one did to the lock, the shelves, the journal or the accounts. What is immutable and
expensive is built once per session: the face encodings of the photos (about 4 s for the
demo's accounts), looked up by photo path, so a cabinet costs a few tenths of a second.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from cabinet.demo import DEFAULT_CONFIG, SimCabinet
from vision.faces import enrol_encodings


@pytest.fixture(scope="session")
def face_encoder() -> Callable[[Sequence[Path]], list[np.ndarray]]:
    """`enrol_encodings` with a per-session cache keyed by photo path (the photos are
    read-only); a photo that fails raises exactly as `enrol_encodings` does."""
    cache: dict[Path, np.ndarray] = {}

    def encode(photos: Sequence[Path]) -> list[np.ndarray]:
        missing = [Path(p) for p in photos if Path(p) not in cache]
        if missing:
            cache.update(zip(missing, enrol_encodings(missing)))
        return [cache[Path(p)].copy() for p in photos]
    return encode


@pytest.fixture
def make_cabinet(tmp_path, face_encoder):
    """Factory: `make_cabinet(timing=..., clock=..., hardware_clock=..., config=...)` -> a new
    SimCabinet in its own folder under tmp_path; every cabinet made is closed at teardown."""
    made: list[SimCabinet] = []

    def make(*, config: Path = DEFAULT_CONFIG, workdir: Path | None = None,
             **kwargs) -> SimCabinet:
        folder = workdir if workdir is not None else tmp_path / f"cabinet-{len(made)}"
        cab = SimCabinet(folder, config, face_encoder=face_encoder, **kwargs)
        made.append(cab)
        return cab

    yield make
    for cab in reversed(made):
        cab.close()
