"""Report by exception across a reconnect: no sample passed on twice, unchanged values confirmed.

Regression (e2e OPC UA restart drill): an OPC UA server re-sends each monitored item's current
value with its old source timestamp to every new subscription; after ``forget()`` the gateway
passed those on again and the database stored each unchanged value twice at one timestamp.
"""

from __future__ import annotations

from gateway_fakes import make_profile

from gateway.normalize import OutSample
from gateway.rbe import ReportByException
from wire.payloads import Quality

SIGNALS = [
    {"name": "spindle_speed", "address": 0, "deadband": 10.0},
    {"name": "machine_state", "address": 1, "states": {1: "idle", 2: "running"}},
]


def sample(signal: str, value: object, ts_ms: int, quality: Quality = Quality.GOOD) -> OutSample:
    return OutSample("d1", signal, ts_ms, value, quality)  # type: ignore[arg-type]


def test_a_value_resent_with_its_old_timestamp_after_a_reconnect_is_not_passed_on_again() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    first = [sample("machine_state", "idle", 1000), sample("spindle_speed", 1500.0, 1000)]
    assert rbe.filter(first) == first
    rbe.forget()  # the session was lost and rebuilt
    assert rbe.filter(first) == [], "the server's initial values repeat what was sent"


def test_after_a_reconnect_an_unchanged_value_is_confirmed_with_a_fresh_timestamp() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    rbe.filter([sample("machine_state", "idle", 1000)])
    rbe.forget()
    rbe.filter([sample("machine_state", "idle", 1000)])
    [confirmed] = rbe.due_heartbeats(5000)
    assert (confirmed.value, confirmed.ts_ms) == ("idle", 5000)
    assert list(rbe.due_heartbeats(6000)) == [], "then the heartbeat period applies again"


def test_repeats_of_a_heartbeat_sample_are_recognised_too() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=1))
    rbe.filter([sample("machine_state", "idle", 1000)])
    assert [s.ts_ms for s in rbe.due_heartbeats(2500)] == [2500]
    rbe.forget()
    assert rbe.filter([sample("machine_state", "idle", 1000)]) == [], "older than the last sent"


def test_changes_made_while_disconnected_are_passed_on() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    rbe.filter([sample("machine_state", "idle", 1000)])
    rbe.forget()
    changed = [sample("machine_state", "running", 3000)]
    assert rbe.filter(changed) == changed
    back = [sample("machine_state", "idle", 4000)]  # same value as before, but newer: news
    assert rbe.filter(back) == back


def test_a_repeat_with_another_quality_is_passed_on() -> None:
    rbe = ReportByException(make_profile(signals=SIGNALS, heartbeat_s=60))
    rbe.filter([sample("spindle_speed", 1500.0, 1000)])
    rbe.forget()
    bad = [sample("spindle_speed", 1500.0, 1000, Quality.UNCERTAIN)]
    assert rbe.filter(bad) == bad
