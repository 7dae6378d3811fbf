"""`cabinet bench session`: time to unlock and time to receipt on the simulated cabinet.

Runs the demo's scripted customers for several rounds on one simulated cabinet (restocked
between rounds) through every real part, and reports, per BENCHMARKS.md section 2:

- face to unlock: from the face frame reaching the controller to the unlock acknowledged by
  the MCU (identification, standing, hold over HTTP, before-snapshot with every shelf camera),
  and its parts: identify (the face camera's frames detected, encoded, decided; the shelves
  are read meanwhile), admission and hold, the before-snapshot still being stored once the
  hold answered (it is stored while the gateway works), the unlock; `--gateway-ms 150` has the
  sandbox answer every hold 150 ms late, the gateway BENCHMARKS.md's target assumes;
- door closed to charge: from the door-closed event reaching the controller to the capture
  answered, everything included (the lock command and the door re-check too): the load cells' settle wait, vision on every shelf camera, reconcile, the charge;
- its parts: settle (door closed to every shelf settled: the simulated cells keep their damped
  swing, the board's settle test decides when it is over), vision (door closed to the after
  images captured, stored and read against the before images and calibration frames; it runs
  while the cells settle; `capture` is its first part, the frames and their PNGs stored, and
  `camera` the frames alone: the simulated cameras drawing the shelves from photos, where a
  real camera hands over a frame it already has), reconcile (from the later of the two to the basket decided: the
  bundle read back, the weights search) and charge (the capture over HTTP and the receipt).

The shelf cameras are calibrated first (empty and full frames captured through them, as
`cabinet vision calibrate` does), since a cabinet in service is; `--no-calibration` leaves it
out; the product recognizer is the configuration's (default the committed models/), or
`--model DIR|none` (docs/vision.md).

Prints a table and writes JSON; figures go to docs/benchmarks.md. Sessions that did not end as
their scenario expected are counted, so a fast wrong answer cannot pass for a good one.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from cabinet.config import load_config
from cabinet.demo import DEFAULT_CONFIG, SimCabinet, as_expected
from firmware_bridge.bench import machine_facts, percentile


PARTS = ("door_closed_to_charge", "settle", "vision", "capture", "camera", "reconcile",
         "charge")


UNLOCK_PARTS = ("identify", "hold", "snapshot", "unlock")


def unlock_parts_ms(t: dict[str, float]) -> dict[str, float] | None:
    """A session's face to unlock in parts (ms): identify (the face camera's frames detected,
    encoded and decided), hold (the account's admission and the hold over HTTP), snapshot (the
    bundle's context and the before-snapshot stored), unlock (the MCU's acknowledgement)."""
    if not all(k in t for k in ("identified", "held", "before_snapshot", "unlocked")):
        return None
    return {"identify": t["identified"], "hold": t["held"] - t["identified"],
            "snapshot": t["before_snapshot"] - t["held"],
            "unlock": t["unlocked"] - t["before_snapshot"]}


def parts_ms(t: dict[str, float]) -> dict[str, float] | None:
    """A session's door-closed-to-charge and its parts (ms) from its timing marks; None when it
    did not get that far."""
    if not all(k in t for k in ("door_closed", "settled", "reconciled", "charge_sent")):
        return None
    closed = t.get("door_shut", t["door_closed"])     # the DoorClosed event's arrival
    looked = t.get("looked", t["settled"])
    return {"door_closed_to_charge": t["charge_sent"] - closed,
            "settle": t["settled"] - closed, "vision": looked - closed,
            "capture": t.get("captured", looked) - closed,
            "camera": t.get("frames", t.get("captured", looked)) - closed,
            "reconcile": t["reconciled"] - max(t["settled"], looked),
            "charge": t["charge_sent"] - t["reconciled"]}


def calibrate(cab, folder: Path):
    """Empty and full frames of every shelf camera, captured through the cameras."""
    from cabinet.vision_cli import calibration_cameras
    from vision.calibration import capture_stage, load_calibration, save_calibration
    for stage in ("empty", "full"):
        cameras = calibration_cameras(cab.config, cab.planogram, cab.catalog, stage)
        save_calibration(folder, stage, capture_stage(cameras))
    return load_calibration(folder)


def explain(report, scenario, round_no: int) -> dict:
    """Why a session ended differently from its scenario: the expected and the charged basket
    and outcome, the flags, reconcile's best guess and, per shelf whose answer was not the
    expected one or that the cameras argued with, the weight and what the cameras saw (from the
    session bundle's result.json). Enough to tell a weight problem from a vision one."""
    out = {"round": round_no, "scenario": scenario.name,
           "expected": dict(sorted(scenario.expect.basket.items())),
           "expected_outcome": scenario.expect.outcome,
           "got": None if report is None else
           {k: v for k, v in sorted(report.basket.items()) if v},
           "outcome": None if report is None else report.outcome,
           "flags": [] if report is None else list(report.flags)}
    if report is None or not report.bundle_dir:
        return out
    out["session"] = report.session_id
    result = Path(report.bundle_dir) / "result.json"
    if not result.is_file():
        return out
    doc = json.loads(result.read_text())
    out["best_guess"] = doc.get("best_guess", {})
    evidence = doc.get("evidence", {})
    slots = evidence.get("slots", {})
    shelves = {}
    for shelf, ev in sorted(evidence.get("shelves", {}).items()):
        seen = ev.get("vision_seen") or {}
        moved = ev.get("explained_by") or {}
        if not moved and not seen and ev.get("z") is not None and abs(ev["z"]) < 3 \
                and not ev.get("count_change"):
            continue        # nothing happened there and nothing says otherwise
        shelves[shelf] = {k: ev.get(k) for k in ("delta_g", "explained_by", "z", "vision_seen",
                                                 "vision_confidence", "count_change", "touched")}
    out["shelves"] = shelves
    out["slots"] = {sid: {k: e.get(k) for k in ("change", "count_before", "count_after",
                                                "skus_after", "foreign_after", "confidence")}
                    for sid, e in sorted(slots.items())
                    if e.get("change", 0) >= 0.008 or e.get("foreign_after")
                    or e.get("count_before") != e.get("count_after")}
    return out


class SlowHolds:
    """The controller's billing, with the sandbox gateway told to answer every hold `delay_s`
    late (its "slow" fault: the work done, then the answer held back), as BENCHMARKS.md's time
    to unlock assumes a gateway that answers in 150 ms. Captures and voids answer as usual."""

    def __init__(self, billing, gateway, delay_s: float) -> None:
        self._billing, self._gateway, self.delay_s = billing, gateway, delay_s

    def place_hold(self, *args, **kwargs):
        self._gateway.fail_next(1, "slow", delay_s=self.delay_s)
        return self._billing.place_hold(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._billing, name)


def run(rounds: int, config: Path, seed: int = 0, *, calibrated: bool = True,
        model: Path | None = None, keep: Path | None = None, gateway_ms: float = 0.0) -> dict:
    """`keep`: a folder for the cabinet's data (session bundles, database) that stays after
    the run, to replay a session with `cabinet reconcile`; default a temporary one.
    `gateway_ms`: every hold's answer held back that long by the sandbox gateway."""
    unlock_ms: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in PARTS + UNLOCK_PARTS}
    sessions = wrong = 0
    mismatches: list[dict] = []
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="cabinet-bench-"))
        else:
            keep.mkdir(parents=True, exist_ok=True)
            if any(keep.iterdir()):
                raise SystemExit(f"cabinet bench session: --keep {keep}: the folder is not "
                                 f"empty; give a new or empty one")
            tmp = str(keep)
        cfg = load_config(config)
        if model is not None:       # else the configuration's (by default the committed models/)
            cfg = cfg.model_copy(update={"recognizer": str(model) if str(model) == "none"
                                         else str(Path(model).resolve())})
        with SimCabinet(Path(tmp), cfg, seed=seed) as cab:
            levels = cab.planogram.initial_stock()
            if calibrated:
                cab.controller.shelf_calibration = calibrate(cab, Path(tmp) / "calibration")
            recognizer = cab.app.recognizer
            if gateway_ms > 0:
                cab.controller.billing = SlowHolds(cab.controller.billing, cab.app.gateway,
                                                   gateway_ms / 1000)

            async def main() -> None:
                nonlocal sessions, wrong
                for round_no in range(1, rounds + 1):
                    cab.world.restock(levels)
                    cab.inventory.restock(levels)
                    # the operator's restock is long over when the first customer comes
                    await asyncio.to_thread(cab.board.wait_stable, None, 5.0)
                    for scenario in cab.scenarios:
                        report, _truth = await cab.run_scenario(scenario)
                        sessions += 1
                        if not as_expected(report, scenario):
                            wrong += 1
                            mismatches.append(explain(report, scenario, round_no))
                        if report is None:
                            continue
                        t = report.timings_ms
                        if "unlocked" in t:
                            unlock_ms.append(t["unlocked"])
                        p = {**(unlock_parts_ms(t) or {}), **(parts_ms(t) or {})}
                        for k, v in p.items():
                            parts[k].append(v)
            asyncio.run(main())
            shelves = len(cab.planogram.shelves)
            cameras = len(cab.planogram.cameras)

    def stats(values: list[float]) -> dict:
        return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 1),
                "p95_ms": round(percentile(values, 0.95), 1),
                "max_ms": round(max(values), 1) if values else None}

    return {
        "benchmark": "session", "rounds": rounds, "sessions": sessions,
        "sessions_not_as_expected": wrong, "not_as_expected": mismatches, "shelves": shelves, "shelf_cameras": cameras,
        "calibrated": calibrated, "gateway_hold_delay_ms": gateway_ms,
        "recognizer": None if recognizer is None else str(recognizer.model_dir),
        "recognizer_version": None if recognizer is None else recognizer.version,
        "face_to_unlock": stats(unlock_ms),
        **{k: stats(v) for k, v in parts.items()},
        "machine": machine_facts(),
        # other programs' load on this machine (1-minute load average) at start and end: on a
        # shared machine the wall times above grow with it
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def render(result: dict) -> str:
    rows = [("face to unlock", result["face_to_unlock"]),
            ("  identify (face camera frames)", result["identify"]),
            ("  admission and hold", result["hold"]),
            ("  before-snapshot stored", result["snapshot"]),
            ("  unlock acknowledged", result["unlock"]),
            ("door closed to charge (all included)", result["door_closed_to_charge"]),
            ("  settle (load cells)", result["settle"]),
            ("  vision (during the settle)", result["vision"]),
            ("    of which capture + store", result["capture"]),
            ("      of which the cameras' frames", result["camera"]),
            ("  reconcile (after both)", result["reconcile"]),
            ("  charge", result["charge"])]
    out = [f"{result['sessions']} sessions ({result['rounds']} rounds of the demo scenarios), "
           f"{result['shelf_cameras']} shelf cameras"
           f"{' calibrated' if result['calibrated'] else ''}"
           f"{', recognizer ' + result['recognizer'] if result['recognizer'] else ''}, "
           f"{'holds answered ' + str(result['gateway_hold_delay_ms']) + ' ms late, ' if result.get('gateway_hold_delay_ms') else ''}"
           f"{result['machine']['nproc']} cores, {result['machine']['cpu']}",
           f"{'measure':<40}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for name, s in rows:
        out.append(f"{name:<40}{s['n']:>5}{s['p50_ms']:>10}{s['p95_ms']:>10}{s['max_ms']:>10}")
    out.append(f"sessions not as their scenario expected: {result['sessions_not_as_expected']}")
    for m in result.get("not_as_expected", []):
        out.append(f"  round {m['round']} {m['scenario']}: expected {m['expected']} "
                   f"{m['expected_outcome']}, got {m['got']} {m['outcome']}"
                   f"{' flags ' + ','.join(m['flags']) if m['flags'] else ''}"
                   f"{' (best guess ' + str(m['best_guess']) + ')' if 'best_guess' in m else ''}")
        for shelf, ev in m.get("shelves", {}).items():
            out.append(f"    shelf {shelf}: {ev['delta_g']} g explained by {ev['explained_by']},"
                       f" z {ev['z']}; cameras saw {ev['vision_seen']} (confidence "
                       f"{ev['vision_confidence']}), count change {ev['count_change']}")
    out.append(f"load average at start and end: {result['load_average']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cabinet bench session", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="times through the demo scenarios")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--no-calibration", action="store_true",
                   help="leave the shelf cameras uncalibrated")
    p.add_argument("--model", type=Path, default=None,
                   help="the product recognizer's model folder, or none (default: the "
                        "configuration's recognizer, which defaults to the committed models/)")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep the cabinet's data (session bundles, database) in DIR, a new or "
                        "empty folder, to replay a session with `cabinet reconcile`")
    p.add_argument("--gateway-ms", type=float, default=0.0, metavar="MS",
                   help="the sandbox gateway answers every hold MS late (BENCHMARKS.md's time "
                        "to unlock assumes 150); default 0, as fast as it is")
    p.add_argument("--out", type=Path, default=Path("bench-session.json"),
                   help="where to write the JSON (default bench-session.json)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if not 0 <= args.gateway_ms <= 10_000:
        p.error("--gateway-ms must be in 0..10000")
    result = run(args.rounds, args.config, calibrated=not args.no_calibration,
                 model=args.model, keep=args.keep, gateway_ms=args.gateway_ms)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result) if args.json else render(result))
    return 0 if result["sessions_not_as_expected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
