"""OPC UA driver: subscriptions (monitored items) per group, a session watchdog, and checks.

How the scheduler runs it (it owns time and reconnects; the driver never loops or retries)::

    driver = OpcUaDriver(device, logger, metrics)
    while running:
        try:
            await driver.connect()                       # session + browse paths resolved
            subs = [await driver.subscribe(g, sink) for g in profile.groups]
            await driver.watch()                          # raises when the session is lost
        except DriverError as exc:
            log, mark the device offline
        finally:
            await driver.close()                          # bounded; never hangs
        await backoff.sleep()

``read(group)`` reads every signal of a group once (``profile probe``, or polling on request).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.drivers.base import (
    Capability,
    DriverBase,
    DriverMetrics,
    Problem,
    RawReading,
    ReadingSink,
    ReadResult,
)
from gateway.drivers.opcua.addresses import (
    MACHINE_ALIAS,
    BrowseStep,
    NodeAddress,
    parse_browse_path,
    parse_node_id,
)
from gateway.drivers.opcua.machines import (
    NAME_KEY,
    MachineNotFoundError,
    aliases_of,
    bind,
    explain_failed_paths,
    locate_machine,
)
from gateway.drivers.opcua.models import (
    OpcUaProfile,
    OpcUaSettings,
    OpcUaSignal,
    SecurityMode,
    SecurityPolicy,
)
from gateway.drivers.opcua.security import (
    ClientIdentity,
    Pki,
    default_pki_dir,
    password_env_var,
    read_password,
)
from gateway.drivers.opcua.subscriptions import GroupSubscription, to_reading
from gateway.drivers.opcua.transport import Resolution, UaConnection
from gateway.errors import ConfigError, DeviceUnreachableError, DriverError, ProtocolError
from gateway.profiles.models import DeviceConfig, GroupSpec, ProfileBase
from wire.payloads import Quality
from wire.signals import SignalKind

__all__ = ["OpcUaDriver", "effective_settings"]

_SETTING_NAMES = tuple(OpcUaSettings.model_fields)


def effective_settings(device: DeviceConfig) -> tuple[OpcUaSettings | None, list[Problem]]:
    """The profile's ``opcua`` settings with the device's ``settings`` overrides applied.

    Problems in the overrides are placed at ``device.settings.<field>`` (the site file's entry);
    problems in the profile at ``opcua.<field>``.
    """
    profile = device.profile
    if not isinstance(profile, OpcUaProfile):
        return None, [
            Problem(
                "protocol", f"an OPC UA device needs an opcua profile, not {profile.protocol!r}"
            )
        ]
    problems = [
        Problem(
            f"device.settings.{key}", f"unknown OPC UA setting; known: {', '.join(_SETTING_NAMES)}"
        )
        for key in device.settings
        if key not in _SETTING_NAMES
    ]
    overrides = {k: v for k, v in device.settings.items() if k in _SETTING_NAMES}
    try:
        settings = OpcUaSettings.model_validate({**profile.opcua.model_dump(), **overrides})
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if field in overrides:
                problems.append(Problem(f"device.settings.{field}", message))
            else:
                problems.append(Problem(f"opcua.{field}", message))
        return None, problems
    return settings, problems


class OpcUaDriver(DriverBase):
    """One session to one OPC UA server; see the module docstring for how it is driven."""

    name: ClassVar[str] = "opcua"
    profile_model: ClassVar[type[ProfileBase]] = OpcUaProfile
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SUBSCRIBE, Capability.POLL}
    )

    def __init__(
        self, device: DeviceConfig, logger: logging.LoggerAdapter[Any], metrics: DriverMetrics
    ) -> None:
        self.device = device
        self.log = logger
        self.metrics = metrics
        self.where = device.describe()
        self._settings, problems = effective_settings(device)
        self._setting_problems = [p for p in problems if p.severity == "error"]
        self._connection: UaConnection | None = None
        self._resolved: dict[str, Resolution] = {}
        self._subscriptions: list[GroupSubscription] = []
        self._has_connected = False

    # -- static checks ---------------------------------------------------------------------------

    @staticmethod
    def check(device: DeviceConfig) -> list[Problem]:
        """Every problem with this device's endpoint, settings and node addresses; no network."""
        settings, problems = effective_settings(device)
        problems += _endpoint_problems(device.endpoint)
        if device.unit_id is not None:
            problems.append(
                Problem("device.unit_id", "OPC UA has no unit ids; remove it", severity="warning")
            )
        if settings is not None:
            problems += _settings_problems(device, settings)
        if isinstance(device.profile, OpcUaProfile):
            problems += _signal_problems(device.profile)
            problems += _machine_problems(device, device.profile, settings)
        return problems

    # -- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the session and resolve every signal's address; a no-op when connected.

        Raises:
            ConfigError: the settings are invalid or a password/certificate cannot be loaded.
            DriverError: the server is unreachable, too slow, or refused us (message says why).
        """
        if self._connection is not None:
            return
        settings = self._require_settings()
        identity, pki = await self._load_identity(settings)
        connection = UaConnection(
            endpoint=self.device.endpoint,
            where=self.where,
            settings=settings,
            logger=self.log,
            metrics=self.metrics,
            password=await self._load_password(settings),
            identity=identity,
            pki=pki,
            session_name=f"shulian gateway: {self.device.id}",
        )
        await connection.open()
        try:
            self._resolved = await self._resolve(connection)
        except BaseException:
            await connection.close()
            raise
        if self._has_connected:
            self.metrics.reconnects += 1
        self._has_connected = True
        self._connection = connection
        self.log.info(
            "connected to %s (security %s/%s%s)",
            self.device.endpoint,
            settings.security_policy,
            settings.security_mode,
            f", user {settings.username}" if settings.username else "",
        )

    async def close(self) -> None:
        """Close the session (its subscriptions go with it); bounded and idempotent."""
        connection, self._connection = self._connection, None
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.detach()
        if connection is not None:
            await connection.close()

    # -- data ------------------------------------------------------------------------------------

    async def read(self, group: GroupSpec) -> ReadResult:
        """Read every signal of ``group`` once, in one Read request per 500 nodes."""
        connection = self._require_connection()
        signals = self._signals(group)
        nodes = [
            r.node for s in signals if (r := self._resolved.get(s.name)) and r.node is not None
        ]
        before = self.metrics.requests
        samples = iter(await connection.read(nodes))
        now = _now_ms()
        readings: list[RawReading] = []
        for signal in signals:
            resolution = self._resolved.get(signal.name)
            if resolution is None or resolution.node is None:
                reason = resolution.problem if resolution else "address not resolved"
                readings.append(RawReading(signal.name, None, now, Quality.BAD, reason))
            else:
                readings.append(to_reading(signal.name, next(samples), now))
        return ReadResult(readings, requests=self.metrics.requests - before)

    async def subscribe(self, group: GroupSpec, sink: ReadingSink) -> GroupSubscription:
        """One subscription for ``group``: its initial values, then every change, go to ``sink``.

        Signals whose address does not resolve, or that the server refuses, are delivered once
        as bad readings with the reason (``BadNodeIdUnknown``); the others keep flowing.
        """
        connection = self._require_connection()
        settings = self._require_settings()
        subscription = GroupSubscription(group, self._signals(group), sink, self.log, self.metrics)
        await subscription.start(
            connection,
            self._resolved,
            keepalive_s=settings.keepalive_s,
            session_timeout_s=settings.session_timeout_s,
        )
        self._subscriptions.append(subscription)
        return subscription

    async def watch(self) -> None:
        """Return only when ``close()`` is called; raise a DriverError when the session is lost.

        Every ``keepalive_s`` it reads the server's state (within ``min(timeout_s, keepalive_s)``)
        and checks that every subscription spoke within its keep-alive period; a closed socket
        or an ended subscription wakes it at once. A dead session is reported within about two
        ``keepalive_s``.
        """
        connection = self._require_connection()
        settings = self._require_settings()
        while True:
            reason = await connection.wait_lost(settings.keepalive_s)
            if self._connection is not connection:
                return
            if reason is not None:
                raise DeviceUnreachableError(
                    f"session lost: {reason}",
                    where=self.where,
                    hint="The gateway reconnects and recreates the subscriptions.",
                )
            try:
                await connection.probe()
            except DriverError as exc:
                if self._connection is not connection:
                    return
                # Unanswered: cancel() and close() must not wait on this session again.
                connection.mark_lost(exc.what)
                raise
            for subscription in self._subscriptions:
                problem = subscription.silence_problem(grace_s=settings.timeout_s)
                if problem is not None:
                    connection.mark_lost(problem)
                    raise ProtocolError(problem, where=self.where)

    # -- internals -------------------------------------------------------------------------------

    def _require_settings(self) -> OpcUaSettings:
        if self._settings is None or self._setting_problems:
            problems = [
                f"{self.device.source or self.device.id}: {p}" for p in self._setting_problems
            ]
            raise ConfigError(problems or [f"{self.where}: invalid OPC UA settings"])
        return self._settings

    def _require_connection(self) -> UaConnection:
        if self._connection is None:
            raise DeviceUnreachableError(
                "not connected", where=self.where, hint="Call connect() first (the scheduler does)."
            )
        return self._connection

    def _signals(self, group: GroupSpec) -> list[OpcUaSignal]:
        return cast("list[OpcUaSignal]", self.device.profile.signals_of(group.name))

    async def _load_identity(
        self, settings: OpcUaSettings
    ) -> tuple[ClientIdentity | None, Pki | None]:
        if settings.security_policy is SecurityPolicy.NONE:
            return None, None
        pki = Pki(Path(settings.pki_dir) if settings.pki_dir else default_pki_dir())
        try:
            identity = await asyncio.to_thread(pki.ensure_client_identity)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                [f"{self.where}: pki_dir {pki.root}: cannot load or create the certificate: {exc}"]
            ) from exc
        if identity.is_new:
            self.log.info(
                "created the gateway's OPC UA certificate %s (%s); servers must trust it",
                identity.cert_path,
                identity.info,
            )
        return identity, pki

    async def _load_password(self, settings: OpcUaSettings) -> str | None:
        if not settings.username:
            return None
        try:
            password = await asyncio.to_thread(
                read_password, self.device.id, settings.password_file
            )
        except OSError as exc:
            raise ConfigError(
                [f"{self.where}: password_file {settings.password_file}: {exc.strerror or exc}"]
            ) from exc
        if password is None:
            raise ConfigError(
                [
                    f"{self.where}: user {settings.username!r} has no password: set password_file "
                    f"or the environment variable {password_env_var(self.device.id)}"
                ]
            )
        return password

    async def _resolve(self, connection: UaConnection) -> dict[str, Resolution]:
        """Where each signal is on this server right now (browse paths, namespace URIs and a
        companion-spec machine's node change when a server is reconfigured, so this runs at
        every connect)."""
        profile = cast("OpcUaProfile", self.device.profile)
        settings = self._require_settings()
        indexes: dict[str, int] = {}
        missing: dict[str, str] = {}
        if profile.namespaces or profile.machine is not None:
            indexes, missing = aliases_of(profile.namespaces, await connection.namespaces())
        start: NodeAddress | None = None
        machine_problem: str | None = None
        if profile.machine is not None:
            try:
                machine = await locate_machine(
                    connection, profile.machine, indexes, missing, settings.select_machine
                )
            except MachineNotFoundError as exc:
                machine_problem = f"machine not found: {exc}"
                self.log.warning("%s: %s", self.where, machine_problem)
            else:
                start = machine.node
                indexes[MACHINE_ALIAS] = machine.namespace
                self.log.info("%s: machine %s found at %s", self.where, machine.name, machine.node)
        resolved: dict[str, Resolution] = {}
        nodes: dict[str, NodeAddress] = {}
        paths: dict[str, tuple[tuple[BrowseStep, ...], tuple[BrowseStep, ...]]] = {}
        for signal in profile.signals:
            try:
                address = _address_of(signal)
                if isinstance(address, NodeAddress):
                    nodes[signal.name] = address
                elif machine_problem is not None:
                    resolved[signal.name] = Resolution(None, machine_problem)
                else:
                    paths[signal.name] = (bind(signal.browse_path or "", indexes, missing), address)
            except (ValueError, MachineNotFoundError) as exc:
                resolved[signal.name] = Resolution(None, str(exc))
        if nodes:
            for name, resolution in zip(
                nodes, await connection.resolve(list(nodes.values())), strict=True
            ):
                resolved[name] = resolution
        if paths:
            bound = [steps for steps, _ in paths.values()]
            answers = await connection.resolve(bound, start=start)
            failed = {}
            for name, resolution in zip(paths, answers, strict=True):
                resolved[name] = resolution
                if resolution.node is None:
                    failed[name] = paths[name]
            if failed:
                resolved.update(await explain_failed_paths(connection, failed, start))
        missing_signals = [
            f"{n}: {r.problem}"
            for n, r in resolved.items()
            if r.node is None and r.problem != machine_problem  # that one is logged above
        ]
        if missing_signals:
            self.log.warning(
                "%s: %d signal(s) have no node on this server: %s",
                self.where,
                len(missing_signals),
                "; ".join(missing_signals[:5]),
            )
        return resolved


def _address_of(signal: OpcUaSignal) -> NodeAddress | tuple[BrowseStep, ...]:
    if signal.node_id is not None:
        return parse_node_id(signal.node_id)
    return parse_browse_path(signal.browse_path or "")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- check() parts -------------------------------------------------------------------------------


def _endpoint_problems(endpoint: str) -> list[Problem]:
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        return [Problem("device.endpoint", f"{endpoint!r} is not a valid URL ({exc})")]
    if parts.scheme != "opc.tcp":
        return [
            Problem(
                "device.endpoint",
                f"{endpoint!r} must start with opc.tcp:// (e.g. opc.tcp://10.2.0.7:4840)",
            )
        ]
    if not parts.hostname:
        return [Problem("device.endpoint", f"{endpoint!r} has no host (opc.tcp://HOST:4840)")]
    if port is None:
        return [
            Problem(
                "device.endpoint",
                f"{endpoint!r} has no port; OPC UA servers usually listen on 4840",
            )
        ]
    if parts.username or parts.password:
        return [
            Problem(
                "device.endpoint",
                f"{parts.hostname}: do not put credentials in the URL; "
                "use username and password_file",
            )
        ]
    return []


def _where_setting(device: DeviceConfig, field: str) -> str:
    """Where a setting was written: the site file's override, or the profile's field."""
    return f"device.settings.{field}" if field in device.settings else f"opcua.{field}"


def _settings_problems(device: DeviceConfig, settings: OpcUaSettings) -> list[Problem]:
    problems: list[Problem] = []
    is_secure_policy = settings.security_policy is not SecurityPolicy.NONE
    is_secure_mode = settings.security_mode is not SecurityMode.NONE
    if is_secure_policy != is_secure_mode:
        primary, other = (
            ("security_mode", "security_policy")
            if is_secure_policy
            else ("security_policy", "security_mode")
        )
        field = other if other in device.settings and primary not in device.settings else primary
        where = _where_setting(device, field)
        if is_secure_policy:
            message = (
                f"security_policy {settings.security_policy} needs security_mode Sign or "
                "SignAndEncrypt, not None"
            )
        else:
            message = (
                f"security_mode {settings.security_mode} needs a security_policy "
                "(Basic256Sha256), not None"
            )
        problems.append(Problem(where, message))
    if settings.username:
        if settings.password_file is None and password_env_var(device.id) not in os.environ:
            where = _where_setting(device, "username")
            problems.append(
                Problem(
                    where,
                    f"user {settings.username!r} has no password source: set password_file, "
                    f"or the environment variable {password_env_var(device.id)}",
                )
            )
        if not is_secure_mode:
            where = _where_setting(device, "username")
            problems.append(
                Problem(
                    where,
                    "a user name without security: the password is protected only if "
                    "the server encrypts user tokens; prefer security_mode SignAndEncrypt",
                    severity="warning",
                )
            )
    if settings.password_file is not None:
        where = _where_setting(device, "password_file")
        if not settings.username:
            problems.append(Problem(where, "password_file is set but username is not"))
        elif not Path(settings.password_file).expanduser().is_file():
            problems.append(Problem(where, f"{settings.password_file} is not a file"))
    if settings.keepalive_s >= settings.session_timeout_s:
        where = _where_setting(device, "keepalive_s")
        problems.append(
            Problem(
                where,
                f"keepalive_s ({settings.keepalive_s:g}) must be shorter than "
                f"session_timeout_s ({settings.session_timeout_s:g}), or idle sessions expire",
            )
        )
    return problems


def _signal_problems(profile: OpcUaProfile) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, signal in enumerate(profile.signals):
        field = "node_id" if signal.node_id is not None else "browse_path"
        where = f"signals[{index}].{field}"
        try:
            address = _address_of(signal)
        except ValueError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        key = str(address) if isinstance(address, NodeAddress) else "/".join(map(str, address))
        if key in seen:
            problems.append(
                Problem(
                    where,
                    f"{key} is also signals[{seen[key]}]; each signal reads a different node",
                    severity="warning",
                )
            )
        seen.setdefault(key, index)
        problems += _deadband_problems(signal, index)
        interval = profile.group(signal.group).interval_ms
        if signal.sampling_interval_ms is not None and signal.sampling_interval_ms > interval:
            problems.append(
                Problem(
                    f"signals[{index}].sampling_interval_ms",
                    f"{signal.sampling_interval_ms} ms samples less often than group "
                    f"{signal.group!r} publishes ({interval} ms); the server repeats old values",
                    severity="warning",
                )
            )
    return problems


def _alias_problems(
    where: str, text: str, profile: OpcUaProfile, *, relative: bool
) -> list[Problem]:
    """A browse path's aliases must be declared (``machine`` only where a machine is found)."""
    try:
        steps = parse_browse_path(text)
    except ValueError as exc:
        return [Problem(where, str(exc))]
    known = set(profile.namespaces) | ({MACHINE_ALIAS} if relative else set())
    return [
        Problem(
            where,
            f"namespace alias {s.alias!r} is not declared in `namespaces` "
            f"(declared: {', '.join(sorted(known)) or 'none'})",
        )
        for s in steps
        if s.alias is not None and s.alias not in known
    ]


def _machine_problems(
    device: DeviceConfig, profile: OpcUaProfile, settings: OpcUaSettings | None
) -> list[Problem]:
    problems: list[Problem] = []
    relative = profile.machine is not None
    for index, signal in enumerate(profile.signals):
        if signal.browse_path is not None:
            where = f"signals[{index}].browse_path"
            problems += [
                p
                for p in _alias_problems(where, signal.browse_path, profile, relative=relative)
                if "is not <namespace>" not in p.message  # parse errors come from _signal_problems
            ]
    locator = profile.machine
    if locator is None:
        if settings is not None and settings.select_machine:
            problems.append(
                Problem(
                    _where_setting(device, "select_machine"),
                    "select_machine needs a profile with `machine` (a companion-spec machine)",
                )
            )
        return problems
    problems += _alias_problems("machine.folder", locator.folder, profile, relative=False)
    try:
        type_steps = parse_browse_path(locator.type)
    except ValueError as exc:
        problems.append(Problem("machine.type", str(exc)))
    else:
        if len(type_steps) != 1:
            problems.append(
                Problem(
                    "machine.type",
                    f"{locator.type!r}: give one BrowseName, e.g. mt:MachineToolType",
                )
            )
        problems += _alias_problems("machine.type", locator.type, profile, relative=False)
    for key, path in locator.identification.items():
        if key == NAME_KEY:
            problems.append(
                Problem(f"machine.identification.{key}", "'name' is reserved for the browse name")
            )
        problems += _alias_problems(f"machine.identification.{key}", path, profile, relative=True)
    if settings is not None:
        known = [NAME_KEY, *locator.identification]
        for key in settings.select_machine:
            if key not in known:
                problems.append(
                    Problem(
                        _where_setting(device, "select_machine"),
                        f"select_machine key {key!r} is not one of {', '.join(known)} "
                        "(the profile's machine.identification)",
                    )
                )
    return problems


def _deadband_problems(signal: OpcUaSignal, index: int) -> Sequence[Problem]:
    if signal.data_change_deadband is None:
        return []
    where = f"signals[{index}].data_change_deadband"
    kind = signal.effective_kind
    if kind is SignalKind.TEXT:
        return [
            Problem(where, "a deadband needs a number; this signal is text (the server refuses it)")
        ]
    if kind in (SignalKind.STATE, SignalKind.ALARM, SignalKind.COUNTER):
        return [
            Problem(
                where,
                f"a deadband on a {kind} signal hides changes the gateway must see; remove it",
                severity="warning" if kind is SignalKind.COUNTER else "error",
            )
        ]
    return []
