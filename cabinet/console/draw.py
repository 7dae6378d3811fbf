"""A shelf camera's before or after image from a session bundle, with each slot's region drawn
and the detected changes marked: red where reconcile saw a change (its image-change score, or a
count that moved), green where nothing moved; each box labelled with the slot, the counts
before -> after and the change score from result.json's evidence."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from cabinet.errors import CabinetError

CHANGED = 0.15          # an evidence `change` score above this is drawn as a change


def review_png(bundle_dir: Path, camera: str, side: str) -> bytes:
    if side not in ("before", "after"):
        raise CabinetError(f"review image: side {side!r} is before or after")
    try:
        record = json.loads((bundle_dir / "bundle.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise CabinetError(f"review image: {bundle_dir / 'bundle.json'}: {e}") from None
    cameras = record.get("cameras") or {}
    if camera not in cameras or not cameras[camera].get(side):
        raise CabinetError(f"review image: the bundle has no {side} image of camera {camera!r}"
                           f" (cameras: {', '.join(sorted(cameras)) or 'none'})")
    path = (bundle_dir / cameras[camera][side]).resolve()
    if bundle_dir.resolve() not in path.parents:
        raise CabinetError(f"review image: {path} is outside the bundle")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CabinetError(f"review image: cannot read {path}")
    draw_slots(image, bundle_dir, camera)
    ok, png = cv2.imencode(".png", image)
    if not ok:   # pragma: no cover - OpenCV always encodes a BGR image
        raise CabinetError(f"review image: cannot encode {path}")
    return png.tobytes()


def draw_slots(image: np.ndarray, bundle_dir: Path, camera: str) -> None:
    from cabinet.planogram import load_planogram
    from cabinet.catalog import load_catalog
    catalog = load_catalog(bundle_dir / "catalog.yaml")
    planogram = load_planogram(bundle_dir / "planogram.yaml", catalog)
    try:
        result = json.loads((bundle_dir / "result.json").read_text("utf-8"))
    except (OSError, ValueError):
        result = {}
    evidence = (result.get("evidence") or {}).get("slots") or {}
    shelves = (result.get("evidence") or {}).get("shelves") or {}
    shelf_of = {shelf.id: shelf for shelf in planogram.shelves}
    for slot in planogram.slots:
        if shelf_of[slot.shelf].camera != camera:
            continue
        x, y, w, h = (int(v) for v in slot.roi)
        ev = evidence.get(slot.id) or {}
        moved = (shelves.get(slot.shelf) or {}).get("explained_by") or {}
        changed = (float(ev.get("change") or 0.0) > CHANGED
                   or ev.get("count_before") != ev.get("count_after")
                   or bool(moved.get(slot.sku)))
        colour = (40, 40, 230) if changed else (60, 170, 60)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 3 if changed else 1)
        label = slot.id
        if ev:
            label += f" {ev.get('count_before')}->{ev.get('count_after')}"
        if moved.get(slot.sku):
            label += f" ({moved[slot.sku]:+d})"
        cv2.putText(image, label, (x + 3, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
