"""Calibration frames: what each shelf camera sees empty and filled to the planogram.

They are how the reader (vision.diff) knows a camera without knowing how anything is drawn:
`cabinet vision calibrate` asks the operator to empty the shelves, captures each camera through
its ShelfCamera port (the same `capture()` the controller uses), then to fill them as the
planogram says, and captures again. Each stage is the per-pixel median of FRAMES frames (sensor
noise and JPEG averaged out; a frame that is dark, blank or missing stops it with the camera
named). A calibration folder holds `<camera>/empty.png`, `<camera>/full.png` and
`calibration.json`: per file its sha256, image size and capture time, and `content_hash`, the
sha256 of the sorted (path, file hash) lines, which names this calibration in session bundles.
Loading checks every hash: a changed or missing file is an error naming it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np

from vision.cameras import ShelfCamera
from vision.diff import unusable_reason

FRAMES = 5
STAGES = ("empty", "full")
MANIFEST = "calibration.json"
FORMAT_VERSION = 1


class CalibrationError(ValueError):
    """A calibration that cannot be captured, saved or loaded; names the camera or file."""


@dataclass(frozen=True)
class CameraCalibration:
    """One camera's frames: the empty shelf (required) and the full planogram (optional)."""

    camera: str
    empty: np.ndarray
    full: np.ndarray | None = None

    def __post_init__(self) -> None:
        for stage, img in (("empty", self.empty), ("full", self.full)):
            if img is None and stage == "full":
                continue
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise CalibrationError(f"camera {self.camera}: the {stage} frame must be an HxWx3 uint8 image")
        if self.full is not None and self.full.shape != self.empty.shape:
            raise CalibrationError(f"camera {self.camera}: full frame {self.full.shape} and empty frame "
                                   f"{self.empty.shape} differ in size; recapture both")


@dataclass(frozen=True)
class Calibration:
    cameras: Mapping[str, CameraCalibration]
    content_hash: str = ""
    path: Path | None = None
    captured_at: Mapping[str, float] = field(default_factory=dict)

    def __getitem__(self, camera: str) -> CameraCalibration:
        return self.cameras[camera]

    def get(self, camera: str) -> CameraCalibration | None:
        return self.cameras.get(camera)


def capture_stage(cameras: Mapping[str, ShelfCamera], frames: int = FRAMES) -> dict[str, np.ndarray]:
    """Camera id -> the per-pixel median of `frames` captures; CalibrationError naming the
    camera when one gives no usable frame (calibrating on a dark lens would teach the reader
    that a dark shelf is empty)."""
    if frames < 1:
        raise CalibrationError(f"frames = {frames}: capture at least one frame per camera")
    out = {}
    for cam_id, cam in sorted(cameras.items()):
        shots = []
        for i in range(frames):
            img = cam.capture()
            why = unusable_reason(img) if img is None or isinstance(img, np.ndarray) else "not an image"
            if why:
                raise CalibrationError(f"camera {cam_id}: frame {i + 1} of {frames} is unusable: {why}; "
                                       f"fix the camera and calibrate again")
            if shots and img.shape != shots[0].shape:
                raise CalibrationError(f"camera {cam_id}: frame {i + 1} is {img.shape}, frame 1 was "
                                       f"{shots[0].shape}; the camera changed resolution")
            shots.append(img)
        out[cam_id] = np.median(np.stack(shots), axis=0).round().astype(np.uint8)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_hash(files: Mapping[str, str]) -> str:
    return _sha256("".join(f"{p} {h}\n" for p, h in sorted(files.items())).encode())


def save_calibration(folder: str | Path, stage: str, frames: Mapping[str, np.ndarray], *,
                     now: Callable[[], float] = time.time) -> Calibration:
    """Write one stage's frames into `folder` (other stages already there are kept) and
    rewrite calibration.json; returns the calibration now in the folder."""
    if stage not in STAGES:
        raise CalibrationError(f"stage {stage!r}: use one of {STAGES}")
    folder = Path(folder)
    manifest = _read_manifest(folder) if (folder / MANIFEST).is_file() else {"files": {}}
    files = dict(manifest["files"])
    for cam_id in frames:
        if stage == "full" and f"{cam_id}/empty.png" not in files:
            raise CalibrationError(f"{folder}: camera {cam_id} has no empty-shelf frame; run "
                                   f"`cabinet vision calibrate --stage empty` first")
    for cam_id, img in frames.items():
        if not cam_id or "/" in cam_id or cam_id.startswith("."):
            raise CalibrationError(f"camera id {cam_id!r} cannot name a folder; use letters, digits, _ or -")
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise CalibrationError(f"camera {cam_id}: the {stage} frame could not be encoded as PNG")
        data = buf.tobytes()
        rel = f"{cam_id}/{stage}.png"
        (folder / cam_id).mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        files[rel] = {"sha256": _sha256(data), "size": [int(img.shape[1]), int(img.shape[0])],
                      "captured_at": float(now())}
    doc = {"format_version": FORMAT_VERSION, "files": files,
           "content_hash": _content_hash({p: f["sha256"] for p, f in files.items()})}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / MANIFEST)
    return load_calibration(folder)


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no calibration here; run `cabinet vision calibrate`") from None
    except (OSError, ValueError) as e:
        raise CalibrationError(f"{path}: not readable JSON ({e}); calibrate again") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION \
            or not isinstance(doc.get("files"), dict):
        raise CalibrationError(f"{path}: format_version must be {FORMAT_VERSION} with a `files` mapping")
    return doc


def load_calibration(folder: str | Path) -> Calibration:
    """Every camera's frames, each file checked against its hash in calibration.json."""
    folder = Path(folder)
    doc = _read_manifest(folder)
    frames: dict[str, dict[str, np.ndarray]] = {}
    captured: dict[str, float] = {}
    for rel, meta in sorted(doc["files"].items()):
        path = folder / rel
        try:
            data = path.read_bytes()
        except OSError:
            raise CalibrationError(f"{path}: listed in {MANIFEST} but missing; calibrate again") from None
        if _sha256(data) != meta.get("sha256"):
            raise CalibrationError(f"{path}: content differs from its sha256 in {MANIFEST}; "
                                   f"the file was changed, calibrate again")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"{path}: not a readable image")
        cam_id, stage = rel.split("/")[0], Path(rel).stem
        if stage not in STAGES:
            raise CalibrationError(f"{folder / MANIFEST}: file {rel} is no stage of {STAGES}")
        frames.setdefault(cam_id, {})[stage] = img
        captured[rel] = float(meta.get("captured_at", 0.0))
    expect = _content_hash({p: f["sha256"] for p, f in doc["files"].items()})
    if doc.get("content_hash") != expect:
        raise CalibrationError(f"{folder / MANIFEST}: content_hash does not match its files; calibrate again")
    cams = {}
    for cam_id, stages in frames.items():
        if "empty" not in stages:
            raise CalibrationError(f"{folder}: camera {cam_id} has no empty-shelf frame; run "
                                   f"`cabinet vision calibrate --stage empty` first")
        cams[cam_id] = CameraCalibration(cam_id, stages["empty"], stages.get("full"))
    return Calibration(cams, doc["content_hash"], folder, captured)


# --- the appearance line (vision.diff.SAME_ITEM_MIN_SIMILARITY), from real photos ------------------

def _centre(img: np.ndarray, keep: float = 0.6) -> np.ndarray:
    """The middle of a hand-held product photo (the product, less of the shop behind it)."""
    h, w = img.shape[:2]
    ch, cw = max(1, int(h * keep)), max(1, int(w * keep))
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y:y + ch, x:x + cw]


def _not_products(folder: Path) -> list[np.ndarray]:
    """Photos of things that are not products (fridge_objects): each whole, and each boxed
    object of its Pascal VOC annotation."""
    import xml.etree.ElementTree as ET

    out = []
    for path in sorted((folder / "images").glob("*.jpg")):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"{path}: not a readable image")
        out.append(img)
        ann = folder / "annotations" / (path.stem + ".xml")
        if not ann.is_file():
            continue
        for obj in ET.parse(ann).findall("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (int(float(box.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x1 - x0 > 8 and y1 - y0 > 8:
                out.append(img[y0:y1, x0:x1])
    return out


def measure_appearance(data_root: str | Path, *, pairs: int = 20000, seed: int = 0) -> dict:
    """How alike vision.diff's appearance signature finds two different train_* photos of one
    product (every pair), two photos of different products (`pairs` random pairs) and a product
    photo against a photo of a thing that is not a product (every pair); each photo's centre
    shrunk to a shelf camera's item size first. Returns the percentiles of the same-product
    similarities and, at the 1st, the share of other pairs below it (what the line catches)."""
    import itertools
    import random

    from vision.diff import APPEARANCE_SIZE, appearance, look_similarity

    root = Path(data_root) / "products"
    grocery = root / "grocery"
    if not grocery.is_dir():
        raise CalibrationError(f"{grocery}: no product photos (products/grocery/<product>/train_*.jpg)")
    looks: dict[str, list[np.ndarray]] = {}
    for folder in sorted(p for p in grocery.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("train_*.jpg")):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise CalibrationError(f"{path}: not a readable image")
            small = cv2.resize(_centre(img), APPEARANCE_SIZE, interpolation=cv2.INTER_AREA)
            looks.setdefault(folder.name, []).append(appearance(small))
    others = [appearance(cv2.resize(o, APPEARANCE_SIZE, interpolation=cv2.INTER_AREA))
              for o in _not_products(root / "fridge_objects")]
    names = [n for n, v in looks.items() if len(v) >= 2]
    if len(names) < 2 or not others:
        raise CalibrationError(f"{root}: needs train_* photos of two products or more and "
                               f"fridge_objects/images")
    same = np.array([look_similarity(a, b) for n in names for a, b in itertools.combinations(looks[n], 2)])
    rng = random.Random(seed)
    other_products = []
    for _ in range(pairs):
        p, q = rng.sample(names, 2)
        other_products.append(look_similarity(rng.choice(looks[p]), rng.choice(looks[q])))
    foreign = np.array([look_similarity(a, o) for n in names for a in looks[n] for o in others])
    line = float(np.percentile(same, 1))
    return {"same_pairs": int(same.size), "products": len(names), "not_products": len(others),
            "same_p1": round(line, 4), "same_p5": round(float(np.percentile(same, 5)), 4),
            "same_p50": round(float(np.median(same)), 4),
            "other_products_below_p1": round(float(np.mean(np.array(other_products) < line)), 4),
            "not_products_below_p1": round(float(np.mean(foreign < line)), 4),
            "log_lr": look_log_lr_table(same, np.array(other_products))}


def look_log_lr_table(same: np.ndarray, other: np.ndarray, step: float = 0.05) -> list[float]:
    """vision.diff.LOOK_LOG_LR from measured similarities: per bin of `step` from 0 to 1, the
    log of how much likelier the similarity is between two photos of one product than between
    photos of two different products (add-one smoothed), made non-decreasing from the top down
    (a lower similarity never speaks more for "the same item"), rounded to 0.01."""
    edges = np.linspace(0.0, 1.0, int(round(1 / step)) + 1)
    hs, _ = np.histogram(np.clip(same, 0, 1), edges)
    ho, _ = np.histogram(np.clip(other, 0, 1), edges)
    lr = np.log((hs + 1) / (hs.sum() + hs.size)) - np.log((ho + 1) / (ho.sum() + ho.size))
    for i in range(lr.size - 2, -1, -1):
        lr[i] = min(lr[i], lr[i + 1])
    return [round(float(v), 2) for v in lr]


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["appearance"]:
        print("usage: python -m vision.calibration appearance [DATA_ROOT]", file=sys.stderr)
        sys.exit(2)
    from vision.data import data_root

    where = Path(sys.argv[2]) if len(sys.argv) > 2 else data_root()
    if not (where / "products").is_dir():
        print(f"{where}: no products/ folder; pass DATA_ROOT (the folder holding products/)",
              file=sys.stderr)
        sys.exit(2)
    print(json.dumps(measure_appearance(where), indent=2))
