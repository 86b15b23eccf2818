"""The wire contract: golden samples decode, topics round-trip, the published schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from wire import (
    Batch,
    CustomSignal,
    DeviceStatus,
    GatewayMetrics,
    GatewayStatus,
    Quality,
    Sample,
    SignalKind,
    TopicError,
    TopicKind,
    WireError,
    decode_batch,
    encode,
    parse_topic,
    topics,
)
from wire.schema import BEGIN, END, schema_block
from wire.signals import SIGNALS, lookup_signal

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "data" / "wire"

MODEL_OF = {
    "batch": Batch,
    "gateway_status": GatewayStatus,
    "device_status": DeviceStatus,
    "gateway_metrics": GatewayMetrics,
}


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.name)
def test_golden_samples_decode_and_reencode(path: Path) -> None:
    model = next(m for prefix, m in MODEL_OF.items() if path.name.startswith(prefix))
    obj = model.model_validate_json(path.read_bytes())
    again = model.model_validate_json(encode(obj))
    assert again == obj


def test_minor_version_fields_are_ignored_by_v1_0_readers() -> None:
    batch = decode_batch((GOLDEN / "batch_historical_v1_3.json").read_bytes())
    assert batch.v == "1.3" and batch.historical is True
    assert not hasattr(batch, "future_field")


def test_major_version_2_is_refused() -> None:
    data = json.loads((GOLDEN / "batch_live.json").read_text())
    data["v"] = "2.0"
    with pytest.raises(WireError) as info:
        decode_batch(json.dumps(data).encode())
    assert info.value.reason == "invalid_payload"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"v": "1.0"}', "invalid_payload"),
        (b"x" * (4 * 1024 * 1024 + 1), "oversized"),
    ],
)
def test_undecodable_messages_carry_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode_batch(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Sample(device="d1", signal="spindle_speed", ts_ms=1, value=bad)


def test_value_types_survive_the_round_trip() -> None:
    samples = [
        Sample(device="d1", signal="alarm_active", ts_ms=1, value=True),
        Sample(device="d1", signal="part_count", ts_ms=1, value=18446744073709551615),
        Sample(device="d1", signal="spindle_speed", ts_ms=1, value=1500.5),
        Sample(device="d1", signal="machine_state", ts_ms=1, value="running"),
        Sample(device="d1", signal="alarm_text", ts_ms=1, value=None, quality=Quality.BAD),
    ]
    batch = Batch(gateway="gw-1", boot="b", seq=1, ts_ms=1, samples=samples)
    decoded = decode_batch(encode(batch))
    assert [type(s.value) for s in decoded.samples] == [bool, int, float, str, type(None)]
    assert decoded == batch


def test_topics_round_trip_for_every_kind() -> None:
    built = {
        TopicKind.TELEMETRY: topics.telemetry("ent-001", "gw-01"),
        TopicKind.GATEWAY_STATUS: topics.gateway_status("ent-001", "gw-01"),
        TopicKind.DEVICE_STATUS: topics.device_status("ent-001", "gw-01", "press-7"),
        TopicKind.METRICS: topics.metrics("ent-001", "gw-01"),
    }
    for kind, topic in built.items():
        parsed = parse_topic(topic)
        assert (parsed.kind, parsed.enterprise, parsed.gateway) == (kind, "ent-001", "gw-01")
        assert str(parsed) == topic
    assert parse_topic(built[TopicKind.DEVICE_STATUS]).device == "press-7"


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/e/g/telemetry",
        "shulian/v1/e/g/unknown",
        "shulian/v1/e+/g/telemetry",
        "shulian/v1/e",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize("bad_id", ["a/b", "+", "#", "", "with space", "x" * 65])
def test_ids_that_cannot_be_topic_levels_are_refused(bad_id: str) -> None:
    with pytest.raises(TopicError):
        topics.telemetry(bad_id, "gw-1")


def test_shared_subscription_filter() -> None:
    assert (
        topics.subscription(TopicKind.TELEMETRY, "ingest")
        == "$share/ingest/shulian/v1/+/+/telemetry"
    )
    assert topics.subscription(TopicKind.DEVICE_STATUS) == "shulian/v1/+/+/devices/+/status"


def test_published_schema_matches_the_models() -> None:
    text = (REPO / "docs" / "wire.md").read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == schema_block(), "docs/wire.md is stale: run python -m wire.schema"


def test_every_vocabulary_unit_is_a_pint_unit() -> None:
    pint = pytest.importorskip("pint")
    registry = pint.UnitRegistry()
    for spec in SIGNALS.values():
        if spec.unit:
            registry.Unit(spec.unit)


def test_qualified_names_resolve_to_their_base() -> None:
    spec = lookup_signal("voltage.l1")
    assert spec is not None and spec.unit == "V"
    assert lookup_signal("no_such_signal") is None


def test_signals_doc_matches_the_vocabulary() -> None:
    from wire.schema import signals_markdown

    doc = (REPO / "docs" / "signals.md").read_text(encoding="utf-8")
    assert doc == signals_markdown(), "docs/signals.md is stale: python -m wire.schema signals"


def test_v1_1_samples_carry_why_they_are_not_good_and_the_will_says_it_is_one() -> None:
    batch = decode_batch((GOLDEN / "batch_reason_v1_1.json").read_bytes())
    assert [(s.quality.value, s.reason) for s in batch.samples] == [
        ("bad", "BadWaitingForInitialData"),
        ("uncertain", "UncertainLastUsableValue"),
        ("bad", "Modbus exception 2: illegal data address"),
        ("good", None),
    ]
    will = GatewayStatus.model_validate_json(
        (GOLDEN / "gateway_status_will_v1_1.json").read_bytes()
    )
    assert will.will is True and will.online is False
    old_will = GatewayStatus.model_validate_json((GOLDEN / "gateway_status_will.json").read_bytes())
    assert old_will.will is False  # 1.0 gateways do not mark their Will


def test_custom_signals_pass_the_contract_and_old_statuses_stay_valid() -> None:
    """1.2: namespaced names in samples, their declarations in the device status; a 1.0 status
    without them still decodes (an old gateway)."""
    status = DeviceStatus.model_validate_json(
        (GOLDEN / "device_status_custom_v1_2.json").read_bytes()
    )
    fan, parts = status.custom_signals
    assert (fan.name, fan.kind, fan.unit, fan.counts_as) == (
        "sim:cabinet_fan_speed",
        SignalKind.GAUGE,
        "rpm",
        None,
    )
    assert (fan.meaning.en, fan.meaning.zh) == (
        "Drive cabinet cooling fan speed",
        "电柜冷却风扇转速",
    )
    assert parts.counts_as == "good_count"
    old = DeviceStatus.model_validate_json((GOLDEN / "device_status.json").read_bytes())
    assert old.custom_signals == []
    for name in ("acme:fan_speed", "acme:fan_speed.left", "voltage.l1"):
        Sample(device="d", signal=name, ts_ms=1, value=1.0)
    for bad in ("Acme:fan", "acme:", ":fan", "acme:fan:x", "acme:fan speed", "acme-x:fan"):
        with pytest.raises(ValidationError):
            Sample(device="d", signal=bad, ts_ms=1, value=1.0)
    with pytest.raises(ValidationError):  # a declaration names the base, without a qualifier
        CustomSignal(name="acme:fan.left", kind="gauge", meaning={"en": "x", "zh": "y"})
    with pytest.raises(ValidationError):  # both languages
        CustomSignal(name="acme:fan", kind="gauge", meaning={"en": "x"})
    meaning = {"en": "x", "zh": "y"}
    with pytest.raises(ValidationError, match="shadows the canonical signal 'part_count'"):
        CustomSignal(name="acme:part_count", kind="counter", meaning=meaning)
    with pytest.raises(ValidationError, match="'spindle_speed' is not a canonical counter"):
        CustomSignal(name="acme:n", kind="counter", meaning=meaning, counts_as="spindle_speed")
    with pytest.raises(ValidationError, match="a gauge cannot count as 'part_count'"):
        CustomSignal(name="acme:n", kind="gauge", meaning=meaning, counts_as="part_count")


def test_v1_2_device_status_says_how_long_each_signal_may_stay_silent() -> None:
    status = DeviceStatus.model_validate_json((GOLDEN / "device_status_v1_2.json").read_bytes())
    assert status.max_silence_s == {
        "machine_state": 61.0,
        "part_count": 61.0,
        "active_energy": 65.0,
    }
    older = DeviceStatus.model_validate_json((GOLDEN / "device_status.json").read_bytes())
    assert older.max_silence_s is None  # 1.0/1.1 gateways: the ingest assumes a default
    data = json.loads((GOLDEN / "device_status_v1_2.json").read_text())
    data["max_silence_s"]["part_count"] = 0
    with pytest.raises(ValidationError, match=r"max_silence_s\.part_count"):
        DeviceStatus.model_validate(data)
