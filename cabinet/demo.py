"""`cabinet demo`: the simulated cabinet sells to scripted customers through the real parts.

Everything a real cabinet has is here, with simulated hardware behind the real interfaces:
the simulated MCU speaks the protocol over a pseudo-terminal to the real link, simulated shelf
cameras render each shelf from the simulated world, the face camera shows real photos to
face_recognition, money goes through SQLite and the sandbox gateway over HTTP on 127.0.0.1.
Each scenario's customer is a coroutine that waits for the lock, opens the door, moves items
in the world and closes the door; the controller only sees bytes and pixels.

Time comes from one `clock` (the system clock by default) handed to the controller, the
scripted customers, the payment client's retry waits and, unless `hardware_clock` says
otherwise, the board and the simulated MCU. Tests that drive the controller's timeouts with a
ManualClock keep the hardware on the system clock, so the simulated load cells still settle by
themselves while the controller's waits move only when the test advances its clock.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from billing.db import init_db, make_engine, session_factory
from billing.gateway import GatewayClient
from billing.gateway_server import SandboxGateway
from billing.service import Billing
from cabinet import accounts as accounts_mod
from cabinet.catalog import load_catalog
from cabinet.config import Config, TimeoutsConfig, load_config
from cabinet.errors import CabinetError
from cabinet.controller import Controller, EventBridge, SessionReport
from cabinet.inventory import Inventory
from cabinet.journal import Journal
from cabinet.planogram import Planogram, load_planogram
from cabinet.scenario import CloseDoor, Move, OpenDoor, Put, Take, Wait, load_accounts, load_scenarios
from cabinet.simworld import SimWorld, shelf_view_fn
from firmware_bridge.clock import Clock, clock_or_system
from firmware_bridge.device import Board
from firmware_bridge.simulator import SimMCU
from vision.cameras import SimFaceCamera
from vision.data import data_root, faces_root, people
from vision.faces import enrol_encodings
from vision.sim.camera import SimShelfCamera
from vision.sim.looks import foreign_photos, product_looks

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


DEFAULT_CONFIG = FIXTURES / "cabinet.yaml"


def in_force(path: Path, workdir: Path) -> Path:
    """A private copy of a catalog or planogram for this run: what every session bundle copies
    and every price comes from, whatever happens to the original file meanwhile."""
    data = Path(path).read_bytes()
    target = workdir / "in-force" / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


class SimCabinet:
    """Builds and owns every part of the simulated cabinet; `close()` stops them all."""

    def __init__(self, workdir: Path, config: Config | Path = DEFAULT_CONFIG, *, seed: int = 0,
                 timing: TimeoutsConfig | None = None, clock: Clock | None = None,
                 hardware_clock: Clock | None = None,
                 face_encoder: Callable[[Sequence[Path]], list[np.ndarray]] = enrol_encodings):
        self.clock = clock_or_system(clock)
        self.hardware_clock = self.clock if hardware_clock is None else hardware_clock
        self._face_encoder = face_encoder
        # Every file is read and checked before anything is created: bad input changes nothing.
        self.config = config if isinstance(config, Config) else load_config(config)
        # Checked from the configured files first; the run then uses copies that cannot change.
        planogram = load_planogram(self.config.planogram_path,
                                   load_catalog(self.config.catalog_path))
        if not self.config.scenarios or not self.config.accounts:
            raise CabinetError(f"{self.config.source}: the demo needs `scenarios:` and "
                               f"`accounts:` files named in the configuration")
        self.scenarios = load_scenarios(self.config.resolve(self.config.scenarios), planogram)
        self.accounts = load_accounts(self.config.resolve(self.config.accounts))
        self.timing = timing or self.config.timeouts
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.catalog_path = in_force(self.config.catalog_path, self.workdir)
        self.planogram_path = in_force(self.config.planogram_path, self.workdir)
        self.catalog = load_catalog(self.catalog_path)
        self.planogram = load_planogram(self.planogram_path, self.catalog)
        self._stack = contextlib.ExitStack()
        try:
            self._build(seed)
        except BaseException:
            self._stack.close()
            raise

    def _build(self, seed: int) -> None:
        self.gateway = SandboxGateway()
        self.gateway_url = self.gateway.start()
        self._stack.callback(self.gateway.stop)

        self.world = SimWorld(self.planogram, self.catalog, seed=seed)
        levels = self.planogram.initial_stock()
        self.world.restock(levels)
        self.mcu = SimMCU(shelves=len(self.planogram.shelves), load_fn=self.world.shelf_load,
                          seed=seed, clock=self.hardware_clock)
        self.pty_path = self.mcu.start()
        self._stack.callback(self.mcu.stop)

        self.bridge = EventBridge()
        self.board = Board(self.pty_path, on_event=self.bridge, clock=self.hardware_clock)
        self.board.open()
        self._stack.callback(self.board.close)

        self.engine = make_engine(f"sqlite:///{self.workdir / 'cabinet.sqlite'}")
        init_db(self.engine)
        self.db = session_factory(self.engine)
        self._stack.callback(self.engine.dispose)
        self.billing = Billing(self.db, GatewayClient(self.gateway_url, api_key=self.gateway.api_key,
                                                      sleep=self.clock.sleep),
                               currency=self.catalog.currency,
                               cabinet_id=self.planogram.cabinet_id)
        self.inventory = Inventory(self.db, self.planogram)
        self.inventory.restock(levels)

        self.photos = people()
        root = faces_root()
        # Only face_recognition's test photos (obama, biden) on a machine without ../shared.
        self.fallback_faces = root is None or root != data_root() / "faces"
        probes: dict[str, set[int]] = {}
        for sc in self.scenarios:
            person = sc.person_for(fallback=self.fallback_faces)
            if person:
                probes.setdefault(person, set()).add(sc.photo)
        self.account_ids: dict[str, int] = {}
        for acct in self.accounts:
            person = acct.person_for(fallback=self.fallback_faces)
            photos = self.photos.get(person or "", [])
            enrol = [p for i, p in enumerate(photos) if i not in probes.get(person, ())] \
                or photos[:1]
            if not enrol:
                continue    # no face enrolled for this account in this mode (QR only)
            account = accounts_mod.enroll(self.billing, None, acct.name, enrol,
                                          payment_token=acct.payment_token,
                                          currency=self.catalog.currency,
                                          encode=self._face_encoder)
            if acct.status == "blocked":
                self.billing.block(account.id, "blocked in the demo's accounts fixture")
            self.account_ids[person] = account.id

        looks = product_looks(self.catalog, data_root())
        self.face_camera = SimFaceCamera()
        cameras = {shelf.camera for shelf in self.planogram.shelves}
        foreign = foreign_photos(data_root())
        shelf_cameras = {cam: SimShelfCamera(shelf_view_fn(self.world, self.planogram, cam),
                                             looks, seed=seed, foreign_photos=foreign)
                         for cam in sorted(cameras)}
        self.looks = looks
        self.shelf_cameras = shelf_cameras
        self.controller = self.new_controller()

    def new_controller(self) -> Controller:
        """A controller over this cabinet's parts, with nothing in memory: a restart."""
        return Controller(
            cabinet_id=self.planogram.cabinet_id, board=self.board, bridge=self.bridge,
            face_camera=self.face_camera, shelf_cameras=self.shelf_cameras, billing=self.billing,
            gallery=accounts_mod.load_gallery(self.db, self.config.thresholds.face_distance),
            accounts=lambda aid: accounts_mod.name_of(self.db, aid),
            planogram_path=self.planogram_path, catalog_path=self.catalog_path,
            journal=Journal(self.db), inventory=self.inventory,
            bundles_dir=self.workdir / "sessions", timing=self.timing,
            load_cell_noise_g=self.config.thresholds.load_cell_noise_g,
            min_confidence=self.config.thresholds.reconcile_min_confidence, clock=self.clock)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "SimCabinet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- scripted customers ------------------------------------------------------------
    def photo_for(self, person: str | None, index: int) -> Path | None:
        photos = self.photos.get(person or "", [])
        if not photos:
            return None
        return photos[min(index, len(photos) - 1)]

    async def _customer(self, scenario) -> Counter:
        """Wait for the lock to release, open the door, act, close the door."""
        clock = self.clock
        deadline = clock.monotonic() + self.timing.face_s + 5
        while self.mcu.lock_engaged:
            if clock.monotonic() > deadline:
                return Counter()
            await clock.sleep_async(0.02)
        for action in scenario.actions:
            if isinstance(action, OpenDoor):
                if not await asyncio.to_thread(self.mcu.open_door):
                    return Counter()        # the lock held: nothing to take
            elif isinstance(action, CloseDoor):
                await asyncio.to_thread(self.mcu.close_door)
            elif isinstance(action, Take):
                self.world.take(action.slot, action.qty)
            elif isinstance(action, Put):
                self.world.put(action.slot, action.sku, action.qty)
            elif isinstance(action, Move):
                taken = self.world.take(action.src, action.qty)
                for item in taken:
                    self.world.put(action.dst, item.sku, 1)
            elif isinstance(action, Wait):
                await clock.sleep_async(action.seconds)
            await clock.sleep_async(0.15)
        return self.world.leave()

    async def run_scenario(self, scenario) -> tuple[SessionReport | None, Counter]:
        photo = self.photo_for(scenario.person_for(fallback=self.fallback_faces), scenario.photo)
        self.face_camera.show(photo)
        try:
            frame = await self.controller.wait_for_face(self.timing.face_s)
            if frame is None:
                return None, Counter()
            customer = asyncio.create_task(self._customer(scenario))
            report = await self.controller.session(frame)
            if report.outcome == "denied":
                customer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await customer
                return report, Counter()
            return report, await customer
        finally:
            self.face_camera.show(None)


def as_expected(report: SessionReport | None, scenario) -> bool:
    """Whether a session ended with the scenario's outcome and exact basket."""
    return (report is not None and report.outcome == scenario.expect.outcome
            and {k: v for k, v in report.basket.items() if v} == dict(scenario.expect.basket))


def format_report(report: SessionReport, scenario, ok: bool) -> str:
    head = f"== {scenario.name} " + "=" * max(4, 60 - len(scenario.name))
    lines = [head]
    if report.outcome == "denied":
        lines.append(f"  Access refused: {report.reason}")
    else:
        lines.append(report.receipt_text.rstrip())
    if report.flags:
        lines.append(f"  flags: {', '.join(report.flags)}")
    lines.append(f"  expected {dict(sorted(scenario.expect.basket.items())) or '{}'}"
                 f" / {scenario.expect.outcome}: {'OK' if ok else 'MISMATCH'}")
    return "\n".join(lines)


def run(workdir: Path, *, as_json: bool = False, seed: int = 0, out=sys.stdout,
        config: Path = DEFAULT_CONFIG) -> int:
    """Run every scenario once; exit 0 when every session matched its expectation."""
    results = []
    with SimCabinet(workdir, config, seed=seed) as cab:
        async def main() -> None:
            for scenario in cab.scenarios:
                report, _truth = await cab.run_scenario(scenario)
                results.append((scenario, report))
                if report is None:
                    print(f"{scenario.name}: no face reached the camera", file=out)
                    continue
                ok = as_expected(report, scenario)
                if as_json:
                    print(json.dumps({
                        "session": report.session_id, "scenario": scenario.name,
                        "account": report.account_name, "outcome": report.outcome,
                        "basket": {k: v for k, v in sorted(report.basket.items()) if v},
                        "total": report.total, "currency": report.currency,
                        "expected": dict(sorted(scenario.expect.basket.items())),
                        "expected_outcome": scenario.expect.outcome,
                        "flags": list(report.flags), "timings_ms": report.timings_ms}),
                        file=out, flush=True)
                else:
                    print(format_report(report, scenario, ok), file=out, flush=True)
        asyncio.run(main())
    good = sum(1 for s, r in results if as_expected(r, s))
    if not as_json:
        print(f"\n{good}/{len(results)} sessions ended as the scenarios expected "
              f"(data in {workdir})", file=out)
    return 0 if good == len(results) else 1
