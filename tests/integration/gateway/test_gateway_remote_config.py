"""A gateway with remote configuration on applies what arrives on its config topic (real Mosquitto).

Only the devices whose profile changed restart; a broken or tampered bundle is refused with every
message and the running and last good configuration stay; a restart runs the last good one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
from gateway_fakes import WORLD, eventually, fake_app, fake_settings
from test_gateway_reload import PROFILE, SITE_HEAD, device_line

from gateway.profiles.loader import load_site
from gateway.remote_config import last_good_site
from shulian.devservices import Mosquitto
from wire import topics
from wire.payloads import ConfigBundle, ConfigFile, bundle_hash, file_hash

SITE = SITE_HEAD + device_line("d1", "alpha", 1501) + device_line("d2", "beta", 1502)


def bundle(revision: int, files: dict[str, str], *, enterprise: str = "ent-a") -> bytes:
    made = [
        ConfigFile(
            name=name,
            kind="site" if name == "site.yaml" else "profile",
            version=revision,
            sha256=file_hash(text),
            content=text,
        )
        for name, text in files.items()
    ]
    return (
        ConfigBundle(
            gateway="gw-1",
            enterprise=enterprise,
            revision=revision,
            ts_ms=int(time.time() * 1000),
            files=made,
            sha256=bundle_hash(made),
        )
        .model_dump_json()
        .encode()
    )


def send(mosquitto: Mosquitto, payload: bytes) -> None:
    mqtt_publish.single(
        topics.config("ent-a", "gw-1"),
        payload,
        qos=1,
        retain=True,
        hostname="127.0.0.1",
        port=mosquitto.port,
    )


def reports(sub: Any) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.snapshot() if m.topic.endswith("/config/report")]


async def test_remote_config_applies_refuses_and_survives_restart(
    mosquitto: Mosquitto, tmp_path: Path, collect: Any
) -> None:
    sub = collect(mosquitto.url, "shulian/v1/ent-a/gw-1/config/report")
    local = tmp_path / "local"
    local.mkdir()
    (local / "alpha.yaml").write_text(PROFILE.format(id="alpha", interval=100))
    (local / "beta.yaml").write_text(PROFILE.format(id="beta", interval=100))
    (local / "site.yaml").write_text(SITE)
    data_dir = tmp_path / "gw"
    settings = fake_settings(mosquitto.url, data_dir, remote_config={"enabled": True})
    site = load_site(local / "site.yaml")
    app = fake_app(settings, site.devices, site=site)
    await app.start()
    try:
        await eventually(lambda: all(WORLD[d].reads >= 2 for d in ("d1", "d2")))
        buffer_before = (await app.buffer.stats()).batches + app.metrics.publisher.batches_published

        # Revision 1: alpha polls slower. Only d1 (alpha) restarts.
        good = {
            "site.yaml": SITE,
            "alpha.yaml": PROFILE.format(id="alpha", interval=200),
            "beta.yaml": PROFILE.format(id="beta", interval=100),
        }
        send(mosquitto, bundle(1, good))
        await eventually(lambda: reports(sub), what="a report")
        first = reports(sub)[-1]
        assert (first["revision"], first["status"], first["restarted"]) == (1, "applied", ["d1"])
        assert WORLD["d1"].connects == 2 and WORLD["d2"].connects == 1
        assert app.metrics.publisher.connects == 1, "the MQTT session was not restarted"
        assert (
            await app.buffer.stats()
        ).batches + app.metrics.publisher.batches_published >= buffer_before
        assert (
            last_good_site(data_dir / "remote-config") == data_dir / "remote-config/rev-1/site.yaml"
        )

        # Revision 2: a broken profile. Refused with its file:line: field message; nothing moves.
        broken = {**good, "alpha.yaml": good["alpha.yaml"].replace("type: uint32", "type: uint99")}
        send(mosquitto, bundle(2, broken))
        await eventually(lambda: len(reports(sub)) == 2, what="the refusal")
        refusal = reports(sub)[-1]
        assert (refusal["revision"], refusal["status"]) == (2, "refused")
        assert any(m.startswith("alpha.yaml:") and "type" in m for m in refusal["messages"]), (
            refusal
        )
        assert WORLD["d1"].connects == 2 and WORLD["d2"].connects == 1
        assert last_good_site(data_dir / "remote-config").parent.name == "rev-1"
        reads = WORLD["d1"].reads
        await eventually(lambda: WORLD["d1"].reads > reads + 2, what="d1 still read")

        # Revision 3, damaged in transit (content changed after hashing): refused, not written.
        tampered = json.loads(bundle(3, good))
        tampered["files"][0]["content"] += "\n# changed\n"
        send(mosquitto, json.dumps(tampered).encode())
        await eventually(lambda: len(reports(sub)) == 3, what="the integrity refusal")
        assert any("sha256" in m for m in reports(sub)[-1]["messages"])
        assert not (data_dir / "remote-config/rev-3").exists()

        # Another gateway's site file, in a bundle addressed to this one: refused.
        other_site = {**good, "site.yaml": SITE.replace("id: gw-1", "id: gw-2")}
        send(mosquitto, bundle(5, other_site))
        await eventually(lambda: len(reports(sub)) == 4, what="the site identity refusal")
        assert any("gateway.id: 'gw-2'" in m for m in reports(sub)[-1]["messages"]), reports(sub)
        assert last_good_site(data_dir / "remote-config").parent.name == "rev-1"

        # Addressed to another enterprise's gateway: refused.
        send(mosquitto, bundle(4, good, enterprise="ent-z"))
        await eventually(lambda: len(reports(sub)) == 5, what="the addressee refusal")
        assert "not this gateway" in reports(sub)[-1]["messages"][0]
    finally:
        await app.stop()

    # Remote configuration off: the retained bundle is ignored, the local files run.
    off = fake_settings(mosquitto.url, tmp_path / "gw-off")
    app = fake_app(off, site.devices, site=site)
    await app.start()
    try:
        await eventually(lambda: WORLD["d1"].reads >= 2)
        assert app.remote is None and app.publisher.on_config is None
    finally:
        await app.stop()
