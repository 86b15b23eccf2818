"""Protocol-neutral parts of a device profile and of the site file: signals, groups, devices.

A protocol adds its own subclasses (``gateway/drivers/<name>/models.py``) that narrow
``protocol`` to a literal and give signals an address; the loader builds the discriminated union
from the driver registry, so adding a protocol never touches this module.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wire.payloads import MachineState
from wire.signals import (
    CUSTOM_BASE,
    SIGNALS,
    SignalKind,
    base_name,
    custom_name_problem,
    is_custom,
    lookup_signal,
)

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
SignalName = Annotated[
    str, StringConstraints(pattern=r"^([a-z][a-z0-9_]*:)?[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$")
]


_BOOL_KEYS = {"true": 1, "false": 0}
"""``true``/``false`` as YAML keys (which arrive as text after loading): the codes 1 and 0."""


def _code(key: int | str) -> int | str:
    """A state key as the converter looks it up.

    Whole numbers (however YAML or JSON typed them) are numeric codes, and booleans are the codes
    1 and 0, so ``{true: running, false: idle}`` maps a coil, a register bit or an OPC UA Boolean
    (a bool equals 1 or 0 in a lookup). Any other text is an enumeration name (``AUTO_RUN``).
    """
    if isinstance(key, bool):
        return int(key)
    if isinstance(key, str):
        text = key.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if text.lower() in _BOOL_KEYS:
            return _BOOL_KEYS[text.lower()]
    return key


def _written(states: dict[Any, Any], code: int | str, other_than: Any) -> Any:
    """The first key of ``states`` that stands for ``code``, other than ``other_than``."""
    return next(k for k in states if k is not other_than and _code(k) == code)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class GroupSpec(_Strict):
    """Signals read together on one timer (Modbus) or one subscription (OPC UA)."""

    name: Id
    interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    """Poll period (Modbus) or publishing interval (OPC UA)."""


class Meaning(_Strict):
    """What a custom signal means, in both languages of the web UI."""

    en: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    """In English: ``Coolant pump speed``."""
    zh: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    """In Chinese (zh-CN): ``冷却泵转速``."""


class CustomSignalSpec(_Strict):
    """A signal the profile declares itself, in a vendor namespace (docs/profiles.md)."""

    name: str
    """``namespace:name`` (``acme:coolant_pump_speed``), never a canonical name."""
    kind: SignalKind
    unit: str = ""
    """Its canonical unit in pint syntax (``rpm``); empty for none, and for state and text."""
    meaning: Meaning
    counts_as: str | None = None
    """A canonical counter (``part_count``) it counts as in KPIs; without it, it never counts."""

    @field_validator("name")
    @classmethod
    def _namespaced(cls, name: str) -> str:
        problem = custom_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("unit")
    @classmethod
    def _pint_unit(cls, unit: str, info: ValidationInfo) -> str:
        from gateway.normalize import canonical_unit_problem

        problem = canonical_unit_problem(unit)
        if problem is not None:
            raise ValueError(problem)
        kind = info.data.get("kind")
        if unit.strip() and kind in (SignalKind.STATE, SignalKind.TEXT):
            raise ValueError(f"a {kind.value} signal takes no unit; remove it")
        return unit.strip()

    @field_validator("counts_as")
    @classmethod
    def _canonical_counter(cls, target: str | None, info: ValidationInfo) -> str | None:
        """Checked against ``kind`` and ``unit`` when those are valid (else they are reported)."""
        from gateway.normalize import same_unit

        if target is None:
            return None
        spec = SIGNALS.get(target)
        counters = sorted(n for n, s in SIGNALS.items() if s.kind is SignalKind.COUNTER)
        if spec is None or spec.kind is not SignalKind.COUNTER:
            raise ValueError(
                f"{target!r} is not a canonical counter (one of {', '.join(counters)})"
            )
        kind, unit = info.data.get("kind"), info.data.get("unit")
        if kind is not None and kind is not SignalKind.COUNTER:
            raise ValueError(f"only a counter counts as {target!r}; this signal is a {kind.value}")
        if unit is not None and not same_unit(unit, spec.unit):
            raise ValueError(
                f"{target!r} is counted in {spec.unit!r}; declare unit: {spec.unit!r} (a signal "
                "that reads it converts the device's unit)"
                if spec.unit
                else f"{target!r} is a plain count; declare no unit"
            )
        return target


class SignalBase(_Strict):
    """What every signal has, whatever the protocol.

    The value read from the device (after the driver's decoding) is ``raw``; the gateway then
    computes ``raw * scale + offset`` in ``unit``, converts to the canonical unit of ``name``,
    maps state codes through ``states``, and reports by exception (``deadband``, ``heartbeat_s``).
    """

    name: SignalName
    """Canonical name from docs/signals.md, optionally qualified: ``voltage.l1``; or a custom
    signal the profile declares in ``custom_signals`` (``acme:fan_speed``)."""
    unit: str | None = None
    """Unit of ``raw * scale + offset`` as the device reports it (pint syntax); None = canonical."""
    kind: SignalKind | None = None
    """Defaults to the kind of ``name`` in the vocabulary."""
    scale: float = 1.0
    offset: float = 0.0
    group: Id = "default"
    states: dict[int | str, MachineState] | None = None
    """For ``machine_state``: device code (a number, or a text such as ``AUTO_RUN``) -> state."""
    deadband: float | None = Field(default=None, ge=0)
    """Report a gauge only when it moved more than this (canonical units) since the last report."""
    heartbeat_s: float | None = Field(default=None, gt=0)
    """Report at least this often even when unchanged; None takes the profile default."""
    description: str = ""
    _custom: CustomSignalSpec | None = PrivateAttr(default=None)
    """The declaration of a custom name, set by the profile that declares it."""

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        if is_custom(name):
            if not CUSTOM_BASE.match(base_name(name)):
                raise ValueError(
                    f"{name!r} is not a custom name 'namespace:name' or 'namespace:name.qualifier'"
                )
            return name  # the profile checks that it declares it
        if lookup_signal(name) is None:
            raise ValueError(
                f"{name!r} is not in the canonical signal vocabulary (docs/signals.md); "
                "use a listed name, optionally with a qualifier such as 'voltage.l1', or "
                "declare a custom signal such as 'acme:fan_speed' (docs/profiles.md, "
                "Custom signals)"
            )
        return name

    @field_validator("states", mode="before")
    @classmethod
    def _same_codes(cls, states: Any) -> Any:
        """Keys are written as codes (numbers or booleans, see ``_code``) as text, so an error
        about one value reads ``states.1``; two keys for one code are refused."""
        if not isinstance(states, dict):
            return states
        codes: dict[str, Any] = {}
        for key, value in states.items():
            code = str(_code(key))
            if code in codes:
                raise ValueError(
                    f"keys {key!r} and {_written(states, _code(key), key)!r} are the same state "
                    f"code {_code(key)!r} (true is 1, false is 0); keep one"
                )
            codes[code] = value
        return codes

    @field_validator("states", mode="after")
    @classmethod
    def _numeric_codes(
        cls, states: dict[int | str, MachineState] | None
    ) -> dict[int | str, MachineState] | None:
        """Keys that are whole numbers (or booleans) are numeric codes, however YAML typed them."""
        if states is None:
            return None
        return {_code(key): value for key, value in states.items()}

    @model_validator(mode="after")
    def _states_only_for_state_kind(self) -> SignalBase:
        if is_custom(self.name) and self.kind is None:
            return self  # its kind is declared in the profile, which checks this
        if self.states is not None and self.effective_kind is not SignalKind.STATE:
            raise ValueError("`states` maps codes of a state signal (kind: state) only")
        return self

    @property
    def effective_kind(self) -> SignalKind:
        if self.kind is not None:
            return self.kind
        if self._custom is not None:
            return self._custom.kind
        spec = lookup_signal(self.name)
        return spec.kind if spec else SignalKind.GAUGE

    @property
    def canonical_unit(self) -> str:
        if self._custom is not None:
            return self._custom.unit
        spec = lookup_signal(self.name)
        return spec.unit if spec else ""

    @property
    def custom(self) -> CustomSignalSpec | None:
        """The declaration of this custom signal (None for a canonical one)."""
        return self._custom


class ProfileBase(_Strict):
    """A device profile: everything the gateway knows about one equipment model."""

    id: Id
    protocol: str
    description: str = ""
    models: str = ""
    """What real equipment this profile models (vendor, series, controller)."""
    machine_kind: Id = "generic"
    segment: Literal["345", "367", "common"] = "common"
    heartbeat_s: float = Field(default=60.0, gt=0)
    groups: list[GroupSpec] = Field(default_factory=lambda: [GroupSpec(name="default")])
    custom_signals: list[CustomSignalSpec] = Field(default_factory=list)
    """Signals of this equipment that the canonical vocabulary lacks, in a vendor namespace."""
    signals: list[SignalBase]

    @model_validator(mode="after")
    def _consistent(self) -> ProfileBase:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate group names in {names}")
        problems = custom_signal_problems(
            [(c.name, c.kind.value, c.counts_as) for c in self.custom_signals],
            [(s.name, s.kind and s.kind.value, s.states is not None) for s in self.signals],
        )
        if problems:
            raise ValueError(problems[0])
        declared = {c.name: c for c in self.custom_signals}
        for signal in self.signals:
            if is_custom(signal.name):
                signal._custom = declared[base_name(signal.name)]
        seen: set[str] = set()
        for index, signal in enumerate(self.signals):
            if signal.name in seen:
                raise ValueError(f"signals[{index}].name: {signal.name!r} appears twice")
            seen.add(signal.name)
            if signal.group not in names:
                raise ValueError(
                    f"signals[{index}].group: {signal.group!r} is not one of the groups {names}"
                )
        return self

    def group(self, name: str) -> GroupSpec:
        return next(g for g in self.groups if g.name == name)

    def signals_of(self, group: str) -> list[SignalBase]:
        return [s for s in self.signals if s.group == group]

    def max_silence_s(self) -> dict[str, float]:
        """Per signal, the longest report by exception leaves it unreported while the device is
        connected: the heartbeat counts from the last report, and the heartbeat sample is the
        first read at or after it, so up to one poll interval later (DeviceStatus.max_silence_s)."""
        intervals = {g.name: g.interval_ms / 1000 for g in self.groups}
        return {
            s.name: (s.heartbeat_s or self.heartbeat_s) + intervals[s.group] for s in self.signals
        }


def custom_signal_problems(
    declared: list[tuple[Any, Any, Any]], signals: list[tuple[Any, Any, bool]]
) -> list[str]:
    """``field.path: message`` for custom signals declared twice, read without being declared,
    read with another kind or with ``states`` though not a state, or mapped onto a canonical
    counter the profile also reads.

    ``declared`` holds (name, kind, counts_as) per declaration, ``signals`` (name, kind, has
    states) per signal, as written. Runs on the model and on the raw file (loader), so each
    problem is reported once, in the same pass as the file's other mistakes."""
    problems: list[str] = []
    kinds: dict[Any, Any] = {}
    for index, (name, kind, _) in enumerate(declared):
        if not isinstance(name, str):
            continue
        if name in kinds:
            problems.append(f"custom_signals[{index}].name: {name!r} is declared twice")
        kinds[name] = kind
    read = {base_name(name) for name, _, _ in signals if isinstance(name, str)}
    for index, (_, _, target) in enumerate(declared):
        if isinstance(target, str) and target in read:
            problems.append(
                f"custom_signals[{index}].counts_as: the profile also reads {target!r}; "
                "mapping another signal onto it would count it twice"
            )
    for index, (name, kind, has_states) in enumerate(signals):
        if not isinstance(name, str) or not is_custom(name):
            continue
        base = base_name(name)
        if base not in kinds:
            problems.append(
                f"signals[{index}].name: {name!r} is neither canonical nor declared in "
                f"custom_signals (declare {base!r} there: docs/profiles.md, Custom signals)"
            )
            continue
        declared_kind = kinds[base]
        if kind is not None and declared_kind is not None and str(kind) != str(declared_kind):
            problems.append(
                f"signals[{index}].kind: {name!r} is declared a {declared_kind}, not a {kind}"
            )
        elif has_states and str(kind or declared_kind) != SignalKind.STATE.value:
            problems.append(
                f"signals[{index}].states: `states` maps codes of a state signal only; "
                f"{name!r} is declared a {declared_kind}"
            )
    return problems


class DeviceSpec(_Strict):
    """One device instance in a site file."""

    id: Id
    profile: str
    """A profile id, or a path relative to a profile folder (``gears/gear_hobber.yaml``)."""
    endpoint: str
    """``opc.tcp://host:port``, ``tcp://host:502``, ``rtu:///dev/ttyUSB0?baudrate=9600``,
    ``rtu+tcp://host:port`` (RTU framing through a serial-to-TCP converter)."""
    unit_id: int | None = Field(default=None, ge=0, le=255)
    line: str = ""
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)
    """Per-device overrides of the profile's protocol settings (timeouts, security, ...)."""


class FleetSpec(_Strict):
    """Many identical devices: one profile plus a CSV of instances."""

    profile: str
    csv: str
    """CSV with columns id,host,port[,unit_id][,enterprise][,line][,scheme]."""
    scheme: str = "tcp"


class DeviceConfig(BaseModel):
    """A fully resolved device: its spec, its enterprise and its validated profile."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: Id
    enterprise: Id
    endpoint: str
    unit_id: int | None
    line: str
    profile: ProfileBase
    settings: dict[str, Any] = Field(default_factory=dict)
    source: str = ""
    """Where it was defined (``site.yaml:12``), for messages."""

    def describe(self) -> str:
        unit = f" unit {self.unit_id}" if self.unit_id is not None else ""
        return f"{self.id} ({self.endpoint}{unit})"
