"""The door's identity decision: exact cases on synthetic encodings placed at known distances,
the uint8 index against the exact search, and zero false accepts on the shared photos."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cabinet.bench_faces import encode_people, run_trials, trial_list
from vision import data
from vision.face_index import FaceIndex, exact_account_distances
from vision.faces import FaceError, FaceGallery, load_photo
from vision.identity import (ACCEPT, AMBIGUOUS, DEFAULT_POLICY, MATCHED, NO_FACE, NOT_RECOGNISED, REFUSE,
                             SECOND_FACTOR, SEVERAL_FACES, TOO_FEW_FRAMES, UNCERTAIN, IdentityPolicy, decide,
                             identify_encodings, identify_frames)

ORIGIN = np.zeros(128, dtype=np.float32)


def at(distance: float, axis: int, base: np.ndarray = ORIGIN) -> np.ndarray:
    """A point `distance` away from `base` along one axis (axes are orthogonal, so distances
    to points on different axes from the origin are exact by Pythagoras)."""
    v = base.copy()
    v[axis] += distance
    return v


def gallery(*accounts: tuple[str, float, int]) -> FaceGallery:
    """Templates at (account, distance from the origin probe, axis)."""
    g = FaceGallery()
    for account_id, distance, axis in accounts:
        g.add(account_id, at(distance, axis))
    return g


def test_a_clear_match_with_a_far_second_account_is_accepted():
    d = identify_encodings([ORIGIN], gallery(("ann", 0.30, 0), ("bob", 0.80, 1)))
    assert (d.outcome, d.reason, d.account_id) == (ACCEPT, MATCHED, "ann")
    assert d.best.account_id == "ann" and d.best.distance == pytest.approx(0.30, abs=1e-6)
    assert d.second.account_id == "bob" and d.second.distance == pytest.approx(0.80, abs=1e-6)
    assert d.margin == pytest.approx(0.50, abs=1e-6)
    assert (d.frames_seen, d.frames_used, d.candidates) == (1, 1, ("ann",))


def test_a_match_inside_the_band_asks_for_the_second_factor_and_admits_nobody():
    d = identify_encodings([ORIGIN], gallery(("ann", 0.50, 0), ("bob", 0.90, 1)))
    assert (d.outcome, d.reason, d.account_id) == (SECOND_FACTOR, UNCERTAIN, None)
    assert d.candidates == ("ann",)
    assert "PIN" in d.message


def test_just_inside_and_just_outside_the_accept_line():
    inside = identify_encodings([ORIGIN], gallery(("ann", DEFAULT_POLICY.accept_distance - 0.005, 0)))
    outside = identify_encodings([ORIGIN], gallery(("ann", DEFAULT_POLICY.accept_distance + 0.005, 0)))
    assert (inside.outcome, inside.account_id) == (ACCEPT, "ann")
    assert (outside.outcome, outside.reason) == (SECOND_FACTOR, UNCERTAIN)


def test_a_second_account_too_close_to_the_best_asks_for_the_second_factor_naming_both():
    d = identify_encodings([ORIGIN], gallery(("ann", 0.30, 0), ("bob", 0.35, 1), ("cy", 0.95, 2)))
    assert (d.outcome, d.reason, d.account_id) == (SECOND_FACTOR, AMBIGUOUS, None)
    assert d.candidates == ("ann", "bob")  # cy is beyond the band: not a candidate
    assert d.margin == pytest.approx(0.05, abs=1e-6)


def test_two_close_accounts_both_beyond_the_band_are_refused():
    d = identify_encodings([ORIGIN], gallery(("ann", 0.62, 0), ("bob", 0.64, 1)))
    assert (d.outcome, d.reason, d.account_id, d.candidates) == (REFUSE, NOT_RECOGNISED, None, ())
    assert d.best.account_id == "ann" and d.best.distance == pytest.approx(0.62, abs=1e-6)


def test_a_far_face_is_refused_as_not_recognised():
    d = identify_encodings([ORIGIN], gallery(("ann", 0.70, 0), ("bob", 1.20, 1)))
    assert (d.outcome, d.reason) == (REFUSE, NOT_RECOGNISED)
    assert "QR code" in d.message


def test_the_margin_is_to_the_second_best_account_not_to_another_template_of_the_same_one():
    g = gallery(("ann", 0.30, 0), ("ann", 0.32, 1), ("bob", 0.80, 2))
    d = identify_encodings([ORIGIN], g)
    assert (d.outcome, d.account_id) == (ACCEPT, "ann")
    assert d.second.account_id == "bob" and d.second.distance == pytest.approx(0.80, abs=1e-6)


def test_an_empty_gallery_refuses():
    d = identify_encodings([ORIGIN], FaceGallery())
    assert (d.outcome, d.reason, d.best, d.second) == (REFUSE, NOT_RECOGNISED, None, None)


def test_frames_combine_by_upper_median_so_one_lucky_frame_admits_nobody():
    # three frames: the impostor is close in one only; the genuine one is far in one only
    assert decide({"ann": [0.30, 0.31, 0.90]}, frames_seen=3, frames_used=3).account_id == "ann"
    lucky = decide({"bob": [0.30, 0.70, 0.75]}, frames_seen=3, frames_used=3)
    assert (lucky.outcome, lucky.reason) == (REFUSE, NOT_RECOGNISED)
    assert lucky.best.distance == pytest.approx(0.70)
    # two frames: both must be close (the larger one counts)
    two = decide({"ann": [0.30, 0.90]}, frames_seen=2, frames_used=2)
    assert (two.outcome, two.best.distance) == (REFUSE, pytest.approx(0.90))


def test_multi_frame_encodings_go_through_the_gallery_per_account():
    g = gallery(("ann", 0.30, 0), ("bob", 0.80, 1))
    frames = [ORIGIN, at(0.05, 5), at(0.60, 0)]  # ann: 0.30, 0.304, 0.30; bob: 0.80, 0.8016, 1.0
    d = identify_encodings(frames, g)
    assert (d.outcome, d.account_id, d.frames_used) == (ACCEPT, "ann", 3)
    assert d.best.distance == pytest.approx(0.30, abs=1e-6)
    assert d.second.distance == pytest.approx(np.hypot(0.80, 0.05), abs=1e-6)


def test_frames_without_exactly_one_face_are_not_counted():
    assert decide({}, frames_seen=4, frames_used=0).reason == NO_FACE
    several = decide({}, frames_seen=4, frames_used=0, several_faces=True)
    assert (several.outcome, several.reason) == (REFUSE, SEVERAL_FACES)
    # one counted frame out of five, with the policy wanting two
    few = decide({"ann": [0.2]}, IdentityPolicy(min_frames=2), frames_seen=5, frames_used=1)
    assert (few.outcome, few.reason, few.frames_seen, few.frames_used) == (REFUSE, TOO_FEW_FRAMES, 5, 1)


def test_camera_frames_with_no_face_are_seen_but_not_used():
    blank = np.full((120, 160, 3), 128, dtype=np.uint8)
    d = identify_frames([blank, blank.copy()], gallery(("ann", 0.3, 0)))
    assert (d.outcome, d.reason, d.frames_seen, d.frames_used) == (REFUSE, NO_FACE, 2, 0)


def test_a_frame_that_is_not_an_image_is_named():
    with pytest.raises(FaceError, match="face camera frame"):
        identify_frames([np.zeros((10, 10), dtype=np.float32)], FaceGallery())


def test_decide_refuses_inconsistent_evidence():
    with pytest.raises(ValueError, match="account ann has 1 distances for 2 counted frames"):
        decide({"ann": [0.2]}, frames_seen=2, frames_used=2)
    with pytest.raises(ValueError, match="frames_used 3 must be in 0..frames_seen"):
        decide({}, frames_seen=2, frames_used=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(accept_distance=0.7, refuse_distance=0.6), "accept_distance"),
    (dict(min_margin=0.2), "min_margin 0.2 must be in 0..0.15"),
    (dict(min_frames=0), "min_frames 0 must be at least 1"),
])
def test_a_policy_that_contradicts_itself_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IdentityPolicy(**kwargs)


def test_gallery_account_distances_are_exact_within_and_keep_the_two_nearest_beyond():
    g = gallery(("ann", 0.70, 0), ("ann", 0.65, 1), ("bob", 0.90, 2), ("cy", 1.10, 3))
    found = g.account_distances([ORIGIN, at(0.65, 1)], within=0.6)
    # frame 2 sits on ann's second template; ann and bob are the two nearest of frame 1
    assert set(found) == {"ann", "bob"}
    np.testing.assert_allclose(found["ann"], [0.65, 0.0], atol=1e-6)
    np.testing.assert_allclose(found["bob"], [0.90, np.hypot(0.65, 0.90)], atol=1e-6)


# --- the uint8 index must answer exactly what the float32 search answers ------------------------

@pytest.fixture(scope="module")
def crowd() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5,000 templates around a face-like centre, plus a probe with templates planted at known
    distances on both sides of the 0.6 line."""
    rng = np.random.default_rng(7)
    centre = rng.normal(0.0, 0.1, 128).astype(np.float32)
    matrix = (centre + rng.standard_normal((5000, 128), dtype=np.float32) * np.float32(0.9 / 16)).astype(np.float32)
    probe = (centre + rng.standard_normal(128, dtype=np.float32) * np.float32(0.05)).astype(np.float32)
    ids = np.asarray([f"p{i % 2500}" for i in range(5000)], dtype=object)
    for row, dist in zip(range(10), [0.20, 0.44, 0.55, 0.595, 0.599, 0.601, 0.605, 0.62, 0.30, 0.58]):
        direction = rng.standard_normal(128).astype(np.float32)
        matrix[row] = probe + direction / np.linalg.norm(direction) * np.float32(dist)
        ids[row] = f"planted{row}"
    return matrix, ids, probe


def test_the_index_finds_exactly_the_templates_the_exact_search_finds_within_reach(crowd):
    matrix, ids, probe = crowd
    index = FaceIndex(ids, matrix)
    exact = np.sqrt(((matrix - probe) ** 2).sum(axis=1))
    rows, dist = index.near(probe, 0.6)
    assert sorted(rows.tolist()) == sorted(np.flatnonzero(exact <= 0.6).tolist())
    assert {0, 1, 2, 3, 4, 8, 9} <= set(rows.tolist()) and not {5, 6, 7} & set(rows.tolist())
    np.testing.assert_allclose(dist, exact[rows], atol=1e-5)
    assert index.candidates_last < 100  # the first pass did the pruning


def test_the_index_and_the_exact_search_give_the_same_accounts_with_templates_skipped(crowd):
    matrix, ids, probe = crowd
    index = FaceIndex(ids, matrix)
    skip = np.zeros(len(matrix), dtype=bool)
    skip[[0, 8]] = True  # the two closest left out, as a leave-one-out trial does
    fast = index.account_distances([probe, matrix[1]], 0.6, skip)
    exact = exact_account_distances(matrix, ids, [probe, matrix[1]], 0.6, skip)
    assert set(fast) == set(exact) and "planted0" not in fast and "planted1" in fast
    for account in exact:
        np.testing.assert_allclose(fast[account], exact[account], atol=1e-5)
    a = decide(fast, frames_seen=2, frames_used=2)
    b = decide(exact, frames_seen=2, frames_used=2)
    assert (a.outcome, a.reason, a.account_id, a.candidates) == (b.outcome, b.reason, b.account_id, b.candidates)
    assert (a.outcome, a.account_id, a.best.account_id) == (ACCEPT, "planted1", "planted1")
    assert a.best.distance == pytest.approx(b.best.distance, abs=1e-5)


def test_the_index_refuses_templates_of_the_wrong_shape():
    with pytest.raises(ValueError, match="need 2 templates of 128 floats"):
        FaceIndex(["a", "b"], np.zeros((2, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="no templates"):
        FaceIndex([], np.zeros((0, 128), dtype=np.float32))


# --- the shared photos ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_faces(shared_data: Path) -> tuple[dict[str, list[Path]], dict[str, list[np.ndarray]]]:
    people = data.people(shared_data / "faces")
    return people, encode_people(people)


def test_no_wrong_person_is_admitted_in_any_shared_trial(shared_faces):
    people, encodings = shared_faces
    result = run_trials(encodings, DEFAULT_POLICY)
    genuine = sum(len(p) for p in people.values() if len(p) >= 2)
    assert result["genuine_trials"] == genuine > 0
    assert result["impostor_trials"] == sum(len(p) for p in people.values())
    assert result["false_accepts"] == 0, result["notable_trials"]
    assert result["impostor_refused"] + result["impostor_second_factor"] == result["impostor_trials"]
    assert (result["genuine_accepted"] + result["second_factor"] + result["false_rejects"]
            == result["genuine_trials"])
    assert result["false_rejects"] / genuine <= 0.02, result["notable_trials"]


def test_camera_frames_of_a_customer_count_only_those_with_one_face(shared_faces):
    """A burst of frames: empty, the customer, a crowd, the customer again: two counted."""
    people, encodings = shared_faces
    person = max(people, key=lambda p: len(people[p]))  # the one with the most photos
    enrolled = FaceGallery.from_templates(
        (p, e) for p, encs in encodings.items() for i, e in enumerate(encs) if (p, i) not in {(person, 0), (person, 1)})
    group = data.group_photos(data.faces_root())
    frames = [np.full((240, 320, 3), 90, dtype=np.uint8), load_photo(people[person][0])]
    if group:
        frames.append(load_photo(group[0]))
    frames.append(load_photo(people[person][1]))
    d = identify_frames([cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames], enrolled, bgr=True)
    assert (d.frames_seen, d.frames_used) == (len(frames), 2)
    # the same decision as the two photos' own encodings give: the crowd and the empty frame
    # changed nothing but the count of frames seen
    same = identify_encodings(encodings[person][:2], enrolled, frames_seen=len(frames),
                              several_faces=bool(group))
    assert (d.outcome, d.reason, d.account_id, d.candidates) == (
        same.outcome, same.reason, same.account_id, same.candidates)
    assert d.best.account_id == person
    assert d.best.distance == pytest.approx(same.best.distance, abs=1e-4)


def test_every_trial_kind_is_listed_once(shared_faces):
    people, encodings = shared_faces
    trials = trial_list(encodings)
    assert len(trials) == len(set(trials))
    assert {(p, i) for k, p, i in trials if k == "impostor"} == {
        (p, i) for p, photos in people.items() for i in range(len(photos))}
    assert {(p, i) for k, p, i in trials if k == "genuine"} == {
        (p, i) for p, photos in people.items() if len(photos) >= 2 for i in range(len(photos))}
