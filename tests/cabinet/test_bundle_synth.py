"""Helpers, no tests: synthetic session bundles for the reconcile and bundle tests: a tiny world of real items
(each with its own weight inside the catalog tolerance), noisy settled shelf readings, and
shelf images drawn by vision.render, written with the real BundleWriter."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from cabinet.bundle import BundleWriter
from cabinet.catalog import Catalog, load_catalog
from vision.sim.looks import product_looks
from cabinet.planogram import Planogram, load_planogram
from vision.data import data_root

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def demo_files() -> tuple[Catalog, Planogram]:
    catalog = load_catalog(FIXTURES / "catalog.yaml")
    return catalog, load_planogram(FIXTURES / "planogram.yaml", catalog)


class World:
    """Items per slot (left to right, each with its own grams and serial: the simulated camera
    draws each physical item from its own photo, wherever it is put) and a customer's hands."""

    def __init__(self, catalog: Catalog, planogram: Planogram, seed: int = 0):
        self.catalog, self.planogram = catalog, planogram
        self.rng = random.Random(seed)
        self.slots: dict[str, list[tuple[str, float, int]]] = {}
        self.serials = 0
        for s in planogram.slots:
            self.slots[s.id] = [self.item(s.sku) for _ in range(s.stock)]
        self.hands: list[tuple[str, float, int]] = []
        self.extra_g: dict[str, float] = {}

    def item(self, sku: str) -> tuple[str, float, int]:
        p = self.catalog[sku]
        self.serials += 1
        return sku, p.unit_weight_g + self.rng.gauss(0, p.weight_sigma_g), self.serials

    def take(self, slot: str, qty: int = 1) -> None:
        for _ in range(qty):
            self.hands.append(self.slots[slot].pop())

    def put(self, slot: str, sku: str, qty: int = 1) -> None:
        for _ in range(qty):
            i = max(i for i, it in enumerate(self.hands) if it[0] == sku)
            self.slots[slot].append(self.hands.pop(i))

    def move(self, src: str, dst: str, qty: int = 1) -> None:
        for _ in range(qty):
            self.slots[dst].append(self.slots[src].pop())

    def add_foreign(self, shelf: str, grams: float) -> None:
        self.extra_g[shelf] = self.extra_g.get(shelf, 0.0) + grams

    def basket(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for sku, *_ in self.hands:
            out[sku] = out.get(sku, 0) + 1
        return dict(sorted(out.items()))

    def load(self, shelf: str) -> float:
        return 1500.0 + self.extra_g.get(shelf, 0.0) + sum(
            g for s in self.planogram.slots_on(shelf) for _, g, _ in self.slots[s.id])

    def readings(self, noise_g: float, n: int = 20) -> dict:
        out = {}
        for shelf in self.planogram.shelves:
            samples = [self.load(shelf.id) + self.rng.gauss(0, noise_g * 2) for _ in range(n)]
            out[shelf.id] = (float(np.mean(samples)), True, samples)
        return out

    def images(self, looks, seed: int) -> dict:
        from vision.sim.render import ItemPose, ShelfView, SlotView, render_shelf
        out = {}
        for shelf in self.planogram.shelves:
            views = tuple(SlotView(s.id, s.roi, s.capacity, tuple(k for k, *_ in self.slots[s.id]),
                                   tuple(ItemPose(serial=n) for *_, n in self.slots[s.id]))
                          for s in self.planogram.slots_on(shelf.id))
            out[shelf.camera] = render_shelf(ShelfView(shelf.camera, self.planogram.camera_size,
                                                       views), looks, seed=seed)
        return out

    def calibration(self, looks, seed: int = 900):
        """What `cabinet vision calibrate` would capture through these cameras: each shelf
        emptied, then filled to capacity as the planogram says (one frame each)."""
        from vision.calibration import Calibration, CameraCalibration
        from vision.sim.render import ShelfView, SlotView, render_shelf
        cams = {}
        for shelf in self.planogram.shelves:
            slots = self.planogram.slots_on(shelf.id)
            frames = []
            for stage, fill in (("empty", lambda s: ()), ("full", lambda s: (s.sku,) * s.capacity)):
                views = tuple(SlotView(s.id, s.roi, s.capacity, fill(s)) for s in slots)
                frames.append(render_shelf(ShelfView(shelf.camera, self.planogram.camera_size,
                                                     views), looks, seed=seed))
            cams[shelf.camera] = CameraCalibration(shelf.camera, *frames)
        return Calibration(cams, content_hash=f"test-calibration-{seed}")

    def inventory(self) -> dict[str, list[str]]:
        return {k: [sku for sku, *_ in v] for k, v in self.slots.items()}


def write_session(root: Path, session_id: str, world: World, act, *, noise_g: float = 1.0,
                  with_images: bool = False, seed: int = 0, calibrated: bool | None = None) -> Path:
    """Snapshot, run `act(world)`, snapshot again; returns the bundle directory. With images
    the bundle carries the cameras' calibration frames unless `calibrated` is False."""
    writer = BundleWriter(root, session_id)
    writer.write_context(FIXTURES / "planogram.yaml", FIXTURES / "catalog.yaml", "acc-test",
                         load_cell_noise_g=max(noise_g, 0.5))
    # the simulated cameras draw the shared photos (val_*/iconic) where there are some; the
    # reader knows none of it, only the calibration frames captured through the same cameras
    looks = product_looks(world.catalog, data_root()) if with_images else None
    if with_images and calibrated is not False:
        writer.write_vision(calibration=world.calibration(looks))
    writer.write_before(world.readings(noise_g), world.images(looks, seed) if looks else {},
                        world.inventory())
    act(world)
    writer.write_after(world.readings(noise_g), world.images(looks, seed + 1) if looks else {})
    return writer.path
