"""Injection moulding machine for plastic auto parts (segment 367), served over OPC UA."""

from __future__ import annotations

from simulators.addressmap import OpcUaMap, Variable, VariantType
from simulators.companion import EUROMAP77_IMM
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

_BARREL_OFFSETS = (-25.0, -10.0, 0.0)
"""Barrel zone setpoints relative to the melt setpoint, feed zone first."""


class InjectionMoulding(Machine):
    """Clamp, inject, hold, cool, open, eject: every shot makes one part per mould cavity."""

    kind = "injection_moulding"
    behaviour = Behaviour(
        cycle_s=(20.0, 60.0),
        rated_power_kw=45.0,
        programs=(
            "M-0311 DOOR-TRIM-4C",
            "M-0520 VENT-GRILLE-2C",
            "M-0745 CLIP-8C",
            "M-0902 LAMP-HSG-1C",
        ),
        alarms=(
            Alarm(501, "料筒温度偏差 Barrel temperature deviation", (300.0, 1200.0)),
            Alarm(522, "模具保护 Mould protection triggered", (60.0, 600.0)),
            Alarm(540, "液压油温高 Hydraulic oil temperature high", (900.0, 2700.0)),
            Alarm(561, "顶针未退回 Ejector not retracted", (60.0, 300.0)),
            Alarm(580, "注射压力超限 Injection pressure limit"),
        ),
        running_dwell_s=3600.0,
        setup_s=(1800.0, 4800.0),
        batch_parts=(300, 3000),
        mtbf_s=6 * 3600.0,
        idle_power_share=0.3,
        reject_rate=0.015,
    )
    counters = ("part_count", "good_count", "reject_count", "shot_count")

    def setup_values(self) -> None:
        self.set("injection_pressure", 0.0)

    def parts_per_cycle(self) -> int:
        return int(self.program_cavities())

    def program_cavities(self) -> int:
        name = self.behaviour.programs[self.program]
        return int(name.split("-")[-1].rstrip("C"))

    def on_cycle(self, is_good: bool) -> None:
        self.count("shot_count")
        peak = self.setpoint("pressure", 50.0, 200.0) * (1 + self.noise(0.01))
        self.set("injection_pressure", round(peak, 1))

    def sample_gauges(self, elapsed_s: float) -> None:
        running = self.state == RUNNING
        phase = self.cycle_phase
        hot = self.state != OFF
        melt_set = self.setpoint("melt", 220.0, 280.0)
        for zone, offset in enumerate(_BARREL_OFFSETS, start=1):
            target = melt_set + offset if hot else 25.0
            temp = self.lag(f"barrel{zone}", target, 1200.0, elapsed_s, melt_set + offset)
            self.set(f"barrel_z{zone}", round(temp + self.noise(0.2), 1))
        melt = self.lag(
            "melt",
            melt_set + (3.0 if running else 0.0) if hot else 25.0,
            900.0,
            elapsed_s,
            melt_set,
        )
        self.set("melt_temperature", round(melt + self.noise(0.3), 1))
        mould_target = self.setpoint("mould", 40.0, 90.0) if hot else 25.0
        self.set(
            "die_temperature",
            round(
                self.lag("mould", mould_target, 1500.0, elapsed_s, mould_target) + self.noise(0.2),
                1,
            ),
        )
        clamped = running and phase < 0.8
        clamp_kn = (
            self.setpoint("clamp", 1800.0, 3200.0) * (1 + self.noise(0.002)) if clamped else 0.0
        )
        self.set("clamping_force", round(clamp_kn, 1))
        self.load_share = 0.85 if running and phase < 0.25 else (0.35 if running else 0.0)
        self.set("cavities", self.program_cavities())


_STATES = {"AUTOMATIC": RUNNING, "STANDBY": IDLE, "SETUP": SETUP, "ALARM": FAULT, "OFF": OFF}

MAP = OpcUaMap(
    (
        Variable(
            path="Machine/Mode",
            type=S,
            signal="machine_state",
            states=_STATES,
            meaning="Machine mode text: AUTOMATIC, STANDBY, SETUP, ALARM or OFF",
        ),
        Variable(
            path="Machine/MouldId",
            type=S,
            signal="program_name",
            meaning="Mould and dataset in use",
        ),
        Variable(
            path="Machine/Cavities",
            type=I32,
            key="cavities",
            meaning="Cavities of the mould in use (no canonical signal)",
        ),
        Variable(
            path="InjectionUnit/PeakPressure",
            type=D,
            signal="injection_pressure",
            unit="bar",
            meaning="Peak hydraulic-equivalent injection pressure of the last shot, bar",
        ),
        Variable(
            path="InjectionUnit/MeltTemperature",
            type=F,
            signal="melt_temperature",
            unit="degC",
            meaning="Melt temperature at the nozzle",
        ),
        *(
            Variable(
                path=f"InjectionUnit/Barrel/Zone{z}",
                type=F,
                key=f"barrel_z{z}",
                unit="degC",
                meaning=f"Barrel zone {z} temperature (no canonical signal)",
            )
            for z in (1, 2, 3)
        ),
        Variable(
            path="Mould/Temperature",
            type=F,
            signal="die_temperature",
            unit="degC",
            meaning="Mould temperature (temperature control unit return)",
        ),
        Variable(
            path="ClampingUnit/Force",
            type=F,
            signal="clamping_force",
            unit="kN",
            meaning="Actual clamping force",
        ),
        Variable(
            path="Production/ShotCounter", type=U32, signal="shot_count", meaning="Shots (lifetime)"
        ),
        Variable(
            path="Production/PartCounter",
            type=U32,
            signal="part_count",
            meaning="Parts (shots x cavities)",
        ),
        Variable(path="Production/GoodParts", type=U32, signal="good_count", meaning="Good parts"),
        Variable(
            path="Production/RejectParts",
            type=U32,
            signal="reject_count",
            meaning="Parts rejected by the quality monitor",
        ),
        Variable(
            path="Production/CycleTime",
            type=D,
            signal="cycle_time",
            unit="s",
            meaning="Duration of the last shot cycle",
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
            type=D,
            signal="active_power",
            unit="kW",
            meaning="Machine active power (pump motor, heaters)",
        ),
        Variable(
            path="Energy/ActiveEnergy",
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
            meaning="Hours in automatic",
        ),
    )
)

KIND = MachineKind(
    name="injection_moulding",
    title="Injection moulding machine (OPC UA)",
    segment="367",
    summary=(
        "A 300-tonne servo-hydraulic injection moulding machine for interior and lighting parts "
        "(50-200 MPa injection pressure, 20-60 s per shot, 1-8 cavities); its OPC UA server "
        "loosely follows the spirit of EUROMAP 77 but uses its own node names."
    ),
    model=InjectionMoulding,
    address_map=MAP,
    notes=(
        "InjectionUnit/PeakPressure is in bar; the canonical injection_pressure is in MPa.",
        "Part counters count parts, not shots: each shot adds Machine/Cavities parts.",
    ),
    companion=EUROMAP77_IMM,
)
