"""Camera adapters: the simulated shelf and face cameras, and OpenCV on a real video file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vision.calibration import capture_stage
from vision.cameras import CameraError, FaceCamera, OpenCVCamera, ShelfCamera, SimFaceCamera
from vision.diff import FROZEN, SlotSpec, slot_evidence
from vision.sim.camera import SimShelfCamera
from vision.sim.render import ProductLook, ShelfView, SlotView

LOOKS = {"cola-330": ProductLook.for_sku("cola-330", "Cola")}
SLOT = SlotSpec("A1", (10, 60, 300, 150), 4)


class Shelf:
    """A tiny simulated world: what is in slot A1 right now."""

    def __init__(self, items=3) -> None:
        self.items = ["cola-330"] * items

    def view(self) -> ShelfView:
        return ShelfView("shelf-1", (320, 240), (SlotView("A1", SLOT.roi, SLOT.capacity, tuple(self.items)),))


def test_sim_shelf_camera_shows_the_world_at_capture_time_and_the_reader_sees_it():
    world = Shelf()
    cam = SimShelfCamera(world.view, LOOKS, seed=3)
    assert isinstance(cam, ShelfCamera)
    empty_world = Shelf(0)
    empty = capture_stage({"shelf-1": SimShelfCamera(empty_world.view, LOOKS, seed=4)}, 3)["shelf-1"]
    before = cam.capture()
    world.items.pop()
    after = cam.capture()
    assert before.shape == (240, 320, 3) and before.dtype == np.uint8
    from vision.calibration import CameraCalibration
    ev = slot_evidence(before, after, [SLOT], camera="shelf-1",
                       calibration=CameraCalibration("shelf-1", empty))["A1"]
    assert ev.usable and ev.change > 0.05
    assert ev.occupied_before == (True, True, True, False) and ev.occupied_after == (True, True, False, False)


def test_sim_shelf_camera_frames_differ_but_replay_from_the_seed():
    world = Shelf()
    a, b = SimShelfCamera(world.view, LOOKS, seed=5), SimShelfCamera(world.view, LOOKS, seed=5)
    first = a.capture()
    assert not np.array_equal(first, a.capture())
    assert np.array_equal(first, b.capture())
    flat = SimShelfCamera(world.view, LOOKS, seed=5, optics=None, shake_px=0, jpeg_quality=None)
    assert np.abs(flat.capture().astype(int) - first.astype(int)).mean() > 3  # the camera-like look is on by default


def test_sim_shelf_camera_faults():
    world = Shelf()
    cam = SimShelfCamera(world.view, LOOKS)
    cam.set_fault("dark")
    dark = cam.capture()
    assert dark.shape == (240, 320, 3) and dark.mean() < 5
    cam.set_fault("missing")
    assert cam.capture() is None
    cam.set_fault(None)
    live = cam.capture()
    assert live.mean() > 50
    cam.set_fault("frozen")
    world.items.clear()
    stuck = cam.capture()
    assert np.array_equal(stuck, live)  # a hung driver repeats its last frame...
    ev = slot_evidence(live, stuck, [SLOT], camera="shelf-1")["A1"]
    assert not ev.usable and FROZEN in ev.flags  # ...and the reader says so
    with pytest.raises(CameraError, match="unknown fault 'smoke'"):
        cam.set_fault("smoke")


def test_sim_face_camera_shows_a_photo_or_nobody(tmp_path):
    photo = tmp_path / "someone.png"
    cv2.imwrite(str(photo), np.full((60, 80, 3), (10, 20, 30), np.uint8))
    cam = SimFaceCamera()
    assert isinstance(cam, FaceCamera)
    assert cam.capture() is None
    cam.show(photo)
    frame = cam.capture()
    assert frame.shape == (60, 80, 3) and tuple(frame[0, 0]) == (10, 20, 30)
    cam.show(None)
    assert cam.capture() is None


def test_sim_face_camera_names_a_bad_photo(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a photo")
    cam = SimFaceCamera()
    with pytest.raises(CameraError, match="junk.jpg: not a readable image"):
        cam.show(junk)
    with pytest.raises(CameraError, match="nope.jpg: no such file"):
        cam.show(tmp_path / "nope.jpg")
    assert cam.capture() is None


def test_opencv_camera_reads_an_image_sequence_frame_by_frame(tmp_path):
    """cv2.VideoCapture's image-sequence reader is built into every OpenCV (no codec needed):
    PNG frames come back pixel for pixel, in order, then None when the sequence ends."""
    shots = []
    for i in range(3):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, i] = 60 * (i + 1)  # frame i is pure blue, green, then red
        frame[0, i] = (255, 255, 255)
        assert cv2.imwrite(str(tmp_path / f"shelf_{i:02d}.png"), frame)
        shots.append(frame)
    with OpenCVCamera(str(tmp_path / "shelf_%02d.png")) as cam:
        assert isinstance(cam, ShelfCamera)
        frames = [cam.capture() for _ in range(4)]
    assert frames[3] is None
    for got, want in zip(frames[:3], shots):
        assert got.dtype == np.uint8 and np.array_equal(got, want)
    assert cam.capture() is None  # closed by the with-block


def writable_codec(path) -> str:
    """A FourCC this OpenCV build can write an AVI with; fails naming the ones tried."""
    tried = ("MJPG", "XVID", "DIVX", "mp4v")
    for fourcc in tried:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
        if writer.isOpened():
            writer.release()
            return fourcc
        writer.release()
    pytest.fail(f"this OpenCV build ({cv2.__version__}) writes none of {tried}; "
                f"opencv-python-headless from PyPI ships FFmpeg with all of them")


def test_opencv_camera_reads_a_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*writable_codec(path)), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * (i + 1), np.uint8))
    writer.release()
    with OpenCVCamera(str(path)) as cam:
        assert isinstance(cam, ShelfCamera)
        frames = [cam.capture() for _ in range(4)]
    assert [f is not None for f in frames] == [True, True, True, False]
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames[:3])
    # lossy codecs keep a flat grey frame within a few levels of its value
    for i, f in enumerate(frames[:3]):
        assert abs(float(f.mean()) - 40 * (i + 1)) < 6, (i, f.mean())


def test_opencv_camera_names_a_source_it_cannot_open(tmp_path):
    with pytest.raises(CameraError, match="camera '.*missing.mp4': cannot open it"):
        OpenCVCamera(str(tmp_path / "missing.mp4"))
