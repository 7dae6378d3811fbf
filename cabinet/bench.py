"""`cabinet bench session`: time to unlock and time to receipt on the simulated cabinet.

Runs the demo's scripted customers for several rounds on one simulated cabinet (restocked
between rounds) through every real part, and reports, per BENCHMARKS.md section 2:

- face to unlock: from the face frame reaching the controller to the unlock acknowledged by
  the MCU (identification, standing, hold over HTTP, before-snapshot with every shelf camera);
- door closed to charge: from the door-closed event to the capture answered, minus the
  load-cell settle wait (reported on its own, since the simulator's settle time is a setting);
- settle: door closed to the after-snapshot taken.

Prints a table and writes JSON; figures go to docs/benchmarks.md. Sessions that did not end as
their scenario expected are counted, so a fast wrong answer cannot pass for a good one.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from cabinet.demo import DEFAULT_CONFIG, SimCabinet, as_expected
from firmware_bridge.bench import machine_facts, percentile


def run(rounds: int, config: Path, seed: int = 0) -> dict:
    unlock_ms, receipt_ms, settle_ms = [], [], []
    sessions = wrong = 0
    with tempfile.TemporaryDirectory(prefix="cabinet-bench-") as tmp:
        with SimCabinet(Path(tmp), config, seed=seed) as cab:
            levels = cab.planogram.initial_stock()

            async def main() -> None:
                nonlocal sessions, wrong
                for _ in range(rounds):
                    cab.world.restock(levels)
                    cab.inventory.restock(levels)
                    # the operator's restock is long over when the first customer comes
                    await asyncio.to_thread(cab.board.wait_stable, None, 5.0)
                    for scenario in cab.scenarios:
                        report, _truth = await cab.run_scenario(scenario)
                        sessions += 1
                        if not as_expected(report, scenario):
                            wrong += 1
                        if report is None:
                            continue
                        t = report.timings_ms
                        if "unlocked" in t:
                            unlock_ms.append(t["unlocked"])
                        if "settled" in t and "door_closed" in t and "charge_sent" in t:
                            settle_ms.append(t["settled"] - t["door_closed"])
                            receipt_ms.append(t["charge_sent"] - t["settled"])
            asyncio.run(main())
            shelves = len(cab.planogram.shelves)
            cameras = len(cab.planogram.cameras)

    def stats(values: list[float]) -> dict:
        return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 1),
                "p95_ms": round(percentile(values, 0.95), 1),
                "max_ms": round(max(values), 1) if values else None}

    return {
        "benchmark": "session", "rounds": rounds, "sessions": sessions,
        "sessions_not_as_expected": wrong, "shelves": shelves, "shelf_cameras": cameras,
        "face_to_unlock": stats(unlock_ms),
        "door_closed_to_charge_excluding_settle": stats(receipt_ms),
        "settle": stats(settle_ms),
        "machine": machine_facts(),
    }


def render(result: dict) -> str:
    rows = [("face to unlock", result["face_to_unlock"]),
            ("door closed to charge (excl. settle)",
             result["door_closed_to_charge_excluding_settle"]),
            ("settle (simulator setting + filter)", result["settle"])]
    out = [f"{result['sessions']} sessions ({result['rounds']} rounds of the demo scenarios), "
           f"{result['shelf_cameras']} shelf cameras, {result['machine']['nproc']} cores, "
           f"{result['machine']['cpu']}",
           f"{'measure':<40}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for name, s in rows:
        out.append(f"{name:<40}{s['n']:>5}{s['p50_ms']:>10}{s['p95_ms']:>10}{s['max_ms']:>10}")
    out.append(f"sessions not as their scenario expected: {result['sessions_not_as_expected']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cabinet bench session", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="times through the demo scenarios")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--out", type=Path, default=Path("bench-session.json"),
                   help="where to write the JSON (default bench-session.json)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    result = run(args.rounds, args.config)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result) if args.json else render(result))
    return 0 if result["sessions_not_as_expected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
