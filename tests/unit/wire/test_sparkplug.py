"""wire.sparkplug: the generated protobuf module, topics and values, against pysparkplug."""

from __future__ import annotations

import pysparkplug as sp
import pytest
from google.protobuf import descriptor_pb2
from pysparkplug._protobuf import sparkplug_b_pb2 as their_pb

from wire import sparkplug as spb
from wire import sparkplug_b_pb2 as our_pb
from wire.sparkplug_gen import stale


def test_generated_module_is_what_protoc_makes_from_the_proto() -> None:
    assert stale() == [], "run `python -m wire.sparkplug_gen` after editing wire/sparkplug_b.proto"


def test_our_schema_is_the_one_pysparkplug_was_generated_from() -> None:
    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    our_pb.DESCRIPTOR.CopyToProto(ours)
    their_pb.DESCRIPTOR.CopyToProto(theirs)
    for proto in (ours, theirs):
        proto.ClearField("name")
    assert ours == theirs


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (spb.DataType.INT8, -5),
        (spb.DataType.INT16, -300),
        (spb.DataType.INT32, -70000),
        (spb.DataType.INT64, -(2**40)),
        (spb.DataType.UINT32, 4_000_000_000),
        (spb.DataType.DOUBLE, 12.5),
        (spb.DataType.FLOAT, 0.5),
        (spb.DataType.BOOLEAN, True),
        (spb.DataType.STRING, "running"),
    ],
)
def test_values_round_trip_through_pysparkplug(datatype: spb.DataType, value: object) -> None:
    raw = spb.encode_payload(1, [spb.MetricOut(datatype, value, name="m")], seq=3)  # type: ignore[arg-type]
    theirs = sp.DData.decode(raw)
    assert theirs.metrics[0].value == value and theirs.seq == 3
    back = sp.DData(
        timestamp=1,
        seq=4,
        metrics=(
            sp.Metric(timestamp=1, name="m", datatype=sp.DataType(int(datatype)), value=value),
        ),  # type: ignore[arg-type]
    ).encode(include_dtypes=True)
    metric = spb.decode_payload(back).metrics[0]
    assert spb.metric_value(metric, metric.datatype) == value


def test_topics_parse_and_refuse() -> None:
    topic = spb.parse_topic("spBv1.0/plant/DDATA/edge-1/press 3")
    assert (topic.type, topic.group, topic.node, topic.device) == (
        spb.MessageType.DDATA,
        "plant",
        "edge-1",
        "press 3",
    )
    assert str(topic) == "spBv1.0/plant/DDATA/edge-1/press 3"
    assert spb.parse_topic("spBv1.0/STATE/scada").node == "scada"
    for bad in ("spBv1.0/plant/DDATA/edge-1", "spBv1.0/plant/NDATA/a/b", "spBv1.0/p/XX/n"):
        with pytest.raises(spb.SparkplugError):
            spb.parse_topic(bad)


def test_garbage_is_an_undecodable_payload() -> None:
    with pytest.raises(spb.SparkplugError) as err:
        spb.decode_payload(b"\xff\xff\xff")
    assert err.value.reason == "undecodable"
