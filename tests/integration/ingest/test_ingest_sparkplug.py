"""Sparkplug B from a third-party edge node (pysparkplug + plain paho) into our database.

Real Mosquitto, real PostgreSQL on both storage paths, the ingest in process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from ingest_support import ingest_settings, rows, scalar, wait_until
from sparkplug_support import EdgeNode, now_ms, sparkplug_ingest, write_mapping

from ingest.errors import ConfigError
from ingest.sparkplug import load_mapping
from shulian.devservices import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.needs_pg, pytest.mark.needs_broker]

SAMPLES = """SELECT s.name, t.ts, coalesce(t.value::text, t.value_text)
   FROM telemetry t JOIN signals s ON s.id = t.signal_id JOIN devices d ON d.key = t.device_key
   WHERE d.enterprise_id = 'ent-001' AND d.device_id = 'press-01' ORDER BY s.name, t.ts"""


@pytest.fixture()
def edge(mosquitto: Mosquitto) -> Iterator[Callable[..., EdgeNode]]:
    made: list[EdgeNode] = []

    def make(**kw: Any) -> EdgeNode:
        node = EdgeNode(mosquitto.url, **kw).connect()
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def _points(pg_url: str) -> list[tuple[Any, ...]]:
    return rows(pg_url, SAMPLES)


def _gateway_online(pg_url: str) -> bool | None:
    return scalar(
        pg_url,
        "SELECT online FROM gateways WHERE enterprise_id = 'ent-001' AND id = 'spb-neuron-1'",
    )


def test_a_third_party_edge_node_lands_in_the_database_and_the_monitoring_pages(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path, edge: Callable[..., EdgeNode]
) -> None:
    service = sparkplug_ingest(pg_url, mosquitto.url, write_mapping(tmp_path))
    try:
        node = edge(devices=["plc-1", "plc-9"])
        node.birth(strokes=10)
        base = now_ms() + 100  # apart from the birth's own values
        for i in range(5):
            node.data(
                "plc-1",
                {"Press/Force": 2000.0 + i, "Press/Strokes": 11 + i, "State": "running"},
                ts_ms=base + i,
            ).wait_for_publish(10)
        # A historical batch (what the node buffered while its broker was away).
        node.data("plc-1", {"Press/Force": 1500.0}, ts_ms=base - 60_000, historical=True)
        node.data("plc-1", {"Secret/Unmapped": 1.5}, ts_ms=base + 10).wait_for_publish(10)
        node.data("plc-9", {"Press/Force": 1.0}, ts_ms=base + 10).wait_for_publish(10)

        wait_until(lambda: len(_points(pg_url)) >= 1 + 1 + 1 + 5 * 3 + 1, what="samples stored")
        points = _points(pg_url)
        force = [float(v) for name, _, v in points if name == "press_force"]
        assert force == pytest.approx(
            [1.5, 1.0, 2.0, 2.001, 2.002, 2.003, 2.004]
        )  # kN, in time order
        strokes = [float(v) for name, _, v in points if name == "stroke_count"]
        assert strokes == [10, 11, 12, 13, 14, 15]
        assert {v for name, _, v in points if name == "machine_state"} == {"idle", "running"}
        assert _gateway_online(pg_url) is True
        assert _pages(pg_url) == ([("spb-neuron-1", True)], [("press-01", "running", True)])
        wait_until(
            lambda: (
                "sparkplug_unmapped"
                in {r[0] for r in rows(pg_url, "SELECT reason FROM dead_letters")}
            )
        )
        reasons = {
            r[0]: r[1]
            for r in rows(
                pg_url, "SELECT reason, string_agg(detail, ' | ') FROM dead_letters GROUP BY 1"
            )
        }
        assert "Secret/Unmapped" in reasons["sparkplug_unmapped"]
        wait_until(
            lambda: (
                "plc-9"
                in (scalar(pg_url, "SELECT string_agg(detail, ' ') FROM dead_letters") or "")
            ),
            what="the unmapped device dead-lettered",
        )

        node.device_death("plc-1")
        wait_until(
            lambda: (
                scalar(pg_url, "SELECT connection FROM devices WHERE device_id = 'press-01'")
                == "disconnected"
            ),
            what="DDEATH -> device disconnected",
        )
        node.node_death()
        wait_until(lambda: _gateway_online(pg_url) is False, what="NDEATH -> gateway offline")
        gateways, devices = _pages(pg_url)
        assert gateways == [("spb-neuron-1", False)]
        assert [(d, state) for d, state, _ in devices] == [("press-01", "offline")]
        assert service.sparkplug is not None and service.sparkplug.rebirths_requested == 0
    finally:
        service.stop()


def _pages(pg_url: str) -> tuple[list[tuple[str, bool]], list[tuple[str, str, bool]]]:
    """What the monitoring API behind the enterprise's pages says: its gateways (id, online) and
    its devices (id, state, online), as the enterprise's own login sees them."""
    import asyncio

    from monitoring.api.app import create_app
    from monitoring.auth import Role, create_token
    from monitoring.settings import MonitoringSettings

    async def token() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            made = await create_token(conn, Role.ENTERPRISE, enterprise="ent-001")
            return made.secret

    headers = {"Authorization": f"Bearer {asyncio.run(token())}"}
    with TestClient(create_app(MonitoringSettings(db={"url": pg_url}))) as client:
        gateways = client.get("/api/enterprises/ent-001/gateways", headers=headers)
        devices = client.get("/api/enterprises/ent-001/devices", headers=headers)
        assert gateways.status_code == devices.status_code == 200, (gateways.text, devices.text)
        return (
            [(g["id"], g["online"]) for g in gateways.json()["gateways"]],
            [(d["id"], d["state"], d["online"]) for d in devices.json()["devices"]],
        )


def test_an_ingest_restarted_with_empty_caches_asks_for_a_rebirth_and_then_decodes(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path, edge: Callable[..., EdgeNode]
) -> None:
    mapping = write_mapping(tmp_path)
    client_id = "ingest-spb-restart"
    first = sparkplug_ingest(pg_url, mosquitto.url, mapping, client_id)
    node = edge()
    node.birth()
    base = now_ms() + 100  # apart from the birth's own values
    try:
        node.data("plc-1", {"Press/Strokes": 1}, ts_ms=base).wait_for_publish(10)
        wait_until(lambda: len(_points(pg_url)) >= 4, what="first sample")
    finally:
        first.stop()
    # While the ingest is away, the node keeps sending by alias; the broker keeps them (QoS 1).
    for i in range(2, 6):
        node.data("plc-1", {"Press/Strokes": i}, ts_ms=base + i).wait_for_publish(10)
    # Empty caches: the births the first ingest kept are gone (as for an ingest that never saw
    # this node's birth), so nothing can decode the aliases until the node is born again.
    assert scalar(pg_url, "SELECT count(*) FROM sparkplug_births") == 2
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM sparkplug_births")
    second = sparkplug_ingest(pg_url, mosquitto.url, mapping, client_id)
    try:
        wait_until(lambda: "Node Control/Rebirth" in node.commands, what="a rebirth request")

        def data_strokes() -> list[float]:
            return [
                float(v)
                for n, ts, v in _points(pg_url)
                if n == "stroke_count" and base <= round(ts.timestamp() * 1000) <= base + 5
            ]

        wait_until(lambda: len(data_strokes()) >= 5, what="the held data decoded after the rebirth")
        assert data_strokes() == [1, 2, 3, 4, 5]
    finally:
        second.stop()


def test_a_seq_gap_requests_a_rebirth_and_keeps_the_data(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path, edge: Callable[..., EdgeNode]
) -> None:
    service = sparkplug_ingest(pg_url, mosquitto.url, write_mapping(tmp_path))
    try:
        node = edge()
        node.birth()
        base = now_ms() + 100  # apart from the birth's own values
        node.data("plc-1", {"Press/Strokes": 1}, ts_ms=base).wait_for_publish(10)
        wait_until(lambda: len(_points(pg_url)) >= 4, what="first sample")
        assert "Node Control/Rebirth" not in node.commands
        node.data("plc-1", {"Press/Strokes": 2}, ts_ms=base + 1, skip_seq=3).wait_for_publish(10)
        wait_until(lambda: "Node Control/Rebirth" in node.commands, what="a rebirth request")
        wait_until(
            lambda: 2.0 in [float(v) for n, _, v in _points(pg_url) if n == "stroke_count"],
            what="the data after the gap stored",
        )
    finally:
        service.stop()


def test_a_mapping_into_another_enterprises_device_is_refused_at_load(
    pg_url: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # Named in the file: refused before any database is asked.
    crossing = write_mapping(
        tmp_path,
        (Path(write_mapping(tmp_path)).read_text()).replace(
            "device: press-01", "device: ent-002/press-01"
        ),
    )
    with pytest.raises(ConfigError) as err:
        load_mapping(crossing)
    assert f"{crossing}:9: edge_nodes[0].devices[0].device" in str(err.value)
    assert "enterprise 'ent-002'" in str(err.value)

    # Registered to another enterprise in the registry: refused when the ingest starts.
    from ingest.service import prepare_database

    prepare_database(ingest_settings(pg_url, mosquitto.url))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO enterprises (id, name) VALUES ('ent-002', 'Other')")
        conn.execute(
            "INSERT INTO devices (enterprise_id, device_id) VALUES ('ent-002', 'press-01')"
        )
    mapping = write_mapping(tmp_path)
    with pytest.raises(ConfigError) as err:
        sparkplug_ingest(pg_url, mosquitto.url, mapping)
    text = str(err.value)
    assert f"{mapping}:9: edge_nodes[0].devices[0].device" in text
    assert "device 'press-01' is registered to enterprise ent-002, not to 'ent-001'" in text
