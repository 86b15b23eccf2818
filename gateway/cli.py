"""``shulian gateway``: run the gateway, show its effective settings, manage broker credentials."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

app = typer.Typer(
    help="Run the factory gateway agent and manage its settings.", no_args_is_help=True
)
settings_app = typer.Typer(help="Inspect the gateway's settings.", no_args_is_help=True)
app.add_typer(settings_app, name="settings")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Site file (gateway.yaml): settings sections plus devices and fleets.",
        envvar="SHULIAN_GW_CONFIG",
        exists=False,
    ),
]


def _cli_overrides(
    gateway_id: str | None,
    enterprise: str | None,
    mqtt_url: str | None,
    data_dir: Path | None,
    log_level: str | None,
    log_format: str | None,
    metrics_port: int | None,
) -> dict[str, Any]:
    return {
        "gateway": {"id": gateway_id, "enterprise": enterprise, "data_dir": data_dir},
        "mqtt": {"url": mqtt_url},
        "log": {"level": log_level, "format": log_format},
        "metrics": {"port": metrics_port},
    }


def _file_settings(config: Path) -> tuple[dict[str, Any], dict[Any, tuple[str, int]]]:
    """The site file's settings sections and where each was written (devices are not resolved)."""
    from gateway.profiles.loader import read_yaml, record_lines

    data = read_yaml(config)
    if not isinstance(data, dict):
        raise ConfigError([f"{config}:1: a site file is a mapping (gateway, mqtt, devices, ...)"])
    lines = record_lines(data, str(config))
    plain = {
        str(k): _plain(v)
        for k, v in data.items()
        if k not in ("devices", "fleets", "profile_paths")
    }
    return plain, lines


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _fail(exc: ConfigError) -> typer.Exit:
    typer.echo(str(exc), err=True)
    return typer.Exit(2)


@app.command()
def run(
    config: ConfigOption,
    gateway_id: Annotated[str | None, typer.Option("--gateway-id", help="gateway.id")] = None,
    enterprise: Annotated[str | None, typer.Option(help="gateway.enterprise")] = None,
    mqtt_url: Annotated[str | None, typer.Option(help="mqtt.url (mqtt:// or mqtts://)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="gateway.data_dir (disk buffer)")] = None,
    log_level: Annotated[str | None, typer.Option(help="log.level")] = None,
    log_format: Annotated[str | None, typer.Option(help="log.format: text or json")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="metrics.port for Prometheus; 0 = off")
    ] = None,
) -> None:
    """Run the gateway: read the devices in the site file and publish to MQTT until stopped."""
    from gateway.app import run_gateway
    from gateway.logs import configure_logging
    from gateway.profiles.loader import load_site
    from gateway.settings import build_settings

    cli = _cli_overrides(
        gateway_id, enterprise, mqtt_url, data_dir, log_level, log_format, metrics_port
    )
    try:
        file_data, lines = _file_settings(config)
        settings = build_settings(file_data, cli, file_name=str(config), file_lines=lines)
        configure_logging(settings.log.format, settings.log.level)
        settings.require_identity()
        site = load_site(_site_to_run(config, settings))
    except ConfigError as exc:
        raise _fail(exc) from None
    try:
        _run_event_loop(run_gateway(settings, site))
    except ConfigError as exc:
        raise _fail(exc) from None


def _site_to_run(config: Path, settings: GatewaySettings) -> Path:
    """The last good remote configuration when remote configuration is on, else ``config``."""
    from gateway.remote_config import last_good_site

    if not settings.remote_config.enabled:
        return config
    remote = last_good_site(Path(settings.gateway.data_dir) / "remote-config")
    if remote is not None:
        logging.getLogger(__name__).info(
            "running the last good remote configuration", extra={"site": str(remote)}
        )
        return remote
    return config


@app.command()
def backfill(
    config: ConfigOption,
    history: Annotated[
        Path,
        typer.Option("--history", help="Folder of history logs, one <device id>.jsonl per device."),
    ],
    mqtt_url: Annotated[str | None, typer.Option(help="mqtt.url (mqtt:// or mqtts://)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="gateway.data_dir (disk buffer)")] = None,
) -> None:
    """Send the site's devices' history logs as historical data; return when all is acknowledged.

    Run it before `gateway run` for the same site (docs/simulators.md, "History")."""
    from gateway.backfill import backfill as run_backfill
    from gateway.logs import configure_logging
    from gateway.profiles.loader import load_site
    from gateway.settings import build_settings

    cli = _cli_overrides(None, None, mqtt_url, data_dir, None, None, 0)
    try:
        file_data, lines = _file_settings(config)
        settings = build_settings(file_data, cli, file_name=str(config), file_lines=lines)
        configure_logging(settings.log.format, settings.log.level)
        settings.require_identity()
        site = load_site(config)
        result = asyncio.run(run_backfill(settings, site, history))
    except ConfigError as exc:
        raise _fail(exc) from None
    except TimeoutError as exc:
        typer.echo(f"backfill incomplete: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"backfilled {result.devices} devices: {result.readings:,} readings, "
        f"{result.samples:,} samples in {result.batches:,} historical batches"
        + (f"; no history log for {', '.join(result.missing)}" if result.missing else "")
    )


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (the gateway extra brings it), else asyncio's.

    uvloop spends about half of asyncio's CPU per socket event; with thousands of Modbus
    requests a second that is the largest single saving (bench/README.md).
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


@settings_app.command("show")
def settings_show(
    config: ConfigOption,
    gateway_id: Annotated[str | None, typer.Option("--gateway-id")] = None,
    enterprise: Annotated[str | None, typer.Option()] = None,
    mqtt_url: Annotated[str | None, typer.Option()] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
    log_format: Annotated[str | None, typer.Option()] = None,
    metrics_port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Print every effective setting, its value (secrets masked) and where it came from."""
    from gateway.settings import build_settings, describe

    cli = _cli_overrides(
        gateway_id, enterprise, mqtt_url, data_dir, log_level, log_format, metrics_port
    )
    try:
        file_data, lines = _file_settings(config)
        settings = build_settings(file_data, cli, file_name=str(config), file_lines=lines)
    except ConfigError as exc:
        raise _fail(exc) from None
    rows = list(describe(settings, file_data, cli, str(config)))
    width = max(len(r[0]) for r in rows)
    value_width = min(48, max(len(r[1]) for r in rows))
    for name, value, source in rows:
        typer.echo(f"{name:<{width}}  {value:<{value_width}}  {source}")


@app.command()
def status(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Site file of the running gateway: its status.bind and status.port are used.",
            envvar="SHULIAN_GW_CONFIG",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The status page's address (default http://127.0.0.1:8765/)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print /status.json as it is.")] = False,
    lang: Annotated[str, typer.Option(help="en or zh-CN")] = "en",
) -> None:
    """Show the running gateway's devices, last values, errors, buffer and broker (its status page)."""
    import json
    import urllib.error
    import urllib.request

    from gateway.settings import build_settings
    from gateway.status_render import pick_language, print_terminal

    if url is None:
        try:
            if config is not None:
                file_data, lines = _file_settings(config)
                settings = build_settings(file_data, None, file_name=str(config), file_lines=lines)
            else:
                settings = build_settings({}, None)
        except ConfigError as exc:
            raise _fail(exc) from None
        if not settings.status.port:
            typer.echo("the status page is off (status.port is 0)", err=True)
            raise typer.Exit(2)
        host = settings.status.bind
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{settings.status.port}/"
    target = url.rstrip("/") + "/status.json" if not url.endswith(".json") else url
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            body = response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        typer.echo(
            f"no gateway status page at {target}: {reason} (is the gateway running?)", err=True
        )
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(body.decode())
        return
    print_terminal(json.loads(body), pick_language(lang, ""))


def _register_credentials() -> None:
    from gateway.credentials import app as credentials_app

    app.add_typer(credentials_app, name="credentials")


try:
    _register_credentials()
except ImportError:  # pragma: no cover - credentials.py is optional until it lands
    pass
