"""The session machine, exactly: each record's fields, the allowed triggers per state, the
error texts, and that the journal sees the record while the state is still the source."""
from __future__ import annotations

import datetime as dt

import pytest

from cabinet.machine import STATES, IllegalTrigger, SessionMachine

AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

ALLOWED = {
    "idle": ["face_seen", "fault", "start_restock"],
    "face_auth": ["auth_timeout", "authorized", "denied", "fault"],
    "unlocked": ["door_opened", "fault", "unlock_expired"],
    "door_open": ["door_closed", "door_open_alarm", "fault"],
    "door_closed": ["fault", "settle_timeout", "settled"],
    "reconcile": ["fault", "reconciled"],
    "charge": ["fault", "finished"],
    "out_of_service": ["repaired"],
    "restock": ["end_restock", "fault"],
}

DEST = {
    ("idle", "face_seen"): "face_auth", ("idle", "fault"): "out_of_service",
    ("idle", "start_restock"): "restock",
    ("face_auth", "authorized"): "unlocked", ("face_auth", "denied"): "idle",
    ("face_auth", "auth_timeout"): "idle", ("face_auth", "fault"): "out_of_service",
    ("unlocked", "door_opened"): "door_open", ("unlocked", "unlock_expired"): "reconcile",
    ("unlocked", "fault"): "out_of_service",
    ("door_open", "door_open_alarm"): "door_open", ("door_open", "door_closed"): "door_closed",
    ("door_open", "fault"): "out_of_service",
    ("door_closed", "settled"): "reconcile", ("door_closed", "settle_timeout"): "reconcile",
    ("door_closed", "fault"): "out_of_service",
    ("reconcile", "reconciled"): "charge", ("reconcile", "fault"): "out_of_service",
    ("charge", "finished"): "idle", ("charge", "fault"): "out_of_service",
    ("out_of_service", "repaired"): "idle",
    ("restock", "end_restock"): "idle", ("restock", "fault"): "out_of_service",
}


def test_the_states_in_order():
    assert STATES == ("idle", "face_auth", "unlocked", "door_open", "door_closed", "reconcile",
                      "charge", "out_of_service", "restock")


@pytest.mark.parametrize("state", STATES)
def test_allowed_triggers_per_state(state):
    m = SessionMachine(lambda r: None, initial=state)
    assert m.allowed() == ALLOWED[state]
    assert m.state == state


@pytest.mark.parametrize("source, trigger", sorted(DEST))
def test_each_transition_goes_where_the_table_says_and_journals_it(source, trigger):
    seen = []
    m = SessionMachine(lambda r: seen.append((r, m.state)), initial=source, now=lambda: AT)
    m.session_id = "s-42"
    record = m.fire(trigger, amount=120)
    assert m.state == DEST[source, trigger]
    assert (record.session_id, record.trigger, record.source, record.dest, record.at,
            record.data) == ("s-42", trigger, source, DEST[source, trigger], AT, {"amount": 120})
    assert seen == [(record, source)]        # journalled while still in the source state


def test_a_record_without_a_session_has_none_and_no_data():
    m = SessionMachine(lambda r: None, now=lambda: AT)
    record = m.fire("face_seen")
    assert record.session_id is None and record.data == {}


def test_default_clock_is_utc_now():
    m = SessionMachine(lambda r: None)
    before = dt.datetime.now(dt.timezone.utc)
    record = m.fire("face_seen")
    after = dt.datetime.now(dt.timezone.utc)
    assert record.at.tzinfo is not None and record.at.utcoffset() == dt.timedelta(0)
    assert before <= record.at <= after


def test_illegal_trigger_text_lists_what_is_allowed():
    m = SessionMachine(lambda r: None)
    with pytest.raises(IllegalTrigger) as e:
        m.fire("settled")
    assert str(e.value) == ("session machine: trigger 'settled' is not allowed in state 'idle' "
                            "(allowed there: face_seen, fault, start_restock)")
    assert (e.value.state, e.value.trigger) == ("idle", "settled")


def test_illegal_trigger_text_includes_triggers_listed_with_several_sources():
    m = SessionMachine(lambda r: None, initial="restock")
    with pytest.raises(IllegalTrigger) as e:
        m.fire("repaired")
    assert str(e.value) == ("session machine: trigger 'repaired' is not allowed in state "
                            "'restock' (allowed there: end_restock, fault)")


def test_an_unknown_trigger_is_illegal_too():
    m = SessionMachine(lambda r: None, initial="out_of_service")
    with pytest.raises(IllegalTrigger) as e:
        m.fire("to_idle")                    # transitions' auto triggers are switched off
    assert str(e.value).endswith("(allowed there: repaired)")
    assert m.state == "out_of_service"


def test_illegal_trigger_built_for_a_state_without_triggers_says_none():
    assert str(IllegalTrigger("nowhere", "x")).endswith("(allowed there: none)")


def test_unknown_initial_state_is_refused_by_name():
    with pytest.raises(ValueError) as e:
        SessionMachine(lambda r: None, initial="open")
    assert str(e.value) == "session machine: unknown initial state 'open'"


def test_a_failed_journal_leaves_the_machine_usable():
    calls = []

    def journal(record):
        calls.append(record)
        if len(calls) == 1:
            raise OSError("disk full")

    m = SessionMachine(journal, now=lambda: AT)
    with pytest.raises(OSError, match="disk full"):
        m.fire("face_seen")
    assert m.state == "idle"
    record = m.fire("face_seen", retry=True)
    assert m.state == "face_auth"
    assert calls[1] is record and record.data == {"retry": True}


def test_an_illegal_trigger_does_not_call_the_journal():
    calls = []
    m = SessionMachine(calls.append, initial="charge")
    with pytest.raises(IllegalTrigger):
        m.fire("face_seen")
    assert calls == [] and m.state == "charge"
