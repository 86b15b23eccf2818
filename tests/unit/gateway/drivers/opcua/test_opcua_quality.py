"""From OPC UA DataValues to readings: quality from the status code, timestamps, value types, and
the subscription parameters a group asks for."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest
from asyncua import ua

from gateway.drivers.base import DriverMetrics, RawReading
from gateway.drivers.opcua.addresses import NodeAddress
from gateway.drivers.opcua.models import OpcUaSignal
from gateway.drivers.opcua.subscriptions import (
    GroupSubscription,
    keepalive_count,
    lifetime_count,
    quality_of,
    queue_size,
    timestamp_ms,
    to_reading,
)
from gateway.drivers.opcua.transport import DataSample, Resolution, plain_value, status_name
from gateway.profiles.models import GroupSpec
from wire.payloads import Quality

T0 = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.UTC)
T0_MS = int(T0.timestamp() * 1000)


def sample(
    value: object = 1.5,
    code: int = 0,
    source: dt.datetime | None = T0,
    server: dt.datetime | None = None,
    problem: str | None = None,
) -> DataSample:
    return DataSample(value, code, status_name(code), source, server, problem)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "quality"),
    [
        ("Good", Quality.GOOD),
        ("GoodLocalOverride", Quality.GOOD),
        ("Uncertain", Quality.UNCERTAIN),
        ("UncertainLastUsableValue", Quality.UNCERTAIN),
        ("UncertainSensorNotAccurate", Quality.UNCERTAIN),
        ("Bad", Quality.BAD),
        ("BadNodeIdUnknown", Quality.BAD),
        ("BadSensorFailure", Quality.BAD),
        ("BadCommunicationError", Quality.BAD),
        ("BadUserAccessDenied", Quality.BAD),
    ],
)
def test_quality_follows_the_status_code_severity(name: str, quality: Quality) -> None:
    code = getattr(ua.StatusCodes, name)
    assert status_name(code) == name
    got, reason = quality_of(code, status_name(code))
    assert got is quality
    assert reason == (None if quality is Quality.GOOD else name)


def test_bad_reading_carries_the_status_name_as_reason() -> None:
    reading = to_reading("spindle_speed", sample(None, ua.StatusCodes.BadSensorFailure), 0)
    assert reading == RawReading("spindle_speed", None, T0_MS, Quality.BAD, "BadSensorFailure")


def test_timestamp_prefers_source_then_server_then_now() -> None:
    later = T0 + dt.timedelta(seconds=2)
    assert timestamp_ms(sample(source=T0, server=later), 99) == T0_MS
    assert timestamp_ms(sample(source=None, server=later), 99) == T0_MS + 2000
    assert timestamp_ms(sample(source=None, server=None), 99) == 99
    no_time = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)  # what a server sends for "no timestamp"
    assert timestamp_ms(sample(source=no_time, server=later), 99) == T0_MS + 2000


def test_a_value_a_signal_cannot_carry_becomes_bad_with_why() -> None:
    value, problem = plain_value([1, 2, 3])
    reading = to_reading("spindle_speed", sample(value, problem=problem), 0)
    assert reading.quality is Quality.BAD
    assert "array" in str(reading.reason)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (7, 7),
        (1.25, 1.25),
        ("O1234", "O1234"),
        (None, None),
        (ua.LocalizedText("Spindle overload"), "Spindle overload"),
        (ua.QualifiedName("Running", 2), "Running"),
        (ua.ServerState.Running, 0),
        (dt.datetime(2024, 5, 1, 8, 0, 0), "2024-05-01T08:00:00+00:00"),
    ],
)
def test_plain_values(raw: object, expected: object) -> None:
    assert plain_value(raw) == (expected, None)


def test_unsupported_values_say_so() -> None:
    assert plain_value(float("nan"))[1] == "not a finite number (nan)"
    assert "Variant" in str(plain_value(ua.Variant(1))[1])


def test_subscription_parameters_follow_the_group_and_keepalive() -> None:
    assert keepalive_count(100, 5) == 50  # keep-alive every 5 s at 100 ms
    assert keepalive_count(10_000, 5) == 1  # never less than one interval
    assert lifetime_count(100, 50, 60) == 600  # outlives the session timeout
    assert lifetime_count(1000, 50, 60) == 150  # and at least three keep-alives
    assert queue_size(100, 1000) == 10  # every sample between two publishes
    assert queue_size(1000, 100) == 1
    assert queue_size(1, 60_000) == 100  # bounded
    assert queue_size(0, 1000) == 10  # "fastest practical" sampling


def make_subscription(sink: Callable[[list[RawReading]], None]) -> GroupSubscription:
    signals = [
        OpcUaSignal(name="spindle_speed", node_id="ns=2;s=Speed"),
        OpcUaSignal(name="part_count", node_id="ns=2;s=Count", sampling_interval_ms=50),
        OpcUaSignal(name="spindle_load", browse_path="0:Objects/2:Load", data_change_deadband=0.5),
    ]
    logger = logging.LoggerAdapter(logging.getLogger("test"), {})
    return GroupSubscription(
        GroupSpec(name="default", interval_ms=200), signals, sink, logger, DriverMetrics()
    )


def test_monitor_items_per_resolved_signal_and_bad_readings_for_the_rest() -> None:
    subscription = make_subscription(lambda readings: None)
    items, bad = subscription.monitor_items(
        {
            "spindle_speed": Resolution(NodeAddress("s", "Speed", 2)),
            "part_count": Resolution(NodeAddress("s", "Count", 2)),
            "spindle_load": Resolution(None, "browse path 0:Objects/2:Load not found (BadNoMatch)"),
        }
    )
    assert [(i.handle, i.sampling_interval_ms, i.queue_size, i.deadband) for i in items] == [
        (1, 200.0, 1, None),
        (2, 50.0, 4, None),
    ]
    assert [(r.signal, r.quality, r.reason) for r in bad] == [
        ("spindle_load", Quality.BAD, "browse path 0:Objects/2:Load not found (BadNoMatch)")
    ]


def test_deliver_maps_handles_to_signals_in_one_batch() -> None:
    calls: list[list[RawReading]] = []
    subscription = make_subscription(calls.append)
    subscription.deliver([(1, sample(1480.0)), (2, sample(7)), (99, sample(0))])
    assert len(calls) == 1, "one sink call per publish response"
    assert [(r.signal, r.raw) for r in calls[0]] == [("spindle_speed", 1480.0), ("part_count", 7)]
