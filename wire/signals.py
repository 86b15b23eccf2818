"""The canonical signal vocabulary: every normalized signal name, its unit, kind and meaning.

A signal name on the wire is ``base`` or ``base.qualifier``: the qualifier tells instances apart
(``voltage.l1``, ``furnace_zone_temperature.z3``, ``axis_temperature.x``) and does not change the
meaning or unit. Units are pint expressions; the gateway converts every source unit to these.
docs/signals.md is generated from this table (and a test keeps them in step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class SignalKind(StrEnum):
    GAUGE = "gauge"
    """A measured level that can go up and down."""
    COUNTER = "counter"
    """A cumulative count that only goes up, except when it wraps or is reset."""
    STATE = "state"
    """A machine state (see MachineState)."""
    ALARM = "alarm"
    """Whether an alarm is active, or which one."""
    TEXT = "text"
    """Free text, such as an alarm message or a program name."""


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    unit: str
    kind: SignalKind
    meaning: str
    zh: str


G, C, S, A, T = (
    SignalKind.GAUGE,
    SignalKind.COUNTER,
    SignalKind.STATE,
    SignalKind.ALARM,
    SignalKind.TEXT,
)

_TABLE: Final[list[tuple[str, str, SignalKind, str, str]]] = [
    # Every machine
    ("machine_state", "", S, "Machine state: running, idle, setup, fault or off", "设备状态"),
    ("alarm_active", "", A, "True while any alarm is active", "报警中"),
    ("alarm_code", "", A, "Code of the active alarm, 0 when none", "报警代码"),
    ("alarm_text", "", T, "Message of the active alarm", "报警信息"),
    ("program_name", "", T, "Name of the running part program or recipe", "加工程序"),
    ("part_count", "", C, "Parts produced (cumulative)", "产量计数"),
    ("good_count", "", C, "Good parts (cumulative)", "合格数"),
    ("reject_count", "", C, "Rejected or scrap parts (cumulative)", "不合格数"),
    ("cycle_time", "s", G, "Duration of the last completed cycle", "节拍"),
    ("run_hours", "h", C, "Running hours meter (cumulative)", "运行小时"),
    # Machine tools
    ("spindle_speed", "rpm", G, "Main (or wheel) spindle speed", "主轴转速"),
    ("spindle_load", "percent", G, "Spindle load as a share of rated", "主轴负载"),
    ("feed_rate", "mm/min", G, "Path feed rate", "进给速度"),
    ("feed_override", "percent", G, "Feed override", "进给倍率"),
    ("tool_number", "", G, "Active tool number", "刀具号"),
    ("axis_temperature", "degC", G, "Temperature of an axis drive or ball screw", "轴温度"),
    ("spindle_temperature", "degC", G, "Spindle bearing temperature", "主轴温度"),
    ("part_temperature", "degC", G, "Workpiece temperature", "工件温度"),
    ("coolant_temperature", "degC", G, "Coolant temperature", "冷却液温度"),
    ("vibration_rms", "mm/s", G, "Vibration velocity RMS", "振动速度有效值"),
    ("vibration_accel_rms", "m/s**2", G, "Vibration acceleration RMS", "振动加速度有效值"),
    # Grinding and superfinishing
    ("workhead_speed", "rpm", G, "Workhead (part) speed on a grinder", "工件轴转速"),
    ("wheel_surface_speed", "m/s", G, "Grinding wheel surface speed", "砂轮线速度"),
    ("infeed_rate", "mm/min", G, "Grinding infeed rate", "进给量"),
    ("size_deviation", "um", G, "In-process gauge deviation from nominal size", "尺寸偏差"),
    ("dressing_count", "", C, "Wheel dressings (cumulative)", "修整次数"),
    ("oscillation_frequency", "Hz", G, "Superfinishing stone oscillation frequency", "振荡频率"),
    ("stone_pressure", "MPa", G, "Superfinishing stone pressure", "油石压力"),
    # Gear cutting
    ("hob_speed", "rpm", G, "Hob spindle speed", "滚刀转速"),
    ("table_speed", "rpm", G, "Work table speed", "工作台转速"),
    ("axial_feed", "mm/min", G, "Axial feed", "轴向进给"),
    ("stock_removal", "mm", G, "Stock removed in the last cycle", "磨削余量"),
    # Heat treatment
    ("furnace_zone_temperature", "degC", G, "Furnace zone temperature", "炉区温度"),
    ("furnace_setpoint", "degC", G, "Furnace temperature setpoint", "炉温设定"),
    ("carbon_potential", "percent", G, "Atmosphere carbon potential (%C)", "碳势"),
    ("atmosphere_flow", "m**3/h", G, "Carrier gas flow", "气氛流量"),
    ("quench_oil_temperature", "degC", G, "Quench oil temperature", "淬火油温"),
    ("tray_count", "", C, "Trays or batches through the furnace (cumulative)", "料盘计数"),
    # Test stations
    ("test_result_ok", "", G, "1 when the last tested part passed, 0 when it failed", "检测结果"),
    ("noise_level", "dB", G, "Noise level of the last tested part", "噪声"),
    # Presses
    ("press_force", "kN", G, "Peak press force of the last stroke", "冲压力"),
    ("stroke_rate", "1/min", G, "Strokes per minute", "冲次"),
    ("stroke_count", "", C, "Strokes (cumulative)", "冲压次数"),
    ("die_height", "mm", G, "Shut height", "装模高度"),
    ("motor_current", "A", G, "Main motor current", "电机电流"),
    # Die casting and injection moulding
    ("clamping_force", "kN", G, "Clamping force", "锁模力"),
    ("shot_velocity", "m/s", G, "Second-phase shot velocity", "压射速度"),
    ("intensification_pressure", "MPa", G, "Intensification (casting) pressure", "增压压力"),
    ("melt_temperature", "degC", G, "Melt temperature", "熔体温度"),
    ("die_temperature", "degC", G, "Die or mould temperature", "模具温度"),
    ("shot_count", "", C, "Shots (cumulative)", "压射次数"),
    ("injection_pressure", "MPa", G, "Peak injection pressure", "注射压力"),
    # Welding
    ("welding_current", "A", G, "Welding current", "焊接电流"),
    ("welding_voltage", "V", G, "Arc voltage", "焊接电压"),
    ("wire_feed_speed", "m/min", G, "Wire feed speed", "送丝速度"),
    ("gas_flow", "L/min", G, "Shielding gas flow", "保护气流量"),
    ("arc_time", "s", C, "Arc-on time (cumulative)", "燃弧时间"),
    # Tightening
    ("tightening_torque", "N*m", G, "Final torque of the last joint", "拧紧扭矩"),
    ("tightening_angle", "deg", G, "Final angle of the last joint", "拧紧角度"),
    ("tightening_ok", "", G, "1 when the last joint was OK, 0 when NOK", "拧紧结果"),
    # Energy and utilities
    ("active_power", "kW", G, "Total active power", "有功功率"),
    ("reactive_power", "kVA", G, "Total reactive power (kvar)", "无功功率"),
    ("active_energy", "kWh", C, "Imported active energy (cumulative)", "有功电能"),
    ("voltage", "V", G, "Phase voltage (qualifier l1/l2/l3) or line voltage (l12/l23/l31)", "电压"),
    ("current", "A", G, "Phase current (qualifier l1/l2/l3)", "电流"),
    ("power_factor", "", G, "Total power factor", "功率因数"),
    ("frequency", "Hz", G, "Grid frequency", "频率"),
    ("air_pressure", "MPa", G, "Compressed-air discharge pressure", "排气压力"),
    ("air_flow", "m**3/min", G, "Compressed-air flow", "压缩空气流量"),
    ("compressor_loaded", "", G, "1 while the compressor is loaded, 0 unloaded", "加载状态"),
    ("discharge_temperature", "degC", G, "Compressor discharge temperature", "排气温度"),
]

SIGNALS: Final[dict[str, SignalSpec]] = {
    name: SignalSpec(name, unit, kind, meaning, zh) for name, unit, kind, meaning, zh in _TABLE
}


CUSTOM_BASE: Final = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
"""A custom signal's declared name, ``namespace:name`` (``acme:fan_speed``): the colon keeps it
apart from every canonical name, which never has one (docs/profiles.md, Custom signals)."""


def is_custom(signal: str) -> bool:
    """Whether a (possibly qualified) signal name is in a vendor namespace: ``acme:fan_speed.l``."""
    return ":" in signal


def custom_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be declared as a custom signal, or None when it can."""
    if "." in name:
        return (
            f"{name!r}: declare the base name without a qualifier "
            f"({name.split('.', 1)[0]!r}); signals may add one"
        )
    if not is_custom(name):
        if name in SIGNALS:
            return f"{name!r} is a canonical signal: read it in `signals:` instead of declaring it"
        return (
            f"{name!r} has no vendor namespace: write it as 'namespace:name' (for example "
            f"'acme:{name}')"
        )
    if not CUSTOM_BASE.match(name):
        return (
            f"{name!r} is not 'namespace:name' with lowercase letters, digits and '_', each "
            "part starting with a letter"
        )
    local = name.split(":", 1)[1]
    if local in SIGNALS:
        return (
            f"{name!r} shadows the canonical signal {local!r}: read {local!r} (with a qualifier "
            "if the machine has several) or choose another name"
        )
    return None


def base_name(signal: str) -> str:
    """``voltage.l1`` -> ``voltage``."""
    return signal.split(".", 1)[0]


def lookup_signal(signal: str) -> SignalSpec | None:
    """The vocabulary entry of a (possibly qualified) signal name, or None if it is not canonical."""
    return SIGNALS.get(base_name(signal))
