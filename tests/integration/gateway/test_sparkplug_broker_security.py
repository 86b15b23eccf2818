"""The shipped broker ACL confines a Sparkplug B edge node's login to its own group and node.

Real Mosquitto with deploy/mosquitto's secure config and logins made by
``shulian gateway credentials add-sparkplug`` / ``add-reader`` (tests/secure_broker.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gateway_fakes import eventually_sync
from secure_broker import SecureBroker, start_secure_broker
from test_gateway_broker_security import Client

pytestmark = [pytest.mark.integration, pytest.mark.needs_broker]

EDGE, OTHER, READER = "sparkplug@plant-7/edge-1", "sparkplug@plant-7/edge-2", "ingest@shulian"


@pytest.fixture()
def broker(tmp_path: Path) -> Any:
    started = start_secure_broker(
        tmp_path,
        gateways=[("ent-a", "gw-1")],
        readers=[READER],
        sparkplug_nodes=[("plant-7", "edge-1"), ("plant-7", "edge-2")],
    )
    yield started
    started.stop()


def test_an_edge_node_writes_and_reads_only_its_own_sparkplug_topics(broker: SecureBroker) -> None:
    pw = broker.passwords
    reader = Client(broker.plain_url, READER, pw[READER])
    edge = Client(broker.plain_url, EDGE, pw[EDGE])
    other = Client(broker.plain_url, OTHER, pw[OTHER])
    clients = (reader, edge, other)
    try:
        for client in clients:
            assert client.connected.wait(10), client.connack
        reader.subscribe("spBv1.0/#")
        reader.subscribe("shulian/v1/#")
        edge.publish("spBv1.0/plant-7/NBIRTH/edge-1", b"own-birth")
        edge.publish("spBv1.0/plant-7/DDATA/edge-1/press", b"own-data")
        edge.publish("spBv1.0/plant-7/NDATA/edge-2", b"forged-other-node")
        edge.publish("spBv1.0/plant-8/NDATA/edge-1", b"forged-other-group")
        edge.publish("spBv1.0/plant-7/NCMD/edge-2", b"forged-command")
        edge.publish("shulian/v1/ent-a/gw-1/telemetry", b"forged-gateway")
        other.publish("spBv1.0/plant-7/NDATA/edge-2", b"marker")
        eventually_sync(lambda: (reader.messages or [("", b"")])[-1][1] == b"marker")
        assert [m[1] for m in reader.messages] == [b"own-birth", b"own-data", b"marker"]

        # Commands: the ingest may ask any node for a rebirth; a node hears only its own.
        edge.subscribe("spBv1.0/plant-7/NCMD/+")
        reader.publish("spBv1.0/plant-7/NCMD/edge-2", b"rebirth-2")
        reader.publish("spBv1.0/plant-7/NCMD/edge-1", b"rebirth-1")
        eventually_sync(lambda: b"rebirth-1" in [m[1] for m in edge.messages])
        assert b"rebirth-2" not in [m[1] for m in edge.messages]
    finally:
        for client in clients:
            client.stop()
