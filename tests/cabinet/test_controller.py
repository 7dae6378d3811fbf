"""The controller's waiting states and refusals, on the simulated cabinet with short timeouts.

Each test drives the physical side itself (the simulated MCU's door, the world's items) and
checks what the controller decided, what it journalled, and what the MCU actually did.
"""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from billing.models import CabinetSession, Hold
from cabinet.config import TimeoutsConfig
from cabinet.demo import SimCabinet
from cabinet.errors import CabinetError
from cabinet.journal import JournalEntry

pytestmark = pytest.mark.slow

FAST = TimeoutsConfig(face_s=3.0, auth_s=5.0, unlock_pulse_ms=600, door_open_alarm_s=0.6,
              door_open_max_s=5.0, settle_s=3.0)


@pytest.fixture(scope="module")
def cab(tmp_path_factory):
    cabinet = SimCabinet(tmp_path_factory.mktemp("ctl"), timing=FAST)
    yield cabinet
    cabinet.close()


def _customer_photo(cab):
    person = next(p for p in cab.account_ids)   # an enrolled face
    return person, cab.photo_for(person, 0)


def _session(cab, customer=None):
    """Show an enrolled face, run one session while `customer(cab)` acts; return the report."""
    _, photo = _customer_photo(cab)
    cab.face_camera.show(photo)

    async def main():
        frame = await cab.controller.wait_for_face(2.0)
        task = asyncio.create_task(customer(cab)) if customer else None
        report = await cab.controller.session(frame)
        if task:
            await task
        return report
    try:
        return asyncio.run(main())
    finally:
        cab.face_camera.show(None)


def _triggers(cab, session_id):
    with cab.db() as s:
        return [e.trigger for e in s.scalars(select(JournalEntry).where(
            JournalEntry.session_id == session_id).order_by(JournalEntry.seq))]


async def _wait_unlocked(cab):
    for _ in range(300):
        if not cab.mcu.lock_engaged:
            return True
        await asyncio.sleep(0.01)
    return False


def test_unlocked_but_never_opened_relocks_by_itself_and_charges_nothing(cab):
    unlocks = cab.mcu.unlocks_executed
    report = _session(cab)
    assert report.outcome == "nothing_taken"
    assert "door_never_opened" in report.flags
    assert "unlock_expired" in _triggers(cab, report.session_id)
    assert cab.mcu.unlocks_executed == unlocks + 1
    assert cab.mcu.lock_engaged            # the MCU ended the pulse on its own


def test_door_left_open_raises_the_alarm_then_the_session_still_ends(cab):
    async def slow_customer(c):
        assert await _wait_unlocked(c)
        assert c.mcu.open_door()
        c.world.take("A1", 1)
        await asyncio.sleep(FAST.door_open_alarm_s + 0.4)
        c.mcu.close_door()
        c.world.leave()

    report = _session(cab, slow_customer)
    assert report.outcome == "charged" and report.basket == {"cola-330": 1}
    assert "door_open_too_long" in report.flags
    assert "door_open_alarm" in _triggers(cab, report.session_id)


def test_a_blocked_account_is_refused_without_hold_or_unlock(cab):
    person, _ = _customer_photo(cab)
    account_id = cab.account_ids[person]
    unlocks = cab.mcu.unlocks_executed
    cab.billing.block(account_id, "test: card reported stolen")
    try:
        report = _session(cab)
    finally:
        from billing.models import Account
        with cab.db.begin() as s:
            s.get(Account, account_id).status = "active"
    assert report.outcome == "denied" and "stolen" in report.reason
    assert cab.mcu.unlocks_executed == unlocks
    with cab.db() as s:
        assert s.scalars(select(Hold).where(Hold.session_id == report.session_id)).all() == []


def test_identification_that_takes_too_long_times_out_to_idle(cab):
    cab.controller.timing = FAST.model_copy(update={"auth_s": 0.001})
    try:
        report = _session(cab)
    finally:
        cab.controller.timing = FAST
    assert report.outcome == "denied"
    assert _triggers(cab, report.session_id)[-1] == "auth_timeout"
    assert cab.controller.machine.state == "idle"


def _force_the_door(cab):
    """Someone pulls the locked door open and lets it shut; the controller hears of it."""
    assert cab.mcu.open_door(force=True)
    cab.mcu.close_door()

    async def settle_events():
        await asyncio.sleep(0.3)
        cab.controller.poll_idle_events()
    asyncio.run(settle_events())


def test_a_forced_door_takes_the_cabinet_out_of_service_until_repaired(cab):
    unlocks = cab.mcu.unlocks_executed
    _force_the_door(cab)
    assert cab.controller.machine.state == "out_of_service"
    with pytest.raises(CabinetError, match="out of service"):
        _session(cab)
    assert cab.mcu.unlocks_executed == unlocks
    cab.controller.repair("technician-7")
    assert cab.controller.machine.state == "idle"


def test_an_operator_restock_unlocks_and_resets_the_belief(cab):
    levels = cab.planogram.initial_stock()
    unlocks = cab.mcu.unlocks_executed

    async def visit():
        async def operator():
            assert await _wait_unlocked(cab)
            assert cab.mcu.open_door()
            cab.world.restock(levels)
            await asyncio.sleep(0.1)
            cab.mcu.close_door()
        task = asyncio.create_task(operator())
        belief = await cab.controller.restock("operator-ana")
        await task
        return belief

    belief = asyncio.run(visit())
    assert cab.mcu.unlocks_executed == unlocks + 1
    assert cab.mcu.lock_engaged
    assert belief == {slot: list(skus) for slot, skus in cab.world.stock().items()}
    assert cab.controller.machine.state == "idle"
    with cab.db() as s:
        rows = s.scalars(select(JournalEntry).where(JournalEntry.trigger.in_(
            ["start_restock", "end_restock"])).order_by(JournalEntry.id)).all()
    assert [r.trigger for r in rows][-2:] == ["start_restock", "end_restock"]


def test_a_restock_with_a_bad_level_changes_nothing(cab):
    before = cab.inventory.slots()
    with pytest.raises(CabinetError, match="holds 0"):
        asyncio.run(cab.controller.restock("operator-ana", {"A1": 999}))
    with pytest.raises(CabinetError, match="not in the planogram"):
        asyncio.run(cab.controller.restock("operator-ana", {"Z9": 1}))
    assert cab.inventory.slots() == before and cab.controller.machine.state == "idle"


def test_the_door_cannot_be_reopened_once_it_shut(cab):
    reopened = []

    async def customer(c):
        assert await _wait_unlocked(c)
        assert c.mcu.open_door()
        c.world.take("A1", 1)
        c.mcu.close_door()
        reopened.append(c.mcu.open_door())      # the pulse had time left: the latch holds
        c.world.leave()

    report = _session(cab, customer)
    assert reopened == [False]
    assert report.outcome == "charged" and report.basket == {"cola-330": 1}


def test_a_hold_the_gateway_never_answered_is_released_later(cab):
    unlocks = cab.mcu.unlocks_executed
    cab.gateway.fail_next(4, "500")             # the first try and all 3 retries fail
    report = _session(cab)
    assert report.outcome == "denied" and cab.mcu.unlocks_executed == unlocks
    with cab.db() as s:
        assert s.get(CabinetSession, report.session_id).outcome == "denied"
    cab.billing.retry_pending()                 # the gateway is back: replay, then release
    with cab.db() as s:
        hold = s.scalars(select(Hold).where(Hold.session_id == report.session_id)).one()
        assert hold.status in ("voided", "declined"), hold.status
    if hold.status == "voided":
        assert cab.gateway.authorization(hold.gateway_auth_id)["status"] == "voided"


def test_out_of_service_survives_a_restart(cab):
    _force_the_door(cab)
    assert cab.controller.machine.state == "out_of_service"
    cab.controller = cab.new_controller()       # power cycle: the alarm is not forgotten
    assert cab.controller.machine.state == "out_of_service"
    asyncio.run(cab.controller.recover())
    assert cab.controller.machine.state == "out_of_service"
    cab.controller.repair("technician-7")
    assert cab.new_controller().machine.state == "idle"


def test_a_pulse_longer_than_the_board_allows_is_refused_at_start(tmp_path):
    with pytest.raises(CabinetError, match="unlock_pulse_ms = 15000"):
        SimCabinet(tmp_path, timing=FAST.model_copy(update={"unlock_pulse_ms": 15000}))


def test_prices_come_from_the_catalog_in_force_not_the_file_edited_meanwhile(tmp_path):
    import shutil
    from pathlib import Path
    fixtures = tmp_path / "fixtures"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures", fixtures,
                    ignore=shutil.ignore_patterns("bad"))
    with SimCabinet(tmp_path / "run", fixtures / "cabinet.yaml", timing=FAST) as c:
        price = c.catalog["cola-330"].price
        text = (fixtures / "catalog.yaml").read_text()
        (fixtures / "catalog.yaml").write_text(text.replace(f"price: {price}", "price: 999", 1))

        async def customer(cc):
            assert await _wait_unlocked(cc)
            assert cc.mcu.open_door()
            cc.world.take("A1", 1)
            cc.mcu.close_door()
            cc.world.leave()
        report = _session(c, customer)
        assert report.total == price
        copied = (Path(report.bundle_dir) / "catalog.yaml").read_text()
        assert "price: 999" not in copied and f"price: {price}" in copied
