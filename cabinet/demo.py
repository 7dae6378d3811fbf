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

from cabinet.app import App
from cabinet.config import Config, TimeoutsConfig, load_config
from cabinet.controller import Controller, SessionReport
from cabinet.errors import CabinetError
from cabinet.kiosk.state import Welcome
from cabinet.scenario import CloseDoor, Move, OpenDoor, Put, Take, Wait
from firmware_bridge.clock import Clock
from vision.faces import enrol_encodings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


DEFAULT_CONFIG = FIXTURES / "cabinet.yaml"


class SimCabinet:
    """The app (cabinet/app.py) with every part simulated, in its own folder, and the
    scripted customers at its door; `close()` stops every part.

    The configuration's data_dir and database become `workdir` and a SQLite file in it, so
    each demo (and each test) starts from a fresh cabinet. Every attribute of the app (board,
    mcu, world, billing, controller, ...) is reachable here by the same name."""

    def __init__(self, workdir: Path, config: Config | Path = DEFAULT_CONFIG, *, seed: int = 0,
                 timing: TimeoutsConfig | None = None, clock: Clock | None = None,
                 hardware_clock: Clock | None = None,
                 face_encoder: Callable[[Sequence[Path]], list[np.ndarray]] = enrol_encodings):
        config = config if isinstance(config, Config) else load_config(config)
        sim = {"serial": config.serial.model_copy(update={"port": "sim", "usb_serial": None,
                                                          "calibration": None}),
               "face_camera": config.face_camera.model_copy(update={"source": "sim"}),
               "cameras": {k: v.model_copy(update={"source": "sim"})
                           for k, v in config.cameras.items()},
               "gateway_url": "sim", "gateway_api_key_file": None}
        self.workdir = Path(workdir).resolve()
        config = config.model_copy(update={
            **sim, "data_dir": str(self.workdir),
            "database_url": f"sqlite:///{self.workdir / 'cabinet.sqlite'}"})
        if not config.scenarios or not config.accounts:
            raise CabinetError(f"{config.source}: the demo needs `scenarios:` and "
                               f"`accounts:` files named in the configuration")
        self.app = App(config, clock=clock, hardware_clock=hardware_clock, seed=seed,
                       timing=timing, face_encoder=face_encoder)
        # The app checks every file before it writes anything (the workdir included).
        self.app.start()

    def __getattr__(self, name: str):
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    @property
    def config(self) -> Config:
        return self.app.config

    def new_controller(self) -> Controller:
        """A controller over this cabinet's parts, with nothing in memory: a restart."""
        return self.app.new_controller()

    def close(self) -> None:
        self.app.close()

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
        photo = self.photo_for(scenario.person_for(fallback=self.app.fallback_faces),
                               scenario.photo)
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


def left_open(workdir: Path) -> str:
    """What an interrupted demo left in `workdir` ("" when nothing): sessions the journal
    shows open and payment calls the outbox still owes. Reads the folder's database only if
    it is there, and writes nothing."""
    database = Path(workdir) / "cabinet.sqlite"
    if not database.is_file():
        return ""
    from sqlalchemy import inspect

    from billing.db import make_engine, session_factory
    from billing.outbox import pending_rows
    from cabinet.journal import Journal
    engine = make_engine(f"sqlite:///{database}")
    try:
        tables = set(inspect(engine).get_table_names())
        db = session_factory(engine)
        sessions = Journal(db).open_sessions() if "journal" in tables else []
        with db() as s:
            pending = pending_rows(s) if "payment_outbox" in tables else []
        owed = sorted({row.session_id for row in pending} - {sid for sid, _ in sessions})
    finally:
        engine.dispose()
    parts = []
    if sessions:
        named = ", ".join(f"{sid} in {state}" for sid, state in sessions)
        parts.append(f"{len(sessions)} open session(s) ({named})")
    if owed:
        parts.append(f"unanswered payment calls of {len(owed)} session(s) ({', '.join(owed)})")
    return " and ".join(parts)


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
        config: Path = DEFAULT_CONFIG, serve: bool = False, port: int = 0,
        hold_s: float = 3.0, on_serving: Callable[[int], None] | None = None,
        recover: bool = False) -> int:
    """Run every scenario once; exit 0 when every session matched its expectation.

    A folder an interrupted demo left with open sessions or unanswered payment calls is
    refused (CabinetError naming them and `cabinet recover --workdir DIR`), unless `recover`
    (`--recover`): then they are finished first, as `cabinet recover` does. Accounts already
    enrolled in the folder are never enrolled again (cabinet/app.py looks them up).

    `serve` (`cabinet demo --serve`): the controller's web app (cabinet/web.py: the kiosk at
    /kiosk/, the console at /console/) on 127.0.0.1:`port` (0: a free one, printed on
    stderr and given to `on_serving`) while the scripted customers shop; each session's last
    screen (receipt, refusal) stays on the kiosk `hold_s` before the next customer's welcome.
    """
    results = []
    left = left_open(workdir)
    if left and not recover:
        raise CabinetError(
            f"{workdir}: an interrupted demo left {left}; finish it first with `cabinet "
            f"recover --workdir {workdir}`, or run the demo again with --recover")
    with SimCabinet(workdir, config, seed=seed) as cab:
        if left:
            from cabinet.recover_cli import print_report, recover_app
            recovered = recover_app(cab.app)
            print_report(recovered, sys.stderr if as_json else out)
            if recovered.exit_code != 0:
                return recovered.exit_code
        async def main() -> None:
            server = runner = None
            if serve:
                from cabinet.runner import Runner
                from cabinet.web import HttpServer, make_asgi
                runner = Runner(cab.app, environ={})
                server = HttpServer(make_asgi(runner), "127.0.0.1", port)
                bound = await server.start()
                print(f"cabinet demo: the kiosk is on http://127.0.0.1:{bound}/kiosk/",
                      file=sys.stderr, flush=True)
                if on_serving is not None:
                    on_serving(bound)
            try:
                await scenarios(runner)
            finally:
                if server is not None:
                    runner.kiosk.close()
                    await server.stop()

        async def scenarios(runner) -> None:
            for scenario in cab.scenarios:
                if runner is not None:
                    runner.kiosk.publish(Welcome())
                report, _truth = await cab.run_scenario(scenario)
                if runner is not None:
                    await cab.clock.sleep_async(hold_s)
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
