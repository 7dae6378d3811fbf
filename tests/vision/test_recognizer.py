"""The product recogniser through its run-time path (onnxruntime, no torch): the committed model
reads val_* photos as its card says, embeddings are unit vectors and repeatable, a missing or
corrupt model is refused naming the file, and an enrolled SKU is recognised without retraining."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vision.product_gallery import GalleryError, ProductGallery
from vision.recognizer import (DEFAULT_MODEL_DIR, Recognizer, RecognizerError, colour_histograms,
                               read_photo)

HOLDOUT_DIR = DEFAULT_MODEL_DIR / "holdout"


def _val(shared_data: Path) -> dict[str, list[Path]]:
    root = shared_data / "products" / "grocery"
    out = {}
    for product in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(product.glob("val_*.jpg"))
        if files:
            out[product.name] = files
    return out


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.load()


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, copy, ignore=shutil.ignore_patterns("holdout"))
    return copy


def test_committed_model_reads_val_photos_as_its_card_measured(recognizer, shared_data):
    """Every val_* photo through classify(): top-1 within one photo of the card's val_top1 (the
    figure training measured through the same path), and well above chance (1/31)."""
    val = _val(shared_data)
    truth, crops = [], []
    for product, files in val.items():
        truth += [product] * len(files)
        crops += [read_photo(f) for f in files]
    ranked = recognizer.classify(crops, top_k=3)
    assert all(len(r) == 3 and r[0][1] >= r[1][1] >= r[2][1] for r in ranked)
    top1 = float(np.mean([r[0][0] == t for r, t in zip(ranked, truth)]))
    card = recognizer.card.raw["metrics"]
    assert card["val_photos"] == len(crops) == 100
    # with the card's local-feature verification, the figure its scoring.verify block measured
    measured = (recognizer.card.verify["measured"]["val_top1"] if recognizer.verifies
                else card["val_top1"])
    assert abs(top1 - measured) <= 1 / len(crops) + 1e-9
    assert top1 >= 0.6


def test_scores_are_a_distribution_over_the_labels(recognizer, shared_data):
    crops = [read_photo(f) for f in _val(shared_data)["Oatly-Oat-Milk"][:2]]
    s = recognizer.scores(crops)
    assert s.shape == (2, len(recognizer.labels)) and s.dtype == np.float32
    assert np.allclose(s.sum(axis=1), 1.0, atol=1e-5) and (s >= 0).all()
    assert recognizer.labels == recognizer.card.labels
    assert "Oatly-Oat-Milk" in recognizer.labels


def test_embeddings_are_unit_vectors_and_repeatable_for_any_crop_size(recognizer, shared_data):
    photo = read_photo(_val(shared_data)["Oatly-Oat-Milk"][0])
    crops = [photo, photo[40:300, 100:220].copy(), np.ascontiguousarray(photo[::-1]),
             np.full((7, 3, 3), 200, np.uint8)]
    first = recognizer.embed(crops)
    assert first.shape == (4, recognizer.embedding_dim) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, recognizer.embed(crops))
    assert np.array_equal(first[1:2], recognizer.embed([crops[1]]))      # batch-independent
    assert float(first[0] @ first[3]) < 0.9                               # different crops differ
    assert recognizer.embed([]).shape == (0, recognizer.embedding_dim)


@pytest.mark.parametrize("crop, what", [
    (np.zeros((10, 10), np.uint8), r"shape \(10, 10\)"),
    (np.zeros((10, 10, 3), np.float32), "float32"),
    (np.zeros((0, 10, 3), np.uint8), r"shape \(0, 10, 3\)"),
    ("photo.jpg", "got str"),
])
def test_a_bad_crop_is_refused_naming_its_index(recognizer, crop, what):
    good = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(RecognizerError, match=rf"crop 1: expected a BGR uint8 image.*{what}"):
        recognizer.classify([good, crop])


def test_version_names_model_and_gallery(recognizer):
    assert len(recognizer.version) == 16 and int(recognizer.version, 16) >= 0
    assert Recognizer.load().version == recognizer.version
    gallery = recognizer.new_gallery()
    gallery.add("test-sku", np.eye(1, recognizer.embedding_dim, 5, dtype=np.float32))
    assert recognizer.with_gallery(gallery).version != recognizer.version


def test_fewer_views_are_another_version_and_out_of_range_is_refused(recognizer, shared_data):
    crop = read_photo(_val(shared_data)["Oatly-Oat-Milk"][0])
    one = Recognizer.load(views=1)
    assert one.card.views == recognizer.card.views[:1] and len(recognizer.card.views) > 1
    assert one.version != recognizer.version
    assert not np.allclose(one.embed([crop]), recognizer.embed([crop]))
    with pytest.raises(RecognizerError, match="views=0: the card .*card.json has 6 views"):
        Recognizer.load(views=0)


def test_a_missing_model_file_is_refused_naming_it(model_copy):
    (model_copy / "model.onnx").unlink()
    with pytest.raises(RecognizerError, match=f"model file {model_copy / 'model.onnx'}: missing"):
        Recognizer.load(model_copy)


def test_a_missing_folder_or_card_is_refused_naming_it(tmp_path, model_copy):
    with pytest.raises(RecognizerError, match=f"model folder {tmp_path / 'none'}: missing"):
        Recognizer.load(tmp_path / "none")
    (model_copy / "card.json").unlink()
    with pytest.raises(RecognizerError, match=f"model card {model_copy / 'card.json'}: missing"):
        Recognizer.load(model_copy)


def test_a_corrupt_model_file_is_refused_naming_it(model_copy):
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(RecognizerError, match=f"model file {model_copy / 'model.onnx'}: corrupt"):
        Recognizer.load(model_copy)


def test_garbage_that_matches_its_card_hash_is_refused_by_onnxruntime(model_copy):
    """A card rewritten for a file that is not ONNX: the hash agrees, onnxruntime refuses."""
    from vision.recognizer import file_sha256
    (model_copy / "model.onnx").write_bytes(b"not an onnx model at all")
    card = json.loads((model_copy / "card.json").read_text())
    card["model"]["sha256"] = file_sha256(model_copy / "model.onnx")
    (model_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(RecognizerError, match=f"model file {model_copy / 'model.onnx'}: "
                                              f"onnxruntime cannot load it"):
        Recognizer.load(model_copy)


def test_a_malformed_card_is_refused_naming_it(model_copy):
    card = json.loads((model_copy / "card.json").read_text())
    del card["scoring"]
    (model_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(RecognizerError, match="model card .*card.json: field 'scoring' missing"):
        Recognizer.load(model_copy)


# ---- enrolment ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def holdout() -> Recognizer:
    return Recognizer.load(HOLDOUT_DIR)


def test_enrolled_skus_are_recognised_without_retraining_as_the_card_measured(
        holdout, shared_data, tmp_path):
    """The holdout model never saw its five held-out products. Enrolled from 5 train_* photos each (through a gallery file), they
    are read as the card's new-SKU figure says (the same path, within one photo)."""
    held = holdout.card.raw["training"]["holdout"]
    grocery = shared_data / "products" / "grocery"
    truth, tests = [], []
    for sku in held:
        files = sorted((grocery / sku).glob("val_*.jpg"))
        truth += [sku] * len(files)
        tests += [read_photo(p) for p in files]
    assert len(tests) == holdout.card.raw["metrics"]["new_sku"]["val_photos"] == 24
    assert set(held).isdisjoint(holdout.labels)                  # never trained on them
    gallery = holdout.new_gallery()
    for sku in held:
        enrol = sorted((grocery / sku).glob("train_*.jpg"))[:5]
        gallery.add(sku, holdout.embed([read_photo(p) for p in enrol]))
    path = tmp_path / "gallery.json"
    gallery.save(path)
    rec = Recognizer.load(HOLDOUT_DIR, gallery=path)
    assert rec.labels[-len(held):] == tuple(sorted(held))
    hits = sum(r[0][0] == t for r, t in zip(rec.classify(tests, top_k=1), truth))
    measured = holdout.card.raw["metrics"]["new_sku"]["top1"]
    assert hits >= 1 and abs(hits / len(tests) - measured) <= 1 / len(tests) + 1e-9


def test_gallery_round_trip_keeps_embeddings_and_hash(holdout, tmp_path):
    gallery = holdout.new_gallery()
    rng = np.random.default_rng(3)
    dim = holdout.embedding_dim
    gallery.add("sku-a", rng.normal(size=(3, dim)), [{"name": "a.jpg", "sha256": "0" * 64}])
    gallery.add("sku-b", rng.normal(size=(2, dim)))
    gallery.add("sku-a", rng.normal(size=(1, dim)))                       # appended
    digest = gallery.save(tmp_path / "g.json")
    loaded = ProductGallery.load(tmp_path / "g.json")
    assert loaded.skus() == ["sku-a", "sku-b"] and len(loaded.entries["sku-a"].embeddings) == 4
    assert loaded.sha256() == digest == gallery.sha256()
    assert np.array_equal(loaded.centroids(), gallery.centroids())
    assert np.allclose(np.linalg.norm(loaded.entries["sku-a"].embeddings, axis=1), 1, atol=1e-5)


def test_an_edited_gallery_is_refused_naming_file_and_field(holdout, tmp_path):
    gallery = holdout.new_gallery()
    gallery.add("sku-a", np.ones((1, holdout.embedding_dim)))
    path = tmp_path / "g.json"
    gallery.save(path)
    doc = json.loads(path.read_text())
    doc["entries"][0]["sku"] = "sku-z"
    path.write_text(json.dumps(doc))
    with pytest.raises(GalleryError, match=f"gallery {path}: field 'sha256' does not match"):
        ProductGallery.load(path)
    path.write_text("{not json")
    with pytest.raises(GalleryError, match=f"gallery {path}: not a readable JSON file"):
        ProductGallery.load(path)
    with pytest.raises(RecognizerError, match=f"gallery {tmp_path / 'none.json'}: no such file"):
        Recognizer.load(HOLDOUT_DIR, gallery=tmp_path / "none.json")


def test_a_gallery_of_another_model_or_a_known_class_is_refused(recognizer, holdout):
    other = holdout.new_gallery()
    other.add("sku-a", np.ones((1, holdout.embedding_dim)))
    with pytest.raises(RecognizerError, match="enrolled with model .* not this model"):
        recognizer.with_gallery(other)
    clash = recognizer.new_gallery()
    clash.add(recognizer.labels[0], np.ones((1, recognizer.embedding_dim)))
    with pytest.raises(RecognizerError, match="already knows as classes"):
        recognizer.with_gallery(clash)


# ---- colour ------------------------------------------------------------------------------------

def test_committed_cards_fuse_colour_chosen_on_train_photos_only(recognizer, holdout):
    """The holdout card chose the colour weight on train_* photos; the shipped card took it
    from there (never from val_*). Embeddings are the network's 1280 features then the colour
    histogram."""
    chosen = holdout.card.raw["scoring"]["colour"]
    assert chosen["weight"] > 0 and chosen["chosen"].startswith("on train_*")
    assert {r["colour_weight"] for r in holdout.card.raw["metrics"]["colour_grid"]} >= {0.0,
                                                                                      chosen["weight"]}
    shipped = recognizer.card.raw["scoring"]["colour"]
    assert shipped["weight"] == chosen["weight"] and "--colour-from" in shipped["chosen"]
    assert recognizer.embedding_dim == 1280 + 16 * 8 == holdout.embedding_dim


def test_colour_histogram_is_white_balanced_and_tells_hues_apart():
    """A crop and the same crop under a tinted light have the same colour vector (grey-world
    balance); the same crop with red and blue swapped does not."""
    rng = np.random.default_rng(5)
    crop = np.zeros((120, 90, 3), np.uint8)
    crop[:60] = (30, 60, 200)                                            # red top half (BGR)
    crop[60:] = (200, 180, 40)                                           # blue-ish bottom half
    crop = np.clip(crop.astype(int) + rng.integers(-8, 9, crop.shape), 0, 255).astype(np.uint8)
    tinted = np.clip(crop.astype(np.float32) * (0.8, 1.0, 1.15), 0, 255).astype(np.uint8)
    swapped = np.ascontiguousarray(crop[..., ::-1])
    h = colour_histograms([crop, tinted, swapped], 160, (1.0, 0.8))
    assert h.shape == (3, 128) and np.allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    assert float(h[0] @ h[1]) > 0.95
    assert float(h[0] @ h[2]) < 0.5


def test_colour_changes_the_embedding_and_a_gallery_without_it_is_refused(
        recognizer, shared_data, tmp_path):
    """The same network without the colour block (the card edited to weight 0) embeds in
    1280 floats; a gallery enrolled that way is refused by the colour model, naming what to do."""
    photo = read_photo(_val(shared_data)["Oatly-Oat-Milk"][0])
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, copy, ignore=shutil.ignore_patterns("holdout"))
    card = json.loads((copy / "card.json").read_text())
    del card["scoring"]["colour"]
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(RecognizerError, match=r"centroids \(31, 1408\) do not match 31 labels "
                                              r"x 1280 features"):
        Recognizer.load(copy)                   # prototypes made with colour, card without
    plain = np.load(DEFAULT_MODEL_DIR / "prototypes.npz")
    np.savez(copy / "prototypes.npz", mean=plain["mean"], centroids=plain["centroids"][:, :1280])
    from vision.recognizer import file_sha256
    card["prototypes"]["sha256"] = file_sha256(copy / "prototypes.npz")
    (copy / "card.json").write_text(json.dumps(card))
    cnn = Recognizer.load(copy)
    assert cnn.embedding_dim == 1280 and cnn.version != recognizer.version
    with_colour = recognizer.embed([photo])[0]
    # the fused vector's network part is the plain embedding scaled by 1/sqrt(1 + weight)
    weight = recognizer.card.colour_weight
    assert np.allclose(with_colour[:1280] * np.sqrt(1 + weight), cnn.embed([photo])[0], atol=1e-4)
    old = cnn.new_gallery()
    old.add("sku-a", cnn.embed([photo]))
    with pytest.raises(RecognizerError, match="holds 1280-float embeddings, the model makes 1408; "
                                              "enrol its products again"):
        recognizer.with_gallery(old)


def test_a_card_with_colour_out_of_range_is_refused(model_copy):
    card = json.loads((model_copy / "card.json").read_text())
    card["scoring"]["colour"]["bins"] = [16]
    (model_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(RecognizerError, match="card.json: .*scoring.colour .* out of range"):
        Recognizer.load(model_copy)
