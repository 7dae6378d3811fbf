"""The large-gallery index (vision/face_index.py) against the plain float32 search: the SIMD
first pass is exact, and the decisions (outcome, account, candidates, best and second-best
ACCOUNTS) are the exact search's on galleries with near neighbours planted on both sides of
every line of the policy, over one and several frames, and on the shared photos' trials."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cabinet.bench_faces import decision_key, encode_people, match_timing
from vision import data
from vision.face_index import FaceIndex, exact_account_distances
from vision.identity import ACCEPT, AMBIGUOUS, DEFAULT_POLICY, NOT_RECOGNISED, UNCERTAIN, decide

POLICY = DEFAULT_POLICY
BACKGROUND = 40_000
SIGMA = np.float32(0.87 / np.sqrt(256))     # two background templates ~0.87 apart, as real people


def _unit(rng) -> np.ndarray:
    v = rng.standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def planted():
    """(templates, account ids, probes): a background crowd, and per probe a few accounts
    planted at chosen distances: the best account around the accept line (0.45) and the
    refuse line (0.60), a rival around the margin (0.10), a second template of the best
    account (not a rival), and templates just beyond the band."""
    rng = np.random.default_rng(11)
    centre = rng.normal(0.0, 0.09, 128).astype(np.float32)
    matrix = [centre + rng.standard_normal((BACKGROUND, 128), dtype=np.float32) * SIGMA]
    ids = [f"crowd-{k // 2}" for k in range(BACKGROUND)]        # two templates per person
    probes = []
    best_at = [0.20, 0.40, 0.449, 0.451, 0.50, 0.55, 0.599, 0.601, 0.65]
    margins = [0.05, 0.0995, 0.1005, 0.15, 0.30]
    for p in range(45):
        probe = centre + rng.standard_normal(128, dtype=np.float32) * SIGMA   # a person
        probes.append(probe)
        best, margin = best_at[p % len(best_at)], margins[p % len(margins)]
        planted = [(f"best-{p}", best), (f"best-{p}", best + 0.03),
                   (f"rival-{p}", best + margin), (f"far-{p}", 0.6 + 0.004 * (p % 3 + 1))]
        for account, dist in planted:
            matrix.append((probe + _unit(rng) * np.float32(dist))[None, :])
            ids.append(account)
    return np.concatenate(matrix).astype(np.float32), np.asarray(ids, dtype=object), probes


@pytest.fixture(scope="module")
def index(planted):
    matrix, ids, _ = planted
    built = FaceIndex(ids, matrix)
    yield built
    built.close()


def test_the_integer_first_pass_is_the_exact_integer_distance_of_the_codes(planted, index):
    codes = index._code(planted[0]).astype(np.int64)
    rng = np.random.default_rng(3)
    for code in (np.zeros((1, 128), np.uint8), np.full((1, 128), 255, np.uint8),
                 rng.integers(0, 256, (1, 128), dtype=np.uint8)):
        want = ((codes - code.astype(np.int64)) ** 2).sum(axis=1)
        got = index.code_distances(code)
        assert got.dtype == np.float32 and np.array_equal(got.astype(np.int64), want)
        # the range question too, at the extremes of the codes' distances
        for limit in (0, int(np.median(want)), int(want.max())):
            assert np.array_equal(index._within_code(code, limit), np.flatnonzero(want <= limit))


def test_the_extreme_codes_do_not_overflow():
    # every coordinate at the clip ends: the largest code distance there is, 128 * 255^2
    matrix = np.zeros((3, 128), dtype=np.float32)
    matrix[0], matrix[1] = 1.0, -1.0
    index = FaceIndex(["a", "b", "c"], matrix)
    try:
        far = index._code(np.full((1, 128), -1.0, np.float32))
        got = index.code_distances(far).astype(np.int64)
        want = ((index._code(matrix).astype(np.int64) - far.astype(np.int64)) ** 2).sum(axis=1)
        assert np.array_equal(got, want) and want.max() >= 128 * 254 ** 2
    finally:
        index.close()


def test_planted_neighbours_give_the_exact_searchs_decisions_and_accounts(planted, index):
    matrix, ids, probes = planted
    seen = Counter()
    for p, probe in enumerate(probes):
        fast = index.account_distances([probe], POLICY.refuse_distance)
        exact = exact_account_distances(matrix, ids, [probe], POLICY.refuse_distance)
        assert set(fast) == set(exact), f"probe {p}"
        for account in exact:
            np.testing.assert_allclose(fast[account], exact[account], atol=1e-5)
        a = decide(fast, POLICY, frames_seen=1, frames_used=1)
        b = decide(exact, POLICY, frames_seen=1, frames_used=1)
        assert decision_key(a, POLICY) == decision_key(b, POLICY), f"probe {p}"
        if b.best is not None:
            assert b.best.account_id == f"best-{p}"
        seen[(b.outcome, b.reason)] += 1
    # the agreement is not vacuous: every kind of decision was among the planted cases
    assert {("accept", "matched"), ("second_factor", AMBIGUOUS), ("second_factor", UNCERTAIN),
            ("refuse", NOT_RECOGNISED)} <= set(seen), seen
    assert index.candidates_last < 200     # and the first pass pruned the crowd


def test_several_frames_with_templates_left_out_give_the_exact_searchs_decision(planted, index):
    matrix, ids, probes = planted
    rng = np.random.default_rng(5)
    for p in range(0, len(probes), 3):
        frames = [probes[p] + _unit(rng) * np.float32(0.04) for _ in range(3)]
        skip = ids == f"best-{p}"                       # the best account not enrolled
        skip[: BACKGROUND // 4] = True                  # nor part of the crowd
        fast = index.account_distances(frames, POLICY.refuse_distance, skip)
        exact = exact_account_distances(matrix, ids, frames, POLICY.refuse_distance, skip)
        assert f"best-{p}" not in fast and set(fast) == set(exact)
        a = decide(fast, POLICY, frames_seen=3, frames_used=3)
        b = decide(exact, POLICY, frames_seen=3, frames_used=3)
        assert decision_key(a, POLICY) == decision_key(b, POLICY), f"probe {p}"
        assert a.outcome != ACCEPT or a.account_id != f"best-{p}"


def test_one_thread_and_two_threads_answer_the_same(planted, index):
    matrix, ids, probes = planted
    single = FaceIndex(ids, matrix, threads=1)
    try:
        assert single.threads == 1 and index.threads == min(2, os.cpu_count() or 1)
        for probe in probes[:9]:
            code = index._code(probe[None, :])
            assert np.array_equal(single.code_distances(code), index.code_distances(code))
    finally:
        single.close()


def test_a_bad_thread_count_is_refused_naming_it():
    with pytest.raises(ValueError, match="face index: threads 0 must be a whole number >= 1"):
        FaceIndex(["a"], np.zeros((1, 128), dtype=np.float32), threads=0)


def test_the_shared_photos_trials_decide_the_same_inside_a_large_gallery(shared_data: Path):
    """Every leave-one-out and person-left-out trial of the shared photos, decided inside a
    gallery of 30,000 templates by both searches (the bench's own loop)."""
    encodings = encode_people(data.people(shared_data / "faces"))
    [row] = match_timing(encodings, [30_000], POLICY, impostor_median=0.87, seed=2)
    assert row["templates"] == 30_000 and row["trials"] > 30
    assert row["decisions_differ"] == 0
    assert row["index_candidates_max"] < 1_000
