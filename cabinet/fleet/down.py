"""Down messages on the cabinet: decode, verify, refuse or apply, remember.

`DownHandler.handle(topic, payload)` answers every message with a `DownOutcome` and a log
line: `refused` with a reason (malformed, bad_signature, expired, replay, or the action's own
refusal such as "a session is open") or `applied` with what changed. The ids applied are kept
in `fleet_applied`, so a redelivery, a replay by someone who recorded the traffic, or the same
order arriving through the cabinet's and its region's topics is refused even after a restart.

An id is recorded after its action returns (the action's own transaction is separate): a crash
between the two applies the order again on redelivery, which is why every action is idempotent
(block an account already blocked, raise an out-of-service alarm already raised, put in force
the file already in force); only `reboot_mcu` would reboot twice.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any, Callable, Container, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from cabinet.errors import CabinetError
from cabinet.fleet import messages as m
from cabinet.fleet.tables import AppliedDown

log = logging.getLogger("cabinet.fleet")


class ActionRefused(CabinetError):
    """An order the cabinet will not carry out now (a session open, an unknown account, a
    planogram with errors); the message says why."""


class Actions(Protocol):
    """What the cabinet does for each down kind; each returns a one-line description of what
    changed, or raises ActionRefused."""

    def standing(self, body: dict[str, Any]) -> str: ...
    def faces(self, body: dict[str, Any]) -> str: ...
    def planogram(self, body: dict[str, Any]) -> str: ...
    def prices(self, body: dict[str, Any]) -> str: ...
    def command(self, body: dict[str, Any]) -> str: ...


@dataclasses.dataclass(frozen=True)
class DownOutcome:
    message_id: str | None
    kind: str | None
    outcome: str            # applied | refused
    reason: str             # "" when applied; malformed, bad_signature, expired, replay, refused
    detail: str


class _Applied(Container[str]):
    def __init__(self, db: sessionmaker):
        self._db = db

    def __contains__(self, message_id: object) -> bool:
        with self._db() as s:
            return s.get(AppliedDown, message_id) is not None


class DownHandler:
    def __init__(self, db: sessionmaker, public_key: Any, actions: Actions, *,
                 now: Callable[[], dt.datetime],
                 resend: Callable[[dict[str, Any]], str] | None = None):
        self._db = db
        # the `resend` order is the agent's (it owns the connection and the publishing
        # cursor): FleetAgent sets this to its own re-publish; None refuses resends
        self.resend = resend
        self._key = public_key
        self._actions = actions
        self._now = now
        self.outcomes: list[DownOutcome] = []   # this run's, newest last (diagnostics)

    def handle(self, topic: str, payload: bytes) -> DownOutcome:
        try:
            msg = m.decode_down(payload, topic=topic)
        except m.MessageError as e:
            return self._done(None, None, "refused", "malformed", str(e))
        try:
            m.check_down(msg, self._key, self._now(), _Applied(self._db))
        except m.DownRefused as e:
            return self._done(msg.id, msg.kind, "refused", e.reason, e.detail)
        try:
            if msg.kind == "resend":
                if self.resend is None:
                    raise ActionRefused("no fleet agent here to publish the rows again")
                detail = self.resend(msg.body)
            else:
                detail = getattr(self._actions, msg.kind)(msg.body)
        except CabinetError as e:
            return self._done(msg.id, msg.kind, "refused", "refused", str(e))
        try:
            with self._db.begin() as s:
                s.add(AppliedDown(message_id=msg.id, kind=msg.kind, applied_at=self._now(),
                                  detail=detail[:2000]))
        except IntegrityError:      # applied meanwhile through another topic: still once
            return self._done(msg.id, msg.kind, "refused", "replay", "applied meanwhile")
        return self._done(msg.id, msg.kind, "applied", "", detail)

    def applied(self) -> list[str]:
        with self._db() as s:
            return list(s.scalars(select(AppliedDown.message_id)
                                  .order_by(AppliedDown.applied_at, AppliedDown.message_id)))

    def _done(self, message_id: str | None, kind: str | None, outcome: str, reason: str,
              detail: str) -> DownOutcome:
        result = DownOutcome(message_id, kind, outcome, reason, detail)
        self.outcomes.append(result)
        if outcome == "applied":
            log.warning("fleet: applied %s %s: %s", kind, message_id, detail)
        else:
            log.warning("fleet: refused down message %s (%s): %s", message_id or "?", reason,
                        detail)
        return result
