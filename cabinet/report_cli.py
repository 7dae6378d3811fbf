"""The operator's reports, receipts and age checks (cabinet/reports.py, billing/receipt.py).

    cabinet report sales [--from DATE] [--to DATE] [--json|--csv] [--config FILE]
    cabinet report stock [--from DATE] [--to DATE] [--json|--csv] [--config FILE]
    cabinet receipt SESSION [--stored] [--config FILE]
    cabinet accounts verify-age ID --by OPERATOR --method id_card [--config FILE]

Dates are UTC days (YYYY-MM-DD), both ends included. Text output writes money with Babel in the
configuration's `tax.locale` (default en); --json gives integer minor units with the currency,
--csv decimal amounts (12.50) with the currency in a column. `receipt` prints the session's
receipt as the database has it now (with refunds and corrections), in that locale; --stored
prints the last text the customer was shown, as it was stored. `verify-age` records the
operator's ID check (who, how, now); a customer can never declare it.

Errors (an unknown session, a bad date, a bad configuration) print one line on stderr and
return 1.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import TextIO

from billing.errors import BillingError
from billing.models import AGE_METHODS
from billing.money import Money
from billing.receipt import money_text
from cabinet.errors import CabinetError, FormatErrors
from cabinet.ops_cli import DEFAULT_CONFIG, Cabinet, _table

SALES_FIELDS = ("day", "rate", "currency", "gross", "net", "tax", "refunds", "refund_tax",
                "sessions", "items")
STOCK_FIELDS = ("slot", "sku", "on_hand", "sold", "restocked", "shrinkage")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD "
                                         f"(e.g. 2026-11-29)") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet", description="reports, receipts, age checks")
    sub = p.add_subparsers(dest="command", required=True)

    def config_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help="cabinet configuration (default fixtures/cabinet.yaml)")

    rep = sub.add_parser("report", help="sales per day and rate, stock per slot")
    kinds = rep.add_subparsers(dest="report", required=True)
    for name in ("sales", "stock"):
        k = kinds.add_parser(name)
        k.add_argument("--from", dest="start", type=_day, default=None, help="first day (UTC)")
        k.add_argument("--to", dest="end", type=_day, default=None, help="last day (UTC)")
        fmt = k.add_mutually_exclusive_group()
        fmt.add_argument("--json", action="store_true")
        fmt.add_argument("--csv", action="store_true")
        config_opt(k)
    r = sub.add_parser("receipt", help="re-print a session's receipt")
    r.add_argument("session")
    r.add_argument("--stored", action="store_true", help="the text as last stored")
    config_opt(r)
    v = sub.add_parser("verify-age", help="record an operator's ID check of an account")
    v.add_argument("account_id", type=int)
    v.add_argument("--by", required=True, help="the operator who checked the ID")
    v.add_argument("--method", required=True, choices=AGE_METHODS)
    config_opt(v)
    return p


def _billing(cab: Cabinet):
    from billing.service import Billing
    from cabinet.planogram_ops import Operations
    from cabinet.tax_config import tax_setup
    catalog, _ = Operations(cab.store).in_force()
    tax = cab.config.tax
    return Billing(cab.db(), None, currency=catalog.currency,
                   tax=tax_setup(tax, catalog, f"{cab.config.source}: tax"),
                   locale=tax.locale if tax else None)


def _locale(cab: Cabinet) -> str:
    return cab.config.tax.locale if cab.config.tax else "en"


def _sales(args, cab: Cabinet, out: TextIO) -> int:
    from cabinet import reports
    rows = reports.sales(cab.db(), args.start, args.end)
    if args.json:
        print(json.dumps({"from": args.start and args.start.isoformat(),
                          "to": args.end and args.end.isoformat(),
                          "rows": [r.to_dict() for r in rows]}), file=out)
        return 0
    if args.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(SALES_FIELDS)
        for r in rows:
            d = r.to_dict()
            w.writerow([d["day"], d["rate"], r.currency] +
                       [Money(d[k], r.currency).decimal_text()
                        for k in ("gross", "net", "tax", "refunds", "refund_tax")] +
                       [r.sessions, r.items])
        out.write(buf.getvalue())
        return 0
    loc = _locale(cab)
    if not rows:
        print("no sales in the period", file=out)
        return 0

    def m(amount: int, cur: str) -> str:
        return money_text(Money(amount, cur), loc)

    print(_table(("day", "rate", "gross", "net", "tax", "refunds", "refund tax", "sessions",
                  "items"),
                 [(r.day.isoformat(), r.rate, m(r.gross, r.currency), m(r.net, r.currency),
                   m(r.tax, r.currency), m(r.refunds, r.currency),
                   m(r.refund_tax, r.currency), str(r.sessions), str(r.items))
                  for r in rows]), file=out)
    cur = rows[0].currency
    for bp, t in sorted(reports.sales_totals(rows).items()):
        print(f"total {reports.rate_text(bp):>6}: gross {m(t['gross'], cur)}, net "
              f"{m(t['net'], cur)}, tax {m(t['tax'], cur)}, refunds {m(t['refunds'], cur)}",
              file=out)
    return 0


def _stock(args, cab: Cabinet, out: TextIO) -> int:
    from cabinet import reports
    from cabinet.planogram_ops import Operations
    _, planogram = Operations(cab.store).in_force()
    rows = reports.stock(cab.db(), planogram, args.start, args.end)
    if args.json:
        print(json.dumps({"from": args.start and args.start.isoformat(),
                          "to": args.end and args.end.isoformat(),
                          "rows": [r.to_dict() for r in rows]}), file=out)
    elif args.csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(STOCK_FIELDS)
        for r in rows:
            w.writerow([getattr(r, k) for k in STOCK_FIELDS])
        out.write(buf.getvalue())
    else:
        print(_table(("slot", "sku", "on hand", "sold", "restocked", "shrinkage"),
                     [(r.slot, r.sku, str(r.on_hand), str(r.sold), str(r.restocked),
                       str(r.shrinkage)) for r in rows]), file=out)
    return 0


def _receipt(args, cab: Cabinet, out: TextIO) -> int:
    from billing.errors import UnknownSession
    billing = _billing(cab)
    try:
        billing.receipt(args.session)
    except UnknownSession:
        raise BillingError(f"receipt: no session {args.session!r} in "
                           f"{cab.config.database_url} (check the id on the customer's "
                           f"receipt, or --config for another cabinet)") from None
    if args.stored:
        texts = billing.stored_receipts(args.session)
        if not texts:
            raise BillingError(f"receipt {args.session}: no receipt stored yet (the session "
                               f"has no outcome); run without --stored to see it as it is")
        out.write(texts[-1])
        return 0
    out.write(billing.receipt(args.session).render_text())
    return 0


def _verify_age(args, cab: Cabinet, out: TextIO) -> int:
    billing = _billing(cab)
    billing.verify_age(args.account_id, by=args.by, method=args.method)
    at, by, method = billing.age_verification(args.account_id)
    print(f"account {args.account_id}: age verified by {by} ({method}) at "
          f"{at.isoformat()}", file=out)
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        cab = Cabinet(args.config)
        if args.command == "report":
            return (_sales if args.report == "sales" else _stock)(args, cab, out)
        if args.command == "receipt":
            return _receipt(args, cab, out)
        return _verify_age(args, cab, out)
    except FormatErrors as e:
        for line in e.errors:
            print(line, file=err)
        return 1
    except (CabinetError, BillingError, ValueError) as e:
        print(f"cabinet: {e}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
