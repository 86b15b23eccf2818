"""Issue 10's secured deployment as one drill: simulators → gateway → Mosquitto → ingest → PostgreSQL
with the broker configured as shipped (deploy/mosquitto/common.conf + secure.conf + acl).

Gateway and ingest both connect over TLS with their own logins (made by `shulian gateway
credentials`) and verify the broker's certificate against a CA made for the test. While data
flows, the drill tries what issue 10 found open:

- a gateway login presenting the ingest's client id (the configured one and its login name), with
  and without clean start: the ingest keeps its connection and session, nothing is lost or
  stored twice;
- a gateway of enterprise A publishing a birth and telemetry under enterprise B's topics: nothing
  is stored for B (the ingest auto-registers gateways here, so only the broker's ACL stops it),
  while the same login's messages under its own topics are stored;
- an ingest given the wrong CA: it refuses the broker with one clear log line.

Then the database must match the simulators' ground truth, as in the other drills (pipeline.py).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pipeline import (
    ENTERPRISE,
    GATEWAY,
    Simulators,
    boots,
    count_rows,
    dead_letters,
    duplicates,
    forced_profiles,
    ingest_is_subscribed,
    load_truth,
    log_tails,
    metric,
    missed_changes,
    never_served,
    query,
    rows,
    scrape,
    spawn,
    spawn_gateway,
    stop,
    write_site,
)
from secure_broker import SecureBroker, start_secure_broker
from support import wait_until

from shulian.devservices import free_port, mosquitto_binary
from simulators.scenario import generate_load_scenario
from wire import topics
from wire.codec import encode
from wire.payloads import Batch, GatewayStatus, Sample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_pg,
    pytest.mark.needs_broker,
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs a mosquitto binary"),
]

INGEST_LOGIN = "ingest@shulian"
INGEST_CLIENT_ID = "shulian-ingest-cloud-1"
SPARE = "gw-spare"
"""A second gateway login of the drill's enterprise (A): the impersonator."""
OTHER_ENTERPRISE, OTHER_GATEWAY = "ent-b", "gw-b"
KINDS = ["gear_hobber", "servo_press", "energy_meter", "air_compressor"]
"""Modbus machines, as in the fault drills, whose stored values the ground-truth checks hold to
1.5 s (once, on a loaded machine, an OPC UA gauge's stored value was served 1.5 s or more before
its timestamp; OPC UA is compared in test_pipeline_truth)."""
INTERVAL_MS = 500
CAPTURED = {"machine_state", "part_count", "alarm_active", "alarm_code"}
REPORTED = "shulian_gateway_points_reported_total"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[SecureBroker]:
    secure = start_secure_broker(
        tmp_path,
        gateways=[(ENTERPRISE, GATEWAY), (ENTERPRISE, SPARE), (OTHER_ENTERPRISE, OTHER_GATEWAY)],
        readers=[INGEST_LOGIN],
    )
    yield secure
    secure.stop()


@pytest.fixture()
def procs() -> Iterator[list[object]]:
    started: list[object] = []
    yield started
    for item in reversed(started):
        if isinstance(item, Simulators):
            item.stop()
        else:
            stop(item)  # type: ignore[arg-type]


def _secret(folder: Path, name: str, password: str) -> Path:
    path = folder / f"{name}.mqtt-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def _spawn_ingest(
    broker: SecureBroker, pg_url: str, log: Path, ca_file: Path
) -> subprocess.Popen[bytes]:
    """``shulian ingest run`` over TLS with its own login, the password in a file."""
    env = {
        "SHULIAN_INGEST_MQTT__USERNAME": INGEST_LOGIN,
        "SHULIAN_INGEST_MQTT__PASSWORD_FILE": str(
            _secret(log.parent, "ingest", broker.passwords[INGEST_LOGIN])
        ),
        "SHULIAN_INGEST_MQTT__CA_FILE": str(ca_file),
    }
    return spawn(
        ["ingest", "run", "--no-api", "--db", pg_url, "--mqtt", broker.tls_url,
         "--client-id", INGEST_CLIENT_ID, "--auto-register-gateways"],
        log, env,
    )  # fmt: skip


class _Login:
    """A plain paho client with one gateway login over TLS (an intruder or an impersonator)."""

    def __init__(
        self, broker: SecureBroker, username: str, client_id: str, *, clean_start: bool = True
    ) -> None:
        self.received: list[str] = []
        self.connack = ""
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.username_pw_set(username, broker.passwords[username])
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if clean_start else 3600
        self.client.connect("127.0.0.1", broker.tls_port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10), f"{username} could not connect: {self.connack}"

    def _on_connect(self, c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        self.connack = str(reason)
        if not reason.is_failure:
            self.connected.set()
            c.subscribe("shulian/v1/#", qos=1)  # to read everyone's data, if it could

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        return info

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish_as(login: _Login, enterprise: str, gateway: str, device: str) -> None:
    """A birth naming ``device`` and one batch of it, under ``enterprise``/``gateway``'s topics."""
    boot = uuid.uuid4().hex
    status = GatewayStatus(
        gateway=gateway, enterprise=enterprise, online=True, boot=boot, ts_ms=_now_ms(),
        devices=[device],
    )  # fmt: skip
    login.publish(topics.gateway_status(enterprise, gateway), encode(status), retain=True)
    samples = [Sample(device=device, signal="part_count", ts_ms=_now_ms(), value=42)]
    batch = Batch(gateway=gateway, boot=boot, seq=1, ts_ms=_now_ms(), samples=samples)
    login.publish(topics.telemetry(enterprise, gateway), encode(batch))


def _quiesce(sims: Simulators, port: int) -> float:
    """Stop the simulators; once the gateway has nothing left to publish, the points it
    accepted (checking that the broker acknowledged exactly those)."""
    sims.stop()
    seen: list[tuple[float, float, float]] = []

    def settled() -> bool:
        text = scrape(port)
        seen.append(
            (
                metric(text, REPORTED),
                metric(text, "shulian_gateway_buffer_batches"),
                metric(text, "shulian_gateway_mqtt_inflight_batches"),
            )
        )
        last = seen[-4:]
        return len(last) == 4 and len(set(last)) == 1 and last[-1][1:] == (0.0, 0.0)

    wait_until(settled, 60, 0.5, what="the gateway to publish its last point")
    published = metric(scrape(port), "shulian_gateway_points_published_total")
    assert published == seen[-1][0], f"published {published:.0f}, accepted {seen[-1][0]:.0f}"
    return seen[-1][0]


# What this drill breaks is the broker's side (TLS, logins, ACL, client ids); the store only
# records, and the ingest's own drills (tests/integration/ingest) run on both paths. So it runs
# once, on TimescaleDB, the path a deployment uses when it can.
@pytest.mark.only_storage_path("timescaledb")
@pytest.mark.timeout(300)
def test_secured_broker_end_to_end_matches_ground_truth_and_holds_against_other_logins(
    tmp_path: Path, broker: SecureBroker, pg_url: str, procs: list[object]
) -> None:
    scenario = generate_load_scenario(
        len(KINDS), seed=11, kinds=KINDS, units_per_modbus_port=4, dwell_scale=0.2
    ).model_copy(update={"time_scale": 5.0})
    sims = Simulators(scenario, tmp_path).start()
    procs.append(sims)
    ingest_log = tmp_path / "ingest.log"
    procs.append(_spawn_ingest(broker, pg_url, ingest_log, broker.ca_file))
    wait_until(lambda: ingest_is_subscribed(ingest_log), 60, 0.2, what="the ingest over TLS")
    # A second worker, given the wrong CA: it shares the database and the broker with the
    # pipeline, and never gets past the TLS handshake.
    wrong_ca = _spawn_ingest(broker, pg_url, tmp_path / "ingest-wrong-ca.log", broker.rogue_ca_file)
    procs.append(wrong_ca)

    profiles = forced_profiles(
        tmp_path / "profiles", {e["kind"] for e in sims.endpoints}, INTERVAL_MS
    )
    password_file = _secret(tmp_path, "gateway", broker.passwords[f"{ENTERPRISE}/{GATEWAY}"])
    port = free_port()
    site = write_site(
        tmp_path / "site.yaml", mqtt_url=broker.tls_url, metrics_port=port,
        endpoints=sims.endpoints, profiles=profiles, profile_paths=[tmp_path / "profiles"],
        mqtt=f", username: '{ENTERPRISE}/{GATEWAY}', password_file: '{password_file}', "
        f"ca_file: '{broker.ca_file}'",
    )  # fmt: skip
    procs.append(spawn_gateway(site, tmp_path / "gateway.log"))
    devices = {e["id"] for e in sims.endpoints}
    wait_until(
        lambda: {r.device for r in rows(pg_url, "t.ts > now() - interval '3 s'")} == devices,
        90, 0.5, what=f"rows of all {len(devices)} devices over TLS",
    )  # fmt: skip
    started_ms = _now_ms()

    # 1. Logins presenting the ingest's client id, while the gateway keeps publishing.
    intruder_reads: list[str] = []
    for client_id in (INGEST_CLIENT_ID, INGEST_LOGIN):
        for clean_start in (True, False):
            before = metric(scrape(port), "shulian_gateway_points_published_total")
            intruder = _Login(
                broker, f"{OTHER_ENTERPRISE}/{OTHER_GATEWAY}", client_id, clean_start=clean_start
            )
            try:
                wait_until(
                    lambda b=before: metric(scrape(port), "shulian_gateway_points_published_total")
                    > b + 150,
                    30, 0.2, what="points acknowledged to the gateway while the intruder is on",
                )  # fmt: skip
            finally:
                intruder.stop()
            intruder_reads += intruder.received

    # 2. A gateway of enterprise A publishing as enterprise B (and, as a control, as itself).
    spare = _Login(broker, f"{ENTERPRISE}/{SPARE}", "any-id")
    try:
        _publish_as(spare, OTHER_ENTERPRISE, OTHER_GATEWAY, "forged-1")
        _publish_as(spare, ENTERPRISE, SPARE, "spare-1")
    finally:
        spare.stop()
    wait_until(
        lambda: query(pg_url, "SELECT 1 FROM devices WHERE device_id = 'spare-1'"),
        30, 0.5, what="the impersonator's own device stored (the control)",
    )  # fmt: skip

    # 3. The ingest with the wrong CA refused the broker, once and clearly.
    wrong_log = tmp_path / "ingest-wrong-ca.log"
    wait_until(lambda: "refusing the broker" in wrong_log.read_text(), 30, 0.5, what="refusal")
    stop(wrong_ca)

    stopped_ms = _now_ms()
    accepted = _quiesce(sims, port)
    counts: list[int] = []

    def stored_all() -> bool:
        counts.append(count_rows(pg_url))
        return counts[-1] >= accepted + 1 or (len(counts) >= 10 and len(set(counts[-10:])) == 1)

    wait_until(stored_all, 120, 0.5, what="the ingest to store what the gateway published")
    stored = rows(pg_url, "d.device_id <> 'spare-1'")
    truth = load_truth(sims.truth_file)
    logs = log_tails(tmp_path)
    ingest_text = ingest_log.read_text()

    # The ingest kept its one connection and session throughout.
    assert ingest_text.count("connected to the broker (session present") == 1, logs
    assert "disconnected from the broker" not in ingest_text, logs
    assert intruder_reads == [], "a gateway's login read telemetry"
    # Nothing lost, nothing twice: what the gateway accepted is what is stored.
    assert duplicates(pg_url) == [], "rows stored twice"
    assert dead_letters(pg_url) == [], "the ingest rejected data"
    [(max_seq, batches)] = boots(pg_url).values()
    assert max_seq == batches, f"{max_seq - batches} batches of the gateway never arrived"
    assert len(stored) == accepted, f"stored {len(stored)}, accepted {accepted:.0f}\n{logs}"
    # ... and it is what the simulators served.
    wrong = never_served(stored, truth)
    assert not wrong, f"{len(wrong)} stored values never served, e.g. {wrong[:5]}"
    missed = missed_changes(stored, truth, CAPTURED, started_ms, stopped_ms, 2 * INTERVAL_MS)
    assert not missed, f"served changes not stored: {missed[:10]}"
    # Enterprise B: nothing at all, although unknown gateways are auto-registered here.
    assert query(pg_url, "SELECT id FROM gateways WHERE id = %s", (OTHER_GATEWAY,)) == []
    assert query(pg_url, "SELECT 1 FROM devices WHERE device_id = 'forged-1'") == []
    assert query(pg_url, "SELECT 1 FROM enterprises WHERE id = %s", (OTHER_ENTERPRISE,)) == []
    # The wrong CA: refused, logged once with the broker, the CA file and the fix.
    refusals = [line for line in wrong_log.read_text().splitlines() if "refusing" in line]
    assert len(refusals) == 1, refusals
    assert f"refusing the broker at {broker.tls_url}: " in refusals[0]
    assert f"not trusted by the CA in {broker.rogue_ca_file} (mqtt.ca_file)" in refusals[0]
    assert "Set mqtt.ca_file (SHULIAN_INGEST_MQTT__CA_FILE)" in refusals[0]
