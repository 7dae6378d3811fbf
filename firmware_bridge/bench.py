"""``cabinet bench link``: the serial link measured over a real pty against the simulated MCU.

Five parts, each on a fresh simulator and Board:
1. round trip: ``--pings`` Ping commands on a clean line, p50/p99 in ms;
2. events per second: a flood of ``--flood`` weight events, timed until all were delivered;
3. noisy line: 1% of bytes corrupted or dropped in both directions (``noise`` fault) while
   the host sends ``--commands`` commands (unlock/lock/ping/state) and the MCU sends events
   (door changes, weight batches and floods) until at least ``--events`` were sent; then
   every command is checked against the MCU's execution log (lost = acknowledged but never
   run or never acknowledged; duplicated = run twice) and every event number of the MCU's
   log against what the Board delivered;
4. recovery after an MCU reset (``--resets`` times): reboot to the first command answered;
5. recovery after the port vanishes for ``--vanish-s`` seconds and returns under a new name.
A table goes to stdout; JSON (with "lost" and "duplicated" at the top) to ``--out``, or to
stdout with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import events as E
from . import protocol as P
from .device import Board
from .errors import LinkError
from .ports import RegistryPortFinder
from .simulator import SimMCU


class _CountingBoard(Board):
    """A Board that also records every MCU event number it delivered (for lost/duplicated)."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)
        self.delivered: list[tuple[int, int]] = []

    def link_event(self, msg: P.Message, now: float) -> None:
        self.delivered.append((self.identity.boot_id, msg.seq))
        super().link_event(msg, now)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); 0.0 for no samples. Shared by the benches."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def machine_facts() -> dict:
    """Cores, CPU model and Python version, for a benchmark's JSON."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(),
            "python": platform.python_version()}


class _Rig:
    def __init__(self, registry: RegistryPortFinder, seed: int, **board_kw: object) -> None:
        self.sim = SimMCU(3, seed=seed, registry_dir=registry.directory, settle_s=0.2)
        self.sim.start()
        self.events: list[object] = []
        kw = dict(timeout_s=1.0, heartbeat_s=0.2, mcu_heartbeat_s=0.5, missed_heartbeats=4,
                  host_timeout_s=3.0, reconnect_max_s=0.5, finder=registry,
                  on_event=self.events.append)
        kw.update(board_kw)
        self.board = _CountingBoard(self.sim.path, **kw)
        self.board.open()

    def close(self) -> None:
        self.board.close()
        self.sim.stop()


def bench_rtt(reg: RegistryPortFinder, pings: int) -> dict:
    rig = _Rig(reg, 1)
    try:
        link = rig.board._link
        rtts = []
        for _ in range(pings):
            t = time.perf_counter()
            link.request(P.Ping())
            rtts.append((time.perf_counter() - t) * 1000)
        return {"pings": pings, "p50_ms": round(percentile(rtts, 0.5), 3),
                "p99_ms": round(percentile(rtts, 0.99), 3), "max_ms": round(max(rtts), 3)}
    finally:
        rig.close()


def bench_events(reg: RegistryPortFinder, flood: int) -> dict:
    rig = _Rig(reg, 2)
    try:
        start_events = rig.board.counters().events
        t0 = time.perf_counter()
        threading.Thread(target=rig.sim.inject, args=("flood",), kwargs={"count": flood}).start()
        deadline = time.monotonic() + 60
        while rig.board.counters().events - start_events < flood and time.monotonic() < deadline:
            time.sleep(0.002)
        dt = time.perf_counter() - t0
        got = rig.board.counters().events - start_events
        return {"flood": flood, "delivered": got, "seconds": round(dt, 3),
                "events_per_s": round(got / dt)}
    finally:
        rig.close()


def bench_noisy(reg: RegistryPortFinder, commands: int, min_events: int, rate: float) -> dict:
    rig = _Rig(reg, 3, timeout_s=10.0)
    sim, board, link = rig.sim, rig.board, rig.board._link
    acked: list[tuple[int, int]] = []
    failed = 0
    try:
        sim.inject("noise", rate=rate)
        t0 = time.perf_counter()
        plan = [P.Unlock(pulse_ms=60), P.GetState(), P.Lock(), P.Ping()]
        for i in range(commands):
            msg = plan[i % len(plan)]
            try:
                reply = link.request(msg)
                acked.append((board.identity.boot_id, reply.seq))
            except LinkError:
                failed += 1
            if isinstance(msg, P.Unlock) and i % 8 == 0:
                if sim.open_door():
                    sim.close_door()
            if i % 200 == 199 and sim.events_sent < min_events:
                sim.inject("flood", count=300)
        while sim.events_sent < min_events:
            sim.inject("flood", count=min(500, min_events - sim.events_sent))
            time.sleep(0.05)
        # let the last gaps heal: until the host has every event the MCU numbered so far
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            want = {(sim.boot_id, s) for s in range(1, sim._event_seq + 1)}
            if want <= set(board.delivered):
                break
            time.sleep(0.05)
        sim.clear("noise")
        elapsed = time.perf_counter() - t0
        ran = sim.executed
        cmd_lost = failed + sum(1 for k in acked if ran.get(k, 0) == 0)
        cmd_dup = sum(ran.get(k, 0) - 1 for k in acked if ran.get(k, 0) > 1)
        boot = sim.boot_id
        sent = set(range(1, sim._event_seq + 1))
        got = [s for b, s in board.delivered if b == boot]
        ev_lost = len(sent - set(got))
        ev_dup = len(got) - len(set(got))
        c = board.counters()
        return {"noise_rate": rate, "seconds": round(elapsed, 1),
                "commands": {"sent": commands, "acked": len(acked), "lost": cmd_lost,
                             "duplicated": cmd_dup, "retransmits": c.retransmits,
                             "dropped_by_mcu_as_duplicate": sim.duplicates_dropped},
                "events": {"sent": len(sent), "delivered": len(got), "lost": ev_lost,
                           "duplicated": ev_dup, "replays": c.replays, "gaps": c.gaps},
                "bad_bytes": c.bad_bytes, "link_losses": c.link_losses,
                "unlocks_executed": sim.unlocks_executed}
    finally:
        rig.close()


def _wait(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)
    return False


def _first_answer(board: Board, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            board.state()
            return True
        except LinkError:
            time.sleep(0.005)
    return False


def bench_recovery(reg: RegistryPortFinder, resets: int, vanish_s: float) -> dict:
    rig = _Rig(reg, 4)
    try:
        reset_times = []
        for _ in range(resets):
            n = sum(isinstance(e, E.McuReset) for e in rig.events)
            t0 = time.perf_counter()
            rig.sim.inject("reboot")
            _wait(lambda: sum(isinstance(e, E.McuReset) for e in rig.events) > n, 10)
            _first_answer(rig.board, 10)
            reset_times.append(time.perf_counter() - t0)
        old = rig.sim.path
        t0 = time.perf_counter()
        rig.sim.inject("port_vanish", duration_s=vanish_s)
        _wait(lambda: rig.sim.path != old and rig.sim._vanish_until == 0.0, vanish_s + 5)
        back = time.perf_counter()
        _wait(lambda: any(isinstance(e, E.LinkRestored) for e in rig.events), 15)
        _first_answer(rig.board, 10)
        done = time.perf_counter()
        return {"mcu_reset": {"runs": resets, "median_s": round(statistics.median(reset_times), 3),
                              "max_s": round(max(reset_times), 3)},
                "port_vanish": {"vanished_s": vanish_s, "total_s": round(done - t0, 3),
                                "after_return_s": round(done - back, 3),
                                "old_port": old, "new_port": rig.sim.path}}
    finally:
        rig.close()


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="cabinet-bench-") as tmp:
        reg = RegistryPortFinder(tmp)
        rtt = bench_rtt(reg, args.pings)
        ev = bench_events(reg, args.flood)
        noisy = bench_noisy(reg, args.commands, args.events, args.noise)
        rec = bench_recovery(reg, args.resets, args.vanish_s)
    lost = noisy["commands"]["lost"] + noisy["events"]["lost"]
    dup = noisy["commands"]["duplicated"] + noisy["events"]["duplicated"]
    return {"lost": lost, "duplicated": dup, "rtt": rtt, "events_per_s": ev["events_per_s"],
            "flood": ev, "noisy": noisy, "recovery": rec, "machine": machine_facts(),
            "command": "cabinet bench link " + " ".join(args.argv)}


def table(r: dict) -> str:
    n = r["noisy"]
    rows = [
        ("round trip p50 / p99 (clean pty)", f"{r['rtt']['p50_ms']:.2f} / {r['rtt']['p99_ms']:.2f} ms"),
        ("events per second (flood)", f"{r['events_per_s']:,}"),
        (f"noisy line ({n['noise_rate']:.0%} bytes bad)",
         f"{n['commands']['sent']:,} commands, {n['events']['sent']:,} events, {n['seconds']} s"),
        ("  commands lost / duplicated", f"{n['commands']['lost']} / {n['commands']['duplicated']}"
         f" (retransmits {n['commands']['retransmits']:,}, MCU dropped "
         f"{n['commands']['dropped_by_mcu_as_duplicate']:,} duplicates)"),
        ("  events lost / duplicated", f"{n['events']['lost']} / {n['events']['duplicated']}"
         f" (gaps {n['events']['gaps']:,}, replays {n['events']['replays']:,})"),
        ("recovery after MCU reset (median / max)",
         f"{r['recovery']['mcu_reset']['median_s']:.3f} / {r['recovery']['mcu_reset']['max_s']:.3f} s"),
        (f"recovery after port vanished {r['recovery']['port_vanish']['vanished_s']:g} s",
         f"{r['recovery']['port_vanish']['total_s']:.3f} s total, "
         f"{r['recovery']['port_vanish']['after_return_s']:.3f} s after it came back"),
        ("lost / duplicated (target 0 / 0)", f"{r['lost']} / {r['duplicated']}"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["link"]:
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="cabinet bench link", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--pings", type=int, default=2000)
    p.add_argument("--flood", type=int, default=20000)
    p.add_argument("--commands", type=int, default=5000)
    p.add_argument("--events", type=int, default=10000)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--resets", type=int, default=5)
    p.add_argument("--vanish-s", type=float, default=5.0)
    args = p.parse_args(argv)
    args.argv = argv
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else table(result), flush=True)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
