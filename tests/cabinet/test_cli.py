"""The `cabinet` command as a person runs it: exit codes, one-line errors, nothing changed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CABINET = [str(BIN / "cabinet")] if (BIN / "cabinet").exists() else [sys.executable, "-m",
                                                                      "cabinet.cli"]


def run(*args, timeout=120):
    return subprocess.run([*CABINET, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
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
    assert proc.returncode == 1
    assert not workdir.exists()


def test_demo_with_malformed_catalog_yaml(fixtures_copy, tmp_path):
    (fixtures_copy / "catalog.yaml").write_text("products:\n  - sku: [unclosed\n")
    proc = run("demo", "--config", fixtures_copy / "cabinet.yaml", "--workdir", tmp_path / "d")
    one_line_error(proc, "catalog.yaml")
    assert not (tmp_path / "d").exists()


def test_demo_with_a_missing_config(tmp_path):
    proc = run("demo", "--config", tmp_path / "nope.yaml", "--workdir", tmp_path / "d")
    one_line_error(proc, "nope.yaml")


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
    one_line_error(proc, "shelf.jpg")
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


def test_sim_mcu_prints_its_pty_first_and_the_diag_cli_reads_it():
    sim = subprocess.Popen([*CABINET, "sim", "mcu"], stdout=subprocess.PIPE, text=True,
                           cwd=ROOT, start_new_session=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/") and os.path.exists(path), path
        diag = BIN / "cabinet-diag"
        cmd = [str(diag)] if diag.exists() else [sys.executable, "-m", "firmware_bridge.diag"]
        out = subprocess.run([*cmd, "--port", path, "status", "--json"], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        state = json.loads(out.stdout.splitlines()[-1])
        assert state["lock_engaged"] is True
    finally:
        os.killpg(sim.pid, signal.SIGTERM)
        sim.wait(timeout=10)


def test_diag_on_a_port_that_does_not_exist():
    diag = BIN / "cabinet-diag"
    cmd = [str(diag)] if diag.exists() else [sys.executable, "-m", "firmware_bridge.diag"]
    proc = subprocess.run([*cmd, "--port", "/dev/ttyNOPE9", "status"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    one_line_error(proc, "/dev/ttyNOPE9")
