"""Face identification on real photos: enrol, identify held-out photos, refuse strangers, and
refuse photos with no face or several. Each photo is encoded once per test session."""
from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision import data
from vision.cameras import SimFaceCamera
from vision.faces import (DEFAULT_THRESHOLD, FaceError, FaceGallery, encode_photo, encoding_from_bytes,
                          encoding_to_bytes, enrol_encodings, identify_frame, load_photo)
from vision.render import ProductLook, ShelfView, SlotView, render_shelf


@pytest.fixture(scope="session")
def shared_encodings(shared_data: Path) -> dict[str, list[np.ndarray]]:
    """Person -> one encoding per photo in ../shared/data/faces (each photo holds one face)."""
    found = {}
    for person, photos in data.people(shared_data / "faces").items():
        found[person] = [enrol_encodings([p])[0] for p in photos]
    return found


def gallery_of(encodings: dict[str, list[np.ndarray]], skip: tuple[str, int] | None = None,
               without: str | None = None) -> FaceGallery:
    gallery = FaceGallery()
    for person, encs in encodings.items():
        for i, enc in enumerate(encs):
            if person != without and (person, i) != skip:
                gallery.add(person, enc)
    return gallery


def test_shared_faces_are_all_there(shared_encodings):
    assert len(shared_encodings) == 6
    assert sum(len(v) for v in shared_encodings.values()) == 17


def test_every_enrolled_person_is_identified_from_a_held_out_photo(shared_encodings):
    tried = 0
    for person, encs in shared_encodings.items():
        if len(encs) < 2:
            continue
        for i, enc in enumerate(encs):
            match = gallery_of(shared_encodings, skip=(person, i)).identify(enc)
            assert match is not None and match.account_id == person, (person, i, match)
            tried += 1
    assert tried == 16


def test_nobody_is_taken_for_someone_else(shared_encodings):
    """Zero false accepts: with a person not enrolled, none of their photos matches anyone."""
    for person, encs in shared_encodings.items():
        gallery = gallery_of(shared_encodings, without=person)
        for enc in encs:
            assert gallery.identify(enc) is None, person
            assert gallery.nearest(enc).distance > DEFAULT_THRESHOLD + 0.1


def test_shipped_threshold_separates_the_shared_pairs(shared_encodings):
    same, different = [], []
    flat = [(p, e) for p, encs in shared_encodings.items() for e in encs]
    for (p1, e1), (p2, e2) in itertools.combinations(flat, 2):
        (same if p1 == p2 else different).append(float(np.linalg.norm(e1 - e2)))
    assert max(same) < DEFAULT_THRESHOLD < min(different)


def test_group_photo_is_refused_for_enrolment_and_the_largest_face_is_used(shared_data):
    photo = data.group_photos(shared_data / "faces")[0]
    with pytest.raises(FaceError, match=rf"{photo.name}: \d faces found; use a photo of the person alone"):
        enrol_encodings([photo])
    result = identify_frame(load_photo(photo), FaceGallery())
    assert result.faces >= 2 and result.status == "unknown" and result.box is not None


def test_face_camera_frame_unlocks_the_enrolled_and_refuses_a_stranger():
    """Runs on the shared photos or on the fallback photos that set-up extracts."""
    root = data.faces_root()
    if root is None:
        pytest.skip("no face photos: neither ../shared/data/faces nor .cache/faces (run make setup)")
    photos = data.people(root)
    if len(photos.get("obama", [])) < 2 or not photos.get("biden"):
        pytest.skip(f"needs two obama photos and a biden photo in {root}")
    gallery = FaceGallery()
    for enc in enrol_encodings(photos["obama"][:-1]):
        gallery.add("acct-obama", enc)
    cam = SimFaceCamera()
    cam.show(photos["obama"][-1])
    result = identify_frame(cam.capture(), gallery, bgr=True)
    assert result.status == "match" and result.match.account_id == "acct-obama"
    cam.show(photos["biden"][0])
    stranger = identify_frame(cam.capture(), gallery, bgr=True)
    assert stranger.status == "unknown" and stranger.match is None and stranger.nearest_distance > DEFAULT_THRESHOLD
    cam.show(None)
    assert cam.capture() is None


def test_a_photo_without_a_face_is_refused_by_name(tmp_path):
    looks = {"cola-330": ProductLook.for_sku("cola-330")}
    shelf = render_shelf(ShelfView("s", (320, 240), (SlotView("A1", (10, 10, 300, 200), 3, ("cola-330",)),)), looks)
    path = tmp_path / "shelf.png"
    cv2.imwrite(str(path), shelf)
    with pytest.raises(FaceError, match=r"face photo .*shelf.png: no face found") as err:
        enrol_encodings([path])
    assert err.value.path == path
    assert identify_frame(shelf[:, :, ::-1].copy(), FaceGallery()).status == "no_face"


def test_unreadable_or_missing_photos_are_refused_by_name(tmp_path):
    junk = tmp_path / "selfie.jpg"
    junk.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(FaceError, match=r"selfie.jpg: not a readable image"):
        load_photo(junk)
    with pytest.raises(FaceError, match=r"gone.jpg: no such file"):
        enrol_encodings([tmp_path / "gone.jpg"])
    with pytest.raises(FaceError, match="no photos given"):
        enrol_encodings([])
    with pytest.raises(FaceError, match=r"face camera frame: expected an RGB uint8 image"):
        identify_frame(np.zeros((10, 10), np.float32), FaceGallery())


def test_photo_paths_are_encoded_in_original_pixels(tmp_path):
    root = data.faces_root()
    if root is None:
        pytest.skip("no face photos: neither ../shared/data/faces nor .cache/faces (run make setup)")
    photo = next(iter(data.people(root).values()))[0]
    faces = encode_photo(photo, max_side=400)
    assert len(faces) == 1
    top, right, bottom, left = faces[0].box
    h, w = load_photo(photo).shape[:2]
    assert 0 <= left < right <= w + 2 and 0 <= top < bottom <= h + 2
    assert faces[0].encoding.dtype == np.float32 and faces[0].encoding.shape == (128,)


def test_templates_round_trip_through_bytes():
    enc = np.random.default_rng(1).normal(0, 0.1, 128).astype(np.float32)
    blob = encoding_to_bytes(enc)
    assert len(blob) == 512 and blob[:4] == enc[:1].astype("<f4").tobytes()
    assert np.array_equal(encoding_from_bytes(blob), enc)
    with pytest.raises(ValueError, match="expected 512 bytes, got 10"):
        encoding_from_bytes(b"0123456789")
    with pytest.raises(ValueError, match="expected 128 finite floats"):
        encoding_to_bytes(np.full(128, np.nan))


def test_gallery_is_vectorised_and_exact():
    rng = np.random.default_rng(7)
    templates = rng.normal(0, 0.09, (5000, 128)).astype(np.float32)
    gallery = FaceGallery.from_templates((f"acct-{i % 2500}", encoding_to_bytes(t)) for i, t in enumerate(templates))
    assert len(gallery) == 5000 and len(gallery.account_ids) == 2500
    probe = templates[1234] + rng.normal(0, 0.01, 128).astype(np.float32)
    brute = np.linalg.norm(templates - probe, axis=1)
    assert np.allclose(gallery.distances(probe), brute, atol=1e-4)
    match = gallery.identify(probe)
    assert match.account_id == "acct-1234" and match.distance == pytest.approx(brute.min(), abs=1e-4)
    assert gallery.identify(rng.normal(0, 0.09, 128).astype(np.float32)) is None  # far from all
    assert gallery.remove("acct-1234") == 2
    assert gallery.identify(probe) is None or gallery.identify(probe).account_id != "acct-1234"
    with pytest.raises(ValueError, match="expected 128 finite floats, got shape"):
        gallery.add("acct-x", np.zeros(64, np.float32))
    assert FaceGallery().identify(probe) is None
