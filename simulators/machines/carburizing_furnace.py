"""Continuous gas-carburizing furnace with oil quench (segment 345), served over OPC UA."""

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

_ZONE_OFFSETS = (-30.0, 0.0, -10.0, -70.0)
"""Zone setpoints relative to the carburizing setpoint: heating, carburizing, diffusion, hardening."""
_AMBIENT = 25.0


class CarburizingFurnace(Machine):
    """A pusher furnace: one tray of gears or rings enters (and one is quenched) every push.

    ``running`` means trays are being pushed, ``idle`` holding at temperature without trays,
    ``setup`` heating up or changing recipe, ``off`` cold. Zone temperatures follow their setpoints
    with time constants of tens of minutes, and every push warms the quench oil.
    """

    kind = "carburizing_furnace"
    behaviour = Behaviour(
        cycle_s=(1200.0, 2400.0),
        rated_power_kw=260.0,
        programs=("20CrMnTi-CHD0.8", "20CrMnTi-CHD1.2", "GCr15SiMn-CHD1.5", "16MnCr5-CHD0.6"),
        alarms=(
            Alarm(3001, "炉温超差 Zone temperature deviation", (1800.0, 5400.0)),
            Alarm(3102, "碳势探头故障 Oxygen probe fault", (1800.0, 7200.0)),
            Alarm(3205, "淬火油温高 Quench oil over-temperature", (1200.0, 3600.0)),
            Alarm(3300, "推料机构卡滞 Pusher jammed", (1800.0, 5400.0)),
            Alarm(3401, "RX气流量低 Endogas flow low", (900.0, 3600.0)),
        ),
        running_dwell_s=3 * 86400.0,
        idle_dwell_s=2 * 3600.0,
        setup_s=(2 * 3600.0, 4 * 3600.0),
        batch_parts=(30, 150),
        mtbf_s=10 * 86400.0,
        off_share=0.02,
        off_dwell_s=2 * 86400.0,
        idle_power_share=0.38,
        standby_power_kw=2.5,
        reject_rate=0.002,
        initial_weights=(0.85, 0.08, 0.07, 0.0),
    )
    counters = ("part_count", "good_count", "reject_count", "tray_count")

    def setup_values(self) -> None:
        self.quench_heat = 0.0

    def parts_per_cycle(self) -> int:
        return int(self.setpoint("parts_per_tray", 120, 400))

    def on_cycle(self, is_good: bool) -> None:
        self.count("tray_count")
        self.quench_heat = 18.0

    def sample_gauges(self, elapsed_s: float) -> None:
        hot = self.state != OFF
        setpoint = round(self.setpoint("carburizing", 900.0, 950.0), 0) if hot else _AMBIENT
        self.set("furnace_setpoint", setpoint)
        tau = 1800.0 if hot else 4 * 3600.0
        heating_share = 0.0
        for zone, offset in enumerate(_ZONE_OFFSETS, start=1):
            target = setpoint + offset if hot else _AMBIENT
            if self.state == RUNNING and zone == 1:
                target -= 12.0 * (1 - self.cycle_phase)  # a cold tray just entered
            temp = self.lag(f"z{zone}", target, tau, elapsed_s, setpoint + offset)
            heating_share += max(0.0, min(1.0, (target - temp) / 40.0 + 0.45)) if hot else 0.0
            self.set(f"furnace_zone_temperature.z{zone}", round(temp + self.noise(0.3), 1))
        self.load_share = heating_share / len(_ZONE_OFFSETS)
        carbon_target = self.setpoint("carbon", 0.8, 1.2) if hot else 0.0
        carbon = self.lag("carbon", carbon_target, 600.0, elapsed_s, carbon_target)
        self.set("carbon_potential", round(max(0.0, carbon + (self.noise(0.005) if hot else 0)), 3))
        flow = self.setpoint("endogas", 8.0, 20.0) + self.noise(0.15) if hot else 0.0
        self.set("atmosphere_flow", round(max(0.0, flow), 2))
        self.quench_heat *= 0.5 ** (elapsed_s / 600.0)
        oil_target = (70.0 + self.quench_heat) if hot else _AMBIENT
        oil = self.lag("oil", oil_target, 900.0, elapsed_s, 70.0)
        self.set("quench_oil_temperature", round(oil + self.noise(0.1), 1))

    def power_draw_kw(self) -> float:
        if self.state == OFF:
            return self.behaviour.standby_power_kw
        rated = self.behaviour.rated_power_kw
        return max(0.0, rated * (0.15 + 0.8 * self.load_share) * (1 + self.noise(0.01)))


_STATES = {"PRODUCTION": RUNNING, "HOLD": IDLE, "HEATUP": SETUP, "ALARM": FAULT, "OFF": OFF}

_ZONES = tuple(
    Variable(
        path=f"Furnace/Zone{z}/ActualTemperature",
        type=D,
        signal=f"furnace_zone_temperature.z{z}",
        unit="degC",
        meaning=f"Zone {z} ({name}) temperature, thermocouple",
    )
    for z, name in enumerate(("heating", "carburizing", "diffusion", "hardening"), start=1)
)

MAP = OpcUaMap(
    (
        Variable(
            path="Line/Status",
            type=S,
            signal="machine_state",
            states=_STATES,
            meaning="Line status text: PRODUCTION, HOLD, HEATUP, ALARM or OFF",
        ),
        Variable(
            path="Line/Recipe",
            type=S,
            signal="program_name",
            meaning="Active heat-treatment recipe (steel grade and case depth)",
        ),
        *_ZONES,
        Variable(
            path="Furnace/Zone2/Setpoint",
            type=D,
            signal="furnace_setpoint",
            unit="degC",
            meaning="Carburizing zone setpoint",
        ),
        Variable(
            path="Atmosphere/CarbonPotential",
            type=F,
            signal="carbon_potential",
            unit="percent",
            meaning="Carbon potential from the oxygen probe, %C",
        ),
        Variable(
            path="Atmosphere/EndogasFlow",
            type=F,
            signal="atmosphere_flow",
            unit="m**3/h",
            meaning="Endothermic carrier gas flow",
        ),
        Variable(
            path="Quench/OilTemperature",
            type=F,
            signal="quench_oil_temperature",
            unit="degC",
            meaning="Quench tank oil temperature",
        ),
        Variable(
            path="Production/TrayCount",
            type=U32,
            signal="tray_count",
            meaning="Trays pushed through the furnace (lifetime)",
        ),
        Variable(
            path="Production/PartCount",
            type=U32,
            signal="part_count",
            meaning="Parts heat-treated (trays x parts per tray)",
        ),
        Variable(
            path="Production/PushInterval",
            type=D,
            signal="cycle_time",
            unit="min",
            meaning="Time between the last two pushes, in minutes",
        ),
        Variable(path="Alarms/Active", type=B, signal="alarm_active", meaning="Any alarm active"),
        Variable(
            path="Alarms/Code",
            type=I32,
            signal="alarm_code",
            meaning="Code of the active alarm, 0 when none",
        ),
        Variable(
            path="Alarms/Text",
            type=S,
            signal="alarm_text",
            meaning="Message of the active alarm (Chinese / English)",
        ),
        Variable(
            path="Energy/ActivePower",
            type=D,
            signal="active_power",
            unit="kW",
            meaning="Heating and fan power",
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
    name="carburizing_furnace",
    title="Continuous gas-carburizing furnace with oil quench (OPC UA)",
    segment="345",
    summary=(
        "A pusher-type gas-carburizing line for gears and bearing rings: four zones at "
        "880-950 °C, endothermic atmosphere with 0.8-1.2 %C carbon potential, oil quench at "
        "60-120 °C, one tray pushed every 20-40 minutes; OPC UA server on the line PLC."
    ),
    model=CarburizingFurnace,
    address_map=MAP,
    notes=(
        "Production/PushInterval is in minutes; the canonical cycle_time is in seconds.",
        "A furnace rarely switches off: expect days of PRODUCTION with short HOLD periods.",
    ),
)
