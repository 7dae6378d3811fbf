"""The `cabinet` command as a person runs it: exit codes, one-line errors, nothing changed."""
from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cabinet import cli, logs
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CABINET = [str(BIN / "cabinet")] if (BIN / "cabinet").exists() else [sys.executable, "-m",
                                                                      "cabinet.cli"]


def run(*args, timeout=120):
    return subprocess.run([*CABINET, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def one_line_error(proc, *needles, code=1):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fixtures_copy(tmp_path):
    dst = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", dst, ignore=shutil.ignore_patterns("bad"))
    return dst


def test_demo_with_a_planogram_naming_an_unknown_sku_changes_nothing(fixtures_copy, tmp_path):
    plan = fixtures_copy / "planogram.yaml"
    text = plan.read_text()
    assert "sku: cola-330" in text
    plan.write_text(text.replace("sku: cola-330", "sku: cola-999", 1))
    line_no = next(i for i, line in enumerate(plan.read_text().splitlines(), 1)
                   if "cola-999" in line)
    workdir = tmp_path / "demo"
    proc = run("demo", "--config", fixtures_copy / "cabinet.yaml", "--workdir", workdir)
    msg = one_line_error(proc, "planogram.yaml", "cola-999")
    assert f":{line_no}" in msg
    assert not workdir.exists()


def test_demo_with_malformed_catalog_yaml(fixtures_copy, tmp_path):
    (fixtures_copy / "catalog.yaml").write_text("products:\n  - sku: [unclosed\n")
    proc = run("demo", "--config", fixtures_copy / "cabinet.yaml", "--workdir", tmp_path / "d")
    one_line_error(proc, "catalog.yaml")
    assert not (tmp_path / "d").exists()


def test_demo_with_a_missing_config(tmp_path):
    proc = run("demo", "--config", tmp_path / "nope.yaml", "--workdir", tmp_path / "d")
    one_line_error(proc, "nope.yaml", "file not found")
    assert not (tmp_path / "d").exists()


def test_config_validate(fixtures_copy):
    ok = run("config", "validate", fixtures_copy / "cabinet.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    cfg = fixtures_copy / "cabinet.yaml"
    cfg.write_text(cfg.read_text().replace("settle_s: 5", "settle_s: -1\n  colour: red"))
    bad = run("config", "validate", cfg)
    assert bad.returncode == 1
    out = bad.stdout + bad.stderr
    assert "settle_s" in out and "colour" in out and "cabinet.yaml:" in out


def test_enrol_refuses_a_photo_without_a_face_and_writes_nothing(tmp_path):
    blank = tmp_path / "shelf.jpg"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 200, np.uint8))
    db = tmp_path / "c.sqlite"
    proc = run("accounts", "enroll", "Nobody", blank, "--db", db)
    one_line_error(proc, "shelf.jpg", "face")
    listed = run("accounts", "list", "--db", db, "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == ""


def test_enrol_then_list(tmp_path, shared_data):
    photos = sorted((shared_data / "faces" / "obama").iterdir())[:2]
    db = tmp_path / "c.sqlite"
    proc = run("accounts", "enroll", "Barack Obama", *photos, "--db", db)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in run("accounts", "list", "--db", db,
                                             "--json").stdout.splitlines()]
    assert rows == [{"id": 1, "name": "Barack Obama", "status": "active", "currency": "EUR",
                     "templates": 2}]


def test_reconcile_of_a_missing_bundle(tmp_path):
    one_line_error(run("reconcile", tmp_path / "no-such-bundle", "--json"), "no-such-bundle")


def first_line(proc, timeout_s=30.0) -> str:
    """The first line proc writes to stdout, or '' if it exits or the deadline passes first."""
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    data = b""
    try:
        while b"\n" not in data and time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    finally:
        sel.close()
    return data.decode().split("\n")[0].strip() if b"\n" in data else ""


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_sim_mcu_prints_its_pty_first_and_the_diag_cli_reads_it(verbose, tmp_path):
    err = tmp_path / "stderr"
    with err.open("wb") as err_file:   # a file, not a pipe: verbose logs can never block it
        sim = subprocess.Popen([*CABINET, *verbose, "sim", "mcu", "--shelves", "2"],
                               stdout=subprocess.PIPE, stderr=err_file, cwd=ROOT,
                               start_new_session=True)
    try:
        path = first_line(sim)
        assert path.startswith("/dev/pts/") and os.path.exists(path), \
            (path, sim.poll(), err.read_text())
        diag = BIN / "cabinet-diag"
        cmd = [str(diag)] if diag.exists() else [sys.executable, "-m", "firmware_bridge.diag"]
        out = subprocess.run([*cmd, "--port", path, "status", "--json"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout.splitlines()[-1])
        assert state["lock_engaged"] is True
        assert len(state["shelves"]) == 2   # the sub-tool got its own flag
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        rc = sim.wait(timeout=10)
    assert rc == 0  # SIGTERM is a clean stop


def test_verbose_bench_link_runs_every_part_with_its_own_flags(tmp_path):
    out = tmp_path / "link.json"
    proc = run("-v", "bench", "link", "--json", "--out", out, "--pings", 20, "--flood", 200,
               "--commands", 20, "--events", 50, "--resets", 1, "--vanish-s", 0.2, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == json.loads(out.read_text())
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert result["rtt"]["pings"] == 20 and result["flood"]["delivered"] == 200
    assert result["noisy"]["commands"]["sent"] == 20 and result["noisy"]["events"]["sent"] >= 50
    assert result["recovery"]["port_vanish"]["vanished_s"] == 0.2


def test_verbose_turns_info_logs_on(fixtures_copy, capsys):
    try:
        assert cli.main(["-v", "config", "validate", str(fixtures_copy / "cabinet.yaml")]) == 0
        assert logging.getLogger().getEffectiveLevel() == logging.INFO
        assert cli.main(["config", "validate", str(fixtures_copy / "cabinet.yaml")]) == 0
        assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    finally:
        logs.setup(verbose=False)


def test_unknown_arguments_of_a_command_are_a_usage_error(tmp_path):
    proc = run("reconcile", tmp_path, "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


# --- exit codes by exception type ------------------------------------------------------------

def _errors_by_code():
    from billing.db import DatabaseUrlError
    from billing.errors import UnknownAccount
    from billing.gateway import GatewayUnavailable, IdempotencyConflict, PaymentDeclined
    from billing.money import InvalidAmount
    from cabinet.errors import BundleError, ConfigError, FormatError
    from firmware_bridge.errors import (CommandRefused, LinkDown, PortBusy, PortNotFound,
                                        ProtocolVersionMismatch)
    from vision.cameras import CameraError
    from vision.faces import FaceError
    fmt = FormatError("c.yaml", 3, "serial.port", "x", "no such port")
    return [
        (PortNotFound("/dev/ttyNOPE"), cli.EXIT_CONNECTION),
        (PortBusy("/dev/ttyACM0"), cli.EXIT_CONNECTION),
        (LinkDown("MCU on /dev/ttyACM0 does not answer"), cli.EXIT_CONNECTION),
        (ProtocolVersionMismatch("/dev/ttyACM0", "2.0", "1.0"), cli.EXIT_CONNECTION),
        (GatewayUnavailable("gateway down"), cli.EXIT_CONNECTION),
        (CommandRefused("MCU refused unlock"), cli.EXIT_ERROR),
        (PaymentDeclined("insufficient funds"), cli.EXIT_ERROR),
        (IdempotencyConflict("key reused"), cli.EXIT_ERROR),
        (fmt, cli.EXIT_ERROR),
        (ConfigError([fmt]), cli.EXIT_ERROR),
        (BundleError("b", "bundle.json: missing"), cli.EXIT_ERROR),
        (FaceError("p.jpg", "no face found"), cli.EXIT_ERROR),
        (CameraError("camera 0 cannot be opened"), cli.EXIT_ERROR),
        (DatabaseUrlError("database: empty path"), cli.EXIT_ERROR),
        (UnknownAccount(7), cli.EXIT_ERROR),
        (InvalidAmount("amount -1"), cli.EXIT_ERROR),
    ]


def test_each_error_type_has_its_exit_code():
    cases = _errors_by_code()
    assert {code for _, code in cases} == {cli.EXIT_ERROR, cli.EXIT_CONNECTION}
    for error, code in cases:
        assert cli.exit_code_for(error) == code, type(error).__name__


def test_every_row_of_the_exit_code_table_names_an_exception_class():
    import importlib
    for module, name, code in cli.EXIT_CODES:
        cls = getattr(importlib.import_module(module), name, None)
        assert isinstance(cls, type) and issubclass(cls, Exception), (module, name)
        assert code in (cli.EXIT_ERROR, cli.EXIT_CONNECTION)
    # a row is never shadowed by a more general class above it
    classes = [getattr(importlib.import_module(m), n) for m, n, _ in cli.EXIT_CODES]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, above) for above in classes[:i]), cls.__name__


def test_a_bug_is_not_dressed_up_as_a_user_error():
    class Bug(Exception):
        pass
    assert cli.exit_code_for(Bug("x")) is None
    assert cli.exit_code_for(ValueError("x")) is None   # only our own ValueError subclasses


def test_ctrl_c_inside_a_database_transaction_still_exits_130(monkeypatch, capsys):
    # CI caught it: Ctrl-C landed inside a migration, SQLAlchemy answered the next statement with
    # PendingRollbackError, open_engine named the database, and the demo exited 1
    def run(args, rest):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("Can't reconnect until invalid transaction is rolled back")
        except RuntimeError as e:
            from cabinet.errors import CabinetError
            raise CabinetError("cabinet.yaml: database_url = 'sqlite:///x': " + str(e)) from None
    monkeypatch.setattr(cli, "_run", run)
    assert cli.main(["demo"]) == cli.EXIT_INTERRUPTED
    assert "database_url" not in capsys.readouterr().err
    assert not cli.interrupted(ValueError("x"))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # alarms in gc hooks
def test_ctrl_c_at_any_point_of_opening_the_database_is_an_interrupt(tmp_path):
    # the real path: SIGALRM raises KeyboardInterrupt at 25 points spread over open_engine
    from cabinet.app import open_engine
    from cabinet.config import load_config
    cfg = load_config(ROOT / "fixtures" / "cabinet.yaml")

    def opened(i):
        return cfg.model_copy(update=dict(database_url=f"sqlite:///{tmp_path}/db{i}.sqlite"))
    start = time.perf_counter()
    open_engine(opened("full")).dispose()
    full = time.perf_counter() - start

    def interrupt(*_):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, interrupt)
    outcomes = []
    try:
        for i in range(25):
            signal.setitimer(signal.ITIMER_REAL, full * (i + 0.5) / 25)
            try:
                open_engine(opened(i)).dispose()
                outcomes.append("finished")
            except BaseException as e:       # noqa: BLE001  (what the command line would see)
                outcomes.append("interrupt" if cli.interrupted(e) else repr(e))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert set(outcomes) <= {"finished", "interrupt"}, outcomes
    assert "interrupt" in outcomes


def test_ctrl_c_exits_130(tmp_path):
    workdir = tmp_path / "demo"
    proc = subprocess.Popen([*CABINET, "demo", "--workdir", str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        # the database is created inside main's try: from then on Ctrl-C is main's to handle
        wait_until(lambda: (workdir / "cabinet.sqlite").exists() or proc.poll() is not None,
                   "the demo to create its database", 60, poll_s=0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err


def test_diag_on_a_port_that_does_not_exist():
    diag = BIN / "cabinet-diag"
    cmd = [str(diag)] if diag.exists() else [sys.executable, "-m", "firmware_bridge.diag"]
    proc = subprocess.run([*cmd, "--port", "/dev/ttyNOPE9", "status"], capture_output=True,
                          text=True, timeout=30)
    one_line_error(proc, "/dev/ttyNOPE9", "does not exist", code=2)
