"""The Modbus driver: poll a device's signals in planned register blocks and decode them.

Static ``check`` finds every configuration problem without a network; ``plan`` shows the requests
a cycle costs; ``read`` runs one cycle of one group. A Modbus exception reply spoils only the
signals of that request, as does a short or malformed reply; a dead connection or an unanswered unit raises a ``DriverError`` for the
scheduler, which owns reconnects and backoff. Devices whose ``bus_key`` is equal share one
connection (see transport.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from pydantic import ValidationError

from gateway.drivers.base import (
    Capability,
    DriverBase,
    DriverMetrics,
    Problem,
    RawReading,
    RawValue,
    ReadResult,
)
from gateway.drivers.modbus.codec import compile_decoder, registers_to_bytes
from gateway.drivers.modbus.endpoint import (
    ModbusEndpoint,
    effective_settings,
    parse_endpoint,
    settings_errors,
)
from gateway.drivers.modbus.models import (
    DataType,
    ModbusProfile,
    ModbusSettings,
    ModbusSignal,
    Table,
    WordOrder,
)
from gateway.drivers.modbus.planner import (
    BIT_TABLES,
    PlannedRequest,
    plan_reads,
    request_limit,
)
from gateway.drivers.modbus.transport import (
    BlockReadError,
    BusTransport,
    RequestOptions,
    ShortReplyError,
    transport_pool,
    window_of,
)
from gateway.errors import ConfigError, DeviceUnreachableError, DriverError
from gateway.profiles.models import DeviceConfig, GroupSpec
from wire.payloads import Quality
from wire.signals import SignalKind

__all__ = ["ModbusDriver", "check_device", "device_bus_key", "signal_word_order"]

DEFAULT_TCP_UNIT_ID: Final = 1
"""Unit id sent to a Modbus TCP device whose site entry names none (most ignore it)."""
_ONE_BASED: Final[dict[Table, int]] = {
    Table.HOLDING: 40001,
    Table.INPUT: 30001,
    Table.DISCRETE_INPUT: 10001,
}
_TABLE_WORDS: Final[dict[Table, str]] = {
    Table.HOLDING: "holding-register",
    Table.INPUT: "input-register",
    Table.DISCRETE_INPUT: "discrete-input",
}


def device_bus_key(device: DeviceConfig) -> str:
    """The connection ``device`` uses; devices with equal keys share it (and its request lock).

    ``tcp://10.2.0.7:502``, ``rtu+tcp://10.2.0.50:4001``, ``rtu:///dev/ttyUSB0``; an endpoint that
    does not parse is its own key.
    """
    try:
        return parse_endpoint(device.endpoint).bus_key
    except ValueError:
        return device.endpoint


class ModbusDriver(DriverBase):
    """Polls one Modbus device (one unit id at one endpoint)."""

    name: ClassVar[str] = "modbus"
    profile_model: ClassVar[type[ModbusProfile]] = ModbusProfile
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.POLL, Capability.PLAN})

    def __init__(
        self, device: DeviceConfig, logger: logging.LoggerAdapter[Any], metrics: DriverMetrics
    ) -> None:
        """Prepare plans and decoders; no I/O.

        Raises:
            ConfigError: the device fails ``check`` (start-up should have stopped it already).
        """
        problems = [p for p in check_device(device) if p.severity == "error"]
        if problems:
            raise ConfigError([f"{device.describe()}: {p}" for p in problems])
        assert isinstance(device.profile, ModbusProfile)  # check_device proved it
        self.device = device
        self.profile: ModbusProfile = device.profile
        self.log = logger
        self.metrics = metrics
        self.endpoint: ModbusEndpoint = parse_endpoint(device.endpoint)
        self.settings: ModbusSettings = effective_settings(
            self.profile, device.settings, self.endpoint
        )
        self.unit_id = device.unit_id if device.unit_id is not None else DEFAULT_TCP_UNIT_ID
        self.options = RequestOptions(
            unit_id=self.unit_id,
            timeout_s=self.settings.timeout_s,
            retries=self.settings.retries,
            pause_s=self.settings.request_pause_ms / 1000.0,
            where=device.describe(),
        )
        self._transport: BusTransport | None = None
        self._has_connected = False
        self._compiled: dict[str, list[_CompiledRequest]] = {}
        self._failing: dict[tuple[Table, int, int], str] = {}

    serializes_requests: ClassVar[bool] = True
    """The transport already runs one request at a time per bus (releasing the bus between
    requests and retries), so a scheduler needs no bus lock around whole cycles, which would let
    a dead unit hold its neighbours for a full cycle of timeouts."""

    @staticmethod
    def bus_key(device: DeviceConfig) -> str:
        """The connection ``device`` uses (``tcp://host:port``, ``rtu:///dev/ttyX``); devices with
        equal keys share it. Works on the class, for a scheduler that has no driver yet."""
        return device_bus_key(device)

    @staticmethod
    def poll_phase_key(device: DeviceConfig) -> str | None:
        """The connection, when it takes several requests in flight: its units then poll at
        the same moment, so their requests share one burst (see ``scheduler.phase_key``)."""
        try:
            endpoint = parse_endpoint(device.endpoint)
            assert isinstance(device.profile, ModbusProfile)
            settings = effective_settings(device.profile, device.settings, endpoint)
        except (ValueError, AssertionError):  # ValidationError is a ValueError; check() reports
            return None
        return endpoint.bus_key if window_of(endpoint, settings) > 1 else None

    @staticmethod
    def check(device: DeviceConfig) -> list[Problem]:
        """Every problem with the device's endpoint, unit id, settings and register map."""
        return check_device(device)

    def plan(self, group: GroupSpec) -> list[PlannedRequest]:
        """The requests one cycle of ``group`` costs (pure)."""
        return [c.request for c in self._compile(group.name)]

    async def connect(self) -> None:
        """Join (or open) the endpoint's shared connection; idempotent.

        Raises:
            DeviceUnreachableError: refused, no route, no serial port, or no connection in time.
        """
        pool = transport_pool()
        if self._transport is None:
            self._transport = pool.acquire(self.endpoint, self.settings)
        elif self._transport.is_connected:
            return
        try:
            await self._transport.open(self.settings.timeout_s, self.options.where)
        except DriverError:
            pool.release(self._transport)
            self._transport = None
            raise
        if self._has_connected:
            self.metrics.reconnects += 1
        self._has_connected = True
        # DEBUG: the scheduler logs "device connected" once, after the first good read.
        self.log.debug("Connected to %s (unit %d)", self.endpoint.bus_key, self.unit_id)

    async def close(self) -> None:
        """Leave the shared connection (the last device to leave closes it); idempotent."""
        if self._transport is not None:
            transport_pool().release(self._transport)
            self._transport = None

    async def read(self, group: GroupSpec) -> ReadResult:
        """Read every signal of ``group`` once, one request per planned block.

        Raises:
            DeviceUnreachableError: not connected, or the connection dropped.
            DeviceTimeoutError: a request went unanswered after every retry.
            ProtocolError: a reply did not match its request.
        """
        transport = self._transport
        if transport is None:
            raise DeviceUnreachableError(
                "not connected", where=self.options.where, hint="Call connect() before read()."
            )
        compiled = self._compile(group.name)
        if self.log.isEnabledFor(logging.DEBUG):  # describe() costs: only when logged
            for block in compiled:
                self.log.debug("FC%d %s", block.request.function_code, block.request.describe())
        if transport.window > 1 and len(compiled) > 1:
            return ReadResult(await self._read_together(transport, compiled), len(compiled))
        readings: list[RawReading] = []
        for block in compiled:
            readings += await self._read_block(transport, block)
        return ReadResult(readings, requests=len(compiled))

    async def _read_together(
        self, transport: BusTransport, compiled: list[_CompiledRequest]
    ) -> list[RawReading]:
        """Every block in flight at once (the connection queues requests)."""
        self.metrics.requests += len(compiled)
        try:
            outcomes = await transport.read_blocks(
                [(b.request.table, b.request.start, b.request.count) for b in compiled],
                self.options,
            )
        except DriverError:
            self.metrics.errors += 1
            raise
        readings: list[RawReading] = []
        ts_ms = time.time_ns() // 1_000_000
        for block, outcome in zip(compiled, outcomes, strict=True):
            if isinstance(outcome, BlockReadError):
                readings += self._bad_block(block, outcome)
            else:
                self._note_success(block.request)
                readings += block.decode(outcome, ts_ms)
        return readings

    async def _read_block(
        self, transport: BusTransport, block: _CompiledRequest
    ) -> list[RawReading]:
        """One request's readings; a Modbus exception or a short or malformed reply makes only
        its signals bad."""
        request = block.request
        self.metrics.requests += 1
        try:
            values = await transport.read(request.table, request.start, request.count, self.options)
        except BlockReadError as exc:
            return self._bad_block(block, exc)
        except DriverError:
            self.metrics.errors += 1
            raise
        self._note_success(request)
        return block.decode(values, time.time_ns() // 1_000_000)

    def _bad_block(self, block: _CompiledRequest, exc: BlockReadError) -> list[RawReading]:
        self.metrics.errors += 1
        self._note_failure(block.request, exc)
        ts_ms = time.time_ns() // 1_000_000
        return [RawReading(name, None, ts_ms, Quality.BAD, exc.reason) for name in block.names]

    def _compile(self, group: str) -> list[_CompiledRequest]:
        compiled = self._compiled.get(group)
        if compiled is None:
            signals = [s for s in self.profile.signals if s.group == group]
            requests = plan_reads(signals, self.settings)
            compiled = [_CompiledRequest.build(r, self.profile.word_order) for r in requests]
            self._compiled[group] = compiled
        return compiled

    def _note_failure(self, request: PlannedRequest, exc: BlockReadError) -> None:
        key = (request.table, request.start, request.count)
        if self._failing.get(key) != exc.reason:  # log changes, not every cycle
            self._failing[key] = exc.reason
            self.log.warning(
                "%s on %s; its signals are bad until it recovers. %s",
                exc.reason,
                request.describe(),
                block_hint(request, exc),
            )

    def _note_success(self, request: PlannedRequest) -> None:
        if not self._failing:
            return
        key = (request.table, request.start, request.count)
        if self._failing.pop(key, None) is not None:
            self.log.info("%s reads again", request.describe())


def block_hint(request: PlannedRequest, exc: BlockReadError) -> str:
    """What to change when one request fails on its own, knowing what the request covers.

    A request that reads through unused registers (``max_gap``) may be refused, or answered
    short, by a device that does not serve them: then the fix is to stop reading through them.
    """
    covered = {a for p in request.signals for a in range(p.offset, p.offset + _size(p.signal))}
    has_gap = len(covered) < request.count
    if has_gap and (isinstance(exc, ShortReplyError) or getattr(exc, "code", None) == 2):
        return (
            f"The request reads through {request.count - len(covered)} unused address(es) "
            "(max_gap) that this device may not serve: set max_gap: 0 in the device's settings, "
            "or list the unused range under modbus.unreadable."
        )
    return exc.hint


def _size(signal: ModbusSignal) -> int:
    return 1 if signal.table in BIT_TABLES else signal.register_count


def signal_word_order(signal: ModbusSignal, profile_order: WordOrder) -> WordOrder:
    """The byte order a signal is decoded with.

    A signal's own ``word_order`` applies whatever its size (an ``int16`` with ``BADC`` has its
    bytes swapped; a string with ``BADC`` or ``DCBA`` is read low byte first). The profile's
    ``word_order`` is the default for values of two or more registers only: it describes how the
    device lays out 32/64-bit numbers, and must not swap the bytes of plain registers or text.
    """
    if signal.word_order is not None:
        return signal.word_order
    if signal.type is DataType.STRING or signal.register_count < 2:
        return WordOrder.ABCD
    return profile_order


@dataclass(frozen=True, slots=True)
class _CompiledRequest:
    """A planned request with a ready decoder per signal."""

    request: PlannedRequest
    names: tuple[str, ...]
    decoders: tuple[Callable[[bytes], RawValue], ...]
    offsets: tuple[int, ...]

    @classmethod
    def build(cls, request: PlannedRequest, default_order: WordOrder) -> _CompiledRequest:
        names = tuple(p.signal.name for p in request.signals)
        offsets = tuple(p.offset for p in request.signals)
        if request.is_bits:
            return cls(request, names, (), offsets)
        decoders = tuple(
            compile_decoder(
                p.signal.type,
                p.offset,
                signal_word_order(p.signal, default_order),
                bit=p.signal.bit,
                length=p.signal.length,
            )
            for p in request.signals
        )
        return cls(request, names, decoders, offsets)

    def decode(self, values: Sequence[int] | Sequence[bool], ts_ms: int) -> list[RawReading]:
        if self.request.is_bits:
            return [
                RawReading(name, bool(values[offset]), ts_ms)
                for name, offset in zip(self.names, self.offsets, strict=True)
            ]
        data = registers_to_bytes(values)
        readings = []
        for name, decoder in zip(self.names, self.decoders, strict=True):
            value = decoder(data)
            if isinstance(value, float) and not math.isfinite(value):
                readings.append(
                    RawReading(
                        name, None, ts_ms, Quality.BAD, f"device sent {value} (not a number)"
                    )
                )
            else:
                readings.append(RawReading(name, value, ts_ms))
        return readings


# ---- static checks -------------------------------------------------------------------------


def check_device(device: DeviceConfig) -> list[Problem]:
    """Every problem with a Modbus device, each with a field path; no network.

    Paths into the profile look like ``signals[3].address``; paths into the site file's device
    entry start with ``device.`` (``device.endpoint``, ``device.unit_id``, ``device.settings.x``).
    """
    profile = device.profile
    if not isinstance(profile, ModbusProfile):
        return [Problem("protocol", f"profile {profile.id!r} is not a Modbus profile")]
    problems: list[Problem] = []
    endpoint: ModbusEndpoint | None = None
    try:
        endpoint = parse_endpoint(device.endpoint)
    except ValueError as exc:
        problems.append(Problem("device.endpoint", str(exc)))
    if endpoint is not None:
        problems += _unit_id_problems(endpoint, device.unit_id)
    settings, settings_problems = _settings_of(profile, device, endpoint)
    problems += settings_problems
    if endpoint is not None:
        problems += _window_problems(endpoint, settings, device)
    problems += _signal_problems(profile, settings)
    problems += _overlap_problems(profile.signals)
    problems += _group_problems(profile, settings)
    return problems


def _unit_id_problems(endpoint: ModbusEndpoint, unit_id: int | None) -> list[Problem]:
    if endpoint.is_serial_framing:
        if unit_id is None:
            return [
                Problem(
                    "device.unit_id",
                    f"an RTU device ({endpoint.scheme}://) needs a unit_id in 1..247",
                )
            ]
        if unit_id == 0:
            return [
                Problem(
                    "device.unit_id",
                    "unit id 0 is the broadcast address and never replies; use 1..247",
                )
            ]
        if unit_id > 247:
            return [
                Problem("device.unit_id", f"unit id {unit_id} is out of range; RTU uses 1..247")
            ]
    return []


def _window_problems(
    endpoint: ModbusEndpoint, settings: ModbusSettings, device: DeviceConfig
) -> list[Problem]:
    if settings.max_requests_in_flight == 1:
        return []
    where = (
        "device.settings.max_requests_in_flight"
        if "max_requests_in_flight" in device.settings
        else "modbus.max_requests_in_flight"
    )
    if endpoint.is_serial_framing:
        return [
            Problem(
                where,
                f"a serial line ({endpoint.scheme}://) carries one request at a time; "
                "max_requests_in_flight must be 1",
            )
        ]
    if settings.request_pause_ms > 0:
        return [
            Problem(
                where,
                f"request_pause_ms {settings.request_pause_ms} spaces requests one at a time, "
                "so only one is ever in flight",
                severity="warning",
            )
        ]
    return []


def _settings_of(
    profile: ModbusProfile, device: DeviceConfig, endpoint: ModbusEndpoint | None
) -> tuple[ModbusSettings, list[Problem]]:
    try:
        settings = effective_settings(profile, device.settings)
    except ValidationError as exc:
        problems = [
            Problem(f"device.settings.{name}", message) for name, message in settings_errors(exc)
        ]
        return profile.modbus, problems
    if endpoint is None or not endpoint.serial:
        return settings, []
    try:
        return effective_settings(profile, device.settings, endpoint), []
    except ValidationError as exc:
        problems = [
            Problem("device.endpoint", f"serial setting {name}: {message}")
            for name, message in settings_errors(exc)
        ]
        return settings, problems


def _signal_problems(profile: ModbusProfile, settings: ModbusSettings) -> list[Problem]:
    problems: list[Problem] = []
    for index, signal in enumerate(profile.signals):
        where = f"signals[{index}]"
        size = 1 if signal.table in BIT_TABLES else signal.register_count
        if signal.address + size > 65536:
            problems.append(
                Problem(
                    f"{where}.address",
                    f"{signal.table.value} {signal.address} + {size} registers runs past 65535",
                )
            )
        limit = request_limit(signal.table, settings)
        if size > limit:
            field = "length" if signal.type is DataType.STRING else "type"
            problems.append(
                Problem(
                    f"{where}.{field}",
                    f"{signal.type.value} takes {size} registers, more than "
                    f"max_registers_per_request {limit}; a value cannot be split across requests",
                )
            )
        problems += _one_based_hint(where, signal)
        problems += _type_problems(where, signal)
        for number, blocked in enumerate(settings.unreadable):
            if blocked.overlaps(signal.table, signal.address, signal.address + size):
                problems.append(
                    Problem(
                        f"{where}.address",
                        f"{signal.table.value} {signal.address}..{signal.address + size - 1} "
                        f"lies in modbus.unreadable[{number}] ({blocked.describe()}), which the "
                        "device refuses to read; correct the address or the range",
                    )
                )
    return problems


def _one_based_hint(where: str, signal: ModbusSignal) -> list[Problem]:
    first = _ONE_BASED.get(signal.table)
    if first is None or not first <= signal.address < first + 10000:
        return []
    return [
        Problem(
            f"{where}.address",
            f"{signal.address} looks 1-based; {_TABLE_WORDS[signal.table]} offsets start at 0 "
            f"(register {signal.address} is usually address {signal.address - first})",
            severity="warning",
        )
    ]


def _type_problems(where: str, signal: ModbusSignal) -> list[Problem]:
    problems: list[Problem] = []
    if signal.type in (DataType.BOOL, DataType.STRING):
        for field, value, neutral in (("scale", signal.scale, 1.0), ("offset", signal.offset, 0.0)):
            if value != neutral:
                problems.append(
                    Problem(
                        f"{where}.{field}",
                        f"{field} applies to numbers; a {signal.type.value} is reported as read",
                    )
                )
    texts = [key for key in signal.states or {} if isinstance(key, str)]
    if signal.effective_kind is SignalKind.STATE and signal.type is DataType.STRING and not texts:
        problems.append(
            Problem(
                f"{where}.states",
                "a string register holds a text such as AUTO_RUN: key `states` by the texts "
                "the device sends",
                severity="warning",
            )
        )
    elif signal.effective_kind is SignalKind.STATE and signal.type in (
        DataType.FLOAT32,
        DataType.FLOAT64,
    ):
        problems.append(
            Problem(
                f"{where}.type",
                f"state codes are integers; a {signal.type.value} state maps through `states` "
                "only when it holds whole numbers",
                severity="warning",
            )
        )
    return problems


def _overlap_problems(signals: Sequence[ModbusSignal]) -> list[Problem]:
    """Signals reading the same register twice (bits of one status word do not count)."""
    problems: list[Problem] = []
    by_table: dict[Table, list[tuple[int, ModbusSignal]]] = {}
    for index, signal in enumerate(signals):
        by_table.setdefault(signal.table, []).append((index, signal))
    for table, members in by_table.items():
        members.sort(key=lambda item: (item[1].address, item[1].end))
        for position, (index, signal) in enumerate(members):
            for other_index, other in members[:position]:
                if other.end <= signal.address or not _conflict(signal, other):
                    continue
                problems.append(
                    Problem(
                        f"signals[{index}].address",
                        f"{table.value} {signal.address}..{signal.end - 1} overlaps "
                        f"signals[{other_index}] ({other.name}) at "
                        f"{other.address}..{other.end - 1}",
                        severity="warning",
                    )
                )
    return problems


def _conflict(signal: ModbusSignal, other: ModbusSignal) -> bool:
    if signal.bit is None and other.bit is None:
        return True
    # A bit of a register beside the whole register, or another bit, is a normal status-word map.
    return signal.bit is not None and signal.bit == other.bit


def _group_problems(profile: ModbusProfile, settings: ModbusSettings) -> list[Problem]:
    problems: list[Problem] = []
    for index, group in enumerate(profile.groups):
        members = [s for s in profile.signals if s.group == group.name]
        if not members:
            problems.append(
                Problem(
                    f"groups[{index}].name",
                    f"group {group.name!r} has no signals and is never read",
                    severity="warning",
                )
            )
            continue
        requests = len(plan_reads(members, settings))
        floor_ms = requests * settings.request_pause_ms
        if floor_ms > group.interval_ms:
            problems.append(
                Problem(
                    f"groups[{index}].interval_ms",
                    f"a cycle costs {requests} requests with request_pause_ms "
                    f"{settings.request_pause_ms}: at least {floor_ms} ms, longer than "
                    f"interval_ms {group.interval_ms}",
                    severity="warning",
                )
            )
    return problems
