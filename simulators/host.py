"""Runs a scenario in-process: machines, their OPC UA and Modbus servers, the tick loop and the truth.

Example (a test)::

    async with SimulatorHost(load_scenario("demo.yaml").with_free_ports()) as host:
        endpoint = host.endpoint("ent-001-lathe-01")       # opc.tcp://127.0.0.1:PORT
        host.force_state("ent-001-lathe-01", MachineState.FAULT)
        await host.wait_ticks(2)
        host.truth.value_at("ent-001-lathe-01", "machine_state", now_ms)   # "fault"

Every tick (``tick_ms``, default 100 ms) the host advances each machine's virtual clock by whole
ticks of wall-clock time that passed, then writes only the values that changed into the servers
and the ground truth, all stamped with the same wall-clock time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from simulators.addressmap import Field, ModbusMap, OpcUaMap, Register, Variable
from simulators.errors import ServeError
from simulators.machines import KINDS, EnergyMeter, Machine, MachineKind
from simulators.modbus_server import ModbusServer, ModbusUnit, Unreachable
from simulators.opcua_server import NAMESPACE_URI, OpcUaServer
from simulators.scenario import InstanceSpec, Scenario
from simulators.truth import GroundTruth
from wire import MachineState

log = logging.getLogger(__name__)

_MAX_CATCH_UP_TICKS = 50
"""After a stall longer than this many ticks, the virtual clock skips ahead instead of racing."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a simulated device is served.

    Attributes:
        device_id: The device id.
        kind: Its machine kind.
        protocol: ``opcua`` or ``modbus``.
        host: Address the server listens on.
        port: TCP port.
        unit_id: Modbus unit id (None for OPC UA).
        enterprise: Enterprise tag from the scenario.
        server: Name of the server (devices with the same name share it).
        namespace_index: OPC UA index of ``NAMESPACE_URI`` on the server (None for Modbus).
        companion: Name of the companion spec it is served as (``umati``), or None.
        serial_number: Its serial number in the spec's identification (companion specs only).
    """

    device_id: str
    kind: str
    protocol: str
    host: str
    port: int
    unit_id: int | None
    enterprise: str | None
    server: str
    namespace_index: int | None = None
    companion: str | None = None
    serial_number: str | None = None

    @property
    def url(self) -> str:
        """``opc.tcp://host:port`` or ``modbus+tcp://host:port`` (the unit id is separate)."""
        scheme = "opc.tcp" if self.protocol == "opcua" else "modbus+tcp"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def namespace_uri(self) -> str | None:
        return NAMESPACE_URI if self.protocol == "opcua" else None

    def node_id(self, path: str) -> str:
        """The NodeId (``ns=<index>;s=...``) of a variable path from the kind's manual."""
        return f"ns={self.namespace_index};s={self.device_id}." + path.replace("/", ".")

    def expanded_node_id(self, path: str) -> str:
        """The same NodeId with the namespace given by URI (``nsu=...;s=...``)."""
        return f"nsu={NAMESPACE_URI};s={self.device_id}." + path.replace("/", ".")

    def describe(self) -> str:
        where = self.url if self.unit_id is None else f"{self.url} unit {self.unit_id}"
        if self.companion is not None:
            where += f" ({self.companion}, serial number {self.serial_number})"
        return f"{self.enterprise or '-':10} {self.device_id:28} {self.kind:20} {where}"


class SimulatedDevice:
    """One machine as served: its model, its map, its server and its share of the truth."""

    def __init__(
        self, spec: InstanceSpec, kind: MachineKind, machine: Machine, server: str
    ) -> None:
        self.spec = spec
        self.kind = kind
        self.machine = machine
        self.server = server
        self.fields_by_key: dict[str, list[Field]] = {}
        self.companion = kind.companion if spec.companion_spec else None
        self.address_map = self.companion.address_map if self.companion else kind.address_map
        for item in self.address_map.fields():
            if item.source is not None:
                self.fields_by_key.setdefault(item.source, []).append(item)

    @property
    def device_id(self) -> str:
        return self.spec.id

    def served_changes(self, keys: Iterable[str]) -> list[tuple[Field, bool | int | float | str]]:
        """Each map field fed by a changed model value, with its new raw value."""
        values = self.machine.values
        return [
            (item, item.to_raw(values[key]))
            for key in keys
            for item in self.fields_by_key.get(key, ())
        ]


class SimulatorHost:
    """Runs a scenario's machines and servers until stopped.

    Args:
        scenario: What to run.
        tick_ms: Overrides the scenario's tick.
        time_scale: Overrides the scenario's virtual seconds per wall-clock second.
        seed: Overrides the scenario's base seed.
        truth_file: Also append the ground truth to this JSONL file.
        truth_max_points: Points kept in memory per device and signal.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        tick_ms: int | None = None,
        time_scale: float | None = None,
        seed: int | None = None,
        truth_file: Path | None = None,
        truth_max_points: int | None = 100_000,
    ) -> None:
        self.scenario = scenario if seed is None else scenario.with_seed(seed)
        self.tick_ms = tick_ms or self.scenario.tick_ms
        self.time_scale = time_scale or self.scenario.time_scale
        self.truth = GroundTruth(max_points=truth_max_points, path=truth_file)
        self.devices: dict[str, SimulatedDevice] = {}
        self.tick_count = 0
        self._modbus: dict[str, ModbusServer] = {}
        self._opcua: dict[str, OpcUaServer] = {}
        self._units: dict[str, ModbusUnit] = {}
        self._task: asyncio.Task[None] | None = None
        self._tick_event = asyncio.Event()
        self._build()

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every server, publish every value once, then tick in the background."""
        for server in self._servers():
            try:
                await server.start()
            except (OSError, RuntimeError) as exc:
                await self.stop()
                devices = ", ".join(d.device_id for d in self._devices_on(server.name))
                raise ServeError(
                    f"{server.name} (serving {devices}): cannot listen on "
                    f"{server.host}:{server.port} ({exc}); "
                    "free the port, change it in the scenario, or run with --free-ports"
                ) from exc
        now_ms = _now_ms()
        for device in self._stepping_order():
            await self._publish(
                device, set(device.machine.take_changes()) | set(device.fields_by_key), now_ms
            )
        self.truth.flush()
        self._task = asyncio.create_task(self._run(), name="simulator-ticks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for server in self._servers():
            await server.stop()
        self.truth.close()

    # ----------------------------------------------------------------- inspection

    def endpoint(self, device_id: str) -> Endpoint:
        device = self._device(device_id)
        spec = device.spec
        namespace_index = None
        if device.kind.protocol == "opcua":
            server: OpcUaServer | ModbusServer = self._opcua[device.server]
            unit_id = None
            namespace_index = self._opcua[device.server].namespace_index
        else:
            server = self._modbus[device.server]
            unit_id = spec.unit_id or 1
        return Endpoint(
            device_id=spec.id,
            kind=spec.kind,
            protocol=device.kind.protocol,
            host=server.host,
            port=server.port,
            unit_id=unit_id,
            enterprise=spec.enterprise,
            server=device.server,
            namespace_index=namespace_index,
            companion=device.companion.name if device.companion else None,
            serial_number=spec.effective_serial_number if device.companion else None,
        )

    def endpoints(self) -> list[Endpoint]:
        return [self.endpoint(device_id) for device_id in self.devices]

    def machine(self, device_id: str) -> Machine:
        return self._device(device_id).machine

    async def wait_ticks(self, ticks: int = 1, timeout_s: float = 10.0) -> None:
        """Wait until the tick loop has published ``ticks`` more times."""
        target = self.tick_count + ticks
        async with asyncio.timeout(timeout_s):
            while self.tick_count < target:
                self._tick_event.clear()
                await self._tick_event.wait()

    # ----------------------------------------------------------------- fault controls

    async def stop_server(self, device_id: str) -> None:
        """Stop the server of ``device_id`` (and so of every device sharing it): port closed."""
        name = self._device(device_id).server
        server = self._opcua.get(name) or self._modbus[name]
        await server.stop()
        now = _now_ms()
        for device in self._devices_on(name):
            self.truth.begin_outage(device.device_id, now, f"server {name} stopped")

    async def start_server(self, device_id: str) -> None:
        """Start the server of ``device_id`` again, on the same port."""
        name = self._device(device_id).server
        server = self._opcua.get(name) or self._modbus[name]
        await server.start()
        now = _now_ms()
        for device in self._devices_on(name):
            if device.device_id not in self._unreachable_ids():
                self.truth.end_outage(device.device_id, now)

    async def restart_server(self, device_id: str) -> None:
        await self.stop_server(device_id)
        await self.start_server(device_id)

    async def serve_status(self, device_id: str, path: str, status_name: str) -> None:
        """Make the OPC UA variable ``path`` of ``device_id`` (``Identification/Model``) serve the
        status ``status_name`` without a value until the simulation next changes it."""
        device = self._device(device_id)
        server = self._opcua.get(device.server)
        if server is None:
            raise ValueError(f"{device_id} is not an OPC UA device; use set_unreachable")
        variable = next((v for v in server.machines[device_id].variables if v.path == path), None)
        if variable is None:
            raise ValueError(f"{device_id} has no OPC UA variable {path!r}")
        await server.write_status(device_id, variable, status_name, _now_ms())

    def set_unreachable(
        self,
        device_id: str,
        is_unreachable: bool = True,
        mode: Unreachable | str = Unreachable.TIMEOUT,
    ) -> None:
        """Make one Modbus unit stop answering (``timeout``) or answer exception 0x0B."""
        unit = self._units.get(device_id)
        if unit is None:
            raise ValueError(f"{device_id} is not a Modbus device; stop its server instead")
        unit.unreachable = Unreachable(mode) if is_unreachable else None
        if is_unreachable:
            self.truth.begin_outage(device_id, _now_ms(), f"unit unreachable ({unit.unreachable})")
        else:
            self.truth.end_outage(device_id, _now_ms())

    def force_state(
        self, device_id: str, state: MachineState | str, *, alarm_code: int | None = None
    ) -> None:
        """Hold a machine in ``state`` (e.g. fault, with an alarm) until ``release_state``."""
        self.machine(device_id).force_state(MachineState(state), alarm_code=alarm_code)

    def release_state(self, device_id: str) -> None:
        self.machine(device_id).release_state()

    # ----------------------------------------------------------------- internals

    def _build(self) -> None:
        host = self.scenario.host
        by_id = {}
        for group in self.scenario.server_groups():
            if group.protocol == "opcua":
                self._opcua[group.name] = OpcUaServer(host, group.port, group.name)
            else:
                self._modbus[group.name] = ModbusServer(host, group.port, group.name)
            for spec in group.instances:
                device = self._create_device(spec, group.name)
                by_id[spec.id] = device
        # Keep the scenario's order for listings.
        self.devices = {spec.id: by_id[spec.id] for spec in self.scenario.instances}
        for device in self.devices.values():
            if isinstance(device.machine, EnergyMeter) and device.spec.meters:
                device.machine.attach([self.devices[i].machine for i in device.spec.meters])

    def _create_device(self, spec: InstanceSpec, server_name: str) -> SimulatedDevice:
        kind = KINDS[spec.kind]
        scenario = self.scenario
        machine = kind.model(
            spec.id,
            scenario.instance_seed(spec),
            dwell_scale=spec.dwell_scale or scenario.dwell_scale,
            gauge_period_s=spec.gauge_period_s or scenario.gauge_period_s,
            initial_counts=spec.counters,
            start_state=spec.start_state,
        )
        device = SimulatedDevice(spec, kind, machine, server_name)
        if isinstance(device.address_map, OpcUaMap):
            self._opcua[server_name].add_machine(
                spec.id,
                device.address_map,
                companion=device.companion,
                serial_number=spec.effective_serial_number,
            )
        else:
            assert isinstance(kind.address_map, ModbusMap)
            unit = ModbusUnit(spec.unit_id or 1, spec.id, kind.address_map)
            self._modbus[server_name].add_unit(unit)
            self._units[spec.id] = unit
        return device

    def stepping_order(self) -> list[SimulatedDevice]:
        return self._stepping_order()

    def _stepping_order(self) -> list[SimulatedDevice]:
        """Meters last, so they measure the power their machines drew in the same tick."""
        devices = list(self.devices.values())
        return [d for d in devices if not isinstance(d.machine, EnergyMeter)] + [
            d for d in devices if isinstance(d.machine, EnergyMeter)
        ]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick_s = self.tick_ms / 1000.0
        virtual_tick_s = tick_s * self.time_scale
        order = self._stepping_order()
        started = loop.time()
        stepped = 0
        failures = 0
        while True:
            due = int((loop.time() - started) / tick_s)
            if due - stepped > _MAX_CATCH_UP_TICKS:
                log.warning("simulator fell behind; skipping ticks", extra={"ticks": due - stepped})
                stepped = due - 1
            steps = due - stepped
            stepped = due
            if steps > 0:
                try:
                    await self._tick(order, steps, virtual_tick_s)
                except Exception:  # one broken device must not stop the others' ticks
                    failures += 1
                    if failures in (1, 10, 100) or failures % 1000 == 0:
                        log.exception("simulator tick failed", extra={"failures": failures})
                self.tick_count += 1
                self._tick_event.set()
            await asyncio.sleep(max(0.0, started + (stepped + 1) * tick_s - loop.time()))

    async def _tick(self, order: list[SimulatedDevice], steps: int, virtual_tick_s: float) -> None:
        now_ms = _now_ms()
        for device in order:
            machine = device.machine
            for _ in range(steps):
                machine.step(virtual_tick_s)
            changed = machine.take_changes()
            if changed:
                await self._publish(device, changed, now_ms)
        self.truth.flush()

    async def _publish(self, device: SimulatedDevice, keys: Iterable[str], now_ms: int) -> None:
        device_id = device.device_id
        values = device.machine.values
        unit = self._units.get(device_id)
        opcua = None if unit is not None else self._opcua[device.server]
        for item, raw in device.served_changes(keys):
            if unit is not None:
                assert isinstance(item, Register)
                unit.write(item, raw)
            else:
                assert isinstance(item, Variable) and opcua is not None
                await opcua.write(device_id, item, raw, now_ms)
            if item.signal is not None:
                unwrapped = values[item.source] if item.wraps else None  # type: ignore[index]
                self.truth.record(device_id, item.signal, now_ms, item.served(raw), unwrapped)  # type: ignore[arg-type]

    def _servers(self) -> list[OpcUaServer | ModbusServer]:
        return [*self._opcua.values(), *self._modbus.values()]

    def _device(self, device_id: str) -> SimulatedDevice:
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(
                f"no simulated device {device_id!r}; known: {sorted(self.devices)}"
            ) from None

    def _devices_on(self, server: str) -> list[SimulatedDevice]:
        return [d for d in self.devices.values() if d.server == server]

    def _unreachable_ids(self) -> set[str]:
        return {device_id for device_id, unit in self._units.items() if unit.unreachable}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
