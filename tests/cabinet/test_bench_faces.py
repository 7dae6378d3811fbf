"""`cabinet bench faces` on a small folder of shared photos (links under tmp_path), and its
one-line errors for a folder it cannot bench."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cabinet import bench_faces
from vision import data

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"genuine_trials", "impostor_trials", "false_accepts", "false_rejects", "second_factor",
        "identify_p95_ms", "match_ms_1m"}


@pytest.fixture
def small_faces(shared_data: Path, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Two people with two photos each, one with one photo, and a _group folder (not a person)."""
    people = data.people(shared_data / "faces")
    several = [p for p, photos in people.items() if len(photos) >= 2][:2]
    single = [p for p, photos in people.items() if len(photos) == 1][:1]
    assert len(several) == 2 and len(single) == 1, "the shared faces changed shape: pick others"
    root = tmp_path / "faces"
    counts = {}
    for person in several + single:
        (root / person).mkdir(parents=True)
        for photo in people[person][:2]:
            (root / person / photo.name).symlink_to(photo)
        counts[person] = min(2, len(people[person]))
    group = data.group_photos(shared_data / "faces")
    if group:
        (root / "_group").mkdir()
        (root / "_group" / group[0].name).symlink_to(group[0])
    return root, counts


def test_cabinet_bench_faces_json_counts_every_trial_it_should_run(small_faces, tmp_path):
    """`cabinet bench faces --json` as a new process: the keys, and counts equal to the trials
    that the folder's layout calls for (2+2+1 photos: 4 genuine, 5 impostor)."""
    root, counts = small_faces
    out = tmp_path / "bench-faces.json"
    proc = subprocess.run([sys.executable, "-m", "cabinet.cli", "bench", "faces", "--data", str(root),
                           "--json", "--out", str(out), "--sizes", "2000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert KEYS <= set(result)
    assert json.loads(out.read_text()) == result
    genuine = sum(n for n in counts.values() if n >= 2)
    assert (result["people"], result["photos"]) == (len(counts), sum(counts.values()))
    assert result["genuine_trials"] == genuine == 4
    assert result["impostor_trials"] == sum(counts.values()) == 5
    assert result["false_accepts"] == 0
    assert result["genuine_accepted"] + result["second_factor"] + result["false_rejects"] == genuine
    assert result["impostor_refused"] + result["impostor_second_factor"] == result["impostor_trials"]
    assert result["n"] == sum(counts.values())  # one identify timing per photo
    assert 0 < result["identify_p50_ms"] <= result["identify_p95_ms"]
    (row,) = result["matching"]
    assert (row["templates"], row["real_templates"], row["trials"]) == (2000, 5, 9)
    assert row["decisions_differ"] == 0 and result["decisions_differ"] == 0
    assert row["index_cpu_p50_ms"] > 0 and len(result["machine"]["load_average_1m"]) == 2
    assert result["match_ms_1m"] is None  # no gallery of a million was asked for
    assert sorted(r["person"] for r in result["leave_person_out"]) == sorted(counts)
    assert result["leave_person_out_admitted"] == sum(r["admitted"] for r in result["leave_person_out"])
    assert result["pairs"]["different_people"]["pairs"] == 8   # 2*2 + 2*1 + 2*1 across people


def test_a_missing_folder_is_one_line_naming_it(tmp_path, capsys):
    assert bench_faces.main(["--data", str(tmp_path / "nowhere"), "--sizes", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere: no such folder" in err


def test_a_folder_without_people_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "_group").mkdir()
    (tmp_path / "_group" / "x.jpg").write_bytes(b"")
    assert bench_faces.main(["--data", str(tmp_path), "--sizes", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path}: no people in it" in err


def test_a_photo_without_a_face_stops_the_run_naming_the_photo(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    cv2.imwrite(str(tmp_path / "ann" / "wall.png"), np.full((200, 200, 3), 120, dtype=np.uint8))
    assert bench_faces.main(["--data", str(tmp_path), "--sizes", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "ann/wall.png: no face found" in err and "replace it or move it out" in err


def test_a_file_that_is_not_an_image_is_named(tmp_path, capsys):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "notes.jpg").write_text("not a photo")
    assert bench_faces.main(["--data", str(tmp_path), "--sizes", ""]) == 1
    err = capsys.readouterr().err.strip()
    assert "ann/notes.jpg: not a readable image" in err


def test_bad_sizes_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_faces.main(["--sizes", "10k"])
    assert exit_info.value.code == 2
    assert "--sizes '10k': give whole numbers" in capsys.readouterr().err


def test_an_out_file_that_cannot_be_written_is_named(small_faces, tmp_path, capsys):
    root, _ = small_faces
    out = tmp_path / "no-such-folder" / "bench.json"
    assert bench_faces.main(["--data", str(root), "--sizes", "", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--out {out}: cannot write it" in err


def _on_axes(*points: tuple[str, float, int]) -> dict[str, list[np.ndarray]]:
    """Person -> encodings at `distance` along an axis (distances between axes by Pythagoras)."""
    people: dict[str, list[np.ndarray]] = {}
    for person, distance, axis in points:
        v = np.zeros(128, dtype=np.float32)
        v[axis] = distance
        people.setdefault(person, []).append(v)
    return people


def test_a_line_fitted_without_a_look_alike_admits_them():
    # ann and bea are look-alikes (0.5 apart); cy and dan are far from everyone
    encodings = _on_axes(("ann", 0.0, 0), ("bea", 0.5, 0), ("cy", 0.9, 1), ("dan", 0.9, 2))
    rows = {r["person"]: r for r in bench_faces.leave_person_out_lines(encodings)}
    # without ann the closest strangers are bea-cy and bea-dan (hypot(0.5, 0.9) = 1.03) or
    # cy-dan (0.9 * sqrt 2 = 1.27): a line at 1.03 takes ann (0.5 from bea) for bea
    assert rows["ann"]["line_from_others"] == pytest.approx(np.hypot(0.5, 0.9), abs=1e-4)
    assert rows["ann"]["nearest_stranger"] == pytest.approx(0.5, abs=1e-4)
    assert rows["ann"]["admitted"] and rows["bea"]["admitted"]
    # without cy the line is ann-bea's 0.5, and cy's nearest stranger (ann, 0.9) is beyond it
    assert rows["cy"]["line_from_others"] == pytest.approx(0.5, abs=1e-4)
    assert not rows["cy"]["admitted"] and not rows["dan"]["admitted"]


def test_pair_statistics_split_same_person_from_different_people():
    encodings = _on_axes(("ann", 0.0, 0), ("ann", 0.3, 0), ("bea", 0.9, 1), ("bea", 0.8, 1))
    stats = bench_faces.pair_statistics(encodings)
    assert stats["same_person"]["pairs"] == 2
    assert stats["same_person"]["mean"] == pytest.approx(0.2, abs=1e-4)      # 0.3 and 0.1
    assert stats["different_people"]["pairs"] == 4
    assert stats["different_people"]["min"] == pytest.approx(0.8, abs=1e-4)
    fit = stats["nearest_stranger_normal_fit"]
    # the more accounts, the nearer the expected nearest stranger, below the mean
    values = [fit[n] for n in ("1000", "10000", "100000", "1000000")]
    assert values == sorted(values, reverse=True)
    assert values[0] < stats["different_people"]["mean"]
