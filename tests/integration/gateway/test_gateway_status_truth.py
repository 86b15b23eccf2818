"""Device status that tells the truth, through the real drivers, simulators and Mosquitto (issue 12).

A device is `connected` only after a good read; a unit that keeps failing publishes and logs its
state once, not once per retry; reconnects after an outage are capped by a setting.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from gateway_fakes import eventually, fake_settings

from gateway.app import GatewayApp
from gateway.profiles.loader import load_site
from shulian.devservices import Mosquitto
from simulators.host import SimulatorHost
from simulators.scenario import InstanceSpec, Scenario
from wire.codec import decode_device_status
from wire.payloads import DeviceConnection

DEVICES = {"hob-1": "gear_hobber", "hob-2": "gear_hobber"}


def scenario() -> Scenario:
    return Scenario(
        name="status-truth",
        seed=12,
        tick_ms=100,
        dwell_scale=0.05,
        instances=[InstanceSpec(id=d, kind=k, enterprise="ent-a") for d, k in DEVICES.items()],
    )


def write_site(path: Path, host: SimulatorHost, *, mute_unit: bool = False) -> None:
    lines = ["gateway: {id: gw-1, enterprise: ent-a}", "devices:"]
    for device, kind in DEVICES.items():
        ep = host.endpoint(device)
        lines.append(
            f"  - {{id: {device}, profile: {kind}, endpoint: 'tcp://{ep.host}:{ep.port}', "
            f"unit_id: {ep.unit_id}}}"
        )
    if mute_unit:
        # Unit 9 does not exist on the server; "localhost" makes it a connection of its own, on
        # which nobody ever answers (the third-party server of issue 12).
        port = host.endpoint("hob-1").port
        lines.append(
            f"  - {{id: mute-9, profile: gear_hobber, endpoint: 'tcp://localhost:{port}', "
            "unit_id: 9}"
        )
    path.write_text("\n".join(lines) + "\n")


def statuses(sub: Any, device: str) -> list[Any]:
    return [
        decode_device_status(m.payload)
        for m in sub.snapshot()
        if m.topic.endswith(f"devices/{device}/status")
    ]


@pytest.mark.timeout(120)
async def test_a_unit_that_never_answers_never_reports_connected_and_logs_once(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/devices/+/status")
    async with SimulatorHost(scenario()) as host:
        host.set_unreachable(
            "hob-1"
        )  # its TCP connection (shared with hob-2) works; unit 1 is mute
        site_file = tmp_path / "gateway.yaml"
        write_site(site_file, host, mute_unit=True)
        settings = fake_settings(
            mosquitto.url,
            tmp_path / "gw",
            gateway={"device_reconnect_min_s": 0.1, "device_reconnect_max_s": 0.2},
        )
        app = GatewayApp(settings, load_site(site_file))
        await app.start()
        try:
            mute = [app.scheduler.runners[d] for d in ("hob-1", "mute-9")]
            await eventually(
                lambda: min(r.sessions for r in mute) >= 3, what="several retries", timeout_s=60
            )
            await eventually(lambda: statuses(sub, "hob-2"), what="hob-2 status")
        finally:
            await app.stop()

    assert statuses(sub, "hob-2")[-1].connection is DeviceConnection.CONNECTED
    for device in ("hob-1", "mute-9"):
        seen = statuses(sub, device)
        assert [s.connection for s in seen] == [DeviceConnection.DISCONNECTED], (device, seen)
        assert seen[0].error and "unit" in seen[0].error, seen[0].error

        def of_device(record: logging.LogRecord, device: str = device) -> bool:
            return getattr(record, "device", None) == device

        above_debug = [
            r.getMessage() for r in caplog.records if of_device(r) and r.levelno >= logging.INFO
        ]
        assert above_debug == ["device disconnected"], (device, above_debug)
    # The lone unit's connection is reopened at each retry: said once, not per retry.
    silent_bus = [
        r for r in caplog.records if r.levelno >= logging.INFO and "silent bus" in r.getMessage()
    ]
    assert len(silent_bus) <= 1, [r.getMessage() for r in silent_bus]


@pytest.mark.timeout(120)
async def test_data_returns_within_the_reconnect_cap_after_a_modbus_outage(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    cap_s = 2.0
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry")
    async with SimulatorHost(scenario()) as host:
        site_file = tmp_path / "gateway.yaml"
        write_site(site_file, host)
        settings = fake_settings(
            mosquitto.url, tmp_path / "gw", gateway={"device_reconnect_max_s": cap_s}
        )
        app = GatewayApp(settings, load_site(site_file))
        await app.start()
        try:
            runner = app.scheduler.runners["hob-1"]
            await eventually(lambda: runner.is_connected, what="hob-1 connected", timeout_s=30)
            await host.stop_server("hob-1")
            await eventually(lambda: not runner.is_connected, what="hob-1 lost", timeout_s=15)
            # Long enough for the doubling delays (1, 2, 4, ...) to reach the cap.
            await eventually(lambda: runner.sessions >= 4, what="retries", timeout_s=30)
            await host.start_server("hob-1")
            back_ms = int(time.time() * 1000)

            def fresh() -> bool:
                return any(
                    s.device == "hob-1" and s.ts_ms >= back_ms
                    for b in sub.batches()
                    for s in b.samples
                )

            await eventually(fresh, what="hob-1 data after the outage", timeout_s=30)
            took_s = (int(time.time() * 1000) - back_ms) / 1000
        finally:
            await app.stop()
    # A delay capped at cap_s, then one poll interval, plus the batch delay and load here.
    assert took_s <= cap_s + runner.min_interval_s + 1.5, f"data back after {took_s:.1f} s"


PROBE_PROFILE = """\
id: status_probe
protocol: opcua
segment: "345"
machine_kind: lathe
models: "test: one OPC UA variable that the simulation never changes"
description: "The lathe's model name, to serve an OPC UA status on."
heartbeat_s: 1
groups:
  - {name: fast, interval_ms: 200}
signals:
  - name: program_name
    group: fast
    node_id: "nsu=urn:shulian:simulators;s={device}.Identification.Model"
"""


@pytest.mark.timeout(120)
async def test_an_opcua_bad_status_repeats_on_the_heartbeat_with_its_name(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/telemetry")
    spec = Scenario(
        name="bad-status",
        seed=12,
        tick_ms=100,
        dwell_scale=0.05,
        instances=[InstanceSpec(id="lathe-1", kind="bearing_lathe", enterprise="ent-a")],
    )
    async with SimulatorHost(spec) as host:
        (tmp_path / "probe.yaml").write_text(PROBE_PROFILE)
        ep = host.endpoint("lathe-1")
        site_file = tmp_path / "gateway.yaml"
        site_file.write_text(
            "gateway: {id: gw-1, enterprise: ent-a}\ndevices:\n"
            f"  - {{id: lathe-1, profile: ./probe.yaml, endpoint: 'opc.tcp://{ep.host}:{ep.port}'}}\n"
        )
        app = GatewayApp(fake_settings(mosquitto.url, tmp_path / "gw"), load_site(site_file))
        await app.start()
        try:

            def samples() -> list[Any]:
                return [s for b in sub.batches() for s in b.samples if s.device == "lathe-1"]

            await eventually(
                lambda: any(s.value == "SIM-CK6150R" for s in samples()), what="the good value"
            )
            await host.serve_status("lathe-1", "Identification/Model", "BadWaitingForInitialData")

            def bad() -> list[Any]:
                return [s for s in samples() if s.quality.value == "bad"]

            # Pushed once by the server, then repeated on the 1 s heartbeat like a good value.
            await eventually(lambda: len(bad()) >= 3, what="bad repeated", timeout_s=15)
        finally:
            await app.stop()
    assert {s.reason for s in bad()} == {"BadWaitingForInitialData"}
    assert len({s.ts_ms for s in bad()}) == len(bad())
    logged = [r for r in caplog.records if "BadWaitingForInitialData" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # once per change, not per repeat
    assert getattr(logged[0], "signals", None) == ["program_name"]


@pytest.mark.timeout(120)
async def test_an_opcua_server_restart_logs_one_warning_and_one_disconnect(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/devices/+/status")
    spec = Scenario(
        name="opcua-restart",
        seed=12,
        tick_ms=100,
        dwell_scale=0.05,
        instances=[InstanceSpec(id="lathe-1", kind="bearing_lathe", enterprise="ent-a")],
    )
    async with SimulatorHost(spec) as host:
        ep = host.endpoint("lathe-1")
        site_file = tmp_path / "gateway.yaml"
        site_file.write_text(
            "gateway: {id: gw-1, enterprise: ent-a}\ndevices:\n"
            f"  - {{id: lathe-1, profile: bearing_lathe, endpoint: 'opc.tcp://{ep.host}:{ep.port}'}}\n"
        )
        settings = fake_settings(
            mosquitto.url, tmp_path / "gw", gateway={"device_reconnect_max_s": 1.0}
        )
        app = GatewayApp(settings, load_site(site_file))
        await app.start()
        try:
            runner = app.scheduler.runners["lathe-1"]
            await eventually(lambda: runner.is_connected, what="connected", timeout_s=30)
            caplog.clear()
            await host.stop_server("lathe-1")
            await eventually(lambda: not runner.is_connected, what="restart noticed", timeout_s=30)
            sessions = runner.sessions
            await eventually(lambda: runner.sessions >= sessions + 2, what="retries", timeout_s=30)
            await host.start_server("lathe-1")
            await eventually(lambda: runner.is_connected, what="reconnected", timeout_s=30)
        finally:
            await app.stop()
    published = [(s.connection, s.error) for s in statuses(sub, "lathe-1")]
    assert [c for c, _ in published] == [
        DeviceConnection.CONNECTED,
        DeviceConnection.DISCONNECTED,
        DeviceConnection.CONNECTED,
    ], published
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert [r for r in records if r[1] in ("ERROR", "CRITICAL")] == [], records
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING), records
    disconnects = [r for r in records if r[2] in ("device disconnected", "device error")]
    assert len(disconnects) == 1, records
    library = [r for r in records if "publish loop" in r[2] and r[1] == "WARNING"]
    assert len(library) <= 1, records


@pytest.mark.timeout(120)
async def test_a_unit_that_stops_answering_is_reported_fast_then_with_its_cause_once(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/devices/+/status")
    async with SimulatorHost(scenario()) as host:
        site_file = tmp_path / "gateway.yaml"
        write_site(site_file, host)
        settings = fake_settings(
            mosquitto.url,
            tmp_path / "gw",
            gateway={"device_reconnect_min_s": 0.1, "device_reconnect_max_s": 0.2},
        )
        app = GatewayApp(settings, load_site(site_file))
        await app.start()
        try:
            runner = app.scheduler.runners["hob-1"]
            await eventually(lambda: runner.is_connected, what="hob-1 connected", timeout_s=30)
            host.set_unreachable("hob-1")
            sessions = runner.sessions
            await eventually(lambda: runner.sessions >= sessions + 2, what="retries", timeout_s=60)
        finally:
            await app.stop()
    seen = [(s.connection, s.error or "") for s in statuses(sub, "hob-1")]
    assert [c for c, _ in seen] == [
        DeviceConnection.CONNECTED,
        DeviceConnection.DISCONNECTED,  # the staleness watch: within three poll intervals
        DeviceConnection.DISCONNECTED,  # then the cause an installer can act on, once
    ], seen
    assert "no good read" in seen[1][1], seen
    assert "Check the unit id" in seen[2][1], seen
