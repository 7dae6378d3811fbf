"""The second world (cabinet/sim_bundles_second.py): its bundles are ordinary bundles of the
documented format (the real loader and the JSON Schema accept them), it is deterministic per
seed, its laws are the ones it claims (heavy-tailed samples, bursts of 2-3 spikes, a drift ramp,
an exponential creep, item weights within 3 sigma), and `cabinet bench accuracy --world second`
runs it through the real reconcile path without charging anything that was not taken."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from cabinet import bench_accuracy as BA
from cabinet.bundle import load_bundle
from cabinet.sim_bundles import TIERS
from cabinet.sim_bundles_second import LoadCell, SecondSynth, trimmed_mean

ROOT = Path(__file__).resolve().parents[2]
CATALOG, PLANOGRAM = ROOT / "fixtures" / "catalog.yaml", ROOT / "fixtures" / "planogram.yaml"
SCHEMA = json.loads((ROOT / "cabinet" / "schemas" / "bundle.schema.json").read_text())


def synth(tmp_path, **kw) -> SecondSynth:
    return SecondSynth(tmp_path, CATALOG, PLANOGRAM, seed=kw.pop("seed", 0),
                       images=kw.pop("images", False), **kw)


def robust_z(window: np.ndarray) -> np.ndarray:
    med = np.median(window)
    return (window - med) / (1.4826 * np.median(np.abs(window - med)))


@pytest.mark.parametrize("tier", TIERS)
def test_every_tier_writes_a_bundle_the_loader_and_the_json_schema_accept(tmp_path, tier):
    s = synth(tmp_path).session(tier, 2)
    raw = json.loads((s.path / "bundle.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(raw)
    b = load_bundle(s.path)
    assert b.complete and b.record.schema_version == 2
    assert s.must_flag == (tier in ("T6", "T7"))
    for rec in raw["shelves"].values():
        for side in ("before", "after"):
            samples = rec[f"samples_{side}"]
            if rec[f"{side}_g"] is None:  # a dead cell (T7): no reading, no samples
                assert tier == "T7" and samples == []
                continue
            assert 3 <= len(samples) <= 40
            assert rec[f"{side}_g"] == round(trimmed_mean(np.array(samples)), 1)
    if tier == "T7":
        assert any(r["before_g"] is None or r["after_g"] is None
                   for r in raw["shelves"].values())


def test_the_schema_check_can_fail_on_what_the_format_refuses(tmp_path):
    s = synth(tmp_path).session("T1", 0)
    raw = json.loads((s.path / "bundle.json").read_text())
    raw["shelves"]["top"]["after_g"] = str(raw["shelves"]["top"]["after_g"])
    with pytest.raises(jsonschema.ValidationError, match="is not valid under any of the given schemas"):
        jsonschema.Draft202012Validator(SCHEMA).validate(raw)


def test_sessions_are_deterministic_for_a_seed_and_differ_across_seeds(tmp_path):
    a = synth(tmp_path / "a").session("T4", 5)
    b = synth(tmp_path / "b").session("T4", 5)
    c = synth(tmp_path / "c", seed=1).session("T4", 5)
    assert (a.path / "bundle.json").read_bytes() == (b.path / "bundle.json").read_bytes()
    assert (a.actions, a.basket) == (b.actions, b.basket)
    assert (a.path / "bundle.json").read_bytes() != (c.path / "bundle.json").read_bytes()


def test_the_second_world_differs_from_the_first(tmp_path):
    """Other window sizes (3-40 samples, not 1-20), another settled value (the trimmed mean, not
    the median) and its own slot fill."""
    from cabinet.sim_bundles import SessionSynth
    first = SessionSynth(tmp_path / "1", CATALOG, PLANOGRAM, seed=0, images=False)
    second = synth(tmp_path / "2")
    sizes = {"first": set(), "second": set()}
    for i in range(8):
        for name, syn in (("first", first), ("second", second)):
            raw = json.loads((syn.session("T1", i).path / "bundle.json").read_text())
            sizes[name] |= {len(r["samples_before"]) for r in raw["shelves"].values()}
    assert max(sizes["first"]) <= 20 < max(sizes["second"])
    assert min(sizes["second"]) >= 3 > min(sizes["first"])


def test_sample_noise_in_the_bundles_is_heavy_tailed(tmp_path):
    """Samples of 20+ sample windows, in robust sigmas (1.4826 MAD) from the window's median: a
    Gaussian puts 6e-7 of them beyond 5; Laplace 0.6%, Student-t 2-3 more."""
    syn = synth(tmp_path)
    z = []
    for i in range(40):
        raw = json.loads((syn.session("T1", i).path / "bundle.json").read_text())
        for rec in raw["shelves"].values():
            for side in ("before", "after"):
                w = np.array(rec[f"samples_{side}"])
                if len(w) >= 20 and rec[f"{side}_stable"]:
                    z.append(robust_z(w))
    z = np.concatenate(z)
    assert len(z) > 2000
    assert np.mean(np.abs(z) > 5) > 0.005


@pytest.mark.parametrize("law", ["t2", "t3", "laplace"])
def test_each_noise_law_has_heavy_tails_and_its_scale(law):
    cell = LoadCell(law, 2.0, 25.0, 0.0, 0.0, 0.0)
    x = cell.noise(np.random.default_rng(1), 200_000)
    z = robust_z(x)
    assert np.mean(np.abs(z) > 5) > 0.004
    assert 1.4 < 1.4826 * np.median(np.abs(x)) < 3.2  # the scale it was given, in robust sigmas


def test_spikes_come_in_bursts_of_two_or_three_samples_of_one_sign():
    cell = LoadCell("laplace", 0.0, 25.0, 0.0, 0.0, 0.05)
    x = cell.bursts(np.random.default_rng(3), 20_000)
    runs, i = [], 0
    while i < len(x):
        if x[i] != 0:
            j = i
            while j < len(x) and x[j] != 0 and np.sign(x[j]) == np.sign(x[i]):
                j += 1
            runs.append(x[i:j])
            i = j
        else:
            i += 1
    assert len(runs) > 200
    lengths = [len(r) for r in runs if len(r) <= 3]
    # bursts that touch each other merge; by far most stand alone, 2 or 3 long, none alone
    assert min(len(r) for r in runs) >= 2 and len(lengths) / len(runs) > 0.9
    assert {2, 3} <= set(lengths)
    assert all(15 <= abs(r[0]) <= 90 and abs(r[1]) < abs(r[0]) for r in runs)


def test_drift_is_a_ramp_across_the_session():
    cell = LoadCell("laplace", 0.5, 25.0, 3.0, 0.04, 0.0)
    rng = np.random.default_rng(5)
    times = np.array([0.0, 30.0, 60.0, 90.0, 120.0])
    means = np.array([trimmed_mean(cell.window(rng, 1000.0, t, 40)) for t in times])
    slope, icpt = np.polyfit(times + 39 / 50, means, 1)  # window centres (40 samples at 25 Hz)
    assert slope == pytest.approx(0.04, abs=0.004)
    assert icpt == pytest.approx(1003.0, abs=0.5)  # load + tare
    assert np.max(np.abs(means - (slope * (times + 39 / 50) + icpt))) < 0.5  # linear, no jump


def test_an_unsettled_shelf_creeps_to_its_value():
    cell = LoadCell("laplace", 0.0, 10.0, 0.0, 0.0, 0.0)
    w = cell.window(np.random.default_rng(0), 500.0, 31.0, 30, creep=(40.0, 3.0, 30.0))
    assert np.all(np.diff(w) <= 0) and w[0] == pytest.approx(500 + 40 * np.exp(-1 / 3), abs=0.1)
    assert w[-1] - 500 == pytest.approx(40 * np.exp(-3.9 / 3), abs=0.1)


def test_item_weights_stay_within_three_sigma_and_follow_their_lot(tmp_path):
    import random
    syn = synth(tmp_path)
    p = syn.catalog["cola-330"]
    rng = random.Random(0)
    heavy = np.array([syn.item_grams(rng, "cola-330", 1.5) for _ in range(5000)])
    light = np.array([syn.item_grams(rng, "cola-330", -1.5) for _ in range(5000)])
    for g in (heavy, light):
        assert np.all(np.abs(g - p.unit_weight_g) <= 3 * p.weight_sigma_g + 1e-9)
    assert np.mean(heavy) - p.unit_weight_g > 1.2 * p.weight_sigma_g
    assert np.mean(light) - p.unit_weight_g < -1.2 * p.weight_sigma_g


def test_some_sessions_are_weights_only_or_miss_a_camera(tmp_path, shared_data):
    syn = SecondSynth(tmp_path, CATALOG, PLANOGRAM, seed=0, data_root=shared_data)
    kinds = set()
    for i in range(40):
        s = syn.session("T2", i)
        b = load_bundle(s.path)
        kinds.add(len(b.record.cameras))
        if not b.record.cameras:
            assert b.record.calibration is None and b.images == {}
        if {0, 2, 3} <= kinds:
            break
    assert {0, 2, 3} <= kinds


def test_a_camera_that_gave_no_after_frame_is_written_as_null(tmp_path, shared_data):
    syn = SecondSynth(tmp_path, CATALOG, PLANOGRAM, seed=0, data_root=shared_data)
    for i in range(40):
        s = syn.session("T7", i)
        if any("no after frame" in a for a in s.actions):
            break
    else:
        pytest.fail("no T7 session of 40 lost an after frame")
    raw = json.loads((s.path / "bundle.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(raw)
    assert [c for c, v in raw["cameras"].items() if v["after"] is None]
    assert load_bundle(s.path).complete


def test_the_bench_runs_the_second_world_and_charges_nothing_not_taken(tmp_path, capsys,
                                                                          shared_data):
    out = tmp_path / "second.json"
    assert BA.main(["--world", "second", "--sessions", "3", "--seed", "0", "--json",
                    "--out", str(out), "--keep", str(tmp_path / "bundles")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["tier"] for x in lines] == list(TIERS)
    assert json.loads(out.read_text()) == lines
    for x in lines:
        assert set(x) == {"tier", "name", "sessions", "exact", "precision", "recall",
                          "overcharge", "undercharge", "review", "flagged", "p50_ms", "p95_ms"}
        assert x["sessions"] == 3
        assert x["overcharge"] == 0.0, x
    assert (tmp_path / "bundles" / "second-T1-00000" / "bundle.json").is_file()


def test_the_bench_without_images_charges_nothing_not_taken(tmp_path, capsys):
    assert BA.main(["--world", "second", "--sessions", "4", "--seed", "1", "--no-images",
                    "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["tier"] for x in lines] == list(TIERS)
    assert all(x["overcharge"] == 0.0 for x in lines), lines
    assert lines[-1]["flagged"] == 1.0  # T7: a dead cell is always flagged
