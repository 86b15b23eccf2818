"""Robotic MIG/MAG welding cell (segment 367), served over Modbus TCP."""

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
CO = partial(Register, table=Table.COIL, type=RegisterType.BOOL)
T = RegisterType

_SEAMS = 6
"""Seams per part; the arc burns for the first 60 % of each seam's slot, then the robot moves."""


class WeldingCell(Machine):
    """Welds a subframe bracket in six seams; current, voltage and wire feed exist only under arc."""

    kind = "welding_cell"
    behaviour = Behaviour(
        cycle_s=(30.0, 120.0),
        rated_power_kw=28.0,
        programs=(
            "JOB-012 SUBFRAME-L",
            "JOB-013 SUBFRAME-R",
            "JOB-021 SEAT-RAIL",
            "JOB-030 AXLE-BKT",
        ),
        alarms=(
            Alarm(701, "ARC START FAILURE", (30.0, 180.0)),
            Alarm(702, "WIRE STICK DETECTED", (60.0, 300.0)),
            Alarm(715, "SHIELD GAS FLOW LOW"),
            Alarm(730, "ROBOT COLLISION DETECTED", (900.0, 3600.0)),
            Alarm(744, "TORCH CLEANING OVERDUE", (120.0, 600.0)),
        ),
        running_dwell_s=2400.0,
        setup_s=(900.0, 2400.0),
        batch_parts=(50, 400),
        mtbf_s=3 * 3600.0,
        idle_power_share=0.1,
        reject_rate=0.012,
    )
    counters = ("part_count", "good_count", "reject_count", "arc_time")

    def _arc_on(self) -> bool:
        if self.state != RUNNING or self.cycle_phase >= 0.95:
            return False
        position = self.cycle_phase / 0.95 * _SEAMS
        return position - int(position) < 0.6

    def sample_gauges(self, elapsed_s: float) -> None:
        arc = self._arc_on()
        if arc:
            current = self.setpoint("current", 150.0, 350.0) + self.noise(4.0)
            voltage = 14.0 + 0.05 * current + self.noise(0.3)
            wire = self.setpoint("wire", 5.0, 15.0) + self.noise(0.1)
        else:
            current = voltage = wire = 0.0
        self.load_share = current / 350.0
        self.set("welding_current", round(current, 1))
        self.set("welding_voltage", round(voltage, 1))
        self.set("wire_feed_speed", round(wire, 1))
        gas = self.setpoint("gas", 14.0, 20.0) + self.noise(0.2) if arc else 0.0
        self.set("gas_flow", round(gas, 1))
        self.set("arc_on", arc)
        self.set("gas_ok", self.state != FAULT or self.values.get("alarm_code") != 715)
        self.set("robot_in_home", self.state != RUNNING)
        self.set("arc_time", round(self.counts["arc_time"], 3))

    def accumulate(self, dt_s: float) -> None:
        if self._arc_on():
            self.counts["arc_time"] += dt_s


_STATES = {0: OFF, 2: IDLE, 3: RUNNING, 4: SETUP, 6: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=0,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Cell state (0 off, 2 waiting for parts, 3 welding program, 4 teach, 6 fault)",
        ),
        HR(
            address=1,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(address=2, type=T.BIT, bit=0, key="arc_on", meaning="Status: arc on"),
        HR(address=2, type=T.BIT, bit=1, key="gas_ok", meaning="Status: shielding gas OK"),
        HR(address=2, type=T.BIT, bit=7, signal="alarm_active", meaning="Status: alarm active"),
        HR(
            address=4,
            type=T.UINT16,
            signal="welding_current",
            unit="A",
            scale=0.1,
            meaning="Welding current, 0.1 A (0 without arc)",
        ),
        HR(
            address=5,
            type=T.UINT16,
            signal="welding_voltage",
            unit="V",
            scale=0.1,
            meaning="Arc voltage, 0.1 V",
        ),
        HR(
            address=6,
            type=T.UINT16,
            signal="wire_feed_speed",
            unit="m/min",
            scale=0.1,
            meaning="Wire feed speed, 0.1 m/min",
        ),
        HR(
            address=7,
            type=T.UINT16,
            signal="gas_flow",
            unit="L/min",
            scale=0.1,
            meaning="Shielding gas flow, 0.1 L/min",
        ),
        HR(
            address=8,
            type=T.UINT64,
            signal="arc_time",
            unit="ms",
            meaning="Arc-on time (lifetime), ms, 64 bit",
        ),
        HR(address=12, type=T.UINT32, signal="part_count", meaning="Parts welded (lifetime)"),
        HR(address=14, type=T.UINT32, signal="good_count", meaning="Parts passed seam tracking"),
        HR(address=16, type=T.UINT32, signal="reject_count", meaning="Parts flagged for repair"),
        HR(
            address=18,
            type=T.UINT16,
            signal="cycle_time",
            unit="s",
            scale=0.1,
            meaning="Last cycle time, 0.1 s",
        ),
        HR(
            address=20,
            type=T.FLOAT32,
            signal="active_power",
            unit="kW",
            meaning="Active power (power source and robot)",
        ),
        HR(
            address=22,
            type=T.UINT32,
            signal="active_energy",
            unit="kWh",
            scale=0.1,
            meaning="Imported energy, 0.1 kWh",
        ),
        HR(
            address=24,
            type=T.STRING,
            length=10,
            signal="program_name",
            meaning="Active job, 20 ASCII characters",
        ),
        CO(address=0, key="robot_in_home", meaning="Robot in home position"),
        CO(address=1, key="arc_on", meaning="Arc on (mirror of status bit 0)"),
    ),
)

KIND = MachineKind(
    name="welding_cell",
    title="Robotic MIG/MAG welding cell (Modbus TCP)",
    segment="367",
    summary=(
        "A six-axis robot with a pulsed MIG/MAG power source welding subframes and brackets "
        "(150-350 A, 18-30 V, six seams per part, 30-120 s per part); the cell PLC exposes a "
        "Modbus TCP map."
    ),
    model=WeldingCell,
    address_map=MAP,
    notes=(
        "Register 3 is reserved and reads as 0: 0-33 reads as one block.",
        "Arc time (HR 8-11) is an unsigned 64-bit integer in milliseconds, high word first.",
        "Current, voltage, wire feed and gas flow read 0 between seams.",
    ),
)
