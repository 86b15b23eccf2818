"""CNC gear hobbing machine (segment 345), served over Modbus TCP with word-swapped 32-bit values."""

from __future__ import annotations

from functools import partial

from simulators.addressmap import ModbusMap, Register, RegisterType, Table, WordOrder
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
DI = partial(Register, table=Table.DISCRETE_INPUT, type=RegisterType.BOOL)
CDAB = WordOrder.CDAB
T = RegisterType


class GearHobber(Machine):
    """Hobs spur and helical gears: the hob turns at hob speed, the table at hob speed / teeth."""

    kind = "gear_hobber"
    behaviour = Behaviour(
        cycle_s=(30.0, 180.0),
        rated_power_kw=30.0,
        programs=("Z23-M2.5-HELIX", "Z41-M3-SPUR", "Z17-M4-SPUR", "Z57-M2-HELIX"),
        alarms=(
            Alarm(101, "HOB SPINDLE OVERLOAD"),
            Alarm(214, "TABLE SERVO FAULT", (900.0, 3600.0)),
            Alarm(305, "HOB SHIFT AT LIMIT", (300.0, 900.0)),
            Alarm(402, "COOLANT LEVEL LOW", (120.0, 600.0)),
            Alarm(511, "DOOR INTERLOCK OPEN", (30.0, 120.0)),
        ),
        running_dwell_s=3000.0,
        setup_s=(1200.0, 3600.0),
        batch_parts=(40, 300),
        mtbf_s=6 * 3600.0,
        reject_rate=0.006,
    )
    cutting_share = 0.88

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        cutting = running and self.cycle_phase < self.cutting_share
        teeth = int(self.setpoint("teeth", 17, 60))
        hob = (
            self.setpoint("hob_speed", 200.0, 1500.0) * (1 + self.noise(0.002)) if cutting else 0.0
        )
        load = max(0.0, self.setpoint("load", 40.0, 80.0) + self.noise(2.5)) if cutting else 0.0
        self.load_share = load / 100.0
        table = hob / teeth
        self.set("hob_speed", round(hob))
        self.set("table_speed", round(table, 2))
        self.set("axial_feed", round(table * self.setpoint("feed_per_rev", 1.5, 4.0), 2))
        self.set("spindle_load", round(load, 1))
        self.set("feed_override", 100)
        powered = self.state != OFF
        coolant = 22.0 + 8.0 * self.load_share if powered else 20.0
        self.set(
            "coolant_temperature", round(self.lag("coolant", coolant, 1800.0, elapsed_s, 24.0), 1)
        )
        spindle = 27.0 + 25.0 * self.load_share if powered else 21.0
        self.set(
            "spindle_temperature", round(self.lag("spindle", spindle, 900.0, elapsed_s, 32.0), 1)
        )
        vib = 0.9 + hob / 1500.0 * 2.0 + abs(self.noise(0.1)) if cutting else 0.06
        self.set("vibration_rms", round(vib, 3))
        self.set("auto_mode", self.state in (RUNNING, IDLE))
        self.set("cycle_active", running)
        self.set("door_closed", self.state in (RUNNING, IDLE, FAULT))
        self.set("coolant_on", cutting)
        self.set("hydraulics_ready", powered)


_STATES = {0: OFF, 1: IDLE, 2: RUNNING, 3: SETUP, 4: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=0,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Machine state (0 power off, 1 ready, 2 auto cycle, 3 setup/jog, 4 alarm)",
        ),
        HR(address=1, type=T.BIT, bit=0, key="auto_mode", meaning="Status word: automatic mode"),
        HR(address=1, type=T.BIT, bit=1, key="cycle_active", meaning="Status word: cycle running"),
        HR(address=1, type=T.BIT, bit=2, key="door_closed", meaning="Status word: door closed"),
        HR(
            address=1, type=T.BIT, bit=3, signal="alarm_active", meaning="Status word: alarm active"
        ),
        HR(address=1, type=T.BIT, bit=4, key="coolant_on", meaning="Status word: coolant on"),
        HR(
            address=2,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(address=3, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=4, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=5, type=T.UINT16, constant=0x0213, meaning="Firmware version (0x0213 = 2.19)"),
        HR(
            address=10,
            type=T.UINT32,
            word_order=CDAB,
            signal="part_count",
            meaning="Part counter (lifetime)",
        ),
        HR(address=12, type=T.UINT16, signal="hob_speed", unit="rpm", meaning="Hob spindle speed"),
        HR(
            address=13,
            type=T.INT16,
            signal="table_speed",
            unit="rpm",
            scale=0.01,
            meaning="Work table speed, 0.01 rpm",
        ),
        HR(
            address=14,
            type=T.FLOAT32,
            word_order=CDAB,
            signal="axial_feed",
            unit="mm/min",
            meaning="Axial feed rate",
        ),
        HR(
            address=16,
            type=T.UINT16,
            signal="spindle_load",
            unit="percent",
            scale=0.1,
            meaning="Hob spindle load, 0.1 %",
        ),
        HR(
            address=17,
            type=T.UINT16,
            signal="feed_override",
            unit="percent",
            meaning="Feed override, %",
        ),
        HR(
            address=20,
            type=T.INT16,
            signal="coolant_temperature",
            unit="degC",
            scale=0.1,
            meaning="Coolant temperature, 0.1 °C",
        ),
        HR(
            address=21,
            type=T.INT16,
            signal="spindle_temperature",
            unit="degC",
            scale=0.1,
            meaning="Hob spindle bearing temperature, 0.1 °C",
        ),
        HR(
            address=22,
            type=T.FLOAT32,
            word_order=CDAB,
            signal="vibration_rms",
            unit="mm/s",
            meaning="Hob head vibration velocity RMS",
        ),
        HR(
            address=24,
            type=T.UINT32,
            word_order=CDAB,
            signal="cycle_time",
            unit="ms",
            meaning="Last cycle time, ms",
        ),
        HR(
            address=30,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Active program name, 16 ASCII characters",
        ),
        HR(
            address=40,
            type=T.UINT32,
            word_order=CDAB,
            signal="run_hours",
            unit="h",
            scale=0.1,
            meaning="Cutting hours, 0.1 h",
        ),
        HR(
            address=42,
            type=T.INT32,
            word_order=CDAB,
            signal="active_power",
            unit="W",
            meaning="Active power, W",
        ),
        HR(
            address=44,
            type=T.UINT32,
            word_order=CDAB,
            signal="active_energy",
            unit="kWh",
            scale=0.1,
            meaning="Imported energy, 0.1 kWh",
        ),
        DI(address=0, key="door_closed", meaning="Door closed switch"),
        DI(address=1, key="hydraulics_ready", meaning="Hydraulic unit pressure OK"),
    ),
    word_order_note=(
        "All 32-bit values (integers and floats) are sent LOW WORD FIRST (CDAB word order); "
        "bytes within a word are big-endian."
    ),
)

KIND = MachineKind(
    name="gear_hobber",
    title="CNC gear hobbing machine (Modbus TCP)",
    segment="345",
    summary=(
        "A six-axis CNC gear hobbing machine for spur and helical gears (hob 200-1,500 rpm, "
        "30-180 s per gear) with a Modbus TCP option card on its PLC."
    ),
    model=GearHobber,
    address_map=MAP,
    notes=(
        "Holding registers 6-9, 18-19, 26-29 and 38-39 are reserved and read as 0, so the whole "
        "map 0-45 reads in one request.",
        "Registers 3 and 4 are reserved and read as 0.",
    ),
)
