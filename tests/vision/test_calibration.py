"""Calibration frames: captured through the camera port, saved with hashes, checked on load, and
`cabinet vision calibrate` end to end on the simulated cabinet."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.calibration import (MANIFEST, CalibrationError, CameraCalibration, capture_stage, load_calibration,
                                save_calibration)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CABINET = [str(BIN / "cabinet")] if (BIN / "cabinet").exists() else [
    sys.executable, "-c", "import sys; from cabinet.cli import main; sys.exit(main())"]


class Frames:
    """A camera port that plays given frames in turn (None: no frame)."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.calls = 0

    def capture(self):
        self.calls += 1
        return self.frames.pop(0)


def noisy(base: int, seed: int, shape=(60, 80, 3)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full(shape, base, np.int16)
    img[10:50, 20:60] = (30, 160, 220)
    return np.clip(img + rng.integers(-6, 7, shape), 0, 255).astype(np.uint8)


def test_a_stage_is_the_per_pixel_median_of_its_frames():
    frames = [noisy(120, s) for s in range(5)]
    spike = frames[2].copy()
    spike[0, 0] = 255  # one frame's outlier does not survive the median
    frames[2] = spike
    cam = Frames(frames)
    got = capture_stage({"cam_a": cam}, 5)["cam_a"]
    assert cam.calls == 5 and got.dtype == np.uint8
    assert np.array_equal(got, np.median(np.stack(frames), axis=0).round().astype(np.uint8))
    assert got[0, 0, 0] < 140
    clean = noisy(120, 99)
    clean[...] = 120
    clean[10:50, 20:60] = (30, 160, 220)
    assert np.abs(got.astype(int) - clean).mean() < np.abs(frames[0].astype(int) - clean).mean()


@pytest.mark.parametrize("bad,why", [(None, "no frame"), (np.zeros((60, 80, 3), np.uint8), "too dark"),
                                     (np.full((60, 80, 3), 128, np.uint8), "blank frame")])
def test_an_unusable_frame_stops_the_calibration_naming_the_camera(bad, why):
    cam = Frames([noisy(120, 0), bad, noisy(120, 1)])
    with pytest.raises(CalibrationError, match=f"camera cam_b: frame 2 of 3 is unusable: {why}"):
        capture_stage({"cam_b": cam}, 3)


def test_a_camera_that_changes_resolution_is_refused():
    cam = Frames([noisy(120, 0), noisy(120, 1, (40, 80, 3))])
    with pytest.raises(CalibrationError, match="camera cam_c: frame 2 is .*the camera changed resolution"):
        capture_stage({"cam_c": cam}, 2)


def test_save_and_load_round_trip_with_hashes(tmp_path):
    empty, full = noisy(120, 1), noisy(90, 2)
    save_calibration(tmp_path, "empty", {"cam_a": empty}, now=lambda: 100.0)
    cal = save_calibration(tmp_path, "full", {"cam_a": full}, now=lambda: 200.0)
    assert np.array_equal(cal["cam_a"].empty, empty) and np.array_equal(cal["cam_a"].full, full)
    doc = json.loads((tmp_path / MANIFEST).read_text())
    assert doc["files"]["cam_a/empty.png"]["captured_at"] == 100.0
    assert doc["files"]["cam_a/full.png"]["size"] == [80, 60]
    again = load_calibration(tmp_path)
    assert again.content_hash == cal.content_hash == doc["content_hash"] and len(cal.content_hash) == 64
    # the content hash names the frames: new frames, new hash
    other = save_calibration(tmp_path, "full", {"cam_a": noisy(90, 3)})
    assert other.content_hash != cal.content_hash


def test_a_changed_or_missing_file_is_refused_by_name(tmp_path):
    save_calibration(tmp_path, "empty", {"cam_a": noisy(120, 1)})
    png = tmp_path / "cam_a" / "empty.png"
    cv2.imwrite(str(png), noisy(121, 1))
    with pytest.raises(CalibrationError, match=r"cam_a/empty.png: content differs from its sha256"):
        load_calibration(tmp_path)
    png.unlink()
    with pytest.raises(CalibrationError, match=r"cam_a/empty.png: listed in calibration.json but missing"):
        load_calibration(tmp_path)
    with pytest.raises(CalibrationError, match="no calibration here; run `cabinet vision calibrate`"):
        load_calibration(tmp_path / "nowhere")
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(CalibrationError, match="not readable JSON"):
        load_calibration(tmp_path)


def test_a_full_frame_without_an_empty_one_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match="camera cam_a has no empty-shelf frame; run .*--stage empty"):
        save_calibration(tmp_path, "full", {"cam_a": noisy(90, 2)})
    assert not (tmp_path / "cam_a").exists()
    save_calibration(tmp_path, "empty", {"cam_a": noisy(120, 1)})
    doc = json.loads((tmp_path / MANIFEST).read_text())
    doc["files"] = {"cam_a/full.png": doc["files"].pop("cam_a/empty.png")}
    (tmp_path / "cam_a" / "empty.png").rename(tmp_path / "cam_a" / "full.png")
    (tmp_path / MANIFEST).write_text(json.dumps(doc))  # a folder someone else wrote
    with pytest.raises(CalibrationError, match="content_hash does not match"):
        load_calibration(tmp_path)


def test_bad_stage_camera_id_and_frames_are_refused(tmp_path):
    with pytest.raises(CalibrationError, match="stage 'half'"):
        save_calibration(tmp_path, "half", {"cam_a": noisy(120, 1)})
    with pytest.raises(CalibrationError, match="camera id '../x' cannot name a folder"):
        save_calibration(tmp_path, "empty", {"../x": noisy(120, 1)})
    with pytest.raises(CalibrationError, match="full frame .* and empty frame .* differ in size"):
        CameraCalibration("cam_a", noisy(120, 1), noisy(120, 1, (40, 80, 3)))
    with pytest.raises(CalibrationError, match="frames = 0"):
        capture_stage({"cam_a": Frames([])}, 0)


def test_cabinet_vision_calibrate_captures_both_stages_of_the_simulated_cabinet(tmp_path):
    out = tmp_path / "cal"
    cmd = [*CABINET, "vision", "calibrate", "--out", str(out), "--frames", "2", "--json"]
    first = subprocess.run(cmd + ["--stage", "empty"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["complete"] is False
    second = subprocess.run(cmd + ["--stage", "full"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["cameras"] == ["cam_bottom", "cam_middle", "cam_top"] and result["complete"] is True
    cal = load_calibration(out)
    assert cal.content_hash == result["content_hash"]
    for cam in cal.cameras.values():
        assert cam.empty.shape == (480, 640, 3)
        # the full shelves differ from the empty ones inside the slots, hardly outside them
        diff = np.abs(cam.full.astype(int) - cam.empty.astype(int)).max(axis=2)
        assert (diff[300:430] > 40).mean() > 0.1 and (diff[:200] > 40).mean() < 0.02


def test_cabinet_vision_calibrate_names_a_camera_it_cannot_open(tmp_path):
    cfg = (ROOT / "fixtures" / "cabinet.yaml").read_text().replace(
        "cam_top: {source: sim}", f"cam_top: {{source: {tmp_path / 'no-such-video.mp4'}}}")
    for name in ("catalog.yaml", "planogram.yaml", "accounts.yaml", "scenarios.yaml"):
        (tmp_path / name).write_text((ROOT / "fixtures" / name).read_text())
    (tmp_path / "cabinet.yaml").write_text(cfg)
    r = subprocess.run([*CABINET, "vision", "calibrate", "--stage", "empty",
                        "--config", str(tmp_path / "cabinet.yaml"), "--out", str(tmp_path / "cal")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("cabinet vision calibrate: camera ") and "no-such-video.mp4" in r.stderr
    assert not (tmp_path / "cal" / MANIFEST).exists()
