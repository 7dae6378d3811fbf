"""The controller's waiting states and refusals, each test on its own simulated cabinet.

Each test drives the physical side itself (the simulated MCU's door, the world's items) and
checks what the controller decided, what it journalled, and what the MCU actually did.

The controller's clock is a ManualClock: a timeout (identification, the door never opened, the
door left open, the payment client's retry waits) passes only when the test advances the clock,
once the controller sits in that wait, so no test sleeps and none races the machine's load.
Each timeout is first approached to just short of its length (nothing happens), then passed.
The simulated hardware keeps real time (the load cells settle by themselves, the MCU times its
unlock pulse); waits for it are bounded condition waits.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time

import pytest
from sqlalchemy import select

from billing.models import Account, CabinetSession, Hold
from cabinet.bundle import load_bundle
from cabinet.config import TimeoutsConfig
from cabinet.errors import CabinetError
from cabinet.journal import JournalEntry
from firmware_bridge.clock import SYSTEM, ManualClock

pytestmark = pytest.mark.slow

# Virtual seconds, except unlock_pulse_ms (the MCU times the pulse in real time) and settle_s
# (the board's wait for the shelves, on the hardware's real clock).
FAST = TimeoutsConfig(face_s=3.0, auth_s=5.0, unlock_pulse_ms=1500, door_open_alarm_s=30.0,
                      door_open_max_s=120.0, settle_s=3.0)
DOOR_WAIT_S = FAST.unlock_pulse_ms / 1000 + 0.5    # how long the controller waits for the door
JUST_SHORT_S = 0.01
REAL_BOUND_S = 60.0        # real-time safety net: a session stuck on its clock fails, not hangs
# What the test customers take: a 500 g bottle, a weight no other combination on the shelves
# explains, so the basket is certain from the load cells alone and these tests stay about the
# controller, not about how reconcile weighs camera evidence.
TAKE_SLOT, TAKE_SKU = "A3", "water-500"


@pytest.fixture
def cab(make_cabinet):
    return make_cabinet(timing=FAST, clock=ManualClock(), hardware_clock=SYSTEM)


# --- helpers ---------------------------------------------------------------------------------
async def until(predicate, what: str, timeout_s: float = 30.0) -> None:
    """Wait (real time, bounded) until `predicate()` holds; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.005)


async def let_the_loop_run(turns: int = 50) -> None:
    """Give every callback already due on the loop its turns (nothing waits on time here)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def waiting_in(cab, state: str):
    """The controller is in `state` and sits in a wait on its clock."""
    return lambda: cab.controller.machine.state == state and cab.clock.sleepers() >= 1


def _customer_photo(cab):
    person = next(iter(cab.account_ids))        # an enrolled face
    return person, cab.photo_for(person, 0)


def _session(cab, *actors):
    """Show an enrolled face and run one session while each `actor(cab)` coroutine acts (on the
    door, the shelves or the controller's clock); return the report."""
    _, photo = _customer_photo(cab)
    cab.face_camera.show(photo)

    async def main():
        frame = await cab.controller.wait_for_face(FAST.face_s)
        assert frame is not None, "the face camera showed no frame"
        session = asyncio.create_task(cab.controller.session(frame))
        tasks = [session, *(asyncio.create_task(actor(cab)) for actor in actors)]
        done, pending = await asyncio.wait(tasks, timeout=REAL_BOUND_S,
                                           return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        assert not pending, (f"session still running after {REAL_BOUND_S} s of real time: "
                             f"state {cab.controller.machine.state}, "
                             f"{cab.clock.sleepers()} waiting on the controller's clock")
        return session.result()
    try:
        return asyncio.run(main())
    finally:
        cab.face_camera.show(None)


def _entries(cab, session_id=None):
    with cab.db() as s:
        query = select(JournalEntry).order_by(JournalEntry.id)
        if session_id is not None:
            query = query.where(JournalEntry.session_id == session_id)
        return [(e.trigger, e.dest, json.loads(e.data or "{}")) for e in s.scalars(query)]


def _triggers(cab, session_id):
    return [trigger for trigger, _, _ in _entries(cab, session_id)]


def _holds(cab, session_id):
    with cab.db() as s:
        return s.scalars(select(Hold).where(Hold.session_id == session_id)).all()


async def _wait_unlocked(cab):
    await until(lambda: not cab.mcu.lock_engaged, "the MCU released the lock")


def _take_one(close_when=None):
    """A customer who opens the door, takes one item from TAKE_SLOT and, once `close_when(cab)`
    (a coroutine) has run, closes the door and walks away."""
    async def customer(c):
        await _wait_unlocked(c)
        assert c.mcu.open_door()
        c.world.take(TAKE_SLOT, 1)
        if close_when is not None:
            await close_when(c)
        c.mcu.close_door()
        c.world.leave()
    return customer


# --- the door never opened -------------------------------------------------------------------
def test_unlocked_but_never_opened_relocks_by_itself_and_charges_nothing(cab):
    unlocks = cab.mcu.unlocks_executed

    async def nobody_opens(c):
        await until(waiting_in(c, "unlocked"), "the controller waits for the door to open")
        c.clock.advance(DOOR_WAIT_S - JUST_SHORT_S)
        await let_the_loop_run()
        assert c.controller.machine.state == "unlocked", "gave up on the door too early"
        c.clock.advance(JUST_SHORT_S)

    report = _session(cab, nobody_opens)
    assert report.outcome == "nothing_taken" and report.basket == {} and report.total == 0
    assert "door_never_opened" in report.flags
    triggers = _triggers(cab, report.session_id)
    assert "unlock_expired" in triggers and "door_opened" not in triggers
    assert cab.mcu.unlocks_executed == unlocks + 1
    asyncio.run(until(lambda: cab.mcu.lock_engaged, "the MCU ended the pulse"))
    assert [h.status for h in _holds(cab, report.session_id)] == ["voided"]


# --- the door left open ----------------------------------------------------------------------
def test_door_left_open_raises_the_kiosk_alarm_then_the_session_still_ends(cab):
    async def past_the_alarm(c):
        await until(waiting_in(c, "door_open"), "the controller waits for the door to close")
        c.clock.advance(FAST.door_open_alarm_s - JUST_SHORT_S)
        await let_the_loop_run()
        assert "door_open_alarm" not in _triggers(c, c.controller.machine.session_id)
        c.clock.advance(JUST_SHORT_S)
        await until(lambda: "door_open_alarm" in _triggers(c, c.controller.machine.session_id),
                    "the kiosk alarm is journalled")

    report = _session(cab, _take_one(close_when=past_the_alarm))
    assert report.outcome == "charged" and report.basket == {TAKE_SKU: 1}
    assert report.total == cab.catalog[TAKE_SKU].price
    assert "door_open_too_long" in report.flags
    alarms = [data for trigger, _, data in _entries(cab, report.session_id)
              if trigger == "door_open_alarm"]
    assert [a["level"] for a in alarms] == ["kiosk"]
    # the session's timings are read from the controller's clock: the door shut after the alarm
    assert report.timings_ms["door_closed"] >= FAST.door_open_alarm_s * 1000


def test_door_open_past_the_maximum_alerts_an_operator_and_the_session_waits_for_the_close(cab):
    def alarm_levels(c):
        return [data["level"] for trigger, _, data in _entries(c, c.controller.machine.session_id)
                if trigger == "door_open_alarm"]

    async def past_the_maximum(c):
        await until(waiting_in(c, "door_open"), "the controller waits for the door to close")
        c.clock.advance(FAST.door_open_alarm_s)
        await until(lambda: alarm_levels(c) == ["kiosk"] and c.clock.sleepers() >= 1,
                    "the kiosk alarm, then a wait for the operator alert")
        c.clock.advance(FAST.door_open_max_s - FAST.door_open_alarm_s - JUST_SHORT_S)
        await let_the_loop_run()
        assert alarm_levels(c) == ["kiosk"], "operator alerted before door_open_max_s"
        c.clock.advance(JUST_SHORT_S)
        await until(lambda: alarm_levels(c) == ["kiosk", "operator"] and c.clock.sleepers() >= 1,
                    "the operator alert, then still waiting for the door")
        c.clock.advance(600.0)              # ten more minutes open: still no basket, still waits
        await until(lambda: c.clock.sleepers() >= 1, "the controller keeps waiting")
        assert c.controller.machine.state == "door_open"

    report = _session(cab, _take_one(close_when=past_the_maximum))
    assert report.outcome == "charged" and report.basket == {TAKE_SKU: 1}
    assert "door_open_too_long" in report.flags


# --- refusals --------------------------------------------------------------------------------
def test_a_blocked_account_is_refused_without_hold_or_unlock(cab):
    person, _ = _customer_photo(cab)
    cab.billing.block(cab.account_ids[person], "test: card reported stolen")
    report = _session(cab)
    assert report.outcome == "denied" and "stolen" in report.reason
    assert report.account_id == cab.account_ids[person]
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert _holds(cab, report.session_id) == []
    assert cab.gateway.effects()["authorize"] == 0
    assert _triggers(cab, report.session_id) == ["face_seen", "denied"]
    assert cab.controller.machine.state == "idle"
    # the session id starts with the controller clock's UTC time, not the machine's
    day = dt.datetime.fromtimestamp(cab.clock.time(), dt.timezone.utc).strftime("%Y%m%dT")
    assert report.session_id.startswith(day)


# --- identity over several frames (vision/identity.py) ---------------------------------------
def test_an_enrolled_face_is_accepted_on_two_clear_frames_and_the_journal_keeps_distances(cab):
    """Two of three frames agreeing clearly settle it (vision/identity.py settled_accept): the
    third could not change the middle of three, so the door does not wait for it."""
    person, _ = _customer_photo(cab)
    report = _session(cab, _take_one())
    assert report.outcome == "charged" and report.account_id == cab.account_ids[person]
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "authorized"]
    assert (data["identity_outcome"], data["identity_reason"]) == ("accept", "matched")
    assert (data["frames_seen"], data["frames_used"]) == (2, 2)
    assert 0 < data["best_distance"] <= 0.45
    assert "encoding" not in json.dumps(data) and "template" not in json.dumps(data)


def test_a_frame_the_caller_already_looked_at_is_not_detected_again(cab, monkeypatch):
    """cabinet run finds the face before the session starts and hands its look over: the
    session detects only the frames it takes itself."""
    import vision.faces as faces
    person, photo = _customer_photo(cab)
    cab.face_camera.show(photo)
    looks = []
    real = faces.face_recognition.face_locations

    def counted(img, number_of_times_to_upsample=1, model="hog"):
        looks.append(number_of_times_to_upsample)
        return real(img, number_of_times_to_upsample=number_of_times_to_upsample, model=model)

    async def main():
        frame = await cab.controller.wait_for_face(FAST.face_s)
        observed = faces.observe_single_face(frame, bgr=True)
        looks.clear()
        monkeypatch.setattr(faces.face_recognition, "face_locations", counted)
        report, _ = await asyncio.wait_for(asyncio.gather(
            cab.controller.session(frame, observed), _take_one()(cab)), REAL_BOUND_S)
        return report

    try:
        report = asyncio.run(main())
    finally:
        cab.face_camera.show(None)
    assert report.outcome == "charged" and report.account_id == cab.account_ids[person]
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "authorized"]
    assert (data["identity_outcome"], data["frames_seen"], data["frames_used"]) == ("accept", 2, 2)
    assert looks == [0]             # the second frame only


class _FrameWithoutFace:
    """The face camera, except that its second frame (the first after the one that started the
    session) is an empty grey frame: the customer looked away for a moment."""

    def __init__(self, camera):
        self.camera, self.captures = camera, 0

    def capture(self):
        frame = self.camera.capture()
        if frame is not None:
            self.captures += 1
            if self.captures == 2:
                frame[:] = 128
        return frame


def test_a_frame_without_a_face_makes_the_door_look_at_the_third(cab):
    person, _ = _customer_photo(cab)
    cab.controller.face_camera = _FrameWithoutFace(cab.controller.face_camera)
    report = _session(cab, _take_one())
    assert report.outcome == "charged" and report.account_id == cab.account_ids[person]
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "authorized"]
    assert (data["identity_outcome"], data["frames_seen"], data["frames_used"]) == ("accept", 3, 2)


def test_a_face_inside_the_uncertain_band_asks_for_a_second_factor_and_never_unlocks(cab):
    from vision.identity import IdentityPolicy, MESSAGES, UNCERTAIN
    # the same real face, but an accept line below any genuine distance: the uncertain band
    cab.controller.identity_policy = IdentityPolicy(accept_distance=0.01, refuse_distance=0.6,
                                                    min_margin=0.1)
    report = _session(cab)
    assert report.outcome == "denied" and report.reason == MESSAGES[UNCERTAIN]
    assert report.account_id is None
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert cab.gateway.effects()["authorize"] == 0
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "denied"]
    assert (data["identity_outcome"], data["identity_reason"]) == ("second_factor", "uncertain")
    assert 0.01 < data["best_distance"] <= 0.6


def test_a_face_beyond_the_refuse_line_is_refused_with_its_message(cab):
    from vision.identity import IdentityPolicy, MESSAGES, NOT_RECOGNISED
    cab.controller.identity_policy = IdentityPolicy(accept_distance=0.01, refuse_distance=0.02,
                                                    min_margin=0.01)
    report = _session(cab)
    assert report.outcome == "denied" and report.reason == MESSAGES[NOT_RECOGNISED]
    assert cab.mcu.unlocks_executed == 0
    [(_, _, data)] = [e for e in _entries(cab, report.session_id) if e[0] == "denied"]
    assert data["identity_outcome"] == "refuse" and data["best_distance"] > 0.02


class _SlowStanding:
    """Billing whose standing check answers only once the test releases it (a slow database),
    so identification is still running when the test passes the timeout."""

    def __init__(self, billing):
        self._billing = billing
        self.asked = threading.Event()
        self.release = threading.Event()

    def admission(self, account_id):
        self.asked.set()
        assert self.release.wait(REAL_BOUND_S), "the test never released the standing check"
        return self._billing.admission(account_id)

    def __getattr__(self, name):
        return getattr(self._billing, name)


def test_identification_that_takes_too_long_times_out_to_idle(cab):
    slow = _SlowStanding(cab.billing)
    cab.controller.billing = slow

    async def identification_hangs(c):
        try:
            await until(lambda: slow.asked.is_set() and waiting_in(c, "face_auth")(),
                        "identification is under way and the controller waits on its clock")
            c.clock.advance(FAST.auth_s - JUST_SHORT_S)
            await let_the_loop_run()
            assert c.controller.machine.state == "face_auth", "timed out before auth_s"
            c.clock.advance(JUST_SHORT_S)
            await until(lambda: c.controller.machine.state == "idle", "the session was refused")
        finally:
            slow.release.set()          # the late answer must change nothing

    report = _session(cab, identification_hangs)
    assert report.outcome == "denied" and "took too long" in report.reason
    assert _triggers(cab, report.session_id) == ["face_seen", "auth_timeout"]
    assert cab.controller.machine.state == "idle"
    assert _holds(cab, report.session_id) == [] and cab.mcu.unlocks_executed == 0


def test_waiting_for_a_face_returns_the_frame_that_comes_or_none_after_face_s(cab):
    _, photo = _customer_photo(cab)

    async def main():
        late = asyncio.create_task(cab.controller.wait_for_face(FAST.face_s))
        await until(lambda: cab.clock.sleepers() >= 1, "the controller polls the camera")
        cab.clock.advance(1.0)                          # nobody yet: it keeps polling
        await until(lambda: cab.clock.sleepers() >= 1, "still polling after 1 s")
        assert not late.done()
        cab.face_camera.show(photo)
        cab.clock.advance(0.1)
        frame = await asyncio.wait_for(late, REAL_BOUND_S)
        cab.face_camera.show(None)

        nobody = asyncio.create_task(cab.controller.wait_for_face(FAST.face_s))
        await until(lambda: cab.clock.sleepers() >= 1, "the controller polls the camera")
        cab.clock.advance(FAST.face_s - 0.2)
        await until(lambda: cab.clock.sleepers() >= 1, "still polling short of face_s")
        assert not nobody.done()
        cab.clock.advance(0.2)
        return frame, await asyncio.wait_for(nobody, REAL_BOUND_S)

    frame, none = asyncio.run(main())
    assert frame is not None and frame.ndim == 3 and frame.shape[2] == 3
    assert none is None


def _fail_the_hold_then(cab, token: str):
    """A session whose hold request meets a gateway failing the first try and all 3 retries;
    the client's back-off waits pass on the controller's clock. Returns the report."""
    person, _ = _customer_photo(cab)
    cab.billing.set_payment_token(cab.account_ids[person], token)
    cab.gateway.fail_next(4, "500")

    def authorize_calls(c):
        return sum(1 for r in c.gateway.requests_seen() if r.path == "/v1/payment_intents")

    async def gateway_down(c):
        for attempt in range(1, 4):
            await until(lambda: authorize_calls(c) == attempt and c.clock.sleepers() >= 1,
                        f"hold attempt {attempt} failed and the client backs off")
            c.clock.advance(2.0)                    # the longest back-off after 3 tries
    report = _session(cab, gateway_down)
    assert authorize_calls(cab) == 4
    return report


def test_a_hold_the_gateway_never_answered_is_voided_once_the_gateway_is_back(cab):
    report = _fail_the_hold_then(cab, "tok_visa_ok")
    assert report.outcome == "denied" and cab.mcu.unlocks_executed == 0
    with cab.db() as s:
        assert s.get(CabinetSession, report.session_id).outcome == "denied"
    assert [h.status for h in _holds(cab, report.session_id)] == ["requested"]   # fate unknown
    cab.billing.retry_pending()                 # the gateway is back: replay, then release
    (hold,) = _holds(cab, report.session_id)
    assert hold.status == "voided"
    assert cab.gateway.intent(hold.gateway_auth_id)["status"] == "canceled"
    assert cab.gateway.effects()["authorize"] == 1 and cab.gateway.effects()["void"] == 1
    assert cab.gateway.effects()["capture"] == 0


def test_a_declined_hold_leaves_no_bundle_and_the_lock_shut(cab):
    """The before-snapshot is stored while the gateway answers the hold; a declined hold
    removes what was stored and never unlocks."""
    person, _ = _customer_photo(cab)
    cab.billing.set_payment_token(cab.account_ids[person], "tok_declined")
    report = _session(cab)
    assert report.outcome == "denied" and report.account_id == cab.account_ids[person]
    assert cab.mcu.unlocks_executed == 0 and cab.mcu.lock_engaged
    assert "held" in report.timings_ms and "before_snapshot" not in report.timings_ms
    assert not (cab.controller.bundles_dir / report.session_id).exists()
    assert _triggers(cab, report.session_id) == ["face_seen", "denied"]


def test_a_hold_the_gateway_never_answered_for_a_declined_card_ends_declined(cab):
    report = _fail_the_hold_then(cab, "tok_declined")
    assert report.outcome == "denied" and cab.mcu.unlocks_executed == 0
    cab.billing.retry_pending()                 # the replay learns the card is declined
    (hold,) = _holds(cab, report.session_id)
    assert hold.status == "declined" and hold.gateway_auth_id is None
    effects = cab.gateway.effects()
    assert effects["decline"] == 1 and effects["authorize"] == 0 and effects["void"] == 0


# --- the door after the session ----------------------------------------------------------------
def test_the_door_cannot_be_reopened_once_it_shut(cab):
    reopened = []

    async def customer(c):
        await _wait_unlocked(c)
        assert c.mcu.open_door()
        c.world.take(TAKE_SLOT, 1)
        c.mcu.close_door()
        reopened.append(c.mcu.open_door())      # the pulse had time left: the latch holds
        c.world.leave()

    report = _session(cab, customer)
    assert reopened == [False]
    assert report.outcome == "charged" and report.basket == {TAKE_SKU: 1}
    assert "door_reopened" not in report.flags


def _force_the_door(cab):
    """Someone pulls the locked door open and lets it shut; wait until the controller heard."""
    assert cab.mcu.open_door(force=True)
    cab.mcu.close_door()

    def heard():
        cab.controller.poll_idle_events()
        return cab.controller.machine.state == "out_of_service"
    asyncio.run(until(heard, "the controller took the cabinet out of service"))


def test_a_forced_door_takes_the_cabinet_out_of_service_until_repaired(cab):
    _force_the_door(cab)
    faults = [data for trigger, _, data in _entries(cab) if trigger == "fault"]
    assert [f["cause"] for f in faults] == ["ForcedDoor"]
    with pytest.raises(CabinetError, match="out of service"):
        _session(cab)
    assert cab.mcu.unlocks_executed == 0
    cab.controller.repair("technician-7")
    assert cab.controller.machine.state == "idle"

    async def nobody_opens(c):
        await until(waiting_in(c, "unlocked"), "the repaired cabinet unlocked for a customer")
        c.clock.advance(DOOR_WAIT_S)
    assert _session(cab, nobody_opens).outcome == "nothing_taken"
    assert cab.mcu.unlocks_executed == 1


def test_out_of_service_survives_a_restart(cab):
    _force_the_door(cab)
    cab.controller = cab.new_controller()       # power cycle: the alarm is not forgotten
    assert cab.controller.machine.state == "out_of_service"
    assert asyncio.run(cab.controller.recover()) == []
    assert cab.controller.machine.state == "out_of_service"
    cab.controller.repair("technician-7")
    assert cab.new_controller().machine.state == "idle"


# --- the operator ------------------------------------------------------------------------------
def test_an_operator_restock_unlocks_and_resets_the_belief(cab):
    levels = cab.planogram.initial_stock()
    slot = next(iter(levels))
    levels[slot] -= 1                           # the operator leaves one slot a unit short
    before = cab.inventory.slots()

    async def visit():
        async def operator():
            await _wait_unlocked(cab)
            assert cab.mcu.open_door()
            cab.world.restock(levels)
            cab.mcu.close_door()
        task = asyncio.create_task(operator())
        belief = await cab.controller.restock("operator-ana", levels)
        await task
        return belief

    belief = asyncio.run(visit())
    assert len(belief[slot]) == len(before[slot]) - 1
    assert belief == {s: list(skus) for s, skus in cab.world.stock().items()}
    assert cab.new_controller().inventory.slots() == belief      # stored, not only in memory
    assert cab.mcu.unlocks_executed == 1 and cab.mcu.lock_engaged
    assert cab.controller.machine.state == "idle"
    restocks = [(t, d) for t, _, d in _entries(cab) if t in ("start_restock", "end_restock")]
    assert [t for t, _ in restocks] == ["start_restock", "end_restock"]
    assert restocks[0][1]["operator"] == "operator-ana" and restocks[1][1]["done"] is True


def test_a_restock_whose_door_never_opens_keeps_the_belief(cab):
    before = cab.inventory.slots()

    async def visit():
        task = asyncio.create_task(cab.controller.restock("operator-ana", {"A1": 0}))
        await until(waiting_in(cab, "restock"), "the controller waits for the operator")
        cab.clock.advance(DOOR_WAIT_S)
        return await asyncio.wait_for(task, REAL_BOUND_S)

    assert asyncio.run(visit()) == before
    assert cab.inventory.slots() == before and cab.controller.machine.state == "idle"
    ends = [d for t, _, d in _entries(cab) if t == "end_restock"]
    assert [e["done"] for e in ends] == [False]


def test_a_restock_with_a_bad_level_changes_nothing(cab):
    before = cab.inventory.slots()
    with pytest.raises(CabinetError, match="holds 0"):
        asyncio.run(cab.controller.restock("operator-ana", {"A1": 999}))
    with pytest.raises(CabinetError, match="not in the planogram"):
        asyncio.run(cab.controller.restock("operator-ana", {"Z9": 1}))
    with pytest.raises(CabinetError, match="name the operator"):
        asyncio.run(cab.controller.restock("  ", {"A1": 1}))
    assert cab.inventory.slots() == before and cab.controller.machine.state == "idle"
    assert _entries(cab) == [] and cab.mcu.unlocks_executed == 0


# --- configuration checked at start ------------------------------------------------------------
def test_a_pulse_longer_than_the_board_allows_is_refused_at_start(make_cabinet):
    with pytest.raises(CabinetError, match="unlock_pulse_ms = 15000"):
        make_cabinet(timing=FAST.model_copy(update={"unlock_pulse_ms": 15000}))


def test_prices_come_from_the_catalog_in_force_not_the_file_edited_meanwhile(make_cabinet,
                                                                              tmp_path):
    import shutil
    from pathlib import Path
    fixtures = tmp_path / "fixtures"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures", fixtures,
                    ignore=shutil.ignore_patterns("bad"))
    c = make_cabinet(config=fixtures / "cabinet.yaml", timing=FAST, clock=ManualClock(),
                     hardware_clock=SYSTEM)
    price = c.catalog[TAKE_SKU].price
    text = (fixtures / "catalog.yaml").read_text()
    assert f"price: {price}" in text
    (fixtures / "catalog.yaml").write_text(text.replace(f"price: {price}", "price: 999"))

    report = _session(c, _take_one())
    assert report.basket == {TAKE_SKU: 1} and report.total == price
    copied = (Path(report.bundle_dir) / "catalog.yaml").read_text()
    assert "price: 999" not in copied and f"price: {price}" in copied


# --- shelves that do not settle ----------------------------------------------------------------
def test_a_shelf_that_never_settles_is_reconciled_as_it_is_and_flagged(make_cabinet):
    # settle_s is the board's wait for the load cells, on the hardware's (real) clock; the shelf
    # never settles, so the outcome does not depend on how long that wait is.
    c = make_cabinet(timing=FAST.model_copy(update={"settle_s": 1.0}), clock=ManualClock(),
                     hardware_clock=SYSTEM)
    taken_from = c.planogram.slot(TAKE_SLOT).shelf
    assert taken_from != "bottom"
    top, bottom = c.planogram.shelf(taken_from).channel, c.planogram.shelf("bottom").channel
    top_before = c.board.weights()[top].grams
    item_g = c.catalog[TAKE_SKU].unit_weight_g

    async def close_with_a_leaning_customer(cc):
        def top_settled_one_item_lighter():
            reading = cc.board.weights()[top]
            return reading.stable and reading.grams < top_before - item_g / 2
        await until(top_settled_one_item_lighter, "the shelf taken from settled after the take")
        cc.world.wobble(bottom, 40.0)           # leans on the bottom shelf as the door shuts

    report = _session(c, _take_one(close_when=close_with_a_leaning_customer))
    triggers = _triggers(c, report.session_id)
    assert "settle_timeout" in triggers and "settled" not in triggers
    assert triggers[-3:] == ["settle_timeout", "reconciled", "finished"]
    assert "shelf_unsettled" in report.flags
    # the shelves that did settle still count: the item taken is charged, nothing else
    assert report.outcome == "charged" and report.basket == {TAKE_SKU: 1}
    shelves = load_bundle(report.bundle_dir).shelves
    assert {sid: w.after_stable for sid, w in shelves.items()} == {
        shelf.id: shelf.id != "bottom" for shelf in c.planogram.shelves}
    assert all(w.before_stable for w in shelves.values())
