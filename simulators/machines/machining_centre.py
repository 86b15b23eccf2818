"""Vertical CNC machining centre for auto parts (segment 367), served over OPC UA."""

from __future__ import annotations

from simulators.addressmap import OpcUaMap, Variable, VariantType
from simulators.companion import UMATI_MACHINING_CENTRE
from simulators.machines.base import (
    FAULT,
    IDLE,
    OFF,
    RUNNING,
    SETUP,
    Alarm,
    Behaviour,
    Machine,
    MachineKind,
)

D, F, I16, I32, U32, B, S = (
    VariantType.DOUBLE,
    VariantType.FLOAT,
    VariantType.INT16,
    VariantType.INT32,
    VariantType.UINT32,
    VariantType.BOOLEAN,
    VariantType.STRING,
)

_OPERATIONS = 12
"""Tool changes per part program."""


class MachiningCentre(Machine):
    """Mills and drills a housing in a sequence of tools; the spindle stops at each tool change."""

    kind = "machining_centre"
    behaviour = Behaviour(
        cycle_s=(60.0, 600.0),
        rated_power_kw=25.0,
        programs=(
            "O1001 HOUSING-OP10",
            "O1002 HOUSING-OP20",
            "O2040 BRACKET-OP10",
            "O3105 VALVE-BODY",
        ),
        alarms=(
            Alarm(1001, "主轴负载过高 Spindle load too high"),
            Alarm(1120, "刀库故障 Tool magazine fault", (600.0, 2400.0)),
            Alarm(2003, "Y轴跟随误差过大 Y-axis following error too large", (600.0, 3600.0)),
            Alarm(3010, "气压不足 Air pressure low", (120.0, 600.0)),
            Alarm(4020, "冷却液液位低 Coolant level low", (120.0, 600.0)),
        ),
        running_dwell_s=3600.0,
        setup_s=(1800.0, 5400.0),
        batch_parts=(20, 200),
        mtbf_s=6 * 3600.0,
        reject_rate=0.01,
    )

    def setup_values(self) -> None:
        self.set("tool_number", 1)

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        position = self.cycle_phase * _OPERATIONS
        operation = min(_OPERATIONS - 1, int(position))
        changing_tool = running and position - operation > 0.93
        cutting = running and not changing_tool and self.cycle_phase < 0.97
        tool = 1 + (operation * 7 + int(self.setpoint("first_tool", 0, 23))) % 24
        if cutting:
            speed = self.setpoint(f"speed{operation}", 2000.0, 16000.0) * (1 + self.noise(0.002))
            load = max(0.0, self.setpoint(f"load{operation}", 15.0, 70.0) + self.noise(3.0))
            feed = self.setpoint(f"feed{operation}", 400.0, 4000.0)
        else:
            speed = load = feed = 0.0
        self.load_share = load / 100.0
        self.set("spindle_speed", round(speed, 0))
        self.set("spindle_load", round(load, 1))
        self.set("feed_rate", round(feed, 0))
        self.set("feed_override", 100 if running else 0)
        self.set("spindle_override", 100 if running else 0)
        if running:
            self.set("tool_number", tool)
        powered = self.state != OFF
        for axis, base in (("x", 25.0), ("y", 26.0), ("z", 28.0)):
            target = base + 10.0 * self.load_share if powered else 21.0
            temp = self.lag(axis, target, 1500.0, elapsed_s, base + 3)
            self.set(f"axis_temperature.{axis}", round(temp, 2))
        spindle = 27.0 + 28.0 * self.load_share if powered else 21.0
        self.set(
            "spindle_temperature", round(self.lag("spindle", spindle, 800.0, elapsed_s, 32.0), 2)
        )
        coolant = 22.0 + 6.0 * self.load_share if powered else 20.0
        self.set(
            "coolant_temperature", round(self.lag("coolant", coolant, 2400.0, elapsed_s, 23.0), 2)
        )
        vibration = 0.5 + speed / 16000.0 * 2.5 + abs(self.noise(0.1)) if cutting else 0.04
        self.set("vibration_rms", round(vibration, 3))


_STATES = {"EXECUTING": RUNNING, "READY": IDLE, "SETUP": SETUP, "ALARM": FAULT, "POWER_OFF": OFF}

MAP = OpcUaMap(
    (
        Variable(
            path="Status/ControllerMode",
            type=S,
            signal="machine_state",
            states=_STATES,
            meaning="Controller mode text: EXECUTING, READY, SETUP, ALARM or POWER_OFF",
        ),
        Variable(
            path="Status/Program",
            type=S,
            signal="program_name",
            meaning="Main program number and comment",
        ),
        Variable(
            path="Spindle/Speed",
            type=D,
            signal="spindle_speed",
            unit="rpm",
            meaning="Spindle actual speed",
        ),
        Variable(
            path="Spindle/Load",
            type=F,
            signal="spindle_load",
            unit="percent",
            meaning="Spindle load, % of 30-minute rating",
        ),
        Variable(
            path="Spindle/Temperature",
            type=F,
            signal="spindle_temperature",
            unit="degC",
            meaning="Spindle bearing temperature",
        ),
        Variable(
            path="Spindle/Vibration",
            type=F,
            signal="vibration_rms",
            unit="mm/s",
            meaning="Spindle vibration velocity RMS",
        ),
        Variable(
            path="Spindle/ToolNumber",
            type=I16,
            signal="tool_number",
            meaning="Tool in the spindle (1-24)",
        ),
        Variable(
            path="Feed/Actual",
            type=D,
            signal="feed_rate",
            unit="mm/min",
            meaning="Actual path feed rate",
        ),
        Variable(
            path="Feed/Override",
            type=F,
            signal="feed_override",
            unit="percent",
            meaning="Feed override",
        ),
        Variable(
            path="Axes/X/MotorTemperature",
            type=F,
            signal="axis_temperature.x",
            unit="degC",
            meaning="X-axis servo motor temperature",
        ),
        Variable(
            path="Axes/Y/MotorTemperature",
            type=F,
            signal="axis_temperature.y",
            unit="degC",
            meaning="Y-axis servo motor temperature",
        ),
        Variable(
            path="Axes/Z/MotorTemperature",
            type=F,
            signal="axis_temperature.z",
            unit="degC",
            meaning="Z-axis servo motor temperature",
        ),
        Variable(
            path="Coolant/Temperature",
            type=F,
            signal="coolant_temperature",
            unit="degC",
            meaning="Coolant tank temperature",
        ),
        Variable(
            path="Counters/PartsTotal",
            type=U32,
            signal="part_count",
            meaning="Parts machined (lifetime)",
        ),
        Variable(
            path="Counters/PartsGood",
            type=U32,
            signal="good_count",
            meaning="Parts passed (in-machine probing)",
        ),
        Variable(
            path="Counters/PartsRejected",
            type=U32,
            signal="reject_count",
            meaning="Parts failed (in-machine probing)",
        ),
        Variable(
            path="Counters/LastCycleTime",
            type=D,
            signal="cycle_time",
            unit="s",
            meaning="Duration of the last completed cycle",
        ),
        Variable(
            path="Counters/OperatingHours",
            type=D,
            signal="run_hours",
            unit="h",
            meaning="Hours in automatic operation",
        ),
        Variable(path="Alarm/Present", type=B, signal="alarm_active", meaning="Any alarm active"),
        Variable(
            path="Alarm/Number",
            type=I32,
            signal="alarm_code",
            meaning="Number of the active alarm, 0 when none",
        ),
        Variable(
            path="Alarm/Message",
            type=S,
            signal="alarm_text",
            meaning="Message of the active alarm (Chinese / English)",
        ),
        Variable(
            path="Energy/ActivePower",
            type=D,
            signal="active_power",
            unit="kW",
            meaning="Machine active power",
        ),
        Variable(
            path="Energy/ActiveEnergy",
            type=D,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy (lifetime)",
        ),
    )
)

KIND = MachineKind(
    name="machining_centre",
    title="Vertical CNC machining centre (OPC UA)",
    segment="367",
    summary=(
        "A three-axis vertical machining centre with a 24-tool magazine and a 16,000 rpm spindle "
        "milling and drilling housings, brackets and valve bodies (1-10 min per part), with the "
        "controller's built-in OPC UA server."
    ),
    model=MachiningCentre,
    address_map=MAP,
    notes=(
        "Spindle/ToolNumber is an Int16; Feed/Override is a Float.",
        "The spindle stops at each of the 12 tool changes of a cycle.",
    ),
    companion=UMATI_MACHINING_CENTRE,
)
