"""Aluminium high-pressure die-casting cell (segment 367), served over Modbus TCP."""

from __future__ import annotations

from functools import partial

from simulators.addressmap import ModbusMap, Register, RegisterType, Table
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

HR = partial(Register, table=Table.HOLDING)
T = RegisterType

CLAMP_TF = 800.0
"""An 800-tonne cold-chamber machine."""


class DieCastingCell(Machine):
    """Close, shoot, intensify, cool, open, extract and spray: one casting per shot."""

    kind = "die_casting_cell"
    behaviour = Behaviour(
        cycle_s=(40.0, 120.0),
        rated_power_kw=75.0,
        programs=("GEARBOX-HSG-A3", "MOTOR-END-CAP", "STEER-KNUCKLE-L", "OIL-PAN-B2"),
        alarms=(
            Alarm(601, "DIE TEMPERATURE LOW", (600.0, 1800.0)),
            Alarm(612, "SHOT ACCUMULATOR PRESSURE LOW"),
            Alarm(620, "LADLE ROBOT FAULT"),
            Alarm(633, "EJECTOR NOT RETURNED", (120.0, 600.0)),
            Alarm(645, "HYDRAULIC OIL TEMP HIGH", (900.0, 2700.0)),
        ),
        running_dwell_s=2400.0,
        setup_s=(2400.0, 5400.0),
        batch_parts=(200, 1200),
        mtbf_s=4 * 3600.0,
        idle_power_share=0.3,
        reject_rate=0.035,
    )
    counters = ("part_count", "good_count", "reject_count", "shot_count")

    def setup_values(self) -> None:
        self.set("shot_velocity", 0.0)
        self.set("intensification_pressure", 0.0)

    def on_cycle(self, is_good: bool) -> None:
        self.count("shot_count")
        velocity = self.setpoint("velocity", 3.0, 6.0) + self.noise(0.05)
        self.set("shot_velocity", round(velocity, 2))
        pressure = self.setpoint("pressure", 60.0, 100.0) + self.noise(0.8)
        self.set("intensification_pressure", round(pressure, 1))

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        phase = self.cycle_phase
        locked = running and 0.05 <= phase < 0.7
        clamp_tf = CLAMP_TF * self.setpoint("clamp_share", 0.75, 0.95) if locked else 0.0
        self.set("clamping_force", round(clamp_tf * 9.80665 * (1 + self.noise(0.002)), 0))
        self.load_share = 0.9 if running and phase < 0.2 else (0.45 if running else 0.0)
        hot = self.state != OFF
        melt = self.setpoint("melt", 655.0, 690.0) if hot else 640.0
        self.set(
            "melt_temperature",
            round(self.lag("melt", melt, 900.0, elapsed_s, melt) + self.noise(0.4), 1),
        )
        die_target = 230.0 if running else (170.0 if hot else 40.0)
        die = self.lag("die", die_target, 1200.0, elapsed_s, 200.0)
        self.set("die_temperature", round(die + (8.0 * (1 - phase) if running else 0.0), 1))


_STATES = {0: OFF, 1: IDLE, 2: RUNNING, 3: SETUP, 4: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=1000,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Cell state (0 off, 1 manual/ready, 2 automatic, 3 die change, 4 alarm)",
        ),
        HR(
            address=1001,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(
            address=1002,
            type=T.STRING,
            length=12,
            signal="alarm_text",
            meaning="Active alarm text, 24 ASCII characters, empty when none",
        ),
        HR(address=1014, type=T.BIT, bit=0, signal="alarm_active", meaning="Flags: alarm active"),
        HR(
            address=1040,
            type=T.UINT16,
            signal="clamping_force",
            unit="tf",
            meaning="Actual clamping force, tonnes-force",
        ),
        HR(
            address=1041,
            type=T.INT16,
            signal="shot_velocity",
            unit="m/s",
            scale=0.01,
            meaning="Second-phase shot velocity of the last shot, 0.01 m/s",
        ),
        HR(
            address=1042,
            type=T.INT16,
            signal="intensification_pressure",
            unit="bar",
            meaning="Intensification pressure of the last shot, bar",
        ),
        HR(
            address=1043,
            type=T.INT16,
            signal="melt_temperature",
            unit="degC",
            scale=0.1,
            meaning="Holding furnace melt temperature, 0.1 °C",
        ),
        HR(
            address=1044,
            type=T.UINT16,
            signal="die_temperature",
            unit="K",
            scale=0.1,
            meaning="Die temperature (moving half), 0.1 K",
        ),
        HR(address=1045, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(
            address=1046,
            type=T.UINT16,
            signal="cycle_time",
            unit="s",
            scale=0.1,
            meaning="Last cycle time, 0.1 s",
        ),
        HR(
            address=1047,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Die (part) name, 16 ASCII characters",
        ),
        HR(address=1080, type=T.UINT32, signal="shot_count", meaning="Shot counter (lifetime)"),
        HR(address=1082, type=T.UINT32, signal="part_count", meaning="Castings (lifetime)"),
        HR(address=1084, type=T.UINT32, signal="good_count", meaning="Good castings"),
        HR(
            address=1086,
            type=T.UINT32,
            signal="reject_count",
            meaning="Scrap castings (X-ray / leak test)",
        ),
        HR(
            address=1088,
            type=T.FLOAT32,
            signal="active_power",
            unit="kW",
            meaning="Active power of the cell",
        ),
        HR(
            address=1090,
            type=T.FLOAT64,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy (lifetime), IEEE 754 double",
        ),
    ),
)

KIND = MachineKind(
    name="die_casting_cell",
    title="Aluminium die-casting cell (Modbus TCP)",
    segment="367",
    summary=(
        "An 800-tonne cold-chamber aluminium die-casting cell with ladle, extraction and spray "
        "robots (melt 650-700 °C, 40-120 s per shot, one casting per shot) and a Modbus TCP "
        "register map on the cell PLC."
    ),
    model=DieCastingCell,
    address_map=MAP,
    notes=(
        "Three register blocks: 1000-1014 (status), 1040-1054 (process), 1080-1093 (counters "
        "and energy). The 25 registers between blocks are reserved and read as 0, so a read may "
        "span them.",
        "Die temperature is in 0.1 K (subtract 273.15 for °C); clamping force in tonnes-force "
        "(1 tf = 9.80665 kN); intensification pressure in bar (1 bar = 0.1 MPa).",
        "Shot velocity and intensification pressure hold the values of the last shot.",
    ),
)
