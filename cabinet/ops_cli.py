"""The operator's commands: planograms, catalogs, restock visits and the inventory.

    cabinet planogram validate|diff FILE [--config FILE] [--json]
    cabinet planogram apply FILE [--config FILE] [--yes] [--json]
    cabinet planogram rollback [--config FILE] [--yes] [--json]
    cabinet catalog validate|diff|apply|rollback ...     the same for the catalog
    cabinet restock start [--operator NAME] [--weights FILE] [--config FILE]
    cabinet restock count [--weights FILE] [--vision FILE] [--config FILE] [--json]
    cabinet restock accept [--force] [--config FILE] [--json]
    cabinet inventory [--config FILE] [--json]

Without --config they work on the simulated cabinet of fixtures/cabinet.yaml (data_dir var/).
`main(argv)` is the whole command (cabinet/cli.py hands it everything after `cabinet`); a
refused or bad request prints one line per problem on stderr and returns 1, and changes nothing.
See docs/operators.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, TextIO

from cabinet.config import Config, load_config
from cabinet.errors import CabinetError, FormatErrors
from cabinet import inforce

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "fixtures" / "cabinet.yaml"
COMMANDS = ("planogram", "catalog", "restock", "inventory")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet", description="operator commands")
    sub = p.add_subparsers(dest="command", required=True)

    def config_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help="cabinet configuration (default fixtures/cabinet.yaml)")
        q.add_argument("--json", action="store_true", help="machine-readable output")

    for kind in ("planogram", "catalog"):
        k = sub.add_parser(kind, help=f"validate, diff, apply or roll back a {kind}")
        ks = k.add_subparsers(dest="action", required=True)
        for action in ("validate", "diff", "apply"):
            a = ks.add_parser(action)
            a.add_argument("file", type=Path)
            config_opt(a)
            if action == "apply":
                a.add_argument("--yes", action="store_true", help="do not ask; apply")
        r = ks.add_parser("rollback")
        config_opt(r)
        r.add_argument("--yes", action="store_true", help="do not ask; roll back")

    rs = sub.add_parser("restock", help="an operator's restock visit")
    rss = rs.add_subparsers(dest="action", required=True)
    start = rss.add_parser("start", help="record that the cabinet is open for restocking")
    config_opt(start)
    start.add_argument("--operator", default="operator", help="who restocks")
    start.add_argument("--weights", type=Path, default=None,
                       help="settled weights before restocking (JSON, docs/operators.md)")
    start.add_argument("--vision", type=Path, default=None,
                       help="per-slot item counts the cameras see before restocking (JSON)")
    count = rss.add_parser("count", help="count every slot: expected, counted, confidence")
    config_opt(count)
    count.add_argument("--weights", type=Path, default=None,
                       help="settled weights after restocking (JSON), recorded with the visit")
    count.add_argument("--vision", type=Path, default=None,
                       help="per-slot item counts seen by the cameras (JSON)")
    accept = rss.add_parser("accept", help="make the counted stock the stock in force")
    config_opt(accept)
    accept.add_argument("--force", action="store_true",
                        help="accept although some slots are flagged")

    inv = sub.add_parser("inventory", help="stock per slot: on hand, par, low-stock marks")
    config_opt(inv)
    return p


# --- the cabinet a command works on --------------------------------------------------------

def open_db(cfg: Config):
    """The cabinet's database (tables created if new): journal, inventory, billing."""
    from billing.db import session_factory
    from cabinet.app import open_engine
    return session_factory(open_engine(cfg))


class Cabinet:
    """One configuration's files in force and database, opened lazily (validate and diff
    write nothing, not even an empty database)."""

    def __init__(self, config: Path):
        self.config = load_config(config)
        self.store = inforce.for_config(self.config)
        self._db = None

    def db(self):
        if self._db is None:
            self._db = open_db(self.config)
        return self._db


# --- commands ------------------------------------------------------------------------------

def _change_cmd(args, cab: Cabinet, out: TextIO, ask: Callable[[str], str]) -> int:
    from cabinet.planogram_ops import Operations, render_changes
    ops = Operations(cab.store, cab.db)
    kind, action = args.command, args.action
    if action == "validate":
        errors = ops.validate(kind, args.file)
        if args.json:
            print(json.dumps({"file": str(args.file), "ok": not errors,
                              "errors": [str(e) for e in errors]}), file=out)
        else:
            for err in errors:
                print(err, file=out)
            if not errors:
                print(f"{args.file}: ok", file=out)
        return 1 if errors else 0
    if action == "diff":
        changes = ops.diff(kind, args.file)
        print(json.dumps([c.to_dict() for c in changes]) if args.json
              else render_changes(changes), file=out)
        return 0
    if action == "apply":
        preview = ops.diff(kind, args.file)
    else:
        preview = ops.rollback_changes(kind)[1]
    if not args.yes:
        print(render_changes(preview), file=out)
        answer = ask(f"{action} these {len(preview)} change(s) to the {kind} in force? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print(f"{kind}: nothing changed", file=out)
            return 1
    changes = ops.apply(kind, args.file) if action == "apply" else ops.rollback(kind)
    if args.json:
        print(json.dumps({"kind": kind, "action": action,
                          "in_force": str(cab.store.path(kind)),
                          "changes": [c.to_dict() for c in changes]}), file=out)
    else:
        print(render_changes(changes), file=out)
        print(f"{kind} {'applied' if action == 'apply' else 'rolled back'}: "
              f"{cab.store.path(kind)} is in force ({len(changes)} change(s))", file=out)
    return 0


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        return ""
    return input(prompt)


def main(argv: list[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, ask: Callable[[str], str] = _ask) -> int:
    """The operator's command line; returns the exit code (0 done, 1 refused or bad input)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        cab = Cabinet(args.config)
        if args.command in ("planogram", "catalog"):
            return _change_cmd(args, cab, out, ask)
        if args.command == "restock":
            return _restock_cmd(args, cab, out)
        return _inventory_cmd(args, cab, out)
    except FormatErrors as e:   # ConfigError included: every error, one line each
        for line in e.errors:
            print(line, file=err)
        return 1
    except CabinetError as e:
        print(f"cabinet: {e}", file=err)
        return 1


# --- restock and inventory --------------------------------------------------------------------

def _cabinet_state(journal) -> str:
    """Where the cabinet stands by its journal: the last cabinet-level state, else idle."""
    entries = journal.entries(None)
    return entries[-1].dest if entries else "idle"


def _fire(cab: Cabinet, trigger: str, **data) -> None:
    """Journal a cabinet-level transition through the state machine's table (restock start and
    end); refused, naming the state, when the table does not allow it."""
    from cabinet.journal import Journal
    from cabinet.machine import IllegalTrigger, SessionMachine
    journal = Journal(cab.db())
    open_sessions = journal.open_sessions()
    if open_sessions:
        sid, state = open_sessions[0]
        raise CabinetError(f"restock refused: session {sid} is open ({state.replace('_', ' ')});"
                           f" wait until it ends")
    machine = SessionMachine(journal.write, initial=_cabinet_state(journal))
    try:
        machine.fire(trigger, **data)
    except IllegalTrigger as e:
        raise CabinetError(f"restock refused: the cabinet is "
                           f"{machine.state.replace('_', ' ')} ({e})") from None


def _restock_ended(cab: Cabinet, visit_id: str) -> bool:
    from cabinet.journal import Journal
    entries = Journal(cab.db()).entries(None)
    return bool(entries) and entries[-1].trigger == "end_restock" \
        and json.loads(entries[-1].data).get("visit") == visit_id


def _restock_parts(cab: Cabinet):
    from cabinet.inventory import Inventory
    from cabinet.planogram_ops import Operations
    from cabinet.restock import RestockVisits
    catalog, planogram = Operations(cab.store).in_force()
    return catalog, planogram, Inventory(cab.db(), planogram), RestockVisits(
        cab.config.data_path)


def _weights_file(path: Path | None):
    from cabinet.restock import parse_weights, read_json
    return None if path is None else parse_weights(read_json(path, "weights"), str(path))


def _vision_file(path: Path | None) -> dict[str, int] | None:
    from cabinet.restock import read_json
    if path is None:
        return None
    data = read_json(path, "vision counts")
    if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data.values()):
        raise CabinetError(f"{path}: expected a JSON object of slot id -> item count (0 or "
                           f"more)")
    return data


def _report(cab: Cabinet, visit, catalog, planogram):
    from cabinet.restock import count_stock, weights_of
    after = weights_of(visit.get("after"))
    if after is None:
        raise CabinetError(f"restock visit {visit['id']}: no settled weights after restocking "
                           f"yet; close the door with `cabinet run` running (it records them) "
                           f"or give them with `cabinet restock count --weights FILE`")
    t = cab.config.thresholds
    return count_stock(after, planogram, catalog, expected=visit["expected"],
                       before=weights_of(visit.get("before")), vision=visit.get("vision"),
                       vision_before=visit.get("vision_before"),
                       noise_g=t.load_cell_noise_g, min_confidence=t.reconcile_min_confidence)


def render_report(report) -> str:
    head = ("slot", "sku", "expected", "before", "counted", "confidence", "flags")
    rows = [(r.slot, r.sku, str(r.expected), "" if r.counted_before is None
             else str(r.counted_before), str(r.counted), f"{r.confidence:.3f}",
             ",".join(r.flags)) for r in report.slots]
    return _table(head, rows)


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                     for r in [head] + rows)


def _restock_cmd(args, cab: Cabinet, out: TextIO) -> int:
    import datetime as dt

    catalog, planogram, inventory, visits = _restock_parts(cab)
    now = dt.datetime.now(dt.timezone.utc)
    if args.action == "start":
        before = _weights_file(args.weights)   # checked before anything is written
        vision_before = _vision_file(args.vision)
        if visits.open_visit() is not None:
            visit = visits.open_visit()
            raise CabinetError(f"restock start: visit {visit['id']} by {visit['operator']} is "
                               f"still open; count and accept it first")
        expected = {k: len(v) for k, v in inventory.slots().items()}
        _fire(cab, "start_restock", operator=args.operator)
        try:
            visit = visits.start(args.operator, expected, now, before=before,
                                 vision_before=vision_before)
        except BaseException:
            _fire(cab, "end_restock", operator=args.operator, done=False)
            raise
        if args.json:
            print(json.dumps({"visit": visit["id"], "operator": args.operator}), file=out)
        else:
            print(f"restock visit {visit['id']} started by {args.operator}: the cabinet is in "
                  f"restock; `cabinet restock count` after the door is closed", file=out)
        return 0
    visit = visits.open_visit()
    if visit is None:
        raise CabinetError("restock: no open visit; start one with `cabinet restock start`")
    if args.action == "count":
        after = _weights_file(args.weights)
        vision = _vision_file(args.vision)
        _report(cab, dict(visit, **({"after": {k: {"grams": w.grams, "stable": w.stable}
                                                for k, w in after.items()}} if after else {}),
                          **({"vision": vision} if vision is not None else {})),
                catalog, planogram)   # checked before anything is recorded
        if after is not None:
            visit = visits.record("after", after)
        if vision is not None:
            visit = visits.record_vision(vision)
        report = _report(cab, visit, catalog, planogram)
        print(json.dumps(dict(report.to_dict(), visit=visit["id"])) if args.json
              else render_report(report), file=out)
        return 0
    report = _report(cab, visit, catalog, planogram)
    flagged = report.flagged()
    if flagged and not args.force:
        raise CabinetError("restock accept refused: " + "; ".join(
            f"slot {r.slot} {'/'.join(r.flags)} (counted {r.counted}, confidence "
            f"{r.confidence:.2f})" for r in flagged)
            + "; check those slots and count again, or accept with --force")
    shrinkage = {r.slot: r.shrinkage for r in report.slots if r.shrinkage}   # sure ones only
    if not _restock_ended(cab, visit["id"]):   # an accept cut short ended it already
        _fire(cab, "end_restock", operator=visit["operator"], done=True, visit=visit["id"],
              shrinkage=shrinkage)
    inventory.restock(report.counts(), ref=visit["id"], shrinkage=shrinkage)
    visits.accept(report, now)
    if args.json:
        print(json.dumps({"visit": visit["id"], "counts": report.counts(),
                          "shrinkage": shrinkage}), file=out)
    else:
        lost = ", ".join(f"{k}: {v}" for k, v in shrinkage.items()) or "none"
        print(f"restock visit {visit['id']} accepted: the counted stock is in force; "
              f"shrinkage found: {lost}", file=out)
    return 0


def _inventory_cmd(args, cab: Cabinet, out: TextIO) -> int:
    from cabinet.inventory import Inventory
    from cabinet.planogram_ops import Operations
    _, planogram = Operations(cab.store).in_force()
    rows = Inventory(cab.db(), planogram).report()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]), file=out)
        return 0
    head = ("slot", "sku", "on hand", "par", "capacity", "low", "sold", "restocked")
    print(_table(head, [(r.slot, r.sku, str(r.on_hand), str(r.par), str(r.capacity),
                         "LOW" if r.low else "", str(r.sold), str(r.restocked))
                        for r in rows]), file=out)
    last = rows[0].last_restock if rows else None
    print(f"sold and restocked since the last restock "
          f"({last.isoformat() if last else 'none recorded'})", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
