"""Turn a driver's raw readings into canonical samples: scaling, unit conversion, state mapping, quality.

Each signal is compiled once at start-up into a small converter: pint is asked for the linear
factor and offset from the profile's unit to the canonical unit then, never per sample. A unit
that pint does not know, or that does not convert to the signal's canonical unit, is a
configuration error naming the device and signal.

Example::

    normalizer = compile_device(device)          # may raise ConfigError
    samples = normalizer.normalize(result.readings)
    # RawReading("coolant_temperature", 77.0, ts) with unit degF -> Sample value 25.0 (degC)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from gateway.drivers.base import RawReading, RawValue
from gateway.errors import ConfigError
from gateway.profiles.models import DeviceConfig, SignalBase
from wire.payloads import MachineState, Quality
from wire.signals import SignalKind

if TYPE_CHECKING:
    import pint

MAX_TEXT = 1024
GOOD = Quality.GOOD
BAD = Quality.BAD


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x to build, per sample
class OutSample:
    """A normalized sample; its fields are the wire ``Sample`` fields in order (orjson encodes it)."""

    device: str
    signal: str
    ts_ms: int
    value: bool | int | float | str | None
    quality: Quality


@dataclass(slots=True)
class ReasonedSample(OutSample):
    """A sample that is not good, with why (``BadWaitingForInitialData``, a Modbus exception, a
    conversion problem): the wire ``Sample.reason``. Good samples stay plain ``OutSample``, so
    they carry no ``"reason": null`` on the wire."""

    reason: str


Conversion = tuple[Any, str | None]
"""(value, reason): reason is None when the value is good, else why it is bad."""


@cache
def unit_registry() -> pint.UnitRegistry[Any]:
    """One pint registry for the process, with the electrical units pint lacks."""
    import pint

    registry: pint.UnitRegistry[Any] = pint.UnitRegistry()
    # Reactive power is volt-amperes by dimension; meters label it var/kvar.
    registry.define("var = volt * ampere = VAr")
    return registry


UNIT_ALIASES: Final[dict[str, str]] = {
    "RPM": "rpm",
    "Rpm": "rpm",
    "r/min": "rpm",
    "rev/min": "rpm",
    "Celsius": "degC",
    "\u2103": "degC",  # ℃, one character, as Chinese manuals print it
    "DEG C": "degC",
    "Fahrenheit": "degF",
    "\u2109": "degF",  # ℉
    "KW": "kW",
    "KWH": "kWh",
    "kwh": "kWh",
    "KVA": "kVA",
    "KN": "kN",
    "HZ": "Hz",
    "PSI": "psi",
    "m3/h": "m**3/h",
    "m3/min": "m**3/min",
    "Nm": "N*m",
}
"""Spellings found in device manuals that pint does not read, and the unit each one means.

Only unambiguous ones: ``MPA`` could be megapascal or millipascal and ``Min`` is a megainch to
pint, so those are refused with a hint rather than guessed. Profiles that use an alias work,
with a warning naming the spelling to write (docs/profiles.md "Units")."""


@dataclass(frozen=True, slots=True)
class UnitProblem:
    """What is wrong with a signal's unit: an ``error`` stops the device, a ``warning`` does not."""

    severity: str
    message: str


def unit_problem(
    unit: str | None,
    name: str,
    kind: SignalKind | None = None,
    declared: tuple[str, SignalKind] | None = None,
) -> UnitProblem | None:
    """The one check of a signal's ``unit`` that ``profile validate`` and ``gateway run`` share.

    Returns None when the unit converts to the canonical unit of signal ``name`` as written, a
    warning when it is an alias (``RPM``), and an error when it is unknown or of another
    dimension. ``kind`` is the signal's own ``kind`` when the profile sets one; states and texts
    take no unit, and a name outside the vocabulary is reported elsewhere. ``declared`` is the
    (unit, kind) of a custom signal's declaration, which stands for the vocabulary's entry.
    """
    from wire.signals import SignalSpec, lookup_signal

    spec = lookup_signal(name)
    if declared is not None:
        spec = SignalSpec(name, declared[0], declared[1], "", "")
    if unit is None or spec is None:
        return None
    if (kind or spec.kind) in (SignalKind.STATE, SignalKind.TEXT):
        return None
    canonical = spec.unit or "dimensionless"
    try:
        unit_registry().Quantity(1.0, pint_unit(unit) or "dimensionless")
    except Exception:  # pint raises several unrelated types for a bad unit string
        return UnitProblem(
            "error",
            f"unit {unit!r} is unknown (units are written as pint spells them); the canonical "
            f"unit of {name} is {canonical!r}: write that if the device reports it, else the "
            "device's unit in pint syntax (docs/profiles.md, Units)",
        )
    try:
        linear_conversion(pint_unit(unit), spec.unit)
    except ValueError as exc:
        return UnitProblem(
            "error",
            f"unit {unit!r} does not convert to the canonical unit {canonical!r} of {name}: {exc}",
        )
    if unit.strip() in UNIT_ALIASES:
        return UnitProblem(
            "warning",
            f"unit {unit!r} is read as {pint_unit(unit)!r}; write {pint_unit(unit)!r}",
        )
    return None


def canonical_unit_problem(unit: str) -> str | None:
    """Why ``unit`` cannot be a custom signal's canonical unit (unknown to pint, or an alias
    such as ``RPM`` that a canonical unit never is), or None when it can."""
    text = unit.strip()
    if not text:
        return None
    if text in UNIT_ALIASES:
        return f"{text!r} is a manual's spelling; a canonical unit is written as pint does: {UNIT_ALIASES[text]!r}"
    try:
        unit_registry().Unit(text)
    except Exception:  # pint raises several unrelated types for a bad unit string
        return (
            f"unit {text!r} is unknown (units are written as pint spells them: rpm, degC, kW, "
            "L/min, ...; docs/profiles.md, Units)"
        )
    return None


def same_unit(unit: str, other: str) -> bool:
    """Whether two unit expressions are the same unit (``kW*h`` and ``kWh``; '' is a count)."""
    try:
        return linear_conversion(unit, other) == (1.0, 0.0)
    except ValueError:
        return False


def pint_unit(unit: str) -> str:
    """``unit`` as pint reads it (an alias from ``UNIT_ALIASES`` becomes its meaning)."""
    return UNIT_ALIASES.get(unit.strip(), unit)


def linear_conversion(unit: str, canonical: str) -> tuple[float, float]:
    """``(factor, shift)`` with ``canonical = value * factor + shift``; raises ValueError if impossible."""
    registry = unit_registry()
    source = unit or "dimensionless"
    target = canonical or "dimensionless"
    try:
        zero = registry.Quantity(0.0, source).to(target).magnitude
        one = registry.Quantity(1.0, source).to(target).magnitude
    except Exception as exc:  # pint raises several unrelated types for a bad unit string
        raise ValueError(str(exc)) from None
    return _tidy(float(one) - float(zero)), _tidy(float(zero))


def _tidy(value: float) -> float:
    """Drop float noise from a conversion factor (0.09999999999999999 -> 0.1)."""
    return float(f"{value:.12g}")


def _bad(reason: str) -> Conversion:
    return None, reason


def gauge_converter(factor: float, shift: float) -> Callable[[RawValue], Conversion]:
    """Numbers in the canonical unit; an integer read stays an integer when the factor and
    shift are whole (no conversion, or an integral scale), so ``168`` is not published as
    ``168.0``."""
    is_integral = factor.is_integer() and shift.is_integer()
    int_factor, int_shift = int(factor), int(shift)

    def convert(raw: RawValue) -> Conversion:
        if raw is None or isinstance(raw, str):
            return _bad(f"expected a number, got {raw!r}")
        if is_integral and type(raw) is int:
            return raw * int_factor + int_shift, None
        value = raw * factor + shift
        if not math.isfinite(value):
            return _bad(f"not a finite number: {raw!r}")
        return float(value), None

    return convert


def counter_converter(factor: float, shift: float) -> Callable[[RawValue], Conversion]:
    is_identity = factor == 1.0 and shift == 0.0

    def convert(raw: RawValue) -> Conversion:
        if raw is None or isinstance(raw, str):
            return _bad(f"expected a number, got {raw!r}")
        if is_identity and isinstance(raw, int):
            return int(raw), None
        value = raw * factor + shift
        if not math.isfinite(value):
            return _bad(f"not a finite number: {raw!r}")
        if float(value).is_integer() and abs(value) < 2**53:
            return int(value), None
        return float(value), None

    return convert


def state_converter(
    states: dict[int | str, MachineState] | None,
) -> Callable[[RawValue], Conversion]:
    """Codes (and booleans, which the profile's ``true``/``false`` keys stored as 1/0) or texts
    to machine states; a text matches its key whatever its case."""
    table = {code: state.value for code, state in (states or {}).items()}
    folded = {code.casefold(): state for code, state in table.items() if isinstance(code, str)}
    names = {state.value for state in MachineState}

    def convert(raw: RawValue) -> Conversion:
        if isinstance(raw, str):
            # Controllers that report their mode as text ("AUTO_RUN") map it like a code.
            text = raw.strip()
            mapped = table.get(text) or folded.get(text.casefold())
            if mapped is not None:
                return mapped, None
            if text.casefold() in names:
                return text.casefold(), None
            return _bad(f"unknown state {raw!r}")
        if raw is None:
            return _bad("no value")
        if isinstance(raw, bool):
            code: int | None = int(raw)
        else:
            code = int(raw) if float(raw).is_integer() else None
        state = table.get(code) if code is not None else None
        if state is None:
            return _bad(f"unknown state code {raw}")
        return state, None

    return convert


def alarm_converter(factor: float, shift: float) -> Callable[[RawValue], Conversion]:
    def convert(raw: RawValue) -> Conversion:
        if raw is None:
            return _bad("no value")
        if isinstance(raw, bool | str):
            return raw, None
        value = raw * factor + shift
        if float(value).is_integer():
            return int(value), None
        return float(value), None

    return convert


def text_converter() -> Callable[[RawValue], Conversion]:
    def convert(raw: RawValue) -> Conversion:
        if raw is None:
            return _bad("no value")
        text = raw if isinstance(raw, str) else str(raw)
        return text[:MAX_TEXT], None

    return convert


def compile_signal(signal: SignalBase) -> Callable[[RawValue], Conversion]:
    """The converter of one signal; raises ValueError naming the unit problem."""
    kind = signal.effective_kind
    if kind is SignalKind.STATE:
        return state_converter(signal.states)
    if kind is SignalKind.TEXT:
        return text_converter()
    factor, shift = 1.0, 0.0
    canonical = signal.canonical_unit
    if signal.unit is not None and signal.unit != canonical:
        custom = signal.custom
        declared = (custom.unit, custom.kind) if custom is not None else None
        problem = unit_problem(signal.unit, signal.name, kind, declared)
        if problem is not None and problem.severity == "error":
            raise ValueError(problem.message)
        factor, shift = linear_conversion(pint_unit(signal.unit), canonical)
    factor, shift = signal.scale * factor, signal.offset * factor + shift
    if kind is SignalKind.COUNTER:
        return counter_converter(factor, shift)
    if kind is SignalKind.ALARM:
        return alarm_converter(factor, shift)
    return gauge_converter(factor, shift)


class DeviceNormalizer:
    """Every signal converter of one device; ``normalize`` runs on the hot path."""

    def __init__(self, device_id: str, converters: dict[str, Callable[[RawValue], Conversion]]):
        self.device_id = device_id
        self.converters = converters
        self.bad_samples = 0
        self.unknown_signals = 0
        self.last_bad_reason: dict[str, str] = {}

    def normalize(self, readings: list[RawReading]) -> list[OutSample]:
        out: list[OutSample] = []
        device = self.device_id
        converters = self.converters
        for reading in readings:
            convert = converters.get(reading.signal)
            if convert is None:
                self.unknown_signals += 1
                continue
            quality = reading.quality
            reason: str | None
            if quality is BAD:
                value, reason = None, reading.reason or "bad quality from the device"
            else:
                value, reason = convert(reading.raw)
            if reason is not None:
                quality = Quality.BAD
                self.bad_samples += 1
                self.last_bad_reason[reading.signal] = reason
            elif quality is not GOOD and reading.reason is not None:
                reason = reading.reason  # uncertain: the value stands, with why (OPC UA status)
            if reason is None:
                out.append(OutSample(device, reading.signal, reading.ts_ms, value, quality))
            else:
                sample = ReasonedSample(
                    device, reading.signal, reading.ts_ms, value, quality, reason
                )
                out.append(sample)
        return out


def compile_device(device: DeviceConfig) -> DeviceNormalizer:
    """Compile every signal of ``device``.

    Raises:
        ConfigError: one line per signal whose unit is unknown or of the wrong dimension.
    """
    problems = []
    converters: dict[str, Callable[[RawValue], Conversion]] = {}
    for index, signal in enumerate(device.profile.signals):
        try:
            converters[signal.name] = compile_signal(signal)
        except ValueError as exc:
            problems.append(
                f"{device.source or device.id}: device {device.id}, profile "
                f"{device.profile.id} signals[{index}] ({signal.name}): {exc}"
            )
    if problems:
        raise ConfigError(problems)
    return DeviceNormalizer(device.id, converters)
