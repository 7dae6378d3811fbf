"""The one configuration file (cabinet.yaml): ports, cameras, database, gateway, timeouts.

Validated by pydantic with unknown keys refused at every level (a typo is an error, as in
Klipper and Frigate). Every error of the file is reported at once, one line each, as
`file:line: key = value: message`; `cabinet config validate FILE` prints them (exit 1) or `ok`
(exit 0). Relative paths in the file are relative to the file's own directory. Real hardware
replaces a simulated part by configuration only: `serial.port`, a camera's `source`,
`database_url`, `gateway_url`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Union

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from cabinet.errors import ConfigError, FormatError
from cabinet.fleet.config import FleetConfig, check_fleet
from cabinet.tax_config import TaxConfig
from cabinet.yamlsrc import load_yaml, pydantic_errors


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _floatify(data: Any, names: tuple[str, ...]) -> Any:
    """YAML writes 5 for 5.0; accept ints where a float is meant (strict mode would not)."""
    if isinstance(data, dict):
        return {k: (float(v) if k in names and isinstance(v, int) and not isinstance(v, bool)
                    else v) for k, v in data.items()}
    return data


class SerialConfig(_Section):
    port: str = Field(default="sim", description='"sim" (simulated MCU on a pseudo-terminal), '
                      'a device path, or "hwgrep://..."')
    usb_serial: str | None = Field(default=None, description="Find the board by USB serial")
    baudrate: int = Field(default=115200, ge=1200, le=4000000)
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    calibration: str | None = Field(default=None, description="The board's load-cell "
                                    "calibration (JSON from cabinet-diag); required for a real "
                                    "board, the simulated MCU brings its own")

    @model_validator(mode="before")
    @classmethod
    def _floats(cls, data: Any) -> Any:
        return _floatify(data, ("timeout_s",))

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        if v != "sim" and not v.startswith(("/", "hwgrep://", "COM", "socket://", "rfc2217://")):
            raise ValueError('expected "sim", a device path such as /dev/ttyACM0, or '
                             'hwgrep://...')
        return v


class CameraConfig(_Section):
    source: Union[int, str] = Field(
        default="sim", description='"sim", an OpenCV device index, or a URL/path')

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError('expected "sim", an OpenCV device index (0, 1, ...) or a URL')
        if isinstance(v, int) and v < 0:
            raise ValueError("a device index is 0 or more")
        return v
    width: int = Field(default=640, ge=16, le=8192)
    height: int = Field(default=480, ge=16, le=8192)


class TimeoutsConfig(_Section):
    face_s: float = Field(default=10.0, gt=0, le=600, description="No face: back to idle")
    auth_s: float = Field(default=5.0, gt=0, le=120, description="Standing check and hold")
    unlock_pulse_ms: int = Field(default=5000, ge=100, le=30000, description="Lock release")
    door_open_alarm_s: float = Field(default=60.0, gt=0, le=3600)
    door_open_max_s: float = Field(default=300.0, gt=0, le=86400)
    settle_s: float = Field(default=5.0, gt=0, le=120, description="Wait for stable shelves")
    gateway_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="before")
    @classmethod
    def _floats(cls, data: Any) -> Any:
        return _floatify(data, ("face_s", "auth_s", "door_open_alarm_s", "door_open_max_s",
                                "settle_s", "gateway_s"))


class ThresholdsConfig(_Section):
    face_distance: float = Field(default=0.60, gt=0, lt=2, description="The identity policy's refuse line: beyond it a face is refused; between the accept line (0.45) and it, the second factor (docs/identity.md)")
    reconcile_min_confidence: float = Field(default=0.95, ge=0, le=1)
    load_cell_noise_g: float = Field(default=2.0, gt=0, le=100,
                                     description="Std dev of one settled shelf reading")

    @model_validator(mode="before")
    @classmethod
    def _floats(cls, data: Any) -> Any:
        return _floatify(data, ("face_distance", "reconcile_min_confidence",
                                "load_cell_noise_g"))


class HttpConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Where the controller's HTTP server "
                      "(health, metrics, the kiosk) listens")
    port: int = Field(default=8080, ge=0, le=65535, description="0: any free port (tests)")


class Config(_Section):
    schema_version: int = Field(default=1, ge=1, le=1)
    cabinet_id: str | None = Field(default=None, description="Defaults to the planogram's")
    serial: SerialConfig = Field(default_factory=SerialConfig)
    cameras: dict[str, CameraConfig] = Field(default_factory=dict,
                                             description="Camera id -> source; a planogram "
                                             "camera missing here is simulated")
    face_camera: CameraConfig = Field(default_factory=CameraConfig)
    database_url: str = Field(default="sqlite:///var/cabinet.sqlite")
    gateway_url: str = Field(default="sim", description='"sim" starts the sandbox on loopback')
    gateway_api_key_file: str | None = Field(default=None, description="The real gateway's "
                                             "API key, one line (required unless sim)")
    encryption_key_file: str | None = Field(default=None, description="The key sealing face "
                                            "templates and payment tokens (billing/crypto.py; "
                                            "`cabinet accounts keygen FILE`); none: "
                                            "$CABINET_KEY_FILE, else <database file>.key")
    data_dir: str = Field(default="var", description="Session bundles, logs, the database")
    catalog: str = Field(default="catalog.yaml")
    planogram: str = Field(default="planogram.yaml")
    accounts: str | None = Field(default=None, description="Demo accounts to enrol")
    scenarios: str | None = Field(default=None, description="Demo scenarios")
    recognizer: str | None = Field(default=None, description="The product recognizer's model "
                                   "folder (card.json, ONNX model, prototypes; docs/vision.md), "
                                   "relative to this file; \"none\": no recognizer; absent: the "
                                   "committed models/ when present, else none (said in the log "
                                   "and /healthz)")
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    tax: TaxConfig | None = Field(default=None, description="Tax rates, rounding, registration "
                                  "(cabinet/tax_config.py); none: receipts show no tax")
    fleet: FleetConfig | None = Field(default=None, description="The fleet broker and the "
                                      "back office's key (cabinet/fleet/config.py); none: "
                                      "the cabinet runs alone")

    source: Path | None = Field(default=None, exclude=True, description="(set by the loader)")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        if not v.startswith(("sqlite://", "postgresql", "mysql")):
            raise ValueError("expected an SQLAlchemy URL such as sqlite:///var/cabinet.sqlite")
        return v

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, v: str) -> str:
        if v != "sim" and not v.startswith(("http://", "https://")):
            raise ValueError('expected "sim" or an http(s):// URL')
        return v

    def resolve(self, relative: str | None) -> Path | None:
        """A path from the file, made absolute against the configuration file's directory."""
        if relative is None:
            return None
        p = Path(relative).expanduser()
        if p.is_absolute() or self.source is None:
            return p
        return self.source.parent / p

    @property
    def catalog_path(self) -> Path:
        return self.resolve(self.catalog)

    @property
    def planogram_path(self) -> Path:
        return self.resolve(self.planogram)

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)


def check_cameras_distinct(cfg: Config) -> list[tuple[tuple, str]]:
    """Two shelf cameras on one real device would silently share a picture."""
    seen: dict[Any, str] = {}
    problems = []
    for cam_id, cam in cfg.cameras.items():
        if cam.source == "sim":
            continue
        if cam.source in seen:
            problems.append((("cameras", cam_id, "source"),
                             f"same source as camera '{seen[cam.source]}'"))
        seen.setdefault(cam.source, cam_id)
    return problems


def check_door_timeouts(cfg: Config) -> list[tuple[tuple, str]]:
    t = cfg.timeouts
    if t.door_open_alarm_s > t.door_open_max_s:
        return [(("timeouts", "door_open_alarm_s"),
                 f"the alarm must come before door_open_max_s ({t.door_open_max_s})")]
    return []


def check_gateway_key(cfg: Config) -> list[tuple[tuple, str]]:
    """A real gateway refuses every call without its key: say so before anything runs."""
    if cfg.gateway_url != "sim" and cfg.gateway_api_key_file is None:
        return [(("gateway_url",), "a real gateway needs gateway_api_key_file (a file holding "
                 "its API key)")]
    return []


def check_identity_policy(cfg: Config) -> list[tuple[tuple, str]]:
    """face_distance is the identity policy's refuse line (vision/identity.py): it must leave
    the accept line (0.45) and the margin (0.10) room below it."""
    low = FACE_ACCEPT_DISTANCE + FACE_MIN_MARGIN
    if cfg.thresholds.face_distance < low - 1e-9:
        return [(("thresholds", "face_distance"),
                 f"must be at least {low:.2f} (accept line {FACE_ACCEPT_DISTANCE} plus margin "
                 f"{FACE_MIN_MARGIN}; docs/identity.md)")]
    return []


# vision.identity.DEFAULT_POLICY's lines, copied so validating a file does not import dlib
# (4 s); tests/cabinet/test_app.py checks they agree.
FACE_ACCEPT_DISTANCE, FACE_MIN_MARGIN = 0.45, 0.10


CROSS_CHECKS = (check_cameras_distinct, check_door_timeouts, check_gateway_key,
                check_identity_policy, check_fleet)


def load_config(path: str | Path) -> Config:
    """Read and validate the configuration; ConfigError lists every error, one line each."""
    path = Path(path)
    try:
        doc = load_yaml(path, "configuration")
    except FormatError as e:
        raise ConfigError([e]) from None
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.error((), "the configuration is a mapping of keys",
                                     with_value=False)])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(pydantic_errors(doc, e)) from None
    errors = [doc.error(loc, msg) for check in CROSS_CHECKS for loc, msg in check(cfg)]
    if errors:
        raise ConfigError(errors)
    return cfg.model_copy(update={"source": path})


def validate_main(path: str | Path, out: Any = None) -> int:
    """`cabinet config validate FILE`: the configuration and every file it names (catalog,
    planogram, accounts, scenarios, calibration), all errors at once, one line each, and 1;
    or `ok` and 0. Writes nothing."""
    from cabinet.app import validate
    out = out or sys.stdout
    try:
        validate(path)
    except ConfigError as e:
        for err in e.errors:
            print(err, file=out)
        return 1
    print(f"{path}: ok", file=out)
    return 0
