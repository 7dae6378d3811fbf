"""Local-feature verification in the recogniser (docs/vision.md, "Local-feature verification"):
SIFT matches of a crop's centre to each top candidate's reference photos, counted as RANSAC
inliers, re-rank the candidates. Real photos from the shared data; onnxruntime and OpenCV only."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vision.product_gallery import GalleryError, LocalFeatures, ProductGallery
from vision.recognizer import (DEFAULT_MODEL_DIR, VERIFY_DEFAULTS, Recognizer, RecognizerError,
                               inlier_counts, local_features, read_photo)

HOLDOUT_DIR = DEFAULT_MODEL_DIR / "holdout"


def _photos(shared_data: Path, product: str, prefix: str) -> list[Path]:
    return sorted((shared_data / "products" / "grocery" / product).glob(f"{prefix}_*.jpg"))


@pytest.fixture(scope="module")
def holdout() -> Recognizer:
    return Recognizer.load(HOLDOUT_DIR)


def test_committed_cards_verify_with_their_references(holdout):
    shipped = Recognizer.load()
    for rec in (shipped, holdout):
        v = rec.card.verify
        assert rec.verifies and v["file"] == "references.npz"
        assert v["weight"] == VERIFY_DEFAULTS["weight"] and v["candidates"] == 3
        # every model class has its reference photos, and none of the held-out products
        assert sorted(rec._refs) == list(range(len(rec.card.labels)))
        assert all(1 <= len(refs) <= v["photos_per_class"] for refs in rec._refs.values())
    assert Recognizer.load(verify=False).version != shipped.version


def test_new_skus_enrolled_with_local_features_read_as_the_card_measured(
        holdout, shared_data, tmp_path):
    """The holdout model's five unseen products, enrolled from 5 train_* photos with their local
    features (as `cabinet vision enroll` does on a verifying card), through a gallery file: the
    24 val_* photos read as the card's verify.measured says (within one photo)."""
    held = holdout.card.raw["training"]["holdout"]
    gallery = holdout.new_gallery()
    truth, tests = [], []
    for sku in held:
        enrol = [read_photo(p) for p in _photos(shared_data, sku, "train")[:5]]
        gallery.add(sku, holdout.embed(enrol), local=holdout.local_features(enrol))
        files = _photos(shared_data, sku, "val")
        truth += [sku] * len(files)
        tests += [read_photo(p) for p in files]
    path = tmp_path / "gallery.json"
    gallery.save(path)
    rec = Recognizer.load(HOLDOUT_DIR, gallery=path)
    assert sorted(rec._refs) == list(range(len(rec.labels)))
    hits = sum(r[0][0] == t for r, t in zip(rec.classify(tests, top_k=1), truth))
    measured = holdout.card.verify["measured"]["new_sku_top1"]
    assert len(tests) == 24 and abs(hits / len(tests) - measured) <= 1 / len(tests) + 1e-9
    # the same photos without local features in the gallery: scored by the embedding alone
    plain = holdout.new_gallery()
    for sku in held:
        plain.add(sku, gallery.entries[sku].embeddings, normalise=False)
    before = sum(r[0][0] == t for r, t in zip(holdout.with_gallery(plain).classify(tests, top_k=1),
                                              truth))
    assert before < hits


def test_a_photo_matches_its_own_product_and_not_another(shared_data):
    """The same carton in two photos of its shoot is many inliers; two different products' photos
    stay under the noise floor (0)."""
    a, b = (read_photo(p) for p in _photos(shared_data, "Oatly-Natural-Oatghurt", "train")[:2])
    other = read_photo(_photos(shared_data, "Bravo-Apple-Juice", "train")[0])
    qa, qb, qo = local_features([a, b, other])
    same, diff = inlier_counts(qa, [qb, qo])
    assert same >= 2 * VERIFY_DEFAULTS["min_inliers"] and diff == 0
    assert inlier_counts(qa, [qb, qo]) == [same, diff]                   # deterministic
    assert len(qa.points) <= VERIFY_DEFAULTS["features"] and qa.descriptors.dtype == np.uint8


def test_local_features_round_trip_in_the_gallery_and_old_galleries_keep_their_hash(
        holdout, shared_data, tmp_path):
    photo = read_photo(_photos(shared_data, "Oatly-Natural-Oatghurt", "train")[0])
    emb, lf = holdout.embed([photo]), holdout.local_features([photo])
    plain, rich = holdout.new_gallery(), holdout.new_gallery()
    plain.add("sku-a", emb)
    rich.add("sku-a", emb, local=lf)
    assert "local" not in plain._body()["entries"][0]                   # format unchanged
    assert plain.sha256() != rich.sha256()
    digest = rich.save(tmp_path / "g.json")
    loaded = ProductGallery.load(tmp_path / "g.json")
    assert loaded.sha256() == digest
    got = loaded.entries["sku-a"].local[0]
    assert isinstance(got, LocalFeatures)
    assert np.array_equal(got.points, lf[0].points)
    assert np.array_equal(got.descriptors, lf[0].descriptors)
    doc = json.loads((tmp_path / "g.json").read_text())
    doc["entries"][0]["local"][0]["descriptors"] = "not base64!"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(GalleryError, match="sha256"):
        ProductGallery.load(tmp_path / "bad.json")


def test_missing_or_corrupt_references_are_refused_naming_the_file(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, copy, ignore=shutil.ignore_patterns("holdout"))
    refs = copy / "references.npz"
    refs.write_bytes(refs.read_bytes()[:-10])
    with pytest.raises(RecognizerError, match="references.npz: corrupt"):
        Recognizer.load(copy)
    refs.unlink()
    with pytest.raises(RecognizerError, match="references.npz: missing"):
        Recognizer.load(copy)
    Recognizer.load(copy, verify=False)                                  # still loads without


def test_scope_enrolled_verifies_only_crops_an_enrolled_sku_contests(holdout, shared_data):
    """The shipped cards verify a crop only when an enrolled SKU is among its candidates (the
    ~100 ms a crop is paid where it buys the new-SKU gain): with no gallery, every crop scores
    as without verification; with the held-out products enrolled, a crop of one of them is
    re-ranked, and the same card with scope 'all' re-ranks crops of trained products too."""
    import dataclasses
    assert holdout.card.verify["scope"] == "enrolled"
    known = [read_photo(p) for p in _photos(shared_data, "Arla-Ecological-Sour-Cream", "val")
             + _photos(shared_data, "Yoggi-Vanilla-Yoghurt", "val")]
    plain = Recognizer.load(HOLDOUT_DIR, verify=False)
    assert np.allclose(holdout.scores(known), plain.scores(known), atol=1e-6)
    import copy
    everything = copy.copy(holdout)  # the same recogniser, its card's scope 'all'
    everything.card = dataclasses.replace(holdout.card,
                                          verify={**holdout.card.verify, "scope": "all"})
    assert not np.allclose(everything.scores(known), plain.scores(known), atol=1e-6)
    sku = holdout.card.raw["training"]["holdout"][0]
    gallery = holdout.new_gallery()
    enrol = [read_photo(p) for p in _photos(shared_data, sku, "train")[:5]]
    gallery.add(sku, holdout.embed(enrol), local=holdout.local_features(enrol))
    with_new = holdout.with_gallery(gallery)
    new = [read_photo(p) for p in _photos(shared_data, sku, "val")]
    unverified = plain.with_gallery(gallery)
    assert not np.allclose(with_new.scores(new), unverified.scores(new), atol=1e-6)


def test_an_unknown_verify_scope_is_refused_naming_the_choices(tmp_path):
    card = json.loads((HOLDOUT_DIR / "card.json").read_text())
    card["scoring"]["verify"]["scope"] = "some"
    for f in ("model.onnx", "prototypes.npz", "references.npz"):
        shutil.copy(HOLDOUT_DIR / f, tmp_path / f)
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(RecognizerError, match=re.escape("scope all|enrolled")):
        Recognizer.load(tmp_path)
