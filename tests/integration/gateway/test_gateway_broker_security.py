"""The shipped secure broker config (deploy/mosquitto/secure.conf + acl) with a real Mosquitto.

Credentials come from `shulian gateway credentials`; certificates from a throwaway CA
(tests/secure_broker.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gateway_fakes import eventually, eventually_sync, fake_app, fake_settings, make_device
from paho.mqtt.enums import CallbackAPIVersion
from secure_broker import SecureBroker, start_secure_broker

from shulian.devservices import mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary")


@pytest.fixture()
def secure_broker(tmp_path: Path) -> Any:
    broker = start_secure_broker(
        tmp_path, gateways=[("ent-a", "gw-1"), ("ent-b", "gw-1")], readers=["ingest@shulian"]
    )
    yield broker
    broker.stop()


class Client:
    """A blocking paho client for one login."""

    def __init__(self, url: str, username: str, password: str, ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connack: str | None = None
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        host, port = url.split("://")[1].split(":")
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        self.connack = str(reason)
        if not reason.is_failure:
            self.connected.set()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes) -> Any:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        return info

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gateway_cannot_publish_into_another_enterprise(secure_broker: SecureBroker) -> None:
    pw = secure_broker.passwords
    reader = Client(secure_broker.plain_url, "ingest@shulian", pw["ingest@shulian"])
    gw_a = Client(secure_broker.plain_url, "ent-a/gw-1", pw["ent-a/gw-1"])
    gw_b = Client(secure_broker.plain_url, "ent-b/gw-1", pw["ent-b/gw-1"])
    try:
        for client in (reader, gw_a, gw_b):
            assert client.connected.wait(10), client.connack
        reader.subscribe("shulian/v1/#")
        gw_a.publish("shulian/v1/ent-a/gw-1/telemetry", b"a-own")
        gw_a.publish("shulian/v1/ent-b/gw-1/telemetry", b"a-forged")  # into enterprise B
        gw_a.publish("shulian/v1/ent-a/gw-2/status", b"a-other-gateway")
        gw_b.publish("shulian/v1/ent-b/gw-1/telemetry", b"b-marker")  # arrives after the above
        eventually_sync(lambda: (reader.messages or [("", b"")])[-1][1] == b"b-marker")
        payloads = [m[1] for m in reader.messages]
        assert payloads == [b"a-own", b"b-marker"], payloads
        # Readers read; they do not write.
        reader.publish("shulian/v1/ent-a/gw-1/telemetry", b"reader-write")
        gw_a.publish("shulian/v1/ent-a/gw-1/telemetry", b"a-marker")
        eventually_sync(lambda: reader.messages[-1][1] == b"a-marker")
        assert b"reader-write" not in [m[1] for m in reader.messages]
    finally:
        for client in (reader, gw_a, gw_b):
            client.stop()


def test_wrong_password_is_refused_with_a_clear_message(
    secure_broker: SecureBroker, tmp_path: Path, caplog: Any
) -> None:
    bad = Client(secure_broker.plain_url, "ent-a/gw-1", "not-the-password")
    try:
        eventually_sync(lambda: bad.connack, what="CONNACK")
        assert bad.connack in ("Not authorized", "Bad user name or password")
    finally:
        bad.stop()


async def test_gateway_over_tls_with_its_credentials_publishes(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    pw = secure_broker.passwords
    reader = Client(secure_broker.plain_url, "ingest@shulian", pw["ingest@shulian"])
    assert reader.connected.wait(10)
    reader.subscribe("shulian/v1/ent-a/gw-1/telemetry")
    (tmp_path / "pw").write_text(pw["ent-a/gw-1"] + "\n")
    settings = fake_settings(
        secure_broker.tls_url,
        tmp_path / "gw",
        mqtt={
            "username": "ent-a/gw-1",
            "password_file": str(tmp_path / "pw"),
            "ca_file": str(secure_broker.folder / "tls" / "ca.crt"),
        },
    )
    app = fake_app(settings, [make_device("s1")])
    await app.start()
    try:
        await eventually(lambda: len(reader.messages) >= 3, what="batches over TLS", timeout_s=15)
        assert app.metrics.publisher.batches_refused == 0
    finally:
        await app.stop()
        reader.stop()


async def test_gateway_with_wrong_password_or_untrusted_ca_logs_why(
    secure_broker: SecureBroker, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.publisher")
    (tmp_path / "pw").write_text("wrong\n")
    settings = fake_settings(
        secure_broker.tls_url,
        tmp_path / "gw",
        mqtt={
            "username": "ent-a/gw-1",
            "password_file": str(tmp_path / "pw"),
            "ca_file": str(secure_broker.folder / "tls" / "ca.crt"),
        },
    )
    app = fake_app(settings, [make_device("s1")])
    await app.start()
    try:
        await eventually(lambda: "refused the connection" in caplog.text, what="refusal logged")
        assert "password" in caplog.text and "wrong" not in caplog.text.replace("wrong\n", "")
        assert not app.publisher.is_connected
    finally:
        await app.stop()

    caplog.clear()
    settings = fake_settings(
        secure_broker.tls_url,
        tmp_path / "gw2",
        mqtt={
            "username": "ent-a/gw-1",
            "password": secure_broker.passwords["ent-a/gw-1"],
            "ca_file": str(secure_broker.folder / "tls" / "rogue-ca.crt"),
        },
    )
    app = fake_app(settings, [make_device("s2")])
    await app.start()
    try:
        await eventually(lambda: "not trusted" in caplog.text, what="TLS refusal logged")
        await eventually(lambda: app.publisher._refusals._suppressed, what="a second attempt")
        [refusal] = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
        assert f"cannot connect to {secure_broker.tls_url} as " in refusal
        assert f"not trusted by the CA in {secure_broker.rogue_ca_file} (mqtt.ca_file)" in refusal
        assert "Set mqtt.ca_file to the CA certificate that signed the broker's" in refusal
        assert not app.publisher.is_connected
    finally:
        await app.stop()

    caplog.clear()
    mismatched = f"mqtts://localhost:{secure_broker.tls_port}"
    settings = fake_settings(
        mismatched,
        tmp_path / "gw3",
        mqtt={
            "username": "ent-a/gw-1",
            "password": secure_broker.passwords["ent-a/gw-1"],
            "ca_file": str(secure_broker.ca_file),
        },
    )
    app = fake_app(settings, [make_device("s3")])
    await app.start()
    try:
        await eventually(lambda: "not valid for" in caplog.text, what="host name refusal logged")
        assert f"cannot connect to {mismatched} as " in caplog.text
        assert "not valid for the host name 'localhost'" in caplog.text
        assert f"verified against the CA in {secure_broker.ca_file}" in caplog.text
        assert not app.publisher.is_connected
    finally:
        await app.stop()


async def test_batches_refused_by_the_acl_stay_in_the_buffer(
    secure_broker: SecureBroker, tmp_path: Path, caplog: Any
) -> None:
    """A gateway configured as enterprise B but holding A's login: nothing is lost or deleted."""
    pw = secure_broker.passwords
    settings = fake_settings(
        secure_broker.plain_url,
        tmp_path / "gw",
        gateway={"enterprise": "ent-b"},
        mqtt={"username": "ent-a/gw-1", "password": pw["ent-a/gw-1"]},
    )
    app = fake_app(settings, [make_device("x1", enterprise="ent-b")])
    await app.start()
    try:
        await eventually(
            lambda: app.metrics.publisher.batches_refused > 0, what="refusal", timeout_s=15
        )
        stats = await app.buffer.stats()
        assert app.metrics.publisher.batches_published == 0
        assert stats.batches >= 1, "a refused batch is kept, not deleted"
        assert "Not authorized" in caplog.text and "ACL" in caplog.text
        # Refused batches are retried after a growing pause, not at network speed.
        seq = app.batcher.seq
        await eventually(lambda: app.batcher.seq >= seq + 10, what="more batches")
        assert app.metrics.publisher.batches_refused <= app.batcher.seq + 1
        assert (await app.buffer.stats()).batches >= app.batcher.seq - 1, "none deleted"
    finally:
        await app.stop()


def test_a_gateway_reads_only_its_own_configuration_topic(secure_broker: SecureBroker) -> None:
    """The shipped ACL: the ingest publishes each gateway's config; a gateway reads only its own,
    whether it asks for another's topic by name or by wildcard (retained copies included)."""
    url, pw = secure_broker.plain_url, secure_broker.passwords
    ingest = Client(url, "ingest@shulian", pw["ingest@shulian"])
    try:
        assert ingest.connected.wait(5), ingest.connack
        for enterprise in ("ent-a", "ent-b"):
            info = ingest.client.publish(
                f"shulian/v1/{enterprise}/gw-1/config", f"for {enterprise}".encode(), 1, True
            )
            info.wait_for_publish(5)
    finally:
        ingest.stop()
    gw_a = Client(url, "ent-a/gw-1", pw["ent-a/gw-1"])
    gw_b = Client(url, "ent-b/gw-1", pw["ent-b/gw-1"])
    try:
        assert gw_a.connected.wait(5) and gw_b.connected.wait(5)
        gw_b.subscribe("shulian/v1/ent-b/gw-1/config")
        gw_a.subscribe("shulian/v1/ent-b/gw-1/config")  # another enterprise's gateway, by name
        gw_a.subscribe("shulian/v1/+/+/config")  # and by wildcard
        eventually_sync(lambda: gw_b.messages and gw_a.messages, what="retained configurations")
        time.sleep(0.5)  # give a wrongly allowed delivery time to arrive
        assert gw_b.messages == [("shulian/v1/ent-b/gw-1/config", b"for ent-b")]
        assert gw_a.messages == [("shulian/v1/ent-a/gw-1/config", b"for ent-a")]
    finally:
        gw_a.stop()
        gw_b.stop()
