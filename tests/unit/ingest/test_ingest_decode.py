"""Decoding: every kind of bad input becomes a reason, and good samples always survive."""

from __future__ import annotations

import json

import pytest

from ingest.decode import (
    DeviceStatusMessage,
    GatewayStatusMessage,
    Incoming,
    MetricsMessage,
    Rejected,
    TelemetryBatch,
    decode,
)
from ingest.errors import Reason
from ingest.settings import LimitsSettings

NOW = 1_764_324_000_000
TOPIC = "shulian/v1/ent-1/gw-1/telemetry"
LIMITS = LimitsSettings()


def incoming(payload: bytes | dict, topic: str = TOPIC) -> Incoming:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Incoming(topic, data, mid=1, qos=1, generation=1, received_mono=0.0, received_ms=NOW)


def sample(**over: object) -> dict:
    return {"device": "d-1", "signal": "spindle_speed", "ts_ms": NOW, "value": 1.5, **over}


def batch(samples: list, **over: object) -> dict:
    return {
        "v": "1.0",
        "gateway": "gw-1",
        "boot": "b1",
        "seq": 1,
        "ts_ms": NOW,
        "samples": samples,
        **over,
    }


def run(payload: bytes | dict, topic: str = TOPIC, limits: LimitsSettings = LIMITS):
    return decode(incoming(payload, topic), limits, NOW)


def test_a_good_batch_keeps_every_sample_with_its_index_and_quality():
    result = run(
        batch([sample(), sample(signal="machine_state", value="running", quality="uncertain")])
    )
    assert isinstance(result, TelemetryBatch)
    assert result.samples == [
        (0, "d-1", "spindle_speed", NOW, 1.5, 0),
        (1, "d-1", "machine_state", NOW, "running", 1),
    ]
    assert result.rejections == []
    assert (result.gateway, result.boot, result.seq) == ("gw-1", "b1", 1)


def test_nan_and_infinity_tokens_lose_only_their_own_samples():
    text = json.dumps(
        batch([sample(), sample(value=float("nan")), sample(ts_ms=NOW - 1, value=float("inf"))])
    )
    assert "NaN" in text and "Infinity" in text
    result = run(text.encode())
    assert isinstance(result, TelemetryBatch)
    assert [s[0] for s in result.samples] == [0]
    assert [(r.index, r.reason) for r in result.rejections] == [
        (1, Reason.NON_FINITE),
        (2, Reason.NON_FINITE),
    ]


@pytest.mark.parametrize(
    "bad, reason",
    [
        (sample(value=[1, 2]), Reason.INVALID_SAMPLE),
        (sample(value={"a": 1}), Reason.INVALID_SAMPLE),
        (sample(ts_ms="yesterday"), Reason.INVALID_SAMPLE),
        (sample(device="bad device/id"), Reason.INVALID_SAMPLE),
        (sample(quality="excellent"), Reason.INVALID_SAMPLE),
        (sample(value="x" * 2000), Reason.INVALID_SAMPLE),
        ("not an object", Reason.INVALID_SAMPLE),
        (sample(signal="warp_drive"), Reason.UNKNOWN_SIGNAL),
        (sample(ts_ms=NOW + 3_600_000), Reason.TOO_NEW),
        (sample(ts_ms=NOW - 30 * 86_400_000), Reason.TOO_OLD),
        (sample(value=10**400), Reason.INVALID_SAMPLE),
        (sample(value="nul\x00inside", signal="alarm_text"), Reason.INVALID_SAMPLE),
        (sample(signal="machine_state", value="dancing"), Reason.INVALID_SAMPLE),
        (sample(signal="machine_state", value="offline"), Reason.INVALID_SAMPLE),
    ],
)
def test_each_bad_sample_is_rejected_with_its_reason_and_neighbours_kept(bad, reason):
    result = run(batch([sample(ts_ms=NOW - 5), bad, sample(ts_ms=NOW - 3)]))
    assert isinstance(result, TelemetryBatch)
    assert [s[0] for s in result.samples] == [0, 2]
    assert [(r.index, r.reason) for r in result.rejections] == [(1, reason)]
    assert result.rejections[0].detail


def test_duplicate_points_inside_a_message_keep_the_first():
    result = run(batch([sample(value=1.0), sample(value=2.0), sample(signal="feed_rate")]))
    assert isinstance(result, TelemetryBatch)
    assert [s[4] for s in result.samples] == [1.0, 1.5]
    assert [(r.index, r.reason) for r in result.rejections] == [(1, Reason.DUPLICATE_POINT)]


def test_unknown_signals_can_be_accepted_by_setting():
    result = run(
        batch([sample(signal="warp_drive")]), limits=LimitsSettings(accept_unknown_signals=True)
    )
    assert isinstance(result, TelemetryBatch) and len(result.samples) == 1


def test_qualified_signal_names_of_known_bases_are_accepted():
    result = run(batch([sample(signal="voltage.l1"), sample(signal="furnace_zone_temperature.z3")]))
    assert isinstance(result, TelemetryBatch) and len(result.samples) == 2


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{not json", Reason.MALFORMED_JSON),
        (b"\xff\xfe\x00garbage", Reason.MALFORMED_JSON),
        (b"[1, 2, 3]", Reason.INVALID_PAYLOAD),
        (batch([sample()], seq=0), Reason.INVALID_PAYLOAD),
        (batch([sample()], boot=""), Reason.INVALID_PAYLOAD),
        (batch([sample()], v="2.0"), Reason.INVALID_PAYLOAD),
        (batch("samples"), Reason.INVALID_PAYLOAD),
        (batch([sample()], gateway="gw-2"), Reason.IDENTITY_MISMATCH),
        (batch([sample()], boot="b\x00"), Reason.INVALID_PAYLOAD),
    ],
)
def test_whole_message_rejections(payload, reason):
    result = run(payload)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail


def test_oversized_and_foreign_topics_are_rejected_before_parsing():
    big = run(b"x" * 2048, limits=LimitsSettings(max_message_bytes=1024))
    assert isinstance(big, Rejected) and big.reason == Reason.OVERSIZED
    foreign = run(batch([sample()]), topic="other/v1/ent-1/gw-1/telemetry")
    assert isinstance(foreign, Rejected) and foreign.reason == Reason.UNKNOWN_TOPIC
    unknown_kind = run(batch([sample()]), topic="shulian/v1/ent-1/gw-1/firmware")
    assert isinstance(unknown_kind, Rejected) and unknown_kind.reason == Reason.UNKNOWN_TOPIC


def test_status_messages_must_match_their_topic():
    status = {"gateway": "gw-1", "enterprise": "ent-1", "online": True, "boot": "b", "ts_ms": NOW}
    ok = run(status, topic="shulian/v1/ent-1/gw-1/status")
    assert isinstance(ok, GatewayStatusMessage)
    wrong = run({**status, "enterprise": "ent-2"}, topic="shulian/v1/ent-1/gw-1/status")
    assert isinstance(wrong, Rejected) and wrong.reason == Reason.IDENTITY_MISMATCH
    device = {"gateway": "gw-1", "device": "d-1", "connection": "connected", "ts_ms": NOW}
    assert isinstance(
        run(device, topic="shulian/v1/ent-1/gw-1/devices/d-1/status"), DeviceStatusMessage
    )
    moved = run(device, topic="shulian/v1/ent-1/gw-1/devices/d-2/status")
    assert isinstance(moved, Rejected) and moved.reason == Reason.IDENTITY_MISMATCH


def test_metrics_need_finite_figures():
    metrics = {"gateway": "gw-1", "ts_ms": NOW, "figures": {"rss_bytes": 1.0}}
    assert isinstance(run(metrics, topic="shulian/v1/ent-1/gw-1/metrics"), MetricsMessage)
    nan = json.dumps({**metrics, "figures": {"x": float("nan")}}).encode()
    result = run(nan, topic="shulian/v1/ent-1/gw-1/metrics")
    assert isinstance(result, Rejected) and result.reason == Reason.INVALID_PAYLOAD


def test_status_and_metrics_get_the_telemetry_time_window():
    """A far-future status would win every later comparison and freeze its gateway (issue 10)."""
    ahead = NOW + int(LIMITS.max_future_s * 1000)
    long_ago = NOW - int(LIMITS.max_age_s * 1000) - 1
    messages = {
        "shulian/v1/ent-1/gw-1/status": {
            "gateway": "gw-1",
            "enterprise": "ent-1",
            "online": False,
            "boot": "b",
        },
        "shulian/v1/ent-1/gw-1/devices/d-1/status": {
            "gateway": "gw-1",
            "device": "d-1",
            "connection": "connected",
        },
        "shulian/v1/ent-1/gw-1/metrics": {"gateway": "gw-1", "figures": {"rss_bytes": 1.0}},
    }
    for topic, body in messages.items():
        assert not isinstance(run({**body, "ts_ms": ahead}, topic=topic), Rejected), topic
        too_new = run({**body, "ts_ms": ahead + 1}, topic=topic)
        assert isinstance(too_new, Rejected) and too_new.reason == Reason.TOO_NEW, topic
        assert "s ahead (limit 300 s); check the gateway's clock" in too_new.detail
        assert too_new.topic is not None and too_new.topic.gateway == "gw-1"
    # metrics are live figures: old ones are replays past the horizon
    metrics_topic = "shulian/v1/ent-1/gw-1/metrics"
    old = run({**messages[metrics_topic], "ts_ms": long_ago}, topic=metrics_topic)
    assert isinstance(old, Rejected) and old.reason == Reason.TOO_OLD
    # a Last Will carries its gateway's connect time, which may be weeks ago: still applied
    will = {**messages["shulian/v1/ent-1/gw-1/status"], "ts_ms": long_ago}
    assert isinstance(run(will, topic="shulian/v1/ent-1/gw-1/status"), GatewayStatusMessage)
