"""``cabinet sim mcu``: run the simulated MCU on its own, for a technician or a demo.

The pty path is the first line of stdout (flushed at once), so a script can do
``PORT=$(cabinet sim mcu | head -1)``; a summary follows. Faults from ``--fault`` are injected
after ``--fault-delay`` seconds. SIGUSR1 reboots the MCU, SIGUSR2 makes the port vanish for
5 s; SIGINT/SIGTERM stop it with exit code 0.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from .simfaults import FAULTS, parse_fault
from .simulator import SimMCU


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cabinet sim mcu",
                                description="Run the simulated cabinet MCU on a pseudo-terminal.")
    p.add_argument("--shelves", type=int, default=3, help="weight shelves (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serial-number", default="SIM-0001", help="board serial it identifies as")
    p.add_argument("--fault", action="append", default=[], metavar="NAME[=PARAM]",
                   help="inject a fault (repeatable): " + ", ".join(sorted(FAULTS)))
    p.add_argument("--fault-delay", type=float, default=0.0, metavar="S",
                   help="seconds after start before the faults are injected")
    p.add_argument("--load", action="append", default=[], metavar="SHELF=GRAMS",
                   help="initial load on a shelf (repeatable)")
    p.add_argument("--max-unlock-ms", type=int, default=10000)
    p.add_argument("--host-timeout-s", type=float, default=3.0,
                   help="relock when the host is silent this long")
    p.add_argument("--noise-g", type=float, default=0.3)
    p.add_argument("--settle-s", type=float, default=0.4)
    p.add_argument("--sample-hz", type=int, default=25)
    p.add_argument("--temperature", type=float, default=4.0, help="fridge temperature, deg C")
    p.add_argument("--no-temperature", action="store_true", help="a dry-goods cabinet")
    p.add_argument("--registry-dir", default=None,
                   help="where the board serial -> pty path file is published")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mcu"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    try:
        faults = [parse_fault(f) for f in args.fault]
        loads = []
        for item in args.load:
            shelf, _, grams = item.partition("=")
            loads.append((int(shelf), float(grams)))
        sim = SimMCU(args.shelves, seed=args.seed, board_serial=args.serial_number,
                     max_unlock_ms=args.max_unlock_ms, host_timeout_s=args.host_timeout_s,
                     noise_g=args.noise_g, settle_s=args.settle_s, sample_hz=args.sample_hz,
                     temperature_c=args.temperature, has_temperature=not args.no_temperature,
                     registry_dir=args.registry_dir)
        for shelf, grams in loads:
            if not 0 <= shelf < args.shelves:
                raise ValueError(f"--load {shelf}=...: no shelf {shelf} (0..{args.shelves - 1})")
            sim.set_load(shelf, grams)
    except ValueError as e:
        print(f"cabinet sim mcu: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    path = sim.start()
    print(path, flush=True)
    print(f"simulated MCU {args.serial_number}: {args.shelves} shelves, "
          f"max unlock {args.max_unlock_ms} ms, faults: "
          f"{', '.join(n for n, _ in faults) or 'none'} (Ctrl-C to stop)", flush=True)
    handlers = {signal.SIGINT: lambda *_: stop.set(), signal.SIGTERM: lambda *_: stop.set(),
                signal.SIGUSR1: lambda *_: sim.inject("reboot"),
                signal.SIGUSR2: lambda *_: sim.inject("port_vanish", duration_s=5.0)}
    for sig, h in handlers.items():
        signal.signal(sig, h)
    try:
        if faults and not stop.wait(args.fault_delay):
            for name, params in faults:
                sim.inject(name, **params)
        while not stop.wait(0.5):
            if sim.path != path:
                path = sim.path
                print(f"port moved: {path}", flush=True)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
