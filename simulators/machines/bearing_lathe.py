"""CNC turning centre for bearing rings (segment 345), served over OPC UA."""

from __future__ import annotations

from simulators.addressmap import OpcUaMap, Variable, VariantType
from simulators.companion import UMATI_LATHE
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

D, F, I32, U32, B, S = (
    VariantType.DOUBLE,
    VariantType.FLOAT,
    VariantType.INT32,
    VariantType.UINT32,
    VariantType.BOOLEAN,
    VariantType.STRING,
)


class BearingLathe(Machine):
    """Turns inner and outer rings from forged blanks: cut with four tools, then change the part."""

    kind = "bearing_lathe"
    behaviour = Behaviour(
        cycle_s=(15.0, 60.0),
        rated_power_kw=18.0,
        programs=("6205-OR-OP10", "6206-IR-OP10", "6308-OR-OP20", "NU210-IR-OP10"),
        alarms=(
            Alarm(1010, "主轴过载 Spindle overload"),
            Alarm(2051, "X轴伺服报警 X-axis servo alarm", (600.0, 2400.0)),
            Alarm(3002, "刀具寿命到期 Tool life expired", (120.0, 600.0)),
            Alarm(4100, "卡盘压力低 Chuck pressure low"),
            Alarm(7001, "润滑油位低 Lubrication level low", (120.0, 480.0)),
        ),
        running_dwell_s=2400.0,
        idle_dwell_s=300.0,
        setup_s=(900.0, 2400.0),
        batch_parts=(80, 500),
        mtbf_s=4 * 3600.0,
        reject_rate=0.008,
    )
    cutting_share = 0.85
    """Share of a cycle spent cutting; the rest is unloading and loading the next ring."""

    def sample_gauges(self, elapsed_s: float) -> None:
        cutting = self.state == RUNNING and self.cycle_phase < self.cutting_share
        if cutting:
            speed = self.setpoint("speed", 800.0, 3000.0) * (1 + self.noise(0.003))
            load = max(0.0, self.setpoint("load", 35.0, 75.0) + self.noise(3.0))
            feed = speed * self.setpoint("feed_per_rev", 0.15, 0.35)
            tool = 1 + int(self.cycle_phase / self.cutting_share * 4)
        else:
            speed, load, feed = 0.0, 0.0, 0.0
            tool = int(self.values.get("tool_number", 1))
        self.load_share = load / 100.0
        powered = self.state != OFF
        self.set("spindle_speed", round(speed, 1))
        self.set("spindle_load", round(load, 1))
        self.set("feed_rate", round(feed, 1))
        self.set("feed_override", 100 if self.state != SETUP else 50)
        # Operators prove out a new program at reduced spindle speed.
        self.set("spindle_override", 100 if self.state != SETUP else 80)
        self.set("tool_number", tool)
        hot = 24.0 + 22.0 * self.load_share if powered else 22.0
        self.set("spindle_temperature", round(self.lag("spindle", hot, 900.0, elapsed_s, 30.0), 2))
        axis = 23.0 + 9.0 * self.load_share if powered else 22.0
        self.set("axis_temperature.x", round(self.lag("x", axis, 1200.0, elapsed_s, 27.0), 2))
        self.set("axis_temperature.z", round(self.lag("z", axis + 1.5, 1200.0, elapsed_s, 28.0), 2))
        vibration = 0.6 + speed / 3000.0 * 1.4 + abs(self.noise(0.08)) if cutting else 0.05
        self.set("vibration_rms", round(vibration, 3))


_STATES = {0: OFF, 1: RUNNING, 2: IDLE, 3: SETUP, 4: FAULT}

MAP = OpcUaMap(
    (
        Variable(
            path="Identification/Manufacturer",
            type=S,
            meaning="Manufacturer",
            constant="Shulian Sim Machine Tools",
        ),
        Variable(path="Identification/Model", type=S, meaning="Model", constant="SIM-CK6150R"),
        Variable(
            path="Monitoring/ExecutionState",
            type=I32,
            signal="machine_state",
            meaning="Execution state code (0 off, 1 executing, 2 ready, 3 setup, 4 alarm)",
            states=_STATES,
        ),
        Variable(
            path="Monitoring/Spindle/ActualSpeed",
            type=D,
            signal="spindle_speed",
            unit="rpm",
            meaning="Main spindle actual speed",
        ),
        Variable(
            path="Monitoring/Spindle/Load",
            type=F,
            signal="spindle_load",
            unit="percent",
            meaning="Main spindle load, % of rated torque",
        ),
        Variable(
            path="Monitoring/Spindle/Temperature",
            type=F,
            signal="spindle_temperature",
            unit="degC",
            meaning="Front spindle bearing temperature",
        ),
        Variable(
            path="Monitoring/Spindle/Vibration",
            type=F,
            signal="vibration_rms",
            unit="mm/s",
            meaning="Spindle housing vibration velocity RMS",
        ),
        Variable(
            path="Monitoring/Axes/X/Temperature",
            type=F,
            signal="axis_temperature.x",
            unit="degC",
            meaning="X-axis ball screw nut temperature",
        ),
        Variable(
            path="Monitoring/Axes/Z/Temperature",
            type=F,
            signal="axis_temperature.z",
            unit="degC",
            meaning="Z-axis ball screw nut temperature",
        ),
        Variable(
            path="Monitoring/Feed/ActualFeedRate",
            type=D,
            signal="feed_rate",
            unit="mm/min",
            meaning="Path feed rate",
        ),
        Variable(
            path="Monitoring/Feed/Override",
            type=I32,
            signal="feed_override",
            unit="percent",
            meaning="Feed override switch",
        ),
        Variable(
            path="Monitoring/Tool/ActiveToolNumber",
            type=I32,
            signal="tool_number",
            meaning="Turret position of the active tool (T1..T4)",
        ),
        Variable(
            path="Production/ActiveProgram/Name",
            type=S,
            signal="program_name",
            meaning="Active part program",
        ),
        Variable(
            path="Production/PartCounter",
            type=U32,
            signal="part_count",
            meaning="Parts machined (lifetime)",
        ),
        Variable(
            path="Production/GoodParts",
            type=U32,
            signal="good_count",
            meaning="Parts passed by the post-process gauge",
        ),
        Variable(
            path="Production/RejectedParts",
            type=U32,
            signal="reject_count",
            meaning="Parts rejected by the post-process gauge",
        ),
        Variable(
            path="Production/LastCycleTime",
            type=D,
            signal="cycle_time",
            unit="s",
            meaning="Duration of the last completed cycle",
        ),
        Variable(path="Alarms/Active", type=B, signal="alarm_active", meaning="Any alarm active"),
        Variable(
            path="Alarms/Code",
            type=I32,
            signal="alarm_code",
            meaning="Number of the active alarm, 0 when none",
        ),
        Variable(
            path="Alarms/Text",
            type=S,
            signal="alarm_text",
            meaning="Message of the active alarm (Chinese / English)",
        ),
        Variable(
            path="Energy/ActivePower",
            type=D,
            signal="active_power",
            unit="kW",
            meaning="Machine active power (drive DC bus measurement)",
        ),
        Variable(
            path="Energy/ActiveEnergy",
            type=D,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy (lifetime)",
        ),
        Variable(
            path="Maintenance/OperatingHours",
            type=D,
            signal="run_hours",
            unit="h",
            meaning="Spindle running hours",
        ),
    )
)

KIND = MachineKind(
    name="bearing_lathe",
    title="Bearing-ring CNC turning centre (OPC UA)",
    segment="345",
    summary=(
        "A two-axis CNC turning centre with a four-position turret that soft-turns inner and outer "
        "bearing rings from forged blanks (800-3,000 rpm, 15-60 s per ring), with a built-in "
        "OPC UA server in the style of umati / OPC 40501 machine-tool monitoring."
    ),
    model=BearingLathe,
    address_map=MAP,
    notes=(
        "The spindle stops while the loader changes the ring (the last 15 % of each cycle), so "
        "spindle speed, load and feed drop to 0 once per cycle.",
    ),
    companion=UMATI_LATHE,
)
