"""Plan the fewest Modbus read requests that cover a group's signals within the device's limits.

Per table, signals are sorted by address and merged into blocks greedily: a signal joins the open
block while the block stays within ``max_registers_per_request`` (``max_bits_per_request`` for coils
and discrete inputs), the unused stretch before it is at most ``max_gap`` registers (``16 *
max_gap`` bits in bit tables: the same bytes on the wire) and that stretch touches no range the
device refuses to read (``unreadable``). A multi-register value is never split across requests. For signals that do not overlap, greedy extension is optimal: each block starts at
the first uncovered signal and reaches as far as the limits allow, and no cut can do better.

``plan_profile`` reports what a whole profile costs per cycle against one request per signal, for
``shulian profile plan`` and the gateway benchmark.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.drivers.modbus.models import (
    AddressRange,
    ModbusProfile,
    ModbusSettings,
    ModbusSignal,
    Table,
)
from gateway.profiles.models import GroupSpec

BIT_TABLES: Final = frozenset({Table.COIL, Table.DISCRETE_INPUT})
FUNCTION_CODES: Final[dict[Table, int]] = {
    Table.COIL: 1,
    Table.DISCRETE_INPUT: 2,
    Table.HOLDING: 3,
    Table.INPUT: 4,
}
_TABLE_ORDER: Final = (Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING, Table.INPUT)
BITS_PER_GAP_REGISTER: Final = 16


AddressText = Callable[[str, int], str]
"""Writes an address in the style in which the profile wrote the address of a signal (by name)
or of a range (``modbus.unreadable[0]``): ``0x2000``."""


@dataclass(frozen=True, slots=True)
class PlannedSignal:
    signal: ModbusSignal
    offset: int
    """Position of the signal's first register (or bit) from the request's start."""


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: Table
    start: int
    count: int
    signals: tuple[PlannedSignal, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    @property
    def is_bits(self) -> bool:
        return self.table in BIT_TABLES

    def describe(self, address_text: AddressText | None = None) -> str:
        """``holding 100..124 (25 registers, 9 signals)``.

        ``address_text`` writes an address as the profile does (``0x2000``), given the signal
        whose style to follow; the range takes the styles of its first and last signal.
        """
        what = "bits" if self.is_bits else "registers"
        if self.count == 1:
            what = what[:-1]
        signals = len(self.signals)
        first, last = self.start, self.end - 1
        text = f"{first}..{last}"
        if address_text is not None and self.signals:
            start = address_text(self.signals[0].signal.name, first)
            end = address_text(max(self.signals, key=lambda p: p.signal.end).signal.name, last)
            text = f"{start}..{end}"
        return (
            f"{self.table.value} {text} ({self.count} {what}, "
            f"{signals} signal{'s' if signals != 1 else ''})"
        )


def request_limit(table: Table, settings: ModbusSettings) -> int:
    """Most registers (or bits) one request of ``table`` may read."""
    if table in BIT_TABLES:
        return settings.max_bits_per_request
    return settings.max_registers_per_request


def gap_limit(table: Table, settings: ModbusSettings) -> int:
    """Most unused addresses a block may read through in ``table``."""
    if table in BIT_TABLES:
        return settings.max_gap * BITS_PER_GAP_REGISTER
    return settings.max_gap


def plan_reads(signals: Iterable[ModbusSignal], settings: ModbusSettings) -> list[PlannedRequest]:
    """The requests that read every signal exactly once, table by table in address order.

    A signal larger than the request limit (which ``check`` reports as an error) gets a request of
    its own, sized to the signal, so the plan always covers every signal.
    """
    by_table: dict[Table, list[ModbusSignal]] = {}
    for signal in signals:
        by_table.setdefault(signal.table, []).append(signal)
    requests: list[PlannedRequest] = []
    for table in _TABLE_ORDER:
        members = sorted(by_table.get(table, ()), key=lambda s: (s.address, s.end))
        if members:
            unreadable = [r for r in settings.unreadable if r.table is table]
            requests += _plan_table(
                table,
                members,
                request_limit(table, settings),
                gap_limit(table, settings),
                unreadable,
            )
    return requests


def _plan_table(
    table: Table,
    signals: Sequence[ModbusSignal],
    limit: int,
    max_gap: int,
    unreadable: Sequence[AddressRange] = (),
) -> list[PlannedRequest]:
    requests: list[PlannedRequest] = []
    block: list[ModbusSignal] = []
    start = end = 0
    for signal in signals:
        if block:
            new_end = max(end, signal.end)
            gap = signal.address - end
            if (
                gap <= max_gap
                and new_end - start <= limit
                and not (
                    gap > 0 and any(r.overlaps(table, end, signal.address) for r in unreadable)
                )
            ):
                block.append(signal)
                end = new_end
                continue
            requests.append(_request(table, start, end, block))
        block, start, end = [signal], signal.address, signal.end
    if block:
        requests.append(_request(table, start, end, block))
    return requests


def _request(table: Table, start: int, end: int, block: list[ModbusSignal]) -> PlannedRequest:
    placed = tuple(PlannedSignal(s, s.address - start) for s in block)
    return PlannedRequest(table, start, end - start, placed)


@dataclass(frozen=True, slots=True)
class GroupPlan:
    group: GroupSpec
    requests: list[PlannedRequest]
    signals: int

    @property
    def per_second(self) -> float:
        """Requests per second this group costs at its interval."""
        return len(self.requests) * 1000.0 / self.group.interval_ms


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """What a poll cycle of every group of a profile costs, against one request per signal."""

    profile_id: str
    settings: ModbusSettings
    groups: list[GroupPlan]

    @property
    def requests_per_cycle(self) -> int:
        """Requests when every group is polled once."""
        return sum(len(g.requests) for g in self.groups)

    @property
    def signals(self) -> int:
        """Signals read per cycle; also the requests one request per signal would cost."""
        return sum(g.signals for g in self.groups)

    @property
    def saving(self) -> float:
        """How many times fewer requests than one per signal (1.0 when nothing merges)."""
        return self.signals / self.requests_per_cycle if self.requests_per_cycle else 1.0

    @property
    def requests_per_second(self) -> float:
        return sum(g.per_second for g in self.groups)

    @property
    def naive_requests_per_second(self) -> float:
        return sum(g.signals * 1000.0 / g.group.interval_ms for g in self.groups)

    def render(self, address_text: AddressText | None = None) -> str:
        """A text report: each group's requests, then the totals.

        Addresses are decimal unless ``address_text`` writes them as the profile does.
        """
        text = address_text or (lambda _key, address: str(address))
        limits = (
            f"max {self.settings.max_registers_per_request} registers / "
            f"{self.settings.max_bits_per_request} bits per request, max gap {self.settings.max_gap}"
        )
        if self.settings.unreadable:
            limits += ", never reading " + ", ".join(
                f"{r.table.value} {text(f'modbus.unreadable[{i}]', r.start)}.."
                f"{text(f'modbus.unreadable[{i}]', r.end)}"
                for i, r in enumerate(self.settings.unreadable)
            )
        lines = [f"profile {self.profile_id} ({limits})"]
        for plan in self.groups:
            lines.append(
                f"  group {plan.group.name} every {plan.group.interval_ms} ms: "
                f"{len(plan.requests)} request(s) for {plan.signals} signal(s)"
            )
            for request in plan.requests:
                names = ", ".join(
                    f"{p.signal.name}@{text(p.signal.name, p.signal.address)}"
                    for p in request.signals
                )
                lines.append(f"    FC{request.function_code} {request.describe(text)}: {names}")
        lines.append(
            f"  per cycle: {self.requests_per_cycle} request(s) vs {self.signals} with one "
            f"request per signal ({self.saving:.1f}x fewer); "
            f"{self.requests_per_second:.2f}/s vs {self.naive_requests_per_second:.2f}/s"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """The figures as plain data, for JSON output and benchmarks."""
        return {
            "profile": self.profile_id,
            "requests_per_cycle": self.requests_per_cycle,
            "one_per_signal": self.signals,
            "saving": round(self.saving, 2),
            "requests_per_second": round(self.requests_per_second, 3),
            "one_per_signal_per_second": round(self.naive_requests_per_second, 3),
            "groups": [
                {
                    "group": g.group.name,
                    "interval_ms": g.group.interval_ms,
                    "signals": g.signals,
                    "requests": [
                        {
                            "function_code": r.function_code,
                            "table": r.table.value,
                            "start": r.start,
                            "count": r.count,
                            "signals": [p.signal.name for p in r.signals],
                        }
                        for r in g.requests
                    ],
                }
                for g in self.groups
            ],
        }


def plan_profile(profile: ModbusProfile, settings: ModbusSettings | None = None) -> ProfilePlan:
    """Plan every group of ``profile`` (with a device's ``settings`` if given, else the profile's)."""
    settings = settings or profile.modbus
    groups = []
    for group in profile.groups:
        members = [s for s in profile.signals if s.group == group.name]
        groups.append(GroupPlan(group, plan_reads(members, settings), len(members)))
    return ProfilePlan(profile.id, settings, groups)
