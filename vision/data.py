"""Where the photos live: the shared data set, or the fallback faces from set-up.

The shared data (`$CABINET_DATA`, default `<repo>/../shared/data`) holds face photos in
`faces/<person>/` and product packshots in `products/grocery/<product>/iconic.jpg`. A clone
without it still runs: `make setup` copies the test photos that the face_recognition source
distribution ships into `<repo>/.cache/faces/<person>/` (same layout), and products are drawn by
`vision.render`. Nothing here downloads anything; these functions only look at the disk, each
time they are called (the environment is read at the call, which is the caller's construction).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def data_root(*, repo_root: Path | None = None) -> Path:
    """`$CABINET_DATA` when set, else `<repo>/../shared/data` (which may not exist)."""
    env = os.environ.get("CABINET_DATA")
    if env:
        return Path(env).expanduser()
    return (repo_root or REPO_ROOT).parent / "shared" / "data"


def _has_people(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_dir() and not p.name.startswith(("_", ".")) for p in folder.iterdir()
    )


def faces_root(*, repo_root: Path | None = None) -> Path | None:
    """The shared `faces/` folder, else `<repo>/.cache/faces`, else None (no photos at all)."""
    shared = data_root(repo_root=repo_root) / "faces"
    if _has_people(shared):
        return shared
    fallback = (repo_root or REPO_ROOT) / ".cache" / "faces"
    if _has_people(fallback):
        return fallback
    return None


def people(root: Path | None = None) -> dict[str, list[Path]]:
    """Person name -> that person's photos, sorted; `_group` (several faces a photo) left out.

    `root` defaults to `faces_root()`; with no photos anywhere the answer is an empty dict.
    """
    root = root if root is not None else faces_root()
    if root is None or not root.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        if person.name.startswith(("_", ".")):
            continue
        photos = sorted(
            p for p in person.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
        )
        if photos:
            found[person.name] = photos
    return found


def group_photos(root: Path | None = None) -> list[Path]:
    """Photos with several faces (`faces/_group/`), sorted; empty when there are none."""
    root = root if root is not None else faces_root()
    group = root / "_group" if root is not None else None
    if group is None or not group.is_dir():
        return []
    return sorted(p for p in group.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def product_image(sku_dir_name: str, *, root: Path | None = None) -> Path | None:
    """The studio packshot `products/grocery/<sku_dir_name>/iconic.jpg`, or None if absent."""
    if not sku_dir_name or "/" in sku_dir_name or sku_dir_name in {".", ".."}:
        return None
    base = root if root is not None else data_root()
    path = base / "products" / "grocery" / sku_dir_name / "iconic.jpg"
    return path if path.is_file() else None
