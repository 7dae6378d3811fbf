"""The trainer's dataset plan, without torch: train_* photos only, held-out products left out
of training, val_* never trained on, and a data hash that follows the training bytes alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from vision.train import TrainError, data_hash, materialise, plan_dataset


def _products(root: Path, layout: dict[str, tuple[int, int]]) -> Path:
    for name, (n_train, n_val) in layout.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "iconic.jpg").write_bytes(b"packshot " + name.encode())
        for i in range(n_train):
            (folder / f"train_{name}_{i:03d}.jpg").write_bytes(f"{name} train {i}".encode())
        for i in range(n_val):
            (folder / f"val_{name}_{i:03d}.jpg").write_bytes(f"{name} val {i}".encode())
    return root


@pytest.fixture
def products(tmp_path: Path) -> Path:
    return _products(tmp_path / "grocery", {"Apple-Juice": (3, 2), "Oat-Milk": (4, 1),
                                           "Sour-Cream": (2, 0), "Yoghurt": (3, 2)})


def test_plan_trains_on_train_photos_only_and_leaves_holdouts_out(products):
    plan = plan_dataset(products, holdout=["Oat-Milk"])
    assert plan.classes == ("Apple-Juice", "Sour-Cream", "Yoghurt")
    train = plan.train_files()
    assert len(train) == 3 + 2 + 3
    assert all(p.name.startswith("train_") for p in train)
    assert not any("Oat-Milk" in p.name for p in train)
    assert {c: len(v) for c, v in plan.val.items()} == {"Apple-Juice": 2, "Sour-Cream": 0,
                                                        "Yoghurt": 2}
    assert all(p.name.startswith("val_") for v in plan.val.values() for p in v)
    assert [p.name for p in plan.holdout_train["Oat-Milk"]] == [
        f"train_Oat-Milk_{i:03d}.jpg" for i in range(4)]
    assert len(plan.holdout_val["Oat-Milk"]) == 1


def test_materialised_folders_hold_exactly_the_plan(products, tmp_path):
    plan = plan_dataset(products, holdout=["Oat-Milk"])
    data = materialise(plan, tmp_path / "work")
    train = sorted(p.name for p in (data / "train").rglob("*.jpg"))
    assert train == sorted(p.name for p in plan.train_files())
    val = sorted(p.name for p in (data / "val").rglob("*.jpg"))
    assert val == sorted(p.name for v in plan.val.values() for p in v)
    assert not (data / "train" / "Oat-Milk").exists() and not (data / "val" / "Oat-Milk").exists()
    # every class has a (possibly empty) val folder so ultralytics aligns classes by name
    assert sorted(p.name for p in (data / "val").iterdir()) == list(plan.classes)


def test_data_hash_follows_training_bytes_and_names_only(products):
    before = plan_dataset(products).data_hash()
    assert plan_dataset(products).data_hash() == before                   # stable
    (products / "Yoghurt" / "val_Yoghurt_000.jpg").write_bytes(b"another val photo")
    (products / "Yoghurt" / "iconic.jpg").write_bytes(b"another packshot")
    assert plan_dataset(products).data_hash() == before                   # val/iconic: no effect
    (products / "Yoghurt" / "train_Yoghurt_000.jpg").write_bytes(b"changed")
    changed = plan_dataset(products).data_hash()
    assert changed != before
    (products / "Yoghurt" / "train_Yoghurt_000.jpg").rename(products / "Yoghurt" / "train_Yoghurt_009.jpg")
    assert plan_dataset(products).data_hash() not in (before, changed)    # a rename counts
    assert plan_dataset(products, holdout=["Yoghurt"]).data_hash() != plan_dataset(products).data_hash()


def test_data_hash_is_independent_of_list_order(products):
    files = plan_dataset(products).train_files()
    assert data_hash(files, products) == data_hash(list(reversed(files)), products)


@pytest.mark.parametrize("holdout, message", [
    (["Kombucha"], "--holdout Kombucha: not a product in"),
    (["Apple-Juice", "Oat-Milk", "Sour-Cream"], "fewer than 2 products left to train"),
])
def test_bad_holdouts_are_refused_by_name(products, holdout, message):
    with pytest.raises(TrainError, match=message):
        plan_dataset(products, holdout=holdout)


def test_a_missing_or_empty_products_folder_is_named(tmp_path):
    with pytest.raises(TrainError, match=f"products folder {tmp_path / 'nope'}: missing"):
        plan_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "Oat-Milk").mkdir(parents=True)
    with pytest.raises(TrainError, match="no <product>/train_\\* photos"):
        plan_dataset(tmp_path / "empty")


def test_colour_weight_comes_from_a_holdout_card_or_is_refused_naming_it(tmp_path):
    from vision.train import colour_weight_from
    assert colour_weight_from(None) == 0.0
    card = tmp_path / "card.json"
    card.write_text('{"scoring": {"colour": {"weight": 4.0, "bins": [16, 8]}}}')
    assert colour_weight_from(card) == 4.0
    card.write_text('{"scoring": {"softmax_weight": 0.75}}')             # a card without colour
    assert colour_weight_from(card) == 0.0
    card.write_text('{"scoring": {"colour": {"weight": -1}}}')
    with pytest.raises(TrainError, match=f"--colour-from {card}: scoring.colour.weight -1.0 out"):
        colour_weight_from(card)
    card.write_text('{"labels": []}')
    with pytest.raises(TrainError, match=f"--colour-from {card}: not a model card with a 'scoring'"):
        colour_weight_from(card)
    with pytest.raises(TrainError, match=f"--colour-from {tmp_path / 'none.json'}: not a model card"):
        colour_weight_from(tmp_path / "none.json")
