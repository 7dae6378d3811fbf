"""Face detection cost: the frame is looked at at its own size first, and at twice the size
(dlib's upsampling, four times the pixels) only when that finds no face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import vision.faces as faces
from vision import data
from vision.faces import FaceGallery, encode_photo, load_photo, observe_single_face
from vision.identity import ACCEPT, identify_frames


@pytest.fixture
def looks(monkeypatch) -> list[int]:
    """The upsampling of every dlib detection run (the real detector, counted)."""
    calls: list[int] = []
    real = faces.face_recognition.face_locations

    def counted(img, number_of_times_to_upsample=1, model="hog"):
        calls.append(number_of_times_to_upsample)
        return real(img, number_of_times_to_upsample=number_of_times_to_upsample, model=model)

    monkeypatch.setattr(faces.face_recognition, "face_locations", counted)
    return calls


def letterbox(rgb: np.ndarray, width: int, height: int, fill: float) -> np.ndarray:
    """The photo scaled to `fill` of a camera frame's height, centred on grey."""
    h, w = rgb.shape[:2]
    s = fill * height / h
    small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 110, dtype=np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small[: height - y, : width - x]
    return frame


def test_a_frame_with_a_face_of_70_px_or_more_is_looked_at_once(shared_data, looks):
    photo = data.people(shared_data / "faces")["biden"][-1]
    n, face = observe_single_face(load_photo(photo))
    assert n == 1 and face is not None
    assert looks == [0]
    top, right, bottom, left = face.box
    assert right - left >= 80


def test_a_face_too_small_for_one_look_is_found_at_twice_the_size(shared_data, looks):
    photo = data.people(shared_data / "faces")["obama"][-2]          # obama_small, 320x240
    rgb = load_photo(photo)
    tiny = cv2.resize(rgb, (rgb.shape[1] // 3, rgb.shape[0] // 3), interpolation=cv2.INTER_AREA)
    n, face = observe_single_face(tiny)
    assert n == 1 and face is not None, photo
    assert looks == [0, 1]
    top, right, bottom, left = face.box
    assert right - left < 60


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_a_camera_frame_of_a_customer_at_the_kiosk_is_identified_with_one_look(shared_data, looks, size):
    """A customer's head filling about half the frame's height, as at arm's length from a
    kiosk camera, in the two common webcam sizes."""
    people = data.people(shared_data / "faces")
    person = max(people, key=lambda p: len(people[p]))
    gallery = FaceGallery.from_templates(
        (p, e.encoding) for p, photos in people.items() for i, ph in enumerate(photos)
        if (p, i) != (person, 0) for e in encode_photo(ph)[:1])
    frame = letterbox(load_photo(people[person][0]), *size, fill=0.6)
    looks.clear()
    d = identify_frames([frame], gallery)
    assert (d.outcome, d.account_id) == (ACCEPT, person), d
    assert looks == [0]
