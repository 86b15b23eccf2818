"""Oil-injected screw air compressor (common utility), served over Modbus TCP."""

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
CO = partial(Register, table=Table.COIL, type=RegisterType.BOOL)
DI = partial(Register, table=Table.DISCRETE_INPUT, type=RegisterType.BOOL)
CDAB = WordOrder.CDAB
T = RegisterType

LOAD_MPA = 0.65
UNLOAD_MPA = 0.78


class AirCompressor(Machine):
    """Loads until the network reaches the unload pressure, unloads until it falls to the load one.

    ``running`` means the motor turns (loaded or unloaded), ``idle`` stopped in automatic standby
    after a long unloaded run, ``setup`` a service mode, ``off`` switched off.
    """

    kind = "air_compressor"
    behaviour = Behaviour(
        cycle_s=(600.0, 600.0),
        rated_power_kw=55.0,
        programs=("AUTO DUAL",),
        alarms=(
            Alarm(801, "HIGH DISCHARGE TEMP", (900.0, 2700.0)),
            Alarm(805, "MAIN MOTOR OVERLOAD", (600.0, 2400.0)),
            Alarm(812, "AIR FILTER BLOCKED", (300.0, 1200.0)),
            Alarm(820, "SEPARATOR DIFF PRESSURE HIGH", (600.0, 1800.0)),
            Alarm(833, "PHASE SEQUENCE ERROR", (300.0, 900.0)),
        ),
        running_dwell_s=4 * 3600.0,
        idle_dwell_s=900.0,
        setup_s=(600.0, 1800.0),
        batch_parts=(10_000, 10_000),
        mtbf_s=2 * 86400.0,
        off_share=0.1,
        off_dwell_s=4 * 3600.0,
        setup_share=0.05,
        idle_power_share=0.25,
        standby_power_kw=0.2,
        initial_weights=(0.85, 0.1, 0.0, 0.05),
    )
    counters = ("load_hours",)
    makes_parts = False
    capacity_m3_min = 9.8

    def setup_values(self) -> None:
        self.pressure = LOAD_MPA + 0.05
        self.loaded = True
        self.demand = 0.6
        self.load_s = 0.0

    def accumulate(self, dt_s: float) -> None:
        if self.state == RUNNING and self.loaded:
            self.load_s += dt_s

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        self.demand = min(0.95, max(0.2, self.demand + self.noise(0.01)))
        supply = 1.0 if running and self.loaded else 0.0
        # Network and receiver hold about 30 s of full flow per 0.1 MPa.
        self.pressure += (supply - self.demand) * elapsed_s * 0.1 / 30.0 if self.state != OFF else 0
        self.pressure = min(0.85, max(0.0, self.pressure))
        if running and self.pressure >= UNLOAD_MPA:
            self.loaded = False
        elif running and self.pressure <= LOAD_MPA:
            self.loaded = True
        if not running:
            self.loaded = False
        self.load_share = 1.0 if running and self.loaded else 0.0
        self.set("air_pressure", round(self.pressure, 4))
        flow = self.capacity_m3_min * (1 + self.noise(0.005)) if running and self.loaded else 0.0
        self.set("air_flow", round(flow, 3))
        self.set("compressor_loaded", running and self.loaded)
        self.set("motor_running", running)
        discharge = (88.0 if self.loaded else 78.0) if running else 25.0
        self.set(
            "discharge_temperature",
            round(self.lag("discharge", discharge, 240.0, elapsed_s, 80.0), 1),
        )
        current = (98.0 if self.loaded else 35.0) * (1 + self.noise(0.01)) if running else 0.0
        self.set("motor_current", round(current, 1))
        self.set("remote_start", self.state in (RUNNING, IDLE))
        self.set("load_hours", round(self.counts["load_hours"] + self.load_s / 3600.0, 3))

    def power_draw_kw(self) -> float:
        if self.state == RUNNING:
            return super().power_draw_kw()
        if self.state == OFF:
            return self.behaviour.standby_power_kw
        return 0.4 * (1 + self.noise(0.01))


_STATES = {0: OFF, 1: IDLE, 2: RUNNING, 3: SETUP, 4: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=256,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Operating state (0 off, 1 standby, 2 running, 3 service, 4 shutdown fault)",
        ),
        HR(address=257, type=T.BIT, bit=0, key="motor_running", meaning="Status: motor running"),
        HR(
            address=257,
            type=T.BIT,
            bit=1,
            signal="compressor_loaded",
            meaning="Status: loaded (1) or unloaded (0)",
        ),
        HR(
            address=257,
            type=T.BIT,
            bit=15,
            signal="alarm_active",
            meaning="Status: shutdown alarm active",
        ),
        HR(
            address=258,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(
            address=260,
            type=T.UINT16,
            signal="air_pressure",
            unit="bar",
            scale=0.01,
            meaning="Discharge (network) pressure, 0.01 bar",
        ),
        HR(
            address=261,
            type=T.INT16,
            signal="discharge_temperature",
            unit="degC",
            scale=0.1,
            meaning="Airend discharge temperature, 0.1 °C",
        ),
        HR(
            address=262,
            type=T.UINT16,
            signal="motor_current",
            unit="A",
            scale=0.1,
            meaning="Main motor current, 0.1 A",
        ),
        HR(
            address=263,
            type=T.UINT16,
            signal="active_power",
            unit="kW",
            scale=0.1,
            meaning="Input power, 0.1 kW",
        ),
        HR(
            address=264,
            type=T.FLOAT32,
            word_order=CDAB,
            signal="air_flow",
            unit="m**3/h",
            meaning="Free air delivery, m³/h (low word first)",
        ),
        HR(
            address=270,
            type=T.UINT32,
            word_order=CDAB,
            signal="run_hours",
            unit="h",
            meaning="Motor running hours (low word first)",
        ),
        HR(
            address=272,
            type=T.UINT32,
            word_order=CDAB,
            key="load_hours",
            unit="h",
            meaning="Loaded hours (low word first; no canonical signal)",
        ),
        HR(
            address=274,
            type=T.UINT32,
            word_order=CDAB,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy, kWh (low word first)",
        ),
        CO(address=0, key="remote_start", meaning="Remote start command (1 = start)"),
        DI(address=0, signal="compressor_loaded", meaning="Load solenoid energised"),
        DI(address=1, key="motor_running", meaning="Main contactor closed"),
    ),
    word_order_note=(
        "16-bit values are plain; 32-bit values (HR 264-275) are sent LOW WORD FIRST (CDAB)."
    ),
)

KIND = MachineKind(
    name="air_compressor",
    title="Oil-injected screw air compressor (Modbus TCP)",
    segment="common",
    summary=(
        "A 55 kW fixed-speed screw compressor with load/unload control between 0.65 and "
        "0.78 MPa (about 9.8 m³/min free air delivery) and a Modbus TCP controller."
    ),
    model=AirCompressor,
    address_map=MAP,
    notes=(
        "Registers are addressed from 256 (0x0100); registers 259 and 266-269 are reserved and "
        "read as 0.",
        "Pressure is in 0.01 bar (the canonical air_pressure is MPa: multiply by 0.001); "
        "free air delivery in m³/h (the canonical air_flow is m³/min).",
        "The loaded flag appears twice: status bit HR 257.1 and discrete input 0.",
        "Run hours and energy count in whole hours and kWh.",
    ),
)
