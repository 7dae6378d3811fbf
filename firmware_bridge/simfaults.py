"""The faults the simulated MCU can inject, and the byte mangling they do.

Each fault has a name, a primary parameter (what ``--fault NAME=VALUE`` sets) and a default.
A fault with a ``count`` (lose_command, lose_ack, lose_event, late_reply) disarms itself after
that many uses; the others last until ``clear``. Randomness comes from the simulator's seeded
generator, so a run with the same seed mangles the same bytes.
"""
from __future__ import annotations

import random
import threading

# name: (primary parameter, default, what it does)
FAULTS: dict[str, tuple[str, object, str]] = {
    "split": ("on", 1, "write every frame one byte at a time"),
    "garbage": ("rate", 0.3, "random bytes before a share of frames"),
    "bad_crc": ("rate", 1.0, "corrupt the CRC of a share of frames"),
    "bitflip": ("rate", 0.01, "flip one bit in a share of sent bytes"),
    "drop_bytes": ("rate", 0.01, "drop a share of sent bytes"),
    "noise": ("rate", 0.01, "corrupt or drop a share of bytes in both directions"),
    "oversize": ("on", 1, "send one frame longer than the maximum"),
    "lose_command": ("count", 1, "ignore the next N commands (host retransmits)"),
    "lose_ack": ("count", 1, "run the next N commands but lose their replies"),
    "lose_event": ("count", 1, "do not send the next N events (host sees a gap, replays)"),
    "late_reply": ("delay_s", 0.3, "hold the next reply back this long (arrives after a retry)"),
    "silent": ("on", 1, "send nothing and ignore the host (a hung MCU)"),
    "reboot": ("reason", "watchdog", "reboot now: new boot id, event numbers restart"),
    "version_mismatch": ("version", 0x0200, "report another protocol version in identify"),
    "port_vanish": ("duration_s", 5.0, "close the pty and come back on a new one later"),
    "busy": ("on", 1, "hold the tty locked (flock) as another program would"),
    "flood": ("count", 1000, "send this many weight events at once"),
    "debug_text": ("on", 1, "print debug text between frames"),
    "cell_not_ready": ("shelf", 0, "the shelf's ADC stops answering"),
    "cell_saturated": ("shelf", 0, "the shelf's ADC reads its rail"),
    "cell_stuck": ("shelf", 0, "the shelf's ADC repeats one value"),
    "cell_spike": ("shelf", 0, "the shelf's ADC spikes (rate=share of samples)"),
    "forced_door": ("on", 1, "force the door open while locked"),
    "no_door_open": ("on", 1, "nothing: unlocks are simply not followed by a door opening"),
    "uncommanded_unlock": ("cause", "unknown", "the lock releases with no Unlock: cause "
                           "manual_key, power_glitch or unknown (duration_s: how long; channel: a "
                           "compartment's lock 1.., 0 the main door)"),
}
COUNTED = {"lose_command", "lose_ack", "lose_event", "late_reply"}
RELEASE_CAUSES = ("manual_key", "power_glitch", "unknown")   # protocol.RELEASE_CAUSES' names


def check_params(name: str, params: dict[str, object]) -> None:
    """Refuse parameters a fault cannot act on, naming the fault and what it takes."""
    if name == "uncommanded_unlock":
        cause = params.get("cause", "unknown")
        if cause not in RELEASE_CAUSES:
            raise ValueError(f"fault uncommanded_unlock: cause {cause!r} is not one of "
                             f"{', '.join(RELEASE_CAUSES)}")


def parse_fault(text: str) -> tuple[str, dict[str, object]]:
    """``NAME``, ``NAME=VALUE`` (the primary parameter) or ``NAME=k:v,k:v``."""
    name, _, rest = text.partition("=")
    name = name.strip().replace("-", "_")
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
    primary = FAULTS[name][0]
    params: dict[str, object] = {}
    if rest:
        items = rest.split(",") if ":" in rest else [f"{primary}:{rest}"]
        for item in items:
            key, _, value = item.partition(":")
            params[key.strip()] = _number(value.strip())
    check_params(name, params)
    return name, params


def _number(value: str) -> object:
    for conv in (int, float):
        try:
            return conv(value, 0) if conv is int else conv(value)
        except ValueError:
            pass
    return value


class FaultSet:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, object]] = {}

    def inject(self, name: str, **params: object) -> None:
        if name not in FAULTS:
            raise ValueError(f"SimMCU: unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        check_params(name, params)
        with self._lock:
            if name in COUNTED:
                params.setdefault("count", 1)
            self._active[name] = dict(params)

    def clear(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._active.clear()
            else:
                self._active.pop(name, None)

    def active(self, name: str) -> bool:
        return name in self._active

    def names(self) -> list[str]:
        return sorted(self._active)

    def param(self, name: str, key: str, default: object) -> object:
        return self._active.get(name, {}).get(key, default)

    def take(self, name: str) -> bool:
        """True when the fault applies to this use; counted faults disarm when spent."""
        with self._lock:
            p = self._active.get(name)
            if p is None:
                return False
            n = int(p.get("count", 1))
            if n <= 1:
                del self._active[name]
            else:
                p["count"] = n - 1
            return True

    def _rate(self, name: str) -> float:
        p = self._active.get(name)
        return 0.0 if p is None else float(p.get("rate", FAULTS[name][1]))

    def mangle_tx(self, raw: bytes) -> bytes:
        if not self._active:
            return raw
        rng = self._rng
        out = bytearray(raw)
        if rng.random() < self._rate("bad_crc") and len(out) > 3:
            out[-2] ^= rng.choice((0x01, 0x10, 0x80)) if out[-2] not in (0x01, 0x10, 0x80) else 0x02
        flip, drop = self._rate("bitflip"), self._rate("drop_bytes")
        if flip or drop:
            out = self._per_byte(out, flip, drop)
        out = self.mangle_rx(bytes(out))
        if rng.random() < self._rate("garbage"):
            out = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))) + out
        return bytes(out)

    def mangle_rx(self, data: bytes) -> bytes:
        noise = self._rate("noise")
        return bytes(self._per_byte(bytearray(data), noise / 2, noise / 2)) if noise else data

    def _per_byte(self, buf: bytearray, flip: float, drop: float) -> bytearray:
        rng = self._rng
        out = bytearray()
        for b in buf:
            r = rng.random()
            if r < drop:
                continue
            if r < drop + flip:
                b ^= 1 << rng.randrange(8)
            out.append(b)
        return out
