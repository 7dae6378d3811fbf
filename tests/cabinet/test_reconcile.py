"""Reconcile on synthetic bundles written by the real BundleWriter: items with their own
weights, noisy load cells, rendered shelf images."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cabinet.bundle import BundleWriter, load_bundle
from vision.sim.looks import product_looks
from cabinet.reconcile import ReconcileResult, reconcile
from vision.data import data_root

from test_bundle_synth import FIXTURES, World, demo_files, write_session

FILES = demo_files()


def run(tmp_path, act, *, seed=1, noise=1.0, images=False, name="s"):
    world = World(*FILES, seed=seed)
    path = write_session(tmp_path, name, world, act, noise_g=noise, with_images=images,
                         seed=seed)
    return world, reconcile(load_bundle(path)), path


# Clear sessions are clear with the shelf cameras, as the cabinet runs. Weights alone cannot
# always be sure: three takes from three shelves weigh like four takes and one item moved
# between shelves (water -559 g vs cola + 2 energy - sour cream -554 g); see the random and
# look-alike tests below for what reconcile does then.
@pytest.mark.parametrize("act,basket", [
    (lambda w: w.take("A1"), {"cola-330": 1}),
    (lambda w: (w.take("A3"), w.take("B2"), w.take("C3")),
     {"water-500": 1, "apple-juice-750": 1, "sour-cream-300": 1}),
    (lambda w: (w.take("C4", 2), w.take("C1"), w.put("C4", "vanilla-yoghurt-150")),
     {"vanilla-yoghurt-150": 1, "milk-1l": 1}),
    (lambda w: None, {}),
])
def test_clear_sessions(tmp_path, act, basket):
    world, r, _ = run(tmp_path, act, images=True)
    assert world.basket() == basket
    assert r.basket == basket and r.best_guess == basket
    assert r.flags == () and r.confidence >= 0.95 and not r.needs_review


def test_moved_items_are_not_sold(tmp_path):
    world, r, _ = run(tmp_path, lambda w: (w.move("B3", "A1"), w.take("A2")), images=True)
    assert r.basket == {"energy-250": 1} == world.basket() and r.flags == ()
    ev = r.evidence["shelves"]
    assert ev["top"]["explained_by"] == {"energy-250": -1, "smoothie-250": 1}
    assert ev["middle"]["explained_by"] == {"smoothie-250": -1}


def test_misplaced_return_is_not_sold(tmp_path):
    world, r, _ = run(tmp_path, lambda w: (w.take("B2"), w.take("A1"),
                                           w.put("C2", "apple-juice-750")), images=True)
    assert r.basket == {"cola-330": 1} == world.basket() and r.flags == ()


def test_foreign_weight_is_flagged_and_not_guessed(tmp_path):
    world, r, _ = run(tmp_path, lambda w: (w.take("A1"), w.add_foreign("top", 400.0)), images=True)
    assert "unexplained_weight" in r.flags and "foreign_object" in r.flags
    assert r.needs_review
    assert r.basket == {}  # the top shelf's change is not understood: nothing charged from it


def test_foreign_weight_elsewhere_keeps_the_certain_part(tmp_path):
    # the cameras say which shelf lost what; the top shelf's extra 123 g stays unexplained
    world, r, _ = run(tmp_path, lambda w: (w.take("C3"), w.add_foreign("top", 123.0)),
                      images=True)
    assert "unexplained_weight" in r.flags and r.needs_review
    assert r.basket == {"sour-cream-300": 1}


def dead_middle_session(tmp_path, act):
    world = World(*FILES, seed=2)
    w = BundleWriter(tmp_path, "dead")
    looks = product_looks(world.catalog, data_root())
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    w.write_vision(calibration=world.calibration(looks))
    w.write_before(world.readings(1.0), world.images(looks, 1), world.inventory())
    act(world)
    after = world.readings(1.0)
    after["middle"] = (None, False, [])
    w.write_after(after, world.images(looks, 2))
    return world, reconcile(load_bundle(w.path))


def test_dead_shelf_nobody_touched_charges_the_others(tmp_path):
    world, r = dead_middle_session(tmp_path, lambda w: (w.take("A1"), w.take("C3")))
    assert "shelf_dead" in r.flags and r.needs_review
    assert r.basket == {"cola-330": 1, "sour-cream-300": 1} == world.basket()
    assert r.evidence["shelves"]["middle"]["touched"] is False


def test_dead_shelf_that_was_touched_charges_nothing_it_could_hold(tmp_path):
    # the middle shelf's load cell is dead and its camera saw B2 lose one item. Two apple
    # juices out and the cola put in the place of one would fit B2's count, but no cell of
    # the shelf changed while occupied or filled: the cola has nowhere to hide there, so it is
    # charged (the top shelf's weight and count say it left); the apple juice, whose only
    # weighing is dead, is not
    world, r = dead_middle_session(tmp_path, lambda w: (w.take("A1"), w.take("B2")))
    assert "shelf_dead" in r.flags and r.needs_review
    assert r.basket == {"cola-330": 1}
    assert r.best_guess == world.basket() == {"apple-juice-750": 1, "cola-330": 1}


@pytest.mark.parametrize("samples,flagged", [(2, True), (20, False)])
def test_unsettled_shelf_is_flagged_when_its_samples_cannot_measure_the_swing(tmp_path, samples,
                                                                              flagged):
    # a shelf still swinging: with 20 samples their scatter measures the swing, which is
    # noise like any other, and the water is sure despite it; with 2 nothing measures it
    world = World(*FILES, seed=2)
    w = BundleWriter(tmp_path, "unsettled")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    w.write_before(world.readings(1.0), {}, world.inventory())
    world.take("A3")
    after = world.readings(1.0, n=samples)
    grams, _, window = after["top"]
    after["top"] = (grams, False, window)
    w.write_after(after, {})
    r = reconcile(load_bundle(w.path))
    assert ("shelf_unsettled" in r.flags) is flagged and r.best_guess == {"water-500": 1}
    # an unmeasured swing may hide weight from anything: the flagged session charges nothing
    assert r.basket == ({} if flagged else {"water-500": 1})


def test_with_images_the_camera_counts_agree(tmp_path):
    # without a recogniser the camera says where things left and how many, not what they are
    world, r, _ = run(tmp_path, lambda w: w.take("A2", 2), images=True)
    assert r.basket == {"energy-250": 2} and r.flags == ()
    a2 = r.evidence["slots"]["A2"]
    assert a2["count_before"] - a2["count_after"] == 2 and a2["change"] > 0
    top = r.evidence["shelves"]["top"]
    assert top["count_change"] == -2 and top["touched"] is True and top["vision_seen"] == {}
    assert [sid for sid, e in r.evidence["slots"].items() if e["change"] > 0.008] == ["A2"]
    assert r.evidence["shelves"]["middle"]["touched"] is False


MOVES = [
    [("A1", "A2")],                      # within a shelf
    [("B3", "A1")],                      # middle to top
    [("C1", "B1")],                      # a milk among the orange juices (1067 g vs 1102 g)
    [("A3", "B4")],
    [("C2", "B4"), ("A2", "C2")],        # two moves across three shelves
]


@pytest.mark.parametrize("images", [False, True], ids=["weights", "cameras"])
@pytest.mark.parametrize("moves", MOVES, ids=lambda m: "+".join(f"{a}-{b}" for a, b in m))
def test_items_moved_inside_the_cabinet_are_never_charged(tmp_path, moves, images):
    def act(w):
        for src, dst in moves:
            w.move(src, dst)
    world, r, _ = run(tmp_path, act, images=images, seed=3)
    assert world.basket() == {}
    assert r.basket == {} and r.best_guess == {} and r.flags == ()


LOOK_ALIKE_SLOTS = {"A4", "A5"}  # fixtures: two Arla 1 l milks of one weight, side by side


def test_reconcile_does_not_flag_every_clear_take_on_weights_alone(tmp_path):
    """One item from each slot, weights only: the best guess is always right, and most of these
    plain sessions come out sure (a reconcile that flags everything fails here; today 5 of 22
    are flagged low_confidence, each charging nothing and keeping the right best guess)."""
    flagged = []
    for slot in SLOTS:
        for seed in (1, 2):
            world, r, _ = run(tmp_path, lambda w: w.take(slot), seed=seed, name=f"{slot}-{seed}")
            truth = world.basket()
            if slot in LOOK_ALIKE_SLOTS:  # one weight, two SKUs: flagged and not charged, never guessed
                assert "low_confidence" in r.flags and r.basket == {}, (slot, seed, r.flags, r.basket)
                continue
            assert len(truth) == 1 and r.best_guess == truth, (slot, seed, r.best_guess)
            if r.flags:
                flagged.append((slot, seed, r.flags))
                assert r.basket == {} and r.flags == ("low_confidence",), (slot, seed, r.flags)
            else:
                assert r.basket == truth, (slot, seed, r.basket)
    assert len(flagged) <= 2 * len(SLOTS) // 3, flagged


def test_dark_camera_is_flagged(tmp_path):
    world = World(*FILES, seed=4)
    looks = product_looks(world.catalog, data_root())
    w = BundleWriter(tmp_path, "dark")
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    w.write_before(world.readings(1.0), world.images(looks, 1), world.inventory())
    world.take("C1")
    imgs = world.images(looks, 2)
    imgs["cam_bottom"] = np.zeros_like(imgs["cam_bottom"])
    w.write_after(world.readings(1.0), imgs)
    r = reconcile(load_bundle(w.path))
    assert "camera_dark" in r.flags and r.best_guess == {"milk-1l": 1}
    assert r.basket == {"milk-1l": 1}  # the weight alone is sure of the milk


def test_same_bundle_same_answer_and_json_round_trip(tmp_path):
    _, first, path = run(tmp_path, lambda w: (w.take("B1"), w.take("C2")), images=True)
    again = reconcile(load_bundle(path))
    assert again.to_json() == first.to_json()
    assert ReconcileResult.from_json(first.to_json()) == first
    BundleWriter(tmp_path, "s").write_result(first)
    assert json.loads((path / "result.json").read_text())["basket"] == first.basket


# --- random sessions --------------------------------------------------------------------------

SLOTS = [s.id for s in FILES[1].slots]


@st.composite
def sessions(draw):
    """Up to three takes, each maybe put back in its own slot or another; up to two moves."""
    steps = []
    for _ in range(draw(st.integers(0, 3))):
        slot = draw(st.sampled_from(SLOTS))
        fate = draw(st.sampled_from(["keep", "keep", "back", "elsewhere"]))
        steps.append(("take", slot, fate, draw(st.sampled_from(SLOTS))))
    for _ in range(draw(st.integers(0, 1))):
        steps.append(("move", draw(st.sampled_from(SLOTS)), None, draw(st.sampled_from(SLOTS))))
    return steps, draw(st.integers(0, 10_000))


def play(world: World, steps) -> None:
    for kind, slot, fate, other in steps:
        cap = {s.id: s.capacity for s in world.planogram.slots}
        if kind == "move":
            if world.slots[slot] and len(world.slots[other]) < cap[other] and slot != other:
                world.move(slot, other)
            continue
        if not world.slots[slot]:
            continue
        world.take(slot)
        sku = world.hands[-1][0]
        dest = slot if fate == "back" else other
        if fate != "keep" and len(world.slots[dest]) < cap[dest]:
            world.put(dest, sku)


# CABINET_RECONCILE_EXAMPLES=400 for a one-off big run; the suite runs a fixed, derandomized set
EXAMPLES = int(os.environ.get("CABINET_RECONCILE_EXAMPLES", "40"))


def check_session(tmp, steps, seed, *, images: bool, name: str = "h"):
    world = World(*FILES, seed=seed)
    path = write_session(tmp, name, world, lambda w: play(w, steps), noise_g=1.0, seed=seed,
                         with_images=images)
    r = reconcile(load_bundle(path))
    truth = world.basket()
    assert r.needs_review == bool(r.flags)
    if r.flags:
        # flagged: only the certain part is charged, never more than was taken nor more than
        # the best guess
        assert within(r.basket, truth) and within(r.basket, r.best_guess), \
            (steps, seed, r.basket, r.best_guess, truth)
    else:
        assert r.basket == truth == r.best_guess, (steps, seed, r.evidence["shelves"])
    return r, truth


def within(basket: dict[str, int], bound: dict[str, int]) -> bool:
    """Every SKU of `basket` at most as many times as in `bound`."""
    return all(bound.get(k, 0) >= n for k, n in basket.items())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sessions())
def test_random_sessions_weights_alone(tmp_path_factory, session):
    """Without cameras a move between shelves can mimic another basket: such sessions must be
    flagged, never charged wrong."""
    steps, seed = session
    check_session(tmp_path_factory.mktemp("h"), steps, seed, images=False)


@settings(max_examples=max(10, EXAMPLES // 2), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sessions())
def test_random_sessions_with_cameras(tmp_path_factory, session):
    """With the shelf cameras (as the cabinet runs) the same sessions come out exact."""
    steps, seed = session
    r, truth = check_session(tmp_path_factory.mktemp("h"), steps, seed, images=True)
    assert r.basket == truth and not r.flags, (steps, seed, r.flags, r.evidence["shelves"])


# sessions that once came out as unflagged overcharges: a move between shelves whose weight
# change mimics another basket (orange juice out and a cola in weighs like an apple juice out)
LOOK_ALIKE_MOVES = [
    ([("take", "B1", "keep", "A1"), ("take", "A1", "keep", "A1"), ("move", "A1", None, "B1")], 0),
    ([("take", "B1", "keep", "A1"), ("take", "A1", "keep", "A1"), ("move", "A1", None, "B1")], 3),
    ([("take", "B3", "elsewhere", "A2"), ("take", "A3", "keep", "A1"), ("take", "C3", "keep", "B1")],
     8101),
    ([("take", "C4", "keep", "B2"), ("take", "C4", "keep", "C4"), ("take", "C1", "elsewhere", "B3"),
      ("move", "B2", None, "C4")], 3982),
    ([("take", "C1", "elsewhere", "C2"), ("take", "A2", "elsewhere", "B2"), ("take", "A3", "keep", "A1"),
      ("move", "B4", None, "A2")], 429),
    ([("take", "A3", "keep", "C1"), ("take", "A3", "keep", "A1"), ("move", "B3", None, "A1")], 9659),
]


@pytest.mark.parametrize("steps,seed", LOOK_ALIKE_MOVES)
def test_look_alike_cross_shelf_moves_are_flagged_without_cameras(tmp_path, steps, seed):
    r, truth = check_session(tmp_path, steps, seed, images=False)
    assert r.flags and "low_confidence" in r.flags  # weights alone cannot be sure here


@pytest.mark.parametrize("steps,seed", [m for i, m in enumerate(LOOK_ALIKE_MOVES) if i != 2])
def test_look_alike_cross_shelf_moves_are_exact_with_cameras(tmp_path, steps, seed):
    r, truth = check_session(tmp_path, steps, seed, images=True)
    assert r.basket == truth and r.flags == (), (r.flags, r.evidence["shelves"])


def test_which_of_two_items_moved_needs_identities(tmp_path):
    """A smoothie (290 g) moved to the top shelf while a water (559 g) and a sour cream (309 g)
    were taken: the top shelf lost 259 g, a slot there gained one item, the middle and bottom
    shelves each lost one. Which of the smoothie or the sour cream arrived on top: counts and
    weights fit both within 10 g, and the look of what arrived leans to the smoothie but not
    enough (the top camera draws the same item only 0.69 alike to the middle camera's view of
    it, the sour cream 0.49: another camera's light and angle). Flagged, and only the water,
    which every explanation takes, is charged."""
    steps, seed = LOOK_ALIKE_MOVES[2]
    r, truth = check_session(tmp_path, steps, seed, images=True)
    assert truth == {"sour-cream-300": 1, "water-500": 1}
    assert r.flags == ("low_confidence",) and r.basket == {"water-500": 1}
    assert r.evidence["shelves"]["top"]["count_change"] == 0
    assert r.evidence["slots"]["A2"]["count_after"] - r.evidence["slots"]["A2"]["count_before"] == 1


def test_orange_juice_out_cola_in_is_not_an_apple_juice(tmp_path):
    """The first overcharge found: shelf B lost an orange juice and gained a cola from shelf A
    (-1102 + 343 g), which weighs like an apple juice taken (-745 g)."""
    steps, seed = LOOK_ALIKE_MOVES[0]
    r, truth = check_session(tmp_path, steps, seed, images=True)
    assert truth == {"cola-330": 1, "orange-juice-1l": 1} == r.basket
    ev = r.evidence
    assert ev["shelves"]["middle"]["explained_by"] == {"cola-330": 1, "orange-juice-1l": -1}
    # what rules the apple juice out: its slot did not change, and the middle shelf holds as
    # many items as before (one left B1, one arrived there)
    assert ev["slots"]["B2"]["change"] < 0.008
    assert ev["slots"]["B2"]["count_after"] == ev["slots"]["B2"]["count_before"]
    assert ev["slots"]["B1"]["count_after"] == ev["slots"]["B1"]["count_before"]
    assert ev["shelves"]["middle"]["count_change"] == 0 and ev["shelves"]["middle"]["touched"]
    weights_only, _ = check_session(tmp_path, steps, seed, images=False, name="w")
    assert "low_confidence" in weights_only.flags
    assert weights_only.best_guess == {"apple-juice-750": 1, "cola-330": 2}  # what weight alone prefers
    assert weights_only.basket == {"cola-330": 1}  # all that is certain without the cameras


# --- what once overcharged on bundles reconcile did not make (issue 7, item 6) -----------------

def odd_session(tmp_path, act, tweak=None, *, images: bool):
    world = World(*FILES, seed=5)
    w = BundleWriter(tmp_path, "odd")
    looks = product_looks(world.catalog, data_root())
    w.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "a")
    if images:
        w.write_vision(calibration=world.calibration(looks))
    w.write_before(world.readings(1.0), world.images(looks, 1) if images else {},
                   world.inventory())
    act(world)
    after = world.readings(1.0)
    if tweak:
        tweak(after)
    w.write_after(after, world.images(looks, 2) if images else {})
    return world, reconcile(load_bundle(w.path))


def one_sample(shelf, grams):
    """The after-reading of `shelf` is a window of one sample, `grams` off the truth."""
    def tweak(after):
        g, stable, _ = after[shelf]
        after[shelf] = (g + grams, stable, [g + grams])
    return tweak


ODD = {
    # a one-sample spike on a shelf nobody touched (once: "an energy drink taken and a sour
    # cream put there")
    "spike +48 g": (lambda w: w.take("A1"), one_sample("bottom", 48.0)),
    "noise -10 g": (lambda w: w.take("A1"), one_sample("middle", -10.0)),
    # keys put on a shelf (once explained by items moved, charging an untouched product)
    "keys +120 g": (lambda w: (w.take("A3"), w.add_foreign("middle", 120.0)), None),
    # three items moved onto one shelf (once beyond a fixed limit of two arrivals)
    "three moved onto the top shelf": (
        lambda w: (w.move("B1", "A2"), w.move("B3", "A2"), w.move("C3", "A1")), None),
}


@pytest.mark.parametrize("case,flags", [
    ("spike +48 g", ("foreign_object", "unexplained_weight")),
    ("noise -10 g", ("unexplained_weight",)),
    ("keys +120 g", ("foreign_object", "unexplained_weight")),
    ("three moved onto the top shelf", ()),
])
def test_odd_weights_with_cameras_charge_exactly_what_was_taken(tmp_path, case, flags):
    act, tweak = ODD[case]
    world, r = odd_session(tmp_path, act, tweak, images=True)
    assert r.basket == world.basket() == r.best_guess and r.flags == flags, (r.flags, r.basket)


@pytest.mark.parametrize("case,best_guess", [
    ("spike +48 g", {"sour-cream-300": 1}),
    ("noise -10 g", {"cola-330": 1}),
    ("keys +120 g", {"lager-330": 1}),
    ("three moved onto the top shelf", {"orange-juice-1l": 1, "smoothie-250": 1,
                                        "sour-cream-300": 1}),
])
def test_odd_weights_alone_are_flagged_and_charge_nothing_unsure(tmp_path, case, best_guess):
    """Without the cameras these sessions have rivals as good as the truth: flagged
    low_confidence, and nothing that any rival disputes is charged (here: nothing)."""
    act, tweak = ODD[case]
    world, r = odd_session(tmp_path, act, tweak, images=False)
    assert "low_confidence" in r.flags and r.basket == {}
    assert r.best_guess == best_guess
