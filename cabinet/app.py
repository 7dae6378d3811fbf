"""The one composition root: every part of the cabinet, built from its configuration.

`App(config).start()` reads as the checklist a technician would follow, in order:

1. validate the whole configuration with every file it names (catalog, planogram, accounts,
   scenarios, calibration): every error at once, and nothing written before it passes;
2. a configured serial port must be there (never a silent fall-back to the simulator);
3. the simulated world, when any part is simulated (items in slots for the MCU and cameras);
4. the payment gateway: `sim` starts the sandbox on loopback, a URL gets the real client;
5. the board: `sim` starts the simulated MCU on a pty; identify it, check the versions and
   that every planogram shelf has a calibration;
6. the database (its URL; a relative SQLite path is relative to the configuration file);
7. the catalog and planogram in force (cabinet/inforce.py), copied for this run under
   data_dir/running/ so every session sells from the same files until a restart;
8. the accounts file's customers enrolled (only those not enrolled yet);
9. the cameras: an OpenCV index, file or URL, or `sim`;
10. the product recognizer (`recognizer:`; absent: the committed models/ when present),
    checked against its card's hashes, and said in the log;
11. the controller over those parts.

`cabinet run` is this app on the cabinet (cabinet/runner.py), `cabinet demo` is this app with a
scripted customer at the simulated door (cabinet/demo.py), and tests build it the same way.
Heavy imports (OpenCV, dlib, SQLAlchemy) happen in start(), so `cabinet config validate`
stays fast.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from cabinet import inforce
from cabinet.config import Config, load_config
from cabinet.errors import CabinetError, ConfigError, FormatError, FormatErrors


@dataclasses.dataclass(frozen=True)
class CabinetFiles:
    """The files a configuration names, read and checked against each other."""
    catalog_path: Path
    planogram_path: Path
    catalog: Any
    planogram: Any
    accounts: list | None
    scenarios: list | None


def _errors_of(e: CabinetError) -> list:
    return list(e.errors) if isinstance(e, FormatErrors) else [e]


def check_files(cfg: Config, *, in_force: bool = False) -> CabinetFiles:
    """Read every file the configuration names; FormatErrors with all their errors at once.

    `in_force`: the catalog and planogram in force under data_dir (what `cabinet run` sells
    from) instead of the ones the configuration names (what `config validate` checks)."""
    from cabinet.catalog import load_catalog
    from cabinet.planogram import load_planogram
    from cabinet.scenario import load_accounts, load_scenarios
    errors: list = []
    if in_force:
        store = inforce.for_config(cfg)
        catalog_path, planogram_path = store.path("catalog"), store.path("planogram")
    else:
        catalog_path, planogram_path = cfg.catalog_path, cfg.planogram_path
    catalog = planogram = accounts = scenarios = None
    try:
        catalog = load_catalog(catalog_path)
    except CabinetError as e:
        errors += _errors_of(e)
    if catalog is not None:
        try:
            planogram = load_planogram(planogram_path, catalog)
        except CabinetError as e:
            errors += _errors_of(e)
    if cfg.accounts:
        try:
            accounts = load_accounts(cfg.resolve(cfg.accounts))
        except CabinetError as e:
            errors += _errors_of(e)
    if cfg.scenarios and planogram is not None:
        try:
            scenarios = load_scenarios(cfg.resolve(cfg.scenarios), planogram)
        except CabinetError as e:
            errors += _errors_of(e)
    errors += _check_against_planogram(cfg, planogram)
    if errors:
        raise ConfigError(errors)
    return CabinetFiles(catalog_path, planogram_path, catalog, planogram, accounts, scenarios)


def _check_against_planogram(cfg: Config, planogram: Any) -> list:
    """Cross-file checks, located in the configuration file: the calibration readable (and
    there for a real board), every camera in `cameras` one the planogram uses (a camera
    nobody reads is a typo)."""
    problems: list[tuple[tuple, str]] = []
    if cfg.serial.calibration is not None:
        from firmware_bridge.loadcell import Calibration, CalibrationError
        path = cfg.resolve(cfg.serial.calibration)
        try:
            Calibration.from_json(path.read_text("utf-8"), where=str(path))
        except OSError as e:
            problems.append((("serial", "calibration"), f"{path}: cannot read it ({e.strerror})"))
        except CalibrationError as e:
            problems.append((("serial", "calibration"), str(e)))
    elif cfg.serial.port != "sim":
        problems.append((("serial", "port"), "a real board needs serial.calibration, its "
                         "load-cell calibration file (exported by cabinet-diag); docs/deploy.md"))
    problems += [(("recognizer",), msg) for msg in _check_recognizer_folder(cfg)]
    if planogram is not None:
        used = {shelf.camera for shelf in planogram.shelves}
        for cam_id in cfg.cameras:
            if cam_id not in used:
                problems.append((("cameras", cam_id), f"no planogram shelf uses this camera "
                                 f"(the planogram's cameras: {', '.join(sorted(used))})"))
    if not problems:
        return []
    if cfg.source is not None and Path(cfg.source).is_file():
        from cabinet.yamlsrc import load_yaml
        doc = load_yaml(cfg.source, "configuration")
        return [doc.error(loc, msg) for loc, msg in problems]
    return [FormatError(cfg.source or "configuration", None, loc, None, msg)
            for loc, msg in problems]


# the committed product recognizer, used when the configuration names none
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "models"
NO_RECOGNIZER = "none"


def _check_recognizer_folder(cfg: Config) -> list[str]:
    """A `recognizer:` folder that is not there or holds no model card (cheap: the model
    itself is loaded and checked against its hashes at start)."""
    if cfg.recognizer is None or cfg.recognizer == NO_RECOGNIZER:
        return []
    path = cfg.resolve(cfg.recognizer)
    if not path.is_dir():
        return [f"{path}: no such folder; name a model folder (`cabinet vision train --out "
                f"DIR` makes one; the committed one is {DEFAULT_MODELS}) or \"none\""]
    if not (path / "card.json").is_file():
        return [f"{path}: no card.json in it, so it is no model folder (docs/vision.md); name "
                f"the folder `cabinet vision train` wrote, or \"none\""]
    return []


def validate(path: str | Path) -> tuple[Config, CabinetFiles]:
    """The whole configuration and its files; ConfigError lists every error at once."""
    cfg = load_config(path)
    return cfg, check_files(cfg)


def database_url(cfg: Config) -> str:
    """The configuration's database URL; a relative SQLite path is relative to the
    configuration file's folder, like every other path in it (no folder is made here)."""
    url, prefix = cfg.database_url, "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") \
            and url[len(prefix):] not in ("", ":memory:"):
        return prefix + str(cfg.resolve(url[len(prefix):]))
    return url


class KeyFileError(CabinetError):
    """The configuration's encryption_key_file is not there or cannot be read (exit 2)."""


def secrets_of(cfg: Config):
    """The SecretBox of the configuration's `encryption_key_file` (billing/crypto.py), or None
    when it names none (then $CABINET_KEY_FILE, else `<database file>.key`). A missing or
    unreadable file is a KeyFileError, a malformed one a CabinetError, both naming the key and
    the path; read before anything is written."""
    if cfg.encryption_key_file is None:
        return None
    from billing.crypto import SecretError, load_key_file
    path = cfg.resolve(cfg.encryption_key_file)
    where = f"{cfg.source or 'configuration'}: encryption_key_file = {cfg.encryption_key_file}"
    if not path.is_file() or not os.access(path, os.R_OK):
        why = "not found" if not path.exists() else "cannot be read"
        raise KeyFileError(f"{where}: {path}: {why}; make one with `cabinet accounts keygen "
                           f"{path}` or fix the path (nothing was written)")
    try:
        return load_key_file(path)
    except SecretError as e:
        raise CabinetError(f"{where}: {e}") from None


def open_engine(cfg: Config, *, secrets: Any = None):
    """The configuration's database engine, migrated to the current tables (journal, alarms,
    inventory, billing); a relative SQLite file's folder is made. One opener for `cabinet run`,
    the demo and the operators' commands. `secrets`: the key a migration seals old plain-text
    values with (default: the configuration's encryption_key_file, if any)."""
    from sqlalchemy.exc import SQLAlchemyError

    import cabinet.inventory  # noqa: F401  (tables on the shared metadata)
    import cabinet.journal  # noqa: F401
    from billing.db import init_db, make_engine
    secrets = secrets if secrets is not None else secrets_of(cfg)   # before anything is made
    url = database_url(cfg)
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = None
    try:
        engine = make_engine(url)
        init_db(engine, secrets=secrets)
    except SQLAlchemyError as e:
        if engine is not None:
            engine.dispose()
        raise CabinetError(f"{cfg.source}: database_url = {cfg.database_url!r}: "
                           f"{type(e.__cause__ or e).__name__}: "
                           f"{str(e.__cause__ or e).splitlines()[0]}") from None
    return engine


def is_sim(source: Any) -> bool:
    return source == "sim"


class App:
    """Every part of one cabinet; `start()` builds them in order, `close()` stops them all."""

    def __init__(self, config: Config | str | Path, *, clock: Any = None,
                 hardware_clock: Any = None, seed: int = 0, timing: Any = None,
                 face_encoder: Callable[[Sequence[Path]], list] | None = None,
                 scenarios_hold_photos: bool = True, default_models: Path | None = DEFAULT_MODELS):
        from firmware_bridge.clock import clock_or_system
        self.config = config if isinstance(config, Config) else load_config(config)
        self.clock = clock_or_system(clock)
        self.hardware_clock = self.clock if hardware_clock is None else hardware_clock
        self.seed = seed
        self.timing = timing or self.config.timeouts
        self._face_encoder = face_encoder
        self._hold_photos = scenarios_hold_photos
        self._stack = contextlib.ExitStack()
        self.files: CabinetFiles | None = None
        self.secrets: Any = None            # billing.crypto.SecretBox of encryption_key_file
        self.world = self.mcu = self.gateway = self.board = self.engine = self.db = None
        self.billing = self.inventory = self.controller = self.identity = None
        self.bridge = None
        self.gateway_url: str | None = None
        self.pty_path: str | None = None
        self.face_camera: Any = None
        self.shelf_cameras: dict[str, Any] = {}
        self.account_ids: dict[str, int] = {}
        self.catalog_path: Path | None = None
        self.planogram_path: Path | None = None
        self.catalog = self.planogram = None
        self.scenarios: list = []
        self.accounts: list = []
        self.data_path = self.config.data_path
        self.fallback_faces = False
        self.photos: dict[str, list[Path]] = {}
        self._default_models = default_models  # used when the configuration names no recognizer
        self.recognizer: Any = None             # vision.recognizer.Recognizer, or None
        self.recognizer_note = ""               # which one, or why none (log, /healthz)

    # --- the checklist -----------------------------------------------------------------
    def start(self) -> "App":
        try:
            self.check_configuration()
            self.check_serial_port()
            self.start_world()
            self.start_gateway()
            self.start_board()
            self.open_database()
            self.put_files_in_force()
            self.enrol_accounts()
            self.start_cameras()
            self.load_recognizer()
            self.controller = self.new_controller()
        except BaseException:
            self.close()
            raise
        return self

    def check_configuration(self) -> None:
        """1. Every file read and checked; nothing has been written yet."""
        self.files = check_files(self.config, in_force=True)
        self.secrets = secrets_of(self.config)      # the key file named, read now
        self.catalog, self.planogram = self.files.catalog, self.files.planogram
        self.scenarios = list(self.files.scenarios or [])
        self.accounts = list(self.files.accounts or [])

    def check_serial_port(self) -> None:
        """2. A configured device path that is not there stops the start, naming it."""
        port = self.config.serial.port
        if port != "sim" and self.config.serial.usb_serial is None and port.startswith("/") \
                and not os.path.exists(port):
            from firmware_bridge.errors import PortNotFound
            raise PortNotFound(port)

    def _anything_simulated(self) -> bool:
        cams = [c.source for c in self.config.cameras.values()]
        cams += [c.source for c in self._planogram_cameras_unconfigured()]
        return self.config.serial.port == "sim" or any(is_sim(c) for c in cams) \
            or is_sim(self.config.face_camera.source)

    def _planogram_cameras_unconfigured(self) -> list:
        from cabinet.config import CameraConfig
        return [CameraConfig() for shelf in self.planogram.shelves
                if shelf.camera not in self.config.cameras]

    def start_world(self) -> None:
        """3. The simulated world (only when some part reads it)."""
        if not self._anything_simulated():
            return
        from cabinet.simworld import SimWorld
        self.world = SimWorld(self.planogram, self.catalog, seed=self.seed)
        self.world.restock(self.planogram.initial_stock())

    def start_gateway(self) -> None:
        """4. `sim`: the sandbox gateway on loopback; else the real one at its URL."""
        from billing.gateway import GatewayClient
        if self.config.gateway_url == "sim":
            from billing.gateway_server import SandboxGateway
            # kept under data_dir: a restart (`cabinet recover`) finds every intent and key
            (self.data_path / "gateway").mkdir(parents=True, exist_ok=True)
            self.gateway = SandboxGateway(data_dir=self.data_path / "gateway")
            self.gateway_url = self.gateway.start()
            self._stack.callback(self.gateway.stop)
            self.gateway_client = GatewayClient(self.gateway_url, api_key=self.gateway.api_key,
                                                timeout_s=self.timing.gateway_s,
                                                sleep=self.clock.sleep)
        else:
            self.gateway_url = self.config.gateway_url
            key_file = self.config.resolve(self.config.gateway_api_key_file)
            try:
                self.gateway_client = GatewayClient(self.gateway_url, api_key_file=key_file,
                                                    timeout_s=self.timing.gateway_s,
                                                    sleep=self.clock.sleep)
            except ValueError as e:
                raise CabinetError(f"{self.config.source}: gateway_api_key_file: {e}") from None

    def start_board(self) -> None:
        """5. The board on its port (`sim`: the simulated MCU's pty), identified and checked."""
        from cabinet.controller import EventBridge
        from firmware_bridge.device import Board
        from firmware_bridge.loadcell import Calibration
        serial = self.config.serial
        calibration = None
        if serial.port == "sim":
            from firmware_bridge.simulator import SimMCU
            # a lock channel for each of the planogram's compartments (the simulator has 1..3)
            channels = max((c.lock_channel for c in self.planogram.compartments), default=0)
            self.mcu = SimMCU(shelves=len(self.planogram.shelves), load_fn=self.world.shelf_load,
                              seed=self.seed, clock=self.hardware_clock,
                              lock_channels=min(4, max(2, channels + 1)),
                              # its own port registry: every simulator on a machine says SIM-0001
                              registry_dir=self.data_path / "sim-ports")
            port = self.mcu.start()
            self.pty_path = port
            self._stack.callback(self.mcu.stop)
        else:
            port = f"serial:{serial.usb_serial}" if serial.usb_serial else serial.port
            path = self.config.resolve(serial.calibration)
            calibration = Calibration.from_json(path.read_text("utf-8"), where=str(path))
        self.bridge = EventBridge()
        self.board = Board(port, timeout_s=serial.timeout_s, calibration=calibration,
                           on_event=self.bridge, clock=self.hardware_clock,
                           finder=self.mcu.registry if self.mcu is not None else None)
        self.identity = self.board.open()
        self._stack.callback(self.board.close)
        self.check_board(calibration)
        ident = self.identity
        logging.getLogger("cabinet.app").info(
            "board %s on %s: protocol %s, firmware %s, %d shelves, reset %s",
            ident.board_serial, ident.port or port, ident.protocol_version,
            ident.firmware_version, ident.shelves, ident.reset_reason)

    def check_board(self, calibration: Any = None) -> None:
        """The board answers as the planogram needs: enough shelves, and (a real board) the
        calibration made on this very board."""
        ident = self.identity
        channels = sorted({shelf.channel for shelf in self.planogram.shelves})
        if channels and channels[-1] >= ident.shelves:
            raise CabinetError(f"board {ident.board_serial} on {ident.port or self.board.port} "
                               f"has {ident.shelves} shelves; the planogram wires channel "
                               f"{channels[-1]}: check the board or the planogram")
        if calibration is not None and calibration.board_serial \
                and calibration.board_serial != ident.board_serial:
            raise CabinetError(f"serial.calibration was made on board {calibration.board_serial}"
                               f", this is board {ident.board_serial}: calibrate this board "
                               f"(cabinet-diag) and export its calibration")
        cal = self.board.calibration()
        missing = [c for c in channels if c not in cal.shelves
                   or cal.shelves[c].counts_per_gram <= 0]
        if missing:
            raise CabinetError(f"board {ident.board_serial}: no calibration for load-cell "
                               f"channel(s) {missing}: calibrate with cabinet-diag")

    def open_database(self) -> None:
        """6. The database, migrated to the current tables (journal, alarms, billing)."""
        from sqlalchemy import func, select

        from billing.db import session_factory
        from billing.service import Billing
        from cabinet.inventory import Inventory
        self.engine = open_engine(self.config, secrets=self.secrets)
        self._stack.callback(self.engine.dispose)
        self.db = session_factory(self.engine)
        from cabinet.tax_config import tax_setup   # issue 11: taxed receipts
        self.billing = Billing(self.db, self.gateway_client, currency=self.catalog.currency,
                               secrets=self.secrets,
                               cabinet_id=self.planogram.cabinet_id,
                               tax=tax_setup(self.config.tax, self.catalog,
                                             f"{self.config.source}: tax"))
        from cabinet.inventory import SlotStock
        self.inventory = Inventory(self.db, self.planogram)
        with self.db() as s:
            believed = s.scalar(select(func.count()).select_from(SlotStock))
        if not believed:        # a new database: the planogram's initial stock
            self.inventory.restock(self.planogram.initial_stock())
        elif self.world is not None:    # the simulated shelves hold what the cabinet believes
            self.world.restock({slot: len(skus) for slot, skus in self.inventory.slots().items()})

    def put_files_in_force(self) -> None:
        """7. This run's copies of the catalog and planogram in force: every session bundle
        copies them and every price comes from them, whatever an apply does meanwhile (an
        applied planogram takes effect at the next start)."""
        from cabinet.catalog import load_catalog
        from cabinet.planogram import load_planogram
        running = self.data_path / "running"
        running.mkdir(parents=True, exist_ok=True)
        self.catalog_path = running / "catalog.yaml"
        self.planogram_path = running / "planogram.yaml"
        shutil.copyfile(self.files.catalog_path, self.catalog_path)
        shutil.copyfile(self.files.planogram_path, self.planogram_path)
        self.catalog = load_catalog(self.catalog_path)
        self.planogram = load_planogram(self.planogram_path, self.catalog)

    def enrol_accounts(self) -> None:
        """8. The accounts file's customers, once each (a restart enrols nobody twice); a
        scenario's probe photo is kept out of its account's templates."""
        if not self.accounts:
            return
        from cabinet import accounts as accounts_mod
        from vision.data import data_root, faces_root, people
        from vision.faces import enrol_encodings
        self.photos = people()
        root = faces_root()
        self.fallback_faces = root is None or root != data_root() / "faces"
        known = {row["name"]: row["id"] for row in accounts_mod.list_accounts(self.db)}
        probes: dict[str, set[int]] = {}
        for sc in self.scenarios if self._hold_photos else ():
            person = sc.person_for(fallback=self.fallback_faces)
            if person:
                probes.setdefault(person, set()).add(sc.photo)
        from cabinet import enrolment
        by_key = enrolment.keys(self.db)        # the accounts file's stable ids
        for acct in self.accounts:
            person = acct.person_for(fallback=self.fallback_faces)
            account_id = by_key.get(acct.id)
            if account_id is None and acct.name in known \
                    and known[acct.name] not in by_key.values():
                # enrolled before its key was kept (an older cabinet, or a crash between the
                # account and its key): adopt it, never enrol it twice
                account_id = known[acct.name]
                enrolment.remember(self.db, acct.id, account_id)
            if account_id is not None:
                if person:
                    self.account_ids[person] = account_id
                continue
            photos = self.photos.get(person or "", [])
            enrol = [p for i, p in enumerate(photos) if i not in probes.get(person, ())] \
                or photos[:1]
            if not enrol:
                continue    # no face enrolled for this account in this mode (QR only)
            account = accounts_mod.enroll(self.billing, None, acct.name, enrol,
                                          payment_token=acct.payment_token,
                                          currency=self.catalog.currency,
                                          encode=self._face_encoder or enrol_encodings)
            if acct.status == "blocked":
                self.billing.block(account.id, "blocked in the accounts file")
            enrolment.remember(self.db, acct.id, account.id)
            self.account_ids[person] = account.id

    def start_cameras(self) -> None:
        """9. Each planogram camera and the face camera: `sim` or an OpenCV source."""
        from vision.cameras import OpenCVCamera, SimFaceCamera
        from cabinet.config import CameraConfig
        face = self.config.face_camera
        if is_sim(face.source):
            self.face_camera = SimFaceCamera()
        else:
            self.face_camera = OpenCVCamera(self._source(face.source))
            self._stack.callback(self.face_camera.close)
        looks = foreign = None
        for cam_id in sorted({shelf.camera for shelf in self.planogram.shelves}):
            cam = self.config.cameras.get(cam_id, CameraConfig())
            if is_sim(cam.source):
                if looks is None:
                    from vision.data import data_root
                    from vision.sim.looks import foreign_photos, product_looks
                    looks = product_looks(self.catalog, data_root())
                    foreign = foreign_photos(data_root())
                    self.looks = looks
                from cabinet.simworld import shelf_view_fn
                from vision.sim.camera import SimShelfCamera
                self.shelf_cameras[cam_id] = SimShelfCamera(
                    shelf_view_fn(self.world, self.planogram, cam_id), looks, seed=self.seed,
                    foreign_photos=foreign)
            else:
                camera = OpenCVCamera(self._source(cam.source))
                self._stack.callback(camera.close)
                self.shelf_cameras[cam_id] = camera

    def load_recognizer(self) -> None:
        """10. The product recognizer the configuration names (`recognizer: DIR`), none
        (`recognizer: none`), or by default the committed models/ when that folder is there;
        a model that is missing or does not match its card stops the start, naming the key."""
        key = self.config.recognizer
        log = logging.getLogger("cabinet.app")
        if key == NO_RECOGNIZER:
            self.recognizer_note = "none (recognizer: none in the configuration)"
        elif key is None and (self._default_models is None
                              or not (self._default_models / "card.json").is_file()):
            self.recognizer_note = (f"none: the configuration names no recognizer and "
                                    f"{self._default_models} holds no model; shelves are read "
                                    f"by weight, change and occupancy only")
        else:
            from vision.recognizer import Recognizer, RecognizerError
            folder = self.config.resolve(key) if key is not None else self._default_models
            try:
                self.recognizer = Recognizer.load(folder)
            except RecognizerError as e:
                where = (f"{self.config.source or 'configuration'}: recognizer = {key}"
                         if key is not None else f"the default recognizer {folder}")
                raise CabinetError(f"{where}: {e}") from None
            self.recognizer_note = (f"{folder} version {self.recognizer.version} (names crops of "
                                    f"{self.recognizer.min_crop_px} px and more)")
        log.info("product recognizer: %s", self.recognizer_note)

    def _source(self, source: int | str) -> int | str:
        """An OpenCV index or URL as is; a file path relative to the configuration's folder."""
        if isinstance(source, int) or "://" in source:
            return source
        return str(self.config.resolve(source))

    def new_controller(self):
        """11. A controller over these parts, with nothing in memory (as after a restart)."""
        import dataclasses as dc

        from cabinet import accounts as accounts_mod
        from cabinet.controller import Controller
        from cabinet.journal import Journal
        from vision.identity import DEFAULT_POLICY
        policy = dc.replace(DEFAULT_POLICY, refuse_distance=self.config.thresholds.face_distance)
        return Controller(
            cabinet_id=self.config.cabinet_id or self.planogram.cabinet_id, board=self.board,
            bridge=self.bridge, face_camera=self.face_camera, shelf_cameras=self.shelf_cameras,
            billing=self.billing,
            gallery=accounts_mod.load_gallery(self.db, self.config.thresholds.face_distance,
                                              secrets=self.secrets),
            accounts=lambda aid: accounts_mod.name_of(self.db, aid),
            planogram_path=self.planogram_path, catalog_path=self.catalog_path,
            journal=Journal(self.db), inventory=self.inventory,
            bundles_dir=self.data_path / "sessions", timing=self.timing,
            load_cell_noise_g=self.config.thresholds.load_cell_noise_g,
            min_confidence=self.config.thresholds.reconcile_min_confidence, clock=self.clock,
            identity_policy=policy, shelf_calibration=self.shelf_calibration(),
            recognizer=self.recognizer)

    def shelf_calibration(self):
        """The shelf cameras' calibration frames `cabinet vision calibrate` saved in
        <data_dir>/calibration (its default folder), checked against their hashes; None when
        the cameras were never calibrated (the reader then works without them)."""
        folder = self.data_path / "calibration"
        if not (folder / "calibration.json").is_file():
            return None
        from vision.calibration import CalibrationError, load_calibration
        try:
            return load_calibration(folder)
        except CalibrationError as e:
            raise CabinetError(f"{self.config.source}: data_dir: {e}") from None

    def new_fleet_agent(self, **hooks: Any):
        """The fleet agent (not started) when `fleet:` is configured, else None; `cabinet run`
        starts it with its hooks (cabinet/fleet/wiring.py)."""
        from cabinet.fleet.wiring import agent_for
        return agent_for(self, **hooks)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
