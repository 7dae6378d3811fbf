"""`cabinet`: the operator's and developer's command line.

    cabinet demo [--json] [--workdir DIR] [--seed N]   run the simulated cabinet's scenarios
                 [--serve [--port P]]                  ... with the kiosk served on 127.0.0.1
    cabinet run [--config FILE]                        the cabinet's controller, forever
    cabinet recover [--config FILE] [--workdir DIR]    finish sessions a crash left open
    cabinet sim mcu [...]                              a simulated MCU on a pty (path on line 1)
    cabinet reconcile BUNDLE [--json]                  re-run reconcile offline on a bundle
    cabinet accounts enroll NAME PHOTO... [--db URL]   enrol a customer's face
    cabinet accounts list [--db URL]
    cabinet accounts set-pin ID [--db URL]             the customer's PIN (second factor)
    cabinet accounts app-token ID [--db URL]           the phone app's token for QR entry
    cabinet config validate FILE                       check a configuration file
    cabinet bench link [--json]                        serial link benchmark
    cabinet bench session [--rounds N] [--json]        time to unlock and to receipt
    cabinet bench faces [--data DIR] [--json]          false accepts, second factor, match time
    cabinet bench vision [--photos DIR] [--json]       product recognition: top-1, new SKUs, time
    cabinet bench accuracy [--tier T] [--sessions N]   basket accuracy per tier (docs/benchmarks.md)
    cabinet bench crash [--kills N] [--json]           SIGKILL the controller; nothing lost
    cabinet vision train|enroll ...                    train the product recogniser, enrol a SKU
    cabinet planogram|catalog validate|diff|apply|rollback ...   operator's file changes
    cabinet restock start|count|accept, cabinet inventory        restock visits, stock per slot
    cabinet operators add NAME [--password-file F] | list        who may log into the console
    cabinet fleet serve|send|keygen ...                fleet back office (cabinet/fleet/serve.py)
    cabinet bench fleet [--cabinets N] [--json]        fleet messages/s, lag, lost, duplicated
    cabinet report sales|stock, cabinet receipt SESSION, cabinet accounts verify-age ID
                                                       (cabinet/report_cli.py)

Global options (`-v`) come before the command: `cabinet -v sim mcu --shelves 2`. `sim mcu`,
`bench link`, `bench session`, `bench faces`, `bench vision` and `vision` own their flags:
everything after their name goes to them.

Errors print one line naming the place, never a traceback; the exit code follows the error's
type (`EXIT_CODES`, the most specific class first): 1 for what a person fixes here (a bad file,
a photo without a face, a refused payment or command), 2 for something that is not there or not
answering (serial port, MCU, payment gateway), 130 for Ctrl-C. Any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = ROOT / "var" / "cabinet.sqlite"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the simulated cabinet with scripted customers")
    demo.add_argument("--json", action="store_true", help="one JSON object per session")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="where the demo's database and bundles go (default var/demo/<time>)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--config", type=Path, default=ROOT / "fixtures" / "cabinet.yaml",
                      help="configuration naming the catalog, planogram, accounts and "
                           "scenarios (default fixtures/cabinet.yaml)")
    demo.add_argument("--serve", action="store_true",
                      help="serve the kiosk (/kiosk/) and console on 127.0.0.1 while the "
                           "customers shop")
    demo.add_argument("--port", type=int, default=0,
                      help="with --serve: the port (default 0, a free one, printed)")
    demo.add_argument("--hold", type=float, default=3.0,
                      help="with --serve: seconds each receipt stays on the kiosk")
    demo.add_argument("--recover", action="store_true",
                      help="finish the sessions an interrupted demo left in --workdir first "
                           "(as `cabinet recover --workdir DIR`)")

    run = sub.add_parser("run", help="run the cabinet (real or simulated parts) until stopped")
    run.add_argument("--config", type=Path, default=ROOT / "fixtures" / "cabinet.yaml",
                     help="the cabinet's configuration (default: the simulated cabinet of "
                          "fixtures/cabinet.yaml)")

    sub.add_parser("recover", help="finish the sessions a crash left open, drain the payment "
                   "outbox, relock (cabinet/recover_cli.py)", add_help=False)

    sim = sub.add_parser("sim", help="simulated hardware")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    sim_sub.add_parser("mcu", help="a simulated MCU on a pty", add_help=False)

    rec = sub.add_parser("reconcile", help="re-run reconcile on a session bundle")
    rec.add_argument("bundle", type=Path)
    rec.add_argument("--json", action="store_true")
    rec.add_argument("--model", type=Path, default=None,
                     help="model folder for a bundle that names a recogniser (default models/)")

    acc = sub.add_parser("accounts", help="customer accounts")
    acc_sub = acc.add_subparsers(dest="accounts_command", required=True)
    enrol = acc_sub.add_parser("enroll", help="enrol a customer from face photos")
    enrol.add_argument("name")
    enrol.add_argument("photos", nargs="+", type=Path)
    enrol.add_argument("--token", default="tok_visa_ok", help="payment method token")
    enrol.add_argument("--currency", default="EUR")
    enrol.add_argument("--db", default=str(DEFAULT_DB), help="database file or URL")
    lst = acc_sub.add_parser("list", help="list accounts")
    lst.add_argument("--db", default=str(DEFAULT_DB))
    lst.add_argument("--json", action="store_true")
    era = acc_sub.add_parser("erase", help="remove an account's face templates and payment "
                             "token (its sessions and ledger stay)")
    era.add_argument("account_id", type=int)
    era.add_argument("--db", default=str(DEFAULT_DB))
    acc_sub.add_parser("verify-age", help="record an operator's ID check (report_cli.py)",
                       add_help=False)
    sp = acc_sub.add_parser("set-pin", help="set the customer's PIN, the kiosk's second "
                            "factor (asked twice; only its scrypt hash is kept)")
    sp.add_argument("account_id", type=int)
    sp.add_argument("--db", default=str(DEFAULT_DB))
    sp.add_argument("--stdin", action="store_true", help="read the PIN from stdin (scripts)")
    at = acc_sub.add_parser("app-token", help="issue the phone app's token for QR entry "
                            "(printed once; only its hash is kept; a new one replaces the old)")
    at.add_argument("account_id", type=int)
    at.add_argument("--db", default=str(DEFAULT_DB))
    kg = acc_sub.add_parser("keygen", help="write a new key file for templates and tokens")
    kg.add_argument("file", type=Path)

    cfg = sub.add_parser("config", help="configuration files")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    val = cfg_sub.add_parser("validate", help="check a configuration file")
    val.add_argument("file", type=Path)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_sub.add_parser("link", help="serial link benchmark", add_help=False)
    bench_sub.add_parser("session", help="face to unlock, door closed to charge",
                         add_help=False)
    bench_sub.add_parser("faces", help="face identification: trials, second factor, timing",
                         add_help=False)
    bench_sub.add_parser("vision", help="product recognition: top-1, new SKUs, time per crop",
                         add_help=False)
    bench_sub.add_parser("accuracy", help="basket accuracy per tier on synthesised bundles",
                         add_help=False)
    bench_sub.add_parser("fleet", help="fleet back office: messages/s into PostgreSQL, lag, "
                         "lost, duplicated", add_help=False)
    bench_sub.add_parser("crash", help="SIGKILL the controller at random moments: nothing "
                         "lost, nothing charged twice", add_help=False)
    sub.add_parser("vision", help="product recogniser: train, enroll (cabinet/vision_cli.py)",
                   add_help=False)
    for name in ("planogram", "catalog", "restock", "inventory"):   # cabinet/ops_cli.py
        sub.add_parser(name, help=f"operator: {name} (docs/operators.md)", add_help=False)
    for name in ("report", "receipt"):   # cabinet/report_cli.py
        sub.add_parser(name, help=f"operator: {name} (cabinet/report_cli.py)", add_help=False)
    sub.add_parser("operators", help="console operators: add, list (cabinet/console/cli.py)",
                   add_help=False)
    sub.add_parser("fleet", help="fleet back office: serve, send, keygen (cabinet/fleet/serve.py)",
                   add_help=False)
    return p


def _demo(args) -> int:
    from cabinet import demo
    workdir = args.workdir or ROOT / "var" / "demo" / dt.datetime.now(
        dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return demo.run(workdir, as_json=args.json, seed=args.seed, config=args.config,
                    serve=args.serve, port=args.port, hold_s=args.hold, recover=args.recover)


def _reconcile(args) -> int:
    from cabinet.bundle import load_bundle, load_recognizer
    from cabinet.reconcile import reconcile
    bundle = load_bundle(args.bundle)
    # the bundle was read with a recognizer (its gallery copied in): so is its replay
    result = reconcile(bundle, recognizer=load_recognizer(bundle, args.model))
    if args.json:
        print(result.to_json())
    else:
        basket = ", ".join(f"{q} x {s}" for s, q in sorted(result.basket.items()) if q) or "nothing"
        print(f"basket: {basket}\nconfidence: {result.confidence:.4f}")
        if result.flags:
            print(f"flags: {', '.join(result.flags)}")
    return 0


def _open_db(url: str):
    from sqlalchemy.exc import SQLAlchemyError

    from billing.db import init_db, make_engine, session_factory
    from cabinet.errors import CabinetError
    if "://" not in url and url == str(DEFAULT_DB):
        DEFAULT_DB.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = make_engine(url)
        init_db(engine)
    except SQLAlchemyError as e:
        raise CabinetError(f"database {url}: {type(e.__cause__ or e).__name__}: "
                           f"{str(e.__cause__ or e).splitlines()[0]} (is it a cabinet "
                           f"database file, in a folder that exists?)") from None
    return session_factory(engine)


def _accounts(args) -> int:
    from cabinet import accounts
    if args.accounts_command == "keygen":
        from billing.crypto import write_key_file
        print(f"wrote a new key to {write_key_file(args.file)} (mode 0600; keep it out of "
              f"the database's backups)")
        return 0
    db = _open_db(args.db)
    if args.accounts_command == "erase":
        done = accounts.erase(db, args.account_id)
        print(f"erased account {done.account_id}: {done.templates} face template(s), "
              f"payment token {'removed' if done.token else 'none'}; sessions and ledger kept")
        if not done.wiped:
            print("warning: another process holds the database open; its old pages leave the "
                  "file at the next checkpoint (stop the cabinet and run erase again to be sure)")
        return 0
    if args.accounts_command == "set-pin":
        from billing.pin import set_pin
        from cabinet.errors import CabinetError
        if args.stdin:
            pin = sys.stdin.readline().strip()
        else:
            import getpass
            pin = getpass.getpass(f"PIN for account {args.account_id}: ")
            if getpass.getpass("again: ") != pin:
                raise CabinetError("set-pin: the two PINs differ; nothing changed")
        set_pin(db, args.account_id, pin)
        print(f"PIN set for account {args.account_id}")
        return 0
    if args.accounts_command == "app-token":
        from cabinet.qr import AppTokens
        token = AppTokens(db).issue(args.account_id)
        print(f"app token for account {args.account_id} (shown once; the cabinet keeps only "
              f"its hash):\n{token}")
        return 0
    if args.accounts_command == "enroll":
        account = accounts.enroll_offline(db, args.name, args.photos, payment_token=args.token,
                                          currency=args.currency)
        print(f"enrolled account {account.id} '{account.name}' from {len(args.photos)} photo(s)")
        return 0
    rows = accounts.list_accounts(db)
    for row in rows:
        print(json.dumps(row) if args.json else
              f"{row['id']:>5}  {row['name']:<24} {row['status']:<8} {row['templates']} face(s)")
    return 0


EXIT_OK, EXIT_ERROR, EXIT_CONNECTION, EXIT_INTERRUPTED = 0, 1, 2, 130

# (module, exception class, exit code), the most specific class first; `exit_code_for` takes the
# first class the error is an instance of. Classes are looked up in sys.modules: an exception
# exists only once its module is imported, so classifying one costs no import (vision.faces
# alone takes a second to import). tests/cabinet/test_cli.py checks every row resolves.
EXIT_CODES: tuple[tuple[str, str, int], ...] = (
    ("firmware_bridge.errors", "PortNotFound", EXIT_CONNECTION),
    ("firmware_bridge.errors", "PortBusy", EXIT_CONNECTION),
    ("firmware_bridge.errors", "LinkDown", EXIT_CONNECTION),
    ("firmware_bridge.errors", "ProtocolVersionMismatch", EXIT_CONNECTION),
    ("firmware_bridge.errors", "LinkError", EXIT_ERROR),          # e.g. CommandRefused
    ("billing.gateway", "GatewayUnavailable", EXIT_CONNECTION),
    ("billing.gateway", "GatewayError", EXIT_ERROR),              # declined, conflict, refused
    ("cabinet.app", "KeyFileError", EXIT_CONNECTION),             # encryption_key_file not there
    ("cabinet.fleet.serve", "BrokerUnavailable", EXIT_CONNECTION),   # fleet: MQTT broker away
    ("cabinet.fleet.store", "FleetDbUnavailable", EXIT_CONNECTION),  # fleet: PostgreSQL away
    ("cabinet.errors", "CabinetError", EXIT_ERROR),               # files, bundles, configuration
    ("vision.faces", "FaceError", EXIT_ERROR),
    ("vision.cameras", "CameraError", EXIT_ERROR),
    ("billing.db", "DatabaseUrlError", EXIT_ERROR),
    ("billing.crypto", "SecretError", EXIT_ERROR),                # key file missing, wrong key
    ("billing.errors", "BillingError", EXIT_ERROR),
    ("billing.money", "MoneyError", EXIT_ERROR),
)


def exit_code_for(error: BaseException) -> int | None:
    """The exit code for an error a person can act on, or None for a bug (keep the traceback)."""
    for module_name, class_name, code in EXIT_CODES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(error, cls):
            return code
    return None


def _run(args, rest: list[str]) -> int:
    # Sub-tools own their flags: they get the rest of the command line untouched.
    if args.command == "sim":
        from firmware_bridge import sim_cli
        return sim_cli.main(rest)
    if args.command == "vision":
        from cabinet import vision_cli
        return vision_cli.main(rest)
    if args.command == "recover":
        from cabinet import recover_cli
        return recover_cli.main(rest)
    if args.command in ("planogram", "catalog", "restock", "inventory"):
        from cabinet import ops_cli
        return ops_cli.main([args.command, *rest])
    if args.command in ("report", "receipt") or (args.command == "accounts" and
                                                args.accounts_command == "verify-age"):
        from cabinet import report_cli
        return report_cli.main([args.command if args.command != "accounts" else "verify-age",
                                *rest])
    if args.command == "fleet":
        from cabinet.fleet import serve as fleet_serve
        return fleet_serve.main(rest)
    if args.command == "operators":
        from cabinet.console import cli as console_cli
        return console_cli.main(rest)
    if args.command == "bench":
        if args.bench_command == "link":
            from firmware_bridge import bench
            return bench.main(rest)
        if args.bench_command == "faces":
            from cabinet import bench_faces
            return bench_faces.main(rest)
        if args.bench_command == "vision":
            from cabinet import vision_cli
            return vision_cli.bench_vision(rest)
        if args.bench_command == "accuracy":
            from cabinet import bench_accuracy
            return bench_accuracy.main(rest)
        if args.bench_command == "fleet":
            from cabinet.fleet import bench as fleet_bench
            return fleet_bench.main(rest)
        if args.bench_command == "crash":
            from cabinet import bench_crash
            return bench_crash.main(rest)
        from cabinet import bench as session_bench
        return session_bench.main(rest)
    if rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        return _demo(args)
    if args.command == "run":
        from cabinet import runner
        return runner.main(args.config)
    if args.command == "reconcile":
        return _reconcile(args)
    if args.command == "accounts":
        return _accounts(args)
    from cabinet.config import validate_main
    return validate_main(args.file)


def interrupted(e: BaseException) -> bool:
    """Whether Ctrl-C is what `e` came from. A KeyboardInterrupt that lands inside a database
    transaction comes back as the driver's next error (SQLAlchemy's PendingRollbackError, then
    our CabinetError naming the database), with the interrupt further down the chain."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        if isinstance(x, KeyboardInterrupt):
            return True
        seen.add(id(x))
        todo += [x.__cause__, x.__context__]
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = _parser().parse_known_args(argv)
    from cabinet import logs
    logs.setup(verbose=args.verbose)
    try:
        return _run(args, rest)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        if interrupted(e):
            return EXIT_INTERRUPTED
        code = exit_code_for(e)
        if code is None:
            raise
        print(f"cabinet: {e}", file=sys.stderr)  # one line, no traceback
        return code


if __name__ == "__main__":
    sys.exit(main())
