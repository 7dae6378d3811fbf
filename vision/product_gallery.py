"""Enrolled products: SKUs the recogniser knows from a few photos, without retraining.

`cabinet vision enroll SKU PHOTO...` embeds each photo with the shipped model (`Recognizer.embed`:
the network's features and, when the model card has a colour block, the photo's colour) and
stores the L2-normalised embeddings under the SKU in a gallery file. The recogniser then scores a crop
against the model's own classes and against every enrolled SKU (cosine similarity to the SKU's
mean embedding), so a new product is sold the day it arrives.

The file is JSON, versioned and content-hashed: `sha256` is the hash of the canonical JSON of
everything else, so a bundle that names the gallery by hash names exactly these embeddings, and
a hand-edited or truncated file is refused. Embeddings only make sense for the model that made
them: the gallery records the model file's sha256 and the recogniser refuses a gallery made with
another model (re-enrol the photos). Photos are named by file name and content hash, never
stored. When the model card verifies by local features, each photo's SIFT keypoints and
descriptors are stored too (`local`, base64; about 70 kB a photo), so a crop can be checked
against the SKU's own print; an entry without them is scored by its embedding alone.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import NamedTuple
from pathlib import Path

import numpy as np

FORMAT = "cabinet-product-gallery"
FORMAT_VERSION = 1


class GalleryError(ValueError):
    """A gallery file that cannot be used; the message names the file and what to do."""


class LocalFeatures(NamedTuple):
    """One photo's keypoints (K x 2 float32, pixels) and SIFT descriptors (K x 128 uint8), as
    vision.recognizer.local_features takes them (for its local-feature verification)."""
    points: np.ndarray
    descriptors: np.ndarray


def _encode_local(lf: LocalFeatures) -> dict:
    return {"points": base64.b64encode(np.ascontiguousarray(lf.points, "<f4").tobytes()).decode(),
            "descriptors": base64.b64encode(np.ascontiguousarray(lf.descriptors, np.uint8)
                                            .tobytes()).decode()}


def _decode_local(doc: dict) -> LocalFeatures:
    pts = np.frombuffer(base64.b64decode(doc["points"], validate=True), "<f4").reshape(-1, 2)
    desc = np.frombuffer(base64.b64decode(doc["descriptors"], validate=True), np.uint8)
    desc = desc.reshape(-1, 128)
    if len(pts) != len(desc):
        raise ValueError(f"local features: {len(pts)} points but {len(desc)} descriptors")
    return LocalFeatures(pts.astype(np.float32), desc.copy())


@dataclass(frozen=True)
class GalleryEntry:
    sku: str
    embeddings: np.ndarray                     # k x D float32, rows L2-normalised
    photos: tuple[dict, ...] = ()              # {"name": file name, "sha256": hex}
    local: tuple[LocalFeatures, ...] = ()      # per photo, for verification (may be empty)

    def centroid(self) -> np.ndarray:
        mean = self.embeddings.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


@dataclass
class ProductGallery:
    """SKU -> embeddings made by the model whose file hash is `model_sha256`."""

    model_sha256: str
    dim: int
    entries: dict[str, GalleryEntry] = field(default_factory=dict)

    # ---- content ----------------------------------------------------------------------------
    def add(self, sku: str, embeddings: np.ndarray, photos: list[dict] | tuple = (), *,
            normalise: bool = True, local: list | tuple = ()) -> GalleryEntry:
        """Add photos' embeddings to `sku` (appended to what it already has), and optionally
        their local features (LocalFeatures per photo, for the recogniser's verification).

        Values are kept at 6 significant digits, which float32 holds exactly, so saving and
        loading a gallery gives back the same numbers and the same content hash."""
        sku = validate_sku(sku)
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != self.dim or len(emb) == 0:
            raise GalleryError(f"gallery: SKU {sku!r}: expected k x {self.dim} embeddings, "
                               f"got shape {emb.shape}")
        if not np.isfinite(emb).all():
            raise GalleryError(f"gallery: SKU {sku!r}: embeddings hold NaN or infinity")
        if normalise:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            emb = np.array([[float(f"{v:.6g}") for v in row] for row in emb.tolist()])
        local = tuple(LocalFeatures(np.asarray(p, np.float32).reshape(-1, 2),
                                    np.asarray(d, np.uint8).reshape(-1, 128)) for p, d in local)
        old = self.entries.get(sku)
        if old is not None:
            emb = np.concatenate([old.embeddings, emb])
            photos = tuple(old.photos) + tuple(photos)
            local = tuple(old.local) + local
        entry = GalleryEntry(sku, emb.astype(np.float32), tuple(photos), local)
        self.entries[sku] = entry
        return entry

    def skus(self) -> list[str]:
        return sorted(self.entries)

    def centroids(self) -> np.ndarray:
        """len(skus()) x D, in skus() order (an empty 0 x D matrix without entries)."""
        if not self.entries:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.entries[s].centroid() for s in self.skus()])

    # ---- file -------------------------------------------------------------------------------
    def _body(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_sha256": self.model_sha256,
            "embedding_dim": self.dim,
            "entries": [
                {"sku": s,
                 "photos": [dict(p) for p in self.entries[s].photos],
                 "embeddings": [[float(f"{v:.6g}") for v in row]
                                for row in self.entries[s].embeddings.tolist()],
                 # only when present, so galleries without local features keep their hash
                 **({"local": [_encode_local(lf) for lf in self.entries[s].local]}
                    if self.entries[s].local else {})}
                for s in self.skus()
            ],
        }

    def sha256(self) -> str:
        return _canonical_hash(self._body())

    def save(self, path: Path) -> str:
        """Write the gallery (atomically) and return its content hash."""
        body = self._body()
        digest = _canonical_hash(body)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**body, "sha256": digest}, indent=1) + "\n")
        tmp.replace(path)
        return digest

    @classmethod
    def load(cls, path: Path) -> "ProductGallery":
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise GalleryError(f"gallery {path}: no such file (enrol a product with "
                               f"`cabinet vision enroll SKU PHOTO... --gallery {path}`)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GalleryError(f"gallery {path}: not a readable JSON file ({e}); restore it or "
                               f"enrol the products again into a new file") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise GalleryError(f"gallery {path}: field 'format' must be {FORMAT!r}")
        if doc.get("format_version") != FORMAT_VERSION:
            raise GalleryError(f"gallery {path}: field 'format_version' is "
                               f"{doc.get('format_version')!r}; this program reads {FORMAT_VERSION}")
        claimed = doc.pop("sha256", None)
        if claimed != _canonical_hash(doc):
            raise GalleryError(f"gallery {path}: field 'sha256' does not match the content (the "
                               f"file was edited or truncated); enrol the products again")
        dim = doc.get("embedding_dim")
        if not isinstance(dim, int) or dim <= 0:
            raise GalleryError(f"gallery {path}: field 'embedding_dim' must be a positive integer")
        gallery = cls(model_sha256=str(doc.get("model_sha256", "")), dim=dim)
        for i, item in enumerate(doc.get("entries", [])):
            where = f"gallery {path}: entries[{i}]"
            try:
                emb = np.asarray(item["embeddings"], dtype=np.float32)
                local = [_decode_local(d) for d in item.get("local", [])]
                gallery.add(item["sku"], emb, [dict(p) for p in item.get("photos", [])],
                            normalise=False, local=local)
            except (KeyError, TypeError, ValueError, base64.binascii.Error) as e:
                raise GalleryError(f"{where}: {e}") from None
        return gallery


def validate_sku(sku: str) -> str:
    if not isinstance(sku, str) or not sku.strip() or sku != sku.strip() or "/" in sku:
        raise GalleryError(f"SKU {sku!r}: must be a non-empty name without '/' or surrounding "
                           f"spaces")
    return sku


def photo_record(path: Path) -> dict:
    return {"name": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _canonical_hash(body: dict) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
