"""Report by exception: pass a sample on only when it says something new, or a heartbeat is due.

Gauges are reported when they move beyond their ``deadband`` (canonical units; no deadband means
any change); states, alarms, counters and text on every change; a change of quality always; and
every signal at least every ``heartbeat_s`` (the signal's, else the profile's), so a reader can
tell "unchanged" from "gone". Bad and uncertain samples repeat on the heartbeat like good ones,
with their reason (an OPC UA status name such as ``BadWaitingForInitialData``), and a change of
reason is news.

A sample that repeats the last one passed on (same value and quality, no newer) is never passed
on again: an OPC UA server sends every monitored item's current value, with its old source
timestamp, to each new subscription, so every reconnect would store each unchanged value twice
under the same timestamp. After a reconnect such a repeat instead makes the signal's heartbeat due
at once, so the value is confirmed with a fresh timestamp within a heartbeat tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from gateway.normalize import OutSample, ReasonedSample
from gateway.profiles.models import ProfileBase
from wire.payloads import Quality
from wire.signals import SignalKind


@dataclass(slots=True)
class _Slot:
    deadband: float | None
    """None for kinds reported on every change."""
    heartbeat_ms: int
    last: OutSample | None = None
    last_report_ms: int = 0
    sent: OutSample | None = None
    """The last sample passed on; ``forget`` keeps it, so a repeat after a reconnect is known."""


class ReportByException:
    """Per-device filter state; ``filter`` is called with every normalized sample."""

    def __init__(self, profile: ProfileBase) -> None:
        self._slots: dict[str, _Slot] = {}
        for signal in profile.signals:
            heartbeat_s = signal.heartbeat_s or profile.heartbeat_s
            is_gauge = signal.effective_kind is SignalKind.GAUGE
            self._slots[signal.name] = _Slot(
                deadband=(signal.deadband or 0.0) if is_gauge else None,
                heartbeat_ms=int(heartbeat_s * 1000),
            )
        self.suppressed = 0

    def filter(self, samples: list[OutSample]) -> list[OutSample]:
        """The samples worth reporting; uses each sample's own timestamp for the heartbeat."""
        out = []
        for sample in samples:
            slot = self._slots.get(sample.signal)
            if slot is None:
                out.append(sample)
            elif _is_repeat(slot.sent, sample):
                self.suppressed += 1
                if slot.last is None:  # the first value after a reconnect: heartbeat it now
                    slot.last = sample
                    slot.last_report_ms = sample.ts_ms - slot.heartbeat_ms
            elif self._is_news(slot, sample):
                out.append(sample)
                slot.last = slot.sent = sample
                slot.last_report_ms = sample.ts_ms
            else:
                self.suppressed += 1
        return out

    @staticmethod
    def _is_news(slot: _Slot, sample: OutSample) -> bool:
        last = slot.last
        if last is None or last.quality is not sample.quality:
            return True
        if sample.ts_ms - slot.last_report_ms >= slot.heartbeat_ms:
            return True
        if sample.quality is not Quality.GOOD and _reason(last) != _reason(sample):
            return True
        old, new = last.value, sample.value
        if slot.deadband is not None and _is_number(old) and _is_number(new):
            if slot.deadband == 0.0:
                return bool(new != old)
            return bool(abs(new - old) > slot.deadband)  # type: ignore[operator]  # numbers, checked above
        return bool(new != old) or type(new) is not type(old)

    def due_heartbeats(self, now_ms: int) -> Iterator[OutSample]:
        """Re-emit (with ``now_ms``) the last sample of every signal whose heartbeat is due.

        For subscription drivers, whose servers only push changes: the session being alive
        vouches that an unchanged value still holds, and so does a bad status (with its reason).
        """
        for slot in self._slots.values():
            last = slot.last
            if last is None:
                continue
            if now_ms - slot.last_report_ms >= slot.heartbeat_ms:
                sample = replace(last, ts_ms=now_ms)
                slot.last = slot.sent = sample
                slot.last_report_ms = now_ms
                yield sample

    def forget(self) -> None:
        """Drop what was last reported (after a reconnect, the first values are news again,
        except repeats of samples already passed on)."""
        for slot in self._slots.values():
            slot.last = None
            slot.last_report_ms = 0


def _is_repeat(sent: OutSample | None, sample: OutSample) -> bool:
    """``sample`` says nothing ``sent`` did not: the same value and quality, and no newer."""
    return (
        sent is not None
        and sample.ts_ms <= sent.ts_ms
        and sample.quality is sent.quality
        and type(sample.value) is type(sent.value)
        and sample.value == sent.value
    )


def _reason(sample: OutSample) -> str | None:
    return sample.reason if isinstance(sample, ReasonedSample) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
