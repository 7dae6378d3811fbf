"""Deciding before the last frame: `settled_accept` / `FrameTally` stop only when every way the
frames still to come could turn out gives the same accept of the same account."""
from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cabinet.bench_faces import encode_people
from vision import data
from vision.faces import FaceGallery, load_photo
from vision.identity import (ACCEPT, AMBIGUOUS, DEFAULT_POLICY, IdentityPolicy, FrameTally, decide,
                             identify_frames, settled_accept)

ACCOUNTS = ("ann", "bob", "cy")


def complete(distances: dict[str, list[float]], new: list[dict[str, float] | None]) -> dict:
    """`distances` with frames still to come added: None is a frame that did not count; an
    account absent from a new frame is farther than refuse_distance there."""
    out = {a: list(v) for a, v in distances.items()}
    counted = [f for f in new if f is not None]
    used = len(next(iter(distances.values()))) if distances else 0
    for frame_no, frame in enumerate(counted):
        for a in set(out) | set(frame):
            out.setdefault(a, [math.inf] * used)
            out[a].extend([math.inf] * (used + frame_no - len(out[a])))
            out[a].append(frame.get(a, math.inf))
    n = used + len(counted)
    return {a: v + [math.inf] * (n - len(v)) for a, v in out.items()}, n


def final(distances, new, policy=DEFAULT_POLICY):
    full, n = complete(distances, new)
    return decide(full, policy, frames_seen=n, frames_used=n)


def test_two_clear_frames_of_three_settle_the_accept():
    seen = {"ann": [0.30, 0.35], "bob": [0.62, 0.70]}
    assert settled_accept(seen, frames_used=2, frames_left=1) == "ann"
    # the third frame at its worst for ann: far from her, bob at 0 (or not counted)
    for third in ({"bob": 0.0}, {"ann": 5.0, "bob": 0.0, "cy": 0.0}, None, {"ann": 0.0}):
        d = final(seen, [third])
        assert (d.outcome, d.account_id) == (ACCEPT, "ann"), third


def test_one_frame_of_three_never_settles():
    # two frames still to come could put bob at 0 in both: he would be the middle of three
    assert settled_accept({"ann": [0.05]}, frames_used=1, frames_left=2) is None
    d = final({"ann": [0.05]}, [{"ann": 0.05, "bob": 0.0}, {"ann": 0.05, "bob": 0.0}])
    assert d.outcome != ACCEPT


def test_a_rival_close_in_one_frame_keeps_the_door_waiting_for_the_third():
    seen = {"ann": [0.30, 0.30], "bob": [0.38, 0.80]}
    two = decide(seen, frames_seen=2, frames_used=2)
    assert (two.outcome, two.account_id) == (ACCEPT, "ann")   # on two frames alone: accepted
    assert settled_accept(seen, frames_used=2, frames_left=1) is None
    d = final(seen, [{"ann": 0.9, "bob": 0.0}])                   # ...but a third can change it
    assert (d.outcome, d.reason) == ("second_factor", AMBIGUOUS)


def test_the_accepted_account_near_the_line_in_one_frame_is_not_settled_early():
    seen = {"ann": [0.10, 0.44], "bob": [0.60, 0.61]}
    # within the line and 0.16 clear of bob in both: settled
    assert settled_accept(seen, frames_used=2, frames_left=1) == "ann"
    # bob 0.53 in one frame: 0.09 from ann's 0.44, a third frame could make that the median
    seen["bob"] = [0.53, 0.90]
    assert settled_accept(seen, frames_used=2, frames_left=1) is None
    assert final(seen, [{"bob": 0.0, "ann": 0.9}]).outcome != ACCEPT


def test_nothing_is_settled_below_the_policys_frame_count_or_without_frames():
    seen = {"ann": [0.2, 0.2]}
    assert settled_accept(seen, IdentityPolicy(min_frames=3), frames_used=2, frames_left=1) is None
    assert settled_accept(seen, IdentityPolicy(min_frames=2), frames_used=2, frames_left=1) == "ann"
    assert settled_accept({}, frames_used=0, frames_left=3) is None
    # no frame to come: settled is the plain decision
    assert settled_accept({"ann": [0.2]}, frames_used=1, frames_left=0) == "ann"
    assert settled_accept({"ann": [0.5]}, frames_used=1, frames_left=0) is None


def test_an_account_left_out_of_a_frame_counts_as_beyond_the_refuse_line():
    # FaceIndex reports inf where an account is beyond refuse_distance in a frame
    seen = {"ann": [0.30, 0.40], "bob": [math.inf, 0.75]}
    assert settled_accept(seen, frames_used=2, frames_left=1) == "ann"


DIST = st.one_of(st.sampled_from([0.0, 0.2, 0.35, 0.45, 0.5, 0.55, 0.6, 0.65, math.inf]),
                 st.floats(0.0, 1.3, allow_nan=False))


@st.composite
def evidence(draw):
    used = draw(st.integers(1, 4))
    accounts = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=1, max_size=3, unique=True))
    seen = {a: [draw(DIST) for _ in range(used)] for a in accounts}
    left = draw(st.integers(0, 3))
    new = [draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(ACCOUNTS), DIST, max_size=3)))
           for _ in range(draw(st.integers(0, left)))]
    return seen, used, left, new


@settings(max_examples=400, deadline=None)
@given(evidence())
def test_a_settled_accept_is_what_every_way_the_rest_could_go_decides(case):
    seen, used, left, new = case
    account = settled_accept(seen, frames_used=used, frames_left=left)
    if account is None:
        return
    assert (final(seen, new).outcome, final(seen, new).account_id) == (ACCEPT, account)
    # and the worst the rest can do: the account far, every other account at 0
    for u in range(left + 1):
        worst = [{account: math.inf, **{a: 0.0 for a in ACCOUNTS if a != account}}] * u
        d = final(seen, worst)
        assert (d.outcome, d.account_id) == (ACCEPT, account), (u, d)


def test_every_three_frame_case_on_a_grid_agrees_with_the_full_decision():
    """All combinations of two known frames for ann and bob on a grid around the lines, and
    every third frame on the same grid (or not counted): settled implies the same accept."""
    grid = (0.0, 0.3, 0.44, 0.45, 0.46, 0.5, 0.55, 0.6, 0.61, math.inf)
    settled = 0
    for a1, a2, b1, b2 in itertools.product(grid, repeat=4):
        seen = {"ann": [a1, a2], "bob": [b1, b2]}
        account = settled_accept(seen, frames_used=2, frames_left=1)
        if account is None:
            continue
        settled += 1
        for third in [None] + [{"ann": x, "bob": y} for x, y in itertools.product(grid, repeat=2)]:
            d = final(seen, [third])
            assert (d.outcome, d.account_id) == (ACCEPT, account), (seen, third)
    assert settled > 50   # the grid does reach the early accept


@pytest.fixture(scope="module")
def shared_faces(shared_data):
    people = data.people(shared_data / "faces")
    return people, encode_people(people)


def test_a_customers_burst_settles_on_the_second_frame_and_a_stranger_never_does(shared_faces):
    people, encodings = shared_faces
    person = max(people, key=lambda p: len(people[p]))
    enrolled = FaceGallery.from_templates(
        (p, e) for p, encs in encodings.items() for i, e in enumerate(encs) if (p, i) != (person, 0))
    frame = cv2.cvtColor(load_photo(people[person][0]), cv2.COLOR_RGB2BGR)
    tally = FrameTally(enrolled, frames=3, bgr=True)
    tally.add(frame)
    assert tally.settled() is None and tally.frames_left == 2
    tally.add(frame.copy())
    early = tally.settled()
    assert early is not None and (early.outcome, early.account_id) == (ACCEPT, person)
    assert (early.frames_seen, early.frames_used) == (2, 2)
    full = identify_frames([frame, frame.copy(), frame.copy()], enrolled, bgr=True)
    assert (full.outcome, full.account_id) == (early.outcome, early.account_id)

    stranger = FaceGallery.from_templates(
        (p, e) for p, encs in encodings.items() for e in encs if p != person)
    tally = FrameTally(stranger, frames=3, bgr=True)
    for _ in range(3):
        tally.add(frame)
        assert tally.settled() is None
    assert tally.decision().outcome != ACCEPT and tally.frames_left == 0


def test_a_frame_the_camera_did_not_give_is_one_fewer_to_come():
    tally = FrameTally(FaceGallery(), frames=3)
    tally.missed()
    assert (tally.frames_left, tally.seen) == (2, 0)
    blank = np.full((120, 160, 3), 128, dtype=np.uint8)
    tally.add(blank)
    assert (tally.frames_left, tally.seen, tally.decision().reason) == (1, 1, "no_face")
    with pytest.raises(ValueError, match="need at least 1"):
        FrameTally(FaceGallery(), frames=0)


def test_a_look_the_caller_already_took_counts_like_the_frame_itself(shared_faces):
    from vision.faces import observe_single_face
    people, encodings = shared_faces
    person = max(people, key=lambda p: len(people[p]))
    enrolled = FaceGallery.from_templates(
        (p, e) for p, encs in encodings.items() for i, e in enumerate(encs) if (p, i) != (person, 0))
    frame = load_photo(people[person][0])
    looked, framed = FrameTally(enrolled, frames=3), FrameTally(enrolled, frames=3)
    looked.add_observed(*observe_single_face(frame))
    framed.add(frame)
    a, b = looked.decision(), framed.decision()
    assert (a.outcome, a.account_id, a.best, a.frames_seen) == (b.outcome, b.account_id, b.best, 1)
    with pytest.raises(ValueError, match="2 faces with an encoded face"):
        looked.add_observed(2, observe_single_face(frame)[1])
    with pytest.raises(ValueError, match="1 faces with no encoded face"):
        looked.add_observed(1, None)
    assert looked.seen == 1          # the refused looks changed nothing
