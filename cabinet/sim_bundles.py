"""Session bundles written by another program: the benchmark's world, its own noise model.

`SessionSynth` plays scripted customers on a planogram (the demo's by default) and writes each
session as an ordinary session bundle (docs/session-bundle.md) with plain json, hashlib and
OpenCV: no BundleWriter, so `cabinet reconcile` is tried on bundles it did not make. The world
and its noise are this module's own, not the simulated MCU's nor the controller's:

- items: each physical item weighs its unit weight plus a Gaussian of its catalog sigma;
- load cells, per shelf and session: sample noise sigma drawn from 1-4 g, a settled value read
  as the median of a window of 1-20 samples, rare spikes (1% of samples, +-20..60 g), a slow
  drift between the snapshots (sigma 0.5 g; 3 g in the noisy tier), and now and then a shelf
  that did not settle (a damped swing of tens of grams, stable=False);
- images: vision.sim's camera-like renderer drawing each item from a real photo of its product
  that the reader did not learn from (val_*/iconic, or `--photos DIR`), each item where the
  customer left it; lighting change, shake and JPEG per tier; foreign objects from photos of
  things that are not products; calibration frames (empty and full shelf) rendered through the
  same cameras and copied into every bundle, as `cabinet vision calibrate` would capture them.

Tiers follow ../shared/design/BENCHMARKS.md (T1 basic .. T7 degraded); `session(tier, i)` is
deterministic for a seed. The truth (`Session.basket`, and whether the session must be flagged)
travels beside the bundle, never inside it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from cabinet.catalog import Catalog, load_catalog
from cabinet.planogram import Planogram, load_planogram

TIERS = ("T1", "T2", "T3", "T4", "T5", "T6", "T7")
TIER_NAMES = {"T1": "basic", "T2": "put-back", "T3": "look-alike", "T4": "misplaced",
              "T5": "noisy world", "T6": "tamper", "T7": "degraded"}
SPIKE_P = 0.01
UNSETTLED_P = 0.03


@dataclasses.dataclass
class Item:
    sku: str
    grams: float
    serial: int
    pose: Any = None  # vision.sim.render.ItemPose


@dataclasses.dataclass(frozen=True)
class Session:
    path: Path
    tier: str
    basket: dict[str, int]
    must_flag: bool
    actions: tuple[str, ...]


class SessionSynth:
    """Writes benchmark sessions under `root`. `photos` is a folder laid out like
    ../shared/data/products/grocery (default: the shared data's; None without it: flat boxes)."""

    def __init__(self, root: Path, catalog_path: Path, planogram_path: Path, *, seed: int = 0,
                 photos: Path | None = None, data_root: Path | None = None,
                 images: bool = True, recognizer: Any = None) -> None:
        self.root = Path(root)
        self.catalog_path, self.planogram_path = Path(catalog_path), Path(planogram_path)
        # the bytes every bundle copies, read once: the files may change while a bench runs
        self._catalog_bytes = self.catalog_path.read_bytes()
        self._planogram_bytes = self.planogram_path.read_bytes()
        self.catalog: Catalog = load_catalog(self.catalog_path)
        self.planogram: Planogram = load_planogram(self.planogram_path, self.catalog)
        self.seed = seed
        self.images = images
        self.recognizer = recognizer  # named in every bundle (its version) when given
        self.looks: dict = {}
        self.foreign: tuple[Path, ...] = ()
        self._calibration: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._calibration_bytes: dict[str, tuple[bytes, bytes]] | None = None
        if images:
            from vision.sim.looks import foreign_photos, product_looks, sim_photos
            self.looks = product_looks(self.catalog, data_root)
            if photos is not None:
                if not Path(photos).is_dir():
                    raise FileNotFoundError(f"--photos {photos}: no such folder (lay it out like "
                                            f"products/grocery/<product>/val_*.jpg)")
                for sku, p in self.catalog.items():
                    name = p.photo_product
                    self.looks[sku] = dataclasses.replace(
                        self.looks[sku], photos=sim_photos(Path(photos) / name) if name else ())
            self.foreign = foreign_photos(data_root)
        self.slots = {s.id: s for s in self.planogram.slots}
        self.look_alike = _look_alike_slots(self.catalog, self.planogram)

    # --- the world ----------------------------------------------------------------------------
    def _stock(self, rng: random.Random) -> dict[str, list[Item]]:
        world, serial = {}, 0
        for s in self.planogram.slots:
            p = self.catalog[s.sku]
            items = []
            for _ in range(s.stock):
                serial += 1
                items.append(Item(s.sku, p.unit_weight_g + rng.gauss(0, p.weight_sigma_g),
                                  serial, _neat_pose(rng, serial)))
            world[s.id] = items
        return world

    def _script(self, tier: str, rng: random.Random, world: dict[str, list[Item]]
                ) -> tuple[list[Item], list[str], bool, dict[str, float], dict]:
        """Act a customer of `tier` on `world`: (hands, actions, must_flag, foreign grams per
        shelf, faults)."""
        hands: list[Item] = []
        actions: list[str] = []
        foreign: dict[str, float] = {}
        faults: dict[str, Any] = {}
        cap = {s.id: s.capacity for s in self.planogram.slots}
        plain = [s for s in self.slots if s not in self.look_alike]

        def stocked(pool):
            return [s for s in pool if world[s]]

        def room(pool):
            return [s for s in pool if len(world[s]) < cap[s]]

        def take(slot):
            item = world[slot].pop()
            hands.append(item)
            actions.append(f"take {slot}")
            return item

        def put(slot, item):
            hands.remove(item)
            item.pose = _customer_pose(rng, item.serial)
            world[slot].append(item)
            actions.append(f"put {item.sku} {slot}")

        def move(src, dst):
            item = world[src].pop()
            item.pose = _customer_pose(rng, item.serial)
            world[dst].append(item)
            actions.append(f"move {src} {dst}")

        base = tier if tier != "T5" else rng.choice(["T1", "T2", "T3", "T4"])
        if base in ("T1", "T6", "T7"):
            skus_seen: set[str] = set()
            for _ in range(rng.randint(1, 5)):
                options = [s for s in stocked(plain) if self.slots[s].sku not in skus_seen]
                if options:
                    slot = rng.choice(options)
                    skus_seen.add(self.slots[slot].sku)
                    take(slot)
        elif base == "T2":
            for _ in range(rng.randint(1, 4)):
                take(rng.choice(stocked(plain)))
            for item in rng.sample(hands, rng.randint(1, len(hands))):
                home = next(s for s, sl in self.slots.items() if sl.sku == item.sku
                            and len(world[s]) < cap[s])
                put(home, item)
        elif base == "T3":
            pool = stocked(sorted(self.look_alike))
            for _ in range(rng.randint(1, 3)):
                pool = stocked(sorted(self.look_alike))
                if pool:
                    take(rng.choice(pool))
            if rng.random() < 0.3 and stocked(plain):
                take(rng.choice(stocked(plain)))
        elif base == "T4":
            for _ in range(rng.randint(1, 3)):
                take(rng.choice(stocked(plain)))
            for item in rng.sample(hands, rng.randint(1, len(hands))):
                options = [s for s in room(list(self.slots)) if self.slots[s].sku != item.sku]
                if options:
                    put(rng.choice(options), item)
            for _ in range(rng.randint(0, 2)):
                src, dst = rng.choice(stocked(list(self.slots))), rng.choice(room(list(self.slots)))
                if src != dst:
                    move(src, dst)
        must_flag = False
        if tier == "T6":
            must_flag = True
            shelf = rng.choice(self.planogram.shelves).id
            if hands and rng.random() < 0.5:  # a taken item's place filled with a look-alike weight
                item = hands[-1]
                slot = next(s for s, sl in self.slots.items() if sl.sku == item.sku)
                shelf = self.slots[slot].shelf
                grams = item.grams * rng.uniform(0.9, 1.1)
                world[slot].append(Item(f"foreign:{rng.randint(0, 999)}", grams, 10_000 + len(
                    actions), _customer_pose(rng, 10_000 + len(actions))))
                actions.append(f"swap {slot} for a foreign {grams:.0f} g")
            else:
                grams = rng.uniform(40, 400)
                options = room([s.id for s in self.planogram.slots_on(shelf)])
                if options:
                    slot = rng.choice(options)
                    world[slot].append(Item(f"foreign:{rng.randint(0, 999)}", grams, 20_000 + len(
                        actions), _customer_pose(rng, 20_000 + len(actions))))
                else:
                    foreign[shelf] = grams  # out of the camera's slots: weight only
                actions.append(f"add a foreign {grams:.0f} g on {shelf}")
        if tier == "T7":
            must_flag = True
            shelf = rng.choice(self.planogram.shelves)
            if rng.random() < 0.5 or not self.images:  # weights only: no camera to darken
                faults["dead"] = shelf.id
                actions.append(f"load cell of {shelf.id} dead")
            else:
                faults["dark"] = shelf.camera
                actions.append(f"camera {shelf.camera} dark")
        return hands, actions, must_flag, foreign, faults

    # --- load cells ------------------------------------------------------------------------------
    def _reading(self, rng: np.random.Generator, load: float, sigma: float, drift: float,
                 unsettled: bool) -> tuple[float, bool, list[float]]:
        n = int(rng.integers(1, 21))
        samples = load + drift + rng.normal(0, sigma, n)
        spikes = rng.random(n) < SPIKE_P
        samples[spikes] += rng.choice([-1, 1], spikes.sum()) * rng.uniform(20, 60, spikes.sum())
        if unsettled:
            t = np.arange(n) / 25.0
            samples += rng.uniform(20, 60) * np.exp(-t / 0.4) * np.cos(2 * np.pi * 2.5 * t)
        return float(np.median(samples)), not unsettled, [round(float(v), 3) for v in samples]

    # --- images ----------------------------------------------------------------------------------
    def _render(self, world: dict[str, list[Item]], seed: int, *, lighting: float = 1.0,
                shake_px: int = 0, jpeg: int | None = 90) -> dict[str, np.ndarray]:
        from vision.sim.render import CAMERA_LIKE, ShelfView, SlotView, render_shelf
        out = {}
        for shelf in self.planogram.shelves:
            views = tuple(SlotView(s.id, s.roi, s.capacity, tuple(i.sku for i in world[s.id]),
                                   tuple(i.pose for i in world[s.id]))
                          for s in self.planogram.slots_on(shelf.id))
            out[shelf.camera] = render_shelf(ShelfView(shelf.camera, self.planogram.camera_size,
                                                       views), self.looks, seed=seed,
                                             lighting=lighting, shake_px=shake_px,
                                             jpeg_quality=jpeg, optics=CAMERA_LIKE,
                                             foreign_photos=self.foreign)
        return out

    def calibration(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Empty and full frames per camera: the per-pixel median of three captures each."""
        if self._calibration is None:
            frames: dict[str, list[list[np.ndarray]]] = {}
            for stage in ("empty", "full"):
                for k in range(3):
                    world = {s.id: [] if stage == "empty" else
                             [Item(s.sku, 0.0, 50_000 + 10 * i + k, _neat_pose(random.Random(i), i))
                              for i in range(s.capacity)] for s in self.planogram.slots}
                    for cam, img in self._render(world, 7_000 + k).items():
                        frames.setdefault(cam, [[], []])[stage == "full"].append(img)
            self._calibration = {cam: tuple(np.median(np.stack(f), axis=0).astype(np.uint8)
                                            for f in pair) for cam, pair in frames.items()}
        return self._calibration

    def _calibration_png(self) -> dict[str, tuple[bytes, bytes]]:
        """The calibration frames as PNG bytes, encoded once: every bundle copies the same."""
        if self._calibration_bytes is None:
            import cv2
            self._calibration_bytes = {
                cam: tuple(cv2.imencode(".png", img)[1].tobytes() for img in pair)
                for cam, pair in self.calibration().items()}
        return self._calibration_bytes

    # --- one session -------------------------------------------------------------------------------
    def session(self, tier: str, index: int) -> Session:
        if tier not in TIERS:
            raise ValueError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
        key = int(hashlib.sha256(f"{self.seed}:{tier}:{index}".encode()).hexdigest()[:12], 16)
        rng = random.Random(key)
        nrng = np.random.default_rng(key)
        world = self._stock(rng)
        inventory = {s: [i.sku for i in items] for s, items in world.items()}
        noisy = tier == "T5"
        sigma = {sh.id: float(nrng.uniform(1.0, 4.0)) for sh in self.planogram.shelves}
        loads_before = {sh.id: self._load(world, sh.id, {}) for sh in self.planogram.shelves}
        images_before = self._render(world, key % 100_000) if self.images else {}
        hands, actions, must_flag, foreign, faults = self._script(tier, rng, world)
        loads_after = {sh.id: self._load(world, sh.id, foreign) for sh in self.planogram.shelves}
        light = float(nrng.uniform(0.85, 1.15)) if noisy else float(nrng.uniform(0.95, 1.05))
        images_after = self._render(world, key % 100_000 + 1, lighting=light,
                                    shake_px=int(nrng.integers(0, 4)) if noisy else 0,
                                    jpeg=int(nrng.integers(60, 80)) if noisy else 90
                                    ) if self.images else {}
        if "dark" in faults:
            images_after[faults["dark"]] = np.zeros_like(images_after[faults["dark"]]) + 3
        shelves = {}
        for sh in self.planogram.shelves:
            drift = float(nrng.normal(0, 3.0 if noisy else 0.5))
            unsettled = nrng.random() < (UNSETTLED_P * 3 if noisy else UNSETTLED_P)
            b = self._reading(nrng, loads_before[sh.id], sigma[sh.id], 0.0, False)
            a = self._reading(nrng, loads_after[sh.id], sigma[sh.id], drift, bool(unsettled))
            if faults.get("dead") == sh.id:
                a = (None, False, [])
            shelves[sh.id] = {"channel": sh.channel, "before_g": round(b[0], 3),
                              "after_g": None if a[0] is None else round(a[0], 3),
                              "before_stable": b[1], "after_stable": a[1],
                              "samples_before": b[2], "samples_after": a[2]}
        sid = f"{tier}-{index:05d}"
        path = self._write(sid, shelves, inventory, images_before, images_after)
        basket: dict[str, int] = {}
        for item in hands:
            basket[item.sku] = basket.get(item.sku, 0) + 1
        return Session(path, tier, dict(sorted(basket.items())), must_flag, tuple(actions))

    def _load(self, world: dict[str, list[Item]], shelf: str, foreign: dict[str, float]) -> float:
        return foreign.get(shelf, 0.0) + sum(i.grams for s in self.planogram.slots_on(shelf)
                                             for i in world[s.id])

    def _write(self, sid: str, shelves: dict, inventory: dict, before: dict, after: dict) -> Path:
        import cv2
        d = self.root / sid
        (d / "images").mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}

        def put(name: str, data: bytes) -> None:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
            files[name] = hashlib.sha256(data).hexdigest()

        put("catalog.yaml", self._catalog_bytes)
        put("planogram.yaml", self._planogram_bytes)
        cameras, calibration = {}, None
        for cam in before:
            names = {}
            for side, img in (("before", before[cam]), ("after", after[cam])):
                names[side] = f"images/{cam}_{side}.png"
                put(names[side], cv2.imencode(".png", img)[1].tobytes())
            cameras[cam] = names
        if before:
            cams = {}
            for cam, (empty, full) in self._calibration_png().items():
                cams[cam] = {"empty": f"calibration/{cam}_empty.png",
                             "full": f"calibration/{cam}_full.png"}
                put(cams[cam]["empty"], empty)
                put(cams[cam]["full"], full)
            digest = hashlib.sha256("".join(sorted(files[c] for c in files
                                                   if c.startswith("calibration/"))).encode())
            calibration = {"content_hash": digest.hexdigest(), "cameras": cams}
        record = {"schema_version": 2, "session_id": sid,
                  "cabinet_id": self.planogram.cabinet_id, "account_id": "bench",
                  "opened_at": "2026-01-01T00:00:00.000+00:00",
                  "closed_at": "2026-01-01T00:00:30.000+00:00",
                  "timings": {}, "params": {"load_cell_noise_g": 2.0, "min_confidence": 0.95},
                  "shelves": shelves, "cameras": cameras, "inventory_before": inventory,
                  "calibration": calibration, "files": files,
                  "recognizer": None if self.recognizer is None else {
                      "version": self.recognizer.version,
                      "model_sha256": self.recognizer.card.model_sha256}}
        (d / "bundle.json").write_text(json.dumps(record, indent=1))
        return d


def _neat_pose(rng: random.Random, serial: int):
    from vision.sim.render import ItemPose
    return ItemPose(serial, rng.uniform(-0.05, 0.05), 0.0, rng.uniform(-2, 2), 1.0)


def _customer_pose(rng: random.Random, serial: int):
    from vision.sim.render import ItemPose
    return ItemPose(serial, rng.uniform(-0.2, 0.2), rng.uniform(0, 0.6), rng.uniform(-12, 12), 1.0)


def _look_alike_slots(catalog: Catalog, planogram: Planogram) -> set[str]:
    """Slots whose SKU weighs within the scale noise (2 sigma of both) of another SKU's."""
    out = set()
    for a in planogram.slots:
        for b in planogram.slots:
            pa, pb = catalog[a.sku], catalog[b.sku]
            if a.sku != b.sku and abs(pa.unit_weight_g - pb.unit_weight_g) <= 2 * (
                    pa.weight_sigma_g + pb.weight_sigma_g):
                out.add(a.id)
    return out


def truth_of(session: Session) -> dict[str, Any]:
    return {"basket": session.basket, "must_flag": session.must_flag,
            "actions": list(session.actions)}

