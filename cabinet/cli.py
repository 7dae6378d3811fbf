"""`cabinet`: the operator's and developer's command line.

    cabinet demo [--json] [--workdir DIR] [--seed N]   run the simulated cabinet's scenarios
    cabinet sim mcu [...]                              a simulated MCU on a pty (path on line 1)
    cabinet reconcile BUNDLE [--json]                  re-run reconcile offline on a bundle
    cabinet accounts enroll NAME PHOTO... [--db URL]   enrol a customer's face
    cabinet accounts list [--db URL]
    cabinet config validate FILE                       check a configuration file
    cabinet bench link [--json]                        serial link benchmark
    cabinet bench session [--rounds N] [--json]        time to unlock and to receipt

Errors that a person can fix (a bad file, a photo without a face, a missing port) print one
line naming the place and exit 1 (2 for a connection error); they never print a traceback.
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

    sim = sub.add_parser("sim", help="simulated hardware")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    sim_sub.add_parser("mcu", help="a simulated MCU on a pty", add_help=False)

    rec = sub.add_parser("reconcile", help="re-run reconcile on a session bundle")
    rec.add_argument("bundle", type=Path)
    rec.add_argument("--json", action="store_true")

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

    cfg = sub.add_parser("config", help="configuration files")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    val = cfg_sub.add_parser("validate", help="check a configuration file")
    val.add_argument("file", type=Path)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_sub.add_parser("link", help="serial link benchmark", add_help=False)
    bench_sub.add_parser("session", help="face to unlock, door closed to charge",
                         add_help=False)
    return p


def _demo(args) -> int:
    from cabinet import demo
    workdir = args.workdir or ROOT / "var" / "demo" / dt.datetime.now(
        dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return demo.run(workdir, as_json=args.json, seed=args.seed, config=args.config)


def _reconcile(args) -> int:
    from cabinet.bundle import load_bundle
    from cabinet.reconcile import reconcile
    result = reconcile(load_bundle(args.bundle))
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
    db = _open_db(args.db)
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


def _known_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for mod, name in (("cabinet.errors", "CabinetError"), ("cabinet.config", "ConfigError"), ("vision.faces", "FaceError"),
                      ("firmware_bridge.device", "LinkError"), ("billing.db", "DatabaseUrlError"),
                      ("billing.errors", "BillingError"), ("billing.gateway", "GatewayError"),
                      ("billing.money", "MoneyError")):
        try:
            module = __import__(mod, fromlist=[name])
            found.append(getattr(module, name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-tools own their flags: hand them the rest of the command line untouched.
    if argv[:2] == ["sim", "mcu"]:
        from firmware_bridge import sim_cli
        return sim_cli.main(argv[2:])
    if argv[:2] == ["bench", "link"]:
        from firmware_bridge import bench
        return bench.main(argv[2:])
    if argv[:2] == ["bench", "session"]:
        from cabinet import bench as session_bench
        return session_bench.main(argv[2:])
    args = _parser().parse_args(argv)
    from cabinet import logs
    logs.setup(verbose=args.verbose)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "reconcile":
            return _reconcile(args)
        if args.command == "accounts":
            return _accounts(args)
        if args.command == "config":
            from cabinet.config import validate_main
            return validate_main(args.file)
    except KeyboardInterrupt:
        return 130
    except _known_errors() as e:  # one line, no traceback
        print(f"cabinet: {e}", file=sys.stderr)
        code = 2 if type(e).__name__ in ("PortNotFound", "LinkDown") else 1
        return code
    return 1


if __name__ == "__main__":
    sys.exit(main())
