"""`cabinet run` as a subprocess: the simulated MCU on a pty, a customer, a forced door, SIGTERM.

The controller runs as the product runs (`python -m cabinet.cli run --config FILE`): the
default configuration's parts, with its own data_dir, a free HTTP port and a longer auth
window (two CPU cores shared with the rest of the suite). The test is the customer and the
technician: it talks to the controller's HTTP server (/healthz, /metrics, the simulator's
/sim/* routes) and plays systemd (a $NOTIFY_SOCKET datagram socket). Every wait is a condition
with a deadline.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
import waiting

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
pytestmark = pytest.mark.slow


def write_config(folder: Path, **changes) -> Path:
    """fixtures/cabinet.yaml with absolute file paths, data under `folder`, port 0."""
    data = yaml.safe_load((FIXTURES / "cabinet.yaml").read_text())
    for key in ("catalog", "planogram", "accounts", "scenarios"):
        data[key] = str(FIXTURES / data[key])
    data["data_dir"] = str(folder / "data")
    data["database_url"] = f"sqlite:///{folder / 'data' / 'cabinet.sqlite'}"
    data["http"] = {"host": "127.0.0.1", "port": 0}
    data["timeouts"]["auth_s"] = 60      # three dlib encodings on a loaded CI machine
    for key, value in changes.items():
        data[key] = value
    path = folder / "cabinet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_until(what: str, predicate, timeout_s: float):
    """Poll `predicate` until it returns a truthy value; fail naming `what` at the deadline."""
    return waiting.wait_until(predicate, what, timeout_s, poll_s=0.05)


class Controller:
    """The `cabinet run` process and its HTTP server."""

    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port

    def call(self, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def health(self) -> tuple[int, dict]:
        return self.call("/healthz")

    def metric(self, line_start: str) -> float | None:
        _, text = self.call("/metrics")
        for line in text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return None


def read_port(proc: subprocess.Popen, timeout_s: float) -> int:
    """The port from the line `cabinet run: ... serving on http://127.0.0.1:PORT`."""
    deadline = time.monotonic() + timeout_s
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            pytest.fail(f"cabinet run did not start (exit {proc.poll()}): {buf!r}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            buf += os.read(proc.stdout.fileno(), 4096)
    line = buf.decode().splitlines()[0]
    assert "serving on http://127.0.0.1:" in line, line
    return int(line.rsplit(":", 1)[1])


class Systemd:
    """systemd's side of sd_notify: a datagram socket read by a thread, as systemd reads it
    (a socket nobody reads fills after ten datagrams)."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(256)
            except OSError:
                return
            with self._cond:
                self.messages.append(data.decode())
                self._cond.notify_all()

    def wait_for(self, want: set[str], timeout_s: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: want <= set(self.messages), timeout_s):
                pytest.fail(f"sd_notify: got {sorted(set(self.messages))}, still waiting for "
                            f"{sorted(want - set(self.messages))}")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def customer_photo(shared_data) -> Path:
    """The photo the demo's single-purchase customer shows (kept out of their templates)."""
    from cabinet.catalog import load_catalog
    from cabinet.planogram import load_planogram
    from cabinet.scenario import load_scenarios
    from vision.data import people
    planogram = load_planogram(FIXTURES / "planogram.yaml", load_catalog(FIXTURES / "catalog.yaml"))
    scenario = load_scenarios(FIXTURES / "scenarios.yaml", planogram)[0]
    person = scenario.person_for(fallback=False)
    return people()[person][scenario.photo]


def test_cabinet_run_sells_raises_an_alarm_and_stops_cleanly(tmp_path, customer_photo):
    cfg = write_config(tmp_path)
    notify_path = tmp_path / "notify"
    systemd = Systemd(notify_path)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "cabinet.cli", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "stderr.log", "wb"), env=env)
    try:
        port = read_port(proc, 240)
        systemd.wait_for({"READY=1", "WATCHDOG=1"}, 30)
        cab = Controller(proc, port)
        status, health = cab.health()
        assert (status, health["state"], health["alarms"]) == (200, "idle", [])

        # a customer: a face in front of the camera starts the session
        assert cab.call("/sim/face", {"photo": str(customer_photo)})[0] == 200
        wait_until("the lock to release for the customer",
                   lambda: not cab.call("/sim/state")[1]["lock_engaged"], 120)
        assert cab.call("/sim/door", {"action": "open"})[1]["open"] is True
        assert cab.call("/sim/take", {"slot": "A3"})[1] == {"taken": ["water-500"]}
        assert cab.call("/sim/door", {"action": "close"})[0] == 200
        assert cab.call("/sim/face", {"photo": None})[0] == 200
        wait_until("the session to end", lambda: cab.health()[1]["sessions"] == 1, 120)
        assert cab.metric('cabinet_sessions_total{outcome="charged"}') == 1.0
        assert cab.metric("cabinet_reconcile_seconds_count") == 1.0
        assert cab.metric("cabinet_link_frames_in_total") > 0

        # a forced door between sessions: out of service at once, an alarm kept
        assert cab.call("/sim/door", {"action": "force"})[0] == 200
        status, health = wait_until("503 after the forced door",
                                    lambda: (h := cab.health())[0] == 503 and h, 30)
        assert health["alarms"] == ["forced_door"]
        assert cab.metric("cabinet_alarms_active") == 1.0
        assert cab.call("/api/session/start", {})[0] == 409
        db = tmp_path / "data" / "cabinet.sqlite"
        rows = sqlite3.connect(db).execute(
            "select kind, cleared_at, review from cabinet_alarms").fetchall()
        assert rows == [("forced_door", None, 1)]

        # repaired: the door shut again, back in service
        assert cab.call("/sim/door", {"action": "close"})[0] == 200
        wait_until("200 after the door closed", lambda: cab.health()[0] == 200, 30)
        rows = sqlite3.connect(db).execute(
            "select kind, cleared_at is not null from cabinet_alarms").fetchall()
        assert rows == [("forced_door", 1)]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        systemd.wait_for({"STOPPING=1"}, 5)
        assert systemd.messages[0] == "READY=1" and systemd.messages[-1] == "STOPPING=1"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        systemd.close()
    con = sqlite3.connect(db)
    outcomes = con.execute("select outcome from cabinet_sessions").fetchall()
    assert outcomes == [("charged",)]        # one session, closed with its one outcome
    last = con.execute("select dest from journal where session_id is not null "
                       "order by id desc limit 1").fetchone()
    assert last == ("idle",)


def test_sigterm_during_a_session_finishes_it_first(tmp_path, customer_photo):
    """A stop asked while the customer has the door open waits for the session's end."""
    cfg = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "cabinet.cli", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "stderr.log", "wb"))
    try:
        cab = Controller(proc, read_port(proc, 240))
        assert cab.call("/sim/face", {"photo": str(customer_photo)})[0] == 200
        wait_until("the lock to release", lambda: not cab.call("/sim/state")[1]["lock_engaged"],
                   120)
        assert cab.call("/sim/door", {"action": "open"})[1]["open"] is True
        wait_until("the controller to see the door open",
                   lambda: cab.health()[1]["state"] == "in_session", 10)
        proc.send_signal(signal.SIGTERM)
        log = tmp_path / "stderr.log"
        wait_until("the stop to be acknowledged",
                   lambda: "stop requested: after this session" in log.read_text(), 30)
        assert proc.poll() is None                       # still serving the customer
        assert cab.health()[1]["state"] == "in_session"
        assert cab.call("/sim/door", {"action": "close"})[0] == 200
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    con = sqlite3.connect(tmp_path / "data" / "cabinet.sqlite")
    assert con.execute("select outcome from cabinet_sessions").fetchall() == [("nothing_taken",)]


def test_an_absent_serial_port_stops_run_naming_it(tmp_path):
    """No silent fall-back to the simulator: exit 2, the port named, nothing written."""
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"board_serial": "", "shelves": {}}))
    cfg = write_config(tmp_path, serial={"port": "/dev/ttyCABINET-NOT-HERE",
                                         "calibration": str(cal)})
    run = subprocess.run([sys.executable, "-m", "cabinet.cli", "run", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "/dev/ttyCABINET-NOT-HERE" in run.stderr
    assert not (tmp_path / "data").exists()


# --- the runner in this process: each alarm between sessions ---------------------------------

@pytest.fixture
def running(tmp_path):
    """A Runner over the simulated cabinet (no accounts: no face encoding), in a thread."""
    from cabinet.app import App
    from cabinet.runner import Runner
    cfg = write_config(tmp_path, accounts=None, scenarios=None,
                       timeouts={"face_s": 10, "auth_s": 5, "unlock_pulse_ms": 5000,
                                 "door_open_alarm_s": 0.5, "door_open_max_s": 300,
                                 "settle_s": 5})
    app = App(cfg).start()
    ready = threading.Event()
    runner = Runner(app, environ={}, on_ready=lambda r: ready.set())
    result: list = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(runner.run())))
    thread.start()
    try:
        assert ready.wait(60), "the runner did not start"
        yield app, runner
    finally:
        runner.stop_from_thread()
        thread.join(60)
        app.close()
    assert result == [0]


def alarm_rows(app) -> list[tuple[str, bool, bool]]:
    """(kind, cleared, review) of every alarm row, oldest first."""
    from cabinet.journal import Alarms
    return [(row.kind, row.cleared_at is not None, row.review) for row in Alarms(app.db).all()]


def out_of_service_with(runner, kind: str):
    health = runner.health()
    return not health["in_service"] and health["alarms"] == [kind] \
        and runner.controller.machine.state == "out_of_service"


def back_in_service(runner):
    health = runner.health()
    return health["in_service"] and runner.controller.machine.state == "idle"


def test_an_uncommanded_unlock_is_a_tamper_alarm_until_the_lock_engages(running):
    app, runner = running
    app.mcu.inject("uncommanded_unlock", cause="manual_key", duration_s=0.5)
    wait_until("the tamper alarm", lambda: out_of_service_with(runner, "uncommanded_unlock"), 10)
    wait_until("the lock to engage again", lambda: back_in_service(runner), 10)
    assert alarm_rows(app) == [("uncommanded_unlock", True, True)]


def test_the_door_left_open_between_sessions(running):
    app, runner = running
    app.mcu.inject("uncommanded_unlock", cause="manual_key", duration_s=0.3)
    assert wait_until("the lock to release", lambda: app.mcu.open_door(), 10)
    wait_until("the door-left-open alarm",
               lambda: "door_left_open" in runner.health()["alarms"], 10)
    assert not runner.health()["in_service"]
    app.mcu.close_door()
    wait_until("back in service", lambda: back_in_service(runner), 10)
    assert ("door_left_open", True, False) in alarm_rows(app)


def test_temperature_out_of_range_and_back(running):
    app, runner = running
    app.mcu.temperature_c = 12.0
    wait_until("the temperature alarm", lambda: out_of_service_with(runner, "temperature"), 10)
    app.mcu.temperature_c = 4.0
    wait_until("back in service", lambda: back_in_service(runner), 10)
    assert alarm_rows(app) == [("temperature", True, False)]


def test_an_mcu_reboot_is_recorded_and_checked(running):
    app, runner = running
    app.mcu.inject("reboot", reason="watchdog")
    wait_until("the reboot alarm cleared after the check",
               lambda: alarm_rows(app) == [("mcu_reboot", True, False)], 20)
    assert back_in_service(runner)


def test_the_link_lost_and_restored(running):
    app, runner = running
    app.mcu.inject("port_vanish", duration_s=4.0)
    wait_until("the link-lost alarm", lambda: out_of_service_with(runner, "link_lost"), 20)
    assert runner.health()["link"] == "lost"
    wait_until("the link back", lambda: back_in_service(runner), 30)
    assert alarm_rows(app) == [("link_lost", True, False)]
    assert runner.metrics.text().count(b'cabinet_alarms_total{kind="link_lost"} 1.0') == 1


def test_the_touchscreen_start_is_refused_out_of_service(running):
    app, runner = running
    app.mcu.temperature_c = 12.0
    wait_until("the temperature alarm", lambda: out_of_service_with(runner, "temperature"), 10)
    fut = asyncio.run_coroutine_threadsafe(_start(runner), runner.loop)
    assert fut.result(10) == "out of service (temperature)"


async def _start(runner) -> str:
    return runner.request_start()


def test_a_restock_visit_started_elsewhere_unlocks_and_records_the_weights(running, tmp_path,
                                                                           capsys):
    from cabinet import ops_cli
    from cabinet.restock import RestockVisits
    app, runner = running
    cfg = str(tmp_path / "cabinet.yaml")
    assert ops_cli.main(["restock", "start", "--operator", "ann", "--config", cfg]) == 0
    wait_until("the lock released for the operator", lambda: not app.mcu.lock_engaged, 20)
    health = runner.health()
    assert health["state"] == "restock" and not health["in_service"]
    visit = RestockVisits(app.data_path).open_visit()
    assert set(visit["before"]) == {shelf.id for shelf in app.planogram.shelves}
    assert app.mcu.open_door()
    app.world.restock({slot.id: slot.capacity for slot in app.planogram.slots})
    app.mcu.close_door()
    wait_until("the weights after the visit",
               lambda: RestockVisits(app.data_path).open_visit().get("after"), 30)
    after = RestockVisits(app.data_path).open_visit()["after"]
    before = visit["before"]
    grams = lambda w: w["grams"] if isinstance(w, dict) else w   # noqa: E731
    assert sum(grams(w) for w in after.values()) > sum(grams(w) for w in before.values()) + 100
    assert ops_cli.main(["restock", "accept", "--force", "--config", cfg]) == 0
    wait_until("back in service after the accept", lambda: back_in_service(runner), 20)


# --- sd_notify, by hand ----------------------------------------------------------------------

def test_sd_notify_sends_one_datagram_to_the_notify_socket(tmp_path):
    from cabinet.runner import sd_notify
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n"))
    try:
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "n")}) is True
        sock.settimeout(5)
        assert sock.recv(64) == b"READY=1"
    finally:
        sock.close()


def test_sd_notify_reaches_an_abstract_socket():
    from cabinet.runner import sd_notify
    name = f"cabinet-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        sock.settimeout(5)
        assert sock.recv(64) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_sd_notify_without_systemd_sends_nothing():
    from cabinet.runner import sd_notify
    assert sd_notify("READY=1", {}) is False


def test_the_watchdog_interval_is_half_of_watchdogsec_for_this_process():
    from cabinet.runner import watchdog_interval
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_the_touchscreen_start_takes_the_face_cameras_next_frame(running, tmp_path):
    """A frame without a face never starts a session by itself; the touchscreen's start does,
    and identification refuses it with the kiosk's message."""
    import cv2
    import numpy as np
    from vision.identity import MESSAGES, NO_FACE
    app, runner = running
    blank = tmp_path / "nobody.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    app.face_camera.show(blank)
    assert runner.health()["sessions"] == 0
    fut = asyncio.run_coroutine_threadsafe(_start(runner), runner.loop)
    assert fut.result(10) == ""
    wait_until("the touchscreen's session", lambda: runner.health()["sessions"] == 1, 60)
    text = runner.metrics.text().decode()
    assert 'cabinet_sessions_total{outcome="denied"} 1.0' in text
    from billing.models import CabinetSession
    from sqlalchemy import select
    with app.db() as s:
        [row] = s.scalars(select(CabinetSession)).all()
    assert (row.outcome, row.outcome_reason) == ("denied", MESSAGES[NO_FACE])


# --- the kiosk and the console, served by the running controller -----------------------------

def http(runner, path: str, body: dict | None = None, *, method: str | None = None,
         follow: bool = True) -> tuple[int, dict, str]:
    """(status, headers, text) of a request to the runner's own server on 127.0.0.1."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{runner.port}{path}", data=data,
                                 method=method, headers={"content-type": "application/json"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(*(() if follow else (NoRedirect(),)))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def kiosk_screen(runner) -> dict:
    status, _, text = http(runner, "/kiosk/state")
    assert status == 200, text
    return json.loads(text)


def test_the_kiosk_and_the_console_are_served_by_the_running_controller(running):
    app, runner = running
    status, headers, _ = http(runner, "/", follow=False)
    assert (status, headers["location"]) == (307, "/kiosk/")
    status, _, page = http(runner, "/kiosk/")
    assert status == 200 and "kiosk.js" in page
    assert kiosk_screen(runner)["screen"] == "welcome"
    # the console is mounted and asks for a login before anything else
    status, headers, _ = http(runner, "/console/", follow=False)
    assert status in (302, 303, 307) and "/console/login" in headers["location"]


def test_the_kiosk_start_is_refused_with_the_reason_then_welcomes_the_next(running, tmp_path):
    """Tap to start with nobody recognisable at the camera: the look-at-the-camera screen, the
    refusal with its reason code, and Welcome again once it has been shown screen_hold_s."""
    import cv2
    import numpy as np
    app, runner = running
    runner.screen_hold_s = 2.0
    blank = tmp_path / "nobody.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 128, np.uint8))
    app.face_camera.show(blank)
    seen: list[str] = []

    def screen_is(name: str) -> bool:
        screen = kiosk_screen(runner)["screen"]
        if not seen or seen[-1] != screen:
            seen.append(screen)
        return screen == name

    status, _, text = http(runner, "/kiosk/start", {})
    assert status == 202, text
    wait_until("the refusal on the kiosk", lambda: screen_is("refused"), 60)
    assert kiosk_screen(runner)["reason"] == "face_not_recognised"
    # the refusal is on the screen as the session is being closed: its count follows
    wait_until("the refused session counted", lambda: runner.health()["sessions"] == 1, 30)
    wait_until("welcome after the hold", lambda: screen_is("welcome"), 10)
    assert seen[-2:] == ["refused", "welcome"]


def test_the_kiosk_start_out_of_service_is_a_409_with_the_reason_on_screen(running):
    app, runner = running
    app.mcu.temperature_c = 12.0
    wait_until("the temperature alarm", lambda: out_of_service_with(runner, "temperature"), 10)
    wait_until("the kiosk out of service",
               lambda: kiosk_screen(runner).get("reason") == "temperature", 10)
    assert kiosk_screen(runner)["screen"] == "out_of_service"
    status, _, text = http(runner, "/kiosk/start", {})
    assert status == 409 and "out_of_service" in text
    assert runner.health()["sessions"] == 0
    app.mcu.temperature_c = 4.0
    wait_until("welcome back in service", lambda: kiosk_screen(runner)["screen"] == "welcome", 10)


def test_billings_standing_texts_become_the_kiosks_refusal_codes():
    """The kiosk's reason codes for billing's standing texts."""
    from cabinet.controller import standing_refusal_code
    from cabinet.kiosk.state import REFUSAL_REASONS
    cases = {"this account is closed": "account_blocked",
             "account blocked: fraud": "account_blocked",
             "no valid payment method on the account": "payment_method_invalid",
             "the payment method was declined (expired)": "payment_method_invalid",
             "unpaid debt of EUR 3.00": "unpaid_debt",
             "the payment for session X is still pending": "unpaid_debt"}
    for text, code in cases.items():
        assert standing_refusal_code(text) == code, text
        assert code in REFUSAL_REASONS


def test_demo_serve_shows_the_scripted_customers_on_the_kiosk(tmp_path, shared_data):
    """`cabinet demo --serve`: while the scripted customers shop, the kiosk on 127.0.0.1
    follows them (a receipt and a refusal among the screens it showed), and the server is
    gone when the demo ends."""
    import io
    from cabinet import demo
    ports: list[int] = []
    result: list[int] = []
    out = io.StringIO()
    thread = threading.Thread(target=lambda: result.append(demo.run(
        tmp_path / "demo", out=out, serve=True, hold_s=1.5, on_serving=ports.append)))
    thread.start()
    seen: list[str] = []
    try:
        wait_until("the demo's server", lambda: ports, 240)
        url = f"http://127.0.0.1:{ports[0]}/kiosk/state"

        def watch() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    screen = json.loads(r.read())
            except (urllib.error.URLError, ConnectionError):
                return not thread.is_alive()
            name = screen["screen"] + (f":{screen['reason']}" if "reason" in screen else "")
            if not seen or seen[-1] != name:
                seen.append(name)
            return not thread.is_alive()

        wait_until("the demo to end", watch, 600)
    finally:
        thread.join(600)
    assert result == [0], out.getvalue()
    assert "receipt" in seen and "refused:face_not_recognised" in seen, seen
    assert seen.index("look_at_camera") < seen.index("receipt")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/kiosk/state", timeout=5)


def test_the_kiosk_cancel_ends_a_start_still_waiting_for_a_face(running):
    app, runner = running
    app.face_camera.show(None)                  # nobody at the camera
    assert http(runner, "/kiosk/start", {})[0] == 202
    wait_until("the look-at-the-camera screen",
               lambda: kiosk_screen(runner)["screen"] == "look_at_camera", 10)
    wait_until("the runner waiting for a face", lambda: runner._face_wait is not None, 10)
    status, _, text = http(runner, "/kiosk/cancel", {})
    assert status == 202, text
    wait_until("welcome after the cancel", lambda: kiosk_screen(runner)["screen"] == "welcome", 10)
    assert runner.health()["sessions"] == 0 and runner.health()["in_service"]
    # nothing left to cancel: the kiosk refuses the tap on the welcome screen
    assert http(runner, "/kiosk/cancel", {})[0] == 409
    # and a new start works again
    assert http(runner, "/kiosk/start", {})[0] == 202
    wait_until("the look-at-the-camera screen again",
               lambda: kiosk_screen(runner)["screen"] == "look_at_camera", 10)
