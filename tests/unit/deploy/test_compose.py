"""docker-compose.yml is checked by parsing (no Docker engine here): real commands, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[3]
COMPOSE = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
BUILT = [name for name, svc in SERVICES.items() if "build" in svc]


def test_compose_runs_the_whole_stack() -> None:
    images = {svc.get("image", "").split(":")[0] for svc in SERVICES.values()}
    assert {"timescale/timescaledb", "eclipse-mosquitto"} <= images
    commands = {name: SERVICES[name]["command"][:2] for name in BUILT}
    assert commands == {
        "ingest": ["ingest", "run"],
        "simulators": ["sim", "run"],
        "gateway": ["gateway", "run"],
    }


@pytest.mark.parametrize("service", BUILT)
def test_every_command_is_a_real_shulian_subcommand(service: str) -> None:
    """The image's entry point is `shulian`; --help after the command also rejects unknown flags."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["shulian"]' in dockerfile
    argv = [sys.executable, "-m", "shulian", *SERVICES[service]["command"], "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_mounted_config_file_exists(service: str) -> None:
    for volume in SERVICES[service].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith((".", "/")):
            assert (REPO / source).exists(), f"{service}: mounted {source} does not exist"
        else:
            assert source in COMPOSE.get("volumes", {}), f"{service}: unknown volume {source}"


def test_files_given_on_command_lines_are_mounted() -> None:
    for name in BUILT:
        command = SERVICES[name]["command"]
        targets = {v.split(":")[1] for v in SERVICES[name].get("volumes", [])}
        for arg in command:
            if arg.startswith("/etc/shulian/"):
                assert arg in targets, f"{name}: {arg} is used but not mounted"


def test_the_demo_site_file_and_scenario_validate() -> None:
    from gateway.profiles.loader import load_site
    from simulators.scenario import load_scenario

    site = load_site(REPO / "deploy" / "compose" / "gateway.yaml")
    scenario = load_scenario(REPO / "deploy" / "compose" / "scenario.yaml")
    assert {d.id for d in site.devices} == {i.id for i in scenario.instances}
    hosts = {d.endpoint.split("//")[1].split(":")[0] for d in site.devices}
    assert hosts == {"simulators"}, "the gateway must reach the simulators by service name"


def test_gateway_image_installs_only_the_gateway_extra() -> None:
    assert SERVICES["gateway"]["build"]["args"]["EXTRAS"] == "gateway"
