"""`cabinet vision train|enroll` and `cabinet bench vision`: the product recogniser's commands.

    cabinet vision train [--data DIR] [--out DIR] [--epochs N] [--imgsz N] [--holdout SKU...]
    cabinet vision enroll SKU PHOTO... [--gallery FILE] [--model DIR]
    cabinet vision calibrate --stage empty|full [--config FILE] [--out DIR] [--frames N] [--json]
    cabinet bench vision [--photos DIR] [--model DIR] [--holdout-model DIR] [--views N] [--json]
                         [--out FILE]

Training needs torch and ultralytics, which live in their own virtualenv (.venv-train, see
docs/vision.md), never in the cabinet's: `train` runs vision/train.py with that interpreter, or
prints how to create it. `enroll` and `bench` use the ONNX model through vision/recognizer.py.

Every error a person can fix (a missing folder, model, gallery or photo, an unreadable image) is
one line naming it, exit 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GALLERY = ROOT / "var" / "vision" / "gallery.json"
HOLDOUT_MODEL = ROOT / "models" / "holdout"
ENROL_PHOTOS = 5
SHELF_CROPS = 8                    # crops a shelf image is read as (one per slot position)


class VisionCliError(ValueError):
    pass


def _errors():
    from cabinet.errors import CabinetError
    from vision.calibration import CalibrationError
    from vision.cameras import CameraError
    from vision.product_gallery import GalleryError
    from vision.recognizer import RecognizerError
    return (VisionCliError, RecognizerError, GalleryError, CalibrationError, CameraError, CabinetError)


# ---- train -----------------------------------------------------------------------------------

def train_main(argv: list[str]) -> int:
    """Run vision.train here when torch and ultralytics are importable, else in .venv-train."""
    if importlib.util.find_spec("ultralytics") and importlib.util.find_spec("torch"):
        from vision import train
        return train.main(argv)
    from vision.train import SETUP_HINT, TRAIN_VENV
    python = TRAIN_VENV / "bin" / "python"
    if not python.exists():
        if any(a in ("-h", "--help") for a in argv):
            from vision import train
            train._parser().print_help()
        print(f"cabinet vision train: {SETUP_HINT}", file=sys.stderr)
        return 1
    return subprocess.call([str(python), "-m", "vision.train", *argv], cwd=ROOT)


# ---- enroll ----------------------------------------------------------------------------------

def enroll(sku: str, photos: list[Path], gallery_path: Path, model_dir: Path | None) -> dict:
    from vision.product_gallery import ProductGallery, photo_record, validate_sku
    from vision.recognizer import Recognizer, read_photo
    validate_sku(sku)
    rec = Recognizer.load(model_dir)
    gallery = ProductGallery.load(gallery_path) if gallery_path.exists() else rec.new_gallery()
    rec = rec.with_gallery(gallery)                  # refuses a gallery of another model
    if sku in rec.card.labels:
        raise VisionCliError(f"SKU {sku!r}: the model already knows it as a class; enrol new "
                             f"products only")
    images = [read_photo(p) for p in photos]
    rec.enrol(gallery, sku, images, [photo_record(p) for p in photos])
    digest = gallery.save(gallery_path)
    return {"sku": sku, "photos": len(photos), "gallery": str(gallery_path),
            "gallery_sha256": digest, "skus": gallery.skus(),
            "version": rec.with_gallery(gallery).version}


def enroll_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cabinet vision enroll",
                                description="recognise a new product from a few photos, "
                                            "without retraining")
    p.add_argument("sku")
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--gallery", type=Path, default=DEFAULT_GALLERY,
                   help=f"product gallery file (default {DEFAULT_GALLERY.relative_to(ROOT)})")
    p.add_argument("--model", type=Path, default=None, help="model folder (default models/)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = enroll(args.sku, args.photos, args.gallery, args.model)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"enrolled {out['sku']} from {out['photos']} photo(s) into {out['gallery']} "
              f"({len(out['skus'])} SKU(s), gallery {out['gallery_sha256'][:12]}, recogniser "
              f"version {out['version']})")
    return 0


# ---- bench -----------------------------------------------------------------------------------

def _split(folder: Path, prefix: str) -> dict[str, list[Path]]:
    from vision.data import PHOTO_SUFFIXES
    found = {}
    for product in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in product.iterdir() if f.is_file() and f.name.startswith(prefix)
                       and f.suffix.lower() in PHOTO_SUFFIXES)
        if files:
            found[product.name] = files
    return found


def _timing(rec, crop, repeats: int) -> tuple[float, float]:
    """Median ms to classify one crop, and one shelf image's SHELF_CROPS crops in one call."""
    shelf = [crop] * SHELF_CROPS
    rec.classify([crop])
    one, many = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        rec.classify([crop])
        one.append(time.perf_counter() - t)
        t = time.perf_counter()
        rec.classify(shelf)
        many.append(time.perf_counter() - t)
    return statistics.median(one) * 1e3, statistics.median(many) * 1e3


def _new_sku(photos: Path, holdout_dir: Path, threads: int, read, verify: bool = True) -> dict:
    """Enrol each held-out product from ENROL_PHOTOS train_* photos; top-1 on its val_* photos."""
    from vision.recognizer import Recognizer
    rec = Recognizer.load(holdout_dir, threads=threads, verify=verify)
    held = list(rec.card.raw.get("training", {}).get("holdout", []))
    if not held:
        return {"top1": None, "note": f"{holdout_dir} was trained without --holdout"}
    train, val = _split(photos, "train_"), _split(photos, "val_")
    gallery = rec.new_gallery()
    missing = [s for s in held if len(train.get(s, ())) < ENROL_PHOTOS]
    if missing:
        return {"top1": None, "note": f"{photos} lacks {ENROL_PHOTOS} train_* photos of "
                                      f"{', '.join(missing)}"}
    for sku in held:
        images = [read(p) for p in train[sku][:ENROL_PHOTOS]]
        rec.enrol(gallery, sku, images)
    rec = rec.with_gallery(gallery)
    per, hits, total, known_hits, known_total = {}, 0, 0, 0, 0
    for product, files in val.items():
        if product not in rec.labels:
            continue
        top = [r[0][0] for r in rec.classify([read(p) for p in files], top_k=1)]
        ok = sum(t == product for t in top)
        if product in held:
            per[product] = round(ok / len(files), 4)
            hits, total = hits + ok, total + len(files)
        else:
            known_hits, known_total = known_hits + ok, known_total + len(files)
    return {"model": str(holdout_dir), "skus": held, "enrol_photos": ENROL_PHOTOS,
            "items": total, "top1": round(hits / total, 4) if total else None, "per_sku": per,
            "known_items": known_total,
            "known_top1": round(known_hits / known_total, 4) if known_total else None,
            "verified": rec.verifies}


def bench(photos: Path, model_dir: Path | None, holdout_dir: Path, threads: int,
          repeats: int, views: int | None = None, verify: bool = True) -> dict:
    from vision.recognizer import Recognizer, read_photo
    if not photos.is_dir():
        raise VisionCliError(f"photos folder {photos}: missing (expected <product>/val_*.jpg)")
    val = _split(photos, "val_")
    if not val:
        raise VisionCliError(f"photos folder {photos}: no <product>/val_* photos")
    cache: dict[Path, object] = {}

    def read(path: Path):
        if path not in cache:
            cache[path] = read_photo(path)
        return cache[path]

    for files in val.values():               # every photo is checked before any is measured
        for f in files:
            read(f)
    rec = Recognizer.load(model_dir, threads=threads, views=views, verify=verify)
    labels = set(rec.labels)
    unknown = sorted(p for p in val if p not in labels)
    per_product, confusions = {}, Counter()
    hits = top3 = items = 0
    for product, files in val.items():
        if product in unknown:
            continue
        ranked = rec.classify([read(f) for f in files], top_k=3)
        ok = sum(r[0][0] == product for r in ranked)
        top3 += sum(any(name == product for name, _ in r) for r in ranked)
        confusions.update((product, r[0][0]) for r in ranked if r[0][0] != product)
        per_product[product] = {"items": len(files), "top1": round(ok / len(files), 4)}
        hits, items = hits + ok, items + len(files)
    if not items:
        raise VisionCliError(f"photos folder {photos}: none of its products is known to the "
                             f"model in {rec.model_dir} ({', '.join(unknown)})")
    if HOLDOUT_MODEL == holdout_dir and not holdout_dir.is_dir():
        new_sku = {"top1": None, "note": f"no holdout model at {holdout_dir} (train one with "
                                         f"`cabinet vision train --holdout SKU... --out "
                                         f"{holdout_dir}`)"}
    else:
        new_sku = _new_sku(photos, holdout_dir, threads, read, verify)
    crop = read(next(iter(val.values()))[0])
    ms_crop, ms_shelf = _timing(rec, crop, repeats)
    return {
        "photos": str(photos), "model": str(rec.model_dir), "version": rec.version,
        "items": items, "top1": round(hits / items, 4), "top3": round(top3 / items, 4),
        "per_product": per_product,
        "confusions": [{"product": a, "read_as": b, "count": n}
                       for (a, b), n in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
        "unknown_products": unknown,
        "new_sku": new_sku,
        "views": len(rec.card.views), "colour_weight": rec.card.colour_weight,
        "verified": rec.verifies,
        "threads": threads, "ms_per_crop": round(ms_crop, 2),
        "crops_per_shelf_image": SHELF_CROPS, "ms_per_shelf_image": round(ms_shelf, 2),
    }


def bench_main(argv: list[str]) -> int:
    from vision.data import data_root
    p = argparse.ArgumentParser(prog="cabinet bench vision",
                                description="per-item product recognition on val_* photos")
    p.add_argument("--photos", type=Path, default=data_root() / "products" / "grocery",
                   help="folder laid out like ../shared/data/products/grocery")
    p.add_argument("--model", type=Path, default=None, help="model folder (default models/)")
    p.add_argument("--holdout-model", type=Path, default=HOLDOUT_MODEL,
                   help="model trained with --holdout, for new-SKU accuracy (default models/holdout)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30, help="timing repetitions")
    p.add_argument("--views", type=int, default=None,
                   help="use only the card's first N test-time views (default all)")
    p.add_argument("--no-verify", action="store_true",
                   help="leave out the cards' local-feature verification (docs/vision.md)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    r = bench(args.photos, args.model, args.holdout_model, max(1, args.threads), max(1, args.repeats),
              args.views, not args.no_verify)
    if args.out is not None:
        try:
            args.out.write_text(json.dumps(r, indent=1) + "\n")
        except OSError as e:
            raise VisionCliError(f"--out {args.out}: cannot write it ({e.strerror})") from None
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"model {r['model']} (version {r['version']}), {r['items']} val_* photos in {r['photos']}")
    print(f"top-1 {r['top1']:.3f}   top-3 {r['top3']:.3f}")
    for name, row in sorted(r["per_product"].items(), key=lambda kv: kv[1]["top1"]):
        print(f"  {row['top1']:5.2f}  {name} ({row['items']})")
    if r["confusions"]:
        print("worst confusions:")
        for c in r["confusions"][:5]:
            print(f"  {c['count']} x {c['product']} read as {c['read_as']}")
    ns = r["new_sku"]
    if ns.get("top1") is None:
        print(f"new SKUs: not measured ({ns['note']})")
    else:
        print(f"new SKUs ({', '.join(ns['skus'])}) enrolled from {ns['enrol_photos']} photos: "
              f"top-1 {ns['top1']:.3f} on {ns['items']} photos (known products {ns['known_top1']})")
    print(f"{r['ms_per_crop']:.1f} ms a crop, {r['ms_per_shelf_image']:.1f} ms a shelf image "
          f"({r['crops_per_shelf_image']} crops), {r['views']} view(s), colour weight "
          f"{r['colour_weight']:g}, {r['threads']} threads")
    return 0


# ---- entry -----------------------------------------------------------------------------------

# ---- calibrate -------------------------------------------------------------------------------

def calibration_cameras(config, planogram, catalog, stage: str) -> dict:
    """Camera id -> ShelfCamera for every camera of the planogram: a real one (OpenCVCamera) as
    the configuration names it, or, for `source: sim`, a simulated camera over a simulated
    cabinet that the "operator" has emptied (stage empty) or filled to capacity (stage full)."""
    from cabinet.config import CameraConfig
    from cabinet.simworld import SimWorld, shelf_view_fn
    from vision.cameras import OpenCVCamera
    from vision.data import data_root
    from vision.sim.camera import SimShelfCamera
    from vision.sim.looks import foreign_photos, product_looks
    world = None
    out = {}
    for cam in sorted(planogram.cameras):
        source = config.cameras.get(cam, CameraConfig()).source
        if source != "sim":
            out[cam] = OpenCVCamera(source)
            continue
        if world is None:
            world = SimWorld(planogram, catalog, seed=0)
            world.restock({s.id: (s.capacity if stage == "full" else 0) for s in planogram.slots})
            looks = product_looks(catalog, data_root())
        out[cam] = SimShelfCamera(shelf_view_fn(world, planogram, cam), looks,
                                  seed=10_000 + len(out), foreign_photos=foreign_photos(data_root()))
    return out


def calibrate(config_path: Path, stage: str, out_dir: Path | None, frames: int) -> dict:
    """Capture one calibration stage through every shelf camera and save it with its hash."""
    from cabinet.catalog import load_catalog
    from cabinet.config import load_config
    from cabinet.planogram import load_planogram
    from vision.calibration import capture_stage, save_calibration
    config = load_config(config_path)
    catalog = load_catalog(config.catalog_path)
    planogram = load_planogram(config.planogram_path, catalog)
    cameras = calibration_cameras(config, planogram, catalog, stage)
    try:
        shots = capture_stage(cameras, frames)
    finally:
        for cam in cameras.values():
            if hasattr(cam, "close"):
                cam.close()
    folder = out_dir or config.data_path / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    cal = save_calibration(folder, stage, shots)
    return {"stage": stage, "folder": str(folder), "cameras": sorted(shots),
            "frames": frames, "content_hash": cal.content_hash,
            "complete": all(c.full is not None for c in cal.cameras.values())}


def calibrate_main(argv: list[str]) -> int:
    from vision.calibration import FRAMES, STAGES
    p = argparse.ArgumentParser(prog="cabinet vision calibrate",
                                description="Capture the empty shelves (stage empty: take every item "
                                            "out first) or the shelves filled to the planogram "
                                            "(stage full) through each shelf camera.")
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--config", type=Path, default=ROOT / "fixtures" / "cabinet.yaml")
    p.add_argument("--out", type=Path, default=None,
                   help="calibration folder (default: <data_dir>/calibration)")
    p.add_argument("--frames", type=int, default=FRAMES, help="frames per camera (median)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = calibrate(args.config, args.stage, args.out, args.frames)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"calibrated {args.stage} for {', '.join(result['cameras'])} in {result['folder']} "
              f"(content hash {result['content_hash'][:12]}; "
              f"{'both stages present' if result['complete'] else 'run the other stage too'})")
    return 0


def main(argv: list[str]) -> int:
    """`cabinet vision ...`: argv starts with the sub-command."""
    commands = {"train": train_main, "enroll": enroll_main, "calibrate": calibrate_main}
    if not argv or argv[0] not in commands:
        print("usage: cabinet vision {train,enroll,calibrate} ...  (cabinet vision train --help)",
              file=sys.stderr)
        return 2
    return _guarded(commands[argv[0]], argv[1:], "cabinet vision " + argv[0])


def bench_vision(argv: list[str]) -> int:
    return _guarded(bench_main, argv, "cabinet bench vision")


def _guarded(fn, argv: list[str], prog: str) -> int:
    try:
        return fn(argv)
    except _errors() as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
