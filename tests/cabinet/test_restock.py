"""Restock counting on synthetic weights: exact for one SKU per shelf, less confident when fills
weigh alike, flags for shelves that did not settle or hold something the stock cannot explain;
and the visit records the counts come from."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cabinet.catalog import Catalog, Product
from cabinet.errors import CabinetError
from cabinet.planogram import Planogram, Shelf, Slot
from cabinet.restock import (RestockVisits, ShelfWeight, count_shelf, count_stock,
                             parse_weights, weights_of)

NOISE = 2.0


def _catalog(*products: tuple[str, float, float]) -> Catalog:
    return Catalog([Product(sku, sku, 100, "EUR", w, tol) for sku, w, tol in products], "EUR")


def _planogram(*slots: tuple[str, str, str, int]) -> Planogram:
    shelves = tuple(dict.fromkeys(shelf for _, shelf, _, _ in slots))
    return Planogram("t", tuple(Shelf(s, i, f"cam{i}", 50000.0) for i, s in enumerate(shelves)),
                     tuple(Slot(sid, shelf, sku, cap, 1, (10 * i, 0, 10, 10))
                           for i, (sid, shelf, sku, cap) in enumerate(slots)))


CAT = _catalog(("cola", 343.0, 6.0), ("energy", 260.0, 5.0), ("can330", 330.0, 4.0),
               ("bottle660", 660.0, 4.0), ("milk-a", 1040.0, 8.0), ("milk-b", 1040.0, 8.0),
               ("jar700", 700.0, 4.0), ("bar130", 130.0, 2.0))


def _load(catalog: Catalog, planogram: Planogram, counts: dict[str, int]) -> dict[str, float]:
    return {sh.id: sum(counts[s.id] * catalog[s.sku].unit_weight_g
                       for s in planogram.slots_on(sh.id)) for sh in planogram.shelves}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 12), z=st.floats(-2.0, 2.0))
def test_one_sku_per_shelf_is_counted_exactly(n, z):
    plano = _planogram(("A1", "top", "cola", 12))
    sd = (NOISE ** 2 + n * (6.0 / 2) ** 2) ** 0.5
    report = count_stock({"top": ShelfWeight(n * 343.0 + z * sd)}, plano, CAT,
                         expected={"A1": 12}, noise_g=NOISE)
    (row,) = report.slots
    assert (row.counted, row.flags) == (n, ())
    assert row.confidence > 0.99


@settings(max_examples=60, deadline=None)
@given(a=st.integers(0, 4), b=st.integers(0, 4), z=st.floats(-1.0, 1.0))
def test_two_skus_whose_fills_weigh_apart_are_counted_exactly(a, b, z):
    # 700 g and 130 g: fills of up to 4 + 4 items are 130 g apart or more (over 10 sigma)
    plano = _planogram(("A1", "top", "jar700", 4), ("A2", "top", "bar130", 4))
    report = count_stock({"top": ShelfWeight(a * 700.0 + b * 130.0 + z * NOISE)}, plano, CAT,
                         expected={"A1": 4, "A2": 4}, noise_g=NOISE)
    assert report.counts() == {"A1": a, "A2": b}
    assert all(r.confidence > 0.95 and r.flags == () for r in report.slots)


def test_fills_that_weigh_alike_lower_the_confidence_and_are_flagged():
    plano = _planogram(("A1", "top", "can330", 4), ("A2", "top", "bottle660", 2))
    report = count_stock({"top": ShelfWeight(660.0)}, plano, CAT,
                         expected={"A1": 2, "A2": 0}, noise_g=NOISE)
    # 2 x 330 g or 1 x 660 g: the weight cannot tell. One item spreads less than two, so the
    # single bottle is a little more likely, but far from sure.
    assert report.counts() == {"A1": 0, "A2": 1}
    for row in report.slots:
        assert 0.5 < row.confidence < 0.7
        assert row.flags == ("uncertain",)
    again = count_stock({"top": ShelfWeight(990.0)}, plano, CAT, expected={}, noise_g=NOISE)
    assert again.counts() == {"A1": 1, "A2": 1}   # 3 x 330 would need A1 = 3: still ambiguous
    assert max(r.confidence for r in again.slots) < 0.7


def test_camera_counts_settle_what_the_weight_cannot():
    plano = _planogram(("A4", "top", "milk-a", 4), ("A5", "top", "milk-b", 4))
    weight = {"top": ShelfWeight(6 * 1040.0)}
    blind = count_stock(weight, plano, CAT, expected={"A4": 3, "A5": 3}, noise_g=NOISE)
    # (2, 4), (3, 3) and (4, 2) weigh exactly alike: a true tie, which goes to the expected fill
    assert blind.counts() == {"A4": 3, "A5": 3}
    assert [round(r.confidence, 3) for r in blind.slots] == [0.333, 0.333]
    seen = count_stock(weight, plano, CAT, expected={"A4": 3, "A5": 3}, noise_g=NOISE,
                       vision={"A4": 4, "A5": 2})
    assert seen.counts() == {"A4": 4, "A5": 2}
    assert all(r.confidence > 0.9 and r.flags == () for r in seen.slots)


def test_a_shelf_that_did_not_settle_is_flagged_with_no_confidence_and_others_are_not():
    plano = _planogram(("A1", "top", "cola", 6), ("B1", "mid", "energy", 6))
    report = count_stock({"top": ShelfWeight(3 * 343.0, stable=False),
                          "mid": ShelfWeight(2 * 260.0)}, plano, CAT,
                         expected={"A1": 6, "B1": 6}, noise_g=NOISE)
    a1, b1 = report.slots
    assert (a1.counted, a1.confidence, a1.flags) == (3, 0.0, ("not_settled",))
    assert (b1.counted, b1.flags) == (2, ())
    assert [r.slot for r in report.flagged()] == ["A1"]


def test_a_weight_no_fill_explains_is_flagged():
    plano = _planogram(("A1", "top", "cola", 6))
    report = count_stock({"top": ShelfWeight(3 * 343.0 + 120.0)}, plano, CAT,
                         expected={"A1": 6}, noise_g=NOISE)
    assert "unexplained_weight" in report.slots[0].flags


def test_weights_before_the_visit_show_the_shrinkage():
    plano = _planogram(("A1", "top", "jar700", 6), ("A2", "top", "bar130", 4))
    before = {"top": ShelfWeight(2 * 700.0 + 4 * 130.0)}
    after = {"top": ShelfWeight(6 * 700.0 + 4 * 130.0)}
    report = count_stock(after, plano, CAT, before=before, expected={"A1": 5, "A2": 4},
                         noise_g=NOISE)
    rows = {r.slot: r for r in report.slots}
    assert (rows["A1"].counted_before, rows["A1"].shrinkage, rows["A1"].counted) == (2, 3, 6)
    assert (rows["A2"].counted_before, rows["A2"].shrinkage, rows["A2"].counted) == (4, 0, 4)
    assert rows["A1"].before_confidence > 0.99 and rows["A1"].flags == ()
    assert json.loads(json.dumps(report.to_dict()))["slots"][0]["shrinkage"] == 3


def test_an_unsure_count_before_the_visit_claims_no_shrinkage():
    # 3 x 343 g (1029) and 4 x 260 g (1040) lie 11 g apart: too close to be sure which
    plano = _planogram(("A1", "top", "cola", 6), ("A2", "top", "energy", 6))
    after = {"top": ShelfWeight(6 * 343.0 + 6 * 260.0)}
    blind = count_stock(after, plano, CAT, before={"top": ShelfWeight(3 * 343.0)},
                        expected={"A1": 5, "A2": 0}, noise_g=NOISE,
                        vision={"A1": 6, "A2": 6})
    assert all("uncertain_before" in r.flags and r.shrinkage is None for r in blind.slots)
    seen = count_stock(after, plano, CAT, before={"top": ShelfWeight(3 * 343.0)},
                       expected={"A1": 5, "A2": 0}, noise_g=NOISE,
                       vision={"A1": 6, "A2": 6}, vision_before={"A1": 3, "A2": 0})
    assert [(r.counted_before, r.shrinkage, r.flags) for r in seen.slots] == [
        (3, 2, ()), (0, 0, ())]


def test_every_shelf_needs_a_reading_and_vision_must_name_real_slots():
    plano = _planogram(("A1", "top", "cola", 6), ("B1", "mid", "energy", 6))
    with pytest.raises(CabinetError, match="no settled weight for shelf.*mid"):
        count_stock({"top": ShelfWeight(0.0)}, plano, CAT, expected={})
    with pytest.raises(CabinetError, match="slot.*Z9"):
        count_stock({"top": ShelfWeight(0.0), "mid": ShelfWeight(0.0)}, plano, CAT,
                    expected={}, vision={"Z9": 1})


def test_an_empty_shelf_counts_zero_and_a_negative_reading_is_unexplained():
    slots = [("A1", 343.0, 3.0, 6)]
    assert count_shelf(0.5, slots, noise_g=NOISE).counts == {"A1": 0}
    assert count_shelf(-200.0, slots, noise_g=NOISE).explained is False


def test_weights_files_are_checked_with_the_place_named():
    assert parse_weights({"top": 12, "mid": {"grams": 3.5, "stable": False}}, "w.json") == {
        "top": ShelfWeight(12.0), "mid": ShelfWeight(3.5, False)}
    with pytest.raises(CabinetError, match=r"w.json: shelf 'top' = 'heavy'"):
        parse_weights({"top": "heavy"}, "w.json")
    with pytest.raises(CabinetError, match="w.json: expected a JSON object"):
        parse_weights([1, 2], "w.json")


def test_a_visit_records_weights_and_its_acceptance_and_only_one_is_open(tmp_path):
    visits = RestockVisits(tmp_path)
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    visit = visits.start("ann", {"A1": 5}, at, before={"top": ShelfWeight(686.0)})
    with pytest.raises(CabinetError, match=f"visit {visit['id']} by ann is still open"):
        visits.start("bob", {}, at)
    visits.record("after", {"top": ShelfWeight(2058.0)})
    latest = visits.latest()
    assert weights_of(latest["after"]) == {"top": ShelfWeight(2058.0)}
    assert weights_of(latest["before"]) == {"top": ShelfWeight(686.0)}
    plano = _planogram(("A1", "top", "cola", 6))
    report = count_stock(weights_of(latest["after"]), plano, CAT, expected=latest["expected"],
                         before=weights_of(latest["before"]))
    visits.accept(report, at)
    assert visits.open_visit() is None
    assert visits.latest()["accepted"]["counts"] == {"A1": 6}
    assert visits.latest()["accepted"]["shrinkage"] == {"A1": 3}
    with pytest.raises(CabinetError, match="no open visit"):
        visits.record("after", {})
