"""The session table: legal paths work, every illegal trigger raises and changes nothing,
and the journal is written before the state changes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from cabinet.machine import STATES, TRANSITIONS, IllegalTrigger, SessionMachine

# The specification, written out by hand from ARCHITECTURE.md's session machine (not derived
# from machine.TRANSITIONS, so a wrong row in the table fails here): (state, trigger) -> dest.
_WORKING = ("idle", "face_auth", "unlocked", "door_open", "door_closed", "reconcile", "charge",
            "restock")
SPEC: dict[tuple[str, str], str] = {
    ("idle", "face_seen"): "face_auth",
    ("face_auth", "authorized"): "unlocked",
    ("face_auth", "denied"): "idle",
    ("face_auth", "auth_timeout"): "idle",
    ("unlocked", "door_opened"): "door_open",
    ("unlocked", "unlock_expired"): "reconcile",
    ("door_open", "door_open_alarm"): "door_open",
    ("door_open", "door_closed"): "door_closed",
    ("door_closed", "settled"): "reconcile",
    ("door_closed", "settle_timeout"): "reconcile",
    ("reconcile", "reconciled"): "charge",
    ("charge", "finished"): "idle",
    **{(state, "fault"): "out_of_service" for state in _WORKING},
    ("out_of_service", "repaired"): "idle",
    ("idle", "start_restock"): "restock",
    ("restock", "end_restock"): "idle",
}
SPEC_STATES = ("idle", "face_auth", "unlocked", "door_open", "door_closed", "reconcile",
               "charge", "out_of_service", "restock")
TRIGGERS = sorted({t for _, t in SPEC})
PAIRS = [(state, trigger) for state in SPEC_STATES for trigger in TRIGGERS]


def _allowed(state: str) -> set[str]:
    return {t for (s, t) in SPEC if s == state}


def test_the_table_is_the_specification():
    assert tuple(STATES) == SPEC_STATES
    rows = {}
    for trigger, src, dest in TRANSITIONS:
        for state in (src if isinstance(src, list) else [src]):
            assert (state, trigger) not in rows, f"({state}, {trigger}) appears twice"
            rows[(state, trigger)] = dest
    assert rows == SPEC


@pytest.mark.parametrize("state,trigger", PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
def test_every_state_trigger_pair(state, trigger):
    """Legal pairs land where the table says and journal exactly that step before moving;
    illegal ones raise, name the pair, and leave the state and the journal untouched."""
    records = []
    states_seen_by_journal = []

    def journal(record):
        states_seen_by_journal.append(m.state)
        records.append(record)

    m = SessionMachine(journal, initial=state)
    m.session_id = "s-1"
    if (state, trigger) in SPEC:
        rec = m.fire(trigger, why="test")
        assert m.state == SPEC[(state, trigger)]
        assert records == [rec]
        assert (rec.session_id, rec.trigger, rec.source, rec.dest, rec.data) == \
            ("s-1", trigger, state, SPEC[(state, trigger)], {"why": "test"})
        assert states_seen_by_journal == [state]   # written before the state changed
        assert sorted(m.allowed()) == sorted(_allowed(m.state))
    else:
        with pytest.raises(IllegalTrigger) as err:
            m.fire(trigger)
        assert m.state == state and records == []
        assert (err.value.state, err.value.trigger) == (state, trigger)
        assert f"'{trigger}'" in str(err.value) and f"'{state}'" in str(err.value)


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


def test_a_journal_that_cannot_write_stops_the_transition():
    def broken(_record):
        raise OSError("disk full")

    m = SessionMachine(broken)
    with pytest.raises(OSError, match="disk full"):
        m.fire("face_seen")
    assert m.state == "idle"
    assert m.allowed() == ["face_seen", "fault", "start_restock"]   # still usable


def test_an_unknown_initial_state_is_refused():
    with pytest.raises(ValueError, match="unknown initial state 'limbo'"):
        SessionMachine(lambda _r: None, initial="limbo")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TRIGGERS), max_size=40))
def test_random_trigger_sequences_follow_the_table(triggers):
    records = []
    m = SessionMachine(records.append)
    expected_state, expected_records = "idle", []
    for trigger in triggers:
        if (expected_state, trigger) in SPEC:
            dest = SPEC[(expected_state, trigger)]
            rec = m.fire(trigger)
            assert (rec.trigger, rec.source, rec.dest) == (trigger, expected_state, dest)
            expected_records.append((trigger, expected_state, dest))
            expected_state = dest
        else:
            with pytest.raises(IllegalTrigger):
                m.fire(trigger)
        assert m.state == expected_state
    # the journal holds exactly the legal steps, in order, and nothing for the refused ones
    assert [(r.trigger, r.source, r.dest) for r in records] == expected_records
