"""Ground truth: what each simulated device served, in canonical units, and when it changed.

The servers record every change of every canonical signal they serve, as a client decoding the
device per its manual would see it (after scaling and unit conversion, float32 rounding included),
stamped with the wall-clock time in ms at which the new value became readable. A test can then
compare what a gateway read with ``value_at(device, signal, ts_ms)``.

Counters that wrap (a 16-bit stroke counter) record two numbers: ``value`` is what the register
holds (it wraps from 65535 to 0, as a client reads it), ``unwrapped`` is the true count.

Outages (a stopped server, an unreachable Modbus unit) are recorded too, so a test knows which
changes a client could not have seen.

Example::

    truth.value_at("press-01", "stroke_count", ts_ms)      # register value, e.g. 3
    truth.series("press-01", "stroke_count")[-1].unwrapped  # true count, e.g. 65539
"""

from __future__ import annotations

import bisect
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from simulators.errors import TruthError

Value = bool | int | float | str


@dataclass(frozen=True, slots=True)
class TruthPoint:
    """One served value.

    Attributes:
        ts_ms: UTC epoch milliseconds at which the value became readable.
        value: The value in the signal's canonical unit, as a client decodes it.
        unwrapped: For wrapping counters only: the true count behind a wrapped register value.
    """

    ts_ms: int
    value: Value
    unwrapped: int | float | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """A span during which a device could not be read (``end_ms`` None while it lasts)."""

    start_ms: int
    end_ms: int | None
    reason: str


class GroundTruth:
    """Records served values per device and signal; optionally appends them to a JSONL file.

    Args:
        max_points: Points kept in memory per series (oldest dropped first); None keeps all.
        path: A JSONL file to append every record to (one object per line).
    """

    def __init__(self, *, max_points: int | None = 100_000, path: Path | None = None) -> None:
        self.max_points = max_points
        self._series: dict[tuple[str, str], deque[TruthPoint]] = {}
        self._outages: dict[str, list[Outage]] = {}
        self._file: io.BufferedWriter | None = None
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # closed by close()

    # ----------------------------------------------------------------- recording

    def record(
        self,
        device: str,
        signal: str,
        ts_ms: int,
        value: Value,
        unwrapped: int | float | None = None,
    ) -> bool:
        """Record a served value; returns False (and records nothing) when it did not change."""
        key = (device, signal)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = deque(maxlen=self.max_points)
        elif series and series[-1].value == value and series[-1].unwrapped == unwrapped:
            if type(series[-1].value) is type(value):
                return False
        series.append(TruthPoint(ts_ms, value, unwrapped))
        if self._file is not None:
            line = {"ts_ms": ts_ms, "device": device, "signal": signal, "value": value}
            if unwrapped is not None:
                line["unwrapped"] = unwrapped
            self._file.write(orjson.dumps(line) + b"\n")
        return True

    def begin_outage(self, device: str, ts_ms: int, reason: str) -> None:
        outages = self._outages.setdefault(device, [])
        if outages and outages[-1].end_ms is None:
            return
        outages.append(Outage(ts_ms, None, reason))
        self._write_event(device, ts_ms, "outage_start", reason)

    def end_outage(self, device: str, ts_ms: int) -> None:
        outages = self._outages.get(device)
        if outages and outages[-1].end_ms is None:
            last = outages[-1]
            outages[-1] = Outage(last.start_ms, ts_ms, last.reason)
            self._write_event(device, ts_ms, "outage_end", last.reason)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ----------------------------------------------------------------- queries

    def devices(self) -> list[str]:
        return sorted({device for device, _ in self._series})

    def signals(self, device: str) -> list[str]:
        """Canonical signals recorded for ``device``."""
        return sorted(signal for dev, signal in self._series if dev == device)

    def series(self, device: str, signal: str) -> list[TruthPoint]:
        """Every recorded change of one signal, oldest first."""
        return list(self._get(device, signal))

    def latest(self, device: str, signal: str) -> TruthPoint:
        return self._get(device, signal)[-1]

    def value_at(self, device: str, signal: str, ts_ms: int) -> Value:
        """The value a client reading at ``ts_ms`` would have got."""
        return self.point_at(device, signal, ts_ms).value

    def point_at(self, device: str, signal: str, ts_ms: int) -> TruthPoint:
        series = self._get(device, signal)
        index = bisect.bisect_right([p.ts_ms for p in series], ts_ms) - 1
        if index < 0:
            raise TruthError(
                f"{device} {signal}: no value at {ts_ms} (first record at {series[0].ts_ms})"
            )
        return series[index]

    def values_between(self, device: str, signal: str, start_ms: int, end_ms: int) -> list[Value]:
        """Values in effect at any time in ``[start_ms, end_ms]``, in order (for tolerant checks)."""
        series = self._get(device, signal)
        result = [p.value for p in series if start_ms < p.ts_ms <= end_ms]
        try:
            result.insert(0, self.value_at(device, signal, start_ms))
        except TruthError:
            pass
        return result

    def outages(self, device: str) -> list[Outage]:
        return list(self._outages.get(device, []))

    def __iter__(self) -> Iterator[tuple[str, str, TruthPoint]]:
        for (device, signal), series in self._series.items():
            for point in series:
                yield device, signal, point

    def _get(self, device: str, signal: str) -> deque[TruthPoint]:
        series = self._series.get((device, signal))
        if not series:
            known = self.signals(device)
            if not known:
                raise TruthError(f"no ground truth for device {device!r}; known: {self.devices()}")
            raise TruthError(f"{device}: no ground truth for {signal!r}; known: {known}")
        return series

    def _write_event(self, device: str, ts_ms: int, event: str, reason: str) -> None:
        if self._file is not None:
            line = {"ts_ms": ts_ms, "device": device, "event": event, "reason": reason}
            self._file.write(orjson.dumps(line) + b"\n")
