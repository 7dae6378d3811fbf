"""Which product is this? The shipped ONNX model, run with onnxruntime, never torch.

A model folder (default: `models/` at the repository root) holds what travels together:

- `card.json`, the model card: file names and their sha256, labels (product names, the folder
  names of products/grocery), input size, how scores are made, and how the model was trained
  (command, data hash, metrics, date);
- the ONNX file (input `images`: N x 3 x S x S RGB in [0, 1]; outputs `probs`, N x C softmax
  over the labels, and `features`, N x D pooled features before the classifier);
- `prototypes.npz`: `mean` (D, the training photos' mean feature) and `centroids` (C x D, each
  class's mean embedding over its training photos).

A crop (BGR uint8, any size) is resized so its short side is S and centre-cropped to S x S (the
training photos' validation transform). The card's `views` (centre zoom, mirror) are each run
and the outputs averaged (test-time augmentation). The embedding is the features minus `mean`,
L2-normalised (centring makes cosine similarity discriminative for features that are all
positive). A card whose `scoring` has a `colour` block appends the crop's colour (a hue x
saturation histogram of the crop after grey-world white balance, averaged over the views' centre
zooms, square-rooted and L2-normalised) weighted by sqrt(colour.weight), and normalises again:
cosine similarity of two embeddings is then (cnn + weight * colour) / (1 + weight). Colour is
product-agnostic: it is what separates look-alike cartons the network never trained on
(docs/vision.md has the measurement and how the weight was chosen, on train_* photos only).

Scores over the model's classes plus the enrolled SKUs (vision/product_gallery.py): cosine
similarity to each class centroid and each enrolled SKU's mean embedding, divided by a
temperature T and soft-maxed over all of them (q); the model's classes then share their mass
between the classifier's own softmax p and q with the weight w from the card:
`score[c] = w * q_model * p[c] + (1 - w) * q[c]` for a model class, `score[g] = q[g]` for an
enrolled SKU. Scores sum to 1. w and T were chosen on the val_* photos (docs/vision.md).

A crop whose short side is under `min_crop_px` (MIN_CROP_PX unless the card's `input` names
`min_crop_px`) gets no answer from `classify` (an empty ranking): there are too few pixels in it
to name a product, and a name made up from them is no evidence. Measured on the val_* photos
shrunk to a short side of n px (`python -m vision.recognizer --resolution`, docs/vision.md):
model C (2026-11-29) read top-1 0.35 at 16 px, 0.48 at 24, 0.56 at 32, 0.63 at 48, 0.69 at 64,
0.79 at 96, 0.78 at 160 (with colour 0.38, 0.49, 0.55, 0.62, 0.70, 0.79, 0.78): 64 px was the
smallest side within 0.1 of the full-resolution figure. The soup S3 (2026-11-30) reads 0.48,
0.65, 0.71, 0.79, 0.81, 0.83, 0.87: 48 px would now pass that rule; the floor stays 64 px,
which holds for both models (a floor that moves with each model would change what older
bundles' recognisers were asked). A live shelf camera that
shows items smaller than that (the simulated 640x480 one: 20-38 px) gets occupancy and change
from vision.diff, and no identities.

A card whose `scoring` has a `verify` block re-ranks a crop's top candidates by local features
(docs/vision.md, "Local-feature verification"): SIFT keypoints of the crop's centre, matched
(ratio test) to each candidate's reference photos (for a model class a few train_* photos,
stored as keypoints and descriptors in the block's `file`, committed beside the model; for an
enrolled SKU its enrolment photos, stored in the gallery), and the matches that one homography
explains (RANSAC inliers) counted. A candidate's score is multiplied by exp(weight * min(v,
cap)), v the second-best inlier count over its reference photos, and the row renormalised.
Only the top `candidates` whose score is within a factor exp(weight * cap) of the best are
verified, and only when there are two of them and each has reference photos (a gallery
enrolled without local features is scored as before). With `scope` "enrolled" (the shipped
cards) a crop is verified only when an enrolled SKU is among those candidates: verification
costs ~100 ms a crop, which on every crop would put a shelf image of 8 crops at ~0.8 s and
break the 1 s door-closed-to-charge budget; the new-SKU gain is kept, the 2 points it adds
between trained classes are given up ("all" verifies every crop).

`version` is a short sha256 over the card, the model, the prototypes, the views, the smallest
crop named, the verification references and the gallery, so a session bundle names exactly the
recogniser that read it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vision.product_gallery import GalleryError, LocalFeatures, ProductGallery

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "models"
CARD_NAME = "card.json"
MIN_CROP_PX = 64   # short side below which a crop is not named (module doc: measured on val_*)


COLOUR_BINS = (16, 8)  # hue x saturation bins of the colour histogram (value/brightness left out)
REFERENCES_NAME = "references.npz"
# Local-feature verification: how the keypoints are taken (measured in docs/vision.md) and the
# re-ranking settings `python -m vision.recognizer --references` writes into a card (weight
# chosen on train_* photos only; see docs/vision.md).
VERIFY_DEFAULTS = {"candidates": 3, "weight": 0.1, "cap": 60, "stat": "second", "side": 240,
                   "zoom": 0.7, "features": 400, "ratio": 0.8, "ransac_px": 5.0,
                   "ransac_iters": 200, "min_inliers": 10, "photos_per_class": 5,
                   "method": "usac_fast", "scope": "enrolled"}
VERIFY_SCOPES = ("all", "enrolled")   # verify every crop, or only those an enrolled SKU contests
HOMOGRAPHY_METHODS = {"ransac": cv2.RANSAC, "usac_fast": cv2.USAC_FAST}


class RecognizerError(ValueError):
    """A model, gallery or crop the recogniser cannot use; the message names it and what to do."""


@dataclass(frozen=True)
class ModelCard:
    model_file: str
    model_sha256: str
    prototypes_file: str
    prototypes_sha256: str
    labels: tuple[str, ...]
    imgsz: int
    softmax_weight: float
    temperature: float
    views: tuple[tuple[float, bool], ...]
    raw: dict
    min_crop_px: int = MIN_CROP_PX
    colour_weight: float = 0.0                 # 0: no colour block (CNN embedding alone)
    colour_bins: tuple[int, int] = COLOUR_BINS
    verify: dict | None = None                 # scoring.verify: local-feature re-ranking

    @property
    def colour_dim(self) -> int:
        return self.colour_bins[0] * self.colour_bins[1] if self.colour_weight > 0 else 0

    def zooms(self) -> tuple[float, ...]:
        """The views' distinct centre zooms, in card order (what colour is averaged over)."""
        return tuple(dict.fromkeys(z for z, _ in self.views))

    @classmethod
    def read(cls, path: Path) -> "ModelCard":
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise RecognizerError(f"model card {path}: missing; train a model with `cabinet "
                                  f"vision train` or restore the models/ folder from git") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecognizerError(f"model card {path}: not readable JSON ({e}); restore it "
                                  f"from git or train again") from None
        try:
            scoring = doc["scoring"]
            colour = scoring.get("colour") or {}
            card = cls(
                model_file=str(doc["model"]["file"]),
                model_sha256=str(doc["model"]["sha256"]),
                prototypes_file=str(doc["prototypes"]["file"]),
                prototypes_sha256=str(doc["prototypes"]["sha256"]),
                labels=tuple(str(x) for x in doc["labels"]),
                imgsz=int(doc["input"]["size"]),
                softmax_weight=float(scoring["softmax_weight"]),
                temperature=float(scoring["temperature"]),
                views=tuple((float(z), bool(f)) for z, f in scoring["views"]),
                raw=doc,
                min_crop_px=int(doc["input"].get("min_crop_px", MIN_CROP_PX)),
                colour_weight=float(colour.get("weight", 0.0)),
                colour_bins=tuple(int(b) for b in colour.get("bins", COLOUR_BINS)),
                verify=_verify_block(scoring.get("verify")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RecognizerError(f"model card {path}: field {e} missing or malformed; "
                                  f"restore it from git or train again") from None
        if not card.labels or card.imgsz < 16 or card.temperature <= 0 \
                or not 0.0 <= card.softmax_weight <= 1.0 or not card.views \
                or not all(0.2 <= z <= 1.0 for z, _ in card.views) or card.min_crop_px < 1 \
                or not 0.0 <= card.colour_weight <= 100.0 or len(card.colour_bins) != 2 \
                or not all(2 <= b <= 64 for b in card.colour_bins):
            raise RecognizerError(f"model card {path}: labels, input.size, input.min_crop_px, "
                                  f"scoring.temperature, scoring.softmax_weight, scoring.views or "
                                  f"scoring.colour (weight 0-100, two bin counts 2-64) out of "
                                  f"range")
        return card


def _verify_block(block) -> dict | None:
    """A card's scoring.verify with every setting typed (defaults for those it omits)."""
    if block is None:
        return None
    out = {**VERIFY_DEFAULTS, **block}
    for key in ("candidates", "cap", "side", "features", "ransac_iters", "min_inliers",
                "photos_per_class"):
        out[key] = int(out[key])
    for key in ("weight", "zoom", "ratio", "ransac_px"):
        out[key] = float(out[key])
    out["file"], out["sha256"] = str(block["file"]), str(block["sha256"])
    if not (2 <= out["candidates"] <= 10 and 0 < out["weight"] <= 10 and out["cap"] >= 1
            and 0.2 <= out["zoom"] <= 1 and 0 < out["ratio"] < 1
            and out["stat"] in ("max", "second") and out["method"] in HOMOGRAPHY_METHODS
            and out["scope"] in VERIFY_SCOPES):
        raise ValueError("'verify' (candidates 2-10, weight 0-10, cap >= 1, zoom 0.2-1, ratio 0-1, "
                         f"stat max|second, method {'|'.join(HOMOGRAPHY_METHODS)}, "
                         f"scope {'|'.join(VERIFY_SCOPES)})")
    return out


_SIFT: dict[int, object] = {}


def local_features(crops: Sequence[np.ndarray], side: int = VERIFY_DEFAULTS["side"],
                   zoom: float = VERIFY_DEFAULTS["zoom"],
                   features: int = VERIFY_DEFAULTS["features"]) -> list[LocalFeatures]:
    """Per crop, SIFT keypoints (K x 2 float32, pixels of the resized centre) and descriptors
    (K x 128 uint8; OpenCV's SIFT values are whole numbers 0-255) of its centre `zoom` (each
    side), grey, short side resized to `side`, at most `features` keypoints. The product is in
    the middle of a crop; its edges are shelf or hand."""
    check_crops(crops)
    sift = _SIFT.get(features)
    if sift is None:
        sift = _SIFT[features] = cv2.SIFT_create(nfeatures=features)
    out = []
    for crop in crops:
        grey = cv2.cvtColor(centre(crop, zoom), cv2.COLOR_BGR2GRAY)
        f = side / min(grey.shape[:2])
        if f != 1:
            grey = cv2.resize(grey, None, fx=f, fy=f,
                              interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        kps, desc = sift.detectAndCompute(grey, None)
        pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        desc = (np.zeros((0, 128), np.uint8) if desc is None
                else np.clip(np.rint(desc), 0, 255).astype(np.uint8))
        out.append(LocalFeatures(pts, desc))
    return out


def _ratio_matches(query: LocalFeatures, refs: Sequence[LocalFeatures],
                   ratio: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per reference, (query points, reference points) of the descriptor matches that pass
    Lowe's ratio test (nearest under `ratio` times the second nearest, in that photo); one
    matrix product for all references."""
    out = [(np.zeros((0, 2), np.float32),) * 2 for _ in refs]
    live = [k for k, r in enumerate(refs) if len(r.descriptors) >= 2]
    if len(query.descriptors) < 2 or not live:
        return out
    q = query.descriptors.astype(np.float32)
    r = np.concatenate([refs[k].descriptors for k in live]).astype(np.float32)
    d2 = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2 * (q @ r.T)
    at = 0
    for k in live:
        n = len(refs[k].descriptors)
        block = d2[:, at:at + n]
        at += n
        two = np.partition(block, 1, axis=1)[:, :2]
        good = np.flatnonzero(two[:, 0] < ratio * ratio * two[:, 1])
        out[k] = (query.points[good], refs[k].points[block[good].argmin(axis=1)])
    return out


def _inliers(src: np.ndarray, dst: np.ndarray, ransac_px: float, min_inliers: int,
             ransac_iters: int, method: str = VERIFY_DEFAULTS["method"]) -> int:
    if len(src) < max(4, min_inliers):
        return 0
    _, mask = cv2.findHomography(src, dst, HOMOGRAPHY_METHODS[method], ransac_px,
                                 maxIters=ransac_iters)
    n = int(mask.sum()) if mask is not None else 0
    return n if n >= min_inliers else 0


def inlier_counts(query: LocalFeatures, refs: Sequence[LocalFeatures],
                  ratio: float = VERIFY_DEFAULTS["ratio"],
                  ransac_px: float = VERIFY_DEFAULTS["ransac_px"],
                  min_inliers: int = VERIFY_DEFAULTS["min_inliers"],
                  ransac_iters: int = VERIFY_DEFAULTS["ransac_iters"],
                  method: str = VERIFY_DEFAULTS["method"]) -> list[int]:
    """Per reference photo, the query's descriptor matches that pass the ratio test and that one
    homography explains (inliers within `ransac_px` of the homography that OpenCV's `method`
    finds, RANSAC or USAC_FAST, at most `ransac_iters` samples); 0
    when under `min_inliers` (the noise floor: 9 inliers is the 90th percentile of pairs of
    photos of two different products, docs/vision.md). Deterministic (OpenCV's RANSAC seeds
    its own generator)."""
    return [_inliers(a, b, ransac_px, min_inliers, ransac_iters, method)
            for a, b in _ratio_matches(query, refs, ratio)]


def support(query: LocalFeatures, groups: Sequence[Sequence[LocalFeatures]], v: dict) -> list[int]:
    """Per group (one candidate's reference photos), the best (`stat` max) or second-best
    (`stat` second) of inlier_counts over its photos, computed with as few RANSAC fits as give
    the same answer: photos in decreasing order of ratio matches, stopping when the next photo
    has no more matches than the count it would have to beat (inliers <= matches)."""
    flat = [ref for g in groups for ref in g]
    pairs = _ratio_matches(query, flat, v["ratio"])
    need = 2 if v["stat"] == "second" else 1
    out, at = [], 0
    for g in groups:
        mine = sorted(pairs[at:at + len(g)], key=lambda ab: -len(ab[0]))
        at += len(g)
        best: list[int] = []
        for src, dst in mine:
            floor = best[need - 1] if len(best) >= need else 0
            if len(src) < max(4, v["min_inliers"]) or len(src) <= floor:
                break
            best = sorted(best + [_inliers(src, dst, v["ransac_px"], v["min_inliers"],
                                           v["ransac_iters"], v["method"])],
                          reverse=True)[:need]
        best += [0] * need
        out.append(best[need - 1])
    return out


def check_crops(crops: Sequence[np.ndarray]) -> None:
    """RecognizerError naming the first crop that is not a BGR uint8 H x W x 3 image."""
    for i, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 \
                or crop.shape[2] != 3 or crop.shape[0] < 1 or crop.shape[1] < 1:
            what = (f"{crop.dtype} array of shape {crop.shape}" if isinstance(crop, np.ndarray)
                    else type(crop).__name__)
            raise RecognizerError(f"crop {i}: expected a BGR uint8 image (H x W x 3), got {what}")


def preprocess(crops: Sequence[np.ndarray], imgsz: int) -> np.ndarray:
    """BGR uint8 crops of any size -> N x 3 x S x S float32 RGB in [0, 1] (short side to S,
    centre crop)."""
    check_crops(crops)
    out = np.empty((len(crops), 3, imgsz, imgsz), np.float32)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        scale = imgsz / min(h, w)
        nh, nw = max(imgsz, round(h * scale)), max(imgsz, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(crop, (nw, nh), interpolation=interp)
        top, left = (nh - imgsz) // 2, (nw - imgsz) // 2
        img = img[top:top + imgsz, left:left + imgsz, ::-1]            # BGR -> RGB
        out[i] = img.transpose(2, 0, 1) * np.float32(1 / 255)
    return out


def centre(crop: np.ndarray, zoom: float) -> np.ndarray:
    """The centre `zoom` fraction of a crop (each side), at least one pixel."""
    if zoom >= 1.0:
        return crop
    h, w = crop.shape[:2]
    ch, cw = max(1, round(h * zoom)), max(1, round(w * zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    return crop[top:top + ch, left:left + cw]


def _grey_world(img: np.ndarray) -> np.ndarray:
    """White balance: each channel scaled so the three channel means are equal."""
    x = img.astype(np.float32)
    means = x.reshape(-1, 3).mean(axis=0)
    x *= means.mean() / np.maximum(means, 1.0)
    return np.clip(x, 0, 255).astype(np.uint8)


def colour_histograms(crops: Sequence[np.ndarray], imgsz: int, zooms: Sequence[float],
                      bins: tuple[int, int] = COLOUR_BINS) -> np.ndarray:
    """N x (bins[0] * bins[1]) float32 unit vectors: per crop (short side resized to imgsz,
    grey-world balanced), the hue x saturation histogram of each centre zoom, normalised to sum
    1, averaged over the zooms and square-rooted (so cosine similarity is the Bhattacharyya
    coefficient). Nothing here knows a product: it is the crop's colour."""
    check_crops(crops)
    out = np.empty((len(crops), bins[0] * bins[1]), np.float32)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        scale = imgsz / min(h, w)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=interp)
        hsv = cv2.cvtColor(_grey_world(img), cv2.COLOR_BGR2HSV)     # per pixel: zoom after
        acc = np.zeros(bins[0] * bins[1], np.float64)
        for zoom in zooms:
            part = np.ascontiguousarray(centre(hsv, zoom))
            hist = cv2.calcHist([part], [0, 1], None, list(bins), [0, 180, 0, 256]).ravel()
            acc += hist / max(float(hist.sum()), 1.0)
        v = np.sqrt(acc / len(zooms))
        out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def fuse_colour(embeddings: np.ndarray, colours: np.ndarray, weight: float) -> np.ndarray:
    """[embedding, sqrt(weight) * colour], L2-normalised (both parts are unit vectors), so the
    cosine of two fused vectors is (cnn cosine + weight * colour cosine) / (1 + weight)."""
    if weight <= 0:
        return embeddings.astype(np.float32)
    return _normalise(np.concatenate([embeddings, np.sqrt(weight) * colours], axis=1))


def run_views(session, crops: Sequence[np.ndarray], imgsz: int,
              views: Sequence[tuple[float, bool]], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N x C probs, N x D raw features) of an ONNX session, averaged over the test-time views
    (centre zoom, mirror); crops are checked first, so a bad one is named by its index."""
    check_crops(crops)
    probs, feats = [], []
    for start in range(0, len(crops), batch):
        chunk = crops[start:start + batch]
        parts = []
        for zoom, flip in views:
            x = preprocess([np.ascontiguousarray(centre(c, zoom)) for c in chunk], imgsz)
            parts.append(np.ascontiguousarray(x[..., ::-1]) if flip else x)
        p, f = session.run(["probs", "features"], {"images": np.concatenate(parts)})
        n = len(chunk)
        probs.append(p.reshape(len(views), n, -1).mean(axis=0))
        feats.append(f.reshape(len(views), n, -1).mean(axis=0))
    return np.concatenate(probs).astype(np.float32), np.concatenate(feats).astype(np.float32)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Recognizer:
    """Product recognition on crops: `embed`, `classify`, `scores`; built by `load`."""

    def __init__(self, session, card: ModelCard, mean: np.ndarray, centroids: np.ndarray,
                 gallery: ProductGallery | None, model_dir: Path, base_hash: str,
                 references: dict[int, list[LocalFeatures]] | None = None) -> None:
        self._session = session
        self._references = references or {}
        self.card = card
        self.model_dir = model_dir
        self._mean = mean
        self._centroids = centroids
        self._base_hash = base_hash
        self.gallery = gallery
        self._gallery_centroids = gallery.centroids() if gallery else np.zeros(
            (0, len(mean) + card.colour_dim), np.float32)
        self.embedding_dim = len(mean) + card.colour_dim
        self.labels: tuple[str, ...] = card.labels + tuple(gallery.skus() if gallery else ())
        self._refs = dict(self._references)          # label index -> reference photos' features
        if gallery is not None:
            for k, sku in enumerate(gallery.skus()):
                if gallery.entries[sku].local:
                    self._refs[len(card.labels) + k] = list(gallery.entries[sku].local)
        gallery_hash = gallery.sha256() if gallery else ""
        self.version = hashlib.sha256(f"{base_hash}:{gallery_hash}".encode()).hexdigest()[:16]

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: Path | None = None, *, gallery: Path | ProductGallery | None = None,
             threads: int = 1, views: int | None = None,
             verify: bool = True) -> "Recognizer":
        """The model in `model_dir` (default: the committed models/), with the SKUs enrolled in
        `gallery` (a file or a loaded ProductGallery; none by default). `views` keeps only the
        card's first N test-time views (faster, less accurate: docs/vision.md has the figures);
        the version says which were used. `verify=False` leaves out the card's local-feature
        verification (faster; the version differs)."""
        model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        if not model_dir.is_dir():
            raise RecognizerError(f"model folder {model_dir}: missing; train a model with "
                                  f"`cabinet vision train --out {model_dir}`")
        card_path = model_dir / CARD_NAME
        card = ModelCard.read(card_path)
        if views is not None:
            if not 1 <= views <= len(card.views):
                raise RecognizerError(f"views={views}: the card {card_path} has "
                                      f"{len(card.views)} views; ask for 1 to {len(card.views)}")
            card = dataclasses.replace(card, views=card.views[:views])
        if not verify:
            card = dataclasses.replace(card, verify=None)
        model_path = model_dir / card.model_file
        proto_path = model_dir / card.prototypes_file
        for path, expected in ((model_path, card.model_sha256), (proto_path, card.prototypes_sha256)):
            if not path.is_file():
                raise RecognizerError(f"model file {path}: missing (named by {card_path}); "
                                      f"restore models/ from git or train again")
            if file_sha256(path) != expected:
                raise RecognizerError(f"model file {path}: corrupt (its sha256 differs from the "
                                      f"one in {card_path}); restore it from git or train again")
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise RecognizerError(f"model file {model_path}: onnxruntime cannot load it "
                                  f"({type(e).__name__}); restore it from git or train again") from None
        outputs = {o.name for o in session.get_outputs()}
        if {"probs", "features"} - outputs:
            raise RecognizerError(f"model file {model_path}: outputs {sorted(outputs)}, expected "
                                  f"'probs' and 'features'; export it with `cabinet vision train`")
        try:
            with np.load(proto_path) as npz:
                mean = npz["mean"].astype(np.float32)
                centroids = npz["centroids"].astype(np.float32)
        except (OSError, KeyError, ValueError) as e:
            raise RecognizerError(f"model file {proto_path}: unreadable prototypes ({e})") from None
        dim = len(mean) + card.colour_dim
        if centroids.shape != (len(card.labels), dim):
            raise RecognizerError(f"model file {proto_path}: centroids {centroids.shape} do not "
                                  f"match {len(card.labels)} labels x {dim} features "
                                  f"({len(mean)} network + {card.colour_dim} colour)")
        base = hashlib.sha256()
        for part in (card_path, model_path, proto_path):
            base.update(file_sha256(part).encode())
        base.update(repr(card.views).encode())
        base.update(f"min_crop_px={card.min_crop_px}".encode())
        references = None
        if card.verify is not None:
            references = _read_references(model_dir, card, card_path)
            base.update(f"verify={sorted(card.verify.items())}".encode())
        loaded = None
        if isinstance(gallery, ProductGallery):
            loaded = gallery
        elif gallery is not None:
            try:
                loaded = ProductGallery.load(Path(gallery))
            except GalleryError as e:
                raise RecognizerError(str(e)) from None
        recognizer = cls(session, card, mean, centroids, None, model_dir, base.hexdigest(),
                         references)
        return recognizer.with_gallery(loaded) if loaded is not None else recognizer

    def with_gallery(self, gallery: ProductGallery | None) -> "Recognizer":
        """The same model with another gallery (checked to be made by this model)."""
        if gallery is not None:
            if gallery.model_sha256 != self.card.model_sha256:
                raise RecognizerError(
                    f"product gallery was enrolled with model {gallery.model_sha256[:12]}, not "
                    f"this model ({self.card.model_sha256[:12]} in {self.model_dir}); enrol "
                    f"its products again with `cabinet vision enroll`")
            if gallery.dim != self.embedding_dim:
                raise RecognizerError(f"product gallery holds {gallery.dim}-float embeddings, "
                                      f"the model makes {self.embedding_dim}; enrol its "
                                      f"products again with `cabinet vision enroll`")
            clash = set(gallery.skus()) & set(self.card.labels)
            if clash:
                raise RecognizerError(f"product gallery enrols {sorted(clash)}, which the model "
                                      f"already knows as classes; remove them from the gallery")
        return Recognizer(self._session, self.card, self._mean, self._centroids, gallery,
                          self.model_dir, self._base_hash, self._references)

    def new_gallery(self) -> ProductGallery:
        return ProductGallery(model_sha256=self.card.model_sha256, dim=self.embedding_dim)

    def enrol(self, gallery: ProductGallery, sku: str, crops: Sequence[np.ndarray],
              photos: Sequence[dict] = ()) -> None:
        """Add photos of `sku` to `gallery` as this recogniser reads them: their embeddings,
        and their local features when the card verifies (the one way enrolment is done)."""
        crops = list(crops)
        gallery.add(sku, self.embed(crops), list(photos),
                    local=self.local_features(crops) if self.verifies else ())

    # ---- inference --------------------------------------------------------------------------
    def _forward(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N x C softmax, N x D raw features), averaged over the card's views."""
        crops = list(crops)
        if not crops:
            return (np.zeros((0, len(self.card.labels)), np.float32),
                    np.zeros((0, len(self._mean)), np.float32))
        return run_views(self._session, crops, self.card.imgsz, self.card.views)

    def _embedding(self, crops: list, feats: np.ndarray) -> np.ndarray:
        emb = _normalise(feats - self._mean)
        if self.card.colour_dim == 0 or not crops:
            return emb if crops else np.zeros((0, self.embedding_dim), np.float32)
        colours = colour_histograms(crops, self.card.imgsz, self.card.zooms(),
                                    self.card.colour_bins)
        return fuse_colour(emb, colours, self.card.colour_weight)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N x D float32 embeddings, L2-normalised: the network's features centred on the
        training photos' mean, then (when the card has a colour block) the crop's colour."""
        crops = list(crops)
        _, feats = self._forward(crops)
        return self._embedding(crops, feats)

    @property
    def verifies(self) -> bool:
        """Whether the card's local-feature verification is on (enrolment then stores the
        photos' local features in the gallery)."""
        return self.card.verify is not None

    def local_features(self, crops: Sequence[np.ndarray]) -> list[LocalFeatures]:
        """The crops' local features as this card's verification takes them."""
        v = self.card.verify or VERIFY_DEFAULTS
        return local_features(list(crops), v["side"], v["zoom"], v["features"])

    def _verify(self, crops: list, out: np.ndarray) -> np.ndarray:
        """Re-rank each row's top candidates by geometric verification (module doc)."""
        v = self.card.verify
        reach = np.exp(-v["weight"] * v["cap"])
        for row, crop in enumerate(crops):
            top = np.argsort(-out[row], kind="stable")[:v["candidates"]]
            top = [int(j) for j in top if out[row, j] >= out[row, top[0]] * reach]
            if len(top) < 2 or any(j not in self._refs for j in top):
                continue
            if v["scope"] == "enrolled" and all(j < len(self.card.labels) for j in top):
                continue   # only the trained classes contest it: the network's ranking stands
            query = self.local_features([crop])[0]
            for j, n in zip(top, support(query, [self._refs[j] for j in top], v)):
                out[row, j] *= np.exp(v["weight"] * min(n, v["cap"]))
            out[row] /= out[row].sum()
        return out

    def scores(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """N x len(labels) scores (rows sum to 1) over the model's classes then enrolled SKUs."""
        crops = list(crops)
        probs, feats = self._forward(crops)
        emb = self._embedding(crops, feats)
        protos = np.concatenate([self._centroids, self._gallery_centroids])
        # (1 + colour weight) undoes fuse_colour's normalisation: the logit is (cnn cosine +
        # weight * colour cosine) / T, so T means the same with and without colour.
        logits = emb @ protos.T * (1 + self.card.colour_weight) / self.card.temperature
        logits -= logits.max(axis=1, keepdims=True)
        q = np.exp(logits)
        q /= q.sum(axis=1, keepdims=True)
        c, w = len(self.card.labels), self.card.softmax_weight
        out = q.copy()
        q_model = q[:, :c].sum(axis=1, keepdims=True)
        out[:, :c] = w * q_model * probs + (1 - w) * q[:, :c]
        if self.card.verify is not None:
            out = self._verify(crops, out.astype(np.float64))
        return out.astype(np.float32)

    @property
    def min_crop_px(self) -> int:
        """The smallest short side (px) of a crop that `classify` names."""
        return self.card.min_crop_px

    def classify(self, crops: Sequence[np.ndarray], top_k: int = 3) -> list[list[tuple[str, float]]]:
        """Per crop, the top_k (product name or SKU, score) pairs, best first; an empty list
        for a crop under `min_crop_px` on its short side (too few pixels to name it; such
        crops are not run through the model)."""
        if top_k < 1:
            raise RecognizerError(f"classify: top_k must be at least 1, got {top_k}")
        crops = list(crops)
        check_crops(crops)
        readable = [i for i, c in enumerate(crops) if min(c.shape[:2]) >= self.min_crop_px]
        out: list[list[tuple[str, float]]] = [[] for _ in crops]
        if not readable:
            return out
        s = self.scores([crops[i] for i in readable])
        order = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
        for row, i in enumerate(readable):
            out[i] = [(self.labels[j], float(s[row, j])) for j in order[row]]
        return out


def _read_references(model_dir: Path, card: ModelCard, card_path: Path) -> dict[int, list]:
    """label index -> its reference photos' LocalFeatures, from the card's verify file."""
    path = model_dir / card.verify["file"]
    if not path.is_file():
        raise RecognizerError(f"model file {path}: missing (named by {card_path} scoring.verify); "
                              f"restore models/ from git or run `python -m vision.recognizer "
                              f"--references --model {model_dir}`")
    if file_sha256(path) != card.verify["sha256"]:
        raise RecognizerError(f"model file {path}: corrupt (its sha256 differs from the one in "
                              f"{card_path} scoring.verify); restore it from git")
    try:
        with np.load(path) as npz:
            points, desc = npz["points"].astype(np.float32), npz["descriptors"].astype(np.uint8)
            start, label = npz["photo_start"], npz["photo_label"]
    except (OSError, KeyError, ValueError) as e:
        raise RecognizerError(f"model file {path}: unreadable references ({e})") from None
    if desc.shape[1:] != (128,) or len(points) != len(desc) or len(start) != len(label) + 1 \
            or (len(label) and not 0 <= label.min() <= label.max() < len(card.labels)):
        raise RecognizerError(f"model file {path}: references do not fit {len(card.labels)} "
                              f"labels (points, descriptors, photo_start, photo_label)")
    out: dict[int, list] = {}
    for k, lab in enumerate(label.tolist()):
        a, b = int(start[k]), int(start[k + 1])
        out.setdefault(int(lab), []).append(LocalFeatures(points[a:b], desc[a:b]))
    return out


def write_references(model_dir: Path, photos: Path, settings: dict | None = None) -> dict:
    """Store the verification references of a model folder and name them in its card: per label
    `photos_per_class` of its <label>/train_* photos, evenly spaced through the sorted series
    (first and last included: one shoot of a product runs through its series), their
    local_features in `references.npz`, and the card's scoring.verify block (settings, file,
    sha256, photos). Returns the block."""
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_NAME
    card = ModelCard.read(card_path)
    v = {**VERIFY_DEFAULTS, **(settings or {})}
    from vision.data import PHOTO_SUFFIXES
    points, desc, start, label, names = [], [], [0], [], []
    for k, lab in enumerate(card.labels):
        series = sorted(f for f in (Path(photos) / lab).glob("train_*")
                        if f.suffix.lower() in PHOTO_SUFFIXES)
        if not series:
            raise RecognizerError(f"photos folder {photos}: no {lab}/train_* photos")
        pick = sorted(set(np.linspace(0, len(series) - 1, min(v["photos_per_class"], len(series)))
                          .round().astype(int).tolist()))
        feats = local_features([read_photo(series[i]) for i in pick], v["side"], v["zoom"],
                               v["features"])
        for i, lf in zip(pick, feats):
            points.append(lf.points)
            desc.append(lf.descriptors)
            start.append(start[-1] + len(lf.points))
            label.append(k)
            names.append(f"{lab}/{series[i].name}")
    path = model_dir / REFERENCES_NAME
    np.savez_compressed(path, points=np.concatenate(points), descriptors=np.concatenate(desc),
                        photo_start=np.array(start, np.int64),
                        photo_label=np.array(label, np.int32),
                        photo_name=np.array(names))
    block = {**{k: v[k] for k in VERIFY_DEFAULTS}, "file": REFERENCES_NAME,
             "sha256": file_sha256(path), "bytes": path.stat().st_size, "photos": len(names),
             "chosen": v.get("chosen", "weight on train_* photos only (docs/vision.md)")}
    doc = json.loads(card_path.read_text())
    doc["scoring"]["verify"] = block
    card_path.write_text(json.dumps(doc, indent=1) + "\n")
    ModelCard.read(card_path)                                     # the card still reads
    return block


def read_photo(path: Path) -> np.ndarray:
    """A photo as BGR uint8, or RecognizerError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RecognizerError(f"photo {path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RecognizerError(f"photo {path}: not a readable image (JPEG/PNG expected)")
    return img


def resolution_curve(rec: Recognizer, photos: Path,
                     sides: Sequence[int] = (16, 24, 32, 48, 64, 96, 160)) -> list[dict]:
    """Top-1 of `rec`'s scores on the val_* photos under `photos` (<product>/val_*.jpg) shrunk
    to each short side in `sides`: how many pixels a crop needs before its name means
    something (the measurement behind MIN_CROP_PX)."""
    images, truth = [], []
    for label in rec.card.labels:
        for path in sorted((Path(photos) / label).glob("val_*")):
            images.append(read_photo(path))
            truth.append(label)
    if not images:
        raise RecognizerError(f"photos folder {photos}: no <product>/val_* photos of the "
                              f"model's labels")
    out = []
    for side in sides:
        small = []
        for img in images:
            h, w = img.shape[:2]
            f = side / min(h, w)
            small.append(cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                                    interpolation=cv2.INTER_AREA))
        best = rec.scores(small).argmax(axis=1)
        top1 = float(np.mean([rec.labels[j] == t for j, t in zip(best, truth)]))
        out.append({"short_side_px": int(side), "photos": len(images), "top1": round(top1, 3)})
    return out


if __name__ == "__main__":
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m vision.recognizer")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--resolution", action="store_true",
                      help="top-1 on the val_* photos shrunk to each short side")
    mode.add_argument("--references", action="store_true",
                      help="write the model folder's local-feature verification references "
                           "(references.npz from train_* photos) and its card's scoring.verify")
    parser.add_argument("--weight", type=float, default=VERIFY_DEFAULTS["weight"],
                        help="--references: nats per inlier (docs/vision.md: chosen on train_*)")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--photos", type=Path, default=None,
                        help="default: <data root>/products/grocery")
    args = parser.parse_args()
    if args.photos is None:
        from vision.data import data_root
        args.photos = data_root() / "products" / "grocery"
    try:
        if args.references:
            print(json.dumps(write_references(args.model or DEFAULT_MODEL_DIR, args.photos,
                                              {"weight": args.weight})))
            sys.exit(0)
        for row in resolution_curve(Recognizer.load(args.model), args.photos):
            print(json.dumps(row))
    except RecognizerError as e:
        sys.exit(f"python -m vision.recognizer: {e}")
