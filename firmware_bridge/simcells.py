"""The simulated board's load cells: true load in, raw ADC counts out, in batches.

Each sample reads the true load (``load_fn(shelf)``, grams), adds a decaying wobble after a
change (the shelf bounces for ``settle_s``, so the host sees "dynamic" then "stable") and
gaussian noise, and converts to 24-bit counts: ``zero_counts + grams * counts_per_gram``,
clamped at the ADC rails. Every ``batch_samples`` samples ``sample()`` returns one
``WeightBatch`` per shelf; a cell that is not ready sends an empty batch flagged NOT_READY and
a ``FaultReport`` when it stops and starts answering. The cell faults (not ready, saturated,
stuck, spiking) come from the simulator's ``FaultSet``.
"""
from __future__ import annotations

import math
import random
from typing import Callable

from . import protocol as P
from .simfaults import FaultSet


class SimCells:
    def __init__(self, shelves: int, load_fn: Callable[[int], float], rng: random.Random, *,
                 counts_per_gram: float, zero_counts: tuple[int, ...], noise_g: float,
                 settle_s: float, batch_samples: int) -> None:
        self.shelves = shelves
        self.load_fn = load_fn
        self.rng = rng
        self.counts_per_gram = counts_per_gram
        self.zero_counts = zero_counts
        self.noise_g = noise_g
        self.settle_s = settle_s
        self.batch_samples = batch_samples
        self.last_counts = [0] * shelves
        self._true = [0.0] * shelves
        self._wobble = [(0.0, 0.0)] * shelves          # (amplitude g, start time) per shelf
        self._ready = [True] * shelves
        self._batches: list[list[int]] = [[] for _ in range(shelves)]
        self._n = 0

    def reset(self) -> None:
        """At boot: the ADCs start over, the shelves keep their load."""
        self._true = [float(self.load_fn(s)) for s in range(self.shelves)]
        self._wobble = [(0.0, 0.0)] * self.shelves
        self._ready = [True] * self.shelves
        self._batches = [[] for _ in range(self.shelves)]
        self._n = 0

    def sample(self, now: float, faults: FaultSet, uptime_ms: int) -> list[P.Message]:
        """Take one sample of every shelf; return the events to send (maybe none)."""
        out: list[P.Message] = []
        for s in range(self.shelves):
            if self._targets(faults, "cell_not_ready", s):
                if self._ready[s]:
                    self._ready[s] = False
                    out.append(P.FaultReport(code=1, shelf=s, detail=f"shelf {s}: HX711 timeout"))
                self._batches[s].clear()
                continue
            if not self._ready[s]:
                self._ready[s] = True
                out.append(P.FaultReport(code=2, shelf=s, detail=f"shelf {s}: HX711 ready"))
            self._batches[s].append(self._counts(s, now, faults))
        self._n += 1
        if self._n >= self.batch_samples:
            self._n = 0
            for s in range(self.shelves):
                if self._ready[s]:
                    out.append(P.WeightBatch(shelf=s, uptime_ms=uptime_ms,
                                             counts=tuple(self._batches[s])))
                else:
                    out.append(P.WeightBatch(shelf=s, status=P.CELL_NOT_READY,
                                             uptime_ms=uptime_ms))
                self._batches[s] = []
        return out

    @staticmethod
    def _targets(faults: FaultSet, name: str, shelf: int) -> bool:
        return faults.active(name) and int(faults.param(name, "shelf", 0)) == shelf

    def _counts(self, s: int, now: float, faults: FaultSet) -> int:
        if self._targets(faults, "cell_stuck", s):
            return self.last_counts[s]
        if self._targets(faults, "cell_saturated", s):
            return P.ADC_MAX
        grams = float(self.load_fn(s))
        if abs(grams - self._true[s]) > 0.5:
            amp, t0 = self._wobble[s]
            residual = self._wobble_at(amp, t0, now)
            self._wobble[s] = (0.3 * (grams - self._true[s]) + residual, now)
        self._true[s] = grams
        grams += self._wobble_at(*self._wobble[s], now) + self.rng.gauss(0, self.noise_g)
        if (self._targets(faults, "cell_spike", s)
                and self.rng.random() < float(faults.param("cell_spike", "rate", 0.2))):
            grams += self.rng.choice((-1, 1)) * 5000.0
        counts = int(self.zero_counts[s] + grams * self.counts_per_gram)
        counts = max(P.ADC_MIN, min(P.ADC_MAX, counts))
        self.last_counts[s] = counts
        return counts

    def _wobble_at(self, amp: float, t0: float, now: float) -> float:
        dt = now - t0
        if amp == 0.0 or dt >= self.settle_s:
            return 0.0
        return amp * math.exp(-4 * dt / self.settle_s) * math.cos(2 * math.pi * 5 * dt)
