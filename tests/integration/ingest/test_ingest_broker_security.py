"""The ingest against the shipped secure broker config (TLS, passwords, ACL, client ids tied to
logins): it connects over TLS with its own login, refuses a broker it cannot verify with one clear
log line, and no other login can take over its session."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from ingest_support import (
    FakeGateway,
    duplicate_rows,
    ingest_settings,
    machine_samples,
    now_ms,
    scalar,
    wait_until,
)
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from secure_broker import SecureBroker, start_secure_broker

from ingest.consumer import Consumer
from ingest.metrics import IngestMetrics
from ingest.service import IngestService
from ingest.settings import MqttSettings
from shulian.devservices import mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")

INGEST_LOGIN = "ingest@shulian"
INGEST_CLIENT_ID = "shulian-ingest-factory-cloud-1"
"""As predictable as the default ``shulian-ingest-<hostname>``."""


@pytest.fixture()
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    broker = start_secure_broker(
        tmp_path, gateways=[("ent-a", "gw-1"), ("ent-b", "gw-9")], readers=[INGEST_LOGIN]
    )
    yield broker
    broker.stop()


def _mqtt(broker: SecureBroker, **changes: Any) -> dict[str, Any]:
    return {
        "url": broker.tls_url,
        "username": INGEST_LOGIN,
        "password": broker.passwords[INGEST_LOGIN],
        "ca_file": str(broker.ca_file),
        "client_id": INGEST_CLIENT_ID,
        **changes,
    }


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ingest.consumer" and r.levelno >= logging.WARNING
    ]


def _consumer(broker: SecureBroker, **changes: Any) -> Consumer:
    settings = MqttSettings(**_mqtt(broker, reconnect_max_s=1, **changes))
    consumer = Consumer(settings, lambda incoming: None, IngestMetrics())
    consumer.start()
    return consumer


@pytest.mark.parametrize(
    ("case", "changes", "expected"),
    [
        ("another CA", {"ca_file": "ROGUE"}, "is not trusted by the CA in ROGUE (mqtt.ca_file)"),
        (
            "a host name the certificate does not list",
            {"url": "mqtts://localhost:PORT"},
            "its TLS certificate is not valid for the host name 'localhost'",
        ),
    ],
)
def test_a_broker_that_cannot_be_verified_is_refused_with_one_clear_log_line(
    secure_broker: SecureBroker,
    caplog: pytest.LogCaptureFixture,
    case: str,
    changes: dict[str, str],
    expected: str,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.consumer")
    rogue = str(secure_broker.rogue_ca_file)
    changes = {k: v.replace("ROGUE", rogue) for k, v in changes.items()}
    changes = {k: v.replace("PORT", str(secure_broker.tls_port)) for k, v in changes.items()}
    expected = expected.replace("ROGUE", rogue)
    consumer = _consumer(secure_broker, **changes)
    try:
        wait_until(
            lambda: consumer.failed_attempts >= 3, timeout_s=20, what="three refused attempts"
        )
        assert not consumer.connected.is_set()
    finally:
        consumer.stop()
    refusals = _refusals(caplog)
    assert len(refusals) == 1, f"{case}: logged once, not per attempt: {refusals}"
    [message] = refusals
    address = changes.get("url", secure_broker.tls_url)
    assert f"refusing the broker at {address}: " in message
    assert expected in message, message
    assert "retrying" in message
    if "ca_file" in changes:
        assert "Set mqtt.ca_file (SHULIAN_INGEST_MQTT__CA_FILE) to the CA certificate" in message


def test_mqtts_to_a_plaintext_port_says_to_use_the_tls_listener(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.consumer")
    plain = secure_broker.plain_url.replace("mqtt://", "mqtts://")
    consumer = _consumer(secure_broker, url=plain)
    try:
        wait_until(lambda: consumer.failed_attempts >= 2, timeout_s=20, what="refused attempts")
    finally:
        consumer.stop()
    [message] = _refusals(caplog)
    assert message.startswith(f"TLS handshake with the broker at {plain} failed (")
    assert "Check that this port is the broker's TLS listener" in message


def test_a_wrong_password_is_logged_once_naming_the_login(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.consumer")
    consumer = _consumer(secure_broker, password="not-the-password")
    try:
        wait_until(lambda: consumer.failed_attempts >= 3, timeout_s=20, what="three refused logins")
    finally:
        consumer.stop()
    [message] = _refusals(caplog)
    assert f"broker {secure_broker.tls_url} refused the login 'ingest@shulian'" in message
    assert "mqtt.password" in message and "not-the-password" not in caplog.text


class _Intruder:
    """Another login (a gateway's) presenting the ingest's client id, as in issue 10."""

    def __init__(self, broker: SecureBroker, client_id: str, clean_start: bool) -> None:
        self.received: list[str] = []
        self.connack: str | None = None
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.username_pw_set("ent-b/gw-9", broker.passwords["ent-b/gw-9"])
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if clean_start else 3600
        self.client.connect("127.0.0.1", broker.tls_port, clean_start=clean_start, properties=props)
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        self.connack = str(reason)
        if not reason.is_failure:
            self.connected.set()
            c.subscribe("shulian/v1/#", qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.timeout(120)
def test_another_login_presenting_the_ingests_client_id_changes_nothing(
    secure_broker: SecureBroker, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.consumer")
    service = IngestService(
        ingest_settings(pg_url, secure_broker.tls_url, mqtt=_mqtt(secure_broker))
    )
    service.start(wait_for_db_s=10)
    gateway = FakeGateway(
        secure_broker.tls_url, "ent-a", "gw-1", ["lathe-1", "mill-1"],
        username="ent-a/gw-1", password=secure_broker.passwords["ent-a/gw-1"],
        ca_file=str(secure_broker.ca_file),
    )  # fmt: skip
    try:
        consumer = service.consumer
        assert consumer is not None
        assert consumer.subscribed.wait(15), caplog.text
        generation = consumer.generation
        gateway.connect().birth()
        sent, start_ms = 0, now_ms() - 60_000
        for client_id, clean_start in [
            (INGEST_CLIENT_ID, True),
            (INGEST_CLIENT_ID, False),
            (INGEST_LOGIN, True),
            (INGEST_LOGIN, False),
        ]:
            intruder = _Intruder(secure_broker, client_id, clean_start)
            try:
                assert intruder.connected.wait(10), intruder.connack
                for _ in range(10):  # acknowledged to the gateway while the intruder is on
                    ts_ms = start_ms + 10 * sent  # distinct per batch
                    gateway.send(gateway.batch(machine_samples(gateway.devices, ts_ms, sent)))
                    sent += 1
            finally:
                intruder.stop()
            assert intruder.received == [], "a gateway's login reads no one's telemetry"
        per_batch = len(machine_samples(gateway.devices, 0, 0))
        wait_until(
            lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") >= sent * per_batch,
            timeout_s=30, what=f"{sent} batches stored",
        )  # fmt: skip
        assert scalar(pg_url, "SELECT count(*) FROM telemetry") == sent * per_batch
        assert duplicate_rows(pg_url) == 0
        assert consumer.generation == generation, "the ingest's connection was never taken over"
        assert consumer.connected.is_set()
        assert not [m for m in _refusals(caplog) if "disconnected" in m], caplog.text
    finally:
        gateway.close()
        service.stop()


def test_an_unreadable_ca_file_stops_start_up_at_once_naming_it(tmp_path: Path) -> None:
    """Before the database is even tried (here it would be waited for a minute)."""
    missing = tmp_path / "missing-ca.crt"
    result = subprocess.run(
        [sys.executable, "-m", "shulian", "ingest", "run", "--no-api",
         "--db", "postgresql://postgres@127.0.0.1:9/none", "--mqtt", "mqtts://127.0.0.1:9"],
        env={**os.environ, "SHULIAN_INGEST_MQTT__CA_FILE": str(missing)},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"mqtt.ca_file: cannot load {missing} as a PEM CA certificate" in result.stderr
