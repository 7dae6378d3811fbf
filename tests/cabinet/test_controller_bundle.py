"""Bundles the controller writes replay anywhere (issue 7 item 5).

One session on a simulated cabinet whose controller uses shelf calibration frames (captured
through the cameras, as `cabinet vision calibrate` does) and the committed recognizer with an
enrolled product gallery. Its bundle must carry the measured sample windows (>= 5 a side once
settled), the calibration frames and the recognizer and gallery by hash; `cabinet reconcile
BUNDLE` must give exactly result.json's answer with and without ../shared/data, and a machine
without the model must be told which model is missing and what to do.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cabinet.bundle import load_bundle
from cabinet.config import TimeoutsConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TIMING = TimeoutsConfig(face_s=10.0, auth_s=10.0, unlock_pulse_ms=3000, door_open_alarm_s=60.0,
                        door_open_max_s=300.0, settle_s=5.0)


def _calibrate(cab, folder: Path):
    """Empty and full frames of every shelf camera, captured through the camera port."""
    from cabinet.vision_cli import calibration_cameras
    from vision.calibration import capture_stage, load_calibration, save_calibration
    for stage in ("empty", "full"):
        cameras = calibration_cameras(cab.config, cab.planogram, cab.catalog, stage)
        save_calibration(folder, stage, capture_stage(cameras, frames=1))
    return load_calibration(folder)


def _recognizer_with_gallery():
    """The committed model plus one SKU enrolled without retraining (its gallery is part of
    the recognizer's version, so the bundle must carry it)."""
    import numpy as np

    from vision.recognizer import Recognizer
    rec = Recognizer.load()
    gallery = rec.new_gallery()
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(2)]
    gallery.add("test-enrolled-sku", rec.embed(crops))
    return rec.with_gallery(gallery)


def _replay(bundle: Path, env_data: Path | None, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_data is not None:
        env["CABINET_DATA"] = str(env_data)
    return subprocess.run([sys.executable, "-m", "cabinet.cli", "reconcile", str(bundle),
                           "--json", *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def session(tmp_path_factory, face_encoder):
    """One scripted purchase through every real part; the cabinet stays for the checks."""
    from cabinet.demo import SimCabinet, DEFAULT_CONFIG
    tmp = tmp_path_factory.mktemp("controller-bundle")
    cab = SimCabinet(tmp / "cabinet", DEFAULT_CONFIG, timing=TIMING, face_encoder=face_encoder)
    try:
        cab.controller.shelf_calibration = _calibrate(cab, tmp / "calibration")
        cab.controller.recognizer = _recognizer_with_gallery()
        scenario = next(s for s in cab.scenarios
                        if s.expect.outcome == "charged" and s.expect.basket)
        report, _ = asyncio.run(cab.run_scenario(scenario))
        assert report is not None and report.bundle_dir
        yield cab, scenario, report, Path(report.bundle_dir)
    finally:
        cab.close()


def test_the_bundle_carries_the_measured_sample_windows(session):
    cab, _, report, path = session
    raw = json.loads((path / "bundle.json").read_text())
    assert raw["closed_at"] is not None
    for shelf_id, rec in raw["shelves"].items():
        for side in ("before", "after"):
            samples = rec[f"samples_{side}"]
            assert rec[f"{side}_stable"], (shelf_id, side)
            assert len(samples) >= 5, (shelf_id, side, samples)   # reconcile's noise estimate
            # measured, not the settled value repeated: they scatter (the cells' noise), and
            # the settled value is their middle
            assert 0 < statistics.pstdev(samples) < 2.0, (shelf_id, side, samples)
            assert statistics.median(samples) == pytest.approx(rec[f"{side}_g"], abs=1.5)


def test_the_bundle_carries_calibration_and_recognizer_by_hash(session):
    cab, _, _, path = session
    raw = json.loads((path / "bundle.json").read_text())
    cal = cab.controller.shelf_calibration
    assert raw["calibration"]["content_hash"] == cal.content_hash
    assert sorted(raw["calibration"]["cameras"]) == sorted(cab.planogram.cameras)
    for camera, entry in raw["calibration"]["cameras"].items():
        for stage in ("empty", "full"):
            name = entry[stage]
            data = (path / name).read_bytes()
            assert raw["files"][name] == hashlib.sha256(data).hexdigest()
    b = load_bundle(path)
    for camera in cab.planogram.cameras:
        assert (b.calibration[camera].empty == cal.cameras[camera].empty).all()
    rec = cab.controller.recognizer
    assert raw["recognizer"]["version"] == rec.version
    assert raw["recognizer"]["model_sha256"] == rec.card.model_sha256
    gallery = raw["recognizer"]["gallery"]
    assert raw["files"][gallery] == hashlib.sha256((path / gallery).read_bytes()).hexdigest()
    assert json.loads((path / gallery).read_text())["sha256"] == rec.gallery.sha256()


def test_replay_gives_result_json_with_and_without_the_shared_data(session, tmp_path):
    cab, scenario, report, path = session
    stored = json.loads((path / "result.json").read_text())
    assert stored["basket"] == {k: v for k, v in report.basket.items() if v}
    moved = tmp_path / "elsewhere" / path.name
    shutil.copytree(path, moved)
    empty = tmp_path / "no-shared-data"
    empty.mkdir()
    here = _replay(path, None)
    there = _replay(moved, empty)
    assert here.returncode == 0, here.stderr
    assert there.returncode == 0, there.stderr
    assert json.loads(here.stdout) == stored
    assert json.loads(there.stdout) == stored


def test_a_machine_without_the_model_is_told_which_one_and_what_to_do(session, tmp_path):
    cab, _, _, path = session
    version = cab.controller.recognizer.version
    sha = cab.controller.recognizer.card.model_sha256
    out = _replay(path, None, "--model", str(tmp_path / "no-models"))
    assert out.returncode != 0 and out.stdout == ""
    assert f"recognizer: model {version} (model file sha256 {sha}) not found on this " \
           f"machine" in out.stderr
    assert "install models/ at that version or pass --model DIR" in out.stderr


def test_the_app_hands_the_controller_the_calibration_saved_in_data_dir(tmp_path, make_cabinet):
    """`cabinet vision calibrate` saves to <data_dir>/calibration: the controller uses it (and
    so every bundle carries it); a damaged one stops the start, naming the file."""
    import numpy as np

    from cabinet.errors import CabinetError
    from vision.calibration import save_calibration
    workdir = tmp_path / "cab"
    frames = {cam: np.full((48, 64, 3), 90 + i, np.uint8)
              for i, cam in enumerate(("cam_top", "cam_middle", "cam_bottom"))}
    saved = save_calibration(workdir / "calibration", "empty", frames)
    cab = make_cabinet(workdir=workdir)
    assert cab.controller.shelf_calibration.content_hash == saved.content_hash
    assert cab.new_controller().shelf_calibration.content_hash == saved.content_hash
    cab.close()
    (workdir / "calibration" / "cam_top" / "empty.png").write_bytes(b"not the frame")
    with pytest.raises(CabinetError, match=r"data_dir: .*cam_top/empty.png: content differs"):
        make_cabinet(workdir=workdir)
