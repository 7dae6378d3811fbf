"""What the simulator draws each SKU from: its catalog colour and package, and real photos.

`product_looks(catalog, data_root)` gives SKU -> ProductLook for any mapping of SKU -> product
with `name`, `images`, `color`, `package` and `photo_product` (cabinet.catalog.Product). Photos
come from `products/grocery/<photo_product>/` under the data root, only from the split the
reader never learns from: val_*.jpg and iconic.jpg (the reader trains on train_*; a test walks
both lists). `foreign_photos(data_root)` are photos of things that are no catalog product
(products/fridge_objects). Without the data root the looks are flat drawings in the catalog
colour: the demo still sells on weights, and its reader (which knows no looks) says so.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from vision.data import PHOTO_SUFFIXES
from vision.sim.render import ProductLook

SIM_SPLITS = ("val_", "iconic")  # photo name prefixes the simulator may draw from


def sim_photos(folder: Path) -> tuple[Path, ...]:
    """The photos in a product folder that the simulator draws from (never train_*)."""
    if not folder.is_dir():
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES
                        and p.name.startswith(SIM_SPLITS)))


def foreign_photos(data_root: Path | None) -> tuple[Path, ...]:
    """Photos of things that are not products the cabinet sells: drawn as foreign objects."""
    if data_root is None:
        return ()
    folder = Path(data_root) / "products" / "fridge_objects" / "images"
    if not folder.is_dir():
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES))


def product_looks(catalog: Mapping[str, Any], data_root: Path | None = None) -> dict[str, ProductLook]:
    """SKU -> ProductLook: the catalog colour (or one derived from the SKU), package, the first
    catalog image found under `data_root` and the product's simulator photos."""
    looks = {}
    for sku, p in catalog.items():
        image = None
        for rel in p.images:
            candidate = Path(rel) if Path(rel).is_absolute() or data_root is None \
                else Path(data_root) / rel
            if candidate.is_file():
                image = candidate
                break
        photos: tuple[Path, ...] = ()
        name = getattr(p, "photo_product", None)
        if name and data_root is not None:
            photos = sim_photos(Path(data_root) / "products" / "grocery" / name)
        base = ProductLook.for_sku(sku, p.name, image_path=image)
        if p.color:
            r, g, b = (int(p.color[i:i + 2], 16) for i in (1, 3, 5))
            base = dataclasses.replace(base, color_bgr=(b, g, r))
        if p.package:
            base = dataclasses.replace(base, package=p.package)
        looks[sku] = dataclasses.replace(base, photos=photos)
    return looks
