"""Companion-specification address spaces: what a conforming machine tool or moulding machine serves.

A machine kind may name a ``CompanionSpec``; an instance with ``companion_spec: true`` is then
served the way a conforming machine is, instead of in our own manual's layout: the server loads the
OPC Foundation NodeSets (``simulators/nodesets``), creates an instance of the spec's machine type
(``MachineToolType`` of OPC 40501-1 umati, ``IMM_MES_InterfaceType`` of OPC 40077 EUROMAP 77) in
the spec's folder, adds the optional and placeholder parts the machine has (a channel, a spindle,
an alert), and feeds the spec's variables from the same behaviour model.

Paths are browse paths from the machine object with namespaces by alias (``mt:Monitoring``); the
alias ``machine`` is the server's own namespace, where a vendor names its own parts (the spindle
``machine:Spindle``) and any values the spec does not define (``machine:ActualSpeed``: umati 1.02
has no spindle speed variable). Numeric node ids are whatever the server allocates, so they differ
from one server to another, as on real machines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from simulators.addressmap import Derived, OpcUaMap, Value, Variable, VariantType
from wire import MachineState

NODESET_DIR: Final = Path(__file__).parent / "nodesets"

RUNNING, IDLE, SETUP, FAULT, OFF = (
    MachineState.RUNNING.value,
    MachineState.IDLE.value,
    MachineState.SETUP.value,
    MachineState.FAULT.value,
    MachineState.OFF.value,
)

MACHINE_TOOL_NODESETS: Final = (
    "Opc.Ua.Di.NodeSet2.xml",
    "Opc.Ua.IA.NodeSet2.xml",
    "Opc.Ua.Machinery.NodeSet2.xml",
    "opc.ua.isa95-jobcontrol.nodeset2.xml",
    "Opc.Ua.Machinery.Jobs.Nodeset2.xml",
    "Opc.Ua.MachineTool.NodeSet2.xml",
)
"""OPC 40501-1 Machine Tools 1.02 and its bases, in dependency order."""
PLASTICS_NODESETS: Final = (
    "Opc.Ua.Di.NodeSet2.xml",
    "Opc.Ua.PlasticsRubber.GeneralTypes.NodeSet2.xml",
    "Opc.Ua.PlasticsRubber.IMM2MES.NodeSet2.xml",
)
"""OPC 40077 / EUROMAP 77 1.01 and its bases, in dependency order."""

DI = "http://opcfoundation.org/UA/DI/"
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL = "http://opcfoundation.org/UA/MachineTool/"
GENERAL_TYPES = "http://opcfoundation.org/UA/PlasticsRubber/GeneralTypes/"
IMM2MES = "http://opcfoundation.org/UA/PlasticsRubber/IMM2MES/"


@dataclass(frozen=True, slots=True)
class Part:
    """An optional or placeholder object a conforming machine adds: where, and of which type."""

    path: str
    type: str


@dataclass(frozen=True, slots=True)
class CompanionSpec:
    """A companion specification's address space for one machine kind.

    Attributes:
        name: Short name used in docs and listings (``umati``, ``euromap77``).
        title: The specification's title.
        nodesets: NodeSet files (in ``NODESET_DIR``) in dependency order.
        namespaces: Alias -> namespace URI for the paths below.
        machine_type: The machine object's type, ``alias:BrowseName``.
        folder: Where machines live, a browse path from the Root folder.
        parts: Objects to add below the machine before the variables are looked up.
        identification: Path -> constant value (manufacturer, model).
        serial_number: Path of the serial number (each instance's own).
        address_map: The variables fed from the model, by path.
    """

    name: str
    title: str
    nodesets: tuple[str, ...]
    namespaces: Mapping[str, str]
    machine_type: str
    folder: str
    parts: tuple[Part, ...]
    identification: Mapping[str, str]
    serial_number: str
    address_map: OpcUaMap = field(repr=False)


def _lookup(table: Mapping[str, int | str]) -> Callable[[Value], int | str]:
    return lambda value: table[str(value)]


D, I32, U32, U64, B, S, LT = (
    VariantType.DOUBLE,
    VariantType.INT32,
    VariantType.UINT32,
    VariantType.UINT64,
    VariantType.BOOLEAN,
    VariantType.STRING,
    VariantType.LOCALIZED_TEXT,
)

_ITEM_STATE = {RUNNING: "Executing", IDLE: "NotExecuting", SETUP: "NotExecuting", FAULT: "OutOfService", OFF: "NotAvailable"}  # fmt: skip
_ITEM_STATE_READ = {"Executing": RUNNING, "NotExecuting": IDLE, "OutOfService": FAULT, "NotAvailable": OFF}  # fmt: skip
_OPERATION_MODE = {RUNNING: "Processing", IDLE: "Processing", SETUP: "Setup", FAULT: "Maintenance", OFF: "None"}  # fmt: skip
_MT_OPERATION_MODE = {RUNNING: 1, IDLE: 1, SETUP: 2, FAULT: 0, OFF: 0}
"""MachineOperationMode: Manual 0, Automatic 1, Setup 2."""
_CHANNEL_STATE = {RUNNING: 0, IDLE: 2, SETUP: 2, FAULT: 1, OFF: 2}
"""ChannelState: Active 0, Interrupted 1, Reset 2."""
_PROGRAM_STATE = {RUNNING: "Running", IDLE: "Ended", SETUP: "Ended", FAULT: "Interrupted", OFF: "Ended"}  # fmt: skip

_MONITORING = "mt:Monitoring/mt:MachineTool"
_CHANNEL = "mt:Monitoring/machine:Channel1"
_SPINDLE = "mt:Monitoring/machine:Spindle"
_ALERT = "mt:Notification/mt:Messages/machine:Alert"


def _umati_map(spindle_meaning: str) -> OpcUaMap:
    return OpcUaMap(
        (
            Derived(
                path=f"{_MONITORING}/machinery:MachineryItemState/0:CurrentState",
                type=LT,
                signal="machine_state",
                key="machine_state",
                derive=_lookup(_ITEM_STATE),
                decode=_ITEM_STATE_READ,
                meaning="MachineryItemState (OPC 40001-1): Executing, NotExecuting, OutOfService, NotAvailable",
            ),
            Derived(
                path=f"{_MONITORING}/machinery:MachineryOperationMode/0:CurrentState",
                type=LT,
                signal="operation_mode",
                key="machine_state",
                derive=_lookup(_OPERATION_MODE),
                meaning="MachineryOperationMode (OPC 40001-1): None, Maintenance, Setup, Processing",
            ),
            Derived(
                path=f"{_MONITORING}/mt:OperationMode",
                type=I32,
                key="machine_state",
                derive=_lookup(_MT_OPERATION_MODE),
                meaning="MachineOperationMode enumeration: Manual 0, Automatic 1, Setup 2",
            ),
            Variable(
                path=f"{_CHANNEL}/mt:Name", type=S, constant="Channel 1", meaning="Channel name"
            ),
            Derived(
                path=f"{_CHANNEL}/mt:ChannelState",
                type=I32,
                key="machine_state",
                derive=_lookup(_CHANNEL_STATE),
                meaning="ChannelState enumeration: Active 0, Interrupted 1, Reset 2",
            ),
            Variable(
                path=f"{_CHANNEL}/mt:ChannelMode", type=I32, constant=0, meaning="Automatic (0)"
            ),
            Variable(
                path=f"{_CHANNEL}/mt:FeedOverride",
                type=D,
                signal="feed_override",
                unit="percent",
                meaning="Feed override of the channel",
            ),
            Variable(
                path=f"{_SPINDLE}/mt:Name", type=S, constant="Main spindle", meaning="Spindle name"
            ),
            Derived(
                path=f"{_SPINDLE}/mt:IsRotating",
                type=B,
                key="spindle_speed",
                derive=lambda speed: float(speed) > 0,
                meaning="Whether the spindle turns",
            ),
            Variable(
                path=f"{_SPINDLE}/mt:Override",
                type=D,
                signal="spindle_override",
                unit="percent",
                meaning="Spindle speed override",
            ),
            Variable(
                path=f"{_SPINDLE}/machine:ActualSpeed",
                type=D,
                signal="spindle_speed",
                unit="rpm",
                meaning=f"{spindle_meaning} (vendor variable: umati 1.02 defines no spindle speed)",
            ),
            Variable(
                path=f"{_SPINDLE}/machine:Load",
                type=D,
                signal="spindle_load",
                unit="percent",
                meaning="Spindle load (vendor variable)",
            ),
            Variable(
                path="mt:Production/mt:ActiveProgram/mt:Name",
                type=S,
                signal="program_name",
                meaning="Name of the active program",
            ),
            Derived(
                path="mt:Production/mt:ActiveProgram/mt:State/0:CurrentState",
                type=LT,
                key="machine_state",
                derive=_lookup(_PROGRAM_STATE),
                meaning="ProductionProgramStateMachine: Running, Ended, Interrupted",
            ),
            Variable(
                path="mt:Production/mt:ActiveProgram/mt:JobIdentifier",
                type=S,
                signal="job_id",
                meaning="Job the active program belongs to",
            ),
            Variable(
                path="mt:Production/mt:Statistics/mt:PartsProducedInLifetime",
                type=U32,
                signal="part_count",
                meaning="Parts produced in the machine's lifetime",
            ),
            Variable(
                path=f"{_ALERT}/0:ActiveState/0:Id",
                type=B,
                signal="alarm_active",
                meaning="Whether the alert (an AlertType condition) is active",
            ),
            Variable(
                path=f"{_ALERT}/0:Message",
                type=LT,
                signal="alarm_text",
                meaning="Message of the alert",
            ),
            Derived(
                path=f"{_ALERT}/mt:ErrorCode",
                type=S,
                key="alarm_code",
                derive=lambda code: str(code) if code else "",
                meaning="The alert's error code (a String in OPC 40501-1)",
            ),
        )
    )


def _umati(kind_title: str, spindle_meaning: str) -> CompanionSpec:
    return CompanionSpec(
        name="umati",
        title="OPC 40501-1 Machine Tools (umati) 1.02",
        nodesets=MACHINE_TOOL_NODESETS,
        namespaces={"di": DI, "machinery": MACHINERY, "mt": MACHINE_TOOL},
        machine_type="mt:MachineToolType",
        folder="0:Objects/machinery:Machines",
        parts=(
            Part(_CHANNEL, "mt:ChannelMonitoringType"),
            Part(_SPINDLE, "mt:SpindleMonitoringType"),
            Part(_ALERT, "mt:AlertType"),
        ),
        identification={
            "di:Identification/di:Manufacturer": "shulian simulators",
            "di:Identification/di:ProductInstanceUri": f"urn:shulian:simulators:{kind_title}",
        },
        serial_number="di:Identification/di:SerialNumber",
        address_map=_umati_map(spindle_meaning),
    )


UMATI_MACHINING_CENTRE: Final = _umati("machining_centre", "Spindle actual speed")
UMATI_LATHE: Final = _umati("bearing_lathe", "Main spindle actual speed")

_PRODUCTION_STATUS = {4: MachineState.RUNNING, 3: MachineState.IDLE, 2: MachineState.SETUP, 1: MachineState.FAULT, 0: MachineState.OFF}  # fmt: skip
"""ProductionStatusEnumeration: PRODUCTION 4, READY_FOR_PRODUCTION 3, START_UP 2, NO_PRODUCTION 1,
OTHER 0 (EUROMAP 77 has no fault status: a stopped machine with a standstill message)."""
_MACHINE_MODE = {RUNNING: 1, IDLE: 1, SETUP: 4, FAULT: 3, OFF: 0}
"""MachineModeEnumeration: OTHER 0, AUTOMATIC 1, SEMI_AUTOMATIC 2, MANUAL 3, SETUP 4, SLEEP 5."""
_JOB_VALUES = "imm:Jobs/gt:ActiveJobValues"

EUROMAP77_IMM: Final = CompanionSpec(
    name="euromap77",
    title="OPC 40077 / EUROMAP 77 IMM to MES 1.01",
    nodesets=PLASTICS_NODESETS,
    namespaces={"di": DI, "gt": GENERAL_TYPES, "imm": IMM2MES},
    machine_type="imm:IMM_MES_InterfaceType",
    folder="0:Objects/di:DeviceSet",
    parts=(),
    identification={
        "imm:MachineInformation/di:Manufacturer": "shulian simulators",
        "imm:MachineInformation/di:Model": "SIM-IMM 250",
        "imm:MachineInformation/gt:ControllerName": "SIM-CTRL",
        "imm:MachineInformation/di:DeviceClass": "Injection moulding machine",
    },
    serial_number="imm:MachineInformation/di:SerialNumber",
    address_map=OpcUaMap(
        (
            Variable(
                path="imm:MachineMESStatus/gt:ProductionControl/gt:ProductionStatus",
                type=I32,
                signal="machine_state",
                states=_PRODUCTION_STATUS,
                meaning="ProductionStatusEnumeration: PRODUCTION 4 ... OTHER 0",
            ),
            Derived(
                path="imm:MachineStatus/gt:MachineMode",
                type=I32,
                signal="operation_mode",
                key="machine_state",
                derive=_lookup(_MACHINE_MODE),
                decode={1: "AUTOMATIC", 4: "SETUP", 3: "MANUAL", 0: "OTHER"},
                meaning="MachineModeEnumeration: OTHER 0, AUTOMATIC 1, MANUAL 3, SETUP 4",
            ),
            Variable(
                path="imm:Jobs/gt:ActiveJob/gt:ProductionDatasetName",
                type=S,
                signal="program_name",
                meaning="Production dataset (mould setting) in use",
            ),
            Variable(
                path="imm:Jobs/gt:ActiveJob/gt:JobName",
                type=S,
                signal="job_id",
                meaning="Name of the active job",
            ),
            Variable(
                path=f"{_JOB_VALUES}/gt:JobPartsCounter",
                type=U64,
                signal="part_count",
                meaning="Parts produced",
            ),
            Variable(
                path=f"{_JOB_VALUES}/gt:JobGoodPartsCounter",
                type=U64,
                signal="good_count",
                meaning="Good parts",
            ),
            Variable(
                path=f"{_JOB_VALUES}/gt:JobBadPartsCounter",
                type=U64,
                signal="reject_count",
                meaning="Bad parts",
            ),
            Variable(
                path=f"{_JOB_VALUES}/gt:MachineCycleCounter",
                type=U64,
                signal="shot_count",
                meaning="Machine cycles (lifetime)",
            ),
            Variable(
                path=f"{_JOB_VALUES}/gt:LastCycleTime",
                type=D,
                signal="cycle_time",
                unit="ms",
                meaning="Duration of the last cycle (Duration, ms)",
            ),
            Variable(
                path="imm:MachineMESStatus/gt:StandstillMessage/0:Message",
                type=LT,
                signal="alarm_text",
                meaning="Standstill message (the active alarm's text while faulted)",
            ),
            Derived(
                path="imm:MachineMESStatus/gt:StandstillMessage/gt:Id",
                type=S,
                key="alarm_code",
                derive=lambda code: str(code) if code else "",
                meaning="Standstill message id (the alarm code, a String)",
            ),
        )
    ),
)


def served_value(variable: Variable, value: Value) -> Value:
    """What a conforming client reads for a model value (for docs and tests)."""
    return variable.served(variable.to_raw(value))
