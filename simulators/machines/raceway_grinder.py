"""Internal raceway grinder for bearing inner rings (segment 345), served over OPC UA."""

from __future__ import annotations

import math

from simulators.addressmap import OpcUaMap, Variable, VariantType
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

_NEW_WHEEL_MM = 32.0
_WORN_WHEEL_MM = 24.0
_DRESS_MM = 0.04


class RacewayGrinder(Machine):
    """Plunge-grinds a raceway with an in-process gauge; dresses the wheel every few parts.

    The wheel spindle holds a constant surface speed, so its speed rises as dressing wears the
    wheel down; a new wheel goes on at the next changeover once the wheel is worn.
    """

    kind = "raceway_grinder"
    behaviour = Behaviour(
        cycle_s=(10.0, 40.0),
        rated_power_kw=22.0,
        programs=("6204-IR-RW", "6305-IR-RW", "7206-IR-RW"),
        alarms=(
            Alarm(1201, "砂轮主轴过热 Wheel spindle over-temperature", (600.0, 1800.0)),
            Alarm(1402, "主动量仪故障 In-process gauge fault"),
            Alarm(2210, "修整器未到位 Dresser not in position", (120.0, 600.0)),
            Alarm(3105, "冷却液流量低 Coolant flow low"),
            Alarm(5001, "工件未夹紧 Workpiece not clamped", (60.0, 300.0)),
        ),
        running_dwell_s=2400.0,
        setup_s=(1200.0, 3000.0),
        batch_parts=(150, 800),
        mtbf_s=5 * 3600.0,
        idle_power_share=0.3,
    )
    counters = ("part_count", "good_count", "reject_count", "dressing_count")

    def setup_values(self) -> None:
        self.wheel_mm = round(self.rng.uniform(_WORN_WHEEL_MM + 2, _NEW_WHEEL_MM), 2)
        self.parts_to_dress = self.rng.randint(4, 12)
        self.final_deviation_um = 0.0
        self.set("wheel_diameter", self.wheel_mm)
        self.set("size_deviation", 0.0)

    def judge_part(self) -> bool:
        self.final_deviation_um = round(self.noise(1.5), 2)
        return abs(self.final_deviation_um) <= 4.5

    def on_cycle(self, is_good: bool) -> None:
        self.set("size_deviation", self.final_deviation_um)
        self.parts_to_dress -= 1
        if self.parts_to_dress <= 0:
            self.parts_to_dress = self.rng.randint(4, 12)
            self.wheel_mm = round(max(_WORN_WHEEL_MM, self.wheel_mm - _DRESS_MM), 2)
            self.set("wheel_diameter", self.wheel_mm)
            self.count("dressing_count")
        if self.wheel_mm <= _WORN_WHEEL_MM + 0.5 and self._parts_left <= 1:
            self.wheel_mm = _NEW_WHEEL_MM
            self.set("wheel_diameter", self.wheel_mm)

    def sample_gauges(self, elapsed_s: float) -> None:
        phase = self.cycle_phase
        running = self.state == RUNNING
        spinning = self.state in (RUNNING, IDLE)
        surface = self.setpoint("surface_speed", 45.0, 55.0)
        speed = surface * 60.0 / (math.pi * self.wheel_mm / 1000.0) if spinning else 0.0
        speed *= 1 + self.noise(0.001) if spinning else 1
        if running and 0.1 <= phase < 0.8:
            infeed, load = self.setpoint("infeed", 0.4, 2.0), 35.0 + 30.0 * self.rng.random()
        elif running and 0.8 <= phase < 0.95:
            infeed, load = 0.05, 12.0 + self.noise(1.0)
        else:
            infeed, load = 0.0, 4.0 if spinning else 0.0
        self.load_share = max(0.0, load) / 100.0
        if running and phase < 0.95:
            stock_um = self.setpoint("stock_um", 30.0, 60.0)
            deviation = stock_um * max(0.0, 0.95 - phase) / 0.95 + self.noise(0.3)
            self.set("size_deviation", round(deviation, 2))
        self.set("spindle_speed", round(speed, 0))
        self.set("wheel_surface_speed", round(math.pi * self.wheel_mm / 1000.0 * speed / 60.0, 2))
        self.set(
            "workhead_speed", round(self.setpoint("workhead", 300.0, 900.0), 1) if running else 0.0
        )
        self.set("infeed_rate", round(infeed, 3))
        self.set("spindle_load", round(max(0.0, load), 1))
        powered = self.state != OFF
        coolant = 21.0 + 7.0 * self.load_share if powered else 20.0
        self.set(
            "coolant_temperature", round(self.lag("coolant", coolant, 1500.0, elapsed_s, 22.0), 2)
        )
        spindle = 26.0 + 30.0 * self.load_share + (6.0 if spinning else 0.0) if powered else 21.0
        self.set(
            "spindle_temperature", round(self.lag("spindle", spindle, 700.0, elapsed_s, 30.0), 2)
        )
        vib = 0.25 + 1.1 * self.load_share + abs(self.noise(0.05)) if spinning else 0.02
        self.set("vibration_rms", round(vib, 3))


_STATES = {"AUTO_RUN": RUNNING, "READY": IDLE, "SETUP": SETUP, "ALARM": FAULT, "OFF": OFF}

MAP = OpcUaMap(
    (
        Variable(
            path="Status/OperatingMode",
            type=S,
            signal="machine_state",
            states=_STATES,
            meaning="Operating mode text: AUTO_RUN, READY, SETUP, ALARM or OFF",
        ),
        Variable(
            path="WheelSpindle/Speed",
            type=D,
            signal="spindle_speed",
            unit="rpm",
            meaning="Grinding wheel spindle speed",
        ),
        Variable(
            path="WheelSpindle/SurfaceSpeed",
            type=F,
            signal="wheel_surface_speed",
            unit="m/s",
            meaning="Wheel surface speed (from speed and wheel diameter)",
        ),
        Variable(
            path="WheelSpindle/Load",
            type=F,
            signal="spindle_load",
            unit="percent",
            meaning="Wheel spindle load, % of rated power",
        ),
        Variable(
            path="WheelSpindle/Temperature",
            type=F,
            signal="spindle_temperature",
            unit="degC",
            meaning="Wheel spindle bearing temperature",
        ),
        Variable(
            path="WheelSpindle/Vibration",
            type=F,
            signal="vibration_rms",
            unit="mm/s",
            meaning="Wheelhead vibration velocity RMS",
        ),
        Variable(
            path="Workhead/Speed",
            type=F,
            signal="workhead_speed",
            unit="rpm",
            meaning="Workhead (ring) speed",
        ),
        Variable(
            path="Infeed/Rate",
            type=D,
            signal="infeed_rate",
            unit="mm/min",
            meaning="Radial infeed rate of the wheel slide",
        ),
        Variable(
            path="Gauge/SizeDeviation",
            type=D,
            signal="size_deviation",
            unit="mm",
            meaning="In-process gauge: deviation from the nominal raceway size, in mm",
        ),
        Variable(
            path="Coolant/Temperature",
            type=F,
            signal="coolant_temperature",
            unit="degC",
            meaning="Coolant supply temperature",
        ),
        Variable(
            path="Dresser/DressingCount",
            type=U32,
            signal="dressing_count",
            meaning="Wheel dressings (lifetime)",
        ),
        Variable(
            path="Dresser/WheelDiameter",
            type=D,
            key="wheel_diameter",
            unit="mm",
            meaning="Current wheel diameter (vendor value, no canonical signal)",
        ),
        Variable(
            path="Production/PartCount",
            type=U32,
            signal="part_count",
            meaning="Rings ground (lifetime)",
        ),
        Variable(
            path="Production/GoodCount",
            type=U32,
            signal="good_count",
            meaning="Rings within tolerance",
        ),
        Variable(
            path="Production/RejectCount",
            type=U32,
            signal="reject_count",
            meaning="Rings outside the +/-4.5 um tolerance",
        ),
        Variable(
            path="Production/CycleTime",
            type=D,
            signal="cycle_time",
            unit="s",
            meaning="Duration of the last completed cycle",
        ),
        Variable(
            path="Production/Program",
            type=S,
            signal="program_name",
            meaning="Active grinding program",
        ),
        Variable(path="Alarm/Active", type=B, signal="alarm_active", meaning="Any alarm active"),
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
            path="Energy/Power",
            type=D,
            signal="active_power",
            unit="W",
            meaning="Machine active power, in W",
        ),
        Variable(
            path="Energy/Consumption",
            type=D,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy (lifetime)",
        ),
        Variable(
            path="Energy/OperatingHours",
            type=D,
            signal="run_hours",
            unit="h",
            meaning="Hours in automatic run",
        ),
    )
)

KIND = MachineKind(
    name="raceway_grinder",
    title="Bearing-ring internal raceway grinder (OPC UA)",
    segment="345",
    summary=(
        "A CNC internal grinder for the raceways of bearing inner and outer rings: a high-frequency "
        "wheel spindle (15,000-60,000 rpm, 45-55 m/s surface speed), an in-process size gauge, "
        "a diamond-roll dresser and 10-40 s cycles; OPC UA server on the machine's HMI PC."
    ),
    model=RacewayGrinder,
    address_map=MAP,
    notes=(
        "Gauge/SizeDeviation is in millimetres (the gauge amplifier's unit); the canonical "
        "size_deviation is in micrometres, so multiply by 1000.",
        "Energy/Power is in watts; the canonical active_power is in kW.",
        "The wheel keeps turning while the machine is READY (idle).",
    ),
)
