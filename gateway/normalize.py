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
from typing import TYPE_CHECKING, Any

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
    def convert(raw: RawValue) -> Conversion:
        if raw is None or isinstance(raw, str):
            return _bad(f"expected a number, got {raw!r}")
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
    table = {code: state.value for code, state in (states or {}).items()}
    names = {state.value for state in MachineState}

    def convert(raw: RawValue) -> Conversion:
        if isinstance(raw, str):
            # Controllers that report their mode as text ("AUTO_RUN") map it like a code.
            mapped = table.get(raw.strip())
            if mapped is not None:
                return mapped, None
            name = raw.strip().lower()
            if name in names:
                return name, None
            return _bad(f"unknown state {raw!r}")
        if raw is None:
            return _bad("no value")
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
        try:
            factor, shift = linear_conversion(signal.unit, canonical)
        except ValueError as exc:
            raise ValueError(
                f"unit {signal.unit!r} does not convert to the canonical unit "
                f"{canonical or 'dimensionless'!r} of {signal.name}: {exc}"
            ) from None
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
