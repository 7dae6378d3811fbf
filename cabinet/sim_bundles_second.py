"""A second world for `cabinet bench accuracy --world second`: session bundles written by yet
another program, from docs/session-bundle.md alone, with laws deliberately unlike
cabinet/sim_bundles.py's, so that reconcile's figures do not rest on one noise model.

`SecondSynth` plays the same tiers T1-T7 (same truth: `Session.basket`, `Session.must_flag`) and
writes ordinary bundles with plain json, hashlib and OpenCV. Only plumbing is shared with
sim_bundles.py (catalog and planogram loading, product looks, the `Session` record); every law
below is this module's own:

- items: each SKU comes in a lot whose weight is off the catalog by a uniform share of +-1.5
  catalog sigmas, and each item by a further Laplace (scale sigma/2); the item is then within
  3 sigma of the catalog weight (clipped). Slots are filled to a random level (1..capacity),
  not the planogram's stock;
- load cells (`LoadCell`), per shelf and session: sample noise of a heavy-tailed law (Student-t
  with 2 or 3 degrees of freedom, or Laplace) of scale 0.5-6 g (2-6 g in T5); raw samples at 10,
  25 or 50 Hz, windows of 3-40 samples, 0.1 g resolution; spikes in bursts of 2-3 consecutive
  samples (a burst starts at 0.4% of samples, 1.2% in T5; 15-90 g, one sign, fading); a tare
  offset of +-8 g; drift as a temperature ramp across the session (slope N(0, 0.03) g/s,
  N(0, 0.1) in T5, over a session of 8-120 s), inside each window too; now and then an
  unsettled shelf after the door closed (4%, 10% in T5) whose load creeps exponentially to its
  value (8-50 g either sign, time constant 1.5-6 s, stable=False). The settled value is the
  program's own estimator: the 20% trimmed mean of the window;
- `params`: the program declares its nominal noise (1.0-3.0 g) in half of the sessions and
  leaves `params` out (the documented default) in the others;
- images: vision.sim's renderer (the simulator) with this program's own optics (stronger
  lighting gradient and tint, more blur and sensor noise, wider keystone and vignette), JPEG
  quality 55-80 (35-60 in T5), lighting 0.9-1.1 (0.75-1.25 in T5); calibration frames through
  the same optics. One session in five is weights-only (no cameras, no calibration) and one in
  ten omits one camera altogether;
- customers: an item is taken from the end of its slot, or one time in five from the middle
  with the rest pushed together; T1 takes 1-4 items, the same SKU more than once allowed; T2 takes and puts back
  where they came from, also an item lifted and put straight back; T3 takes look-alikes and
  sometimes swaps them between their neighbouring slots; T4 puts items on other slots and moves
  up to three items, sometimes three onto one shelf; T5 is one of T1-T4 in T5's noise; T6 adds
  a foreign weight on any shelf (touched or not, in a slot or off the camera's slots), swaps an
  item for a foreign one of about its weight, or takes away a foreign thing that was lying on a
  shelf; T7 has a dead load cell (before or after), a dark camera or a camera that gave no after
  frame.

Deterministic for a seed (`random.Random` and `numpy.random.default_rng` keyed by
sha256("second:seed:tier:index")).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from cabinet.sim_bundles import TIERS, Item, Session, SessionSynth

LAWS = ("t2", "t3", "laplace")
RATES_HZ = (10.0, 25.0, 50.0)
BURST_P = 0.004
BURST_P_NOISY = 0.012
UNSETTLED_P = 0.04
UNSETTLED_P_NOISY = 0.10
TRIM = 0.2


def trimmed_mean(values: np.ndarray, share: float = TRIM) -> float:
    """Mean of the values left after dropping `share` of them at each end (at least one kept)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = int(share * len(v))
    if len(v) - 2 * k < 1:
        k = (len(v) - 1) // 2
    return float(v[k:len(v) - k].mean())


@dataclasses.dataclass
class LoadCell:
    """One shelf's load cell for one session, under this world's laws."""

    law: str  # "t2", "t3" or "laplace"
    scale_g: float
    rate_hz: float
    tare_g: float
    slope_g_per_s: float  # the temperature ramp
    burst_p: float

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.law == "laplace":
            return rng.laplace(0.0, self.scale_g, n)
        df = {"t2": 2, "t3": 3}[self.law]
        return self.scale_g * rng.standard_t(df, n)

    def bursts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Spikes that come in bursts of 2-3 consecutive samples, one sign, fading."""
        out = np.zeros(n)
        i = 0
        while i < n:
            if rng.random() < self.burst_p:
                length = int(rng.integers(2, 4))
                amp = float(rng.choice([-1.0, 1.0]) * rng.uniform(15.0, 90.0))
                for j in range(length):
                    if i + j < n:
                        out[i + j] += amp * (1.0, 0.7, 0.45)[j]
                i += length
            else:
                i += 1
        return out

    def window(self, rng: np.random.Generator, load_g: float, t0_s: float, n: int,
               creep: tuple[float, float] | None = None) -> np.ndarray:
        """`n` raw samples from time `t0_s` (s since the door opened) at this cell's rate:
        load + tare + ramp + heavy-tailed noise + bursts (+ an exponential creep (amp, tau) that
        started when the door closed, at `t0_s` - its offset), at 0.1 g resolution."""
        t = t0_s + np.arange(n) / self.rate_hz
        v = load_g + self.tare_g + self.slope_g_per_s * t + self.noise(rng, n) + self.bursts(rng, n)
        if creep is not None:
            amp, tau, since = creep
            v += amp * np.exp(-(t - since) / tau)
        return np.round(v, 1)


class SecondSynth(SessionSynth):
    """Writes second-world sessions under `root` (same arguments as SessionSynth)."""

    world = "second"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        from vision.sim.render import Optics
        self.optics = Optics(keystone=0.05, vignette=0.2, gradient=0.22, tint=0.07,
                             shake_deg=0.7, blur_sigma=1.3, noise_sigma=4.0)

    # --- the world ----------------------------------------------------------------------------
    def _stock_second(self, rng: random.Random) -> tuple[dict[str, list[Item]], dict[str, float]]:
        from cabinet.sim_bundles import _neat_pose
        lot = {k: rng.uniform(-1.5, 1.5) for k in sorted(self.catalog.keys())}
        world, serial = {}, 0
        for s in self.planogram.slots:
            p = self.catalog[s.sku]
            items = []
            for _ in range(rng.randint(1, s.capacity)):
                serial += 1
                items.append(Item(s.sku, self.item_grams(rng, s.sku, lot[s.sku]), serial,
                                  _neat_pose(rng, serial)))
            world[s.id] = items
        return world, lot

    def item_grams(self, rng: random.Random, sku: str, lot: float) -> float:
        """An item's real weight: catalog + lot share + Laplace(sigma/2), within 3 sigma."""
        p = self.catalog[sku]
        sigma = p.weight_sigma_g
        lap = (rng.expovariate(1.0) - rng.expovariate(1.0)) * sigma / 2
        off = max(-3 * sigma, min(3 * sigma, lot * sigma + lap))
        return p.unit_weight_g + off

    def _script2(self, tier: str, rng: random.Random, world: dict[str, list[Item]]
                 ) -> tuple[list[Item], list[str], bool, dict[str, float], dict[str, float], dict]:
        """Act a customer of `tier`: (hands, actions, must_flag, foreign grams put on a shelf out
        of the camera's slots, foreign grams lying there before and taken, faults)."""
        from cabinet.sim_bundles import _customer_pose
        hands: list[Item] = []
        actions: list[str] = []
        added: dict[str, float] = {}
        lying: dict[str, float] = {}
        faults: dict[str, Any] = {}
        cap = {s.id: s.capacity for s in self.planogram.slots}
        plain = sorted(s for s in self.slots if s not in self.look_alike)
        every = sorted(self.slots)

        def stocked(pool):
            return [s for s in pool if world[s]]

        def room(pool):
            return [s for s in pool if len(world[s]) < cap[s]]

        def take(slot):
            # mostly the end item; one time in five one from the middle, and the customer
            # pushes the rest together (the renderer packs a slot's items left to right)
            at = len(world[slot]) - 1 if rng.random() < 0.8 else rng.randrange(len(world[slot]))
            item = world[slot].pop(at)
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
            for _ in range(rng.randint(1, 4)):
                if stocked(plain):
                    take(rng.choice(stocked(plain)))
        elif base == "T2":
            for _ in range(rng.randint(1, 4)):
                if stocked(plain):
                    take(rng.choice(stocked(plain)))
            if rng.random() < 0.3 and stocked(plain):  # lifted and put straight back
                slot = rng.choice(stocked(plain))
                put(slot, take(slot))
            for item in rng.sample(hands, rng.randint(0, len(hands))):
                homes = room([s for s in every if self.slots[s].sku == item.sku])
                if homes:
                    put(rng.choice(homes), item)
        elif base == "T3":
            for _ in range(rng.randint(1, 3)):
                pool = stocked(sorted(self.look_alike))
                if pool:
                    take(rng.choice(pool))
            if hands and rng.random() < 0.3:  # a look-alike put back in its neighbour's slot
                item = rng.choice(hands)
                others = room([s for s in sorted(self.look_alike) if self.slots[s].sku != item.sku
                               and abs(self.catalog[self.slots[s].sku].unit_weight_g
                                       - self.catalog[item.sku].unit_weight_g) < 1.0])
                if others:
                    put(rng.choice(others), item)
            if rng.random() < 0.3 and stocked(plain):
                take(rng.choice(stocked(plain)))
        elif base == "T4":
            for _ in range(rng.randint(1, 3)):
                if stocked(plain):
                    take(rng.choice(stocked(plain)))
            for item in rng.sample(hands, rng.randint(1, len(hands)) if hands else 0):
                options = [s for s in room(every) if self.slots[s].sku != item.sku]
                if options:
                    put(rng.choice(options), item)
            if rng.random() < 0.25:  # three items moved onto one shelf
                shelf = rng.choice(self.planogram.shelves).id
                for _ in range(3):
                    dst = room([s.id for s in self.planogram.slots_on(shelf)])
                    src = [s for s in stocked(every) if self.slots[s].shelf != shelf]
                    if dst and src:
                        move(rng.choice(src), rng.choice(dst))
            else:
                for _ in range(rng.randint(0, 3)):
                    src, dst = stocked(every), room(every)
                    if src and dst:
                        a, b = rng.choice(src), rng.choice(dst)
                        if a != b:
                            move(a, b)
        must_flag = False
        if tier == "T6":
            must_flag = True
            kind = rng.choice(["swap", "slot", "off", "lying"]) if hands else rng.choice(
                ["slot", "off", "lying"])
            shelf = rng.choice(self.planogram.shelves).id
            if kind == "swap":
                item = hands[-1]
                slot = next(s for s in every if self.slots[s].sku == item.sku
                            and len(world[s]) < cap[s]) if room(
                    [s for s in every if self.slots[s].sku == item.sku]) else None
                if slot is not None:
                    grams = item.grams * rng.uniform(0.85, 1.15)
                    world[slot].append(Item(f"foreign:{rng.randint(0, 999)}", grams, 30_000,
                                            _customer_pose(rng, 30_000)))
                    actions.append(f"swap {slot} for a foreign {grams:.0f} g")
                else:
                    kind = "off"
            if kind == "slot":
                grams = rng.uniform(20, 300)
                options = room([s.id for s in self.planogram.slots_on(shelf)])
                if options:
                    world[rng.choice(options)].append(Item(
                        f"foreign:{rng.randint(0, 999)}", grams, 31_000,
                        _customer_pose(rng, 31_000)))
                    actions.append(f"add a foreign {grams:.0f} g in a slot on {shelf}")
                else:
                    kind = "off"
            if kind == "off":
                grams = rng.uniform(20, 300)
                added[shelf] = grams
                actions.append(f"add a foreign {grams:.0f} g off the slots on {shelf}")
            if kind == "lying":
                grams = rng.uniform(20, 300)
                lying[shelf] = grams
                actions.append(f"take a foreign {grams:.0f} g that lay on {shelf}")
        if tier == "T7":
            must_flag = True
            shelf = rng.choice(self.planogram.shelves)
            kind = rng.choice(["dead_after", "dead_before", "dark", "no_frame"]) if self.images \
                else rng.choice(["dead_after", "dead_before"])
            faults[kind] = shelf.id if kind.startswith("dead") else shelf.camera
            actions.append({"dead_after": f"load cell of {shelf.id} dead after",
                            "dead_before": f"load cell of {shelf.id} dead before",
                            "dark": f"camera {shelf.camera} dark",
                            "no_frame": f"camera {shelf.camera} gave no after frame"}[kind])
        return hands, actions, must_flag, added, lying, faults

    def cell(self, nrng: np.random.Generator, noisy: bool) -> LoadCell:
        return LoadCell(law=str(nrng.choice(LAWS)),
                        scale_g=float(nrng.uniform(2.0, 6.0) if noisy else nrng.uniform(0.5, 6.0)),
                        rate_hz=float(nrng.choice(RATES_HZ)),
                        tare_g=float(nrng.uniform(-8.0, 8.0)),
                        slope_g_per_s=float(nrng.normal(0.0, 0.1 if noisy else 0.03)),
                        burst_p=BURST_P_NOISY if noisy else BURST_P)

    def _reading(self, nrng: np.random.Generator, cell: LoadCell, load: float, t0: float,
                 creep: tuple[float, float, float] | None) -> tuple[float, bool, list[float]]:
        n = int(nrng.integers(3, 41))
        samples = cell.window(nrng, load, t0, n, creep)
        return round(trimmed_mean(samples), 1), creep is None, [float(v) for v in samples]

    # --- images ----------------------------------------------------------------------------------
    def _render(self, world: dict[str, list[Item]], seed: int, *, lighting: float = 1.0,
                shake_px: int = 0, jpeg: int | None = 85, cams: list[str] | None = None
                ) -> dict[str, np.ndarray]:
        from vision.sim.render import ShelfView, SlotView, render_shelf
        out = {}
        for shelf in self.planogram.shelves:
            if cams is not None and shelf.camera not in cams:
                continue
            views = tuple(SlotView(s.id, s.roi, s.capacity, tuple(i.sku for i in world[s.id]),
                                   tuple(i.pose for i in world[s.id]))
                          for s in self.planogram.slots_on(shelf.id))
            out[shelf.camera] = render_shelf(ShelfView(shelf.camera, self.planogram.camera_size,
                                                       views), self.looks, seed=seed,
                                             lighting=lighting, shake_px=shake_px,
                                             jpeg_quality=jpeg, optics=self.optics,
                                             foreign_photos=self.foreign)
        return out

    # --- one session -------------------------------------------------------------------------------
    def session(self, tier: str, index: int) -> Session:
        if tier not in TIERS:
            raise ValueError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
        key = int(hashlib.sha256(f"second:{self.seed}:{tier}:{index}".encode()).hexdigest()[:12],
                  16)
        rng = random.Random(key)
        nrng = np.random.default_rng(key)
        world, _ = self._stock_second(rng)
        inventory = {s: [i.sku for i in items] for s, items in world.items()}
        noisy = tier == "T5"
        # which cameras this program had: all, none (weights only) or all but one
        cams = [sh.camera for sh in self.planogram.shelves] if self.images else []
        u = rng.random()
        if cams and u < 0.2:
            cams = []
        elif cams and u < 0.3:
            cams.remove(rng.choice(cams))
        shelves_before = {sh.id: self._load(world, sh.id, {}) for sh in self.planogram.shelves}
        world_before = {s: [dataclasses.replace(i) for i in items] for s, items in world.items()}
        hands, actions, must_flag, added, lying, faults = self._script2(tier, rng, world)
        cam_fault = faults.get("dark") or faults.get("no_frame")
        if cam_fault is not None and cam_fault not in cams:  # the fault needs that camera
            cams = sorted(set(cams) | {cam_fault})
        for shelf, g in lying.items():
            shelves_before[shelf] += g
        shelves_after = {sh.id: self._load(world, sh.id, added) for sh in self.planogram.shelves}
        images_before = self._render(world_before, key % 100_000, cams=cams) if cams else {}
        light = float(nrng.uniform(0.75, 1.25)) if noisy else float(nrng.uniform(0.9, 1.1))
        jpeg = int(nrng.integers(35, 61)) if noisy else int(nrng.integers(55, 81))
        shake = int(nrng.integers(0, 5)) if noisy else int(nrng.integers(0, 2))
        images_after = self._render(world, key % 100_000 + 1, lighting=light, shake_px=shake,
                                    jpeg=jpeg, cams=cams) if cams else {}
        if "dark" in faults:
            images_after[faults["dark"]] = np.zeros_like(images_after[faults["dark"]]) + 4
        if "no_frame" in faults:
            images_after[faults["no_frame"]] = None
        duration = float(nrng.uniform(8.0, 120.0))
        shelves = {}
        for sh in self.planogram.shelves:
            cell = self.cell(nrng, noisy)
            unsettled = nrng.random() < (UNSETTLED_P_NOISY if noisy else UNSETTLED_P)
            b = self._reading(nrng, cell, shelves_before[sh.id], -2.0, None)
            creep = None
            since = duration
            t0 = duration + 0.5
            if unsettled:
                creep = (float(nrng.choice([-1, 1]) * nrng.uniform(8, 50)),
                         float(nrng.uniform(1.5, 6.0)), since)
                t0 = duration + float(nrng.uniform(0.3, 1.5))
            a = self._reading(nrng, cell, shelves_after[sh.id], t0, creep)
            if faults.get("dead_after") == sh.id:
                a = (None, False, [])
            if faults.get("dead_before") == sh.id:
                b = (None, False, [])
            shelves[sh.id] = {"channel": sh.channel, "before_g": b[0], "after_g": a[0],
                              "before_stable": b[1], "after_stable": a[1],
                              "samples_before": b[2], "samples_after": a[2]}
        params = ({"load_cell_noise_g": round(float(nrng.uniform(1.0, 3.0)), 1)}
                  if nrng.random() < 0.5 else None)
        sid = f"second-{tier}-{index:05d}"
        path = self._write2(sid, shelves, inventory, images_before, images_after, params,
                            duration, key)
        basket: dict[str, int] = {}
        for item in hands:
            basket[item.sku] = basket.get(item.sku, 0) + 1
        return Session(path, tier, dict(sorted(basket.items())), must_flag, tuple(actions))

    def _write2(self, sid: str, shelves: dict, inventory: dict, before: dict, after: dict,
                params: dict | None, duration: float, key: int) -> Path:
        import cv2
        d = self.root / sid
        d.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}

        def put(name: str, data: bytes) -> None:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
            files[name] = hashlib.sha256(data).hexdigest()

        put("catalog.yaml", self._catalog_bytes)
        put("planogram.yaml", self._planogram_bytes)
        cameras, calibration = {}, None
        for cam in sorted(before):
            names: dict[str, str | None] = {}
            for side, img in (("before", before[cam]), ("after", after.get(cam))):
                if img is None:
                    names[side] = None
                    continue
                names[side] = f"frames/{side}-{cam}.png"
                put(names[side], cv2.imencode(".png", img)[1].tobytes())
            cameras[cam] = names
        if before:
            cams = {}
            for cam, (empty, full) in self._calibration_png().items():
                cams[cam] = {"empty": f"cal/{cam}-empty.png", "full": f"cal/{cam}-full.png"}
                put(cams[cam]["empty"], empty)
                put(cams[cam]["full"], full)
            digest = hashlib.sha256("".join(sorted(files[c] for c in files
                                                   if c.startswith("cal/"))).encode())
            calibration = {"content_hash": digest.hexdigest(), "cameras": cams}
        start = 1_790_000_000 + key % 10_000_000
        record: dict[str, Any] = {
            "schema_version": 2, "session_id": sid, "cabinet_id": self.planogram.cabinet_id,
            "account_id": None,
            "opened_at": _iso(start), "closed_at": _iso(start + duration),
            "timings": {"door_open_s": round(duration, 2), "writer": "second-world"},
            "shelves": shelves, "cameras": cameras, "inventory_before": inventory,
            "files": files}
        if params is not None:
            record["params"] = params
        if calibration is not None:
            record["calibration"] = calibration
        if self.recognizer is not None:
            record["recognizer"] = {"version": self.recognizer.version,
                                    "model_sha256": self.recognizer.card.model_sha256}
        (d / "bundle.json").write_text(json.dumps(record))
        return d


def _iso(epoch_s: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).isoformat(timespec="milliseconds")
