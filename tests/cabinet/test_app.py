"""The composition root: every configuration key changes what runs, and nothing is written
before the whole configuration (with every file it names) is valid."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cabinet import inforce
from cabinet.app import App, validate
from cabinet.config import (FACE_ACCEPT_DISTANCE, FACE_MIN_MARGIN, Config, load_config,
                            validate_main)
from cabinet.errors import CabinetError, ConfigError
from firmware_bridge.errors import PortNotFound
from firmware_bridge.simulator import SimMCU
from vision.cameras import CameraError, OpenCVCamera, SimFaceCamera

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def write_config(folder: Path, *, name: str = "cabinet.yaml", **changes) -> Path:
    """fixtures/cabinet.yaml with absolute file paths, data under `folder`, no accounts or
    scenarios (no face encoding) unless `changes` name them."""
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram"):
        data[key] = str(FIXTURES / data[key])
    data["accounts"] = data["scenarios"] = None
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def started(tmp_path):
    """Factory: an App started from a configuration with `changes`; closed at teardown."""
    apps: list[App] = []

    def start(folder: Path | None = None, **changes) -> App:
        app = App(write_config(folder or tmp_path / f"app{len(apps)}", **changes))
        apps.append(app)
        return app.start()
    yield start
    for app in reversed(apps):
        app.close()


# --- validation -------------------------------------------------------------------------------

def test_validation_reports_the_errors_of_every_file_at_once_and_writes_nothing(tmp_path, capsys):
    bad_accounts = tmp_path / "accounts.yaml"
    bad_accounts.write_text("schema_version: 1\naccounts:\n  - {id: a, name: A, colour: red}\n")
    cfg = write_config(tmp_path, planogram=str(FIXTURES / "bad" / "planogram_unknown_sku.yaml"),
                       accounts=str(bad_accounts), serial={"port": "/dev/ttyACM0"})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    text = str(info.value)
    assert "planogram_unknown_sku.yaml" in text          # the planogram's own error
    assert f"{bad_accounts}:3: accounts[0]" in text       # the accounts file's
    assert "serial.port = '/dev/ttyACM0': a real board needs serial.calibration" in text
    assert len(info.value.errors) >= 3
    assert validate_main(cfg) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(info.value.errors)
    assert not (tmp_path / "data").exists()


def test_start_with_a_broken_file_writes_nothing(tmp_path):
    cfg = write_config(tmp_path, catalog=str(FIXTURES / "bad" / "catalog_duplicate_sku.yaml"))
    app = App(cfg)
    with pytest.raises(ConfigError, match="catalog_duplicate_sku.yaml"):
        app.start()
    assert not (tmp_path / "data").exists()              # no database, no data_dir files


def test_a_camera_no_shelf_uses_is_an_error_with_its_line(tmp_path):
    cfg = write_config(tmp_path, cameras={"cam_top": {"source": "sim"}, "cam_side": {"source": 3}})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    [error] = info.value.errors
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if "cam_side" in text)
    assert str(error).startswith(f"{cfg}:{line}: cameras.cam_side")
    assert "no planogram shelf uses this camera" in str(error)


def test_config_validate_says_ok_for_the_default_configuration(capsys):
    assert validate_main(FIXTURES / "cabinet.yaml") == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_the_face_distance_floor_is_the_identity_policys():
    from vision.identity import DEFAULT_POLICY
    assert (FACE_ACCEPT_DISTANCE, FACE_MIN_MARGIN) == (DEFAULT_POLICY.accept_distance,
                                                       DEFAULT_POLICY.min_margin)


def test_the_default_refuse_line_is_the_one_bench_faces_measures():
    # `cabinet bench faces` measures DEFAULT_POLICY; a cabinet left at its defaults (or the
    # shipped fixtures) must decide with the same lines, or the figures describe another cabinet
    from vision.identity import DEFAULT_POLICY
    assert Config().thresholds.face_distance == DEFAULT_POLICY.refuse_distance
    for name in ("cabinet.yaml", "cabinet-jp.yaml"):
        assert load_config(FIXTURES / name).thresholds.face_distance == \
            DEFAULT_POLICY.refuse_distance, name


def test_face_distance_below_the_accept_line_and_margin_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="thresholds.face_distance"):
        load_config(write_config(tmp_path, thresholds={"face_distance": 0.5}))


def test_a_real_gateway_needs_its_key_file(tmp_path):
    with pytest.raises(ConfigError, match="gateway_api_key_file"):
        load_config(write_config(tmp_path, gateway_url="https://pay.example.com"))


# --- each key changes what runs ----------------------------------------------------------------

def test_the_simulated_parts(started, tmp_path):
    app = started(tmp_path / "a")
    assert app.mcu is not None and app.board.port == app.pty_path
    assert app.gateway is not None and app.gateway_client.base_url.startswith("http://127.0.0.1")
    assert isinstance(app.face_camera, SimFaceCamera)
    assert set(app.shelf_cameras) == {"cam_top", "cam_middle", "cam_bottom"}
    assert all(cam.capture().shape == (480, 640, 3) for cam in app.shelf_cameras.values())


def test_the_simulated_board_is_looked_for_in_its_own_registry_not_a_neighbours(
        started, tmp_path, monkeypatch):
    """Every simulator on a machine says SIM-0001 and publishes its pty in the machine's
    registry: another one started later (another test run, a crash bench) must not be where
    the cabinet's board is looked for when its port moves (the link took it over before)."""
    import tempfile
    from firmware_bridge.ports import RegistryPortFinder
    from waiting import wait_until
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "machine"))   # this test's machine
    (tmp_path / "machine").mkdir()
    app = started(tmp_path / "a")
    with SimMCU(seed=7) as neighbour:
        assert RegistryPortFinder().find("SIM-0001") == neighbour.path
        old = app.pty_path
        app.mcu.inject("port_vanish", duration_s=2.0)
        wait_until(lambda: (c := app.board.counters()).reconnects >= 1 and c.up,
                   "the link back", 30)
        assert neighbour.commands_executed == 0           # never asked who it is
        assert app.board.identity.port == app.mcu.path != old


def test_serial_port_path_uses_the_board_there_with_its_calibration(started, tmp_path):
    mcu = SimMCU(shelves=3, board_serial="SIM-REAL-7")
    pty = mcu.start()
    try:
        cal = tmp_path / "cal.json"
        cal.write_text(mcu.factory_calibration().to_json())
        app = started(tmp_path / "a", serial={"port": pty, "calibration": str(cal),
                                              "timeout_s": 2.5})
        assert app.mcu is None                          # no simulator started by the app
        assert app.identity.board_serial == "SIM-REAL-7"
        assert app.board.timeout_s == 2.5
        assert app.board.calibration().shelves == mcu.factory_calibration().shelves
    finally:
        mcu.stop()


def test_a_calibration_from_another_board_is_refused(started, tmp_path):
    mcu = SimMCU(shelves=3, board_serial="SIM-REAL-8")
    pty = mcu.start()
    try:
        cal = tmp_path / "cal.json"
        other = json.loads(mcu.factory_calibration().to_json())
        other["board_serial"] = "SOMEONE-ELSE"
        cal.write_text(json.dumps(other))
        with pytest.raises(CabinetError, match="SOMEONE-ELSE"):
            started(tmp_path / "a", serial={"port": pty, "calibration": str(cal)})
    finally:
        mcu.stop()


def test_an_absent_serial_port_is_an_error_naming_it(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"board_serial": "", "shelves": {}}))
    app = App(write_config(tmp_path, serial={"port": "/dev/ttyNOPE9", "calibration": str(cal)}))
    with pytest.raises(PortNotFound, match="/dev/ttyNOPE9"):
        app.start()
    assert not (tmp_path / "data").exists()


def test_usb_serial_looks_the_board_up_by_its_serial_number(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"board_serial": "", "shelves": {}}))
    app = App(write_config(tmp_path, serial={"port": "/dev/ttyACM0", "usb_serial": "NO-SUCH-SN",
                                             "calibration": str(cal)}))
    with pytest.raises(PortNotFound, match="NO-SUCH-SN"):
        app.start()


def test_cameras_from_files(started, tmp_path):
    shelf = np.full((480, 640, 3), 90, np.uint8)
    face = np.full((240, 320, 3), 30, np.uint8)
    cv2.imwrite(str(tmp_path / "shelf.png"), shelf)
    cv2.imwrite(str(tmp_path / "face.png"), face)
    app = started(tmp_path / "a", cameras={"cam_top": {"source": str(tmp_path / "shelf.png")}},
                  face_camera={"source": str(tmp_path / "face.png")})
    assert isinstance(app.shelf_cameras["cam_top"], OpenCVCamera)
    assert np.array_equal(app.shelf_cameras["cam_top"].capture(), shelf)
    assert not isinstance(app.shelf_cameras["cam_middle"], OpenCVCamera)
    assert isinstance(app.face_camera, OpenCVCamera)
    assert np.array_equal(app.face_camera.capture(), face)


def test_a_camera_that_cannot_open_names_its_source(tmp_path):
    app = App(write_config(tmp_path, face_camera={"source": str(tmp_path / "gone.mp4")}))
    with pytest.raises(CameraError, match="gone.mp4"):
        app.start()


def test_database_url_relative_to_the_configuration(started, tmp_path):
    folder = tmp_path / "site"
    app = started(folder, database_url="sqlite:///db/here.sqlite")
    assert (folder / "db" / "here.sqlite").is_file()
    assert str(app.engine.url).endswith("site/db/here.sqlite")


def test_gateway_url_reaches_that_gateway(started, tmp_path):
    from billing.gateway_server import SandboxGateway
    gateway = SandboxGateway()
    url = gateway.start()
    try:
        key = tmp_path / "key"
        key.write_text(gateway.api_key + "\n")
        app = started(tmp_path / "a", gateway_url=url, gateway_api_key_file=str(key))
        assert app.gateway is None                      # no sandbox of the app's own
        assert app.gateway_client.base_url == url.rstrip("/")
        intent = app.gateway_client.authorize(100, "EUR", "tok_visa_ok", "key-app-1")
        assert intent["status"] == "requires_capture"
    finally:
        gateway.stop()


def test_data_dir_holds_the_running_files(started, tmp_path):
    app = started(tmp_path / "a", data_dir=str(tmp_path / "elsewhere"))
    assert app.planogram_path == tmp_path / "elsewhere" / "running" / "planogram.yaml"
    assert app.controller.bundles_dir == tmp_path / "elsewhere" / "sessions"


def test_catalog_and_planogram_in_force_are_what_runs(started, tmp_path):
    catalog = yaml.safe_load((FIXTURES / "catalog.yaml").read_text())
    catalog["products"][0]["price"] += 11
    sku = catalog["products"][0]["sku"]
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    app = started(tmp_path / "a", catalog=str(tmp_path / "catalog.yaml"))
    assert app.catalog[sku].price == catalog["products"][0]["price"]
    # an applied catalog is in force at the next start
    cfg = load_config(tmp_path / "a" / "cabinet.yaml")
    catalog["products"][0]["price"] += 5
    inforce.for_config(cfg).apply("catalog", yaml.safe_dump(catalog).encode())
    app.close()
    again = App(cfg).start()
    try:
        assert again.catalog[sku].price == catalog["products"][0]["price"]
    finally:
        again.close()


def test_timeouts_and_thresholds_reach_the_controller(started, tmp_path):
    app = started(tmp_path / "a", timeouts={"face_s": 7, "auth_s": 3, "unlock_pulse_ms": 2500,
                                            "door_open_alarm_s": 30, "door_open_max_s": 90,
                                            "settle_s": 4, "gateway_s": 6},
                  thresholds={"face_distance": 0.58, "reconcile_min_confidence": 0.9,
                              "load_cell_noise_g": 3.0})
    t = app.controller.timing
    assert (t.face_s, t.auth_s, t.unlock_pulse_ms, t.door_open_alarm_s, t.door_open_max_s,
            t.settle_s) == (7, 3, 2500, 30, 90, 4)
    assert app.gateway_client.timeout_s == 6
    assert app.controller.identity_policy.refuse_distance == 0.58
    assert app.controller.min_confidence == 0.9
    assert app.controller.load_cell_noise_g == 3.0


def test_accounts_are_enrolled_once(started, tmp_path, face_encoder, shared_data):
    folder = tmp_path / "a"
    changes = dict(accounts=str(FIXTURES / "accounts.yaml"))
    app = App(write_config(folder, **changes), face_encoder=face_encoder).start()
    try:
        names = {a.name for a in app.accounts}
        from cabinet.accounts import list_accounts
        first = list_accounts(app.db)
        assert names <= {row["name"] for row in first}
        assert sum(row["templates"] for row in first) > 0
    finally:
        app.close()
    again = App(load_config(folder / "cabinet.yaml"), face_encoder=face_encoder).start()
    try:
        from cabinet.accounts import list_accounts
        assert list_accounts(again.db) == first          # a restart enrols nobody twice
    finally:
        again.close()


def test_scenarios_are_the_demos_customers(tmp_path, face_encoder):
    from cabinet.demo import SimCabinet
    scenarios = yaml.safe_load((FIXTURES / "scenarios.yaml").read_text())
    scenarios["scenarios"] = scenarios["scenarios"][:2]
    (tmp_path / "scenarios.yaml").write_text(yaml.safe_dump(scenarios))
    cfg = write_config(tmp_path, accounts=str(FIXTURES / "accounts.yaml"),
                       scenarios=str(tmp_path / "scenarios.yaml"))
    with SimCabinet(tmp_path / "demo", cfg, face_encoder=face_encoder) as cab:
        assert [s.name for s in cab.scenarios] == [s["name"] for s in scenarios["scenarios"]]
