"""The session bundle: one directory per session holding what reconcile needs and decided.

    <root>/<session_id>/
        bundle.json        context, settled weights and samples, image names, inventory, params,
                           the calibration and recognizer in force, sha256 of every file
        catalog.yaml       byte copies of the files in force when the session opened
        planogram.yaml
        images/<camera>_before.png, images/<camera>_after.png
        calibration/<camera>_empty.png, calibration/<camera>_full.png   (when calibrated)
        recognizer/gallery.json   the enrolled SKUs the recognizer used (when it had any)
        result.json        what reconcile decided (ReconcileResult.to_json)

The format, field by field, with its JSON Schema: docs/session-bundle.md. A bundle carries or
names by content hash everything reconcile reads, so it replays on any machine: the weights are
strict finite numbers (a numeric string, NaN or a load far below zero is refused naming the
field), and a bundle without its after-snapshot is "interrupted", which reconcile refuses.

`BundleWriter` writes it step by step as the session goes (context, vision, before-snapshot,
after-images, after, result); every file is written to a temporary name, fsynced and renamed, so a crash leaves the
old or the new file, never half of one. The before-snapshot is written once and never replaced
(invariant 5). `load_bundle` reads a bundle back, checking bundle.json against its schema
(cabinet/schemas/bundle.schema.json) and the copies of catalog and planogram, and raises a
`BundleError` naming the file and what is wrong; `load_bundle(path, known=...)` takes an image
from `known` (path -> (sha256, pixels): an earlier load's `decoded`, or the writer's own, which
holds exactly the pixels it encoded losslessly) instead of decoding it again when bundle.json
records that same sha256 for it, and likewise the parsed catalog and planogram: the controller
reads its bundle without decoding a PNG or parsing YAML.
`load_recognizer` loads the recognizer a bundle names, with its gallery, or says what is
missing. Times are UTC ISO 8601 strings.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cabinet.catalog import Catalog, load_catalog
from cabinet.errors import BundleError, CabinetError
from cabinet.planogram import Planogram, load_planogram

SCHEMA_VERSION = 2
BUNDLE_JSON = "bundle.json"
RESULT_JSON = "result.json"
MIN_LOAD_G = -50.0  # a tared shelf reads a few grams either side of zero; far below is a fault
SHA256 = r"^[0-9a-f]{64}$"

# a weight in grams: a JSON number (never a numeric string or a boolean), finite
Grams = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=MIN_LOAD_G)]


# --- bundle.json schema ----------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShelfRecord(_Strict):
    channel: int = Field(ge=0, strict=True)
    before_g: Grams | None = Field(default=None, description="Settled load before (grams); "
                                   "null when the load cell gave no reading")
    after_g: Grams | None = None
    before_stable: bool = Field(default=False, strict=True)
    after_stable: bool = Field(default=False, strict=True)
    samples_before: list[Grams] = Field(default_factory=list, description="The measured "
                                        "samples (grams) the settled value came from, oldest "
                                        "first; reconcile estimates the noise from them")
    samples_after: list[Grams] = Field(default_factory=list)


class CameraRecord(_Strict):
    before: str | None = Field(default=None, description="Image path inside the bundle; null "
                               "when the camera gave no image")
    after: str | None = None


class ParamsRecord(_Strict):
    load_cell_noise_g: float = Field(default=2.0, gt=0, strict=True, allow_inf_nan=False)
    min_confidence: float = Field(default=0.95, ge=0, le=1, strict=True, allow_inf_nan=False)


class CalibrationCameraRecord(_Strict):
    empty: str = Field(description="PNG path inside the bundle: the empty shelf")
    full: str | None = Field(default=None, description="PNG path: the shelf filled to the "
                             "planogram; null when not captured")


class CalibrationRecord(_Strict):
    content_hash: str = Field(description="vision.calibration's content_hash of the "
                              "calibration folder the frames were copied from")
    cameras: dict[str, CalibrationCameraRecord] = Field(default_factory=dict)


class RecognizerRecord(_Strict):
    version: str = Field(min_length=1, description="vision.recognizer.Recognizer.version: a "
                         "hash of the model, its prototypes and the product gallery")
    model_sha256: str | None = Field(default=None, pattern=SHA256)
    gallery: str | None = Field(default=None, description="Path inside the bundle of a copy "
                                "of the product gallery (the SKUs enrolled without "
                                "retraining) the recognizer used; null: none")


class BundleRecord(_Strict):
    schema_version: int = Field(ge=1, le=SCHEMA_VERSION)
    session_id: str = Field(min_length=1)
    cabinet_id: str
    account_id: str | None = None
    opened_at: str
    closed_at: str | None = None
    timings: dict[str, float | str] = Field(default_factory=dict)
    params: ParamsRecord = Field(default_factory=ParamsRecord)
    shelves: dict[str, ShelfRecord] = Field(default_factory=dict)
    cameras: dict[str, CameraRecord] = Field(default_factory=dict)
    inventory_before: dict[str, list[str]] = Field(default_factory=dict)
    calibration: CalibrationRecord | None = Field(default=None, description="The shelf "
                                                  "cameras' calibration frames, copied in")
    recognizer: RecognizerRecord | None = Field(default=None, description="The product "
                                                "recognizer reconcile must use; null: none")
    files: dict[str, Annotated[str, Field(pattern=SHA256)]] = Field(
        default_factory=dict, description="sha256 of every other file of the bundle, by path")


# --- the loaded bundle -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShelfWeights:
    channel: int
    before_g: float | None
    after_g: float | None
    before_stable: bool
    after_stable: bool
    samples_before: tuple[float, ...] = ()
    samples_after: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class CameraImages:
    before: np.ndarray | None
    after: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class Bundle:
    path: Path
    record: BundleRecord
    catalog: Catalog
    planogram: Planogram
    shelves: Mapping[str, ShelfWeights]
    images: Mapping[str, CameraImages]
    inventory_before: Mapping[str, tuple[str, ...]]
    result: dict[str, Any] | None = None
    calibration: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # camera -> CameraCalibration
    decoded: Mapping[str, tuple[str, np.ndarray]] = dataclasses.field(
        default_factory=dict, repr=False)   # image path -> (sha256, pixels), for load(like=)

    @property
    def session_id(self) -> str:
        return self.record.session_id

    @property
    def complete(self) -> bool:
        """The after-snapshot was written (closed_at set): the session ran to its end."""
        return self.record.closed_at is not None

    def require_complete(self) -> None:
        if not self.complete:
            raise BundleError(self.path / BUNDLE_JSON, "interrupted: the bundle has no "
                              "after-snapshot (closed_at is null), so there is nothing to "
                              "compare the before-snapshot with; recover the session with the "
                              "controller or review it by hand")

    @property
    def params(self) -> ParamsRecord:
        return self.record.params


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _iso(at: dt.datetime | str | None) -> str:
    if at is None:
        return utc_now()
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        raise ValueError("bundle times must be timezone-aware (UTC)")
    return at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, rename over `path`, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _png(image: np.ndarray, where: str) -> bytes:
    import cv2
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise BundleError(where, "an image must be a uint8 array (H, W) or (H, W, 3)")
    # level 1 of 9: a fifth faster to write than the default 3 for ~12% more bytes; lossless
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise BundleError(where, "could not encode the image as PNG")
    return buf.tobytes()


# Calibration frames are the same objects session after session: their PNGs are encoded once.
# id(frame) -> (frame, png); the frame is held, so its id is not reused while cached.
_FRAME_PNGS: dict[int, tuple[np.ndarray, bytes]] = {}
_FRAME_PNGS_MAX = 64


def _png_of_frame(image: np.ndarray, where: str) -> bytes:
    held = _FRAME_PNGS.get(id(image))
    if held is not None and held[0] is image:
        return held[1]
    data = _png(image, where)
    if len(_FRAME_PNGS) >= _FRAME_PNGS_MAX:
        _FRAME_PNGS.pop(next(iter(_FRAME_PNGS)))
    _FRAME_PNGS[id(image)] = (image, data)
    return data


class BundleWriter:
    """Writes one session's bundle as the session goes; safe to re-open after a crash."""

    def __init__(self, root: str | Path, session_id: str):
        if not session_id or "/" in session_id or session_id in {".", ".."}:
            raise BundleError(root, f"session id {session_id!r} cannot name a directory")
        self.dir = Path(root) / session_id
        self.session_id = session_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._record: dict[str, Any] | None = None
        self._planogram: Planogram | None = None
        # image path -> (sha256 of its PNG, the BGR pixels encoded): what load_bundle would
        # decode from that file, for load_bundle(known=)
        self.decoded: dict[str, tuple[str, np.ndarray]] = {}
        if (self.dir / BUNDLE_JSON).exists():  # resuming after a restart
            self._record = json.loads((self.dir / BUNDLE_JSON).read_text("utf-8"))
            catalog = load_catalog(self.dir / "catalog.yaml")
            self._planogram = load_planogram(self.dir / "planogram.yaml", catalog)

    @property
    def path(self) -> Path:
        return self.dir

    def _put(self, name: str, data: bytes, pixels: np.ndarray | None = None) -> None:
        """A file of the bundle, with its sha256 in bundle.json's `files`; `pixels`: the BGR
        image `data` encodes losslessly (kept in `decoded`)."""
        atomic_write(self.dir / name, data)
        self._record_file(name, hashlib.sha256(data).hexdigest(), pixels)

    def _store(self, name: str, image: np.ndarray) -> tuple[str, str, np.ndarray]:
        """Encode `image` as the PNG `name` and write it; (name, sha256, image). No record."""
        data = _png(image, str(self.dir / name))
        atomic_write(self.dir / name, data)
        return name, hashlib.sha256(data).hexdigest(), image

    def _record_file(self, name: str, digest: str, pixels: np.ndarray | None) -> None:
        self._need_context().setdefault("files", {})[name] = digest
        if pixels is not None and pixels.ndim == 3 and pixels.shape[2] == 3:
            kept = pixels.copy()
            kept.flags.writeable = False   # shared by every load that takes it: never changed
            self.decoded[name] = (digest, kept)

    def _save(self) -> None:
        BundleRecord.model_validate(self._record)  # never write what load_bundle would refuse
        text = json.dumps(self._record, indent=2, sort_keys=False)
        atomic_write(self.dir / BUNDLE_JSON, text.encode("utf-8"))

    def _need_context(self) -> dict[str, Any]:
        if self._record is None or self._planogram is None:
            raise BundleError(self.dir, "write_context() must come first")
        return self._record

    def write_context(self, planogram_path: str | Path, catalog_path: str | Path,
                      account_id: str | None, *, opened_at: dt.datetime | str | None = None,
                      load_cell_noise_g: float = 2.0, min_confidence: float = 0.95,
                      planogram: Planogram | None = None,
                      catalog: Catalog | None = None) -> None:
        """Copy the catalog and planogram in force and start bundle.json. Both files are
        validated first (a FormatError leaves the bundle without them), unless the caller
        passes the `planogram` it already loaded from these same, unchanging files (the
        controller does, to keep ~10 ms of YAML parsing off the path to the unlock); with the
        `catalog` too, both are kept in `decoded` for load_bundle(known=)."""
        if self._record is not None:
            raise BundleError(self.dir / BUNDLE_JSON, "the context is already written")
        if planogram is None:
            planogram = load_planogram(planogram_path, load_catalog(catalog_path))
        catalog_bytes = Path(catalog_path).read_bytes()
        planogram_bytes = Path(planogram_path).read_bytes()
        self._planogram = planogram
        self._record = {
            "schema_version": SCHEMA_VERSION, "session_id": self.session_id,
            "cabinet_id": planogram.cabinet_id, "account_id": account_id,
            "opened_at": _iso(opened_at), "closed_at": None, "timings": {},
            "params": {"load_cell_noise_g": float(load_cell_noise_g),
                       "min_confidence": float(min_confidence)},
            "shelves": {s.id: {"channel": s.channel} for s in planogram.shelves},
            "cameras": {}, "inventory_before": {}, "calibration": None, "recognizer": None,
            "files": {}}
        self._put("catalog.yaml", catalog_bytes)
        self._put("planogram.yaml", planogram_bytes)
        if catalog is not None:
            files = self._record["files"]
            self.decoded["catalog.yaml"] = (files["catalog.yaml"], catalog)
            self.decoded["planogram.yaml"] = (files["planogram.yaml"], planogram)
        self._save()

    def write_vision(self, calibration: Any = None, recognizer: Any = None) -> None:
        """The shelf cameras' calibration (vision.calibration.Calibration: its frames are
        copied in, with its content_hash) and the recognizer reconcile must use (named by its
        `version`). Before the before-snapshot; either may be None."""
        rec = self._need_context()
        if "before_at" in rec["timings"]:
            raise BundleError(self.dir / BUNDLE_JSON, "write_vision() must come before the "
                              "before-snapshot")
        if calibration is not None:
            cams = {}
            for camera, cal in sorted(calibration.cameras.items()):
                if camera not in set(self._planogram.cameras):
                    raise BundleError(self.dir, f"calibration camera '{camera}' is not in the "
                                      f"planogram")
                entry = {"empty": f"calibration/{camera}_empty.png", "full": None}
                self._put(entry["empty"], _png_of_frame(cal.empty, str(self.dir / entry["empty"])),
                          cal.empty)
                if cal.full is not None:
                    entry["full"] = f"calibration/{camera}_full.png"
                    self._put(entry["full"], _png_of_frame(cal.full, str(self.dir / entry["full"])),
                              cal.full)
                cams[camera] = entry
            rec["calibration"] = {"content_hash": str(calibration.content_hash), "cameras": cams}
        if recognizer is not None:
            card = getattr(recognizer, "card", None)
            rec["recognizer"] = {"version": str(recognizer.version),
                                 "model_sha256": getattr(card, "model_sha256", None),
                                 "gallery": None}
            gallery = getattr(recognizer, "gallery", None)
            if gallery is not None:
                name = "recognizer/gallery.json"
                gallery.save(self.dir / name)
                rec["recognizer"]["gallery"] = name
                rec.setdefault("files", {})[name] = hashlib.sha256(
                    (self.dir / name).read_bytes()).hexdigest()
        self._save()

    def _write_side(self, side: str, weights: Mapping[str, Any],
                    images: Mapping[str, np.ndarray | None]) -> None:
        rec = self._need_context()
        for shelf_id, reading in weights.items():
            if shelf_id not in rec["shelves"]:
                raise BundleError(self.dir, f"shelf '{shelf_id}' is not in the planogram")
            grams, stable, samples = reading
            rec["shelves"][shelf_id].update({
                f"{side}_g": None if grams is None else float(grams),
                f"{side}_stable": bool(stable),
                f"samples_{side}": [round(float(x), 3) for x in (samples or ())]})
        cameras = set(self._planogram.cameras)
        for camera in images:
            if camera not in cameras:
                raise BundleError(self.dir, f"camera '{camera}' is not in the planogram")
        names = {camera: f"images/{camera}_{side}.png" for camera, image in images.items()
                 if image is not None}
        # every camera's PNG encoded and stored at once (OpenCV and the file writes release
        # the GIL); each file and its hash are recorded here, in the caller's thread
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            stored = list(pool.map(lambda c: self._store(names[c], images[c]), names))
        for name, digest, kept in stored:
            self._record_file(name, digest, kept)
        for camera in images:
            rec["cameras"].setdefault(camera, {"before": None, "after": None})[side] = \
                names.get(camera)

    def write_before(self, weights: Mapping[str, tuple[float | None, bool, Any]],
                     images: Mapping[str, np.ndarray | None],
                     inventory: Mapping[str, Any], *, at: dt.datetime | str | None = None) -> None:
        """The before-snapshot: shelf id -> (grams, stable, samples), camera -> image,
        slot id -> SKUs left to right. Written once; a second call raises BundleError."""
        rec = self._need_context()
        if "before_at" in rec["timings"]:
            raise BundleError(self.dir / BUNDLE_JSON, "the before-snapshot is already written; "
                              "it is never replaced")
        self._write_side("before", weights, images)
        rec["inventory_before"] = {k: list(v) for k, v in inventory.items()}
        rec["timings"]["before_at"] = _iso(at)
        self._save()

    def write_after_images(self, images: Mapping[str, np.ndarray | None]) -> None:
        """The after images alone, as soon as the door is shut (the shelves may still swing):
        vision can read them while the load cells settle. The bundle stays interrupted
        (closed_at null) until write_after() adds the settled weights."""
        rec = self._need_context()
        if "before_at" not in rec["timings"]:
            raise BundleError(self.dir, "write_before() must come before the after images")
        self._write_side("after", {}, images)
        self._save()

    def write_after(self, weights: Mapping[str, tuple[float | None, bool, Any]],
                    images: Mapping[str, np.ndarray | None], *,
                    closed_at: dt.datetime | str | None = None,
                    timings: Mapping[str, float | str] | None = None) -> None:
        """The after-snapshot (settled weights after the door closed, images; `images` may be
        empty when write_after_images() wrote them)."""
        rec = self._need_context()
        if "before_at" not in rec["timings"]:
            raise BundleError(self.dir, "write_before() must come before write_after()")
        self._write_side("after", weights, images)
        rec["closed_at"] = _iso(closed_at)
        rec["timings"].update(dict(timings or {}))
        rec["timings"]["after_at"] = utc_now()
        self._save()

    def add_timings(self, **timings: float | str) -> None:
        self._need_context()["timings"].update(timings)
        self._save()

    def write_result(self, result: Any) -> Path:
        """result.json from a ReconcileResult (or anything with to_json(), or a dict)."""
        text = result.to_json() if hasattr(result, "to_json") else json.dumps(result, indent=2)
        path = self.dir / RESULT_JSON
        atomic_write(path, text.encode("utf-8"))
        return path


# --- reading a bundle back -------------------------------------------------------------------

def _read_file(bundle_dir: Path, name: str, files: Mapping[str, str], field: str) -> bytes:
    path = bundle_dir / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(bundle_dir / BUNDLE_JSON, f"{field}: path {name!r} leaves the bundle")
    if not path.is_file():
        raise BundleError(path, f"missing (named by {BUNDLE_JSON} {field})")
    data = path.read_bytes()
    want = files.get(name)
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise BundleError(path, f"changed since the session: its sha256 differs from "
                          f"{BUNDLE_JSON} files.{name}")
    return data


def _read_image(bundle_dir: Path, name: str | None, files: Mapping[str, str] = {},
                field: str = "cameras", decoded: dict | None = None,
                known: Mapping[str, tuple[str, np.ndarray]] = {}) -> np.ndarray | None:
    """The image `name` of the bundle; with `known` (path -> (sha256, pixels) of an earlier
    load), one whose recorded sha256 is unchanged is not read again. Every image read is
    noted in `decoded`."""
    if name is None:
        return None
    want = files.get(name)
    if want is not None and known.get(name, ("",))[0] == want:
        image = known[name][1]
    else:
        import cv2
        path = bundle_dir / name
        data = _read_file(bundle_dir, name, files, field)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise BundleError(path, "image is damaged (not a readable PNG)")
        want = hashlib.sha256(data).hexdigest()
    if decoded is not None:
        decoded[name] = (want, image)
    return image


def load_bundle(path: str | Path, *,
                known: Mapping[str, tuple[str, np.ndarray]] | None = None) -> Bundle:
    """Read a session bundle; BundleError (file + what is wrong) when it is damaged. `known`:
    image path -> (sha256, pixels) of this bundle's images already in memory (an earlier
    load's `decoded`, its writer's); one whose sha256 bundle.json records is not decoded again."""
    bdir = Path(path)
    if not bdir.is_dir():
        raise BundleError(bdir, "no such session bundle directory")
    bjson = bdir / BUNDLE_JSON
    try:
        raw = json.loads(bjson.read_text("utf-8"))
    except FileNotFoundError:
        raise BundleError(bjson, "missing; this is not a session bundle") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(bjson, f"damaged JSON: {e}") from None
    try:
        record = BundleRecord.model_validate(raw)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        parts = []
        for err in errs[:5]:
            key = ".".join(str(p) for p in err["loc"])
            parts.append(f"{key} = {err.get('input')!r}: {err['msg']}")
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        raise BundleError(bjson, "; ".join(parts) + more) from None
    known = known or {}
    decoded: dict[str, tuple[str, Any]] = {}
    names = ("catalog.yaml", "planogram.yaml")
    if all(record.files.get(n) and known.get(n, ("",))[0] == record.files[n] for n in names):
        catalog, planogram = known["catalog.yaml"][1], known["planogram.yaml"][1]
    else:
        for name in names:
            if (bdir / name).is_file():
                _read_file(bdir, name, record.files, "files")
        try:
            catalog = load_catalog(bdir / "catalog.yaml")
            planogram = load_planogram(bdir / "planogram.yaml", catalog)
        except CabinetError as e:
            raise BundleError(bdir, f"the bundle's catalog or planogram copy is bad: {e}") from None
    if all(record.files.get(n) for n in names):
        decoded.update({"catalog.yaml": (record.files["catalog.yaml"], catalog),
                        "planogram.yaml": (record.files["planogram.yaml"], planogram)})
    shelf_ids = {s.id for s in planogram.shelves}
    for shelf_id in record.shelves:
        if shelf_id not in shelf_ids:
            raise BundleError(bjson, f"shelves.{shelf_id}: not a shelf of the bundle's planogram")
    for slot_id, skus in record.inventory_before.items():
        if not planogram.has_slot(slot_id):
            raise BundleError(bjson, f"inventory_before.{slot_id}: not a slot of the planogram")
        for sku in skus:
            if sku not in catalog:
                raise BundleError(bjson, f"inventory_before.{slot_id}: SKU {sku!r} is not in "
                                  f"the bundle's catalog")
    shelves = {k: ShelfWeights(v.channel, v.before_g, v.after_g, v.before_stable,
                               v.after_stable, tuple(v.samples_before), tuple(v.samples_after))
               for k, v in record.shelves.items()}
    cameras = set(planogram.cameras)
    for cam in record.cameras:
        if cam not in cameras:
            raise BundleError(bjson, f"cameras.{cam}: not a camera of the bundle's planogram")
    images = {cam: CameraImages(
                  _read_image(bdir, c.before, record.files, f"cameras.{cam}.before", decoded, known),
                  _read_image(bdir, c.after, record.files, f"cameras.{cam}.after", decoded, known))
              for cam, c in record.cameras.items()}
    calibration = _load_calibration(bdir, record, cameras, decoded, known)
    result = None
    rpath = bdir / RESULT_JSON
    if rpath.exists():
        try:
            result = json.loads(rpath.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(rpath, f"damaged JSON: {e}") from None
    inventory = {k: tuple(v) for k, v in record.inventory_before.items()}
    return Bundle(bdir, record, catalog, planogram, shelves, images, inventory, result,
                  calibration, decoded)


def _load_calibration(bdir: Path, record: BundleRecord, cameras: set[str],
                      decoded: dict | None = None,
                      known: Mapping[str, tuple[str, np.ndarray]] = {}) -> dict[str, Any]:
    if record.calibration is None:
        return {}
    from vision.calibration import CalibrationError, CameraCalibration
    out = {}
    for cam, c in record.calibration.cameras.items():
        where = f"calibration.cameras.{cam}"
        if cam not in cameras:
            raise BundleError(bdir / BUNDLE_JSON, f"{where}: not a camera of the bundle's planogram")
        empty = _read_image(bdir, c.empty, record.files, f"{where}.empty", decoded, known)
        full = _read_image(bdir, c.full, record.files, f"{where}.full", decoded, known)
        try:
            out[cam] = CameraCalibration(cam, empty, full)
        except CalibrationError as e:
            raise BundleError(bdir / c.empty, f"{where}: {e}") from None
    return out



def load_recognizer(bundle: Bundle, model_dir: str | Path | None = None) -> Any:
    """The recognizer `bundle` was read with: the model in `model_dir` (default: the committed
    models/) with the bundle's own copy of its product gallery; None when it names none.
    BundleError naming the missing model by its version and sha256, and what to do, when this
    machine does not have it."""
    named = bundle.record.recognizer
    if named is None:
        return None
    from vision.recognizer import Recognizer, RecognizerError
    where = bundle.path / BUNDLE_JSON
    want = f"{named.version}" + (f" (model file sha256 {named.model_sha256})"
                                 if named.model_sha256 else "")
    gallery = None
    if named.gallery is not None:
        _read_file(bundle.path, named.gallery, bundle.record.files, "recognizer.gallery")
        gallery = bundle.path / named.gallery
    try:
        recognizer = Recognizer.load(None if model_dir is None else Path(model_dir),
                                     gallery=gallery)
    except RecognizerError as e:
        raise BundleError(where, f"recognizer: model {want} not found on this machine ({e}): "
                          f"install models/ at that version or pass --model DIR") from None
    if recognizer.version != named.version:
        raise BundleError(where, f"recognizer: the bundle was read with model {want}, the one "
                          f"here is {recognizer.version} (model file sha256 "
                          f"{recognizer.card.model_sha256}): install models/ at that version "
                          f"or pass --model DIR")
    return recognizer
