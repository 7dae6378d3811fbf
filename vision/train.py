"""Training the product recogniser: the only module that imports torch and ultralytics.

Runs in the training virtualenv (`.venv-train`, docs/vision.md), never in the cabinet's: the
cabinet runs the exported ONNX file with onnxruntime (vision/recognizer.py). `cabinet vision
train` re-runs this module there (`.venv-train/bin/python -m vision.train ...`).

1. The dataset is planned from a products folder laid out like ../shared/data/products/grocery
   (`<product>/train_*.jpg`, `<product>/val_*.jpg`): training photos are the train_* files only,
   minus the products held out (`--holdout`, to measure enrolment of products the model never
   saw); val_* photos choose settings and measure, never train. The data hash is a sha256 over
   the sorted list of training files (relative path, then bytes).
2. ultralytics trains yolov8n-cls from its yaml (no pretrained weights exist here) with its own
   augmentation; a run folder of symlinks is its input.
3. The best epoch is exported to ONNX with two outputs, `probs` (the classifier's softmax) and
   `features` (the head's pooled 1280 features, before the linear layer), which enrolment and
   nearest-centroid scoring use.
4. Prototypes (the training photos' mean feature and per-class centroids) are computed with
   the exported model through the cabinet's own run-time path, then scoring settings (softmax
   weight, temperature, mirror-image averaging) are chosen on val_* and written with the
   metrics into card.json.
5. Colour (vision/recognizer.py: a hue x saturation histogram fused into the embedding): its
   weight is chosen on train_* photos only, by a holdout model (`--holdout`): each held-out
   product is enrolled from its first ENROL_PHOTOS train_* photos and its other train_* photos
   are read among all classes and enrolled SKUs. A model trained on every product takes that
   weight from the holdout model's card (`--colour-from CARD`). val_* never chooses it.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_VENV = Path(os.environ.get("CABINET_TRAIN_VENV") or REPO_ROOT / ".venv-train")
YOLO_DIR = REPO_ROOT / ".cache" / "yolo"          # YOLO_CONFIG_DIR: settings and the font
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
ENROL_PHOTOS = 5                                   # photos per held-out product for enrolment

SETUP_HINT = f"""the training libraries are not installed; create the training virtualenv once:
  python3.11 -m venv {TRAIN_VENV}
  {TRAIN_VENV}/bin/pip install torch==2.14.1 torchvision==0.29.1
  {TRAIN_VENV}/bin/pip install --no-deps ultralytics ultralytics-thop
  {TRAIN_VENV}/bin/pip install opencv-python-headless onnxruntime polars pyyaml pillow \\
      matplotlib psutil requests scipy
then run `cabinet vision train` again (docs/vision.md)."""


class TrainError(ValueError):
    """Bad training input or a missing training environment; the message says what to do."""


@dataclass(frozen=True)
class DatasetPlan:
    root: Path
    classes: tuple[str, ...]                     # trained classes, sorted
    train: dict[str, tuple[Path, ...]]           # class -> train_* photos
    val: dict[str, tuple[Path, ...]]             # class -> val_* photos (trained classes)
    holdout: tuple[str, ...] = ()
    holdout_train: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    holdout_val: dict[str, tuple[Path, ...]] = field(default_factory=dict)

    def train_files(self) -> list[Path]:
        return sorted(p for c in self.classes for p in self.train[c])

    def data_hash(self) -> str:
        return data_hash(self.train_files(), self.root)


def _photos(folder: Path, prefix: str) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(prefix)
                        and p.suffix.lower() in PHOTO_SUFFIXES))


def plan_dataset(root: Path, holdout: tuple[str, ...] | list[str] = ()) -> DatasetPlan:
    """Which photos train and which measure; no file is copied or opened beyond listing."""
    root = Path(root)
    if not root.is_dir():
        raise TrainError(f"products folder {root}: missing (expected <product>/train_*.jpg; "
                         f"pass --data DIR)")
    products = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    train = {name: _photos(root / name, "train_") for name in products}
    train = {name: files for name, files in train.items() if files}
    if not train:
        raise TrainError(f"products folder {root}: no <product>/train_* photos")
    unknown = sorted(set(holdout) - set(train))
    if unknown:
        raise TrainError(f"--holdout {' '.join(unknown)}: not a product in {root} "
                         f"(products: {', '.join(sorted(train))})")
    classes = tuple(name for name in sorted(train) if name not in holdout)
    if len(classes) < 2:
        raise TrainError(f"products folder {root}: fewer than 2 products left to train")
    val = {name: _photos(root / name, "val_") for name in classes}
    hold = tuple(sorted(holdout))
    return DatasetPlan(
        root=root, classes=classes, train={c: train[c] for c in classes}, val=val, holdout=hold,
        holdout_train={h: train[h] for h in hold},
        holdout_val={h: _photos(root / h, "val_") for h in hold},
    )


def data_hash(files: list[Path], root: Path) -> str:
    """sha256 over the sorted files' paths (relative to root) and bytes."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def materialise(plan: DatasetPlan, work: Path) -> Path:
    """`work/data/{train,val}/<class>/` as symlinks (ultralytics' classification layout)."""
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    for split, files in (("train", plan.train), ("val", plan.val)):
        for cls in plan.classes:
            folder = data / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for src in files.get(cls, ()):
                (folder / src.name).symlink_to(src.resolve())
    return data


# ---- everything below needs the training virtualenv -----------------------------------------

def _offline_ultralytics() -> None:
    """Point ultralytics at a project folder, offline, with a local font: nothing downloaded."""
    os.environ["YOLO_CONFIG_DIR"] = str(YOLO_DIR)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    font_dir = YOLO_DIR / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    font = font_dir / "Arial.ttf"
    if not font.exists():
        import matplotlib
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)


def _import_training():
    try:
        import torch
        _offline_ultralytics()
        import ultralytics
        from ultralytics import YOLO
        from ultralytics.utils import SETTINGS
    except ImportError as e:
        raise TrainError(f"{e.name or e}: {SETUP_HINT}") from None
    SETTINGS.update({"sync": False})
    return torch, ultralytics, YOLO


def export_onnx(model, path: Path, imgsz: int) -> None:
    """A classification model -> ONNX with outputs `probs` and `features` (pooled, pre-linear)."""
    import torch

    class WithFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            logits, features = _pooled(self.net, x)  # the path the metric-learning loop trains
            return logits.softmax(1), features

    net = WithFeatures(model).eval().float()
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    kwargs = dict(input_names=["images"], output_names=["probs", "features"],
                  dynamic_axes={"images": {0: "n"}, "probs": {0: "n"}, "features": {0: "n"}},
                  opset_version=17)
    with torch.no_grad():
        try:
            torch.onnx.export(net, dummy, str(path), dynamo=False, **kwargs)
        except TypeError:                                # a torch without the dynamo switch
            torch.onnx.export(net, dummy, str(path), **kwargs)


def _read_all(paths) -> list:
    from vision.recognizer import read_photo
    return [read_photo(p) for p in paths]


# Test-time views tried on val_* (centre zoom, mirror): plain, mirrored, and two zoom sets.
VIEW_SETS = (
    ((1.0, False),),
    ((1.0, False), (1.0, True)),
    ((1.0, False), (1.0, True), (0.8, False), (0.8, True)),
    ((1.0, False), (1.0, True), (0.8, False), (0.8, True), (0.65, False), (0.65, True)),
)
TEMPERATURES = (0.02, 0.05, 0.1, 0.2, 0.35)
SOFTMAX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
COLOUR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _fused_scores(probs, emb, protos, temperature: float, weight: float, colour: float = 0.0):
    """The recogniser's scores (vision/recognizer.py, Recognizer.scores) from precomputed parts:
    protos are the model's class centroids, then any enrolled SKUs' (len(probs[0]) classes)."""
    import numpy as np
    z = emb @ protos.T * (1 + colour) / temperature
    q = np.exp(z - z.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    c = probs.shape[1]
    out = q.copy()
    out[:, :c] = weight * q[:, :c].sum(axis=1, keepdims=True) * probs + (1 - weight) * q[:, :c]
    return out


def choose_colour(session, plan: DatasetPlan, imgsz: int, views, softmax_weight: float,
                  mean, train_emb, train_colour, train_labels) -> tuple[float, float, list[dict]]:
    """(colour weight, temperature, grid) chosen on train_* photos only: every held-out product
    enrolled from its first ENROL_PHOTOS train_* photos, its other train_* photos read among the
    model's classes and the enrolled SKUs (top-1, then the lower log loss, then less colour)."""
    import numpy as np

    from vision.recognizer import colour_histograms, fuse_colour, run_views
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    zooms = tuple(dict.fromkeys(z for z, _ in views))
    enrol = {s: list(plan.holdout_train[s][:ENROL_PHOTOS]) for s in plan.holdout}
    probe = [(s, p) for s in plan.holdout for p in plan.holdout_train[s][ENROL_PHOTOS:]]
    if not probe:
        raise TrainError(f"--holdout {' '.join(plan.holdout)}: no train_* photo beyond the first "
                         f"{ENROL_PHOTOS} to choose the colour weight on")
    enrol_imgs = [img for s in plan.holdout for img in _read_all(enrol[s])]
    enrol_of = np.array([k for k, s in enumerate(plan.holdout) for _ in enrol[s]])
    probe_imgs = _read_all([p for _, p in probe])
    truth = np.array([len(plan.classes) + plan.holdout.index(s) for s, _ in probe])
    _, ef = run_views(session, enrol_imgs, imgsz, views)
    pp, pf = run_views(session, probe_imgs, imgsz, views)
    ee, pe = norm(ef - mean), norm(pf - mean)
    ec, pc = (colour_histograms(x, imgsz, zooms) for x in (enrol_imgs, probe_imgs))
    grid, best = [], None
    for beta in COLOUR_WEIGHTS:
        te = fuse_colour(train_emb, train_colour, beta)
        cents = norm(np.stack([te[train_labels == k].mean(axis=0) for k in range(len(plan.classes))]))
        fe = fuse_colour(ee, ec, beta)
        skus = norm(np.stack([fe[enrol_of == k].mean(axis=0) for k in range(len(plan.holdout))]))
        probe_emb = fuse_colour(pe, pc, beta)
        for temp in TEMPERATURES:
            s = _fused_scores(pp, probe_emb, np.concatenate([cents, skus]), temp, softmax_weight,
                              beta)
            top1 = float((s.argmax(axis=1) == truth).mean())
            nll = float(-np.log(np.maximum(s[np.arange(len(s)), truth], 1e-9)).mean())
            row = dict(colour_weight=beta, temperature=temp, top1=round(top1, 4), nll=round(nll, 4))
            grid.append(row)
            key = (top1, -nll, -beta)
            if best is None or key > best[0]:
                best = (key, row)
    return best[1]["colour_weight"], best[1]["temperature"], grid


def finish_model(out: Path, plan: DatasetPlan, imgsz: int, info: dict,
                 fixed: dict | None = None, colour_weight: float = 0.0) -> dict:
    """Prototypes, scoring settings chosen on val_* (or `fixed`: another card's `scoring`, so a
    holdout model is measured with the shipped model's settings), metrics and card.json.

    A holdout model then chooses its colour weight and temperature on train_* photos
    (choose_colour); any other model uses `colour_weight` (from a holdout model's card)."""
    import numpy as np
    import onnxruntime as ort

    from vision.recognizer import (CARD_NAME, COLOUR_BINS, Recognizer, colour_histograms,
                                   file_sha256, fuse_colour, run_views, write_references)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    train_paths = [p for c in plan.classes for p in plan.train[c]]
    train_labels = np.array([plan.classes.index(c) for c in plan.classes for _ in plan.train[c]])
    val_paths = [p for c in plan.classes for p in plan.val[c]]
    val_labels = np.array([plan.classes.index(c) for c in plan.classes for _ in plan.val[c]])
    train_imgs, val_imgs = _read_all(train_paths), _read_all(val_paths)
    results, best = [], None
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    view_sets, temperatures, weights = VIEW_SETS, TEMPERATURES, SOFTMAX_WEIGHTS
    if fixed is not None:
        view_sets = (tuple((float(z), bool(f)) for z, f in fixed["views"]),)
        temperatures, weights = (float(fixed["temperature"]),), (float(fixed["softmax_weight"]),)
    beta = 0.0 if plan.holdout else float(colour_weight)
    parts = {}
    for v, views in enumerate(view_sets):
        _, tf = run_views(session, train_imgs, imgsz, views)
        vp, vf = run_views(session, val_imgs, imgsz, views)
        mean = tf.mean(axis=0)
        zooms = tuple(dict.fromkeys(z for z, _ in views))
        tc, vc = colour_histograms(train_imgs, imgsz, zooms), colour_histograms(val_imgs, imgsz, zooms)
        parts[v] = (norm(tf - mean), tc, vp, norm(vf - mean), vc)
        te, ve = fuse_colour(parts[v][0], tc, beta), fuse_colour(parts[v][3], vc, beta)
        cents = norm(np.stack([te[train_labels == k].mean(axis=0) for k in range(len(plan.classes))]))
        for temp in temperatures:
            for w in weights:
                s = _fused_scores(vp, ve, cents, temp, w, beta)
                top1 = float((s.argmax(axis=1) == val_labels).mean()) if len(val_labels) else 0.0
                nll = float(-np.log(np.maximum(s[np.arange(len(s)), val_labels], 1e-9)).mean()) \
                    if len(val_labels) else 0.0
                row = dict(views=v, temperature=temp, softmax_weight=w, top1=round(top1, 4),
                           nll=round(nll, 4))
                results.append(row)
                key = (top1, -nll, -v)
                if best is None or key > best[0]:
                    best = (key, row, mean.astype(np.float32), cents.astype(np.float32))
    _, chosen, mean, cents = best
    temp, colour_grid = chosen["temperature"], []
    if plan.holdout:
        te, tc, vp, ve, vc = parts[chosen["views"]]
        beta, temp, colour_grid = choose_colour(
            session, plan, imgsz, view_sets[chosen["views"]], chosen["softmax_weight"], mean,
            te, tc, train_labels)
        fused = fuse_colour(te, tc, beta)
        cents = norm(np.stack([fused[train_labels == k].mean(axis=0)
                               for k in range(len(plan.classes))])).astype(np.float32)
        s = _fused_scores(vp, fuse_colour(ve, vc, beta), cents, temp, chosen["softmax_weight"],
                          beta)
        chosen = {**chosen, "temperature": temp,
                  "top1": round(float((s.argmax(axis=1) == val_labels).mean()), 4)
                  if len(val_labels) else 0.0}
    np.savez(out / "prototypes.npz", mean=mean, centroids=cents)
    by = {(r["views"], r["temperature"], r["softmax_weight"]): r["top1"] for r in results}
    last = len(view_sets) - 1
    scoring = {"softmax_weight": chosen["softmax_weight"], "temperature": temp,
               "views": [[z, f] for z, f in view_sets[chosen["views"]]],
               "chosen": "fixed (from another card)" if fixed else "on val_*"}
    if beta > 0:
        scoring["colour"] = {"weight": beta, "bins": list(COLOUR_BINS),
                             "chosen": ("on train_* (held-out products' photos beyond the "
                                        "enrolment ones)" if plan.holdout
                                        else "from a holdout model's card (--colour-from)")}
    if plan.holdout:
        scoring["chosen"] += "; colour weight and temperature on train_*"
    card = {
        "name": "cabinet product recogniser",
        "model": {"file": "model.onnx", "sha256": file_sha256(out / "model.onnx"),
                  "bytes": (out / "model.onnx").stat().st_size,
                  "architecture": "yolov8n-cls from its yaml (no pretrained weights)",
                  "outputs": {"probs": "N x C softmax", "features": "N x 1280 pooled features"}},
        "prototypes": {"file": "prototypes.npz", "sha256": file_sha256(out / "prototypes.npz")},
        "labels": list(plan.classes),
        "input": {"name": "images", "size": imgsz, "layout": "NCHW", "color": "RGB",
                  "range": [0, 1], "resize": "short side to size, centre crop"},
        "scoring": scoring,
        "training": {**info, "data": str(plan.root), "data_hash": plan.data_hash(),
                     "train_files": len(plan.train_files()), "holdout": list(plan.holdout)},
        "metrics": {
            "val_photos": int(len(val_labels)),
            "val_top1": chosen["top1"],
            "val_top1_softmax": by.get((0, temp, 1.0)),
            "val_top1_centroid": by.get((0, temp, 0.0)),
            "val_top1_softmax_views": by.get((last, temp, 1.0)),
            "val_top1_centroid_views": by.get((last, temp, 0.0)),
            "grid_colour_weight": 0.0 if plan.holdout else beta,
            "view_sets": [[list(x) for x in vs] for vs in view_sets],
            "grid": results,
            **({"colour_grid": colour_grid} if colour_grid else {}),
        },
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=1) + "\n")
    # local-feature verification's references (train_* photos; docs/vision.md): a retrained
    # model re-ranks contested crops as the shipped cards do, with the settings chosen there
    card["scoring"]["verify"] = write_references(out, plan.root)
    if plan.holdout:
        rec = Recognizer.load(out)
        card["metrics"]["new_sku"] = measure_new_skus(rec, plan)
        (out / CARD_NAME).write_text(json.dumps(card, indent=1) + "\n")
    return card


def measure_new_skus(rec, plan: DatasetPlan, photos: int = ENROL_PHOTOS) -> dict:
    """Enrol each held-out product from its first `photos` train_* photos, then classify its
    val_* photos among every class and enrolled SKU."""
    gallery = rec.new_gallery()
    for sku in plan.holdout:
        rec.enrol(gallery, sku, _read_all(plan.holdout_train[sku][:photos]))
    rec = rec.with_gallery(gallery)
    total = correct = 0
    per = {}
    for sku in plan.holdout:
        files = plan.holdout_val[sku]
        if not files:
            continue
        top = [r[0][0] for r in rec.classify(_read_all(files), top_k=1)]
        hits = sum(t == sku for t in top)
        per[sku] = round(hits / len(files), 4)
        total, correct = total + len(files), correct + hits
    return {"enrol_photos": photos, "skus": list(plan.holdout), "val_photos": total,
            "top1": round(correct / total, 4) if total else None, "per_sku": per}


def train(plan: DatasetPlan, out: Path, *, epochs: int, imgsz: int, threads: int, batch: int,
          command: str, extra: dict | None = None, colour_weight: float = 0.0) -> dict:
    torch, ultralytics, YOLO = _import_training()
    torch.set_num_threads(threads)
    out = Path(out)
    work = REPO_ROOT / "var" / "vision-train" / (out.name or "model")
    work.mkdir(parents=True, exist_ok=True)
    data = materialise(plan, work)
    start = time.monotonic()
    model = YOLO("yolov8n-cls.yaml")
    args = dict(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, workers=0, device="cpu",
                project=str(work / "runs"), name="train", exist_ok=True, plots=False, amp=False,
                pretrained=False, seed=0, deterministic=True, verbose=False, val=True)
    args.update(extra or {})
    model.train(**args)
    seconds = time.monotonic() - start
    best = Path(model.trainer.best)
    trained = YOLO(str(best)) if best.exists() else model
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(trained.model, out / "model.onnx", imgsz)
    info = {"command": command, "epochs": epochs, "imgsz": imgsz, "batch": batch,
            "threads": threads, "seconds": round(seconds, 1), "ultralytics": ultralytics.__version__,
            "torch": torch.__version__, "options": extra or {},
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return finish_model(out, plan, imgsz, info, colour_weight=colour_weight)


# ---- metric learning: a custom loop over the same network (`--loss arcface|cosface`) ---------

METRIC_LOSSES = ("arcface", "cosface")


@dataclass(frozen=True)
class MetricRecipe:
    """How `--loss arcface|cosface` trains: an additive angular (ArcFace) or cosine (CosFace)
    margin on the centred, L2-normalised 1280 features the recogniser's centroids use, plus the
    classifier's own cross-entropy (so the exported `probs` stay a classifier), AdamW with a
    cosine schedule, and our own augmentation (random resized crop, mirror, colour jitter)."""
    loss: str = "arcface"
    margin: float = 0.3
    scale: float = 30.0
    ce_weight: float = 0.5            # weight of the classifier's cross-entropy beside the margin loss
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    crop_scale: tuple[float, float] = (0.35, 1.0)
    jitter: float = 0.3               # brightness, contrast and saturation: factor in 1 +- jitter
    hue: float = 0.02                 # hue shift, fraction of the colour circle
    seed: int = 0

    def check(self) -> None:
        if self.loss not in METRIC_LOSSES:
            raise TrainError(f"--loss {self.loss}: expected ce, {' or '.join(METRIC_LOSSES)}")
        if not 0.0 <= self.margin <= 1.0:
            raise TrainError(f"--margin {self.margin}: expected 0-1 (radians for arcface, "
                             f"cosine for cosface)")
        if not 1.0 <= self.scale <= 128.0:
            raise TrainError(f"--scale {self.scale}: expected 1-128")
        if self.ce_weight < 0 or self.lr <= 0:
            raise TrainError("--ce-weight must be >= 0 and --lr > 0")
        lo, hi = self.crop_scale
        if not 0.05 <= lo <= hi <= 1.0:
            raise TrainError(f"crop scale {self.crop_scale}: expected 0.05 <= low <= high <= 1")


def margin_target(cos, kind: str, margin: float, xp):
    """The target class's logit (before the scale) under a margin, for numpy or torch (`xp`):
    ArcFace cos(theta + m), falling back to cos - m sin(m) once theta + m passes pi (so the
    target stays decreasing in theta); CosFace cos - m."""
    import math
    if kind == "cosface":
        return cos - margin
    cos = xp.clip(cos, -1.0, 1.0)
    sin = xp.sqrt(xp.clip(1.0 - cos * cos, 0.0, 1.0))
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    return xp.where(cos > math.cos(math.pi - margin), phi, cos - margin * math.sin(margin))


def augment(img, size: int, rng, recipe: MetricRecipe = MetricRecipe()):
    """One training view of a BGR uint8 photo: a random crop of `crop_scale` of its area and
    aspect 3/4-4/3, resized to size x size, mirrored half the time, colour-jittered
    (brightness, contrast, saturation, a small hue shift); returns 3 x size x size float32 RGB
    in [0, 1], the network's input (vision/recognizer.py preprocess)."""
    import math

    import cv2
    import numpy as np
    h, w = img.shape[:2]
    lo, hi = recipe.crop_scale
    for _ in range(10):
        area = h * w * rng.uniform(lo, hi)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw = ch = min(h, w)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[top:top + ch, left:left + cw]
    interp = cv2.INTER_AREA if min(ch, cw) > size else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if recipe.hue > 0:
        hsv = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2HSV)
        shift = int(round(rng.uniform(-recipe.hue, recipe.hue) * 180))
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    x = out[..., ::-1].astype(np.float32) * np.float32(1 / 255)           # BGR -> RGB
    j = recipe.jitter
    if j > 0:
        x = x * np.float32(rng.uniform(1 - j, 1 + j))                      # brightness
        m = x.mean()
        x = (x - m) * np.float32(rng.uniform(1 - j, 1 + j)) + m            # contrast
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - grey[..., None]) * np.float32(rng.uniform(1 - j, 1 + j)) + grey[..., None]
    return np.clip(x, 0, 1).transpose(2, 0, 1).copy()


def _pooled(net, x):
    """(logits, pooled 1280 features) of an ultralytics classification model, the same path
    export_onnx writes (features before the linear layer)."""
    import torch
    saved = []
    for m in net.model[:-1]:
        if m.f != -1:
            x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
        x = m(x)
        saved.append(x)
    head = net.model[-1]
    if isinstance(x, list):
        x = torch.cat(x, 1)
    features = head.pool(head.conv(x)).flatten(1)
    return head.linear(features), features


def _load_init(init: Path, classes: tuple[str, ...]):
    """Our own earlier run's network (an ultralytics best.pt/last.pt); its linear layer is kept
    when it was trained on exactly these classes, else replaced by a fresh one."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel, load_checkpoint
    from ultralytics.utils import LOGGER
    LOGGER.disabled = True
    net, _ = load_checkpoint(str(init), device="cpu")
    LOGGER.disabled = False
    net = net.float()
    for p in net.parameters():
        p.requires_grad_(True)
    names = [net.names[k] for k in sorted(net.names)] if isinstance(net.names, dict) else list(net.names)
    if tuple(names) != tuple(classes):
        ClassificationModel.reshape_outputs(net, len(classes))
        torch.nn.init.normal_(net.model[-1].linear.weight, std=0.01)
        torch.nn.init.zeros_(net.model[-1].linear.bias)
    net.names = dict(enumerate(classes))
    return net


def train_metric(plan: DatasetPlan, out: Path, *, epochs: int, imgsz: int, threads: int,
                 batch: int, command: str, recipe: MetricRecipe, init: Path | None = None,
                 colour_weight: float = 0.0) -> dict:
    """yolov8n-cls (from its yaml, or `init`: our own earlier run) trained with a margin loss on
    its embedding; the epoch with the best val_* top-1 (nearest margin-loss prototype, one
    view) is exported and finished like any other model (finish_model)."""
    recipe.check()
    torch, ultralytics, _ = _import_training()
    import copy
    import math

    import numpy as np
    from torch.nn import functional as F
    from ultralytics.nn.tasks import ClassificationModel
    from vision.recognizer import preprocess, read_photo

    torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    out = Path(out)
    work = REPO_ROOT / "var" / "vision-train" / (out.name or "model")
    (work / "weights").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    classes = plan.classes
    if init is not None:
        net = _load_init(init, classes)
    else:
        net = ClassificationModel("yolov8n-cls.yaml", nc=len(classes), verbose=False)
        net.names = dict(enumerate(classes))
    # photos decoded once, short side 1.25 x imgsz (the random crop's source)
    def small(img):
        s = 1.25 * imgsz / min(img.shape[:2])
        if s >= 1:
            return img
        import cv2
        return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                          interpolation=cv2.INTER_AREA)
    train_items = [(small(read_photo(p)), k) for k, c in enumerate(classes) for p in plan.train[c]]
    labels_all = torch.tensor([k for _, k in train_items])
    val_pairs = [(p, k) for k, c in enumerate(classes) for p in plan.val[c]]
    val_x = torch.from_numpy(preprocess([read_photo(p) for p, _ in val_pairs], imgsz)) \
        if val_pairs else None
    val_y = np.array([k for _, k in val_pairs])
    plain_x = torch.from_numpy(preprocess([img for img, _ in train_items], imgsz))

    def embed_all(x, bs=64):
        net.eval()
        feats, logits = [], []
        with torch.no_grad():
            for i in range(0, len(x), bs):
                lo, f = _pooled(net, x[i:i + bs])
                feats.append(f)
                logits.append(lo)
        return torch.cat(logits), torch.cat(feats)

    # the margin loss's class prototypes start at the class centroids of the starting network
    _, f0 = embed_all(plain_x)
    centre = f0.mean(0)
    emb0 = F.normalize(f0 - centre, dim=1)
    protos = torch.nn.Parameter(torch.stack([F.normalize(emb0[labels_all == k].mean(0), dim=0)
                                             for k in range(len(classes))]))
    params = [{"params": [p for p in net.parameters()], "weight_decay": recipe.weight_decay},
              {"params": [protos], "weight_decay": 0.0}]
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.lr)
    steps_per_epoch = math.ceil(len(train_items) / batch)
    total, warm = epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    history, best = [], None
    step = 0
    for epoch in range(1, epochs + 1):
        t0 = time.monotonic()
        net.train()
        order = rng.permutation(len(train_items))
        sums = np.zeros(3)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            if len(idx) < 2:
                continue
            x = torch.from_numpy(np.stack([augment(train_items[j][0], imgsz, rng, recipe)
                                           for j in idx]))
            y = labels_all[idx]
            logits, feats = _pooled(net, x)
            with torch.no_grad():
                centre.mul_(0.9).add_(0.1 * feats.mean(0))
            emb = F.normalize(feats - centre, dim=1)
            cos = emb @ F.normalize(protos, dim=1).T
            target = margin_target(cos.gather(1, y[:, None]), recipe.loss, recipe.margin, torch)
            margin_logits = cos.scatter(1, y[:, None], target) * recipe.scale
            l_margin = F.cross_entropy(margin_logits, y)
            l_ce = F.cross_entropy(logits, y, label_smoothing=0.1)
            loss = l_margin + recipe.ce_weight * l_ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            sums += (l_margin.item() * len(idx), l_ce.item() * len(idx), len(idx))
        row = {"epoch": epoch, "margin_loss": round(sums[0] / sums[2], 4),
               "ce_loss": round(sums[1] / sums[2], 4), "seconds": round(time.monotonic() - t0, 1)}
        if val_x is not None:
            vl, vf = embed_all(val_x)
            ve = F.normalize(vf - centre, dim=1)
            row["val_top1_prototype"] = round(float(
                ((ve @ F.normalize(protos, dim=1).T).argmax(1).numpy() == val_y).mean()), 4)
            row["val_top1_softmax"] = round(float((vl.argmax(1).numpy() == val_y).mean()), 4)
        history.append(row)
        print(json.dumps(row), flush=True)
        key = (row.get("val_top1_prototype", 0.0), row.get("val_top1_softmax", 0.0), epoch)
        if best is None or key >= best[0]:
            best = (key, copy.deepcopy(net.state_dict()), epoch)
        torch.save({"model": copy.deepcopy(net).eval(), "epoch": epoch, "train_args": {},
                    "protos": protos.detach().clone()}, work / "weights" / "last.pt")
    seconds = time.monotonic() - start
    net.load_state_dict(best[1])
    net.eval()
    torch.save({"model": copy.deepcopy(net), "epoch": best[2], "train_args": {}},
               work / "weights" / "best.pt")
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out / "model.onnx", imgsz)
    info = {"command": command, "epochs": epochs, "imgsz": imgsz, "batch": batch,
            "threads": threads, "seconds": round(seconds, 1), "ultralytics": ultralytics.__version__,
            "torch": torch.__version__, "loop": "metric (vision/train.py train_metric)",
            "options": {**dataclasses.asdict(recipe),
                        "init": str(init) if init is not None else None},
            "best_epoch": best[2], "history": history,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return finish_model(out, plan, imgsz, info, colour_weight=colour_weight)


def soup(plan: DatasetPlan, out: Path, weights: list[Path], *, imgsz: int, threads: int,
         command: str, colour_weight: float = 0.0) -> dict:
    """A uniform weight average ("model soup", Wortsman et al. 2022) of runs that started from
    one network (`--init` the same run, different seeds): their weights lie in one basin, so
    the mean network generalises at least as well as the runs and costs one network's time.
    Batch-norm statistics are re-measured on the train_* photos (plain views, no val_*), since
    the mean of the runs' statistics is not the statistics of the mean network."""
    if len(weights) < 2:
        raise TrainError("--soup needs at least two weights files")
    for w in weights:
        if not Path(w).is_file():
            raise TrainError(f"--soup {w}: no such weights file")
    torch, ultralytics, _ = _import_training()
    import copy

    from vision.recognizer import preprocess, read_photo
    torch.set_num_threads(threads)
    start = time.monotonic()
    nets = [_load_init(Path(w), plan.classes) for w in weights]
    states = [n.state_dict() for n in nets]
    keys = states[0].keys()
    for w, st in zip(weights[1:], states[1:]):
        if st.keys() != keys or any(st[k].shape != states[0][k].shape for k in keys):
            raise TrainError(f"--soup {w}: not the same network as {weights[0]}")
    mean = {k: (sum(st[k].double() for st in states) / len(states)).to(states[0][k].dtype)
            if states[0][k].is_floating_point() else states[0][k] for k in keys}
    net = nets[0]
    net.load_state_dict(mean)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                          # a cumulative average over the passes
    x = torch.from_numpy(preprocess([read_photo(p) for p in plan.train_files()], imgsz))
    net.train()
    with torch.no_grad():
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(x), 32):
            _pooled(net, x[order[i:i + 32]])
    net.eval()
    work = REPO_ROOT / "var" / "vision-train" / (Path(out).name or "model")
    (work / "weights").mkdir(parents=True, exist_ok=True)
    torch.save({"model": copy.deepcopy(net), "epoch": 0, "train_args": {}},
               work / "weights" / "best.pt")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out / "model.onnx", imgsz)
    info = {"command": command, "imgsz": imgsz, "threads": threads,
            "seconds": round(time.monotonic() - start, 1), "ultralytics": ultralytics.__version__,
            "torch": torch.__version__, "loop": "soup (vision/train.py soup)",
            "options": {"soup": [str(w) for w in weights], "batchnorm": "re-measured on train_*"},
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return finish_model(out, plan, imgsz, info, colour_weight=colour_weight)


def _parser() -> argparse.ArgumentParser:
    from vision.data import data_root
    p = argparse.ArgumentParser(prog="cabinet vision train",
                                description="train the product recogniser and export ONNX")
    p.add_argument("--data", type=Path, default=data_root() / "products" / "grocery")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "models")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--holdout", nargs="*", default=[], metavar="SKU")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an ultralytics training option (e.g. --opt erasing=0.2), repeatable")
    p.add_argument("--rescore", action="store_true",
                   help="keep --out's model.onnx; recompute prototypes, scoring and the card")
    p.add_argument("--scoring-from", type=Path, default=None, metavar="CARD",
                   help="with --rescore: use this card's scoring instead of choosing on val_*")
    p.add_argument("--colour-from", type=Path, default=None, metavar="CARD",
                   help="take the colour weight from this (holdout model's) card, where it was "
                        "chosen on train_* photos; default: no colour unless --holdout")
    m = p.add_argument_group("metric learning (our own loop instead of ultralytics' trainer)")
    m.add_argument("--loss", choices=("ce",) + METRIC_LOSSES, default="ce",
                   help="ce: ultralytics' classification training (default); arcface/cosface: "
                        "a margin loss on the embedding plus the classifier's cross-entropy")
    m.add_argument("--margin", type=float, default=MetricRecipe.margin,
                   help="angular margin m (radians, arcface) or cosine margin (cosface)")
    m.add_argument("--scale", type=float, default=MetricRecipe.scale, help="logit scale s")
    m.add_argument("--ce-weight", type=float, default=MetricRecipe.ce_weight,
                   help="weight of the classifier's cross-entropy beside the margin loss")
    m.add_argument("--lr", type=float, default=MetricRecipe.lr, help="AdamW peak learning rate")
    m.add_argument("--warmup", type=int, default=MetricRecipe.warmup_epochs, help="warm-up epochs")
    m.add_argument("--seed", type=int, default=MetricRecipe.seed)
    m.add_argument("--init", type=Path, default=None, metavar="WEIGHTS",
                   help="start from our own earlier run (an ultralytics .pt under var/vision-train/)")
    p.add_argument("--soup", type=Path, nargs="+", default=None, metavar="WEIGHTS",
                   help="no training: average these runs' weights (runs from one --init, "
                        "different --seed), re-measure batch-norm on train_*, export and score")
    return p


def metric_recipe(args: argparse.Namespace) -> MetricRecipe | None:
    """The metric-learning recipe the arguments ask for (None for --loss ce), checked without
    torch; --init must be a file, and only with a metric loss."""
    if args.loss == "ce":
        if args.init is not None:
            raise TrainError("--init needs --loss arcface or cosface (ultralytics' own trainer "
                             "starts from its yaml)")
        return None
    recipe = MetricRecipe(loss=args.loss, margin=args.margin, scale=args.scale,
                          ce_weight=args.ce_weight, lr=args.lr, warmup_epochs=args.warmup,
                          seed=args.seed)
    recipe.check()
    if args.init is not None and not Path(args.init).is_file():
        raise TrainError(f"--init {args.init}: no such weights file")
    return recipe


def colour_weight_from(card: Path | None) -> float:
    """The colour weight a (holdout model's) card chose on train_* photos; 0 without a card."""
    if card is None:
        return 0.0
    try:
        doc = json.loads(Path(card).read_text())
        colour = doc["scoring"].get("colour") or {}
        weight = float(colour.get("weight", 0.0))
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise TrainError(f"--colour-from {card}: not a model card with a 'scoring' "
                         f"block ({e})") from None
    if not 0.0 <= weight <= 100.0:
        raise TrainError(f"--colour-from {card}: scoring.colour.weight {weight} out of range 0-100")
    return weight


def rescore(out: Path, data: Path, scoring_from: Path | None = None,
            colour_weight: float = 0.0) -> dict:
    """Prototypes, scoring and metrics again for an exported model (its card's training kept)."""
    from vision.recognizer import CARD_NAME
    try:
        old = json.loads((Path(out) / CARD_NAME).read_text())
        info = {k: v for k, v in old["training"].items()
                if k not in ("data", "data_hash", "train_files", "holdout")}
        plan = plan_dataset(data, old["training"].get("holdout", []))
        imgsz = int(old["input"]["size"])
    except (OSError, KeyError, ValueError) as e:
        raise TrainError(f"--rescore {out}: no usable {CARD_NAME} there ({e})") from None
    if plan.data_hash() != old["training"]["data_hash"]:
        raise TrainError(f"--rescore {out}: the training photos in {data} differ from the ones "
                         f"the model was trained on (data hash)")
    fixed = None
    if scoring_from is not None:
        try:
            fixed = json.loads(Path(scoring_from).read_text())["scoring"]
        except (OSError, KeyError, ValueError) as e:
            raise TrainError(f"--scoring-from {scoring_from}: no 'scoring' in it ({e})") from None
    return finish_model(Path(out), plan, imgsz, info, fixed, colour_weight)


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise TrainError(f"--opt {text!r}: expected KEY=VALUE")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(value.lower(), value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.epochs < 1 or args.imgsz < 32 or args.threads < 1:
            raise TrainError("--epochs and --threads must be at least 1, --imgsz at least 32")
        plan = plan_dataset(args.data, args.holdout)
        extra = dict(_option(o) for o in args.opt)
        colour = colour_weight_from(args.colour_from)
        recipe = metric_recipe(args)
        if args.rescore:
            return _report(args.out, rescore(args.out, args.data, args.scoring_from, colour))
        if args.soup is not None:
            if args.loss != "ce" or args.init is not None or args.opt:
                raise TrainError("--soup trains nothing: it takes no --loss, --init or --opt")
            return _report(args.out, soup(plan, args.out, args.soup, imgsz=args.imgsz,
                                          threads=args.threads,
                                          command="cabinet vision train " + " ".join(argv),
                                          colour_weight=colour))
        if recipe is not None:
            if args.opt:
                raise TrainError("--opt is an ultralytics option; the metric loop takes --lr, "
                                 "--margin, --scale, --ce-weight, --warmup, --seed")
            card = train_metric(plan, args.out, epochs=args.epochs, imgsz=args.imgsz,
                                threads=args.threads, batch=args.batch,
                                command="cabinet vision train " + " ".join(argv),
                                recipe=recipe, init=args.init, colour_weight=colour)
            return _report(args.out, card)
        card = train(plan, args.out, epochs=args.epochs, imgsz=args.imgsz, threads=args.threads,
                     batch=args.batch, command="cabinet vision train " + " ".join(argv),
                     extra=extra, colour_weight=colour)
    except TrainError as e:
        print(f"cabinet vision train: {e}", file=sys.stderr)
        return 1
    return _report(args.out, card)


def _report(out: Path, card: dict) -> int:
    m = card["metrics"]
    print(f"model {out / 'model.onnx'}: val top-1 {m['val_top1']:.3f} on {m['val_photos']} "
          f"val_* photos (softmax {m['val_top1_softmax']}, centroid {m['val_top1_centroid']}); "
          f"trained {card['training']['seconds']:.0f} s")
    if "new_sku" in m:
        print(f"new SKUs {', '.join(m['new_sku']['skus'])} enrolled from {ENROL_PHOTOS} photos: "
              f"top-1 {m['new_sku']['top1']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
