"""A factory gateway installs only what it runs: shulian[gateway] brings no web or database stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CLOUD_ONLY = {"fastapi", "uvicorn", "starlette", "psycopg", "psycopg-binary", "psycopg-pool"}
WEB_FRAMEWORKS = {"aiohttp", "flask", "django", "tornado", "sanic", "quart", "bottle", "starlette"}
"""The gateway's status page is served by asyncio itself (gateway/status.py), not by one of these."""


def _resolve(extra: str, tmp_path: Path) -> set[str]:
    """What pip would install into an empty environment (resolved from PyPI, nothing installed)."""
    report = tmp_path / f"{extra}.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), f"{REPO}[{extra}]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"pip could not resolve from the package index: {result.stderr[-500:]}")
    data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower().replace("_", "-") for item in data["install"]}


def test_gateway_extra_pulls_no_web_or_database_packages(tmp_path: Path) -> None:
    gateway = _resolve("gateway", tmp_path)
    assert {"asyncua", "pymodbus", "paho-mqtt", "pint"} <= gateway
    assert not gateway & CLOUD_ONLY, gateway & CLOUD_ONLY
    assert not gateway & WEB_FRAMEWORKS, gateway & WEB_FRAMEWORKS


def test_ingest_extra_does_pull_them(tmp_path: Path) -> None:
    """The same check on the cloud extra finds them, so the check above can fail."""
    assert {"fastapi", "uvicorn", "psycopg"} <= _resolve("ingest", tmp_path)


def test_the_monitoring_has_an_extra_of_its_own(tmp_path: Path) -> None:
    """The pages' and the push's libraries come with the monitoring, not with an ingest worker."""
    monitoring = _resolve("monitoring", tmp_path)
    assert {"fastapi", "uvicorn", "psycopg", "jinja2", "httpx", "tenacity"} <= monitoring
    assert "paho-mqtt" not in monitoring
    assert not {"jinja2", "tenacity", "python-stdnum"} & _resolve("ingest", tmp_path)


def test_the_ingest_alone_loads_none_of_the_monitorings_runtime() -> None:
    """`shulian ingest run` without --with-monitoring: its noun and its service import no part of
    the monitoring's app (only the settings model the --with-monitoring option would read)."""
    code = (
        "import sys; from shulian.cli import build_app; build_app(['ingest']); "
        "import ingest.service, ingest.http; "
        "bad = sorted(m for m in sys.modules if m.startswith('monitoring.') "
        "and m not in ('monitoring.settings', 'monitoring.errors')); print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_commands_import_no_cloud_module() -> None:
    """Nor does the running gateway with its status page (gateway.app, gateway.status)."""
    code = (
        "import sys; from shulian.cli import build_app; build_app(['gateway']); "
        "build_app(['profile']); import gateway.app, gateway.status, gateway.status_render; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'uvicorn', 'starlette', 'aiohttp', 'flask', 'psycopg', 'psycopg_pool', "
        "'ingest')); print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


DATA_DIRS = [
    "device_profiles",
    "monitoring/web",
    "ingest/db/migrations",
    "monitoring/db/migrations",
    "simulators/scenarios",
    "simulators/manuals",
    "simulators/nodesets",
    "shulian/demo_data",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """Build the wheel once as a non-editable install would; its file names and pip's output."""
    import zipfile

    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = zipfile.ZipFile(next(out.glob("shulian-*.whl"))).namelist()
    return names, result.stdout + result.stderr


def test_the_wheel_carries_every_data_file_the_code_reads(wheel: tuple[list[str], str]) -> None:
    """A non-editable install (the Docker image, a gateway) must not lose templates or SQL."""
    names, _ = wheel
    wanted = [
        "monitoring/api/app.py",
        "monitoring/web/templates/",
        "monitoring/web/static/vendor/echarts",
        "monitoring/web/i18n/zh-CN.json",
        "ingest/db/migrations/0001_registry.sql",
        "ingest/db/migrations/0003_telemetry.timescaledb.sql",
        "monitoring/db/migrations/0102_kpi_daily.sql",
        "simulators/scenarios/demo.yaml",
        "simulators/manuals/energy_meter.md",
        "simulators/nodesets/Opc.Ua.MachineTool.NodeSet2.xml",
        "shulian/demo_data/enterprises.csv",
        "device_profiles/345/raceway_grinder.yaml",
        "device_profiles/_base/machine.yaml",
        "shulian-0.1.0.data/data/share/shulian/mosquitto/common.conf",
    ]
    missing = [w for w in wanted if not any(n.startswith(w) for n in names)]
    assert not missing, f"not in the wheel: {missing}"


def test_the_wheel_carries_every_file_of_the_data_folders(wheel: tuple[list[str], str]) -> None:
    """Every profile YAML/CSV, web template/static/i18n file, scenario and migration in the source
    tree is in the wheel, whichever subfolder it sits in."""
    names = set(wheel[0])
    present = [
        path.relative_to(REPO).as_posix()
        for folder in DATA_DIRS
        for path in sorted((REPO / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    assert len(present) > 50, present  # the walk found the data, so the check below means something
    missing = [p for p in present if p not in names]
    assert not missing, f"in the source tree but not in the wheel: {missing}"


def test_building_the_wheel_prints_no_package_discovery_warnings(
    wheel: tuple[list[str], str],
) -> None:
    """setuptools warned, on every install, that data folders (device_profiles/_base, ...) look like
    packages it would ignore: noise that hides real warnings from a newcomer."""
    _, output = wheel
    assert "would be ignored" not in output, output[-3000:]
    assert "is absent from the `packages` configuration" not in output, output[-3000:]
