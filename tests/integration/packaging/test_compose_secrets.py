"""deploy/compose/make-secrets makes what docker-compose.yml mounts, and it works together: the
CA and broker certificate, the password file and ACL, and the ingest's and demo gateway's logins,
used by a real Mosquitto with the shipped secure.conf and by the ingest's own consumer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from ruamel.yaml import YAML
from support import wait_until

from ingest.consumer import Consumer
from ingest.decode import Incoming
from ingest.metrics import IngestMetrics
from ingest.settings import MqttSettings
from shulian.devservices import MOSQUITTO_CONF_DIR, Mosquitto, free_port, mosquitto_binary

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "deploy" / "compose" / "make-secrets"

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("openssl") is None,
    reason="needs mosquitto and openssl",
)


def _make_secrets(out: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *names],
        env={
            "PATH": "/usr/bin:/bin",
            "SHULIAN_SECRETS_DIR": str(out),
            "SHULIAN_CLI": f"{sys.executable} -m shulian",
            "PYTHONPATH": str(REPO),
        },
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_make_secrets_gives_a_broker_the_ingest_and_the_gateway_can_use(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    made = _make_secrets(out, "127.0.0.1")
    assert made.returncode == 0, made.stdout + made.stderr
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy/compose/secrets/"):
                assert (out / source.removeprefix("./deploy/compose/secrets/")).is_dir(), source
    assert (out.stat().st_mode & 0o077) == 0, "the secrets folder is private"
    again = _make_secrets(out, "127.0.0.1")
    assert again.returncode == 1 and "already holds a CA" in again.stderr

    # The broker as compose runs it: common.conf + secure.conf, its files from secrets/broker.
    port = free_port()
    conf = (MOSQUITTO_CONF_DIR / "secure.conf").read_text()
    conf = conf.replace("/etc/mosquitto/shulian", str(out / "broker"))
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1")
    (tmp_path / "secure.conf").write_text(conf)
    broker = Mosquitto(
        tmp_path / "mosquitto",
        security_conf=tmp_path / "secure.conf",
        extra_conf="use_username_as_clientid true\n",
    ).start()
    received: list[Incoming] = []
    consumer = Consumer(
        MqttSettings(
            url=f"mqtts://127.0.0.1:{port}",
            username="ingest-1@shulian",
            password_file=out / "ingest" / "ingest-1.mqtt-password",
            ca_file=out / "ingest" / "ca.crt",
        ),
        received.append,
        IngestMetrics(),
    )
    consumer.start()
    gateway = paho.Client(CallbackAPIVersion.VERSION2, client_id="x", protocol=paho.MQTTv5)
    try:
        assert consumer.subscribed.wait(15), (tmp_path / "mosquitto" / "mosquitto.log").read_text()
        password = (out / "gateway" / "gw-ent-001.mqtt-password").read_text().strip()
        gateway.username_pw_set("ent-001/gw-ent-001", password)
        gateway.tls_set(ca_certs=str(out / "gateway" / "ca.crt"))
        acks: list[Any] = []
        gateway.on_publish = lambda c, u, mid, reason, p: acks.append(reason)
        connected = threading.Event()
        gateway.on_connect = lambda c, u, f, reason, p: connected.set()
        gateway.connect("127.0.0.1", port)
        gateway.loop_start()
        assert connected.wait(10)
        gateway.publish("shulian/v1/ent-001/gw-ent-001/telemetry", b"{}", qos=1)
        gateway.publish("shulian/v1/ent-002/gw-01/telemetry", b"{}", qos=1)  # not its topics
        wait_until(lambda: len(acks) == 2, 10, what="both PUBACKs")
        wait_until(lambda: received, 10, what="the ingest to receive the gateway's message")
        assert [m.topic for m in received] == ["shulian/v1/ent-001/gw-ent-001/telemetry"]
        assert not acks[0].is_failure and acks[1].is_failure, [str(a) for a in acks]
    finally:
        gateway.disconnect()
        gateway.loop_stop()
        consumer.stop()
        broker.stop()
