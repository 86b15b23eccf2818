"""The gateway as a Sparkplug B edge node, read back by an independent implementation.

Everything the gateway publishes goes through real Mosquitto and is decoded by pysparkplug (its own
protobuf module and payload classes; nothing of ours), with a plain paho client in the test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as sp
import pytest
from gateway_fakes import eventually as wait_until_async
from gateway_fakes import fake_app, fake_settings, make_device
from paho.mqtt.enums import CallbackAPIVersion
from pysparkplug._protobuf import sparkplug_b_pb2 as their_pb

from shulian.devservices import Mosquitto

pytestmark = pytest.mark.integration

GROUP, NODE = "plant-7", "edge-1"


def _units(raw: bytes) -> dict[str, str]:
    """metric name -> engUnit property, read with pysparkplug's generated protobuf module."""
    payload = their_pb.Payload.FromString(raw)
    out = {}
    for metric in payload.metrics:
        props = dict(zip(metric.properties.keys, metric.properties.values, strict=True))
        if "engUnit" in props:
            out[metric.name] = props["engUnit"].string_value
    return out


def _of(messages: list[Any], kind: str, device: str | None = None) -> list[Any]:
    return [
        m
        for m in messages
        if m.topic.split("/")[2] == kind and (device is None or m.topic.endswith("/" + device))
    ]


def _command(url: str, topic: str, payload: bytes) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"cmd-{time.monotonic_ns()}", protocol=paho.MQTTv5
    )
    client.connect(host, int(port))
    client.loop_start()
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.publish(
        topic, payload, qos=1, retain=topic.startswith("spBv1.0/STATE")
    ).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


async def test_births_and_data_decode_in_pysparkplug_beside_our_contract(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    spb = collect(mosquitto.url, "spBv1.0/#")
    ours = collect(mosquitto.url, "shulian/v1/#")
    settings = fake_settings(
        mosquitto.url,
        tmp_path / "gw",
        sparkplug={"mode": "beside", "group": GROUP, "node": NODE},
    )
    app = fake_app(settings, [make_device("m1"), make_device("m2")])
    await app.start()
    try:
        await wait_until_async(
            lambda: len(_of(spb.snapshot(), "DDATA")) >= 6 and len(ours.batches()) >= 3,
            timeout_s=15,
            what="Sparkplug data and our batches",
        )
        messages = spb.snapshot()
        nbirth = sp.NBirth.decode(_of(messages, "NBIRTH")[0].payload)
        assert nbirth.seq == 0
        by_name = {m.name: m for m in nbirth.metrics}
        assert by_name["bdSeq"].datatype is sp.DataType.INT64
        assert by_name["Node Control/Rebirth"].value is False
        bdseq = by_name["bdSeq"].value

        births = {}
        for device in ("m1", "m2"):
            raw = _of(messages, "DBIRTH", device)[0].payload
            birth = births[device] = sp.DBirth.decode(raw)
            types = {m.name: m.datatype for m in birth.metrics}
            assert types == {
                "machine_state": sp.DataType.STRING,
                "part_count": sp.DataType.DOUBLE,
                "spindle_speed": sp.DataType.DOUBLE,
            }
            assert _units(raw) == {"spindle_speed": "rpm"}
            assert all(m.alias is not None for m in birth.metrics)

        # Every DDATA value equals the one our own contract carried for that device, signal, time.
        truth = {(s.device, s.signal, s.ts_ms): s.value for b in ours.batches() for s in b.samples}
        seen = 0
        for message in _of(messages, "DDATA"):
            device = message.topic.rsplit("/", 1)[1]
            data = sp.DData.decode(message.payload, birth=births[device])
            for metric in data.metrics:
                key = (device, metric.name, metric.timestamp)
                if key in truth:
                    assert (
                        metric.value == pytest.approx(truth[key])
                        if not isinstance(truth[key], str)
                        else metric.value == truth[key]
                    )
                    seen += 1
        assert seen >= 6

        # seq: NBIRTH 0, then +1 per message (mod 256) over births and data alike.
        seqs = [
            sp.DData.decode(m.payload, birth=births[m.topic.rsplit("/", 1)[1]]).seq
            if "/DDATA/" in m.topic
            else their_pb.Payload.FromString(m.payload).seq
            for m in messages
            if m.topic.split("/")[2] in ("NBIRTH", "DBIRTH", "DDATA")
        ]
        assert seqs == [i % 256 for i in range(len(seqs))]
    finally:
        await app.stop()
    death = sp.NDeath.decode(_of(spb.snapshot(), "NDEATH")[-1].payload)
    assert death.bd_seq_metric.value == bdseq


async def test_rebirth_on_ncmd_and_historical_replay_after_the_primary_host_returns(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    host = "scada-1"
    state = f"spBv1.0/STATE/{host}"
    _command(mosquitto.url, state, b'{"online": false, "timestamp": 1}')
    spb = collect(mosquitto.url, f"spBv1.0/{GROUP}/#")
    settings = fake_settings(
        mosquitto.url,
        tmp_path / "gw",
        sparkplug={"mode": "only", "group": GROUP, "node": NODE, "primary_host": host},
        buffer={"batch_max_delay_ms": 50, "historical_after_s": 0.5},
    )
    app = fake_app(settings, [make_device("m1")])
    await app.start()
    try:
        # The primary host is offline: no birth, no data; the batches wait in the disk buffer.
        await wait_until_async(
            lambda: app.buffer.last_stats.batches >= 3,
            timeout_s=10,
            what="batches held in the buffer",
        )
        assert not spb.snapshot()

        _command(mosquitto.url, state, b'{"online": true, "timestamp": 2}')
        await wait_until_async(
            lambda: _of(spb.snapshot(), "DDATA", "m1"), timeout_s=10, what="data after birth"
        )
        messages = spb.snapshot()
        assert messages[0].topic.endswith("/NBIRTH/" + NODE)
        birth = sp.DBirth.decode(_of(messages, "DBIRTH", "m1")[0].payload)
        first = sp.DData.decode(_of(messages, "DDATA", "m1")[0].payload, birth=birth)
        assert all(m.is_historical for m in first.metrics), "the held batches are a replay"

        # NCMD Node Control/Rebirth: a new NBIRTH (seq 0, same bdSeq) and the device births.
        before = len(_of(messages, "NBIRTH"))
        bdseq = {m.name: m.value for m in sp.NBirth.decode(messages[0].payload).metrics}["bdSeq"]
        rebirth = sp.NCmd(
            timestamp=sp.get_current_timestamp(),
            metrics=(
                sp.Metric(
                    timestamp=sp.get_current_timestamp(),
                    name="Node Control/Rebirth",
                    datatype=sp.DataType.BOOLEAN,
                    value=True,
                ),
            ),
        )
        _command(mosquitto.url, f"spBv1.0/{GROUP}/NCMD/{NODE}", rebirth.encode(include_dtypes=True))
        await wait_until_async(
            lambda: len(_of(spb.snapshot(), "NBIRTH")) > before, timeout_s=10, what="rebirth"
        )
        again = sp.NBirth.decode(_of(spb.snapshot(), "NBIRTH")[-1].payload)
        assert again.seq == 0
        assert {m.name: m.value for m in again.metrics}["bdSeq"] == bdseq
        await wait_until_async(
            lambda: len(_of(spb.snapshot(), "DBIRTH", "m1")) >= 2, what="device rebirth"
        )
    finally:
        await app.stop()


ROUND_TRIP_MAPPING = """\
edge_nodes:
  - group: plant-7
    node: edge-1
    enterprise: ent-a
    gateway: gw-1
    devices:
      - sparkplug: m1
        device: m1
        metrics: {machine_state: machine_state, part_count: part_count, spindle_speed: spindle_speed}
"""


@pytest.mark.needs_pg
async def test_our_gateway_feeds_our_ingest_over_sparkplug_once_the_ingest_is_online(
    mosquitto: Mosquitto, pg_url: str, tmp_path: Path
) -> None:
    import asyncio

    import psycopg

    from ingest.service import IngestService
    from ingest.settings import IngestSettings

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(ROUND_TRIP_MAPPING)
    settings = fake_settings(
        mosquitto.url,
        tmp_path / "gw",
        sparkplug={"mode": "only", "group": GROUP, "node": NODE, "primary_host": "city"},
    )
    app = fake_app(settings, [make_device("m1")])
    await app.start()
    ingest = IngestService(
        IngestSettings(
            db={"url": pg_url, "pool_min": 1, "pool_max": 4},
            mqtt={"url": mosquitto.url, "client_id": "ingest-round-trip"},
            registry={"auto_register_gateways": True},
            writer={"max_delay_ms": 50, "lanes": 2},
            sparkplug={"mapping_file": mapping, "host_id": "city"},
        )
    )

    def stored() -> dict[str, int]:
        with psycopg.connect(pg_url) as conn:
            return dict(
                conn.execute(
                    "SELECT s.name, count(*) FROM telemetry t JOIN signals s ON s.id = t.signal_id "
                    "GROUP BY s.name"
                ).fetchall()
            )

    try:
        # No primary host online yet: the edge node waits, its data in the disk buffer.
        await wait_until_async(lambda: app.buffer.last_stats.batches >= 2, what="buffered data")
        assert not app.publisher.is_born
        await asyncio.to_thread(ingest.start, wait_for_db_s=10)
        await wait_until_async(
            lambda: {"machine_state", "part_count", "spindle_speed"} <= stored().keys(),
            timeout_s=20,
            what="our gateway's Sparkplug data in our database",
        )
        with psycopg.connect(pg_url) as conn:
            online = conn.execute(
                "SELECT online FROM gateways WHERE enterprise_id = 'ent-a' AND id = 'gw-1'"
            ).fetchone()
        assert online == (True,)
        assert stored()["part_count"] >= 2
    finally:
        await asyncio.to_thread(ingest.stop)
        await app.stop()


async def test_a_broker_outage_loses_no_sparkplug_data_and_replays_it_historical(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    import asyncio

    from gateway_fakes import make_profile

    spb = collect(mosquitto.url, "spBv1.0/#", session="spb-outage-sub")
    ours = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry", session="outage-sub")
    devices = [make_device(f"m{i}", profile=make_profile(interval_ms=50)) for i in range(2)]
    settings = fake_settings(
        mosquitto.url,
        tmp_path / "gw",
        buffer={"historical_after_s": 0.3},
        sparkplug={"mode": "beside", "group": GROUP, "node": NODE},
    )
    app = fake_app(settings, devices)
    await app.start()
    spb_out = app.outputs[1][0]
    try:
        await wait_until_async(lambda: _of(spb.snapshot(), "DDATA"), what="live Sparkplug data")
        await asyncio.to_thread(mosquitto.stop)
        await wait_until_async(lambda: not spb_out.is_connected, what="disconnect seen")
        before = app.batcher.seq
        await wait_until_async(lambda: app.batcher.seq >= before + 10, what="data piling up")
        await asyncio.to_thread(mosquitto.start)
        await wait_until_async(lambda: spb_out.is_born, timeout_s=15, what="a new birth")
        await app.scheduler.stop_all()
        app.batcher.flush()
        for _, _, spool in app.outputs:
            await spool.drain()
        last_seq = app.batcher.seq

        async def drained() -> bool:
            for publisher, buffer, _ in app.outputs:
                if (await buffer.stats()).batches or publisher.inflight:
                    return False
            return True

        for _ in range(400):
            if await drained():
                break
            await asyncio.sleep(0.05)
        assert await drained(), "both buffers drained"
    finally:
        await app.stop()

    await wait_until_async(
        lambda: {b.seq for b in ours.batches()} >= set(range(1, last_seq + 1)),
        timeout_s=15,
        what="every batch of our contract at its subscriber",
    )
    truth = {(s.device, s.signal, s.ts_ms, s.value) for b in ours.batches() for s in b.samples}

    def sparkplug_samples() -> tuple[set[tuple[Any, ...]], list[bool]]:
        births: dict[str, Any] = {}
        got: set[tuple[Any, ...]] = set()
        historical = []
        for message in spb.snapshot():
            kind, device = message.topic.split("/")[2], message.topic.rsplit("/", 1)[1]
            if kind == "DBIRTH":
                births[device] = sp.DBirth.decode(message.payload)
            elif kind == "DDATA":
                data = sp.DData.decode(message.payload, birth=births[device])
                for m in data.metrics:
                    value = int(m.value) if m.name == "part_count" else m.value
                    got.add((device, m.name, m.timestamp, value))
                    historical.append(m.is_historical)
        return got, historical

    await wait_until_async(
        lambda: sparkplug_samples()[0] >= truth, timeout_s=15, what="every sample in Sparkplug"
    )
    got, historical = sparkplug_samples()
    assert got == truth
    assert any(historical) and not all(historical)
    births = [
        {m.name: m.value for m in sp.NBirth.decode(m.payload).metrics}["bdSeq"]
        for m in _of(spb.snapshot(), "NBIRTH")
    ]
    assert births[-1] == (births[0] + 1) % 256, births
