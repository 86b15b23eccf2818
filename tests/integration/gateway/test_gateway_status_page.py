"""The status page of a real `shulian gateway run` process, against the Modbus and OPC UA
simulators and a real Mosquitto: it answers on 127.0.0.1 with the running gateway's devices,
their last values as the simulators served them, a dead device's error, a lost broker; the CLI
prints it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gateway_fakes import eventually
from support import run_shulian

from shulian.devservices import Mosquitto, free_port
from simulators.host import SimulatorHost
from simulators.scenario import InstanceSpec, Scenario

DEVICES = {"hob-1": "gear_hobber", "lathe-1": "bearing_lathe"}  # Modbus and OPC UA
EXACT = ("part_count", "machine_state", "program_name")
"""Signals whose normalized value equals the simulator's own (no float rounding on the way)."""


def scenario() -> Scenario:
    return Scenario(
        name="status-page",
        seed=11,
        tick_ms=100,
        dwell_scale=0.05,
        instances=[InstanceSpec(id=d, kind=k, enterprise="ent-s") for d, k in DEVICES.items()],
    )


def write_site(path: Path, host: SimulatorHost, broker: str, status_port: int, dead: int) -> None:
    lines = [
        f"gateway: {{id: gw-status, enterprise: ent-s, data_dir: '{path.parent / 'var'}'}}",
        f"mqtt: {{url: '{broker}'}}",
        "metrics: {port: 0}",
        f"status: {{port: {status_port}, refresh_s: 2}}",
        "devices:",
    ]
    for device, kind in DEVICES.items():
        ep = host.endpoint(device)
        scheme = "opc.tcp" if ep.protocol == "opcua" else "tcp"
        unit = f", unit_id: {ep.unit_id}" if ep.unit_id else ""
        lines.append(
            f"  - {{id: {device}, profile: {kind}, endpoint: '{scheme}://{ep.host}:{ep.port}'{unit}}}"
        )
    lines.append(
        f"  - {{id: hob-dead, profile: gear_hobber, endpoint: 'tcp://127.0.0.1:{dead}', unit_id: 1}}"
    )
    path.write_text("\n".join(lines) + "\n")


def fetch(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()


@pytest.mark.timeout(150)
async def test_the_status_page_of_a_running_gateway(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, dead = free_port(), free_port()
    async with SimulatorHost(scenario()) as host:
        site = tmp_path / "gateway.yaml"
        write_site(site, host, mosquitto.url, port, dead)
        log = (tmp_path / "gateway.log").open("wb")
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shulian.cli", "gateway", "run", "--config", str(site),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            status: dict[str, Any] = {}

            async def read_status() -> bool:
                nonlocal status
                try:
                    _, body = await asyncio.to_thread(fetch, f"{base}/status.json")
                except OSError:
                    await asyncio.sleep(0.2)  # not listening yet
                    return False
                status = json.loads(body)
                by_id = {d["id"]: d for d in status["devices"]}
                live = [by_id[d] for d in DEVICES if d in by_id]
                return (
                    len(live) == len(DEVICES)
                    and all(d["connection"] == "connected" for d in live)
                    and all(
                        s["value"] is not None
                        for d in live
                        for s in d["signals"]
                        if s["signal"] in EXACT
                    )
                    and bool(by_id.get("hob-dead", {}).get("error"))
                    and all(o["broker"]["connected"] for o in status["outputs"])
                    and all(d["reads_per_s"] for d in live)
                )

            await eventually(read_status, what="all devices on the page", timeout_s=60)
            assert status["gateway"] == "gw-status" and status["config_hash"]
            by_id = {d["id"]: d for d in status["devices"]}
            assert set(by_id) == {*DEVICES, "hob-dead"}
            assert by_id["hob-1"]["protocol"] == "modbus"
            assert by_id["lathe-1"]["protocol"] == "opcua"
            # The values shown are the values the simulators served when they were read.
            compared = 0
            for device in DEVICES:
                for sig in by_id[device]["signals"]:
                    if sig["signal"] not in EXACT or sig["quality"] != "good":
                        continue
                    served = host.truth.values_between(
                        device, sig["signal"], sig["read_ms"] - 2000, sig["read_ms"] + 200
                    )
                    assert sig["value"] in served, (device, sig, served)
                    compared += 1
            assert compared >= 4, by_id
            dead_device = by_id["hob-dead"]
            assert dead_device["connection"] != "connected"
            assert str(dead) in dead_device["error"], dead_device
            buffer = status["outputs"][0]["buffer"]
            assert {"samples", "bytes", "oldest_age_s", "dropped_samples"} <= set(buffer)

            # The HTML page, in each language, lists the same devices and the dead one's error.
            _, english = await asyncio.to_thread(fetch, f"{base}/", **{"Accept-Language": "en"})
            _, chinese = await asyncio.to_thread(fetch, f"{base}/?lang=zh-CN")
            for page, word in ((english, "Devices"), (chinese, "设备")):
                assert word in page and "hob-1" in page and "lathe-1" in page
                assert f"127.0.0.1:{dead}" in page

            # A server that goes down shows its error on the page.
            await host.stop_server("hob-1")

            async def hob_down() -> bool:
                _, body = await asyncio.to_thread(fetch, f"{base}/status.json")
                hob = {d["id"]: d for d in json.loads(body)["devices"]}["hob-1"]
                return hob["connection"] != "connected" and bool(hob["error"])

            await eventually(hob_down, what="hob-1 error on the page", timeout_s=20)

            # The terminal view reads the same page, found through the site file.
            monkeypatch.setenv("COLUMNS", "220")  # rich's width when not on a terminal
            code, out, err = await run_shulian("gateway", "status", "--config", str(site))
            assert code == 0, err
            for text in ("gw-status", "hob-1", "lathe-1", "hob-dead", str(dead), "part_count"):
                assert text in out, (text, out)

            # The broker goes away: the page says so, since when, and why.
            mosquitto.stop()

            async def broker_down() -> dict[str, Any] | None:
                _, body = await asyncio.to_thread(fetch, f"{base}/status.json")
                broker: dict[str, Any] = json.loads(body)["outputs"][0]["broker"]
                return broker if not broker["connected"] and broker["last_error"] else None

            broker = await eventually(broker_down, what="broker down on the page", timeout_s=30)
            assert isinstance(broker, dict) and broker["since_ms"] > status["now_ms"], broker
        finally:
            gateway.terminate()
            try:
                await asyncio.wait_for(gateway.wait(), 20)
            except TimeoutError:
                gateway.kill()
                await gateway.wait()
    assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    text = (tmp_path / "gateway.log").read_text()
    assert "status page listening" in text, text[-2000:]


def test_the_cli_says_when_no_gateway_answers(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shulian.cli",
            "gateway",
            "status",
            "--url",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"no gateway status page at http://127.0.0.1:{port}/status.json" in result.stderr
