"""The behaviour every simulated machine shares: states, cycles, counters, alarms, power and energy.

A machine is a deterministic function of its seed and the steps it is given: ``step(dt_s)`` advances
a virtual clock, and every random draw comes from the machine's own ``random.Random(seed)``. Nothing
reads the wall clock, so the same seed and the same steps give the same values on every run.

The state machine follows a shop floor: a machine runs cycles until it waits for material (idle),
changes over to the next part (setup), breaks down (fault, with an alarm until repaired) or is
switched off at the end of a shift (off). Dwell times are drawn from the kind's ``Behaviour``;
``dwell_scale`` shrinks them for demos without changing cycle times.

Kinds subclass ``Machine`` and fill in ``sample_gauges`` (analog values, refreshed every
``gauge_period_s`` of virtual time and at every state change, the way a controller refreshes its
data block) and ``on_cycle`` (per-part results). Values are published into ``values`` under canonical
signal names (or vendor-only keys); ``take_changes()`` tells the servers what changed since last time.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from simulators.addressmap import ModbusMap, OpcUaMap
from simulators.companion import CompanionSpec
from wire import MachineState

Value = bool | int | float | str

_EPS: Final = 1e-9
_INF: Final = math.inf

RUNNING, IDLE, SETUP, FAULT, OFF = (
    MachineState.RUNNING,
    MachineState.IDLE,
    MachineState.SETUP,
    MachineState.FAULT,
    MachineState.OFF,
)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm the machine can raise when it faults, and how long its repair takes."""

    code: int
    text: str
    repair_s: tuple[float, float] = (180.0, 1200.0)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Shop-floor parameters of a machine kind (all times in seconds of virtual time).

    Attributes:
        cycle_s: Range of nominal cycle times; each program gets one nominal value in it.
        rated_power_kw: Electrical power at full load.
        programs: Part programs or recipes the machine switches between at changeovers.
        alarms: Alarms it raises in fault.
        running_dwell_s: Mean running time before the machine waits for material (idle).
        idle_dwell_s: Mean waiting time.
        setup_s: Range of changeover durations.
        batch_parts: Range of parts made between changeovers.
        mtbf_s: Mean running time between faults.
        off_share: Share of idle periods that end with the machine switched off.
        off_dwell_s: Mean time switched off.
        setup_share: Share of idle periods that end in setup (service) instead of running; machines
            that make parts also enter setup after each batch.
        idle_power_share: Power when idle, as a share of rated power.
        standby_power_kw: Power when switched off (controller on standby).
        reject_rate: Share of parts rejected.
        initial_weights: Weights of running, idle, setup, off for the state at start.
    """

    cycle_s: tuple[float, float]
    rated_power_kw: float
    programs: tuple[str, ...]
    alarms: tuple[Alarm, ...]
    running_dwell_s: float = 2400.0
    idle_dwell_s: float = 300.0
    setup_s: tuple[float, float] = (600.0, 1800.0)
    batch_parts: tuple[int, int] = (60, 400)
    mtbf_s: float = 5 * 3600.0
    off_share: float = 0.05
    off_dwell_s: float = 1800.0
    setup_share: float = 0.08
    idle_power_share: float = 0.22
    standby_power_kw: float = 0.3
    reject_rate: float = 0.01
    initial_weights: tuple[float, float, float, float] = (0.75, 0.12, 0.08, 0.05)


def derive_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (Python's ``hash`` changes between runs; crc32 does not)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


class Machine:
    """A simulated machine: state machine, cycles, counters, alarms, power and energy.

    Args:
        device_id: Instance id, used in alarms and NodeIds.
        seed: Seed of the machine's random generator.
        dwell_scale: Multiplier for every state dwell time (0.1 = ten times more state changes).
        gauge_period_s: How often analog values refresh, in virtual seconds.
        initial_counts: Starting values of counters (e.g. ``{"stroke_count": 65530}``).
        start_state: State at start instead of a random one.
    """

    kind: ClassVar[str] = ""
    behaviour: ClassVar[Behaviour]
    counters: ClassVar[tuple[str, ...]] = ("part_count", "good_count", "reject_count")
    """Cumulative counters this kind keeps; they start at a seeded, plausible value."""
    makes_parts: ClassVar[bool] = True
    """False for utilities (meters, compressors): no cycles, no part counters."""

    def __init__(
        self,
        device_id: str,
        seed: int,
        *,
        dwell_scale: float = 1.0,
        gauge_period_s: float = 1.0,
        initial_counts: Mapping[str, int | float] | None = None,
        start_state: MachineState | None = None,
    ) -> None:
        if dwell_scale <= 0:
            raise ValueError(f"{device_id}: dwell_scale must be positive, got {dwell_scale}")
        if gauge_period_s <= 0:
            raise ValueError(f"{device_id}: gauge_period_s must be positive, got {gauge_period_s}")
        self.device_id = device_id
        self.seed = seed
        self.rng = random.Random(seed)
        self.dwell_scale = dwell_scale
        self.gauge_period_s = gauge_period_s
        self.t_s = 0.0
        self.values: dict[str, Value] = {}
        self._changed: set[str] = set()
        self._lags: dict[str, float] = {}
        self._setpoints: dict[tuple[int, str], float] = {}
        self.state: MachineState = OFF
        self.alarm: Alarm | None = None
        self.is_forced = False
        self._dwell_left = _INF
        self._next_state = IDLE
        self.program = 0
        self._program_cycle_s = [
            self.rng.uniform(*self.behaviour.cycle_s) for _ in self.behaviour.programs
        ]
        self.cycle_elapsed_s = 0.0
        self._cycle_target_s = self._program_cycle_s[0]
        self._parts_left = self.rng.randint(*self.behaviour.batch_parts)
        self.load_share = 0.0
        self.power_kw = self.behaviour.standby_power_kw
        self._energy_kwh = round(self.rng.uniform(2_000.0, 90_000.0), 3)
        self._run_s = self.rng.uniform(800.0, 30_000.0) * 3600.0
        self.counts: dict[str, float] = {}
        self._seed_counters(initial_counts or {})
        self._last_sample_t = 0.0
        # Spread refreshes of many machines over the period instead of all in the same tick.
        self._next_sample_t = self.rng.uniform(0.0, gauge_period_s)
        self.program = self.rng.randrange(len(self.behaviour.programs))
        self._cycle_target_s = self.next_cycle_s()
        self.set("program_name", self.behaviour.programs[self.program])
        self.jobs = 1
        self.set("job_id", self._job_id())
        self.set("alarm_active", False)
        self.set("alarm_code", 0)
        self.set("alarm_text", "")
        self.set("cycle_time", round(self._cycle_target_s, 2))
        self.setup_values()
        self._enter(start_state or self._initial_state())

    # ----------------------------------------------------------------- hooks for kinds

    def setup_values(self) -> None:
        """Publish values that exist before the first sample (constants, per-cycle results)."""

    def sample_gauges(self, elapsed_s: float) -> None:
        """Refresh analog values; set ``self.load_share`` (0..1) for the power model.

        Args:
            elapsed_s: Virtual time since the previous refresh (for temperature lags).
        """

    def derive_from_power(self) -> None:
        """Publish values computed from the power just refreshed (a meter's per-phase values)."""

    def accumulate(self, dt_s: float) -> None:
        """Integrate quantities that grow with time in the current state (such as arc time)."""

    def judge_part(self) -> bool:
        """Whether the part of the cycle that just completed is good; kinds that measure override."""
        return self.rng.random() >= self.behaviour.reject_rate

    def next_cycle_s(self) -> float:
        """Duration of the next cycle: the program's nominal cycle time with a little jitter."""
        nominal = self._program_cycle_s[self.program]
        return max(0.2, nominal * (1 + self.noise(0.015)))

    def parts_per_cycle(self) -> int:
        """Parts one cycle makes (cavities of a mould, parts of a progressive die)."""
        return 1

    def on_cycle(self, is_good: bool) -> None:
        """Called when a cycle completes, after the part counters moved."""

    def power_draw_kw(self) -> float:
        """Electrical power in the current state; kinds may override."""
        b = self.behaviour
        if self.state == OFF:
            base = b.standby_power_kw
        elif self.state == RUNNING:
            base = b.rated_power_kw * (
                b.idle_power_share + (1 - b.idle_power_share) * self.load_share
            )
        elif self.state == SETUP:
            base = b.rated_power_kw * (b.idle_power_share + 0.08)
        else:
            base = b.rated_power_kw * b.idle_power_share
        return max(0.0, base * (1 + self.noise(0.015)))

    # ----------------------------------------------------------------- public API

    def step(self, dt_s: float) -> None:
        """Advance the virtual clock by ``dt_s`` seconds."""
        if not dt_s > 0:
            raise ValueError(f"{self.device_id}: step needs a positive dt_s, got {dt_s}")
        end = self.t_s + dt_s
        while end - self.t_s > _EPS:
            cycling = self.state == RUNNING and self.makes_parts
            cycle_left = self._cycle_target_s - self.cycle_elapsed_s if cycling else _INF
            chunk = min(
                end - self.t_s, self._dwell_left, self._next_sample_t - self.t_s, cycle_left
            )
            self._advance(max(chunk, 0.0))
            if self._next_sample_t - self.t_s <= _EPS:
                self._next_sample_t += self.gauge_period_s
                self._sample()
            if cycling and self._cycle_target_s - self.cycle_elapsed_s <= _EPS:
                self._complete_cycle()
            if self._dwell_left <= _EPS:
                self._enter(self._next_state)
        self.t_s = end

    def take_changes(self) -> set[str]:
        """Keys of ``values`` that changed since the previous call."""
        changed, self._changed = self._changed, set()
        return changed

    def force_state(self, state: MachineState, *, alarm_code: int | None = None) -> None:
        """Put the machine into ``state`` and keep it there until ``release_state()``.

        Args:
            state: The state to hold.
            alarm_code: For ``fault``, which of the kind's alarms to raise (default: a random one).
        """
        alarm = None
        if alarm_code is not None:
            alarm = next((a for a in self.behaviour.alarms if a.code == alarm_code), None)
            if alarm is None:
                known = ", ".join(str(a.code) for a in self.behaviour.alarms)
                raise ValueError(f"{self.device_id}: no alarm {alarm_code}; known: {known}")
        self.is_forced = True
        self._enter(MachineState(state), alarm=alarm)

    def release_state(self) -> None:
        """Let the state machine run on from the forced state."""
        if self.is_forced:
            self.is_forced = False
            self._enter(self.state, alarm=self.alarm)

    @property
    def energy_kwh(self) -> float:
        """Imported energy so far, integrated exactly (``active_energy`` is its published value)."""
        return self._energy_kwh

    @property
    def cycle_phase(self) -> float:
        """Progress through the current cycle, 0..1."""
        return min(1.0, self.cycle_elapsed_s / self._cycle_target_s)

    # ----------------------------------------------------------------- helpers for kinds

    def _job_id(self) -> str:
        return f"{self.device_id}-J{self.jobs:04d}"

    def set(self, key: str, value: Value) -> None:
        """Publish a value; remembers the key as changed only when the value differs."""
        if self.values.get(key) != value or key not in self.values:
            self.values[key] = value
            self._changed.add(key)

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    def setpoint(self, name: str, low: float, high: float) -> float:
        """A per-program constant in ``[low, high]`` (the same for the same seed and program)."""
        key = (self.program, name)
        u = self._setpoints.get(key)
        if u is None:
            u = self._setpoints[key] = random.Random(derive_seed(self.seed, *key)).random()
        return low + (high - low) * u

    def lag(self, name: str, target: float, tau_s: float, elapsed_s: float, start: float) -> float:
        """First-order approach of a temperature-like quantity to ``target`` with time constant tau."""
        current = self._lags.get(name, start)
        current = target + (current - target) * math.exp(-elapsed_s / tau_s)
        self._lags[name] = current
        return current

    def count(self, name: str, by: float = 1) -> None:
        """Increase a cumulative counter and publish it."""
        self.counts[name] = self.counts.get(name, 0) + by
        value = self.counts[name]
        self.set(name, round(value, 3) if isinstance(value, float) else value)

    # ----------------------------------------------------------------- internals

    def _seed_counters(self, initial: Mapping[str, int | float]) -> None:
        unknown = set(initial) - set(self.counters)
        if unknown:
            raise ValueError(
                f"{self.device_id}: unknown counters {sorted(unknown)}; "
                f"{self.kind} keeps {list(self.counters)}"
            )
        parts = self.rng.randint(2_000, 400_000)
        rejects = int(parts * self.behaviour.reject_rate * self.rng.uniform(0.5, 1.5))
        start = {"part_count": parts, "good_count": parts - rejects, "reject_count": rejects}
        for name in self.counters:
            value = initial.get(name, start.get(name, self.rng.randint(1_000, 200_000)))
            self.counts[name] = value
            self.set(name, value)

    def _initial_state(self) -> MachineState:
        return self.rng.choices((RUNNING, IDLE, SETUP, OFF), self.behaviour.initial_weights)[0]

    def _advance(self, chunk: float) -> None:
        self.accumulate(chunk)
        self.t_s += chunk
        self._energy_kwh += self.power_kw * chunk / 3600.0
        self._dwell_left -= chunk
        if self.state == RUNNING:
            self.cycle_elapsed_s += chunk
            self._run_s += chunk

    def _sample(self) -> None:
        elapsed = self.t_s - self._last_sample_t
        self._last_sample_t = self.t_s
        self.sample_gauges(elapsed)
        self.power_kw = round(self.power_draw_kw(), 3)
        self.set("active_power", self.power_kw)
        self.set("active_energy", round(self._energy_kwh, 3))
        self.set("run_hours", round(self._run_s / 3600.0, 3))
        self.derive_from_power()

    def _complete_cycle(self) -> None:
        self.set("cycle_time", round(self.cycle_elapsed_s, 2))
        is_good = self.judge_part()
        parts = self.parts_per_cycle()
        self.count("part_count", parts)
        self.count("good_count" if is_good else "reject_count", parts)
        self.on_cycle(is_good)
        self.cycle_elapsed_s = 0.0
        self._cycle_target_s = self.next_cycle_s()
        self._parts_left -= 1
        if self._parts_left <= 0 and not self.is_forced:
            self._enter(SETUP)

    def _enter(self, state: MachineState, *, alarm: Alarm | None = None) -> None:
        b = self.behaviour
        scale = self.dwell_scale
        if self.state == FAULT and state != FAULT:
            self.alarm = None
            self.set("alarm_active", False)
            self.set("alarm_code", 0)
            self.set("alarm_text", "")
        self.state = state
        self.set("machine_state", state.value)
        if state == RUNNING:
            to_fault = self.rng.expovariate(1.0 / b.mtbf_s) * scale
            to_wait = self.rng.expovariate(1.0 / b.running_dwell_s) * scale
            self._dwell_left, self._next_state = (
                (to_fault, FAULT) if to_fault < to_wait else (to_wait, IDLE)
            )
        elif state == IDLE:
            self._dwell_left = self.rng.expovariate(1.0 / b.idle_dwell_s) * scale
            draw = self.rng.random()
            self._next_state = (
                OFF
                if draw < b.off_share
                else SETUP
                if draw < b.off_share + b.setup_share
                else RUNNING
            )
        elif state == SETUP:
            if len(b.programs) > 1:
                self.program = (self.program + 1 + self.rng.randrange(len(b.programs) - 1)) % len(
                    b.programs
                )
            self.set("program_name", b.programs[self.program])
            # A changeover starts the next job (order): companion specs report it.
            self.jobs += 1
            self.set("job_id", self._job_id())
            self._parts_left = self.rng.randint(*b.batch_parts)
            self.cycle_elapsed_s = 0.0
            self._cycle_target_s = self.next_cycle_s()
            self._dwell_left = self.rng.uniform(*b.setup_s) * scale
            self._next_state = RUNNING
        elif state == FAULT:
            self.alarm = alarm or self.rng.choice(b.alarms)
            self.set("alarm_active", True)
            self.set("alarm_code", self.alarm.code)
            self.set("alarm_text", self.alarm.text)
            self.cycle_elapsed_s = 0.0
            self._dwell_left = self.rng.uniform(*self.alarm.repair_s) * scale
            self._next_state = IDLE
        else:
            self._dwell_left = self.rng.expovariate(1.0 / b.off_dwell_s) * scale
            self._next_state = IDLE
        if self.is_forced:
            self._dwell_left = _INF
        self._sample()


@dataclass(frozen=True, slots=True)
class MachineKind:
    """A kind of machine: its behaviour model, its address map and its manual's prose.

    Attributes:
        name: The kind's id used in scenarios (``bearing_lathe``).
        title: Manual title.
        segment: ``345`` (bearings, gears), ``367`` (auto parts) or ``common``.
        summary: What real equipment it models, for the manual and the profile header.
        model: The behaviour model class.
        address_map: Where the servers put each value.
        notes: Extra manual paragraphs (quirks a profile author must know).
        companion: The companion specification's address space the kind can also serve
            (``companion_spec: true`` on an instance).
    """

    name: str
    title: str
    segment: str
    summary: str
    model: type[Machine]
    address_map: ModbusMap | OpcUaMap
    notes: tuple[str, ...] = ()
    companion: CompanionSpec | None = None

    @property
    def protocol(self) -> str:
        return self.address_map.protocol

    def alarms(self) -> tuple[Alarm, ...]:
        return self.model.behaviour.alarms
