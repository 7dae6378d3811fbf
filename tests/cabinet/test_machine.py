"""The session table: legal paths work, every illegal trigger raises and changes nothing,
and the journal is written before the state changes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cabinet.machine import STATES, TRANSITIONS, IllegalTrigger, SessionMachine

TRIGGERS = sorted({t for t, _, _ in TRANSITIONS})


def _allowed(state: str) -> set[str]:
    return {t for t, src, _ in TRANSITIONS
            if src == state or (isinstance(src, list) and state in src)}


def test_a_whole_sale_walks_the_table_and_journals_each_step():
    records = []
    m = SessionMachine(records.append)
    path = ["face_seen", "authorized", "door_opened", "door_closed", "settled",
            "reconciled", "finished"]
    for trigger in path:
        m.fire(trigger, note=trigger)
    assert m.state == "idle"
    assert [r.trigger for r in records] == path
    assert [r.dest for r in records] == ["face_auth", "unlocked", "door_open", "door_closed",
                                         "reconcile", "charge", "idle"]
    assert records[0].data == {"note": "face_seen"}


@pytest.mark.parametrize("state", STATES)
def test_every_missing_pair_raises_and_leaves_the_state(state):
    for trigger in TRIGGERS:
        if trigger in _allowed(state):
            continue
        records = []
        m = SessionMachine(records.append, initial=state)
        with pytest.raises(IllegalTrigger) as err:
            m.fire(trigger)
        assert m.state == state
        assert records == []
        assert trigger in str(err.value) and state in str(err.value)


def test_a_journal_that_cannot_write_stops_the_transition():
    def broken(_record):
        raise OSError("disk full")

    m = SessionMachine(broken)
    with pytest.raises(OSError):
        m.fire("face_seen")
    assert m.state == "idle"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TRIGGERS), max_size=40))
def test_random_trigger_sequences_follow_the_table(triggers):
    records = []
    m = SessionMachine(records.append)
    for trigger in triggers:
        before = m.state
        if trigger in _allowed(before):
            rec = m.fire(trigger)
            assert rec.source == before and m.state == rec.dest
        else:
            with pytest.raises(IllegalTrigger):
                m.fire(trigger)
            assert m.state == before
    assert len(records) == sum(1 for r in records if r.dest in STATES)
