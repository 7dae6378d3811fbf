"""`cabinet bench crash`: SIGKILL the running controller at random moments; nothing may be lost.

    cabinet bench crash [--kills N] [--seed S] [--json] [--out FILE] [--workdir DIR]
                        [--max-gap S] [--flaky RATE]

What runs where, as in a real cabinet:

- this process is the world outside the controller: the simulated MCU on a pseudo-terminal
  (separate hardware: it keeps running through every kill and relocks by itself at the end of
  each pulse), the shelves and the items on them (`SimWorld`, which the MCU's load cells
  weigh), the customers, and the sandbox payment gateway on loopback, flaky (`--flaky`: that
  share of requests answered 500, dropped after acting, slowed, or delivered twice) and kept on
  disk;
- the controller is `cabinet run`'s Runner over the one App (cabinet/app.py), in its own
  process forked from `python -m cabinet.bench_crash --zygote CONFIG WORLD`. It sees the MCU
  through its pty, the gateway through HTTP with its API key, and the world through its
  cameras: the shelf cameras render what this process publishes in WORLD/world.json (the
  items and where they stand), the face camera shows the photo named in WORLD/face.txt (the
  customer in front of it). Its configuration names everything (serial.port,
  serial.calibration, gateway_url, gateway_api_key_file, encryption_key_file, database_url).

The kill loop: start a controller, SIGKILL it at a random moment (aimed, uniformly, at one of:
its start-up and recovery, idle, or a state of the session under way: face_auth, unlocked,
door_open, door_closed, reconcile, charge; a random delay into that state), start the next one
(a restart recovers: Controller.recover at start), and so on `--kills` times; then one
last controller runs until the customers have left, the gateway's outage is over (the flaky
gateway is restarted on the same port and data, healthy) and nothing is open or owed, and
stops by SIGTERM. For speed each controller is forked from a zygote process that has imported
the code and opened nothing (a prefork server: a restart without the interpreter's start-up,
about 3 s of CPU each on this machine); the child starts from nothing but that code.

Customers come one after another all along: each shows a face (a scenario's held-out photo of
an enrolled customer, or of a stranger), waits for the lock to release, opens the door, takes an
item, puts one back or takes nothing, closes the door, and waits for the session to end, even
across a restart.

At the end every session is checked in the journal, the ledger and the gateway (`check`):
- lost: sessions without exactly one outcome (still open in the journal, more or fewer than
  one return to idle, no closed ledger session, or a gateway intent no session knows);
- double_charges: sessions where the gateway took more than the ledger's total, or two
  captured payments of one kind;
- inventory_mismatches: slots where the controller's belief differs from the items there;
- unlocked_doors: the lock released at the end, releases the MCU saw without a command, and
  unlock pulses beyond the sessions the journal authorised;
- holds_left: holds authorised at the gateway and never captured or voided, or still open in
  the ledger.
All must be 0. `--json`: one object with exactly kills, lost, double_charges,
inventory_mismatches, unlocked_doors, holds_left, sessions, wall_s.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_CONFIG = ROOT / "fixtures" / "cabinet.yaml"
KEYS = ("kills", "lost", "double_charges", "inventory_mismatches", "unlocked_doors",
        "holds_left", "sessions", "wall_s")
MUST_BE_ZERO = ("lost", "double_charges", "inventory_mismatches", "unlocked_doors",
                "holds_left")
TIMEOUTS = {"face_s": 5, "auth_s": 8, "unlock_pulse_ms": 1500, "door_open_alarm_s": 30,
            "door_open_max_s": 120, "settle_s": 3, "gateway_s": 2}
WORLD_FILE, FACE_FILE = "world.json", "face.txt"
# Where each kill is aimed, drawn uniformly: the controller's start-up (recovery included),
# idle, and each state of a session.
KILL_TARGETS = ("start-up", "idle", "face_auth", "unlocked", "door_open", "door_closed",
                "reconcile", "charge")


# --- the world as the controller's cameras see it (controller side) -----------------------
class MirrorWorld:
    """The shelves as WORLD/world.json shows them (written by the bench after every change):
    what the controller's simulated cameras render. The controller never changes the world,
    and a restart restocks nothing: `restock` does nothing here."""

    def __init__(self, path: Path):
        from cabinet.simworld import Item
        self._path = Path(path)
        self._item = Item
        self._mtime: int | None = None
        self._slots: dict[str, tuple] = {}

    def _load(self) -> dict[str, tuple]:
        stat = self._path.stat()
        if stat.st_mtime_ns != self._mtime:
            data = json.loads(self._path.read_text("utf-8"))
            self._slots = {slot: tuple(self._item(**item) for item in items)
                           for slot, items in data.items()}
            self._mtime = stat.st_mtime_ns
        return self._slots

    def slot_items(self, slot_id: str) -> tuple:
        return self._load().get(slot_id, ())

    def restock(self, levels: dict[str, int]) -> None:
        """A controller start does not put items on the shelves."""


class FaceFile:
    """The face camera: the photo named in WORLD/face.txt (empty: nobody in front of it), at
    the configured face camera's resolution (fitted inside width x height, 640x480 by default;
    the photos themselves are up to 1024 px)."""

    def __init__(self, path: Path, width: int = 640, height: int = 480):
        self._path = Path(path)
        self._size = (width, height)
        self._cache: dict[str, Any] = {}

    def capture(self):
        import cv2
        try:
            name = self._path.read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        if not name:
            return None
        if name not in self._cache:
            frame = cv2.imread(name, cv2.IMREAD_COLOR)
            if frame is not None:
                h, w = frame.shape[:2]
                scale = min(1.0, self._size[0] / w, self._size[1] / h)
                if scale < 1.0:
                    frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                                       interpolation=cv2.INTER_AREA)
            self._cache = {name: frame}
        frame = self._cache[name]
        return None if frame is None else frame.copy()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def zygote(config: Path, world_dir: Path) -> int:
    """The controllers' parent: it imports the controller's code and nothing else (no file,
    port or database opened), then forks a fresh controller for each `fork` line on stdin
    (a prefork server: the restart without the interpreter's start-up). Each child says
    `child PID` and runs `cabinet run`'s Runner over the App, whose world and face camera are
    the bench's (above); SIGKILL is how it usually ends. Children are reaped at once."""
    import cabinet.controller  # noqa: F401  (the heavy imports, before any fork)
    import cabinet.runner  # noqa: F401
    import vision.faces  # noqa: F401
    import vision.sim.camera  # noqa: F401
    import vision.sim.looks  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("zygote", flush=True)
    for line in sys.stdin:
        if line.strip() != "fork":
            continue
        sys.stdout.flush()
        if os.fork() == 0:
            code = 1
            try:
                code = _controller(config, world_dir)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    return 0


def _controller(config: Path, world_dir: Path) -> int:
    """One controller (a forked child of the zygote)."""
    import asyncio

    from cabinet.app import App
    from cabinet.runner import Runner
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    class BenchApp(App):
        def start_world(self) -> None:
            self.world = MirrorWorld(world_dir / WORLD_FILE)

        def start_cameras(self) -> None:
            super().start_cameras()
            face = self.config.face_camera
            self.face_camera = FaceFile(world_dir / FACE_FILE, face.width, face.height)

    print(f"child {os.getpid()}", flush=True)
    # its own seed: the simulated shelf cameras' noise must not replay the last life's frames
    # bit for bit (reconcile would take the camera for frozen), as a real sensor never does
    app = BenchApp(config, seed=os.getpid())
    try:
        app.start()
        runner = Runner(app, poll_s=0.05, environ={}, screen_hold_s=0.0)
        return asyncio.run(runner.run())
    finally:
        app.close()


# --- the bench (this process: hardware, world, customers, gateway) -------------------------
class Controller:
    """One controller process, forked by the zygote (`Zygote.start`)."""

    def __init__(self, pid: int, went_at: float):
        self.pid = pid
        self.went_at = went_at                  # start -> serving: the restart, recovery included
        self.served_at: float | None = None
        self.serving = threading.Event()

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)                # the zygote reaps its children: no zombies
        except ProcessLookupError:
            return False
        return True

    def _gone(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench crash: controller {self.pid} still runs after "
                                   f"{timeout_s:.0f} s")
            time.sleep(0.005)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self._gone(10.0)

    def stop(self, timeout_s: float = 60.0) -> None:
        os.kill(self.pid, signal.SIGTERM)
        self._gone(timeout_s)


class Zygote:
    """The process that forks the controllers (`zygote` above); one controller at a time."""

    def __init__(self, config: Path, world_dir: Path, log: TextIO):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cabinet.bench_crash", "--zygote", str(config),
             str(world_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            cwd=ROOT, text=True, start_new_session=True)
        self.ready = threading.Event()
        self._children: "queue.Queue[int]" = queue.Queue()
        self.current: Controller | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("zygote"):
                self.ready.set()
            elif line.startswith("child "):
                self._children.put(int(line.split()[1]))
            elif " serving on " in line and self.current is not None:
                self.current.served_at = time.monotonic()
                self.current.serving.set()

    def start(self, timeout_s: float = 120.0) -> Controller:
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"bench crash: the controllers' zygote did not get ready in "
                               f"{timeout_s:.0f} s (exit {self.proc.poll()}); see its log")
        went_at = time.monotonic()
        self.proc.stdin.write("fork\n")
        self.proc.stdin.flush()
        try:
            pid = self._children.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError("bench crash: the zygote forked no controller") from None
        self.current = Controller(pid, went_at)
        return self.current

    def close(self) -> None:
        if self.current is not None and self.current.alive():
            self.current.kill()
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Ledger:
    """Read-only look at the controller's database from the bench."""

    def __init__(self, url: str):
        from billing.db import make_engine, session_factory
        self.engine = make_engine(url)
        self.db = session_factory(self.engine)

    def last_journal_id(self) -> int:
        from sqlalchemy import func, select

        from cabinet.journal import JournalEntry
        with self.db() as s:
            return s.scalar(select(func.max(JournalEntry.id))) or 0

    def ended_since(self, journal_id: int) -> list[str]:
        """Triggers of session rows after `journal_id` that return to idle."""
        from sqlalchemy import select

        from cabinet.journal import JournalEntry
        with self.db() as s:
            return list(s.scalars(select(JournalEntry.trigger).where(
                JournalEntry.id > journal_id, JournalEntry.session_id.is_not(None),
                JournalEntry.dest == "idle")))

    def open_state(self) -> str | None:
        from cabinet.journal import Journal
        states = Journal(self.db).open_sessions()
        return states[0][1] if states else None

    def settled(self) -> bool:
        from billing.outbox import pending_rows
        from cabinet.journal import Journal
        with self.db() as s:
            pending = pending_rows(s)
        return not pending and not Journal(self.db).open_sessions()

    def close(self) -> None:
        self.engine.dispose()


@dataclasses.dataclass
class Visit:
    person: str
    photo: Path
    stranger: bool


class Customers:
    """Customers one after another until stopped; each visit bounded in real time."""

    def __init__(self, bench: "Bench", rng: random.Random):
        self.bench = bench
        self.rng = rng
        self.stop = threading.Event()
        self.visits = collections.Counter()
        self.taken = collections.Counter()
        self.thread = threading.Thread(target=self._run, name="customers", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.visit(self.rng.choice(self.bench.visitors))
        except BaseException as e:          # reported by the bench, never swallowed
            self.error = e

    def _wait(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def visit(self, who: Visit) -> None:
        bench, mcu, world = self.bench, self.bench.mcu, self.bench.world
        start_id = bench.ledger.last_journal_id()
        bench.show_face(who.photo)
        released = self._wait(lambda: not mcu.lock_engaged or bench.ledger.ended_since(start_id),
                              bench.patience_s)
        if not released or mcu.lock_engaged:
            bench.show_face(None)
            self.visits["refused" if released else "gave_up"] += 1
            return
        bench.show_face(None)
        if not mcu.open_door():
            self.visits["door_held"] += 1
            self._wait(lambda: bench.ledger.ended_since(start_id), bench.session_wait_s)
            return
        kind = self._act(world)
        self.visits[kind] += 1
        time.sleep(self.rng.uniform(0.1, 0.8))          # the customer at the open door
        mcu.close_door()
        taken = world.leave()
        self.taken.update(taken)
        bench.publish_world()
        if not self._wait(lambda: bench.ledger.ended_since(start_id), bench.session_wait_s):
            self.visits["session_not_ended_in_time"] += 1

    def _act(self, world) -> str:
        stock = world.stock()
        slots = [s for s, items in stock.items() if len(items) >= 2
                 and s not in self.bench.restricted_slots]
        total = sum(len(v) for v in stock.values())
        roll = self.rng.random()
        if not slots or roll < 0.3:
            return "browsed"
        slot = self.rng.choice(slots)
        item = world.take(slot, 1)[0]
        self.bench.publish_world()
        if roll < 0.6 or total < 15:
            time.sleep(self.rng.uniform(0.05, 0.4))
            world.put(slot, item.sku, 1)
            self.bench.publish_world()
            return "put_back"
        return "bought"


class Bench:
    def __init__(self, workdir: Path, *, seed: int, flaky: float, max_gap_s: float):
        from billing.gateway_server import SandboxGateway
        from cabinet.app import check_files
        from cabinet.config import load_config
        from cabinet.simworld import SimWorld
        from firmware_bridge.simulator import SimMCU
        from vision.data import data_root, faces_root, people
        self.workdir = workdir
        self.world_dir = workdir / "world"
        self.world_dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.flaky, self.seed, self.max_gap_s = flaky, seed, max_gap_s
        self.patience_s, self.session_wait_s = 30.0, 90.0
        fixture = load_config(FIXTURE_CONFIG)
        files = check_files(fixture)
        self.catalog, self.planogram = files.catalog, files.planogram
        self.restricted_slots = {slot.id for slot in self.planogram.slots
                                 if getattr(self.catalog[slot.sku], "age_restricted", False)}
        # the physical side
        self.world = SimWorld(self.planogram, self.catalog, seed=seed)
        self.world.restock(self.planogram.initial_stock())
        self._world_lock = threading.Lock()
        self.publish_world()
        self.show_face(None)
        # its own port registry: every simulator on a machine says SIM-0001, and another
        # process's link must never find (and take over) this bench's board by that serial
        self.mcu = SimMCU(shelves=len(self.planogram.shelves), load_fn=self.world.shelf_load,
                          seed=seed, registry_dir=workdir / "sim-ports")
        self.pty = self.mcu.start()
        (workdir / "calibration.json").write_text(self.mcu.factory_calibration().to_json())
        self.gateway_dir = workdir / "gateway"
        self.gateway_dir.mkdir(exist_ok=True)
        self.gateway = SandboxGateway(data_dir=self.gateway_dir, flaky=flaky, slow_s=0.3,
                                      seed=seed)
        self.gateway_url = self.gateway.start()
        (workdir / "gateway.key").write_text(self.gateway.api_key + "\n")
        from billing.crypto import write_key_file
        write_key_file(workdir / "cabinet.key")
        self.config = self._write_config(fixture)
        self.database_url = f"sqlite:///{workdir / 'cabinet.sqlite'}"
        # who comes: the scenarios' held-out photos (enrolled customers and a stranger)
        fallback = faces_root() != data_root() / "faces"
        photos = people()
        self.visitors = []
        for sc in files.scenarios or []:
            person = sc.person_for(fallback=fallback)
            shots = photos.get(person or "", [])
            if shots:
                self.visitors.append(Visit(person, shots[min(sc.photo, len(shots) - 1)],
                                           sc.expect.outcome == "denied"))
        if not self.visitors:
            raise RuntimeError("bench crash: no face photos for the scenarios' customers")
        self.ledger: Ledger | None = None

    def _write_config(self, fixture) -> Path:
        data = yaml.safe_load(FIXTURE_CONFIG.read_text("utf-8"))
        for key in ("catalog", "planogram", "accounts", "scenarios"):
            data[key] = str(fixture.resolve(data[key]))
        data.update({
            "serial": {"port": self.pty, "calibration": "calibration.json", "timeout_s": 1.0},
            "database_url": "sqlite:///cabinet.sqlite", "gateway_url": self.gateway_url,
            "gateway_api_key_file": "gateway.key", "encryption_key_file": "cabinet.key",
            "data_dir": "data", "http": {"host": "127.0.0.1", "port": 0},
            "timeouts": dict(TIMEOUTS),
            # a small face camera: identification is the session's costliest step on two
            # shared cores (the photos are fitted into it, faces stay 100+ px)
            "face_camera": {"source": "sim", "width": 400, "height": 300}})
        path = self.workdir / "cabinet.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
        return path

    def publish_world(self) -> None:
        """What the cameras see now (items, serials and poses per slot)."""
        with self._world_lock:
            data = {slot: [dataclasses.asdict(item) for item in self.world.slot_items(slot)]
                    for slot in self.world.stock()}
            _write_atomic(self.world_dir / WORLD_FILE, json.dumps(data))

    def show_face(self, photo: Path | None) -> None:
        _write_atomic(self.world_dir / FACE_FILE, "" if photo is None else str(photo))

    def healthy_gateway(self) -> None:
        """The outage ends: the same gateway (port, data, key) without injected faults."""
        from billing.gateway_server import SandboxGateway
        port = int(self.gateway_url.rsplit(":", 1)[1])
        self.gateway.stop()
        self.gateway = SandboxGateway(port=port, data_dir=self.gateway_dir)
        self.gateway.start()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        self.gateway.stop()
        self.mcu.stop()


def run(kills: int, *, seed: int = 0, workdir: Path | None = None, flaky: float = 0.1,
        max_gap_s: float = 5.0, progress: TextIO | None = None) -> dict[str, Any]:
    """The whole bench; the JSON object (KEYS) plus `detail` (phases killed, visits, ...)."""
    if kills < 1:
        raise ValueError(f"bench crash: --kills {kills}: at least 1")
    if workdir is None:
        workdir = ROOT / "var" / "bench-crash" / dt.datetime.now(dt.timezone.utc).strftime(
            "%Y%m%dT%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    bench = Bench(workdir, seed=seed, flaky=flaky, max_gap_s=max_gap_s)
    log = (workdir / "controllers.log").open("a", encoding="utf-8")
    phases: collections.Counter[str] = collections.Counter()
    restarts: list[float] = []
    customers = Customers(bench, random.Random(seed + 1))
    zygote_proc: Zygote | None = None
    try:
        zygote_proc = Zygote(bench.config, bench.world_dir, log)
        # the first start enrols the customers: it runs to the end of its start-up unkilled
        current = zygote_proc.start()
        if not current.serving.wait(300):
            raise RuntimeError(f"bench crash: the first controller did not start; see "
                               f"{workdir / 'controllers.log'}")
        bench.ledger = Ledger(bench.database_url)
        customers.thread.start()
        for n in range(kills):
            aim_kill(bench, current, bench.rng.choice(KILL_TARGETS), max_gap_s)
            phase = (bench.ledger.open_state() or "idle") if current.serving.is_set() \
                else "start-up"
            current.kill()
            phases[phase] += 1
            if current.served_at is not None:
                restarts.append(current.served_at - current.went_at)
            if customers.error is not None:
                raise customers.error
            current = zygote_proc.start()
            if progress is not None and (n + 1) % 10 == 0:
                print(f"bench crash: {n + 1}/{kills} kills, {time.monotonic() - t0:.0f} s",
                      file=progress, flush=True)
        # the end: the gateway's outage ends, the customers leave, the last controller
        # finishes everything and stops cleanly
        bench.healthy_gateway()
        if not current.serving.wait(120):
            raise RuntimeError("bench crash: the last controller did not start")
        customers.stop.set()
        customers.thread.join(timeout=180)
        deadline = time.monotonic() + 180
        while not bench.ledger.settled():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        current.stop()
        if customers.error is not None:
            raise customers.error
        result = check(bench, kills)
    finally:
        customers.stop.set()
        if zygote_proc is not None:
            zygote_proc.close()
        log.close()
        bench.close()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["detail"] = {"killed_in": dict(phases), "visits": dict(customers.visits),
                        "items_taken": sum(customers.taken.values()), "workdir": str(workdir),
                        "restart_s_median": round(sorted(restarts)[len(restarts) // 2], 2)
                        if restarts else None,
                        "seed": seed, "flaky": flaky, "max_gap_s": max_gap_s}
    return result


def aim_kill(bench: Bench, controller: Controller, target: str, max_gap_s: float) -> None:
    """Return at a random moment in `target`: 0..1.5 s after the start for start-up; else once
    the controller serves, 0..1 s into idle, or once the journal shows the session in that
    state (or a session ended before reaching it: a refusal, nothing taken), then a random
    0..--max-gap/10 s more, so the kill lands anywhere in the state and just past it."""
    if target == "start-up":
        time.sleep(bench.rng.uniform(0.0, 1.5))
        return
    controller.serving.wait(120)
    if target != "idle":
        start_id = bench.ledger.last_journal_id()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and bench.ledger.open_state() != target \
                and not bench.ledger.ended_since(start_id):
            time.sleep(0.02)
    time.sleep(bench.rng.uniform(0.0, 1.0 if target == "idle" else max_gap_s / 10))


def _gateway_sessions(gateway) -> dict[str, list[dict]]:
    """Intents created at the gateway, by the session in their idempotency key."""
    out: dict[str, list[dict]] = collections.defaultdict(list)
    with gateway._lock:
        records = list(gateway._book.idempotency.values())
    for rec in records:
        if rec["path"] == "/v1/payment_intents" and rec["body"].get("id"):
            intent = gateway.intent(rec["body"]["id"]) or rec["body"]
            out[rec["key"].rsplit(":", 1)[0]].append(intent)
        elif rec["path"] == "/v1/payment_intents" and "error" in rec["body"]:
            intent = rec["body"]["error"].get("payment_intent")
            if intent:
                out[rec["key"].rsplit(":", 1)[0]].append(gateway.intent(intent["id"]) or intent)
    return out


def check(bench: Bench, kills: int) -> dict[str, Any]:
    """Every session in the journal, the ledger and the gateway; the counts of what is wrong."""
    from sqlalchemy import func, select

    from billing.models import CabinetSession, Charge, Hold
    from cabinet.inventory import Inventory
    from cabinet.journal import Journal, JournalEntry
    db = bench.ledger.db
    with db() as s:
        journal_ids = set(s.scalars(select(JournalEntry.session_id).where(
            JournalEntry.session_id.is_not(None)).distinct()))
        idle_returns = dict(s.execute(select(JournalEntry.session_id, func.count()).where(
            JournalEntry.session_id.is_not(None), JournalEntry.dest == "idle")
            .group_by(JournalEntry.session_id)).all())
        authorized = s.scalar(select(func.count()).select_from(JournalEntry).where(
            JournalEntry.trigger == "authorized")) or 0
        rows = {r.id: (r.state, r.outcome, r.total) for r in s.scalars(select(CabinetSession))}
        captured = collections.Counter(
            (c.session_id, c.kind) for c in s.scalars(select(Charge).where(
                Charge.status == "captured")))
        open_holds = s.scalar(select(func.count()).select_from(Hold).where(
            Hold.status.in_(("requested", "authorized", "void_requested")))) or 0
    open_now = {sid for sid, _ in Journal(db).open_sessions()}
    intents = _gateway_sessions(bench.gateway)
    lost = set()
    for sid in journal_ids:
        state, outcome, _total = rows.get(sid, (None, None, None))
        if sid in open_now or idle_returns.get(sid, 0) != 1 or outcome is None \
                or state != "closed":
            lost.add(sid)
    lost |= {sid for sid in intents if sid not in rows}
    double = set()
    for sid, its in intents.items():
        received = sum(i.get("amount_received", 0) - i.get("amount_refunded", 0) for i in its
                       if i.get("status") == "succeeded")
        total = (rows.get(sid) or (None, None, None))[2] or 0
        if received > total:
            double.add(sid)
    double |= {sid for (sid, _kind), n in captured.items() if n > 1}
    belief = Inventory(db, bench.planogram).slots()
    truth = bench.world.stock()
    mismatches = sum(1 for slot, items in truth.items()
                     if collections.Counter(belief.get(slot, [])) != collections.Counter(items))
    holds_left = open_holds + sum(1 for its in intents.values() for i in its
                                  if i.get("status") == "requires_capture")
    unlocked = (0 if bench.mcu.lock_engaged else 1) + bench.mcu.uncommanded_releases \
        + max(0, bench.mcu.unlocks_executed - authorized)
    return {"kills": kills, "lost": len(lost), "double_charges": len(double),
            "inventory_mismatches": mismatches, "unlocked_doors": unlocked,
            "holds_left": holds_left, "sessions": len(journal_ids),
            "problems": {"lost": sorted(lost)[:20], "double_charges": sorted(double)[:20]}}


def table(result: dict[str, Any]) -> str:
    rows = [(k, result[k], "must be 0" if k in MUST_BE_ZERO else "") for k in KEYS]
    lines = [f"{'measure':<22}{'value':>10}  ", "-" * 44]
    lines += [f"{k:<22}{v:>10}  {note}" for k, v, note in rows]
    d = result.get("detail", {})
    if d:
        killed = ", ".join(f"{k} {v}" for k, v in sorted(d["killed_in"].items()))
        visits = ", ".join(f"{k} {v}" for k, v in sorted(d["visits"].items()))
        lines.append(f"killed in: {killed}")
        lines.append(f"visits: {visits}; items taken {d['items_taken']}")
        lines.append(f"restart (start to serving, recovery included): median "
                     f"{d['restart_s_median']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    p = argparse.ArgumentParser(prog="cabinet bench crash",
                                description="SIGKILL the controller at random moments; check "
                                            "that no session, payment, hold or item is lost")
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the run's database, gateway and logs go (default "
                        "var/bench-crash/<time>)")
    p.add_argument("--max-gap", type=float, default=5.0,
                   help="a kill comes up to S/10 seconds after its aimed state begins")
    p.add_argument("--flaky", type=float, default=0.1,
                   help="share of gateway requests with an injected fault (default 0.1)")
    args = p.parse_args(argv)
    if args.kills < 1:
        p.error(f"--kills {args.kills}: at least 1")
    if not 0 <= args.flaky <= 1:
        p.error(f"--flaky {args.flaky}: a rate in 0..1")
    if args.max_gap <= 0:
        p.error(f"--max-gap {args.max_gap}: seconds above 0")
    out = out or sys.stdout
    result = run(args.kills, seed=args.seed, workdir=args.workdir, flaky=args.flaky,
                 max_gap_s=args.max_gap, progress=sys.stderr)
    summary = {k: result[k] for k in KEYS}
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    print(json.dumps(summary) if args.json else table(result), file=out)
    return 0 if all(result[k] == 0 for k in MUST_BE_ZERO) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--zygote":
        sys.exit(zygote(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(main())
