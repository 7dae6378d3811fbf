"""Host-side load-cell processing: the MCU sends raw ADC counts, the host owns calibration.

Per shelf, each raw sample goes through a 5-sample median (kills single spikes), then a
trimmed moving average over 8 medians (drops the highest and lowest), giving filtered counts.
grams = (filtered - tare_counts) / counts_per_gram. A reading is *stable* when either test
passes, otherwise it is *dynamic*:

- the fixed window: the filtered value moved less than ``stable_band_g`` over the last
  ``window_s`` (about a second) and the window is full;
- the statistical test, on the last ``settle_samples`` raw samples (0.4 s at 25 Hz): their
  robust scatter (1.4826 x MAD) is within ``stable_band_g / 2`` with at most one sample (a
  spike) further than three times that from their median, their trend
  (the median pairwise slope, Theil-Sen) moves the load by no more than that across the window
  (no creep, no slow swing), and the filtered value agrees with their median as closely (the
  filter's lag has passed). A
  damped swing passes once its amplitude is down to about the noise band, usually long before
  a one-second window of the filtered value is quiet (tests/firmware_bridge/
  test_device_samples.py).

Every raw sample is also kept (bounded: about two windows) so that ``raw_samples(since, until)``
can hand out, in grams, the window a reading rests on: ``ShelfReading.since`` is the time of
its oldest sample (the settle window's for a stable reading, the last ``settle_samples``
otherwise). Tare averages the window the stable reading rests on and refuses saturated,
not-ready or stuck cells; calibrate refuses when the counts barely moved. While the
door has been closed for ``zero_hold_s`` and the shelf is stable, nothing can really change on
it, so slow movement is drift: the tare follows it at most ``zero_rate_g_per_s``.
"""
from __future__ import annotations

import json
import statistics
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from .protocol import ADC_MAX, ADC_MIN

NOMINAL_COUNTS_PER_GRAM = 420.0
STUCK_SAMPLES = 25


class CalibrationError(ValueError):
    """A tare or calibration was refused; the message says which shelf and why."""


@dataclass(frozen=True)
class ShelfReading:
    shelf: int
    grams: float
    stable: bool
    raw_counts: int
    saturated: bool = False
    ready: bool = True
    stuck: bool = False
    at: float = 0.0                     # host monotonic time of the newest sample
    since: float = 0.0                  # ... and of the oldest sample the reading rests on


@dataclass(frozen=True)
class ShelfCalibration:
    tare_counts: float = 0.0
    counts_per_gram: float = NOMINAL_COUNTS_PER_GRAM


@dataclass(frozen=True)
class Calibration:
    """Per-shelf calibration, exported and imported as JSON by the technician CLI."""
    shelves: dict[int, ShelfCalibration]
    board_serial: str = ""

    def for_shelf(self, shelf: int) -> ShelfCalibration:
        return self.shelves.get(shelf, ShelfCalibration())

    def to_json(self) -> str:
        return json.dumps({"board_serial": self.board_serial,
                           "shelves": {str(k): asdict(v) for k, v in sorted(self.shelves.items())}},
                          indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "calibration") -> "Calibration":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{where} (line {e.lineno}): not JSON: {e.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("shelves"), dict):
            raise CalibrationError(f"{where}: expected an object with a 'shelves' object")
        shelves = {}
        for key, value in data["shelves"].items():
            try:
                shelf = int(key)
                cal = ShelfCalibration(float(value["tare_counts"]), float(value["counts_per_gram"]))
            except (ValueError, TypeError, KeyError) as e:
                raise CalibrationError(f"{where}: shelf {key!r}: needs numeric tare_counts and "
                                       f"counts_per_gram ({e})") from None
            if cal.counts_per_gram == 0:
                raise CalibrationError(f"{where}: shelf {key}: counts_per_gram is 0")
            shelves[shelf] = cal
        return cls(shelves, str(data.get("board_serial", "")))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        return cls.from_json(Path(path).read_text(), str(path))


class ShelfFilter:
    """Filter, stability and zero tracking for one shelf. Called from the reader thread;
    readers take snapshots through ``reading()`` (attribute reads of immutable values)."""

    def __init__(self, shelf: int, calibration: ShelfCalibration, *, sample_hz: float = 25.0,
                 window_s: float = 1.0, stable_band_g: float = 2.0, zero_hold_s: float = 3.0,
                 zero_rate_g_per_s: float = 0.2, settle_samples: int = 10) -> None:
        if settle_samples < 6:
            raise ValueError(f"shelf {shelf}: settle_samples = {settle_samples}; the settle test "
                             f"needs at least 6 samples to tell a swing from noise")
        self.shelf = shelf
        self.tare_counts = calibration.tare_counts
        self.counts_per_gram = calibration.counts_per_gram
        self.sample_hz = sample_hz
        self.window_s = window_s
        self.stable_band_g = stable_band_g
        self.zero_hold_s = zero_hold_s
        self.zero_rate_g_per_s = zero_rate_g_per_s
        self._raw: deque[int] = deque(maxlen=5)
        self._medians: deque[int] = deque(maxlen=8)
        self._window: deque[tuple[float, float]] = deque()
        self.settle_samples = settle_samples
        # raw samples, (time, counts), for raw_samples(); read from other threads
        self._raw_c: deque[tuple[float, int]] = deque(
            maxlen=int(2 * window_s * sample_hz) + 2 * settle_samples)
        self._raw_lock = threading.Lock()
        self._fresh = 0                         # samples since the cell was last not ready
        self._same_raw = 0
        self._door_closed_since: float | None = 0.0
        self._zero_ref: float | None = None
        self.samples = 0
        self.spikes = 0
        self.saturated_samples = 0
        self.not_ready_batches = 0
        self._reading = ShelfReading(shelf, 0.0, False, 0, ready=False)
        self.last_stable: ShelfReading | None = None

    # ---- input ---------------------------------------------------------------------------
    def add(self, counts: tuple[int, ...], now: float) -> None:
        dt = 1.0 / self.sample_hz
        n = len(counts)
        for i, c in enumerate(counts):
            self._add_one(c, now - (n - 1 - i) * dt)

    def not_ready(self, now: float) -> None:
        self.not_ready_batches += 1
        self._window.clear()
        self._fresh = 0
        r = self._reading
        self._reading = ShelfReading(self.shelf, r.grams, False, r.raw_counts, r.saturated,
                                     False, r.stuck, now, now)

    def door(self, closed: bool, now: float) -> None:
        self._door_closed_since = now if closed else None
        self._zero_ref = None

    def _add_one(self, c: int, t: float) -> None:
        self.samples += 1
        saturated = c >= ADC_MAX or c <= ADC_MIN
        self.saturated_samples += saturated
        prev = self._raw[-1] if self._raw else None
        self._same_raw = self._same_raw + 1 if c == prev else 0
        self._raw.append(c)
        with self._raw_lock:
            self._raw_c.append((t, c))
        self._fresh += 1
        med = sorted(self._raw)[len(self._raw) // 2]
        if med != c:
            band = self.stable_band_g * abs(self.counts_per_gram) * 10
            self.spikes += abs(c - med) > band
        self._medians.append(med)
        ms = sorted(self._medians)
        trimmed = ms[1:-1] if len(ms) >= 5 else ms
        value = sum(trimmed) / len(trimmed)
        win = self._window
        win.append((t, value))
        while win and win[0][0] < t - self.window_s:
            win.popleft()
        grams = (value - self.tare_counts) / self.counts_per_gram
        stable = self._stable(t)
        since = win[0][0]
        if not stable:
            recent = self._recent()
            since = recent[0][0] if recent else t
            stable = self._settled(recent, grams)
        if stable:
            self._track_zero(value, t)
            grams = (value - self.tare_counts) / self.counts_per_gram
        self._reading = ShelfReading(self.shelf, grams, stable, c, saturated, True,
                                     self._same_raw >= STUCK_SAMPLES, t, since)
        if stable:
            self.last_stable = self._reading

    def _stable(self, t: float) -> bool:
        win = self._window
        if len(win) < 0.8 * self.window_s * self.sample_hz or self._same_raw >= STUCK_SAMPLES:
            return False
        lo = min(v for _, v in win)
        hi = max(v for _, v in win)
        return (hi - lo) <= self.stable_band_g * abs(self.counts_per_gram)

    def _recent(self) -> list[tuple[float, float]]:
        """The last settle_samples raw samples (time, grams) since the cell was last ready."""
        n = min(self.settle_samples, self._fresh)
        tare, cpg = self.tare_counts, self.counts_per_gram
        with self._raw_lock:
            raw = self._raw_c
            return [(raw[i][0], (raw[i][1] - tare) / cpg)
                    for i in range(len(raw) - min(n, len(raw)), len(raw))]

    def _settled(self, recent: list[tuple[float, float]], grams: float) -> bool:
        """The statistical settle test (module doc) on the recent raw samples."""
        if len(recent) < self.settle_samples or self._same_raw >= STUCK_SAMPLES:
            return False
        ys = [g for _, g in recent]
        mid = statistics.median(ys)
        limit = self.stable_band_g / 2
        devs = [abs(y - mid) for y in ys]
        if 1.4826 * statistics.median(devs) > limit or sum(d > 3 * limit for d in devs) > 1:
            return False        # the scatter, or more than one sample far out (a spike is one)
        # the trend across the window, by the median of the pairwise slopes (Theil-Sen: a
        # spike among the samples does not tilt it)
        slopes = [(ys[j] - ys[i]) / (recent[j][0] - recent[i][0])
                  for i in range(len(ys)) for j in range(i + 1, len(ys))
                  if recent[j][0] > recent[i][0]]
        if not slopes:
            # every sample carries one time stamp (events the host read in one burst, one
            # sample each): no trend can be measured, so only the fixed window may settle it
            return False
        if abs(statistics.median(slopes)) * (recent[-1][0] - recent[0][0]) > limit:
            return False
        return abs(grams - mid) <= limit

    def raw_samples(self, since: float, until: float) -> tuple[float, ...]:
        """The raw samples (grams, oldest first) taken from `since` to `until` (host times, as
        in ShelfReading.since/at) that are still kept; safe to call from any thread."""
        tare, cpg = self.tare_counts, self.counts_per_gram
        with self._raw_lock:
            counts = [c for t, c in self._raw_c if since <= t <= until]
        return tuple(round((c - tare) / cpg, 3) for c in counts)

    def _track_zero(self, value: float, t: float) -> None:
        since = self._door_closed_since
        if since is None or t - since < self.zero_hold_s:
            self._zero_ref = None
            return
        if self._zero_ref is None:
            self._zero_ref = value
            return
        limit = self.zero_rate_g_per_s * abs(self.counts_per_gram) / self.sample_hz
        step = max(-limit, min(limit, value - self._zero_ref))
        self.tare_counts += step
        self._zero_ref += step

    # ---- output --------------------------------------------------------------------------
    def reading(self) -> ShelfReading:
        return self._reading

    def window_mean(self) -> float:
        """Counts of the window the current reading rests on: the mean filtered value over the
        fixed window when that is quiet, else the trimmed mean of the raw samples the settle
        test passed on (the filtered values there still carry the filter's lag)."""
        r = self._reading
        if self._stable(r.at) or not r.stable:
            win = list(self._window)
            return sum(v for _, v in win) / len(win) if win else 0.0
        with self._raw_lock:
            counts = sorted(c for t, c in self._raw_c if r.since <= t <= r.at)
        trimmed = counts[1:-1] if len(counts) > 4 else counts
        return sum(trimmed) / len(trimmed)

    def calibration(self) -> ShelfCalibration:
        return ShelfCalibration(self.tare_counts, self.counts_per_gram)

    def _check_usable(self, what: str) -> None:
        r = self._reading
        why = ("the load cell is not ready (no samples from the ADC)" if not r.ready else
               "the load cell is saturated (at the ADC limit)" if r.saturated else
               "the load cell is stuck (identical counts)" if r.stuck else
               "the shelf is not stable; keep it still and retry" if not r.stable else "")
        if why:
            raise CalibrationError(f"Shelf {self.shelf}: {what} refused: {why}")

    def tare(self) -> ShelfCalibration:
        self._check_usable("tare")
        self.tare_counts = self.window_mean()
        self._zero_ref = None
        return self.calibration()

    def calibrate(self, grams: float) -> ShelfCalibration:
        if grams <= 0:
            raise CalibrationError(f"Shelf {self.shelf}: calibrate needs a positive known mass, "
                                   f"got {grams} g")
        self._check_usable("calibrate")
        delta = self.window_mean() - self.tare_counts
        min_delta = 10 * self.stable_band_g * abs(self.counts_per_gram)
        if abs(delta) < min_delta:
            raise CalibrationError(
                f"Shelf {self.shelf}: calibrate refused: the counts moved only {delta:.0f} "
                f"since tare (need {min_delta:.0f}); put the {grams:g} g mass on the shelf, "
                f"or tare the empty shelf first")
        self.counts_per_gram = delta / grams
        self._zero_ref = None
        return self.calibration()
