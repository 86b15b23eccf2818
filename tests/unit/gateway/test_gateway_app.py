"""The composition root hands each driver its device with the gateway's data folder filled in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, ClassVar

from gateway_fakes import FakeDriver, eventually, fake_app, fake_settings, make_device, world

from gateway.app import with_data_dir
from gateway.drivers.base import DriverMetrics
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.profiles.models import DeviceConfig


def opcua_device(
    settings: dict[str, Any] | None = None, opcua: dict[str, Any] | None = None
) -> DeviceConfig:
    profile = OpcUaProfile.model_validate(
        {
            "id": "grinder",
            "protocol": "opcua",
            "groups": [{"name": "fast", "interval_ms": 1000}],
            "signals": [{"name": "part_count", "node_id": "ns=2;s=G.PartCount", "group": "fast"}],
            "opcua": opcua or {},
        }
    )
    return DeviceConfig(
        id="grinder-01",
        enterprise="ent-a",
        endpoint="opc.tcp://127.0.0.1:4840",
        unit_id=None,
        line="",
        profile=profile,
        settings=settings or {},
    )


def test_opcua_devices_keep_their_certificate_in_the_gateway_data_dir(tmp_path: Path) -> None:
    device = with_data_dir(opcua_device(), tmp_path / "data")
    assert device.settings["pki_dir"] == str(tmp_path / "data" / "pki")


def test_a_pki_dir_from_the_site_or_the_profile_wins(tmp_path: Path) -> None:
    from_site = opcua_device(settings={"pki_dir": "/etc/shulian/pki"})
    assert with_data_dir(from_site, tmp_path).settings["pki_dir"] == "/etc/shulian/pki"
    from_profile = opcua_device(opcua={"pki_dir": "/srv/pki"})
    assert "pki_dir" not in with_data_dir(from_profile, tmp_path).settings


def test_modbus_devices_get_no_pki_dir(tmp_path: Path) -> None:
    device = make_device("m1")
    assert with_data_dir(device, tmp_path) is device


class _Recording(FakeDriver):
    devices: ClassVar[list[DeviceConfig]] = []

    def __init__(
        self, device: DeviceConfig, logger: logging.LoggerAdapter[Any], metrics: DriverMetrics
    ) -> None:
        _Recording.devices.append(device)
        super().__init__(device, logger, metrics)


async def test_the_running_gateway_gives_the_driver_its_data_dir_pki(tmp_path: Path) -> None:
    data_dir = tmp_path / "gw"
    settings = fake_settings("mqtt://127.0.0.1:9", data_dir)
    app = fake_app(settings, [opcua_device()], driver_for=lambda _protocol: _Recording)
    _Recording.devices.clear()
    await app.start()
    try:
        await eventually(lambda: _Recording.devices, what="the driver created")
    finally:
        await app.stop()
    assert _Recording.devices[0].settings["pki_dir"] == str(data_dir / "pki")


async def test_start_up_objects_leave_the_collectors_care_and_young_collections_are_rarer(
    tmp_path: Path,
) -> None:
    import gc

    from gateway.app import GC_YOUNG_THRESHOLD

    before = gc.get_threshold()
    app = fake_app(
        fake_settings("mqtt://127.0.0.1:9", tmp_path / "gw"), [opcua_device()], settle_heap=True
    )
    try:
        await app.start()
        try:
            assert gc.get_freeze_count() > 10_000  # modules, profiles, schemas: frozen
            assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        finally:
            await app.stop()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_devices_start_connecting_at_the_configured_pace(tmp_path: Path) -> None:
    """``gateway.connects_per_s``: 30 devices at 20/s take about 1.5 s to all connect, not one burst."""

    settings = fake_settings("mqtt://127.0.0.1:9", tmp_path / "gw", gateway={"connects_per_s": 20})
    devices = [make_device(f"p{i}") for i in range(30)]
    app = fake_app(settings, devices)
    await app.start()
    try:
        await asyncio.sleep(0.4)
        early = sum(1 for d in devices if world(d.id).connects)
        assert 2 <= early <= 12, f"{early} of 30 devices connected within 0.4 s at 20/s"
        await eventually(
            lambda: all(world(d.id).connects for d in devices), what="all connected", timeout_s=5
        )
    finally:
        await app.stop()


async def test_the_default_pace_connects_a_fleet_within_seconds(tmp_path: Path) -> None:

    settings = fake_settings("mqtt://127.0.0.1:9", tmp_path / "gw")
    assert settings.gateway.connects_per_s == 200
    devices = [make_device(f"q{i}") for i in range(100)]
    app = fake_app(settings, devices)
    await app.start()
    try:
        await eventually(
            lambda: all(world(d.id).connects for d in devices), what="all connected", timeout_s=3
        )
    finally:
        await app.stop()
