"""Reloading the site file restarts only changed devices; the buffer and MQTT session stay up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway_fakes import WORLD, eventually, fake_app, fake_settings

from gateway.profiles.loader import load_site
from shulian.devservices import Mosquitto
from wire.codec import decode_device_status, decode_status

PROFILE = """\
id: {id}
protocol: modbus
groups: [{{name: default, interval_ms: {interval}}}]
signals:
  - {{name: part_count, address: 0, type: uint32}}
  - {{name: spindle_speed, address: 2, unit: rpm}}
"""

SITE_HEAD = """\
gateway: {id: gw-1, enterprise: ent-a}
devices:
"""


def device_line(device: str, profile: str, port: int) -> str:
    return f"  - {{id: {device}, profile: {profile}, endpoint: 'tcp://127.0.0.1:{port}', unit_id: 1}}\n"


def write_site(path: Path, devices: list[tuple[str, str, int]]) -> None:
    path.write_text(SITE_HEAD + "".join(device_line(*d) for d in devices))


async def test_reload_restarts_only_changed_devices(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any, caplog: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/#")
    (tmp_path / "alpha.yaml").write_text(PROFILE.format(id="alpha", interval=100))
    (tmp_path / "beta.yaml").write_text(PROFILE.format(id="beta", interval=100))
    site_file = tmp_path / "gateway.yaml"
    write_site(
        site_file,
        [("d1", "alpha.yaml", 1501), ("d2", "alpha.yaml", 1502), ("d3", "beta.yaml", 1503)],
    )
    settings = fake_settings(mosquitto.url, tmp_path / "gw", reload={"watch_interval_s": 0.1})
    site = load_site(site_file)
    app = fake_app(settings, site.devices, site=site)
    await app.start()
    try:
        await eventually(lambda: all(WORLD[d].reads >= 2 for d in ("d1", "d2", "d3")))
        hash_before = app.config_hash
        rows_before = (await app.buffer.stats()).batches + app.metrics.publisher.batches_published

        # d2 moves to another endpoint, d3 goes, d4 comes; d1 is untouched. Found by mtime.
        write_site(
            site_file,
            [("d1", "alpha.yaml", 1501), ("d2", "alpha.yaml", 1599), ("d4", "beta.yaml", 1504)],
        )
        await eventually(lambda: app.reloads == 1, what="reload on file change")
        await eventually(lambda: WORLD["d4"].reads >= 2, what="new device running")
        assert WORLD["d1"].connects == 1 and WORLD["d1"].closes == 0, "unchanged device untouched"
        assert WORLD["d2"].connects == 2, "changed device restarted"
        assert WORLD["d3"].closes == 1 and "d3" not in app.scheduler.runners
        assert app.config_hash != hash_before
        assert app.metrics.publisher.connects == 1, "the MQTT session was not restarted"
        assert (
            await app.buffer.stats()
        ).batches + app.metrics.publisher.batches_published >= rows_before

        def gateway_status() -> Any:
            msgs = [m for m in sub.snapshot() if m.topic.endswith("gw-1/status")]
            return decode_status(msgs[-1].payload) if msgs else None

        await eventually(lambda: gateway_status().config_hash == app.config_hash)
        assert gateway_status().devices == ["d1", "d2", "d4"]
        d3 = [
            decode_device_status(m.payload)
            for m in sub.snapshot()
            if m.topic.endswith("devices/d3/status")
        ]
        assert d3[-1].error == "removed from the site configuration"

        # A change to a profile restarts the devices that use it (SIGHUP path).
        (tmp_path / "beta.yaml").write_text(PROFILE.format(id="beta", interval=150))
        app.request_reload()
        await eventually(lambda: app.reloads == 2, what="reload on request")
        await eventually(lambda: WORLD["d4"].connects == 2, what="d4 restarted")
        assert WORLD["d1"].connects == 1 and WORLD["d2"].connects == 2

        # A broken site file is refused and everything keeps running as before.
        site_file.write_text(SITE_HEAD + "  - {id: d1, profile: nowhere.yaml, endpoint: x}\n")
        reads = WORLD["d1"].reads
        app.request_reload()
        await eventually(
            lambda: "keeping the running configuration" in caplog.text, what="reload refused"
        )
        await eventually(lambda: WORLD["d1"].reads > reads + 3, what="d1 still running")
        assert app.reloads == 2 and set(app.scheduler.runners) == {"d1", "d2", "d4"}
    finally:
        await app.stop()
