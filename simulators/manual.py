"""Renders each machine kind's address map as a vendor-style manual (``simulators/manuals/<kind>.md``).

The manuals are generated from the maps the servers use, so they cannot drift: a unit test fails
when a committed manual differs from ``render_manual(kind)``; ``shulian sim manuals --write``
regenerates them.
"""

from __future__ import annotations

from pathlib import Path

from simulators.addressmap import (
    Field,
    ModbusMap,
    OpcUaMap,
    Register,
    RegisterType,
    Table,
    conversion,
)
from simulators.machines import KINDS, MachineKind
from simulators.opcua_server import NAMESPACE_URI

MANUAL_DIR = Path(__file__).resolve().parent / "manuals"

_TABLE_TITLES = {
    Table.COIL: "Coils (function code 1)",
    Table.DISCRETE_INPUT: "Discrete inputs (function code 2)",
    Table.HOLDING: "Holding registers (function code 3)",
    Table.INPUT: "Input registers (function code 4)",
}


def render_manual(kind: MachineKind) -> str:
    """The Markdown manual of one machine kind."""
    lines = [
        f"# {kind.title}",
        "",
        f"Kind `{kind.name}` · segment {kind.segment} · protocol "
        f"{'OPC UA' if kind.protocol == 'opcua' else 'Modbus TCP'}",
        "",
        kind.summary,
        "",
        "This manual is generated from `simulators/machines/"
        f"{kind.name}.py` (`shulian sim manuals --write`); the simulator serves exactly this map.",
        "",
    ]
    if isinstance(kind.address_map, ModbusMap):
        lines += _modbus_section(kind, kind.address_map)
    else:
        lines += _opcua_section(kind, kind.address_map)
    lines += _states_section(kind)
    lines += ["## Alarms", "", "| code | text | typical repair |", "|---|---|---|"]
    for alarm in kind.alarms():
        low, high = (round(x / 60) for x in alarm.repair_s)
        lines.append(f"| {alarm.code} | {alarm.text} | {low}-{high} min |")
    lines.append("")
    if kind.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in kind.notes] + [""]
    return "\n".join(lines)


def _modbus_section(kind: MachineKind, address_map: ModbusMap) -> list[str]:
    lines = [
        "## Connection",
        "",
        "Modbus TCP, unit id as configured (default 1); addresses below are 0-based protocol "
        "addresses (register 0 = 40001 in 1-based notation). At most 125 registers per read.",
        (
            "Addresses the map does not list answer exception 02 (illegal data address), also "
            "inside a read that spans them; the map is read-only."
            if address_map.refuses_unmapped
            else "Addresses between a table's first and last listed ones that the map does not "
            "list are reserved and read as 0, so one read may span them; addresses outside that "
            "range answer exception 02 (illegal data address). The map is read-only."
        ),
        "",
        f"Word order: {address_map.word_order_note}",
        "Strings are ASCII, two characters per register, first character in the high byte, "
        "padded with NUL. Bits in registers count from 0 = least significant bit.",
        "",
    ]
    for table in Table:
        fields = sorted(
            (f for f in address_map.registers if f.table == table),
            key=lambda f: (f.address, f.bit or 0),
        )
        if not fields:
            continue
        lines += [
            f"## {_TABLE_TITLES[table]}",
            "",
            "| address | word order | type | unit | scale | meaning | canonical signal | "
            "canonical unit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [_modbus_row(f) for f in fields]
        lines.append("")
    return lines


def _modbus_row(field: Register) -> str:
    if field.type == RegisterType.BIT:
        address = f"{_number(field.address)} bit {field.bit}"
    elif field.size > 1 and not field.table.is_bits:
        address = f"{_number(field.address)}-{_number(field.address + field.size - 1)}"
    else:
        address = _number(field.address)
    kind = field.type.value
    if field.type == RegisterType.STRING:
        kind = f"string[{field.length * 2}]"
    multi = field.size > 1 and field.type not in (RegisterType.STRING,)
    order = field.word_order.value if multi else "-"
    return _row(address, order, kind, field)


def _number(address: int) -> str:
    """Decimal address, with hex for the high ranges vendors write in hex (0x2000 = 8192)."""
    return f"{address} (0x{address:04X})" if address >= 256 else str(address)


def _opcua_section(kind: MachineKind, address_map: OpcUaMap) -> list[str]:
    return [
        "## Connection",
        "",
        "OPC UA binary, `opc.tcp://HOST:PORT`, security policy None, anonymous login.",
        f"Namespace URI `{NAMESPACE_URI}` (index 2 on the simulator; resolve it by URI).",
        "Each machine is an object `Objects/<device id>`; a variable's NodeId is the string "
        "`<device id>.<path with dots>`, e.g. `ns=2;s=<device id>."
        f"{address_map.variables[0].path.replace('/', '.')}`; its browse path is "
        "`0:Objects/2:<device id>/2:...` following the path below.",
        "Values carry a source timestamp (the time the controller refreshed them); variables are "
        "read-only and support subscriptions.",
        "",
        "## Variables",
        "",
        "| browse path below `Objects/<device id>` | NodeId | type | unit | scale | meaning | "
        "canonical signal | canonical unit |",
        "|---|---|---|---|---|---|---|---|",
        *(
            _row(f"`{v.path}`", f"`s=<id>.{v.path.replace('/', '.')}`", v.type.value, v)
            for v in address_map.variables
        ),
        "",
    ]


def _row(address: str, second: str, kind: str, field: Field) -> str:
    scale = _scaling(field)
    meaning = field.meaning
    if field.constant is not None:
        meaning += f" (fixed: {field.constant!r})"
    signal = f"`{field.signal}`" if field.signal else "-"
    canonical = field.canonical_unit if field.signal else ""
    unit_cell = field.unit or ("-" if field.states is None else "code")
    return (
        f"| {address} | {second} | {kind} | {unit_cell} | {scale} | {meaning} | {signal} | "
        f"{canonical or '-'} |"
    )


def _scaling(field: Field) -> str:
    parts = []
    if field.scale != 1:
        parts.append(f"x {field.scale:g}")
    if field.offset:
        parts.append(f"{field.offset:+g}")
    if field.signal and field.unit and field.canonical_unit and field.unit != field.canonical_unit:
        factor, shift = conversion(field.unit, field.canonical_unit)
        parts.append(
            f"({field.unit} -> {field.canonical_unit}: x {factor:g}{f' {shift:+g}' if shift else ''})"
        )
    if field.wraps:
        parts.append("wraps")
    return " ".join(parts) or "1"


def _states_section(kind: MachineKind) -> list[str]:
    state_fields = [f for f in kind.address_map.fields() if f.states is not None]
    if not state_fields:
        return []
    lines = ["## State codes", "", "| raw value | machine state |", "|---|---|"]
    for field in state_fields:
        assert field.states is not None
        for code, state in field.states.items():
            lines.append(f"| {code!r} | {state.value} |")
    lines.append("")
    return lines


def manual_path(kind: MachineKind) -> Path:
    return MANUAL_DIR / f"{kind.name}.md"


def write_manuals() -> list[Path]:
    """Regenerate every manual; returns the files written."""
    MANUAL_DIR.mkdir(exist_ok=True)
    written = []
    for kind in KINDS.values():
        path = manual_path(kind)
        path.write_text(render_manual(kind), encoding="utf-8")
        written.append(path)
    return written


def stale_manuals() -> list[Path]:
    """Manuals that differ from what the code would render."""
    return [
        manual_path(kind)
        for kind in KINDS.values()
        if not manual_path(kind).is_file()
        or manual_path(kind).read_text(encoding="utf-8") != render_manual(kind)
    ]


__all__ = ["MANUAL_DIR", "render_manual", "stale_manuals", "write_manuals"]
