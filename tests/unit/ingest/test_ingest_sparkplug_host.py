"""ingest.sparkplug without a broker: the mapping's checks, births, held data, the ledger key."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pysparkplug as sp
import pytest

from ingest.decode import GatewayStatusMessage, Incoming, Rejected, TelemetryBatch
from ingest.errors import ConfigError, Reason
from ingest.settings import LimitsSettings
from ingest.sparkplug import SparkplugHost, load_mapping

MAPPING = """\
edge_nodes:
  - group: g
    node: n
    enterprise: ent-1
    gateway: gw-spb
    devices:
      - sparkplug: d
        device: dev-1
        metrics:
          Speed: {signal: spindle_speed, scale: 60}
          Count: part_count
"""


def _now() -> int:
    return time.time_ns() // 1_000_000


def _incoming(topic: str, payload: bytes, mid: int = 1) -> Incoming:
    return Incoming(topic, payload, mid, 1, 1, time.monotonic(), _now())


def _metric(name: str | None, alias: int, dtype: sp.DataType, value: Any, ts: int) -> sp.Metric:
    return sp.Metric(timestamp=ts, name=name, alias=alias, datatype=dtype, value=value)


@pytest.fixture()
def host(tmp_path: Path) -> tuple[SparkplugHost, list[str]]:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    sent: list[str] = []
    made = SparkplugHost(
        load_mapping(path), LimitsSettings(), lambda t, _p: sent.append(t), park_limit=3
    )
    return made, sent


def _birth(host: SparkplugHost, ts: int) -> list[Incoming]:
    nbirth = sp.NBirth(
        timestamp=ts,
        seq=0,
        metrics=(_metric("bdSeq", 0, sp.DataType.INT64, 7, ts),),
    )
    dbirth = sp.DBirth(
        timestamp=ts,
        seq=1,
        metrics=(
            _metric("Speed", 1, sp.DataType.FLOAT, 10.0, ts),
            _metric("Count", 2, sp.DataType.INT32, -1, ts),
        ),
    )
    out = host.route(_incoming("spBv1.0/g/NBIRTH/n", nbirth.encode(include_dtypes=True)))
    return out + host.route(_incoming("spBv1.0/g/DBIRTH/n/d", dbirth.encode(include_dtypes=True)))


def _ddata(seq: int, ts: int, speed: float, historical: bool = False) -> bytes:
    metric = sp.Metric(
        timestamp=ts, name=None, alias=1, datatype=sp.DataType.FLOAT, value=speed,
        is_historical=historical,
    )  # fmt: skip
    return sp.DData(timestamp=ts, seq=seq, metrics=(metric,)).encode(include_dtypes=False)


def test_births_then_alias_only_data_scaled_and_signed(host: Any) -> None:
    spb, sent = host
    ts = _now()
    out = _birth(spb, ts)
    status = out[0].predecoded
    assert isinstance(status, GatewayStatusMessage) and status.status.boot == "spb-7"
    birth_values = out[-1].predecoded
    assert isinstance(birth_values, TelemetryBatch)
    assert {(s[2], s[4]) for s in birth_values.samples} == {
        ("spindle_speed", 600.0),
        ("part_count", -1),
    }
    assert [i.qos for i in out] == [1, 0, 1], "only the last part of a message is acknowledged"
    (data,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(2, ts + 1, 2.5)))
    batch = data.predecoded
    assert isinstance(batch, TelemetryBatch)
    assert [(s[1], s[2], s[3], s[4]) for s in batch.samples] == [
        ("dev-1", "spindle_speed", ts + 1, 150.0)
    ]
    assert sent == []


def test_the_same_samples_again_get_the_same_ledger_key_whatever_seq_or_historical(
    host: Any,
) -> None:
    spb, _ = host
    ts = _now()
    _birth(spb, ts)
    (first,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(2, ts + 5, 3.0)))
    (again,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(3, ts + 5, 3.0, historical=True)))
    (other,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(4, ts + 5, 3.5)))
    assert first.predecoded.seq == again.predecoded.seq != other.predecoded.seq
    assert again.predecoded.historical and not first.predecoded.historical


def test_a_seq_gap_asks_for_a_rebirth_once_and_keeps_the_data(host: Any) -> None:
    spb, sent = host
    ts = _now()
    _birth(spb, ts)
    (data,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(9, ts + 1, 1.0)))
    spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(20, ts + 2, 1.0)))
    assert isinstance(data.predecoded, TelemetryBatch) and data.predecoded.samples
    assert sent == ["spBv1.0/g/NCMD/n"], "rate limited to one request per interval"


def test_data_without_a_birth_is_held_then_decoded_or_dead_lettered_past_the_limit(
    host: Any,
) -> None:
    spb, sent = host
    ts = _now()
    held = [
        spb.route(_incoming("spBv1.0/g/DDATA/n/d", _ddata(i, ts + i, 1.0), mid=i)) for i in range(4)
    ]
    assert held[:3] == [[], [], []] and sent == ["spBv1.0/g/NCMD/n"]
    (overflow,) = held[3]  # the oldest goes, so the broker can still deliver the birth
    assert isinstance(overflow.predecoded, Rejected) and overflow.mid == 0
    assert overflow.predecoded.reason is Reason.SPARKPLUG_UNDECODABLE
    out = _birth(spb, ts + 10)
    decoded = [i.predecoded for i in out if isinstance(i.predecoded, TelemetryBatch)]
    assert sorted(b.samples[0][3] for b in decoded if b.samples[0][4] == 60.0) == [
        ts + 1,
        ts + 2,
        ts + 3,
    ]


def test_unmapped_node_device_and_metric_are_dead_lettered_with_the_reason(host: Any) -> None:
    spb, _ = host
    ts = _now()
    (node,) = spb.route(_incoming("spBv1.0/g/NBIRTH/other", b""))
    assert (
        node.predecoded.reason is Reason.SPARKPLUG_UNMAPPED and "g/other" in node.predecoded.detail
    )
    _birth(spb, ts)
    dbirth = sp.DBirth(timestamp=ts, seq=2, metrics=(_metric("X", 9, sp.DataType.DOUBLE, 1.0, ts),))
    (device,) = spb.route(_incoming("spBv1.0/g/DBIRTH/n/d2", dbirth.encode(include_dtypes=True)))
    assert (
        device.predecoded.reason is Reason.SPARKPLUG_UNMAPPED and "'d2'" in device.predecoded.detail
    )
    data = sp.DData(
        timestamp=ts, seq=3, metrics=(_metric("Other", 7, sp.DataType.DOUBLE, 1.0, ts),)
    )
    (metric,) = spb.route(_incoming("spBv1.0/g/DDATA/n/d", data.encode(include_dtypes=True)))
    (rejection,) = metric.predecoded.rejections
    assert rejection.reason is Reason.SPARKPLUG_UNMAPPED and "'Other'" in rejection.detail


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("Count: part_count", "Count: part_cnt"),
            ":11: edge_nodes[0].devices[0].metrics['Count'].signal: 'part_cnt' is not in wire.signals",
        ),
        (("    gateway: gw-spb\n", ""), ":2: edge_nodes[0].gateway: missing"),
        (
            ("device: dev-1", "device: ent-2/dev-1"),
            ":8: edge_nodes[0].devices[0].device: ent-2/dev-1 belongs to enterprise 'ent-2', but this edge node belongs to 'ent-1'",
        ),
        (
            ("Count: part_count", "Count: {signal: part_count, scale: x}"),
            "scale and offset must be numbers",
        ),
    ],
)
def test_a_bad_mapping_is_refused_naming_file_line_and_field(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    assert message in str(err.value)
