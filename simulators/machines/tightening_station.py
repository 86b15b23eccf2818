"""Assembly station with an electric tightening tool (segment 367), served over Modbus TCP."""

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


class TighteningStation(Machine):
    """Runs down one bolt per cycle with torque control and angle monitoring; judges OK or NOK."""

    kind = "tightening_station"
    behaviour = Behaviour(
        cycle_s=(4.0, 12.0),
        rated_power_kw=1.5,
        programs=("PSET01 M8-25NM", "PSET02 M10-45NM", "PSET05 M12-85NM", "PSET07 M14-140NM"),
        alarms=(
            Alarm(1, "TOOL NOT CONNECTED", (60.0, 300.0)),
            Alarm(4, "TRANSDUCER CALIBRATION DUE", (300.0, 900.0)),
            Alarm(9, "MOTOR TEMPERATURE HIGH", (300.0, 1200.0)),
            Alarm(12, "SOCKET TRAY ERROR", (30.0, 120.0)),
        ),
        running_dwell_s=1500.0,
        idle_dwell_s=240.0,
        setup_s=(300.0, 900.0),
        batch_parts=(200, 1500),
        mtbf_s=8 * 3600.0,
        idle_power_share=0.2,
        standby_power_kw=0.05,
        reject_rate=0.012,
    )

    def setup_values(self) -> None:
        self.set("tightening_torque", 0.0)
        self.set("tightening_angle", 0.0)
        self.set("tightening_ok", True)
        self.set("last_nok", False)

    def _target_nm(self) -> float:
        name = self.behaviour.programs[self.program]
        return float(name.rsplit("-", 1)[1].removesuffix("NM"))

    def judge_part(self) -> bool:
        target = self._target_nm()
        self.torque = round(target * (1 + self.noise(0.012)), 2)
        self.angle = round(self.setpoint("angle", 30.0, 120.0) * (1 + self.noise(0.05)), 1)
        if self.rng.random() < self.behaviour.reject_rate:
            self.angle = round(self.angle * self.rng.choice((0.4, 1.9)), 1)  # stripped or short
        torque_ok = abs(self.torque - target) <= 0.05 * target
        angle_ok = (
            0.6 * self.setpoint("angle", 30.0, 120.0)
            <= self.angle
            <= (1.5 * self.setpoint("angle", 30.0, 120.0))
        )
        return torque_ok and angle_ok

    def on_cycle(self, is_good: bool) -> None:
        self.set("tightening_torque", self.torque)
        self.set("tightening_angle", self.angle)
        self.set("tightening_ok", is_good)
        self.set("last_nok", not is_good)

    def sample_gauges(self, elapsed_s: float) -> None:
        rundown = self.state == RUNNING and 0.3 <= self.cycle_phase < 0.6
        self.load_share = 0.8 if rundown else 0.05
        self.set("tool_enabled", self.state in (RUNNING, IDLE))


_STATES = {0: OFF, 1: IDLE, 2: RUNNING, 3: SETUP, 4: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=0,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Station state (0 off, 1 waiting, 2 tightening, 3 setup, 4 fault)",
        ),
        HR(
            address=1,
            type=T.BIT,
            bit=0,
            signal="tightening_ok",
            meaning="Result: last joint OK (1) or NOK (0)",
        ),
        HR(address=1, type=T.BIT, bit=1, key="last_nok", meaning="Result: last joint NOK"),
        HR(address=1, type=T.BIT, bit=2, key="tool_enabled", meaning="Tool enabled"),
        HR(address=1, type=T.BIT, bit=3, signal="alarm_active", meaning="Alarm active"),
        HR(
            address=2,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active error number, 0 when none",
        ),
        HR(
            address=4,
            type=T.UINT16,
            signal="tightening_torque",
            unit="N*m",
            scale=0.01,
            meaning="Final torque of the last joint, 0.01 N·m",
        ),
        HR(
            address=5,
            type=T.INT16,
            signal="tightening_angle",
            unit="deg",
            scale=0.1,
            meaning="Final angle of the last joint, 0.1°",
        ),
        HR(address=6, type=T.UINT16, signal="cycle_time", unit="ms", meaning="Last cycle time, ms"),
        HR(address=8, type=T.UINT32, signal="part_count", meaning="Joints tightened (lifetime)"),
        HR(address=10, type=T.UINT32, signal="good_count", meaning="OK joints"),
        HR(address=12, type=T.UINT32, signal="reject_count", meaning="NOK joints"),
        HR(
            address=14,
            type=T.FLOAT32,
            signal="active_power",
            unit="kW",
            meaning="Controller and tool active power",
        ),
        HR(
            address=16,
            type=T.UINT32,
            signal="active_energy",
            unit="Wh",
            meaning="Imported energy, Wh",
        ),
        HR(
            address=20,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Active parameter set, 16 ASCII characters",
        ),
    ),
)

KIND = MachineKind(
    name="tightening_station",
    title="Assembly station with an electric tightening tool (Modbus TCP)",
    segment="367",
    summary=(
        "An assembly station with a transducerised electric nutrunner (5-300 N·m) tightening "
        "chassis and powertrain joints under torque control with angle monitoring, one joint every "
        "4-12 s; its controller publishes results over Modbus TCP."
    ),
    model=TighteningStation,
    address_map=MAP,
    notes=(
        "Registers 3, 7 and 18-19 are reserved and read as 0.",
        "Torque, angle and the OK bit hold the result of the last joint until the next one.",
    ),
)
