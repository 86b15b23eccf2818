"""``shulian profile``: the tools a service provider uses on site (validate, schema, probe, plan).

- ``validate PATH...`` checks profiles and site files (told apart by content), printing every
  error and warning as ``file:line: field.path: message``; the exit status is 1 when any error
  is found (or any warning, with ``--strict``).
- ``schema`` prints the JSON Schema editors use (``device_profiles/profile.schema.json``).
- ``probe`` connects to one device once (``--profile`` at ``--endpoint``, or ``--device`` of a
  ``--site`` file with its own settings and security), reads every signal and prints raw and
  normalized values.
- ``plan`` prints the Modbus read plan and what a poll cycle costs against one request per signal.

Exit status: 0 fine, 1 problems found (validate) or some signals unreadable (probe), 2 the command
could not run (bad profile, unreachable device, wrong protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NoReturn

import typer
from ruamel.yaml.comments import CommentedMap

from gateway.drivers.registry import DRIVERS
from gateway.errors import ConfigError, DriverError
from gateway.profiles.loader import (
    DevicePlaces,
    LoadedProfile,
    ProfileResolver,
    _plain,
    bind_profile,
    format_number,
    load_site,
    place_problem,
    read_yaml,
    record_lines,
)
from gateway.profiles.models import DeviceConfig, ProfileBase
from gateway.profiles.schema import authoring_schema, check_abstract_base
from wire.payloads import Quality
from wire.signals import SignalKind

app = typer.Typer(
    help="Validate, inspect, plan and probe device profiles.",
    no_args_is_help=True,
    add_completion=False,
)

Severity = Literal["error", "warning"]

EXAMPLE_ENDPOINTS: Final[dict[str, str]] = {
    "modbus": "tcp://127.0.0.1:502",
    "opcua": "opc.tcp://127.0.0.1:4840",
}
"""Stand-in endpoints for checking a profile on its own, before any device is known."""
DEFAULT_SCHEMES: Final[dict[str, str]] = {"modbus": "tcp", "opcua": "opc.tcp"}

FASTEST_SENSIBLE_MS: Final = 100
"""Faster than this, most PLCs and meters cannot answer and the cycle overruns."""
SLOWEST_SENSIBLE_MS: Final = 600_000
"""Slower than this, a reading is too stale to monitor a machine."""
SLOWEST_STATE_MS: Final = 10_000
"""States and alarms polled slower than this reach the dashboard late."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one file: ``text`` is ``file:line: field.path: message``."""

    severity: Severity
    text: str

    def render(self) -> str:
        return f"{self.severity}: {self.text}"


# ---- validate ------------------------------------------------------------------------------


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, with folders expanded (sorted, recursively)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def is_site_file(data: CommentedMap) -> bool:
    """A site file lists devices or fleets; a profile lists signals of one equipment model."""
    if "protocol" in data or "signals" in data or "extends" in data:
        return False
    return any(key in data for key in ("devices", "fleets", "gateway"))


def validate_paths(paths: list[Path], profile_paths: list[Path] | None = None) -> list[Finding]:
    """Every error and warning in the profiles and site files under ``paths``."""
    resolver = ProfileResolver(list(profile_paths or []))
    findings: list[Finding] = []
    ids: dict[str, Path] = {}
    for file in yaml_files(paths):
        try:
            data = read_yaml(file)
        except ConfigError as exc:
            findings += [Finding("error", p) for p in exc.problems]
            continue
        if not isinstance(data, CommentedMap):
            findings.append(Finding("error", f"{file}:1: expected a profile or a site file"))
        elif is_site_file(data):
            findings += validate_site(file, profile_paths)
        else:
            findings += _duplicate_id(file, data, ids)
            findings += validate_profile_file(file, data, resolver)
    return _unique(findings)  # a profile a site uses may be named on the command line too


def _duplicate_id(file: Path, data: CommentedMap, ids: dict[str, Path]) -> list[Finding]:
    profile_id = data.get("id")
    if not isinstance(profile_id, str):
        return []
    other = ids.setdefault(profile_id, file.resolve())
    if other == file.resolve():
        return []
    line = data.lc.key("id")[0] + 1
    return [
        Finding(
            "error",
            f"{file}:{line}: id: {profile_id!r} is also the id of {other}; "
            "sites and the demo find profiles by id, so ids must be unique",
        )
    ]


def validate_profile_file(
    file: Path, data: CommentedMap, resolver: ProfileResolver
) -> list[Finding]:
    """Errors and warnings of one profile file (an abstract base is checked as far as it can be)."""
    if data.get("abstract"):
        problems = check_abstract_base(data, file)
        if data.get("extends") is not None:
            try:
                resolver.find(str(data["extends"]), relative_to=file.parent)
            except ConfigError as exc:
                line = data.lc.key("extends")[0] + 1
                problems += [f"{file}:{line}: extends: {p}" for p in exc.problems]
        return [Finding("error", p) for p in problems]
    try:
        loaded = resolver.load(str(file.resolve()))
    except ConfigError as exc:
        return [Finding("error", p) for p in exc.problems]
    device = stand_in_device(loaded.profile, source=f"{file}:1")
    findings, reported = driver_findings(device, loaded)
    return findings + profile_warnings(loaded, reported)


def validate_site(file: Path, profile_paths: list[Path] | None) -> list[Finding]:
    """Errors of a site file (settings, devices, the profiles they use), then device warnings."""
    findings = settings_findings(file)
    try:
        site = load_site(file, profile_paths)
    except ConfigError as exc:
        return findings + [Finding("error", p) for p in exc.problems]
    seen: set[str] = set()
    for device in site.devices:
        loaded = site.profiles.get(device.profile.id)
        driver_found, reported = driver_findings(device, loaded, site.places)
        findings += [f for f in driver_found if f.severity == "warning"]
        if loaded is not None and device.profile.id not in seen:
            seen.add(device.profile.id)
            findings += profile_warnings(loaded, reported)
    return _unique(findings)


def settings_findings(file: Path) -> list[Finding]:
    """Errors in the gateway's own sections of a site file (gateway, mqtt, buffer, ...)."""
    from gateway.settings import build_settings

    data = read_yaml(file)
    try:
        build_settings(
            file_data=_plain(dict(data)),
            file_name=str(file),
            file_lines=record_lines(data, str(file)),
        )
    except ConfigError as exc:
        return [Finding("error", p) for p in exc.problems]
    return []


def _unique(findings: list[Finding]) -> list[Finding]:
    """Drop repeats (a warning about a profile is the same for each device using it)."""
    out: list[Finding] = []
    seen: set[Finding] = set()
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            out.append(finding)
    return out


def stand_in_device(
    profile: ProfileBase, source: str, endpoint: str = "", device_id: str = ""
) -> DeviceConfig:
    """A device that uses ``profile``, for checks and probes outside a site file.

    Its id (the profile's id unless given) stands for ``{device}`` in node ids.
    """
    return DeviceConfig(
        id=device_id or profile.id,
        enterprise="probe",
        endpoint=endpoint or EXAMPLE_ENDPOINTS.get(profile.protocol, ""),
        unit_id=None,
        line="",
        profile=bind_profile(profile, device_id or profile.id),
        source=source,
    )


def driver_problems(device: DeviceConfig) -> list[Any]:
    """The driver's static ``check`` of ``device`` (an unloadable driver is one problem)."""
    from gateway.drivers.base import Problem

    entry = DRIVERS[device.profile.protocol]
    try:
        driver = entry.load()
    except ImportError as exc:
        return [Problem("protocol", f"driver {entry.name!r} cannot load: {exc}")]
    return list(driver.check(device))


def driver_findings(
    device: DeviceConfig, loaded: LoadedProfile | None, places: DevicePlaces | None = None
) -> tuple[list[Finding], set[str]]:
    """The driver's ``check`` as findings placed at the profile's (or the site's) line.

    Returns:
        The findings, and the field paths they are about (so our own checks do not repeat them).
    """
    findings = []
    problems = driver_problems(device)
    for problem in problems:
        severity: Severity = "warning" if problem.severity == "warning" else "error"
        place = place_problem(problem.where, device, loaded, places)
        findings.append(Finding(severity, f"{place}: {problem.message}"))
    return findings, {p.where for p in problems}


def profile_warnings(loaded: LoadedProfile, reported: set[str]) -> list[Finding]:
    """Protocol-neutral warnings: unit aliases, groups nobody reads, intervals, deadbands,
    heartbeats. (A unit that does not convert is an error of the loader, as at ``gateway run``.)"""
    profile = loaded.profile
    warnings: list[str] = list(loaded.warnings)
    for index, group in enumerate(profile.groups):
        members = profile.signals_of(group.name)
        if not members and f"groups[{index}].name" not in reported:
            warnings.append(
                f"{loaded.where(f'groups[{index}].name')}: group {group.name!r} has no "
                "signals and is never read"
            )
        if group.interval_ms < FASTEST_SENSIBLE_MS:
            warnings.append(
                f"{loaded.where(f'groups[{index}].interval_ms')}: every {group.interval_ms} ms "
                f"is faster than most devices answer; use {FASTEST_SENSIBLE_MS} ms or more"
            )
        elif group.interval_ms > SLOWEST_SENSIBLE_MS:
            warnings.append(
                f"{loaded.where(f'groups[{index}].interval_ms')}: every "
                f"{group.interval_ms / 60_000:g} min leaves readings stale; monitoring "
                f"needs at most {SLOWEST_SENSIBLE_MS // 60_000} min"
            )
    for index, signal in enumerate(profile.signals):
        where = f"signals[{index}]"
        kind = signal.effective_kind
        interval_ms = profile.group(signal.group).interval_ms
        heartbeat_s = signal.heartbeat_s or profile.heartbeat_s
        if heartbeat_s * 1000 < interval_ms:
            field = "heartbeat_s" if signal.heartbeat_s else "group"
            warnings.append(
                f"{loaded.where(f'{where}.{field}')}: heartbeat {heartbeat_s:g} s is shorter "
                f"than the interval of group {signal.group!r} ({interval_ms} ms); it cannot "
                "be reported that often"
            )
        if signal.deadband is not None and kind is not SignalKind.GAUGE:
            warnings.append(
                f"{loaded.where(f'{where}.deadband')}: a deadband applies to gauges; a "
                f"{kind.value} is reported on every change"
            )
        if kind in (SignalKind.STATE, SignalKind.ALARM) and interval_ms > SLOWEST_STATE_MS:
            warnings.append(
                f"{loaded.where(f'{where}.group')}: {signal.name} is a {kind.value} polled every "
                f"{interval_ms / 1000:g} s; changes reach the dashboard that late (use a group "
                f"of {SLOWEST_STATE_MS // 1000} s or faster)"
            )
    return [Finding("warning", text) for text in warnings]


PathsArg = Annotated[
    list[Path],
    typer.Argument(help="Profiles, site files or folders of them (searched for *.yaml)."),
]
ProfilePathOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--profile-path",
        help="Extra folder to find profiles in by id or path (before the shipped library).",
    ),
]


@app.command()
def validate(
    paths: PathsArg,
    profile_path: ProfilePathOpt = None,
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) on warnings too.")] = False,
) -> None:
    """Check profiles and site files: every error and warning with file, line and field."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(map(str, missing))}")
    findings = validate_paths(paths, profile_path)
    for finding in findings:
        typer.echo(finding.render())
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    files = len(yaml_files(paths))
    typer.echo(
        f"{files} file{'s' if files != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}",
    )
    if errors or (strict and warnings):
        raise typer.Exit(1)


# ---- schema --------------------------------------------------------------------------------


def schema_text() -> str:
    """The authoring schema as committed in ``device_profiles/profile.schema.json``."""
    return json.dumps(authoring_schema(), indent=2, ensure_ascii=False) + "\n"


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of profile files, for editors (yaml-language-server, VS Code)."""
    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


# ---- plan ----------------------------------------------------------------------------------


def load_profile(ref: str, profile_paths: list[Path] | None = None) -> LoadedProfile:
    """A profile by path or id; folders given first, then the shipped library."""
    path = Path(ref)
    folders = list(profile_paths or [])
    if path.is_file():
        return ProfileResolver(folders).load(str(path.resolve()))
    return ProfileResolver(folders).load(ref)


ProfileOpt = Annotated[
    str, typer.Option("--profile", "-p", help="Profile file, or the id of a shipped profile.")
]


@app.command()
def plan(
    profile: ProfileOpt,
    profile_path: ProfilePathOpt = None,
    max_registers: Annotated[
        int | None,
        typer.Option(help="Override max_registers_per_request (a device's limit)."),
    ] = None,
    max_gap: Annotated[int | None, typer.Option(help="Override max_gap.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the Modbus read plan and requests per poll cycle against one request per signal."""
    from gateway.drivers.modbus.models import ModbusProfile
    from gateway.drivers.modbus.planner import plan_profile

    loaded = _load_or_fail(profile, profile_path)
    if not isinstance(loaded.profile, ModbusProfile):
        _fail(
            f"{loaded.file}: profile {loaded.profile.id!r} uses {loaded.profile.protocol}; "
            "plan shows Modbus read requests (an OPC UA group is one subscription)"
        )
    overrides: dict[str, int] = {}
    if max_registers is not None:
        overrides["max_registers_per_request"] = max_registers
    if max_gap is not None:
        overrides["max_gap"] = max_gap
    try:
        settings = loaded.profile.modbus.model_validate(
            {**loaded.profile.modbus.model_dump(), **overrides}
        )
    except ValueError as exc:
        _fail(f"invalid limit: {exc}")
    report = plan_profile(loaded.profile, settings)
    styles = loaded.number_styles

    def address_text(key: str, address: int) -> str:
        return format_number(address, styles.get(key))

    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render(address_text))


# ---- probe ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRow:
    signal: str
    group: str
    raw: object
    value: object
    unit: str
    quality: str
    reason: str
    ts_ms: int
    """When the driver took the reading (UTC epoch ms)."""


@dataclass(frozen=True, slots=True)
class ProbeReport:
    device: str
    rows: list[ProbeRow]
    requests: int

    @property
    def bad(self) -> list[ProbeRow]:
        return [row for row in self.rows if row.quality != "good"]


def full_endpoint(endpoint: str, protocol: str) -> str:
    """``10.0.0.5:502`` -> ``tcp://10.0.0.5:502`` (the protocol's usual scheme)."""
    if "://" in endpoint:
        return endpoint
    return f"{DEFAULT_SCHEMES.get(protocol, 'tcp')}://{endpoint}"


def probe_device(
    profile: ProfileBase,
    endpoint: str,
    unit_id: int | None = None,
    settings: dict[str, Any] | None = None,
    device_id: str = "",
) -> DeviceConfig:
    """The device a probe reads: the profile at ``endpoint``, with optional setting overrides."""
    device = stand_in_device(
        profile,
        source="--endpoint",
        endpoint=full_endpoint(endpoint, profile.protocol),
        device_id=device_id,
    )
    return device.model_copy(update={"unit_id": unit_id, "settings": settings or {}})


async def probe(device: DeviceConfig) -> ProbeReport:
    """Connect once, read every group once, and normalize what came back.

    Raises:
        ConfigError: the profile or device fails the driver's check or a unit does not convert.
        DriverError: the device as a whole failed (refused, timed out, protocol violation).
    """
    from gateway.drivers.base import DriverMetrics
    from gateway.normalize import compile_device

    errors = [p for p in driver_problems(device) if p.severity == "error"]
    if errors:
        raise ConfigError([f"{device.describe()}: {p}" for p in errors])
    normalizer = compile_device(device)
    driver_class = DRIVERS[device.profile.protocol].load()
    logger = logging.LoggerAdapter(logging.getLogger("shulian.probe"), {"device": device.id})
    driver = driver_class(device, logger, DriverMetrics())
    units = {signal.name: signal.canonical_unit for signal in device.profile.signals}
    rows: list[ProbeRow] = []
    requests = 0
    async with driver:
        for group in device.profile.groups:
            if not device.profile.signals_of(group.name):
                continue
            result = await driver.read(group)
            requests += result.requests
            samples = {s.signal: s for s in normalizer.normalize(result.readings)}
            for reading in result.readings:
                sample = samples.get(reading.signal)
                quality = sample.quality if sample is not None else reading.quality
                reason = reading.reason or ""
                if not reason and quality is not Quality.GOOD:
                    reason = normalizer.last_bad_reason.get(reading.signal, "")
                rows.append(
                    ProbeRow(
                        signal=reading.signal,
                        group=group.name,
                        raw=reading.raw,
                        value=sample.value if sample is not None else None,
                        unit=units.get(reading.signal, ""),
                        quality=quality.value,
                        reason=reason,
                        ts_ms=reading.ts_ms,
                    )
                )
    return ProbeReport(device.describe(), rows, requests)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return f"{value:.1f}"
        return f"{value:.6g}"
    return str(value)


def render_probe(report: ProbeReport) -> str:
    header = ("signal", "group", "raw", "value", "unit", "quality", "reason")
    rows = [
        (r.signal, r.group, _cell(r.raw), _cell(r.value), r.unit or "-", r.quality, r.reason)
        for r in report.rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    good = len(report.rows) - len(report.bad)
    lines.append(
        f"{report.device}: {good}/{len(report.rows)} signals good, {report.requests} request(s)"
    )
    return "\n".join(lines)


def site_device(
    site: Path, device_id: str, profile_paths: list[Path] | None = None
) -> DeviceConfig:
    """Device ``device_id`` of a site file, exactly as ``gateway run`` hands it to its driver:
    its endpoint, unit id, per-device settings (security, timeouts, limits), profile, and the
    gateway's PKI folder for OPC UA certificates.

    Raises:
        ConfigError: the site file or its profiles have errors, or it has no such device.
    """
    from gateway.app import with_data_dir
    from gateway.settings import build_settings

    loaded = load_site(site, profile_paths)
    data = read_yaml(site)
    settings = build_settings(
        file_data=_plain(dict(data)), file_name=str(site), file_lines=record_lines(data, str(site))
    )
    for device in loaded.devices:
        if device.id == device_id:
            return with_data_dir(device, Path(settings.gateway.data_dir))
    known = ", ".join(d.id for d in loaded.devices) or "none"
    raise ConfigError(
        [
            f"{site}: no enabled device {device_id!r} (devices: {known}); check --device "
            "against the ids in the site file (a device with enabled: false is not probed)"
        ]
    )


@app.command(name="probe")
def probe_command(
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", help="Profile file, or the id of a shipped profile."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "-e",
            help="tcp://host:502, rtu+tcp://host:port, rtu:///dev/ttyUSB0?baudrate=9600, "
            "opc.tcp://host:4840 (host:port takes the protocol's usual scheme).",
        ),
    ] = None,
    site: Annotated[
        Path | None,
        typer.Option(
            "--site",
            "-s",
            help="A site file: probe its device --device with that device's profile, endpoint, "
            "unit id, settings and security, as `gateway run` would (instead of "
            "--profile/--endpoint).",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="The id of the device in --site.")
    ] = None,
    unit_id: Annotated[int | None, typer.Option(help="Modbus unit id (slave address).")] = None,
    timeout_s: Annotated[
        float | None, typer.Option(help="Reply timeout per request, overriding the profile's.")
    ] = None,
    device_id: Annotated[
        str,
        typer.Option(
            help="The device's id, for profiles whose node ids contain {device} "
            "(servers hosting several machines); default: the profile's id."
        ),
    ] = "",
    select_machine: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: which machine of a companion-spec profile's type to read when the "
            "server hosts several (serial_number=VMC-0042, name=vmc-07); repeatable.",
        ),
    ] = None,
    profile_path: ProfilePathOpt = None,
) -> None:
    """Connect to one device once, read every signal and print raw and normalized values.

    Give ``--profile`` and ``--endpoint``, or ``--site`` and ``--device`` to probe a device of a
    site file with everything its site entry says (endpoint, unit id, settings, security).
    """
    settings: dict[str, Any] = {"timeout_s": timeout_s} if timeout_s is not None else {}
    if select_machine:
        pairs = [item.partition("=") for item in select_machine]
        if any(not key or not sep for key, sep, _ in pairs):
            _fail("--select-machine takes KEY=VALUE, e.g. serial_number=VMC-0042")
        settings["select_machine"] = {key: value for key, _, value in pairs}
    if site is not None or device is not None:
        if site is None or device is None or profile is not None or endpoint is not None:
            _fail("give --site with --device, or --profile with --endpoint")
        try:
            target = site_device(site, device, profile_path)
        except ConfigError as exc:
            _fail("\n".join(exc.problems))
        overrides: dict[str, Any] = {"settings": {**target.settings, **settings}}
        if unit_id is not None:
            overrides["unit_id"] = unit_id
        target = target.model_copy(update=overrides)
    else:
        if profile is None or endpoint is None:
            _fail("give --profile with --endpoint, or --site with --device")
        loaded = _load_or_fail(profile, profile_path)
        target = probe_device(loaded.profile, endpoint, unit_id, settings, device_id)
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    # A block that fails alone is logged with its hint (max_gap, addresses): show it.
    logging.getLogger("shulian.probe").setLevel(logging.WARNING)
    try:
        report = asyncio.run(probe(target))
    except ConfigError as exc:
        _fail("\n".join(exc.problems))
    except DriverError as exc:
        _fail(exc.render())
    typer.echo(render_probe(report))
    if report.bad:
        raise typer.Exit(1)


# ---- shared --------------------------------------------------------------------------------


def _load_or_fail(ref: str, profile_paths: list[Path] | None) -> LoadedProfile:
    try:
        return load_profile(ref, profile_paths)
    except ConfigError as exc:
        _fail("\n".join(exc.problems))


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
