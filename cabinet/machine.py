"""The session state machine: one literal table, run by `transitions`.

The table below is the whole behaviour of a cabinet session. `SessionMachine.fire()` checks a
trigger against the table, hands a `TransitionRecord` to the journal (which writes it durably)
and only then changes state; the controller carries out the effect after `fire()` returns.
So every effect (unlock, capture, ...) follows a committed record of the transition that led to
it, and a journal that cannot write stops the transition where it is (invariant 4).

A trigger that the table does not allow in the current state raises `IllegalTrigger` and leaves
the state unchanged (h11's habit: every missing (state, event) pair is an error).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Callable

from transitions import Machine, MachineError

STATES: tuple[str, ...] = (
    "idle",            # waiting for a customer (face camera, QR, tap)
    "face_auth",       # identifying the face, checking standing, placing the hold
    "unlocked",        # lock released for a pulse; waiting for the door to open
    "door_open",       # customer is shopping
    "door_closed",     # lock re-engaged; waiting for the shelves to settle
    "reconcile",       # working out the basket from weights and images
    "charge",          # capturing the payment, writing the receipt
    "out_of_service",  # hardware fault or alarm; needs a technician or operator
    "restock",         # operator session: door opened by an operator, no customer
)

# (trigger, source, dest). Sources may be a list. This table is the specification.
TRANSITIONS: tuple[tuple[str, Any, str], ...] = (
    ("face_seen", "idle", "face_auth"),
    ("authorized", "face_auth", "unlocked"),
    ("denied", "face_auth", "idle"),
    ("auth_timeout", "face_auth", "idle"),
    ("door_opened", "unlocked", "door_open"),
    ("unlock_expired", "unlocked", "reconcile"),   # never opened: relocked; still reconciled
    ("door_open_alarm", "door_open", "door_open"),  # open too long: kiosk alarm, operator alert
    ("door_closed", "door_open", "door_closed"),
    ("settled", "door_closed", "reconcile"),
    ("settle_timeout", "door_closed", "reconcile"),  # reconcile with what is there, flagged
    ("reconciled", "reconcile", "charge"),
    ("finished", "charge", "idle"),
    ("fault", ["idle", "face_auth", "unlocked", "door_open", "door_closed", "reconcile",
               "charge", "restock"], "out_of_service"),
    ("repaired", "out_of_service", "idle"),
    ("start_restock", "idle", "restock"),
    ("end_restock", "restock", "idle"),
)

# States in which a customer session is open (a crash here must be resumed on restart).
SESSION_STATES = frozenset({"face_auth", "unlocked", "door_open", "door_closed", "reconcile",
                            "charge"})


class IllegalTrigger(Exception):
    """A trigger that the table does not allow in the current state; nothing changed."""

    def __init__(self, state: str, trigger: str):
        allowed = sorted({t for t, src, _ in TRANSITIONS
                          if src == state or (isinstance(src, list) and state in src)})
        super().__init__(f"session machine: trigger '{trigger}' is not allowed in state "
                         f"'{state}' (allowed there: {', '.join(allowed) or 'none'})")
        self.state = state
        self.trigger = trigger


@dataclasses.dataclass(frozen=True)
class TransitionRecord:
    session_id: str | None
    trigger: str
    source: str
    dest: str
    at: dt.datetime
    data: dict[str, Any]


class _Model:
    """The object `transitions` decorates; kept apart so SessionMachine's own API stays small."""

    state: str


class SessionMachine:
    """Holds the current state; `fire()` journals, then transitions."""

    def __init__(self, journal: Callable[[TransitionRecord], None], *, initial: str = "idle",
                 now: Callable[[], dt.datetime] | None = None):
        if initial not in STATES:
            raise ValueError(f"session machine: unknown initial state '{initial}'")
        self._journal = journal
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self._model = _Model()
        self._pending: TransitionRecord | None = None
        self._machine = Machine(
            model=self._model, states=list(STATES), initial=initial,
            transitions=[{"trigger": t, "source": s, "dest": d} for t, s, d in TRANSITIONS],
            send_event=True, auto_transitions=False, ignore_invalid_triggers=False,
            before_state_change=self._write_journal)
        self.session_id: str | None = None

    @property
    def state(self) -> str:
        return self._model.state

    def allowed(self) -> list[str]:
        return sorted(self._machine.get_triggers(self.state))

    def fire(self, trigger: str, **data: Any) -> TransitionRecord:
        """Journal the transition, then take it. Raises IllegalTrigger (state unchanged)."""
        if trigger not in self._machine.get_triggers(self.state):
            raise IllegalTrigger(self.state, trigger)
        dest = self._dest(trigger)
        self._pending = TransitionRecord(self.session_id, trigger, self.state, dest,
                                         self._now(), dict(data))
        try:
            getattr(self._model, trigger)()
        except MachineError as e:  # pragma: no cover - guarded by the check above
            raise IllegalTrigger(self.state, trigger) from e
        finally:
            record, self._pending = self._pending, None
        return record

    def _dest(self, trigger: str) -> str:
        for t, src, dest in TRANSITIONS:
            if t == trigger and (src == self.state or (isinstance(src, list)
                                                       and self.state in src)):
                return dest
        raise IllegalTrigger(self.state, trigger)

    def _write_journal(self, _event) -> None:
        # Runs inside transitions before the state changes: if it raises, nothing moves.
        assert self._pending is not None
        self._journal(self._pending)
