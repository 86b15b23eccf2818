"""Helpers for the ingest's integration tests: settings, a plain-paho gateway, database probes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from ingest.settings import IngestSettings
from wire import topics
from wire.codec import encode
from wire.payloads import Batch, DeviceStatus, GatewayStatus, Sample


def ingest_settings(db_url: str, mqtt_url: str, **sections: dict[str, Any]) -> IngestSettings:
    """Test settings: quick flushes and rollups, auto-registration on, a unique client id."""
    base: dict[str, dict[str, Any]] = {
        "db": {"url": db_url, "pool_min": 1, "pool_max": 4},
        "mqtt": {
            "url": mqtt_url,
            "client_id": f"ingest-test-{uuid.uuid4().hex[:8]}",
            "session_expiry_s": 600,
        },
        "registry": {"auto_register_gateways": True},
        "writer": {"max_delay_ms": 50, "lanes": 2},
        "storage": {"rollup_refresh_s": 0.5, "rollup_grace_s": 0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return IngestSettings(**base)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FakeGateway:
    """Publishes wire payloads with plain paho, as a gateway would (QoS 1, waits for PUBACK)."""

    url: str
    enterprise: str
    gateway: str
    devices: list[str]
    boot: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    protocol: int = paho.MQTTv5
    client: Any = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    """With an ``mqtts://`` url: the CA that signed the broker's certificate."""
    will: GatewayStatus | None = None
    """The Last Will (retained, QoS 1) the broker publishes if this connection dies."""

    def connect(self) -> FakeGateway:
        scheme, _, address = self.url.partition("://")
        host, port = address.split(":")
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fake-{self.gateway}-{uuid.uuid4().hex[:6]}",
            protocol=self.protocol,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if scheme == "mqtts":
            client.tls_set(ca_certs=self.ca_file)
        client.max_inflight_messages_set(1000)
        if self.will is not None:
            topic = topics.gateway_status(self.enterprise, self.gateway)
            client.will_set(topic, encode(self.will), qos=1, retain=True)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: connected.set()
        client.connect(host, int(port))
        client.loop_start()
        assert connected.wait(10), "fake gateway could not connect"
        self.client = client
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, wait: bool = True
    ) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(10)
        return info

    def status(self, online: bool) -> GatewayStatus:
        """This gateway's status now (the birth, or the death that is also its Last Will)."""
        return GatewayStatus(
            gateway=self.gateway,
            enterprise=self.enterprise,
            online=online,
            boot=self.boot,
            ts_ms=now_ms(),
            devices=self.devices,
        )

    def birth(self, online: bool = True) -> GatewayStatus:
        status = self.status(online)
        self.publish(
            topics.gateway_status(self.enterprise, self.gateway), encode(status), retain=True
        )
        return status

    def device_status(self, device: str, connection: str, profile: str = "") -> DeviceStatus:
        status = DeviceStatus(
            gateway=self.gateway,
            device=device,
            connection=connection,
            ts_ms=now_ms(),
            profile=profile,
        )
        self.publish(
            topics.device_status(self.enterprise, self.gateway, device), encode(status), retain=True
        )
        return status

    def batch(
        self, samples: list[Sample], *, seq: int | None = None, historical: bool = False
    ) -> Batch:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return Batch(
            gateway=self.gateway,
            boot=self.boot,
            seq=seq,
            ts_ms=now_ms(),
            historical=historical,
            samples=samples,
        )

    def send(self, batch: Batch, *, wait: bool = True) -> Any:
        return self.publish(
            topics.telemetry(self.enterprise, self.gateway), encode(batch), wait=wait
        )


def machine_samples(devices: list[str], ts_ms: int, step: int) -> list[Sample]:
    """A few signals per device: a gauge, a counter that only goes up, a bool and a state."""
    out = []
    for n, device in enumerate(devices):
        out += [
            Sample(device=device, signal="spindle_speed", ts_ms=ts_ms, value=1000.0 + step + n),
            Sample(device=device, signal="part_count", ts_ms=ts_ms, value=step),
            Sample(device=device, signal="alarm_active", ts_ms=ts_ms, value=step % 2 == 0),
            Sample(
                device=device,
                signal="machine_state",
                ts_ms=ts_ms,
                value="running" if step % 10 < 7 else "idle",
            ),
        ]
    return out


def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def run_timescaledb_job(url: str, job: int, timeout_s: float = 60.0) -> None:
    """``CALL run_job(job)`` now, again after the server's scheduler if it ran the job meanwhile.

    The scheduler starts a policy's job on its own (at once when the policy is added, then every
    period), and two runs of one job at the same time collide: a continuous aggregate refuses
    the second refresh ("... due to a concurrent refresh") and a compression job fails its chunk
    ("columnstore policy failure ... Failed to convert '1' chunks"). Once the other run ended,
    ours runs whole; any other error, or a collision lasting ``timeout_s``, is raised.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CALL run_job(%s)", (job,))
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DataException) as exc:
            collided = isinstance(exc, psycopg.errors.LockNotAvailable) or (
                "policy failure" in str(exc)
            )
            if not collided or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def duplicate_rows(url: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM (SELECT 1 FROM telemetry GROUP BY device_key, signal_id, ts "
            "HAVING count(*) > 1) d",
        )
    )


@dataclass
class Gateways:
    items: list[FakeGateway] = field(default_factory=list)

    def __iter__(self) -> Iterator[FakeGateway]:
        return iter(self.items)


def _root_wait_until() -> Any:
    """The project's ``wait_until`` from tests/conftest.py (conftest modules are not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "shulian_tests_root_conftest"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].wait_until


wait_until = _root_wait_until()
