"""Scores of `make mutation`: killed / mutants per module, from mutmut's results in mutants/.

The scope is here, in one place: the modules where a silent bug costs money or safety, and for
billing/service.py and cabinet/reconcile.py the functions on the path that decides what is
charged. `--patterns` prints the mutant-name globs for `mutmut run`; without it the script
reads mutants/<module>.meta, prints a table and writes JSON (`--out`). A mutant with no test
that reaches it counts as a survivor; a timeout counts as killed (the mutant hung the code).
Exit code 1 when a module is below `--min` (default 85) percent.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# module -> functions in scope (mutmut's mangled names without the x prefix; None = all)
SCOPE: dict[str, list[str] | None] = {
    "billing.money": None,
    "firmware_bridge.protocol": None,
    "cabinet.machine": None,
    "billing.service": ["Billingǁsettle", "Billingǁ_record_basket", "Billingǁ_drive",
                        "Billingǁ_record_capture", "Billingǁ_close", "Billingǁ_ledger",
                        "_claim"],
    "cabinet.reconcile": ["_bounded_vectors", "vision_term", "_shelf_candidates", "_combine",
                          "_posterior", "_noise", "reconcile", "_certain"],
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SURVIVED = {"survived", "no tests"}


def patterns(modules: list[str]) -> list[str]:
    out = []
    for module in modules:
        funcs = SCOPE[module]
        if funcs is None:
            out.append(f"{module}.*")
        else:
            out += [f"{module}.{_mangled(f)}__mutmut_*" for f in funcs]
    return out


def _mangled(function: str) -> str:
    """mutmut's name: x_<function> for a function, xǁ<Class>ǁ<method> for a method."""
    return f"xǁ{function}" if "ǁ" in function else f"x_{function}"


def _function(key: str) -> str:
    name = re.sub(r"__mutmut_\d+$", "", key.split(".")[-1])
    return name[2:] if name.startswith("xǁ") else name.removeprefix("x_")


def score(module: str, root: Path) -> dict:
    from mutmut.stats import status_by_exit_code

    meta = root / (module.replace(".", "/") + ".py.meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    funcs = SCOPE[module]
    rows = {k: status_by_exit_code[c] for k, c in codes.items()
            if funcs is None or _function(k) in funcs}
    checked = {k: s for k, s in rows.items() if s in KILLED | SURVIVED}
    killed = sum(s in KILLED for s in checked.values())
    return {"module": module, "scope": "whole module" if funcs is None else funcs,
            "mutants": len(checked), "killed": killed,
            "not_run": len(rows) - len(checked),
            "score": round(100.0 * killed / len(checked), 1) if checked else None,
            "survivors": sorted(k for k, s in checked.items() if s in SURVIVED)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(SCOPE)}")
    ap.add_argument("--patterns", action="store_true", help="print mutmut run's name globs")
    ap.add_argument("--out", type=Path, help="write the scores as JSON here")
    ap.add_argument("--min", type=float, default=85.0, help="lowest acceptable score, percent")
    ap.add_argument("--mutants", type=Path, default=Path("mutants"))
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if m not in SCOPE]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(SCOPE)}")
    modules = args.modules or list(SCOPE)
    if args.patterns:
        print(" ".join(f"'{p}'" for p in patterns(modules)))
        return 0
    results = [score(m, args.mutants) for m in modules]
    print(f"{'module':28} {'scope':14} {'mutants':>8} {'killed':>7} {'score':>7}")
    for r in results:
        scope = "whole" if r["scope"] == "whole module" else f"{len(r['scope'])} functions"
        pct = "-" if r["score"] is None else f"{r['score']:.1f}%"
        print(f"{r['module']:28} {scope:14} {r['mutants']:8} {r['killed']:7} {pct:>7}")
        for s in r["survivors"]:
            print(f"    survived: {s}")
    if args.out:
        args.out.write_text(json.dumps({"tool": "mutmut", "modules": results}, indent=2,
                                       ensure_ascii=False) + "\n")
    low = [r["module"] for r in results if r["score"] is None or r["score"] < args.min]
    if low:
        print(f"below {args.min:.0f}% (or not run): {', '.join(low)}", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
