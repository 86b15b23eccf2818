"""Three-phase energy meter with the register map of the CHINT DTSU666 (正泰 DTSU666), over Modbus TCP.

The map follows the DTSU666 communication table as published by CHINT and reproduced by
independent integrations (see the manual's "Sources" section): IEEE 754 float32 values, high word
first, in the meter's own units: voltages in 0.1 V, currents in 0.001 A, powers in 0.1 W / 0.1 var,
power factor in 0.001, frequency in 0.01 Hz, energy in kWh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

from simulators.addressmap import ModbusMap, Register, RegisterType, Table
from simulators.machines.base import RUNNING, Alarm, Behaviour, Machine, MachineKind

T = RegisterType
_SQRT3 = math.sqrt(3.0)
_PHASES = ("l1", "l2", "l3")


class EnergyMeter(Machine):
    """Measures a feeder: the machines attached to it, or a workshop load profile when none are.

    The meter is always ``running``; ``active_power`` is the measured load and ``active_energy``
    its integral, so a meter fed by simulated machines reads the sum of their power draws.
    """

    kind = "energy_meter"
    behaviour = Behaviour(
        cycle_s=(86_400.0, 86_400.0),
        rated_power_kw=0.002,
        programs=("DTSU666",),
        alarms=(Alarm(1, "VOLTAGE PHASE LOSS", (600.0, 3600.0)),),
        running_dwell_s=1e12,
        mtbf_s=1e12,
        batch_parts=(1_000_000, 1_000_000),
        initial_weights=(1.0, 0.0, 0.0, 0.0),
    )
    counters = ()
    makes_parts = False

    def setup_values(self) -> None:
        self.loads: list[Machine] = []
        self.base_kw = self.rng.uniform(15.0, 120.0)
        self.start_hour = self.rng.uniform(0.0, 24.0)
        self.pf = self.rng.uniform(0.86, 0.95)
        self.balance = [1.0 + self.rng.uniform(-0.06, 0.06) for _ in _PHASES]
        self.volt_offsets = [self.rng.uniform(-0.01, 0.01) for _ in _PHASES]
        self.hz = 50.0
        self.set("export_energy", 0.0)

    def attach(self, loads: Sequence[Machine]) -> None:
        """Meter these machines: the measured load becomes the sum of their power draws."""
        self.loads = list(loads)

    def _load_kw(self) -> float:
        if self.loads:
            return sum(machine.power_kw for machine in self.loads) + 0.4
        hour = (self.start_hour + self.t_s / 3600.0) % 24.0
        shift = 1.0 if 8.0 <= hour < 20.0 else 0.35
        return self.base_kw * shift * (1 + self.noise(0.03))

    def power_draw_kw(self) -> float:
        return max(0.0, self._load_kw()) if self.state == RUNNING else 0.0

    def derive_from_power(self) -> None:
        total_kw = self.power_kw
        pf = min(0.99, max(0.5, self.pf + self.noise(0.004))) if total_kw > 0 else 1.0
        self.hz = min(50.2, max(49.8, self.hz + self.noise(0.004)))
        weight = sum(self.balance)
        volts = [
            230.0 * (1 + offset) + self.noise(0.3) if self.state == RUNNING else 0.0
            for offset in self.volt_offsets
        ]
        for index, phase in enumerate(_PHASES):
            p_kw = total_kw * self.balance[index] / weight
            volt = volts[index]
            amps = p_kw * 1000.0 / (volt * pf) if volt > 0 else 0.0
            self.set(f"voltage.{phase}", round(volt, 1))
            self.set(f"current.{phase}", round(amps, 3))
            self.set(f"active_power.{phase}", round(p_kw, 4))
            self.set(f"reactive_power.{phase}", round(p_kw * math.tan(math.acos(pf)), 4))
            self.set(f"power_factor.{phase}", round(pf + self.noise(0.002), 3))
        for (a, b), name in zip(((0, 1), (1, 2), (2, 0)), ("l12", "l23", "l31"), strict=True):
            self.set(f"voltage.{name}", round((volts[a] + volts[b]) / 2 * _SQRT3, 1))
        self.set("reactive_power", round(total_kw * math.tan(math.acos(pf)), 4))
        self.set("power_factor", round(pf, 3))
        self.set("frequency", round(self.hz, 2))


def _measurements(table: Table) -> tuple[Register, ...]:
    reg = partial(Register, table=table, type=T.FLOAT32)
    return (
        reg(address=0x2000, signal="voltage.l12", unit="V", scale=0.1, meaning="Uab line voltage"),
        reg(address=0x2002, signal="voltage.l23", unit="V", scale=0.1, meaning="Ubc line voltage"),
        reg(address=0x2004, signal="voltage.l31", unit="V", scale=0.1, meaning="Uca line voltage"),
        reg(address=0x2006, signal="voltage.l1", unit="V", scale=0.1, meaning="Ua phase voltage"),
        reg(address=0x2008, signal="voltage.l2", unit="V", scale=0.1, meaning="Ub phase voltage"),
        reg(address=0x200A, signal="voltage.l3", unit="V", scale=0.1, meaning="Uc phase voltage"),
        reg(address=0x200C, signal="current.l1", unit="A", scale=0.001, meaning="Ia current"),
        reg(address=0x200E, signal="current.l2", unit="A", scale=0.001, meaning="Ib current"),
        reg(address=0x2010, signal="current.l3", unit="A", scale=0.001, meaning="Ic current"),
        reg(
            address=0x2012,
            signal="active_power",
            unit="W",
            scale=0.1,
            meaning="Pt combined active power",
        ),
        reg(
            address=0x2014,
            signal="active_power.l1",
            unit="W",
            scale=0.1,
            meaning="Pa phase A active power",
        ),
        reg(
            address=0x2016,
            signal="active_power.l2",
            unit="W",
            scale=0.1,
            meaning="Pb phase B active power",
        ),
        reg(
            address=0x2018,
            signal="active_power.l3",
            unit="W",
            scale=0.1,
            meaning="Pc phase C active power",
        ),
        reg(
            address=0x201A,
            signal="reactive_power",
            unit="VA",
            scale=0.1,
            meaning="Qt combined reactive power (var)",
        ),
        reg(
            address=0x201C,
            signal="reactive_power.l1",
            unit="VA",
            scale=0.1,
            meaning="Qa phase A reactive power (var)",
        ),
        reg(
            address=0x201E,
            signal="reactive_power.l2",
            unit="VA",
            scale=0.1,
            meaning="Qb phase B reactive power (var)",
        ),
        reg(
            address=0x2020,
            signal="reactive_power.l3",
            unit="VA",
            scale=0.1,
            meaning="Qc phase C reactive power (var)",
        ),
        reg(
            address=0x202A, signal="power_factor", scale=0.001, meaning="PFt combined power factor"
        ),
        reg(
            address=0x202C,
            signal="power_factor.l1",
            scale=0.001,
            meaning="PFa phase A power factor",
        ),
        reg(
            address=0x202E,
            signal="power_factor.l2",
            scale=0.001,
            meaning="PFb phase B power factor",
        ),
        reg(
            address=0x2030,
            signal="power_factor.l3",
            scale=0.001,
            meaning="PFc phase C power factor",
        ),
        reg(address=0x2044, signal="frequency", unit="Hz", scale=0.01, meaning="Freq frequency"),
        reg(
            address=0x401E,
            signal="active_energy",
            unit="kWh",
            meaning="ImpEp (current) positive total active energy",
        ),
        reg(
            address=0x4028,
            key="export_energy",
            unit="kWh",
            meaning="ExpEp (current) negative total active energy (no canonical signal)",
        ),
    )


_HR = partial(Register, table=Table.HOLDING, type=T.INT16)

MAP = ModbusMap(
    (
        _HR(address=0x0000, constant=204, meaning="REV. software version"),
        _HR(address=0x0001, constant=701, meaning="UCode programming code"),
        _HR(address=0x0002, constant=0, meaning="ClrE energy reset (write 0x0E01 to clear)"),
        _HR(address=0x0003, constant=0, meaning="net wiring: 0 = three-phase four-wire"),
        _HR(address=0x0006, constant=1, meaning="IrAt current transformer ratio"),
        _HR(address=0x0007, constant=10, meaning="UrAt voltage transformer ratio"),
        *_measurements(Table.HOLDING),
        *_measurements(Table.INPUT),
    ),
    word_order_note=(
        "Every measurement is an IEEE 754 float32, high word first (ABCD), in the meter's own "
        "units: multiply by the scale column to get V, A, W, var, Hz or kWh."
    ),
    refuses_unmapped=True,
)

KIND = MachineKind(
    name="energy_meter",
    title="Three-phase energy meter, CHINT DTSU666 register map (Modbus TCP)",
    segment="common",
    summary=(
        "A DIN-rail three-phase four-wire energy meter serving the register map of the CHINT "
        "DTSU666 (正泰 DTSU666), one of the meters most often found in Chinese factories, behind "
        "an RS485-to-Ethernet converter. Measurements answer both function code 3 (holding) and "
        "function code 4 (input registers), as on the real meter."
    ),
    model=EnergyMeter,
    address_map=MAP,
    notes=(
        "Blocks: parameters 0x0000-0x0007 (holding only; 0x0004-0x0005 do not exist); "
        "measurements 0x2000-0x2021, 0x202A-0x2031 and 0x2044-0x2045; energy 0x401E-0x401F and "
        "0x4028-0x4029. Addresses in between (0x2022-0x2029, 0x2032-0x2043, 0x4020-0x4027) do "
        "not exist on the simulator and answer exception 02, also inside a longer read (as "
        "on meters that serve only the documented blocks); the real meter documents apparent "
        "power and demand values there that the simulator does not serve.",
        "The simulator applies no transformer ratios: values are primary values. IrAt/UrAt read "
        "1 and 10 as on an unconfigured meter in the emulators we consulted; their exact "
        "semantics (UrAt in 0.1 steps?) are not verified.",
        "Sources: the CHINT DTSU666 communication table as reproduced by the OpenEMS driver "
        "io.openems.edge.meter.chint.dtsu666 (MeterChintDtsu666Impl: FC4 floats at 0x2006.., "
        "scale factors 10^2 for mV, 10^0 for mA, 10^-1 for W, 10^1 for mHz), the AGG Software "
        "DTSU666 register table (0x2000-0x2044, ImpEp 16414 = 0x401E, ExpEp 16424 = 0x4028) and "
        "a minimalmodbus reader (FC3, V/10, A/1000, W/10, PF/1000, Hz/100, kWh unscaled). "
        "CHINT's own PDF manual was not available to check directly; some emulators place "
        "ImpEp at 0x101E instead (older firmware?), which this simulator does not serve.",
    ),
)
