"""Servo stamping press (segment 367), served over Modbus TCP, with a 16-bit stroke counter that wraps."""

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

CAPACITY_KN = 6300.0
"""A 630-tonne-class press (about 6.2 MN)."""


class ServoPress(Machine):
    """Stamps one part per stroke; force, die height and stroke rate depend on the die."""

    kind = "servo_press"
    behaviour = Behaviour(
        cycle_s=(1.0, 6.0),
        rated_power_kw=110.0,
        programs=("DIE-BRKT-0417", "DIE-RAIL-2203", "DIE-CROSS-0918", "DIE-HINGE-1120"),
        alarms=(
            Alarm(11, "OVERLOAD PROTECTION TRIPPED", (600.0, 2400.0)),
            Alarm(23, "LIGHT CURTAIN INTERRUPTED", (20.0, 120.0)),
            Alarm(37, "SERVO DRIVE OVERCURRENT", (900.0, 3600.0)),
            Alarm(42, "LUBRICATION PRESSURE LOW"),
            Alarm(55, "DIE CLAMP NOT LOCKED", (120.0, 600.0)),
        ),
        running_dwell_s=1800.0,
        idle_dwell_s=420.0,
        setup_s=(900.0, 2700.0),
        batch_parts=(800, 6000),
        mtbf_s=5 * 3600.0,
        idle_power_share=0.08,
        reject_rate=0.003,
    )
    counters = ("part_count", "good_count", "reject_count", "stroke_count")

    def setup_values(self) -> None:
        self.set("press_force", 0.0)

    def next_cycle_s(self) -> float:
        return 60.0 / self._stroke_rate()

    def _stroke_rate(self) -> float:
        return round(self.setpoint("spm", 10.0, 60.0), 1)

    def on_cycle(self, is_good: bool) -> None:
        self.count("stroke_count")
        force = CAPACITY_KN * self.setpoint("force_share", 0.4, 0.85) * (1 + self.noise(0.01))
        self.set("press_force", round(force, 1))

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        self.set("stroke_rate", self._stroke_rate() if running else 0.0)
        self.set("die_height", round(self.setpoint("die_height", 350.0, 550.0), 2))
        share = self.setpoint("force_share", 0.4, 0.85)
        self.load_share = 0.3 + 0.6 * share if running else 0.0
        if running:
            current = 60.0 + 260.0 * share * (0.8 + 0.4 * self.rng.random())
        elif self.state == OFF:
            current = 0.0
        else:
            current = 8.0 + self.noise(0.3)
        self.set("motor_current", round(max(0.0, current), 1))
        motor = 30.0 + 35.0 * self.load_share if self.state != OFF else 20.0
        self.set("motor_temperature", round(self.lag("motor", motor, 1800.0, elapsed_s, 35.0), 1))
        self.set("fan_speed", self._fan_speed(motor))
        self.set("die_clamped", self.state != SETUP)
        self.set("light_curtain_ok", self.state != FAULT or self.values.get("alarm_code") != 23)

    def _fan_speed(self, motor_temperature: float) -> float:
        """The drive cabinet fan, r/s: off with the press, faster as the servo motor warms."""
        if self.state == OFF:
            return 0.0
        return round(25.0 + 0.5 * max(0.0, motor_temperature - 30.0), 2)


_STATES = {0: OFF, 1: SETUP, 2: IDLE, 3: RUNNING, 8: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=0,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Operation mode (0 off, 1 inch/die change, 2 ready, 3 continuous, 8 fault)",
        ),
        HR(address=1, type=T.BIT, bit=0, signal="alarm_active", meaning="Status: alarm active"),
        HR(address=1, type=T.BIT, bit=1, key="die_clamped", meaning="Status: die clamps locked"),
        HR(
            address=1,
            type=T.BIT,
            bit=2,
            key="light_curtain_ok",
            meaning="Status: light curtain clear",
        ),
        HR(
            address=2,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active fault number, 0 when none",
        ),
        HR(
            address=3,
            type=T.UINT16,
            signal="stroke_count",
            wraps=True,
            meaning="Stroke counter, 16 bit: rolls over from 65535 to 0",
        ),
        HR(address=4, type=T.UINT32, signal="part_count", meaning="Part counter (lifetime)"),
        HR(
            address=6,
            type=T.UINT16,
            signal="stroke_rate",
            unit="1/min",
            scale=0.1,
            meaning="Strokes per minute, 0.1 spm",
        ),
        HR(address=7, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(
            address=8,
            type=T.FLOAT32,
            signal="press_force",
            unit="kN",
            meaning="Peak force of the last stroke",
        ),
        HR(
            address=10,
            type=T.INT32,
            signal="die_height",
            unit="mm",
            scale=0.01,
            meaning="Shut height, 0.01 mm",
        ),
        HR(
            address=12,
            type=T.UINT16,
            signal="motor_current",
            unit="A",
            scale=0.1,
            meaning="Servo motor current (RMS over 1 s), 0.1 A",
        ),
        HR(
            address=13,
            type=T.INT16,
            key="motor_temperature",
            unit="degC",
            scale=0.1,
            meaning="Servo motor winding temperature, 0.1 °C (no canonical signal)",
        ),
        HR(
            address=14,
            type=T.UINT16,
            signal="cycle_time",
            unit="ms",
            meaning="Time of the last stroke, ms",
        ),
        HR(address=15, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(
            address=16,
            type=T.FLOAT32,
            signal="active_power",
            unit="kW",
            meaning="Active power (servo DC bus and hydraulics)",
        ),
        HR(
            address=18,
            type=T.UINT32,
            signal="active_energy",
            unit="kWh",
            scale=0.01,
            meaning="Imported energy, 0.01 kWh",
        ),
        HR(
            address=20,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Die number in use, 16 ASCII characters",
        ),
        HR(
            address=28,
            type=T.UINT32,
            signal="run_hours",
            unit="h",
            scale=0.01,
            meaning="Continuous-mode hours, 0.01 h",
        ),
        HR(
            address=30,
            type=T.UINT16,
            key="fan_speed",
            unit="rps",
            scale=0.01,
            meaning="Drive cabinet cooling fan speed, 0.01 r/s (no canonical signal)",
        ),
    ),
)

KIND = MachineKind(
    name="servo_press",
    title="Servo stamping press (Modbus TCP)",
    segment="367",
    summary=(
        "A 630-tonne straight-side servo press for body and chassis brackets (10-60 strokes/min, "
        "one part per stroke) whose controller exposes a Modbus TCP register block."
    ),
    model=ServoPress,
    address_map=MAP,
    notes=(
        "Holding registers 0-29 form one block without holes: one read request returns every "
        "value.",
        "The stroke counter (HR 3) is 16 bit and rolls over from 65535 to 0; the part counter "
        "(HR 4-5) is 32 bit. The simulator's ground truth records both the register value and "
        "the true number of strokes.",
    ),
)
