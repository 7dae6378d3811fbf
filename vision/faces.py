"""Face identification: dlib encodings through face_recognition, and a vectorised gallery.

A photo is read with Pillow (EXIF rotation applied, alpha dropped), scaled so its long side is
at most `max_side` (HOG detection cost grows with the pixel count, and 800 px still finds the
faces in the shared photos, including the 320x240 one), detected with dlib's HOG detector and
encoded into 128 floats. Boxes come back in the original photo's pixels. Detection looks at the
scaled image itself (face boxes of about 70 px and more: a customer at a kiosk camera, every
person in the shared photos) and at twice its size (four times the pixels, 35 px faces) only
when the first look finds no face: 60-90 ms instead of 250-380 ms for an 800 px image. A frame
with one face big enough for the first look therefore counts even with a face under 70 px
further back (a person two or more times farther from the camera than the customer), which the
second look would have counted as a second face; docs/identity.md.

The gallery keeps every template in one float32 matrix with its squared norms, so identifying
is one matrix-vector product however many templates there are. The shipped threshold is 0.55:
on the shared faces (ten people, five of them single-photo impostors) every same-person pair is
below 0.52 and every different-person pair above 0.63, and a false accept charges the wrong
person while a false reject only costs a retry or the QR code, so the line sits near the genuine
side (0.03 above it, 0.08 below the closest impostors) rather than at face_recognition's default
of 0.6. `identify`/`identify_frame` decide by distance alone, on one frame: they stay for
callers that want that, but the cabinet's door decides with vision/identity.py (several frames,
an accept line of 0.45 with a margin to the second-best account, and a second-factor band up to
0.60; docs/identity.md), which reads the gallery through `account_distances`.

Only this module imports face_recognition; the rest of the project sees encodings as float32
arrays, or as 512 little-endian bytes for the SQLite store.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import face_recognition

ENCODING_SIZE = 128
DEFAULT_THRESHOLD = 0.55
DEFAULT_MAX_SIDE = 800
FRAME = "face camera frame"

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's order


class FaceError(ValueError):
    """A photo that cannot be used: says which file and what to do about it."""

    def __init__(self, path: str | Path | None, problem: str, *, what: str = "face photo") -> None:
        self.path = None if path is None else Path(path)
        where = what if path is None else f"{what} {path}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class FaceObservation:
    box: Box
    encoding: np.ndarray  # float32[128]

    @property
    def area(self) -> int:
        return _area(self.box)


@dataclass(frozen=True)
class FaceMatch:
    account_id: str
    distance: float


@dataclass(frozen=True)
class FaceResult:
    """What the face camera's frame says: `match` is set only for a known face."""

    faces: int  # how many faces the frame holds
    box: Box | None  # the largest face, the one identified
    match: FaceMatch | None
    nearest_distance: float | None = None  # to the closest template, matched or not

    @property
    def status(self) -> str:
        if self.faces == 0:
            return "no_face"
        return "match" if self.match is not None else "unknown"


def load_photo(path: str | Path) -> np.ndarray:
    """An RGB uint8 array of the photo; FaceError when it is missing or not an image."""
    p = Path(path)
    if not p.is_file():
        raise FaceError(p, "no such file; check the path")
    try:
        with Image.open(p) as img:
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FaceError(p, f"not a readable image ({e.__class__.__name__}); give a JPEG or PNG photo") from e


def _check_rgb(rgb: np.ndarray, source: str | Path | None) -> np.ndarray:
    if source == FRAME:
        source, what = None, FRAME
    else:
        what = "face photo"
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise FaceError(source, f"expected an RGB uint8 image (H, W, 3), got shape {shape} dtype {dtype}",
                        what=what)
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise FaceError(source, f"image of {rgb.shape[1]}x{rgb.shape[0]} px is too small to hold a face",
                        what=what)
    return np.ascontiguousarray(rgb)


def _detect(rgb: np.ndarray, max_side: int, source: str | Path | None):
    """(scaled image, scale, boxes in the scaled image, largest first)."""
    rgb = _check_rgb(rgb, source)
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    # dlib's HOG window is 80 px: at the image's own size it finds face boxes of about 70 px
    # and more, in a quarter of the time that looking at twice the size takes (boxes of 35 px);
    # twice the size is looked at only when the image's own size shows no face at all
    boxes = face_recognition.face_locations(small, number_of_times_to_upsample=0, model="hog")
    if not boxes:
        boxes = face_recognition.face_locations(small, number_of_times_to_upsample=1, model="hog")
    # largest first in the image's own pixels (two faces of one size at the scaled copy can
    # round to different sizes back in the original)
    boxes.sort(key=lambda b: _area(_unscaled(b, scale)), reverse=True)
    return small, scale, boxes


def _unscaled(box, scale: float) -> Box:
    top, right, bottom, left = box
    return (int(round(top / scale)), int(round(right / scale)),
            int(round(bottom / scale)), int(round(left / scale)))


def _area(box: Box) -> int:
    top, right, bottom, left = box
    return max(0, bottom - top) * max(0, right - left)


def _encode(small: np.ndarray, scale: float, boxes: list) -> list[FaceObservation]:
    if not boxes:
        return []
    encodings = face_recognition.face_encodings(small, known_face_locations=boxes, num_jitters=1)
    found = []
    for box, enc in zip(boxes, encodings):
        found.append(FaceObservation(box=_unscaled(box, scale),
                                     encoding=np.asarray(enc, dtype=np.float32)))
    return found


def encode_faces(rgb: np.ndarray, *, max_side: int = DEFAULT_MAX_SIDE,
                 source: str | Path | None = None) -> list[FaceObservation]:
    """Every face in an RGB image, largest first, with boxes in the image's own pixels."""
    small, scale, boxes = _detect(rgb, max_side, source)
    return _encode(small, scale, boxes)


def observe_single_face(rgb: np.ndarray, *, bgr: bool = False, max_side: int = DEFAULT_MAX_SIDE,
                        ) -> tuple[int, FaceObservation | None]:
    """(faces in a face-camera frame, the encoded face when there is exactly one, else None).

    A frame with no face or several is not encoded (encoding costs as much as detecting), so a
    caller combining frames spends nothing on the frames it will not count.
    """
    if bgr and isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = rgb[:, :, ::-1]
    small, scale, boxes = _detect(rgb, max_side, FRAME)
    if len(boxes) != 1:
        return len(boxes), None
    return 1, _encode(small, scale, boxes)[0]


def encode_photo(path: str | Path, *, max_side: int = DEFAULT_MAX_SIDE) -> list[FaceObservation]:
    """`encode_faces` of a photo file; FaceError when the file is not an image."""
    return encode_faces(load_photo(path), max_side=max_side, source=path)


def enrol_encodings(paths: Sequence[str | Path], *, max_side: int = DEFAULT_MAX_SIDE) -> list[np.ndarray]:
    """One template per photo; each photo must hold exactly one face, else FaceError names it.

    All photos are checked before anything is returned, so a bad one changes nothing.
    """
    if not paths:
        raise FaceError(None, "no photos given; enrol from at least one photo of the person")
    templates = []
    for path in paths:
        faces = encode_photo(path, max_side=max_side)
        if not faces:
            raise FaceError(path, "no face found; use a well-lit, frontal photo of one person")
        if len(faces) > 1:
            raise FaceError(path, f"{len(faces)} faces found; use a photo of the person alone")
        templates.append(faces[0].encoding)
    return templates


def encoding_to_bytes(encoding: np.ndarray) -> bytes:
    """512 bytes: 128 float32, little-endian (the SQLite store's format)."""
    return _check_encoding(encoding).astype("<f4").tobytes()


def encoding_from_bytes(blob: bytes) -> np.ndarray:
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) != ENCODING_SIZE * 4:
        size = len(blob) if hasattr(blob, "__len__") else type(blob).__name__
        raise ValueError(f"face template: expected {ENCODING_SIZE * 4} bytes, got {size}")
    return np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)


def _check_encoding(encoding: np.ndarray) -> np.ndarray:
    arr = np.asarray(encoding, dtype=np.float32)
    if arr.shape != (ENCODING_SIZE,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"face encoding: expected {ENCODING_SIZE} finite floats, got shape {arr.shape}")
    return arr


class FaceGallery:
    """Templates of enrolled accounts; `identify` answers the nearest account within threshold."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, capacity: int = 64) -> None:
        if not 0.0 < threshold < 2.0:
            raise ValueError(f"face gallery: threshold {threshold} is outside (0, 2)")
        self.threshold = float(threshold)
        self._matrix = np.zeros((max(1, capacity), ENCODING_SIZE), dtype=np.float32)
        self._norms = np.zeros(max(1, capacity), dtype=np.float32)
        self._ids: list[str] = []

    @classmethod
    def from_templates(cls, templates: Iterable[tuple[str, np.ndarray | bytes]],
                       threshold: float = DEFAULT_THRESHOLD) -> "FaceGallery":
        gallery = cls(threshold)
        for account_id, template in templates:
            if isinstance(template, (bytes, bytearray, memoryview)):
                template = encoding_from_bytes(template)
            gallery.add(account_id, template)
        return gallery

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def account_ids(self) -> frozenset[str]:
        return frozenset(self._ids)

    def add(self, account_id: str, encoding: np.ndarray) -> None:
        enc = _check_encoding(encoding)
        n = len(self._ids)
        if n == self._matrix.shape[0]:
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
            self._norms = np.concatenate([self._norms, np.zeros_like(self._norms)])
        self._matrix[n] = enc
        self._norms[n] = float(enc @ enc)
        self._ids.append(str(account_id))

    def remove(self, account_id: str) -> int:
        """Drop every template of the account; returns how many were dropped."""
        keep = [i for i, a in enumerate(self._ids) if a != account_id]
        dropped = len(self._ids) - len(keep)
        if dropped:
            self._matrix[: len(keep)] = self._matrix[keep]
            self._norms[: len(keep)] = self._norms[keep]
            self._ids = [self._ids[i] for i in keep]
        return dropped

    def distances(self, encoding: np.ndarray) -> np.ndarray:
        """Euclidean distance from the encoding to every template, in insertion order."""
        enc = _check_encoding(encoding)
        n = len(self._ids)
        sq = self._norms[:n] - 2.0 * (self._matrix[:n] @ enc) + float(enc @ enc)
        return np.sqrt(np.maximum(sq, 0.0))

    def nearest(self, encoding: np.ndarray) -> FaceMatch | None:
        """The closest template's account and distance, whatever the threshold."""
        if not self._ids:
            _check_encoding(encoding)
            return None
        d = self.distances(encoding)
        i = int(np.argmin(d))
        return FaceMatch(self._ids[i], float(d[i]))

    def account_distances(self, encodings: Sequence[np.ndarray], within: float,
                          ) -> dict[str, np.ndarray]:
        """Per account, its nearest template's distance in each encoding (one float per encoding).

        Exact for every account that has a template within `within` of some encoding, and for
        the two nearest accounts of each encoding; every account left out is farther than
        `within` from every encoding. One matrix product serves all the encodings.
        """
        encs = np.stack([_check_encoding(e) for e in encodings]) if len(encodings) else \
            np.zeros((0, ENCODING_SIZE), dtype=np.float32)
        n = len(self._ids)
        if n == 0 or len(encs) == 0:
            return {}
        sq = (self._norms[:n, None] - 2.0 * (self._matrix[:n] @ encs.T)
              + np.einsum("ij,ij->i", encs, encs)[None, :])
        dist = np.sqrt(np.maximum(sq, 0.0))  # (templates, encodings)
        ids = np.asarray(self._ids, dtype=object)
        wanted = set(ids[np.flatnonzero((dist <= within).any(axis=1))])
        for col in dist.T:  # the two nearest accounts of each encoding, whatever the distance
            first = int(np.argmin(col))
            wanted.add(ids[first])
            others = np.flatnonzero(ids != ids[first])
            if len(others):
                wanted.add(ids[others[int(np.argmin(col[others]))]])
        return {a: dist[np.flatnonzero(ids == a)].min(axis=0) for a in sorted(wanted)}

    def identify(self, encoding: np.ndarray) -> FaceMatch | None:
        best = self.nearest(encoding)
        return best if best is not None and best.distance <= self.threshold else None


def identify_frame(rgb: np.ndarray, gallery: FaceGallery, *, bgr: bool = False,
                   max_side: int = DEFAULT_MAX_SIDE) -> FaceResult:
    """Identify the largest face in a face-camera frame; no face -> status 'no_face'.

    Frames are RGB; pass `bgr=True` for a frame straight from a vision.cameras camera.
    """
    if bgr and isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3:
        rgb = rgb[:, :, ::-1]
    small, scale, boxes = _detect(rgb, max_side, FRAME)
    if not boxes:
        return FaceResult(faces=0, box=None, match=None)
    largest = _encode(small, scale, boxes[:1])[0]  # one encoding costs as much as detection
    nearest = gallery.nearest(largest.encoding)
    match = nearest if nearest is not None and nearest.distance <= gallery.threshold else None
    return FaceResult(faces=len(boxes), box=largest.box, match=match,
                      nearest_distance=None if nearest is None else nearest.distance)
