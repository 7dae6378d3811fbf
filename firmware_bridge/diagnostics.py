"""Per-shelf load-cell diagnostics, measured from the raw weight batches on the wire.

``ShelfDiagnostics`` is fed every received frame (it is a Board trace hook: ``feed(direction,
at, raw, message)``) and keeps, per shelf, the raw ADC samples of ``WeightBatch`` events with
the host time they arrived, the not-ready batches, and the cell faults the MCU reported. It
does no filtering of its own: a technician wants to see what the ADC actually sends.
``report(counts_per_gram)`` turns that into one frozen ``ShelfDiagnosis`` per shelf:

- rate: samples per second between the first and the last batch (compare with the rate the
  host configured);
- noise: the standard deviation of successive differences divided by sqrt 2, a noise
  estimate that a slowly drifting or settling load does not inflate; in counts and grams;
- spikes: samples further than 8 sigma (and at least 5 g) from the median of their 5
  neighbours, which the host filter removes but which point at wiring or EMI trouble;
- saturation: samples at the 24-bit rail; stuck: a long run of identical counts;
- errors: not-ready batches plus fault reports for the shelf.

Each diagnosis carries a list of problems; an empty list means the shelf looks healthy.
"""
from __future__ import annotations

import math
import statistics
import threading
from dataclasses import dataclass, field

from . import protocol as P
from .loadcell import NOMINAL_COUNTS_PER_GRAM, STUCK_SAMPLES

NOISY_G = 2.0            # a cell noisier than this (1 sigma) cannot settle within the band
SPIKE_SIGMAS = 8.0
SPIKE_FLOOR_G = 5.0


@dataclass(frozen=True)
class ShelfDiagnosis:
    shelf: int
    samples: int
    rate_hz: float
    expected_hz: float
    not_ready_batches: int
    faults: tuple[str, ...]
    errors: int
    saturated_samples: int
    saturated_pct: float
    spikes: int
    stuck: bool
    mean_counts: float
    noise_counts: float
    noise_g: float
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _ShelfLog:
    samples: list[int] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None
    first_batch: int = 0
    not_ready: int = 0
    faults: list[str] = field(default_factory=list)


class ShelfDiagnostics:
    """Collects raw samples from received frames; thread-safe (fed from the reader thread)."""

    def __init__(self, shelves: int, expected_hz: float) -> None:
        self.shelves = shelves
        self.expected_hz = expected_hz
        self._logs = {s: _ShelfLog() for s in range(shelves)}
        self._lock = threading.Lock()

    def feed(self, direction: str, at: float, raw: bytes, message: P.Message | None) -> None:
        if direction != "rx" or message is None:
            return
        with self._lock:
            if isinstance(message, P.WeightBatch):
                log = self._logs.setdefault(message.shelf, _ShelfLog())
                if message.status != P.CELL_OK:
                    log.not_ready += 1
                    return
                if log.first_at is None:
                    log.first_at, log.first_batch = at, len(message.counts)
                log.last_at = at
                log.samples.extend(message.counts)
            elif isinstance(message, P.FaultReport) and message.code != 2:
                log = self._logs.setdefault(message.shelf, _ShelfLog())
                name = P.FAULT_CODES.get(message.code, f"fault {message.code}")
                log.faults.append(f"{name}: {message.detail}" if message.detail else name)

    def report(self, counts_per_gram: dict[int, float] | None = None) -> list[ShelfDiagnosis]:
        cpg = counts_per_gram or {}
        with self._lock:
            logs = {s: (list(l.samples), l.first_at, l.last_at, l.first_batch, l.not_ready,
                        tuple(l.faults)) for s, l in self._logs.items()}
        return [diagnose(s, *logs[s], abs(cpg.get(s) or NOMINAL_COUNTS_PER_GRAM),
                         self.expected_hz) for s in sorted(logs)]


def diagnose(shelf: int, samples: list[int], first_at: float | None, last_at: float | None,
             first_batch: int, not_ready: int, faults: tuple[str, ...], counts_per_gram: float,
             expected_hz: float) -> ShelfDiagnosis:
    n = len(samples)
    span = (last_at - first_at) if first_at is not None and last_at is not None else 0.0
    # the first batch's samples were taken before first_at; count only those after it
    rate = (n - first_batch) / span if span > 0 else 0.0
    saturated = sum(1 for c in samples if c >= P.ADC_MAX or c <= P.ADC_MIN)
    noise = _noise(samples)
    spikes = _spikes(samples, max(SPIKE_SIGMAS * noise, SPIKE_FLOOR_G * counts_per_gram))
    stuck = _longest_run(samples) >= STUCK_SAMPLES
    problems = []
    if n == 0:
        problems.append("no samples")
    elif expected_hz and rate < 0.8 * expected_hz and span >= 0.5:
        problems.append(f"slow: {rate:.1f} Hz of {expected_hz:g}")
    if not_ready:
        problems.append(f"not ready x{not_ready}")
    if saturated:
        problems.append("saturated")
    if stuck:
        problems.append("stuck")
    if spikes:
        problems.append(f"spikes x{spikes}")
    if noise / counts_per_gram > NOISY_G and not stuck:
        problems.append(f"noisy: {noise / counts_per_gram:.1f} g")
    problems.extend(faults)
    return ShelfDiagnosis(
        shelf=shelf, samples=n, rate_hz=rate, expected_hz=expected_hz,
        not_ready_batches=not_ready, faults=faults, errors=not_ready + len(faults),
        saturated_samples=saturated, saturated_pct=100.0 * saturated / n if n else 0.0,
        spikes=spikes, stuck=stuck, mean_counts=statistics.fmean(samples) if n else 0.0,
        noise_counts=noise, noise_g=noise / counts_per_gram, problems=tuple(problems))


def _noise(samples: list[int]) -> float:
    """Sigma from successive differences, robust to a drifting mean; rail samples left out."""
    clean = [c for c in samples if P.ADC_MIN < c < P.ADC_MAX]
    if len(clean) < 3:
        return 0.0
    diffs = [b - a for a, b in zip(clean, clean[1:])]
    mad = statistics.median(abs(d - statistics.median(diffs)) for d in diffs)
    robust = 1.4826 * mad / math.sqrt(2)
    return robust if robust > 0 else statistics.pstdev(diffs) / math.sqrt(2)


def _spikes(samples: list[int], threshold: float) -> int:
    count = 0
    for i, c in enumerate(samples):
        around = samples[max(0, i - 2):i + 3]
        if len(around) >= 3 and abs(c - statistics.median(around)) > threshold:
            count += 1
    return count


def _longest_run(samples: list[int]) -> int:
    best = run = 0
    prev = None
    for c in samples:
        run = run + 1 if c == prev else 1
        best = max(best, run)
        prev = c
    return best
