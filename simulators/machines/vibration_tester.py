"""Bearing vibration and noise test station (segment 345), served over Modbus TCP."""

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
IR = partial(Register, table=Table.INPUT)
DI = partial(Register, table=Table.DISCRETE_INPUT, type=RegisterType.BOOL)
T = RegisterType

_BANDS = ("low", "mid", "high")
_LIMITS_UM_S = {"low": 180.0, "mid": 120.0, "high": 90.0}
"""Velocity limits per band (µm/s): a bearing fails when any band exceeds its limit."""


class VibrationTester(Machine):
    """Spins each finished bearing at 1,800 rpm and measures vibration bands and noise."""

    kind = "vibration_tester"
    behaviour = Behaviour(
        cycle_s=(4.0, 8.0),
        rated_power_kw=3.0,
        programs=("6204-2RS", "6205-ZZ", "6305-2RS", "6206-OPEN"),
        alarms=(
            Alarm(21, "SENSOR CABLE OPEN", (300.0, 1200.0)),
            Alarm(34, "SPINDLE SPEED OUT OF RANGE"),
            Alarm(47, "AXIAL LOAD CYLINDER FAULT"),
            Alarm(58, "SORTING GATE JAMMED", (60.0, 300.0)),
        ),
        running_dwell_s=1800.0,
        setup_s=(300.0, 900.0),
        batch_parts=(500, 3000),
        mtbf_s=8 * 3600.0,
        idle_power_share=0.35,
        reject_rate=0.02,
    )

    def setup_values(self) -> None:
        self.bands = {band: 0.0 for band in _BANDS}
        for band in _BANDS:
            self.set(f"vibration_rms.{band}", 0.0)
        self.set("vibration_accel_rms", 0.0)
        self.set("noise_level", 0.0)
        self.set("test_result_ok", True)

    def judge_part(self) -> bool:
        quality = self.rng.lognormvariate(0.0, 0.35)  # > 1: a noisier bearing than typical
        for band, limit in _LIMITS_UM_S.items():
            self.bands[band] = round(limit * 0.45 * quality * self.rng.uniform(0.8, 1.2), 0)
        return all(self.bands[b] <= _LIMITS_UM_S[b] for b in _BANDS)

    def on_cycle(self, is_good: bool) -> None:
        for band in _BANDS:
            self.set(f"vibration_rms.{band}", round(self.bands[band] / 1000.0, 3))
        accel = sum(self.bands.values()) / 1000.0 * 2.1 + abs(self.noise(0.02))
        self.set("vibration_accel_rms", round(accel, 4))
        self.set("noise_level", round(28.0 + self.bands["high"] / 12.0 + self.noise(0.4), 1))
        self.set("test_result_ok", is_good)

    def sample_gauges(self, elapsed_s: float) -> None:
        testing = self.state == RUNNING and self.cycle_phase < 0.8
        self.set("spindle_speed", round(1800.0 + self.noise(1.5)) if testing else 0)
        self.load_share = 0.6 if testing else 0.1


_STATES = {0: OFF, 1: IDLE, 2: RUNNING, 3: SETUP, 4: FAULT}

MAP = ModbusMap(
    (
        HR(
            address=0,
            type=T.UINT16,
            signal="machine_state",
            states=_STATES,
            meaning="Station state (0 off, 1 waiting, 2 testing, 3 calibration, 4 alarm)",
        ),
        HR(
            address=1,
            type=T.UINT16,
            signal="alarm_code",
            meaning="Active alarm number, 0 when none",
        ),
        HR(
            address=2,
            type=T.STRING,
            length=8,
            signal="program_name",
            meaning="Bearing type under test, 16 ASCII characters",
        ),
        HR(
            address=20,
            type=T.FLOAT32,
            signal="active_power",
            unit="kW",
            meaning="Station active power",
        ),
        HR(
            address=22,
            type=T.UINT32,
            signal="active_energy",
            unit="Wh",
            meaning="Imported energy, Wh",
        ),
        IR(
            address=0,
            type=T.UINT16,
            signal="vibration_rms.low",
            unit="um/s",
            meaning="Low band (50-300 Hz) velocity RMS of the last bearing, µm/s",
        ),
        IR(
            address=1,
            type=T.UINT16,
            signal="vibration_rms.mid",
            unit="um/s",
            meaning="Medium band (300-1,800 Hz) velocity RMS, µm/s",
        ),
        IR(
            address=2,
            type=T.UINT16,
            signal="vibration_rms.high",
            unit="um/s",
            meaning="High band (1,800-10,000 Hz) velocity RMS, µm/s",
        ),
        IR(address=3, type=T.UINT16, constant=0, meaning="Reserved (reads 0)"),
        IR(
            address=4,
            type=T.FLOAT32,
            signal="vibration_accel_rms",
            unit="m/s**2",
            meaning="Overall acceleration RMS of the last bearing",
        ),
        IR(
            address=6,
            type=T.INT16,
            signal="noise_level",
            unit="dB",
            scale=0.1,
            meaning="Noise level of the last bearing, 0.1 dB",
        ),
        IR(
            address=7,
            type=T.UINT16,
            signal="spindle_speed",
            unit="rpm",
            meaning="Test spindle speed",
        ),
        IR(address=8, type=T.UINT16, signal="cycle_time", unit="ms", meaning="Last test cycle, ms"),
        IR(address=10, type=T.UINT32, signal="part_count", meaning="Bearings tested (lifetime)"),
        IR(address=12, type=T.UINT32, signal="good_count", meaning="Bearings passed"),
        IR(address=14, type=T.UINT32, signal="reject_count", meaning="Bearings failed"),
        DI(address=0, signal="test_result_ok", meaning="Last bearing passed (1) or failed (0)"),
        DI(address=1, signal="alarm_active", meaning="Alarm active"),
    ),
)

KIND = MachineKind(
    name="vibration_tester",
    title="Bearing vibration and noise test station (Modbus TCP)",
    segment="345",
    summary=(
        "An end-of-line bearing vibration tester: the bearing turns at 1,800 rpm under axial load "
        "while a velocity pickup measures three frequency bands (Anderon-style low / medium / "
        "high) and a microphone the noise level; one bearing every 4-8 s, sorted good or bad."
    ),
    model=VibrationTester,
    address_map=MAP,
    notes=(
        "Test results are input registers (function code 4); state, alarm, bearing type and "
        "energy are holding registers (function code 3); pass/fail and alarm are discrete inputs "
        "(function code 2).",
        "Band values are in µm/s (the canonical vibration_rms is mm/s): divide by 1000.",
        "Holding registers 10-19 and input register 9 are reserved and read as 0.",
    ),
)
