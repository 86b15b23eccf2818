"""Simulated line equipment behind real OPC UA and Modbus servers, with recorded ground truth.

Public API (see docs/simulators.md)::

    from simulators import SimulatorHost, load_scenario, generate_load_scenario
    async with SimulatorHost(load_scenario(path).with_free_ports()) as host:
        host.endpoint("ent-001-lathe-01").url
        host.truth.value_at("ent-001-lathe-01", "spindle_speed", ts_ms)
"""

from simulators.addressmap import (
    ModbusMap,
    OpcUaMap,
    Register,
    RegisterType,
    Table,
    Variable,
    VariantType,
    WordOrder,
)
from simulators.errors import (
    ScenarioError,
    ServeError,
    SimulatorError,
    TruthError,
    UnknownKindError,
)
from simulators.host import Endpoint, SimulatedDevice, SimulatorHost
from simulators.machines import KINDS, Machine, MachineKind, create_machine, machine_kind
from simulators.modbus_server import Unreachable
from simulators.opcua_server import NAMESPACE_URI
from simulators.scenario import (
    SCENARIO_DIR,
    InstanceSpec,
    Scenario,
    ServerSpec,
    generate_load_scenario,
    load_scenario,
    single_kind_scenario,
)
from simulators.truth import GroundTruth, Outage, TruthPoint

__all__ = [
    "KINDS",
    "NAMESPACE_URI",
    "SCENARIO_DIR",
    "Endpoint",
    "GroundTruth",
    "InstanceSpec",
    "Machine",
    "MachineKind",
    "ModbusMap",
    "OpcUaMap",
    "Outage",
    "Register",
    "RegisterType",
    "Scenario",
    "ScenarioError",
    "ServeError",
    "ServerSpec",
    "SimulatedDevice",
    "SimulatorError",
    "SimulatorHost",
    "Table",
    "TruthError",
    "TruthPoint",
    "UnknownKindError",
    "Unreachable",
    "Variable",
    "VariantType",
    "WordOrder",
    "create_machine",
    "generate_load_scenario",
    "load_scenario",
    "machine_kind",
    "single_kind_scenario",
]
