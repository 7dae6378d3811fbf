"""`cabinet operators add NAME [--password-file FILE] [--config FILE]` and `cabinet operators
list`: who may log into the console. The password is asked twice on the terminal (never echoed,
never an argument, so it stays out of shell history and `ps`), or read from the first line of
a file (for provisioning scripts); only its argon2id hash is stored."""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Callable, TextIO

from cabinet.errors import CabinetError, FormatErrors


def _parser() -> argparse.ArgumentParser:
    from cabinet.ops_cli import DEFAULT_CONFIG
    p = argparse.ArgumentParser(prog="cabinet operators", description="console operators")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add an operator who may log into the console")
    add.add_argument("name")
    add.add_argument("--password-file", type=Path,
                     help="read the password from the first line of this file")
    lst = sub.add_parser("list", help="the operators' names")
    for q in (add, lst):
        q.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help="cabinet configuration (default fixtures/cabinet.yaml)")
    return p


def _prompt(name: str, ask: Callable[[str], str]) -> str:
    first = ask(f"password for {name}: ")
    if ask("again: ") != first:
        raise CabinetError(f"operators add {name}: the two passwords differ; nothing changed")
    return first


def main(argv: list[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, ask: Callable[[str], str] = getpass.getpass) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        from cabinet.config import load_config
        from cabinet.console import tables  # noqa: F401  (its tables are in the metadata)
        from cabinet.console.auth import Operators, check_name
        from cabinet.ops_cli import open_db
        cfg = load_config(args.config)
        if args.action == "list":
            print("\n".join(Operators(open_db(cfg)).names()), file=out)
            return 0
        check_name(args.name)
        if args.password_file is not None:
            try:
                lines = args.password_file.read_text("utf-8").splitlines()
            except OSError as e:
                raise CabinetError(f"{args.password_file}: cannot read it ({e.strerror})") \
                    from None
            password = lines[0] if lines else ""
        else:
            password = _prompt(args.name, ask)
        Operators(open_db(cfg)).add(args.name, password)
    except FormatErrors as e:
        for line in e.errors:
            print(line, file=err)
        return 1
    except CabinetError as e:
        print(f"cabinet: {e}", file=err)
        return 1
    print(f"operator {args.name} added: they can log into the console", file=out)
    return 0
