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
        "monitoring": ["monitoring", "run"],
        "simulators": ["sim", "run"],
        "gateway": ["gateway", "run"],
    }


def test_the_one_process_form_in_the_comment_is_a_real_command() -> None:
    """The file shows how a small site runs both in the ingest's process; that command exists."""
    text = (REPO / "docker-compose.yml").read_text()
    form = '#   command: ["ingest", "run", "--with-monitoring"]'
    assert form in text
    argv = [sys.executable, "-m", "shulian", "ingest", "run", "--with-monitoring", "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0 and "--with-monitoring" in result.stdout, result.stderr


@pytest.mark.parametrize("service", BUILT)
def test_every_command_is_a_real_shulian_subcommand(service: str) -> None:
    """The image's entry point is `shulian`; --help after the command also rejects unknown flags."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["shulian"]' in dockerfile
    argv = [sys.executable, "-m", "shulian", *SERVICES[service]["command"], "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


SECRETS = "./deploy/compose/secrets/"
"""Made by deploy/compose/make-secrets on the deployer's machine, never committed."""


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_mounted_config_file_exists(service: str) -> None:
    made = (REPO / "deploy" / "compose" / "make-secrets").read_text()
    for volume in SERVICES[service].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith(SECRETS):
            folder = source.removeprefix(SECRETS)
            assert f'"$out/{folder}' in made, f"{service}: make-secrets does not create {source}"
        elif source.startswith((".", "/")):
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


def _mosquitto_conf() -> list[str]:
    """The compose broker's effective config lines, in the order Mosquitto reads them: the main
    file with its include_dir expanded (files in alphabetical order, as Mosquitto does)."""
    mounts = dict(v.split(":")[:2] for v in SERVICES["mosquitto"]["volumes"])
    by_target = {target: REPO / source for source, target in mounts.items()}
    lines: list[str] = []
    for line in by_target["/mosquitto/config/mosquitto.conf"].read_text().splitlines():
        if line.startswith("include_dir "):
            folder = line.split()[1].rstrip("/") + "/"
            included = sorted(t for t in by_target if t.startswith(folder))
            for target in included:
                lines += by_target[target].read_text().splitlines()
        else:
            lines.append(line)
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_broker_publishes_only_tls_and_requires_logins() -> None:
    broker = SERVICES["mosquitto"]
    assert broker["ports"] == ["8883:8883"], "only the TLS listener is reachable from outside"
    conf = _mosquitto_conf()
    listeners = [line for line in conf if line.startswith("listener ")]
    assert listeners == ["listener 8883"], f"one listener, the TLS one: {listeners}"
    for option in ("cafile", "certfile", "keyfile"):
        assert any(line.startswith(f"{option} /etc/mosquitto/shulian/tls/") for line in conf)
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
    assert "password_file /etc/mosquitto/shulian/passwd" in conf
    assert "acl_file /etc/mosquitto/shulian/acl" in conf
    assert "per_listener_settings false" in conf, "logins and ACL apply to every listener"
    targets = {v.split(":")[1] for v in broker["volumes"]}
    assert "/etc/mosquitto/shulian" in targets


def test_every_broker_listener_ties_client_ids_to_logins() -> None:
    """use_username_as_clientid is per listener: it must follow each `listener` line."""
    conf = _mosquitto_conf()
    current = None
    tied: dict[str, bool] = {}
    for line in conf:
        if line.startswith("listener "):
            current = line
            tied[current] = False
        elif line == "use_username_as_clientid true" and current is not None:
            tied[current] = True
    assert tied and all(tied.values()), tied


def _env(service: str) -> dict[str, str]:
    """The service's environment with ${VAR:-default} replaced by its default."""
    import re

    env = SERVICES[service].get("environment", {})
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def test_the_ingest_logs_in_over_verified_tls_and_registers_no_gateway_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from ingest.settings import load_settings

    for name in list(os.environ):
        if name.startswith("SHULIAN_INGEST_") or name in ("DATABASE_URL", "MQTT_URL"):
            monkeypatch.delenv(name)
    for name, value in _env("ingest").items():
        monkeypatch.setenv(name, value)
    mqtt = load_settings().mqtt
    assert mqtt.is_tls and (mqtt.host, mqtt.port) == ("mosquitto", 8883)
    assert mqtt.username == "ingest-1@shulian" and mqtt.password is None
    assert load_settings().registry.auto_register_gateways is False
    mounted = {v.split(":")[1] for v in SERVICES["ingest"]["volumes"]}
    for path in (mqtt.password_file, mqtt.ca_file):
        assert path is not None and str(path.parent) in mounted, f"{path} is not mounted"
    made = (REPO / "deploy" / "compose" / "make-secrets").read_text()
    assert f"$dir/ingest/{mqtt.password_file.name}" in made and "ingest-1@shulian" in made


def test_the_demo_gateway_logs_in_with_its_own_login_over_verified_tls() -> None:
    from gateway.profiles.loader import load_site
    from gateway.settings import build_settings

    settings = build_settings(load_site(REPO / "deploy" / "compose" / "gateway.yaml").settings)
    mqtt, identity = settings.mqtt, settings.gateway
    assert mqtt.is_tls and (mqtt.host, mqtt.port) == ("mosquitto", 8883)
    assert mqtt.username == f"{identity.enterprise}/{identity.id}", "the ACL's %u pattern"
    mounted = {v.split(":")[1] for v in SERVICES["gateway"]["volumes"]}
    for path in (mqtt.password_file, mqtt.ca_file):
        assert path is not None and str(path.parent) in mounted, f"{path} is not mounted"
    made = (REPO / "deploy" / "compose" / "make-secrets").read_text()
    assert f"--enterprise {identity.enterprise} --gateway {identity.id}" in made
    assert f"$dir/gateway/{mqtt.password_file.name}" in made


def test_the_monitoring_reads_the_ingests_database_and_publishes_its_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from ingest.settings import load_settings as load_ingest
    from monitoring.settings import load_settings as load_monitoring

    for name in list(os.environ):
        if name.startswith(("SHULIAN_INGEST_", "SHULIAN_MONITORING_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in {**_env("ingest"), **_env("monitoring")}.items():
        monkeypatch.setenv(name, value)
    monitoring, ingest = load_monitoring(), load_ingest()
    assert monitoring.db.url == ingest.db.url
    assert monitoring.refresh.enabled, "the one monitoring instance runs the KPI refresh"
    assert monitoring.http.host == "0.0.0.0"
    assert SERVICES["monitoring"]["ports"] == [f"{monitoring.http.port}:{monitoring.http.port}"]
    # It starts when the ingest's endpoint answers (the schema exists); the check asks that port.
    assert SERVICES["monitoring"]["depends_on"]["ingest"] == {"condition": "service_healthy"}
    command = SERVICES["ingest"]["command"]
    port = int(command[command.index("--port") + 1])
    assert ingest.api.host == "0.0.0.0"
    assert f"http://127.0.0.1:{port}/api/ingest/health" in " ".join(
        SERVICES["ingest"]["healthcheck"]["test"]
    )
    assert "--api" in command
