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


# ---- the metric-learning loop's parts that need no torch (`--loss arcface|cosface`) ----------

def _args(*argv):
    from vision.train import _parser
    return _parser().parse_args(list(argv))


def test_metric_loss_options_make_a_checked_recipe(tmp_path):
    from vision.train import MetricRecipe, metric_recipe
    assert metric_recipe(_args()) is None                                  # ultralytics' trainer
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"a checkpoint")
    recipe = metric_recipe(_args("--loss", "cosface", "--margin", "0.2", "--scale", "16",
                                 "--ce-weight", "0", "--lr", "0.0005", "--init", str(weights)))
    assert recipe == MetricRecipe(loss="cosface", margin=0.2, scale=16.0, ce_weight=0.0, lr=0.0005)
    assert metric_recipe(_args("--loss", "arcface")) == MetricRecipe()


@pytest.mark.parametrize("argv, message", [
    (["--loss", "arcface", "--margin", "1.5"], "--margin 1.5: expected 0-1"),
    (["--loss", "arcface", "--scale", "0.5"], "--scale 0.5: expected 1-128"),
    (["--loss", "arcface", "--lr", "0"], "--lr > 0"),
    (["--loss", "arcface", "--init", "/nonexistent/best.pt"], "--init /nonexistent/best.pt: no such"),
    (["--init", "/nonexistent/best.pt"], "--init needs --loss arcface or cosface"),
])
def test_bad_metric_options_are_refused_by_name(argv, message):
    from vision.train import metric_recipe
    with pytest.raises(TrainError, match=message):
        metric_recipe(_args(*argv))


def test_metric_loop_refuses_ultralytics_options_before_importing_torch(products, capsys):
    from vision.train import main
    assert main(["--data", str(products), "--loss", "arcface", "--opt", "lr0=0.01",
                 "--out", str(products.parent / "out")]) == 1
    assert "--opt is an ultralytics option; the metric loop takes --lr" in capsys.readouterr().err
    assert not (products.parent / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--soup", "ONE"], "--soup needs at least two weights files"),
    (["--soup", "ONE", "/nonexistent/b.pt"], "--soup /nonexistent/b.pt: no such weights file"),
    (["--soup", "ONE", "ONE", "--loss", "arcface"], "--soup trains nothing"),
])
def test_a_soup_is_refused_by_name_before_importing_torch(products, capsys, extra, message):
    from vision.train import main
    one = products.parent / "a.pt"
    one.write_bytes(b"not read")
    argv = [str(one) if a == "ONE" else a for a in extra]
    assert main(["--data", str(products), "--out", str(products.parent / "out"), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not (products.parent / "out").exists()


def test_margin_targets_are_the_textbook_ones_and_keep_falling_with_the_angle():
    import numpy as np

    from vision.train import margin_target
    theta = np.linspace(0, np.pi, 721)
    cos = np.cos(theta)
    arc = margin_target(cos, "arcface", 0.5, np)
    inside = theta + 0.5 <= np.pi
    assert np.allclose(arc[inside], np.cos(theta[inside] + 0.5))      # cos(theta + m)
    assert np.all(np.diff(arc) < 0)                                   # monotone past pi - m too
    assert np.all(arc <= cos + 1e-12)                                 # a margin only makes it harder
    assert np.allclose(margin_target(cos, "cosface", 0.35, np), cos - 0.35)
    assert np.allclose(margin_target(cos, "arcface", 0.0, np), cos)


def test_augmented_views_are_network_inputs_repeatable_by_seed():
    import numpy as np

    from vision.train import augment
    img = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    a = augment(img, 160, np.random.default_rng(7))
    assert a.shape == (3, 160, 160) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, augment(img, 160, np.random.default_rng(7)))
    assert not np.array_equal(a, augment(img, 160, np.random.default_rng(8)))


def test_augmentation_is_rgb_mirrors_and_leaves_colour_alone_without_jitter():
    import numpy as np

    from vision.train import MetricRecipe, augment
    plain = MetricRecipe(crop_scale=(1.0, 1.0), jitter=0.0, hue=0.0)
    blue = np.zeros((50, 50, 3), np.uint8)
    blue[..., 0] = 255                                                # BGR blue
    x = augment(blue, 32, np.random.default_rng(0), plain)
    assert np.allclose(x[2], 1.0) and np.allclose(x[:2], 0.0)         # RGB order, like preprocess
    half = np.zeros((50, 50, 3), np.uint8)
    half[:, 25:] = 255                                                # right half white
    lefts = {float(augment(half, 32, np.random.default_rng(s), plain)[:, :, 0].mean())
             for s in range(20)}
    assert lefts == {0.0, 1.0}                                        # both ways round, whole photo


def _tiny_onnx(path: Path, classes: int) -> None:
    """A stand-in network with the recogniser's contract (`images` -> `probs`, `features`):
    features are the image's mean colour, probs a softmax of a fixed linear map of them."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, classes))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"]),
             helper.make_node("MatMul", ["features", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                      ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", classes]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_finished_model_carries_its_verification_references(shared_data, tmp_path):
    """finish_model (every `cabinet vision train`, `--soup` and `--rescore`) writes the
    local-feature references and the card's scoring.verify block, so a retrained model keeps
    the shipped cards' re-ranking of contested crops (real photos, a stand-in network)."""
    from vision.recognizer import Recognizer
    from vision.train import finish_model
    src = shared_data / "products" / "grocery"
    root = tmp_path / "grocery"
    for name in ("Arla-Sour-Cream", "Bravo-Apple-Juice", "Oatly-Oat-Milk"):
        (root / name).mkdir(parents=True)
        for prefix, n in (("train", 6), ("val", 2)):
            for f in sorted((src / name).glob(f"{prefix}_*.jpg"))[:n]:
                (root / name / f.name).symlink_to(f)
    plan = plan_dataset(root)
    out = tmp_path / "model"
    out.mkdir()
    _tiny_onnx(out / "model.onnx", len(plan.classes))
    card = finish_model(out, plan, 64, {"command": "test"})
    v = card["scoring"]["verify"]
    assert v["file"] == "references.npz" and v["photos"] == 3 * 5 and v["scope"] == "enrolled"
    rec = Recognizer.load(out)
    assert rec.verifies and sorted(rec._refs) == [0, 1, 2]
