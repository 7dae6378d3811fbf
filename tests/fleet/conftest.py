"""Fixtures for the fleet: real Mosquitto brokers and a real PostgreSQL fleet database.

- `mqtt_url`: the broker scripts/services.sh started (its URL in .cache/mqtt.url;
  CABINET_TEST_MQTT_URL overrides). Shared by every test run on the machine: tests on it use
  their own cabinet ids and shared-subscription group.
- `broker`: a broker of this test's own (Debian's mosquitto binary, the one services.sh
  installs, on a free loopback port, persistence in tmp_path), which the test may `restart()`,
  `stop()` and `start()` without disturbing anyone else's. Persistent sessions and queued
  messages survive a restart, as they do for a real broker.
- `fleet_db`: a fresh fleet database per test module on the PostgreSQL server from
  .cache/pg.url (CABINET_TEST_PG_URL overrides), dropped afterwards; `fleet_view` reads it.
- `serve`: starts `cabinet fleet serve` as a real subprocess (`start`, for tests that kill it)
  or the same BackOffice in this process (`here`), and waits until it subscribed.

Without mosquitto or PostgreSQL these tests skip, except in CI (CI=true), where they fail.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from billing.db import make_engine
from cabinet.fleet.serve import BackOffice, Broker, parse_broker, slot_client_id
from cabinet.fleet.store import FleetInstance, FleetMessage, open_fleet_db
from datagate import unavailable
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
MQTT_URL_FILE = ROOT / ".cache" / "mqtt.url"
PG_URL_FILE = ROOT / ".cache" / "pg.url"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_HINT = "start one with `bash scripts/services.sh` (make test does)"


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 1.0).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    url = os.environ.get("CABINET_TEST_MQTT_URL") or (
        MQTT_URL_FILE.read_text().strip() if MQTT_URL_FILE.is_file() else "")
    if not url:
        unavailable(f"MQTT: no broker URL ({MQTT_URL_FILE} is missing); {START_HINT}")
    b = parse_broker(url)
    if not _reachable(b.host, b.port):
        unavailable(f"MQTT: the broker at {url} does not answer; {START_HINT}")
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBroker:
    """A mosquitto process of one test's own; `restart()` keeps its port and its sessions."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.broker: Broker = parse_broker(self.url)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nmax_queued_messages 0\nmax_inflight_messages 0\n"
            f"user {_user()}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.folder / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: _reachable("127.0.0.1", self.port) or self.proc.poll() is not None,
                   f"mosquitto listening on {self.port}", timeout_s=10)
        assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text()

    def stop(self) -> None:
        """A clean stop: mosquitto saves its sessions and queued messages to disk (SIGTERM)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
            self.log.close()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def broker(tmp_path: Path):
    if not os.access(MOSQUITTO, os.X_OK):
        unavailable(f"MQTT: no mosquitto binary at {MOSQUITTO}; {START_HINT}")
    b = PrivateBroker(tmp_path / "mqtt")
    b.start()
    yield b
    b.stop()


# --- the fleet database -------------------------------------------------------------------------
def _pg_base() -> str:
    base = os.environ.get("CABINET_TEST_PG_URL") or (
        PG_URL_FILE.read_text().strip() if PG_URL_FILE.is_file() else "")
    if not base:
        unavailable(f"PostgreSQL: no server URL ({PG_URL_FILE} is missing); {START_HINT}")
    return base


@pytest.fixture(scope="module")
def fleet_db(request: pytest.FixtureRequest) -> str:
    """A fleet database of this module's own, migrated to head; dropped at the end."""
    base = _pg_base()
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    name = f"fleet_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        unavailable(f"PostgreSQL: {base} does not answer ({str(e.orig).splitlines()[0]}); "
                    f"{START_HINT}")
    url = make_engine(base).url.set(database=name).render_as_string(hide_password=False)
    engine, _ = open_fleet_db(url)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class FleetView:
    """The fleet database as committed, read on its own engine."""

    def __init__(self, url: str):
        self.engine, self.sessions = open_fleet_db(url)

    def count(self, model, *where) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))

    def all(self, model, *where) -> list:
        with self.sessions() as s:
            return list(s.scalars(select(model).where(*where)))

    def ids(self, cabinet_prefix: str) -> list[str]:
        """Ids stored from the cabinets whose id starts with `cabinet_prefix`."""
        with self.sessions() as s:
            return list(s.scalars(select(FleetMessage.id)
                                  .where(FleetMessage.cabinet_id.startswith(cabinet_prefix))))

    def ids_of(self, cabinet_id: str) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(FleetMessage.id)
                                  .where(FleetMessage.cabinet_id == cabinet_id)))

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def fleet_view(fleet_db: str):
    view = FleetView(fleet_db)
    yield view
    view.close()


class Served:
    """`cabinet fleet serve` subprocesses; every one still running is stopped at the end."""

    def __init__(self, db_url: str, view: FleetView, logs: Path):
        self.db_url, self.view, self.logs = db_url, view, logs
        self.procs: list[subprocess.Popen] = []
        self.offices: list[BackOffice] = []

    def start(self, broker_url: str, *, slot: str, group: str, batch: int = 500,
              wait: bool = True, args: tuple[str, ...] = ()) -> subprocess.Popen:
        log = open(self.logs / f"serve-{slot}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "cabinet.fleet.serve", "serve",
                                 "--db", self.db_url, "--broker", broker_url, "--slot", slot,
                                 "--group", group, "--batch", str(batch), *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        if wait:
            client_id = slot_client_id(group, slot)

            def subscribed():
                assert proc.poll() is None, f"fleet serve {slot} exited: {self.log_of(proc)}"
                rows = self.view.all(FleetInstance, FleetInstance.client_id == client_id,
                                     FleetInstance.pid == proc.pid)
                return rows and rows[0].subscribed_at is not None
            wait_until(subscribed, f"fleet serve {slot} subscribed", timeout_s=20, poll_s=0.05)
        return proc

    def here(self, broker_url: str, *, slot: str, group: str, batch: int = 500,
             **options) -> BackOffice:
        """The same back office in this process (threads): for tests that never kill it,
        a second faster to start than a subprocess. `options`: BackOffice's own (a signing
        key and gap policy)."""
        office = BackOffice(self.db_url, parse_broker(broker_url), slot=slot, group=group,
                            batch_max=batch, **options).start()
        self.offices.append(office)
        wait_until(office.subscribed.is_set, f"fleet serve {slot} subscribed", timeout_s=20)
        return office

    def log_of(self, proc: subprocess.Popen) -> str:
        i = self.procs.index(proc)
        files = sorted(self.logs.glob(f"serve-*-{i}.log"))
        return files[0].read_text(errors="replace")[-3000:] if files else ""

    def stop_all(self) -> None:
        for office in self.offices:
            office.stop(drain=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def serve(fleet_db: str, fleet_view: FleetView, tmp_path: Path):
    s = Served(fleet_db, fleet_view, tmp_path)
    yield s
    s.stop_all()

