"""Raceway superfinishing machine (segment 345), served over OPC UA."""

from __future__ import annotations

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


class Superfinisher(Machine):
    """Oscillates a honing stone over the spinning ring: rough stage, finish stage, unload."""

    kind = "superfinisher"
    behaviour = Behaviour(
        cycle_s=(5.0, 20.0),
        rated_power_kw=7.5,
        programs=("6204-IR-SF", "6204-OR-SF", "6305-IR-SF", "6305-OR-SF"),
        alarms=(
            Alarm(1101, "油石磨损到限 Stone worn to limit", (300.0, 900.0)),
            Alarm(1305, "振荡器故障 Oscillator fault", (900.0, 3600.0)),
            Alarm(2002, "上下料机械手报警 Loader robot alarm"),
            Alarm(4003, "油压低 Oil pressure low"),
        ),
        running_dwell_s=1800.0,
        setup_s=(600.0, 1500.0),
        batch_parts=(300, 1500),
        mtbf_s=6 * 3600.0,
        idle_power_share=0.2,
        reject_rate=0.004,
    )

    def sample_gauges(self, elapsed_s: float) -> None:
        phase = self.cycle_phase
        running = self.state == RUNNING
        if running and phase < 0.6:
            pressure_bar = self.setpoint("rough_bar", 3.5, 6.0) + self.noise(0.05)
            frequency = self.setpoint("rough_hz", 18.0, 30.0)
        elif running and phase < 0.9:
            pressure_bar = self.setpoint("finish_bar", 1.5, 3.0) + self.noise(0.03)
            frequency = self.setpoint("finish_hz", 10.0, 18.0)
        else:
            pressure_bar, frequency = 0.0, 0.0
        stoning = pressure_bar > 0
        speed = self.setpoint("speed", 1500.0, 4000.0) * (1 + self.noise(0.002)) if stoning else 0.0
        self.load_share = min(1.0, pressure_bar / 6.0)
        self.set("stone_pressure", round(pressure_bar / 10.0, 4))
        self.set(
            "oscillation_frequency", round(frequency + (self.noise(0.05) if stoning else 0), 2)
        )
        self.set("spindle_speed", round(speed, 1))
        oil = 24.0 + 6.0 * self.load_share if self.state != OFF else 21.0
        self.set("coolant_temperature", round(self.lag("oil", oil, 1800.0, elapsed_s, 25.0), 2))


_STATES = {0: OFF, 10: IDLE, 20: SETUP, 30: RUNNING, 90: FAULT}

MAP = OpcUaMap(
    (
        Variable(
            path="Machine/State",
            type=I32,
            signal="machine_state",
            states=_STATES,
            meaning="State code (0 off, 10 ready, 20 setup, 30 automatic, 90 fault)",
        ),
        Variable(
            path="Machine/Program",
            type=S,
            signal="program_name",
            meaning="Active finishing program",
        ),
        Variable(
            path="Oscillation/Frequency",
            type=F,
            signal="oscillation_frequency",
            unit="Hz",
            meaning="Stone oscillation frequency",
        ),
        Variable(
            path="Stone/Pressure",
            type=D,
            signal="stone_pressure",
            unit="bar",
            meaning="Stone contact pressure, in bar",
        ),
        Variable(
            path="Workpiece/Speed",
            type=D,
            signal="spindle_speed",
            unit="rpm",
            meaning="Workpiece spindle speed",
        ),
        Variable(
            path="HoningOil/Temperature",
            type=F,
            signal="coolant_temperature",
            unit="degC",
            meaning="Honing oil temperature",
        ),
        Variable(
            path="Counters/Parts",
            type=U32,
            signal="part_count",
            meaning="Rings finished (lifetime)",
        ),
        Variable(path="Counters/Good", type=U32, signal="good_count", meaning="Good rings"),
        Variable(
            path="Counters/Rejects", type=U32, signal="reject_count", meaning="Rejected rings"
        ),
        Variable(
            path="Counters/LastCycleTime",
            type=D,
            signal="cycle_time",
            unit="s",
            meaning="Duration of the last completed cycle",
        ),
        Variable(path="Alarm/Active", type=B, signal="alarm_active", meaning="Any alarm active"),
        Variable(
            path="Alarm/Code",
            type=I32,
            signal="alarm_code",
            meaning="Code of the active alarm, 0 when none",
        ),
        Variable(
            path="Alarm/Text",
            type=S,
            signal="alarm_text",
            meaning="Message of the active alarm (Chinese / English)",
        ),
        Variable(
            path="Energy/ActivePower",
            type=F,
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
    name="superfinisher",
    title="Bearing raceway superfinishing machine (OPC UA)",
    segment="345",
    summary=(
        "A two-stage raceway superfinisher: the ring spins (1,500-4,000 rpm) while a honing stone "
        "oscillates at 10-30 Hz under 1.5-6 bar contact pressure; 5-20 s per ring."
    ),
    model=Superfinisher,
    address_map=MAP,
    notes=(
        "Stone/Pressure is in bar; the canonical stone_pressure is in MPa (1 bar = 0.1 MPa).",
        "Machine/State uses the vendor's codes 0/10/20/30/90, not 0-4.",
    ),
)
