"""`cabinet recover`: finish what a crash left open, then say whether everything is settled.

    cabinet recover [--config FILE] [--workdir DIR] [--json]

The cabinet is built through the one composition root (cabinet/app.py), exactly as `cabinet
run` builds it, and then, in order:

1. every session the journal shows open is finished from its journalled state
   (`Controller.recover`): captured, voided, or charged for what is certain and flagged for
   review; exactly once, because every payment call reuses its stored idempotency key;
2. the payment outbox is drained now, whatever its back-off (captures, voids, refunds and
   releases of holds whose answer the crash swallowed);
3. the lock is commanded engaged (the MCU relocked by itself at the end of the pulse; this
   makes sure) and the door and lock are read back.

One line per session, then a summary. Exit 0 when nothing is left open or owed to the
gateway; 2 while a payment call is still pending (the gateway does not answer: run it again
later, `cabinet run` also retries them on its own), naming each one; 1 if a session stays open
or the lock does not engage. Running it again does nothing: nothing is open, nothing pending.

`--workdir DIR` recovers a demo folder (`cabinet demo --workdir DIR`): the demo's simulated
cabinet in that folder, as the demo builds it. Stop `cabinet run` first: one controller at a
time owns the board (the serial port is opened exclusively).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "fixtures" / "cabinet.yaml"

EXIT_SETTLED, EXIT_OPEN, EXIT_PENDING = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Pending:
    """A payment call still owed to the gateway after the drain."""
    session_id: str
    step: str                 # capture | charge | void | refund | hold_cleanup
    attempts: int
    last_error: str


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    sessions: tuple[Any, ...]          # cabinet.controller.SessionReport, one per finished
    payments_done: int                 # payment calls (outbox rows) answered in this run
    pending: tuple[Pending, ...]       # outbox calls still without an answer
    still_open: tuple[str, ...]        # sessions the journal still shows open (a bug)
    lock_engaged: bool | None          # None: the board did not answer
    door_open: bool | None

    @property
    def exit_code(self) -> int:
        if self.still_open or self.lock_engaged is False:
            return EXIT_OPEN
        if self.pending:
            return EXIT_PENDING
        return EXIT_SETTLED


def recover_app(app) -> RecoveryReport:
    """Steps 1-3 on a started App (cabinet/app.py); what the command prints comes from this."""
    from billing.outbox import pending_rows
    done_before = _calls_answered(app.db)
    sessions = asyncio.run(app.controller.recover())      # its last step drains the outbox
    app.billing.drain_outbox(force=True)                  # and what finishing them queued
    with app.db() as db:
        pending = tuple(Pending(r.session_id, r.step, r.attempts, r.last_error or "")
                        for r in pending_rows(db))
    still_open = tuple(sid for sid, _state in app.controller.journal.open_sessions())
    lock_engaged = door_open = None
    try:
        app.board.lock()
        state = app.board.state()
        lock_engaged, door_open = bool(state.lock_engaged), bool(state.door_open)
    except Exception as e:      # the link's own errors; the summary says the board is silent
        from firmware_bridge.device import LinkError
        if not isinstance(e, LinkError):
            raise
    return RecoveryReport(tuple(sessions), _calls_answered(app.db) - done_before, pending,
                          still_open, lock_engaged, door_open)


def _calls_answered(db) -> int:
    """Outbox rows (payment calls) that have their answer recorded."""
    from sqlalchemy import func, select

    from billing.outbox_models import PaymentOutbox
    with db() as s:
        return s.scalar(select(func.count()).select_from(PaymentOutbox)
                        .where(PaymentOutbox.done_at.is_not(None))) or 0


def session_line(report) -> str:
    basket = ", ".join(f"{q} x {s}" for s, q in sorted(report.basket.items()) if q) or "nothing"
    line = f"session {report.session_id}: {report.outcome}"
    if report.outcome == "denied":
        line += f" ({report.reason})" if report.reason else ""
    else:
        line += f", {basket}, total {report.total} {report.currency}"
    flags = [f for f in report.flags if f != "recovered_after_restart"]
    if flags:
        line += f"; flagged for review: {', '.join(flags)}"
    return line


def print_report(result: RecoveryReport, out: TextIO, *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({
            "sessions": [{"session": r.session_id, "outcome": r.outcome,
                          "basket": {k: v for k, v in sorted(r.basket.items()) if v},
                          "total": r.total, "currency": r.currency, "flags": list(r.flags),
                          "reason": r.reason} for r in result.sessions],
            "payments_done": result.payments_done,
            "pending": [dataclasses.asdict(p) for p in result.pending],
            "still_open": list(result.still_open), "lock_engaged": result.lock_engaged,
            "door_open": result.door_open, "exit": result.exit_code}, sort_keys=True),
            file=out, flush=True)
        return
    for report in result.sessions:
        print(session_line(report), file=out)
    for p in result.pending:
        print(f"pending: session {p.session_id} {p.step} not answered after {p.attempts} "
              f"attempt(s): {p.last_error or 'no answer yet'}", file=out)
    for sid in result.still_open:
        print(f"still open: session {sid}", file=out)
    lock = {True: "lock engaged", False: "LOCK NOT ENGAGED", None: "board not answering"}
    door = {True: ", door OPEN", False: ", door closed", None: ""}
    n = len(result.sessions)
    summary = (f"recovered {n} session(s); {result.payments_done} payment call(s) made, "
               f"{len(result.pending)} pending; {lock[result.lock_engaged]}"
               f"{door[result.door_open]}")
    if result.exit_code == EXIT_SETTLED:
        summary += "; everything settled" if n or result.payments_done else \
            "; nothing to recover"
    elif result.exit_code == EXIT_PENDING:
        summary += ("; the gateway has not answered: run `cabinet recover` again later "
                    "(`cabinet run` retries on its own)")
    print(summary, file=out, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet recover", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="the cabinet's configuration (default fixtures/cabinet.yaml)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="a demo folder (cabinet demo --workdir DIR) to recover instead")
    p.add_argument("--json", action="store_true", help="one JSON object")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """The command; errors (a bad configuration, a missing key file, a silent board) propagate
    to cabinet/cli.py's exit codes."""
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    if args.workdir is not None:
        from cabinet.demo import SimCabinet
        with SimCabinet(args.workdir, args.config) as cab:
            result = recover_app(cab.app)
    else:
        from cabinet.app import App
        with App(args.config) as app:
            app.start()
            result = recover_app(app)
    print_report(result, out, as_json=args.json)
    return result.exit_code
