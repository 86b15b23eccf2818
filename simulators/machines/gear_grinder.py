"""Generating gear grinding machine (segment 345), served over Modbus TCP."""

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
DI = partial(Register, table=Table.DISCRETE_INPUT, type=RegisterType.BOOL)
T = RegisterType


class GearGrinder(Machine):
    """Grinds hardened gears with a threaded wheel: roughing pass, finishing pass, dressing."""

    kind = "gear_grinder"
    behaviour = Behaviour(
        cycle_s=(60.0, 300.0),
        rated_power_kw=40.0,
        programs=("Z31-M2.5-FIN", "Z47-M2-FIN", "Z29-M3.5-FIN"),
        alarms=(
            Alarm(1301, "WHEEL SPINDLE OVERTEMP", (600.0, 1800.0)),
            Alarm(1310, "DRESSER SPINDLE FAULT", (900.0, 2700.0)),
            Alarm(1422, "MESHING PROBE NO SIGNAL"),
            Alarm(1505, "COOLANT FILTER BLOCKED"),
            Alarm(1590, "FIRE SUPPRESSION TRIGGERED", (1800.0, 7200.0)),
        ),
        running_dwell_s=3600.0,
        setup_s=(1800.0, 3600.0),
        batch_parts=(30, 200),
        mtbf_s=8 * 3600.0,
        idle_power_share=0.28,
    )
    counters = ("part_count", "good_count", "reject_count", "dressing_count")

    def setup_values(self) -> None:
        self.final_deviation_um = 0.0
        self.set("size_deviation", 0.0)
        self.set("stock_removal", 0.0)

    def judge_part(self) -> bool:
        self.final_deviation_um = round(self.noise(1.2), 1)
        return abs(self.final_deviation_um) <= 4.0

    def on_cycle(self, is_good: bool) -> None:
        self.set("size_deviation", self.final_deviation_um)
        self.set("stock_removal", round(self.setpoint("stock", 0.05, 0.15) + self.noise(0.004), 4))
        if self.counts["part_count"] % 5 == 0:
            self.count("dressing_count")

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        grinding = running and self.cycle_phase < 0.9
        spinning = self.state in (RUNNING, IDLE)
        speed = (
            self.setpoint("wheel_rpm", 3000.0, 6000.0) * (1 + self.noise(0.001))
            if spinning
            else 0.0
        )
        load = (
            (55.0 if self.cycle_phase < 0.6 else 25.0) + self.noise(3.0)
            if grinding
            else 3.0 * spinning
        )
        self.load_share = max(0.0, load) / 100.0
        wheel_mm = self.setpoint("wheel_mm", 250.0, 300.0)
        self.set("spindle_speed", round(speed, 1))
        self.set("wheel_surface_speed", round(3.141592653589793 * wheel_mm / 1000 * speed / 60, 2))
        self.set("spindle_load", round(max(0.0, load), 1))
        powered = self.state != OFF
        coolant = 20.0 + 5.0 * self.load_share if powered else 19.0
        self.set(
            "coolant_temperature", round(self.lag("coolant", coolant, 2400.0, elapsed_s, 21.0), 1)
        )
        spindle = 28.0 + 22.0 * self.load_share if powered else 20.0
        self.set(
            "spindle_temperature", round(self.lag("spindle", spindle, 900.0, elapsed_s, 30.0), 1)
        )
        self.set(
            "vibration_rms",
            round(0.4 + 1.6 * self.load_share + abs(self.noise(0.05)), 2) if spinning else 0.0,
        )
        self.set("auto_mode", self.state in (RUNNING, IDLE))
        self.set("coolant_on", grinding)
        self.set("guard_closed", self.state != SETUP)
        self.set("coolant_flow_ok", powered)


_STATES = {0: OFF, 1: RUNNING, 2: IDLE, 3: SETUP, 5: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=100,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Machine state (0 off, 1 automatic, 2 ready, 3 setup, 5 alarm)",
        ),
        HR(
            address=101,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(
            address=102,
            type=T.BIT,
            bit=0,
            signal="alarm_active",
            meaning="Status word: alarm active",
        ),
        HR(address=102, type=T.BIT, bit=1, key="auto_mode", meaning="Status word: automatic mode"),
        HR(address=102, type=T.BIT, bit=2, key="coolant_on", meaning="Status word: coolant on"),
        HR(address=103, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=104, type=T.UINT32, signal="part_count", meaning="Gears ground (lifetime)"),
        HR(address=106, type=T.UINT32, signal="good_count", meaning="Gears within tolerance"),
        HR(address=108, type=T.UINT32, signal="reject_count", meaning="Gears rejected"),
        HR(
            address=110,
            type=T.FLOAT32,
            signal="spindle_speed",
            unit="rpm",
            meaning="Grinding wheel speed",
        ),
        HR(
            address=112,
            type=T.FLOAT32,
            signal="wheel_surface_speed",
            unit="m/s",
            meaning="Wheel surface speed",
        ),
        HR(
            address=114,
            type=T.UINT16,
            signal="spindle_load",
            unit="percent",
            scale=0.1,
            meaning="Wheel spindle load, 0.1 %",
        ),
        HR(
            address=115,
            type=T.INT16,
            signal="coolant_temperature",
            unit="degC",
            scale=0.1,
            meaning="Coolant (grinding oil) temperature, 0.1 °C",
        ),
        HR(
            address=116,
            type=T.INT16,
            signal="spindle_temperature",
            unit="degC",
            scale=0.1,
            meaning="Wheel spindle temperature, 0.1 °C",
        ),
        HR(
            address=117,
            type=T.UINT16,
            signal="vibration_rms",
            unit="mm/s",
            scale=0.01,
            meaning="Wheelhead vibration velocity RMS, 0.01 mm/s",
        ),
        HR(
            address=118,
            type=T.FLOAT32,
            signal="stock_removal",
            unit="mm",
            meaning="Stock removed per flank in the last cycle",
        ),
        HR(
            address=120,
            type=T.INT32,
            signal="size_deviation",
            unit="um",
            scale=0.1,
            meaning="Measured over-ball size deviation of the last gear, 0.1 µm",
        ),
        HR(address=122, type=T.UINT32, signal="dressing_count", meaning="Wheel dressings"),
        HR(
            address=124,
            type=T.UINT16,
            signal="cycle_time",
            unit="s",
            scale=0.1,
            meaning="Last cycle time, 0.1 s",
        ),
        HR(address=125, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=126, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=127, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        HR(address=128, type=T.FLOAT32, signal="active_power", unit="kW", meaning="Active power"),
        HR(
            address=130,
            type=T.FLOAT64,
            signal="active_energy",
            unit="kWh",
            meaning="Imported energy (lifetime), IEEE 754 double",
        ),
        HR(
            address=134,
            type=T.UINT32,
            signal="run_hours",
            unit="h",
            scale=0.01,
            meaning="Grinding hours, 0.01 h",
        ),
        HR(
            address=136,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Active program, 16 ASCII characters",
        ),
        DI(address=0, key="guard_closed", meaning="Wheel guard closed"),
        DI(address=1, key="coolant_flow_ok", meaning="Coolant flow switch"),
    ),
)

KIND = MachineKind(
    name="gear_grinder",
    title="Generating gear grinding machine (Modbus TCP)",
    segment="345",
    summary=(
        "A threaded-wheel generating grinder for hardened cylindrical gears (wheel 3,000-6,000 rpm, "
        "1-5 min per gear) with in-machine measurement and a Modbus TCP interface on its PLC."
    ),
    model=GearGrinder,
    address_map=MAP,
    notes=(
        "Holding registers 100-143 form one block without holes (125-127 are reserved and read "
        "as 0): one read request of 44 registers returns every process value.",
        "Registers below 100 do not exist (exception 02).",
        "The wheel keeps turning while the machine is ready (idle).",
    ),
)
