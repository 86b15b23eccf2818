"""Fuzz the decoder with labelled hostile messages: it never raises and sorts every sample right."""

from __future__ import annotations

from hostile_payloads import MAX_MESSAGE_BYTES, NOW_MS, HostileSpec, hostile_spec
from hypothesis import HealthCheck, given, settings

from ingest.decode import Incoming, Rejected, TelemetryBatch, decode
from ingest.errors import Reason
from ingest.settings import LimitsSettings

LIMITS = LimitsSettings(max_message_bytes=MAX_MESSAGE_BYTES)


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=hostile_spec())
def test_every_sample_is_either_kept_or_rejected_with_its_reason(spec: HostileSpec):
    message = Incoming(spec.topic(), spec.render("boot-1", 7), 1, 1, 1, 0.0, NOW_MS)
    result = decode(message, LIMITS, NOW_MS)
    if spec.whole is not None and spec.kind != "unknown_gateway":
        assert isinstance(result, Rejected), spec
        expected = spec.whole if isinstance(spec.whole, tuple) else (spec.whole,)
        assert result.reason in expected, (result, spec)
        assert result.detail
        return
    assert isinstance(result, TelemetryBatch), (result, spec)
    if spec.kind == "unknown_gateway":
        return  # only the registry knows; the integration fuzz test covers it
    kept = [s[0] for s in result.samples]
    rejected = {r.index: r.reason for r in result.rejections}
    ghosts = [i for i, reason in spec.bad.items() if reason is Reason.UNKNOWN_DEVICE]
    assert kept == sorted(spec.good + ghosts), spec  # unknown devices are the writer's call
    assert rejected == {i: r for i, r in spec.bad.items() if r is not Reason.UNKNOWN_DEVICE}
    assert set(kept).isdisjoint(rejected)
    assert result.total_samples == len(spec.samples)
