"""`cabinet bench accuracy`: basket accuracy per tier (../shared/design/BENCHMARKS.md section 1).

Each session is written by cabinet.sim_bundles (another program than the controller, with its
own noise model and images drawn from photos the reader did not learn from) as an ordinary
session bundle, then read back and reconciled through the real path (`load_bundle` +
`reconcile`), exactly as `cabinet reconcile BUNDLE` does. Per tier one JSON object:

    tier, sessions, exact (charged basket == truth), precision and recall (items charged that
    were taken / items taken that were charged), overcharge (sessions charged for anything not
    taken), undercharge (sessions charged less than taken), review (sessions flagged), flagged
    (of the sessions that must be flagged, T6/T7: the share that were; null elsewhere), p50_ms
    and p95_ms (load + reconcile per session)

    cabinet bench accuracy [--tier T] [--sessions N] [--seed S] [--photos DIR] [--model PATH]
                           [--json] [--out FILE] [--keep DIR] [--misses FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cabinet.sim_bundles import TIER_NAMES, TIERS, SessionSynth

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SESSIONS = 200


def score(truth: dict[str, int], charged: dict[str, int]) -> tuple[int, int, int]:
    """(items charged that were taken, items charged, items taken)."""
    hit = sum(min(n, truth.get(k, 0)) for k, n in charged.items())
    return hit, sum(charged.values()), sum(truth.values())


def run_tier(synth: SessionSynth, tier: str, sessions: int, recognizer: Any = None,
             on_session=None) -> dict[str, Any]:
    from cabinet.bundle import load_bundle
    from cabinet.reconcile import reconcile

    exact = over = under = review = must = flagged = 0
    hit = charged = taken = 0
    times: list[float] = []
    for i in range(sessions):
        s = synth.session(tier, i)
        t0 = time.perf_counter()
        r = reconcile(load_bundle(s.path), recognizer=recognizer)
        times.append((time.perf_counter() - t0) * 1000)
        h, c, t = score(s.basket, r.basket)
        hit, charged, taken = hit + h, charged + c, taken + t
        exact += r.basket == s.basket
        over += any(n > s.basket.get(k, 0) for k, n in r.basket.items())
        under += any(n > r.basket.get(k, 0) for k, n in s.basket.items())
        review += r.needs_review
        must += s.must_flag
        flagged += s.must_flag and r.needs_review
        if on_session is not None:
            on_session(s, r)
    times.sort()
    n = max(1, sessions)
    return {"tier": tier, "name": TIER_NAMES[tier], "sessions": sessions,
            "exact": round(exact / n, 4),
            "precision": round(hit / charged, 4) if charged else None,
            "recall": round(hit / taken, 4) if taken else None,
            "overcharge": round(over / n, 4), "undercharge": round(under / n, 4),
            "review": round(review / n, 4),
            "flagged": round(flagged / must, 4) if must else None,
            "p50_ms": round(_pct(times, 50), 1), "p95_ms": round(_pct(times, 95), 1)}


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="cabinet bench accuracy",
                                description="basket accuracy per tier on synthesised bundles")
    p.add_argument("--tier", choices=TIERS, action="append",
                   help="a tier to run (repeatable; default: all)")
    p.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                   help=f"sessions per tier (default {DEFAULT_SESSIONS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photos", type=Path, default=None,
                   help="a folder laid out like products/grocery (default: the shared data's "
                        "val_*/iconic photos)")
    p.add_argument("--model", type=Path, default=None,
                   help="a model folder: bundles then name it and reconcile reads identities")
    p.add_argument("--catalog", type=Path, default=ROOT / "fixtures" / "catalog.yaml")
    p.add_argument("--planogram", type=Path, default=ROOT / "fixtures" / "planogram.yaml")
    p.add_argument("--no-images", action="store_true", help="weights only")
    p.add_argument("--world", choices=("first", "second"), default="first",
                   help="who writes the bundles: first, cabinet/sim_bundles.py (default), or "
                        "second, cabinet/sim_bundles_second.py (other noise laws and customers)")
    p.add_argument("--json", action="store_true", help="one JSON object per tier")
    p.add_argument("--out", type=Path, help="also write the results as a JSON list here")
    p.add_argument("--keep", type=Path, help="keep the bundles in this folder")
    p.add_argument("--misses", type=Path, help="write every session not charged exactly, or "
                   "flagged, as one JSON line (actions, truth, charged, best guess, flags)")
    args = p.parse_args(argv)
    if args.sessions < 1:
        p.error("--sessions must be at least 1")
    from vision.data import data_root
    recognizer = None
    if args.model is not None:
        from vision.recognizer import Recognizer, RecognizerError
        try:
            recognizer = Recognizer.load(args.model)
        except RecognizerError as e:
            print(f"cabinet bench accuracy: {e}", file=sys.stderr)
            return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="cabinet-accuracy-") as tmp:
        root = args.keep or Path(tmp)
        try:
            if args.world == "second":
                from cabinet.sim_bundles_second import SecondSynth as world
            else:
                world = SessionSynth
            synth = world(root, args.catalog, args.planogram, seed=args.seed,
                          photos=args.photos, data_root=data_root(),
                          images=not args.no_images, recognizer=recognizer)
        except (FileNotFoundError, ValueError) as e:
            print(f"cabinet bench accuracy: {e}", file=sys.stderr)
            return 2
        misses = args.misses.open("w") if args.misses else None
        for tier in args.tier or TIERS:
            res = run_tier(synth, tier, args.sessions, recognizer,
                           on_session=None if misses is None else
                           lambda s, r: _note_miss(misses, s, r))
            results.append(res)
            if args.json:
                print(json.dumps(res), flush=True)
            else:
                print(f"{res['tier']} {res['name']:<12} n={res['sessions']:<4} "
                      f"exact {res['exact']:.3f}  over {res['overcharge']:.3f}  "
                      f"under {res['undercharge']:.3f}  review {res['review']:.3f}  "
                      f"flagged {'-' if res['flagged'] is None else format(res['flagged'], '.3f')}"
                      f"  p50 {res['p50_ms']:.0f} ms  p95 {res['p95_ms']:.0f} ms", flush=True)
        if misses is not None:
            misses.close()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _note_miss(out, session, result) -> None:
    """One JSON line for a session charged other than its truth, or flagged: what the
    customer did and what reconcile decided, for the by-cause count in docs/vision.md."""
    if result.basket == session.basket and not result.needs_review:
        return
    out.write(json.dumps({"session": session.path.name, "tier": session.tier,
                          "actions": list(session.actions), "truth": session.basket,
                          "must_flag": session.must_flag, "charged": result.basket,
                          "best_guess": result.best_guess, "flags": list(result.flags),
                          "strangers": result.evidence.get("strangers", {}),
                          "confidence": result.confidence,
                          "shelves": {k: {f: v.get(f) for f in ("delta_g", "explained_by", "z",
                                                                 "count_change", "unlike_cells")}
                                      for k, v in result.evidence["shelves"].items()}}) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
