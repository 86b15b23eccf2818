"""Scenarios: which simulated machines to run, where to serve them, and with which seeds.

A scenario is a YAML file (see ``scenarios/demo.yaml`` and docs/simulators.md)::

    name: demo
    seed: 42                 # base seed; each instance derives its own from it and its id
    tick_ms: 100             # how often the servers' values are updated
    dwell_scale: 0.2         # shrink state dwell times (1.0 = realistic)
    time_scale: 1.0          # virtual seconds per wall-clock second (fast-forward in tests)
    servers:                 # optional: shared endpoints (one port, many machines)
      - {name: ent-001-modbus, protocol: modbus, port: 15021}
    instances:
      - {id: ent-001-hobber-01, kind: gear_hobber, enterprise: ent-001,
         server: ent-001-modbus, unit_id: 1}
      - {id: ent-001-lathe-01, kind: bearing_lathe, enterprise: ent-001, port: 0}

An instance without ``server`` gets an endpoint of its own on ``port`` (0 or absent: a free port);
instances giving the same non-zero ``port`` share it. ``load_scenario`` reports every problem at
once, each with the file, line and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from simulators.errors import ScenarioError
from simulators.machines import KINDS
from simulators.machines.base import derive_seed
from wire import MachineState

Protocol = Literal["opcua", "modbus"]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ServerSpec(BaseModel):
    """A shared endpoint that several instances name in their ``server`` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Id
    protocol: Protocol
    port: int | None = Field(default=None, ge=0, le=65535)


class InstanceSpec(BaseModel):
    """One simulated machine.

    Attributes:
        id: Device id (also the OPC UA object name).
        kind: Machine kind (``shulian sim run --kinds`` lists them).
        protocol: Optional; must match the kind's protocol when given.
        enterprise: Enterprise id tag, passed on to the endpoint listing.
        line: Production line tag.
        server: Name of a shared server from ``servers``.
        port: Own endpoint port when ``server`` is absent (0 or absent: a free port).
        unit_id: Modbus unit id, 1..247 (default 1).
        seed: Seed of this machine (default: derived from the scenario seed and the id).
        dwell_scale: Overrides the scenario's dwell scale.
        gauge_period_s: Overrides the scenario's analog refresh period.
        start_state: State at start instead of a random one.
        counters: Starting counter values, e.g. ``{stroke_count: 65530}``.
        meters: For an energy meter: ids of the machines it measures.
        companion_spec: Serve the kind's companion-specification address space (umati for
            machine tools, EUROMAP 77 for the moulding machine) instead of its manual's layout.
        serial_number: Serial number in the companion spec's identification (default
            ``SN-<id>``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    kind: str
    protocol: Protocol | None = None
    enterprise: Id | None = None
    line: Id | None = None
    server: Id | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    unit_id: int | None = Field(default=None, ge=1, le=247)
    seed: int | None = None
    dwell_scale: float | None = Field(default=None, gt=0)
    gauge_period_s: float | None = Field(default=None, gt=0)
    start_state: MachineState | None = None
    counters: dict[str, int] = Field(default_factory=dict)
    meters: list[Id] = Field(default_factory=list)
    companion_spec: bool = False
    serial_number: str | None = None

    @property
    def kind_protocol(self) -> str:
        return KINDS[self.kind].protocol

    @property
    def effective_serial_number(self) -> str:
        return self.serial_number or f"SN-{self.id}"


class HistorySpec(BaseModel):
    """Past days the machine models are run through, in accelerated time, before serving live.

    Each step the simulator records what every machine's controller holds (the raw values of its
    address map) into a history log per device, which a gateway can backfill from
    (``shulian gateway backfill``). Plants work one shift a day (``shift_start_h`` local time,
    ``shift_hours`` long) and are switched off outside it; ``worked_share`` shortens the shift of
    one enterprise on given days (days ago: share of the shift worked), so a demo shows
    enterprises whose output fell against their own baseline.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(default=30, ge=1, le=60)
    step_s: float = Field(default=900.0, ge=10.0, le=3600.0)
    """Virtual seconds between two recorded snapshots (the backfill's sample period)."""
    dwell_scale: float = Field(default=1.0, gt=0)
    """Dwell times of the past days (the live demo shrinks them; history keeps a real day)."""
    timezone: str = "Asia/Shanghai"
    shift_start_h: float = Field(default=6.0, ge=0, lt=24)
    shift_hours: float = Field(default=16.0, gt=0, le=24)
    worked_share: dict[str, dict[int, float]] = Field(default_factory=dict)
    """Enterprise id -> {days ago (1 = yesterday): share of the shift worked, 0..1}."""


class Scenario(BaseModel):
    """A set of simulated machines and the endpoints that serve them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "scenario"
    seed: int = 1
    tick_ms: int = Field(default=100, ge=10, le=10_000)
    dwell_scale: float = Field(default=1.0, gt=0)
    gauge_period_s: float = Field(default=1.0, gt=0)
    time_scale: float = Field(default=1.0, gt=0, le=1000)
    """Virtual seconds per wall-clock second (tests fast-forward with e.g. 20)."""
    host: str = "127.0.0.1"
    servers: list[ServerSpec] = Field(default_factory=list)
    instances: list[InstanceSpec]
    history: HistorySpec | None = None
    """Past days to run through before serving live (``shulian sim run --history-dir``)."""

    def instance_seed(self, instance: InstanceSpec) -> int:
        return instance.seed if instance.seed is not None else derive_seed(self.seed, instance.id)

    def with_seed(self, seed: int) -> Scenario:
        return self.model_copy(update={"seed": seed})

    def with_free_ports(self) -> Scenario:
        """The same scenario with every port set to 0 (pick free ports), for tests."""
        servers = [s.model_copy(update={"port": 0}) for s in self.servers]
        own_ports: dict[int, str] = {}
        instances = []
        for inst in self.instances:
            if inst.server is None and inst.port:
                # Instances that shared an explicit port keep sharing: give them a named server.
                own_ports.setdefault(inst.port, f"port-{inst.port}")
                instances.append(
                    inst.model_copy(update={"server": own_ports[inst.port], "port": None})
                )
            else:
                instances.append(inst.model_copy(update={"port": None}))
        protocols = {
            f"port-{i.port}": i.kind_protocol for i in self.instances if i.server is None and i.port
        }
        servers += [
            ServerSpec(name=name, protocol=protocols[name], port=0)  # type: ignore[arg-type]
            for name in sorted(set(own_ports.values()))
        ]
        return self.model_copy(update={"servers": servers, "instances": instances})

    def server_groups(self) -> list[ServerGroup]:
        """Instances grouped by the endpoint that serves them."""
        groups: dict[str, ServerGroup] = {
            s.name: ServerGroup(s.name, s.protocol, s.port or 0) for s in self.servers
        }
        for inst in self.instances:
            if inst.server is not None:
                name = inst.server
            elif inst.port:
                name = f"{inst.kind_protocol}-port-{inst.port}"
                groups.setdefault(name, ServerGroup(name, inst.kind_protocol, inst.port))
            else:
                name = inst.id
                groups[name] = ServerGroup(name, inst.kind_protocol, 0)
            groups[name].instances.append(inst)
        return [g for g in groups.values() if g.instances]


@dataclass(slots=True)
class ServerGroup:
    """One endpoint and the instances it serves."""

    name: str
    protocol: str
    port: int
    instances: list[InstanceSpec] = field(default_factory=list)


# --------------------------------------------------------------------------------- validation


def check_scenario(scenario: Scenario) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field problems pydantic cannot see, each with the field path it concerns."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    servers = {s.name: s for s in scenario.servers}
    if len(servers) != len(scenario.servers):
        problems.append((("servers",), "server names must be unique"))
    seen: dict[str, int] = {}
    units: dict[str, set[int]] = {}
    ids = {inst.id: inst for inst in scenario.instances}
    for index, inst in enumerate(scenario.instances):
        where: tuple[str | int, ...] = ("instances", index)
        if inst.id in seen:
            problems.append(((*where, "id"), f"{inst.id!r} is also instance {seen[inst.id]}"))
        seen.setdefault(inst.id, index)
        if inst.kind not in KINDS:
            known = ", ".join(sorted(KINDS))
            problems.append(((*where, "kind"), f"unknown kind {inst.kind!r}; known: {known}"))
            continue
        protocol = inst.kind_protocol
        if inst.protocol is not None and inst.protocol != protocol:
            problems.append(((*where, "protocol"), f"{inst.kind} is served over {protocol}"))
        if inst.server is not None:
            server = servers.get(inst.server)
            if server is None:
                problems.append(((*where, "server"), f"no server named {inst.server!r}"))
            elif server.protocol != protocol:
                problems.append(
                    (
                        (*where, "server"),
                        f"{inst.server} is {server.protocol}, {inst.kind} {protocol}",
                    )
                )
            if inst.port is not None:
                problems.append(((*where, "port"), "give either server or port, not both"))
        if protocol == "opcua" and inst.unit_id is not None:
            problems.append(((*where, "unit_id"), "unit_id only applies to Modbus devices"))
        if protocol == "modbus":
            endpoint = inst.server or (f"port-{inst.port}" if inst.port else inst.id)
            unit = inst.unit_id or 1
            if unit in units.setdefault(endpoint, set()):
                problems.append(((*where, "unit_id"), f"unit {unit} is taken on {endpoint}"))
            units[endpoint].add(unit)
        model = KINDS[inst.kind].model
        unknown = set(inst.counters) - set(model.counters)
        if unknown:
            problems.append(
                (
                    (*where, "counters"),
                    f"{inst.kind} has no counters {sorted(unknown)}; "
                    f"it keeps {list(model.counters)}",
                )
            )
        if inst.companion_spec and KINDS[inst.kind].companion is None:
            with_spec = sorted(n for n, k in KINDS.items() if k.companion is not None)
            problems.append(
                (
                    (*where, "companion_spec"),
                    f"{inst.kind} has no companion-spec form; kinds with one: {', '.join(with_spec)}",
                )
            )
        if inst.serial_number is not None and not inst.companion_spec:
            problems.append(((*where, "serial_number"), "only a companion_spec machine has one"))
        if inst.meters and inst.kind != "energy_meter":
            problems.append(((*where, "meters"), "only an energy_meter can meter other machines"))
        for pos, target in enumerate(inst.meters):
            if target not in ids:
                problems.append(((*where, "meters", pos), f"no instance {target!r}"))
            elif ids[target].kind == "energy_meter":
                problems.append(((*where, "meters", pos), "a meter cannot meter another meter"))
    port_protocols: dict[int, set[str]] = {}
    for inst in scenario.instances:
        if inst.server is None and inst.port and inst.kind in KINDS:
            port_protocols.setdefault(inst.port, set()).add(inst.kind_protocol)
    for server in scenario.servers:
        if server.port:
            port_protocols.setdefault(server.port, set()).add(server.protocol)
    for port, protocols in port_protocols.items():
        if len(protocols) > 1:
            problems.append((("instances",), f"port {port} is used by both OPC UA and Modbus"))
    return problems


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ScenarioError: Every problem found, each as ``file:line: field.path: message``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror}") from exc
    try:
        document = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}:1: a scenario is a mapping with at least 'instances'")
    return parse_scenario(document, str(path))


def parse_scenario(document: Any, source: str = "<scenario>") -> Scenario:
    """Validate a scenario given as data (with line numbers when it came from ruamel.yaml)."""
    try:
        scenario = Scenario.model_validate(_plain(document))
    except ValidationError as exc:
        problems = [(tuple(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ScenarioError(_render(problems, document, source)) from None
    problems = check_scenario(scenario)
    if problems:
        raise ScenarioError(_render(problems, document, source))
    return scenario


def _render(problems: Sequence[tuple[tuple[Any, ...], str]], document: Any, source: str) -> str:
    lines = [f"{source}: {len(problems)} problem(s) in the scenario:"]
    for loc, message in problems:
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        lines.append(f"  {source}:{_line_of(document, loc)}: {path or '(top)'}: {message}")
    return "\n".join(lines)


def _line_of(document: Any, loc: Sequence[Any]) -> int:
    """1-based line of the deepest node of ``loc`` that exists in the YAML document."""
    line = 1
    node = document
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --------------------------------------------------------------------------------- generators


def generate_load_scenario(
    devices: int,
    *,
    seed: int = 1,
    kinds: Sequence[str] | None = None,
    devices_per_enterprise: int = 8,
    units_per_modbus_port: int = 16,
    machines_per_opcua_server: int = 40,
    tick_ms: int = 100,
    gauge_period_s: float = 1.0,
    dwell_scale: float = 1.0,
    host: str = "127.0.0.1",
) -> Scenario:
    """A load scenario of ``devices`` machines of mixed kinds on shared endpoints with free ports.

    Kinds rotate through ``kinds`` (default: all). Devices are grouped into enterprises of
    ``devices_per_enterprise``; each enterprise's energy meters measure its other machines.
    Modbus devices share ports as unit ids 1..``units_per_modbus_port``; OPC UA devices share
    servers of up to ``machines_per_opcua_server`` machines.
    """
    if devices < 1:
        raise ValueError("a load scenario needs at least one device")
    rotation = list(kinds or KINDS)
    unknown = [k for k in rotation if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; known: {sorted(KINDS)}")
    servers: list[ServerSpec] = []
    instances: list[dict[str, Any]] = []
    modbus_units = opcua_machines = 0
    for index in range(devices):
        kind = rotation[index % len(rotation)]
        enterprise = f"ent-{index // devices_per_enterprise + 1:03d}"
        item: dict[str, Any] = {
            "id": f"dev-{index + 1:04d}-{kind}",
            "kind": kind,
            "enterprise": enterprise,
        }
        if KINDS[kind].protocol == "modbus":
            if modbus_units % units_per_modbus_port == 0:
                servers.append(
                    ServerSpec(name=f"modbus-{len(servers) + 1:02d}", protocol="modbus", port=0)
                )
            item["server"] = next(s.name for s in reversed(servers) if s.protocol == "modbus")
            item["unit_id"] = modbus_units % units_per_modbus_port + 1
            modbus_units += 1
        else:
            if opcua_machines % machines_per_opcua_server == 0:
                servers.append(
                    ServerSpec(name=f"opcua-{len(servers) + 1:02d}", protocol="opcua", port=0)
                )
            item["server"] = next(s.name for s in reversed(servers) if s.protocol == "opcua")
            opcua_machines += 1
        instances.append(item)
    for item in instances:
        if item["kind"] == "energy_meter":
            item["meters"] = [
                other["id"]
                for other in instances
                if other["enterprise"] == item["enterprise"] and other["kind"] != "energy_meter"
            ]
    scenario = Scenario(
        name=f"load-{devices}",
        seed=seed,
        tick_ms=tick_ms,
        gauge_period_s=gauge_period_s,
        dwell_scale=dwell_scale,
        host=host,
        servers=servers,
        instances=[InstanceSpec(**item) for item in instances],
    )
    problems = check_scenario(scenario)
    if problems:  # pragma: no cover - a generator bug
        raise ScenarioError(str(problems))
    return scenario


def single_kind_scenario(
    kind: str, *, device_id: str | None = None, seed: int = 1, tick_ms: int = 100, **instance: Any
) -> Scenario:
    """A scenario of one machine of ``kind`` on a free port (handy in tests)."""
    spec = InstanceSpec(id=device_id or f"{kind.replace('_', '-')}-01", kind=kind, **instance)
    scenario = Scenario(name=kind, seed=seed, tick_ms=tick_ms, instances=[spec])
    problems = check_scenario(scenario)
    if problems:
        raise ScenarioError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
    return scenario
