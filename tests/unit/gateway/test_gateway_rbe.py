"""Report by exception: deadbands for gauges, every change for the rest, heartbeats, quality."""

from __future__ import annotations

from gateway_fakes import make_profile

from gateway.normalize import OutSample, ReasonedSample
from gateway.rbe import ReportByException
from wire.payloads import Quality

SIGNALS = [
    {"name": "spindle_speed", "address": 0, "deadband": 10.0},
    {"name": "motor_current", "address": 1},
    {"name": "part_count", "address": 2, "deadband": 100.0},
    {"name": "machine_state", "address": 3, "states": {1: "idle", 2: "running"}},
    {"name": "coolant_temperature", "address": 4, "heartbeat_s": 2.0},
]


def sample(signal: str, value: object, ts_ms: int, quality: Quality = Quality.GOOD) -> OutSample:
    return OutSample("d1", signal, ts_ms, value, quality)  # type: ignore[arg-type]


def values(rbe: ReportByException, signal: str, seq: list[object], step_ms: int = 100) -> list:
    out = []
    for i, v in enumerate(seq):
        out += [s.value for s in rbe.filter([sample(signal, v, 1000 + i * step_ms)])]
    return out


def test_gauge_reports_only_moves_beyond_deadband_from_last_report() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    # 1000 reported; 1005, 1009 within 10 of it; 1011 is > 10 away; 1015 within 10 of 1011.
    assert values(rbe, "spindle_speed", [1000.0, 1005.0, 1009.0, 1011.0, 1015.0, 990.0]) == [
        1000.0,
        1011.0,
        990.0,
    ]


def test_gauge_without_deadband_reports_every_change_only() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS))
    assert values(rbe, "motor_current", [5.0, 5.0, 5.1, 5.1, 5.0]) == [5.0, 5.1, 5.0]


def test_counters_and_states_report_every_change_whatever_the_deadband() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS))
    assert values(rbe, "part_count", [1, 1, 2, 3, 3]) == [1, 2, 3]
    assert values(rbe, "machine_state", ["idle", "idle", "running"]) == ["idle", "running"]


def test_heartbeat_reports_unchanged_value_signal_override_wins() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    # coolant has heartbeat_s 2: steps of 500 ms -> reported at 0, 2000, 4000 ms.
    got = [
        s.ts_ms
        for i in range(10)
        for s in rbe.filter([sample("coolant_temperature", 20.0, i * 500)])
    ]
    assert got == [0, 2000, 4000]
    # the profile default (60 s) applies to motor_current
    got = [s.ts_ms for i in range(10) for s in rbe.filter([sample("motor_current", 1.0, i * 500)])]
    assert got == [0]


def test_quality_change_is_always_reported() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS))
    out = []
    for ts, q in [(1, Quality.GOOD), (2, Quality.BAD), (3, Quality.BAD), (4, Quality.GOOD)]:
        out += rbe.filter([sample("spindle_speed", 1000.0 if q is Quality.GOOD else None, ts, q)])
    assert [s.quality for s in out] == [Quality.GOOD, Quality.BAD, Quality.GOOD]


def test_due_heartbeats_reemit_last_good_values_with_new_timestamp() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    rbe.filter([sample("coolant_temperature", 21.5, 0), sample("motor_current", 3.0, 0)])
    assert list(rbe.due_heartbeats(1000)) == []
    due = list(rbe.due_heartbeats(2500))
    assert [(s.signal, s.value, s.ts_ms) for s in due] == [("coolant_temperature", 21.5, 2500)]


def test_bad_values_repeat_on_the_heartbeat_with_their_reason() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    waiting = ReasonedSample(
        "d1", "coolant_temperature", 0, None, Quality.BAD, "BadWaitingForInitialData"
    )
    assert rbe.filter([waiting]) == [waiting]
    due = list(rbe.due_heartbeats(2500)) + list(rbe.due_heartbeats(5000))
    assert [(type(s), s.ts_ms, s.quality) for s in due] == [
        (ReasonedSample, 2500, Quality.BAD),
        (ReasonedSample, 5000, Quality.BAD),
    ]
    assert {s.reason for s in due if isinstance(s, ReasonedSample)} == {"BadWaitingForInitialData"}


def test_a_new_reason_is_news_the_same_reason_waits_for_the_heartbeat() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))

    def bad(ts_ms: int, reason: str) -> OutSample:
        return ReasonedSample("d1", "spindle_speed", ts_ms, None, Quality.BAD, reason)

    out = rbe.filter([bad(1, "BadWaitingForInitialData"), bad(2, "BadWaitingForInitialData")])
    out += rbe.filter([bad(3, "BadCommunicationError")])
    assert [(s.ts_ms, getattr(s, "reason", None)) for s in out] == [
        (1, "BadWaitingForInitialData"),
        (3, "BadCommunicationError"),
    ]


def test_forget_makes_the_next_value_news_again() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS))
    assert values(rbe, "part_count", [5]) == [5]
    rbe.forget()
    # The next reading (a later timestamp); a repeat of the very sample sent is not news.
    assert [s.value for s in rbe.filter([sample("part_count", 5, 2000)])] == [5]
