"""Load profiles and site files from YAML, resolving ``extends`` and CSV fleets.

Every problem is reported as ``file:line: field.path: message`` and all of them at once, so a
service provider fixes a file in one pass.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from gateway.drivers.registry import DRIVERS, profile_models
from gateway.errors import ConfigError
from gateway.profiles.models import (
    DeviceConfig,
    DeviceSpec,
    FleetSpec,
    ProfileBase,
    custom_signal_problems,
)
from wire.signals import SignalKind

Path_ = tuple[str | int, ...]
Lines = dict[Path_, tuple[str, int]]
"""Field path -> (file, 1-based line) of where that value was written."""

REPO_PROFILES = Path(str(resources.files("device_profiles")))
"""The shipped library: in the source tree, or installed beside the code as package data."""


@dataclass
class LoadedProfile:
    profile: ProfileBase
    file: str
    lines: Lines
    warnings: list[str] = field(default_factory=list)
    """``file:line: field.path: message`` of what works but should be written otherwise (a
    unit alias such as ``RPM``); ``profile validate`` prints them and ``gateway run`` logs them."""
    number_styles: dict[str, NumberStyle] = field(default_factory=dict)
    """Signal name (or ``modbus.unreadable[i]``) -> how its address was written, when not in
    decimal (``0x2000``), so tools print addresses as the profile writes them."""

    def where(self, path: str | Path_) -> str:
        """``file:line: path`` for a field path such as ``signals[3].address``."""
        loc = parse_field_path(path) if isinstance(path, str) else path
        return f"{locate(self.lines, loc, self.file)}: {format_path(loc)}"


@dataclass
class DevicePlaces:
    """Where the fields of each device entry of a site file were written."""

    file: str
    lines: Lines
    paths: dict[str, Path_] = field(default_factory=dict)
    """Device id -> its entry's path (``("devices", 3)``); fleet devices have none."""

    def where(self, device_id: str, field_path: str) -> str | None:
        """``site.yaml:14: devices[3].settings.timeout_s`` for a field of a device entry."""
        prefix = self.paths.get(device_id)
        if prefix is None:
            return None
        loc = (*prefix, *parse_field_path(field_path))
        return f"{locate(self.lines, loc, self.file)}: {format_path(loc)}"


@dataclass
class Site:
    """A site file: the gateway's own settings section(s) and its resolved devices."""

    file: str
    settings: dict[str, Any]
    devices: list[DeviceConfig]
    profiles: dict[str, LoadedProfile] = field(default_factory=dict)
    places: DevicePlaces | None = None
    """Where each device entry's fields were written, for messages about them."""

    @property
    def warnings(self) -> list[str]:
        """The warnings of every profile the site uses, each once."""
        return [w for loaded in self.profiles.values() for w in loaded.warnings]


NumberStyle = tuple[str, str]
"""``(prefix, format spec)`` of a number written in another base: ``("0x", "04X")``."""


def number_style(value: Any) -> NumberStyle | None:
    """How a YAML integer was written, if not in decimal (ruamel keeps the form on the value)."""
    from ruamel.yaml.scalarint import BinaryInt, HexCapsInt, HexInt, OctalInt

    width = getattr(value, "_width", None) or ""
    if isinstance(value, HexCapsInt):
        return ("0x", f"0{width}X")
    if isinstance(value, HexInt):
        digits = f"{int(value):x}"
        # ruamel reads 0x20AB as HexInt too: keep capitals when they were written.
        return ("0x", f"0{width}{'x' if digits == digits.lower() else 'X'}")
    if isinstance(value, OctalInt):
        return ("0o", f"0{width}o")
    if isinstance(value, BinaryInt):
        return ("0b", f"0{width}b")
    return None


def format_number(value: int, style: NumberStyle | None) -> str:
    """``value`` written in ``style`` (decimal without one)."""
    if style is None:
        return str(value)
    prefix, spec = style
    return prefix + format(value, spec)


def _number_styles(data: dict[str, Any]) -> dict[str, NumberStyle]:
    """Styles of the signals' addresses (by signal name) and of the ranges of
    ``modbus.unreadable`` (``modbus.unreadable[0]``, from its ``start``)."""
    styles: dict[str, NumberStyle] = {}
    modbus = data.get("modbus")
    ranges = modbus.get("unreadable") if isinstance(modbus, dict) else None
    for index, item in enumerate(ranges if isinstance(ranges, list) else []):
        style = number_style(item.get("start")) if isinstance(item, dict) else None
        if style is not None:
            styles[f"modbus.unreadable[{index}]"] = style
    signals = data.get("signals")
    for signal in signals if isinstance(signals, list) else []:
        if isinstance(signal, dict) and isinstance(signal.get("name"), str):
            style = number_style(signal.get("address"))
            if style is not None:
                styles[signal["name"]] = style
    return styles


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return _yaml().load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([f"{path}:{line}: YAML syntax: {exc.problem or exc}"]) from None


def record_lines(node: Any, file: str, prefix: Path_ = (), out: Lines | None = None) -> Lines:
    """Map every field path under ``node`` to where it was written."""
    out = {} if out is None else out
    if isinstance(node, CommentedMap):
        for key in node:
            line = node.lc.key(key)[0] + 1
            out[(*prefix, key)] = (file, line)
            record_lines(node[key], file, (*prefix, key), out)
    elif isinstance(node, CommentedSeq):
        for index, item in enumerate(node):
            out[(*prefix, index)] = (file, node.lc.item(index)[0] + 1)
            record_lines(item, file, (*prefix, index), out)
    return out


def locate(lines: Lines, loc: Path_, default_file: str) -> str:
    """The best ``file:line`` for an error at ``loc``: the deepest path that was written."""
    candidates = [loc[i:] for i in range(len(loc))]  # union tags may prefix the real path
    for cand in candidates:
        for end in range(len(cand), 0, -1):
            hit = lines.get(cand[:end])
            if hit:
                return f"{hit[0]}:{hit[1]}"
    root = lines.get(())  # a sub-tree's own line (see _sub): an error about the item as a whole
    return f"{root[0]}:{root[1]}" if root else f"{default_file}:1"


def format_path(loc: Path_) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_field_path(path: str) -> Path_:
    parts: list[str | int] = []
    for chunk in path.replace("]", "").replace("[", ".").split("."):
        if chunk:
            parts.append(int(chunk) if chunk.isdigit() else chunk)
    return tuple(parts)


_MESSAGE_PATH = re.compile(r"^([a-z_]+\[\d+\](?:\.[a-z_]+)*): (.*)$", re.DOTALL)
"""A message that starts with the field path it is about."""


def validation_problems(
    exc: ValidationError, lines: Lines, file: str, drop: int = 0, prefix: Path_ = ()
) -> list[str]:
    """``file:line: field.path: message`` for each error; ``prefix`` is where the validated
    item sits in the file (``("devices", 3)``), for items validated one by one."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])[drop:]
        if loc and isinstance(loc[0], str) and loc[0] in DRIVERS and not prefix:
            # The discriminated union's tag; a field of the same name (`opcua:`) stays.
            loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ("protocol",)  # the discriminator itself is wrong or missing
        message = err["msg"].removeprefix("Value error, ")
        inner = _MESSAGE_PATH.match(message)
        if inner:  # a model-level check names the field itself: `signals[2].group: ...`
            loc = (*loc, *parse_field_path(inner.group(1)))
            message = inner.group(2)
        loc = (*prefix, *loc)
        problems.append(f"{locate(lines, loc, file)}: {format_path(loc)}: {message}")
    return problems


_PROFILE_ADAPTER: TypeAdapter[Any] | None = None


def _profile_adapter() -> TypeAdapter[Any]:
    global _PROFILE_ADAPTER
    if _PROFILE_ADAPTER is None:
        union = Union[profile_models()]  # type: ignore[valid-type]  # noqa: UP007  # built from the registry
        _PROFILE_ADAPTER = TypeAdapter(Annotated[union, Field(discriminator="protocol")])  # type: ignore[arg-type]  # a run-time union
    return _PROFILE_ADAPTER


def profile_json_schema() -> dict[str, Any]:
    return _profile_adapter().json_schema()


class ProfileResolver:
    """Finds profiles by path or id in an ordered list of folders, caching what it loaded."""

    def __init__(self, search_paths: list[Path] | None = None) -> None:
        self.search_paths = [p.resolve() for p in (search_paths or [])] + [REPO_PROFILES]
        self._cache: dict[Path, LoadedProfile] = {}
        self._ids: dict[bool, dict[str, Path]] = {}
        self._beside: dict[Path, dict[str, Path]] = {}

    def find(self, ref: str, relative_to: Path | None = None) -> Path:
        candidates = []
        if ref.endswith((".yaml", ".yml")):
            if relative_to is not None:
                candidates.append(relative_to / ref)
            candidates += [base / ref for base in self.search_paths]
            candidates.append(Path(ref))
            for cand in candidates:
                if cand.is_file():
                    return cand.resolve()
            raise ConfigError(
                [f"profile {ref!r} not found in {[str(p) for p in self.search_paths]}"]
            )
        # Folders given first, then beside the file that names it, wherever that file is
        # (docs/profiles.md, Reuse), then the shipped library.
        path = self._id_index(shipped=False).get(ref)
        if path is None and relative_to is not None:
            path = self._folder_ids(relative_to.resolve()).get(ref)
        if path is None:
            path = self._id_index(shipped=True).get(ref)
        if path is None:
            folders = [str(p) for p in self.search_paths]
            if relative_to is not None:
                folders.insert(0, str(relative_to))
            # The folder of the naming file is often also a search path: name it once.
            raise ConfigError([f"no profile with id {ref!r} in {list(dict.fromkeys(folders))}"])
        return path

    def _id_index(self, *, shipped: bool) -> dict[str, Path]:
        """Ids in the shipped library, or in the folders given (earlier folders win)."""
        ids = self._ids.get(shipped)
        if ids is None:
            ids = self._ids[shipped] = {}
            folders = [REPO_PROFILES] if shipped else self.search_paths[:-1]
            for base in reversed(folders):
                for path in sorted(base.rglob("*.yaml")) if base.is_dir() else []:
                    profile_id = _profile_id(path)
                    if profile_id is not None:
                        ids[profile_id] = path.resolve()
        return ids

    def _folder_ids(self, folder: Path) -> dict[str, Path]:
        """Profile ids of the YAML files directly in ``folder`` (not below: a profile kept in a
        home or project folder must not make the loader read the whole tree)."""
        ids = self._beside.get(folder)
        if ids is None:
            ids = {}
            for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
                profile_id = _profile_id(path)
                if profile_id is not None and path.suffix in (".yaml", ".yml"):
                    ids.setdefault(profile_id, path.resolve())
            self._beside[folder] = ids
        return ids

    def load(self, ref: str, relative_to: Path | None = None) -> LoadedProfile:
        path = self.find(ref, relative_to)
        if path not in self._cache:
            data, lines = self._merged(path, chain=())
            if data.get("abstract"):
                where = locate(lines, ("abstract",), str(path))
                raise ConfigError(
                    [
                        f"{path.name} is an abstract base ({where}: abstract: true); a device "
                        "needs a profile that extends it"
                    ]
                )
            unit_errors, unit_warnings = unit_findings(data, lines, str(path))
            try:
                model = _profile_adapter().validate_python(_plain(data))
            except ValidationError as exc:
                problems = validation_problems(exc, lines, str(path))
                problems += [
                    p for p in structure_problems(data, lines, str(path)) if p not in problems
                ]
                problems += checks_of_the_rest(data, exc, lines, str(path))
                raise ConfigError(problems + unit_errors) from None
            if unit_errors:
                raise ConfigError(unit_errors)
            self._cache[path] = LoadedProfile(
                model, str(path), lines, unit_warnings, _number_styles(data)
            )
        return self._cache[path]

    def _merged(self, path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], Lines]:
        if path in chain:
            cycle = " -> ".join(str(p) for p in (*chain, path))
            raise ConfigError([f"{path}:1: extends: cycle {cycle}"])
        data = read_yaml(path)
        if not isinstance(data, CommentedMap):
            raise ConfigError(
                [f"{path}:1: a profile is a mapping of fields (id, protocol, signals)"]
            )
        lines = record_lines(data, str(path))
        base_ref = data.get("extends")
        if base_ref is None:
            return dict(data), lines
        base_path = self.find(str(base_ref), relative_to=path.parent)
        base, base_lines = self._merged(base_path, (*chain, path))
        return _merge(base, base_lines, data, lines)


def _profile_id(path: Path) -> str | None:
    """The ``id`` a YAML file declares, or None (not YAML, not a mapping, no id)."""
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except (MarkedYAMLError, OSError):
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return str(data["id"])
    return None


def structure_problems(data: dict[str, Any], lines: Lines, file: str) -> list[str]:
    """Signals in undefined groups and repeated signal names, found on the raw data.

    The model finds these too, but pydantic runs model-level checks only once every field is
    valid; checking the raw data as well reports them in the same pass as field mistakes.
    """
    groups = data.get("groups")
    if groups is None:
        names: list[Any] = ["default"]
    elif isinstance(groups, list):
        names = [g.get("name") for g in groups if isinstance(g, dict)]
    else:
        return []
    problems: list[str] = []
    seen: set[Any] = set()
    for index, signal in enumerate(data.get("signals") or []):
        if not isinstance(signal, dict):
            continue
        name, group = signal.get("name"), signal.get("group", "default")
        if name in seen:
            where = locate(lines, ("signals", index, "name"), file)
            problems.append(f"{where}: signals[{index}].name: {name!r} appears twice")
        seen.add(name)
        if group not in names:
            where = locate(lines, ("signals", index, "group"), file)
            problems.append(
                f"{where}: signals[{index}].group: {group!r} is not one of the groups {names}"
            )
    return problems + _custom_structure_problems(data, lines, file)


def _custom_structure_problems(data: dict[str, Any], lines: Lines, file: str) -> list[str]:
    """The profile-level checks of custom signals (``custom_signal_problems``) on the raw data."""
    declared = data.get("custom_signals") or []
    signals = data.get("signals") or []
    if not isinstance(declared, list) or not isinstance(signals, list):
        return []
    none: dict[
        str, Any
    ] = {}  # an item that is not a mapping keeps its index, with nothing to check
    problems = custom_signal_problems(
        [
            (d.get("name"), d.get("kind"), d.get("counts_as"))
            for d in (d if isinstance(d, dict) else none for d in declared)
        ],
        [
            (s.get("name"), s.get("kind"), s.get("states") is not None)
            for s in (s if isinstance(s, dict) else none for s in signals)
        ],
    )
    out = []
    for problem in problems:
        path, _, message = problem.partition(": ")
        loc = parse_field_path(path)
        out.append(f"{locate(lines, loc, file)}: {format_path(loc)}: {message}")
    return out


CHECK_ENDPOINTS: dict[str, str] = {
    "modbus": "tcp://127.0.0.1:502",
    "opcua": "opc.tcp://127.0.0.1:4840",
}
"""Stand-in endpoints for a driver's static check of a profile on its own."""


def checks_of_the_rest(
    data: dict[str, Any], exc: ValidationError, lines: Lines, file: str
) -> list[str]:
    """The driver's static-check errors in the parts of a profile that are valid.

    The driver checks a validated profile (addresses past 65535, values larger than a request,
    ``scale`` on a bool), so one bad field would hide them until the next run. Here signals with
    field errors are left out and bad protocol settings fall back to their defaults; if the rest
    validates, the driver checks it and its errors come back with their own lines. Anything else
    wrong (the protocol, the groups) leaves nothing to check: ``[]``.
    """
    plain = _plain(data)
    bad_signals: set[int] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        if loc and isinstance(loc[0], str) and loc[0] in DRIVERS:
            loc = loc[1:]  # the union tag
        inner = _MESSAGE_PATH.match(err["msg"].removeprefix("Value error, "))
        if inner:
            loc = (*loc, *parse_field_path(inner.group(1)))
        if len(loc) >= 2 and loc[0] == "signals" and isinstance(loc[1], int):
            bad_signals.add(loc[1])
        elif len(loc) >= 2 and loc[0] in DRIVERS and isinstance(plain.get(loc[0]), dict):
            plain[loc[0]].pop(loc[1], None)  # a bad setting: check with its default
        else:
            return []
    signals = plain.get("signals")
    if not isinstance(signals, list):
        return []
    kept = [index for index in range(len(signals)) if index not in bad_signals]
    plain["signals"] = [signals[index] for index in kept]
    try:
        profile = _profile_adapter().validate_python(plain)
        driver = DRIVERS[profile.protocol].load()
    except (ValidationError, ImportError):
        return []
    device = DeviceConfig(
        id=profile.id,
        enterprise="check",
        endpoint=CHECK_ENDPOINTS.get(profile.protocol, ""),
        unit_id=None,
        line="",
        profile=profile,
        source=file,
    )
    problems: list[str] = []
    for problem in driver.check(device):
        if problem.severity != "error" or not problem.where or problem.where.startswith("device."):
            continue  # the device's own fields are checked where a site names it
        loc = parse_field_path(problem.where)
        if len(loc) >= 2 and loc[0] == "signals" and isinstance(loc[1], int):
            loc = ("signals", kept[loc[1]], *loc[2:])
        problems.append(f"{locate(lines, loc, file)}: {format_path(loc)}: {problem.message}")
    return problems


def unit_findings(data: dict[str, Any], lines: Lines, file: str) -> tuple[list[str], list[str]]:
    """Errors and warnings about the signals' units, found on the raw data.

    The same check (``normalize.unit_problem``) decides at ``gateway run``, so a unit that
    ``validate`` passes runs, and one ``run`` refuses fails ``validate``. Checking the raw data
    reports unit errors in the same pass as field mistakes elsewhere in the file.
    """
    from gateway.normalize import unit_problem

    errors: list[str] = []
    warnings: list[str] = []
    declared = _declared_units(data)
    signals = data.get("signals")
    for index, signal in enumerate(signals if isinstance(signals, list) else []):
        if not isinstance(signal, dict):
            continue
        name, unit, kind = signal.get("name"), signal.get("unit"), signal.get("kind")
        if not isinstance(name, str) or not isinstance(unit, str):
            continue
        problem = unit_problem(
            unit,
            name,
            SignalKind(kind) if kind in set(SignalKind) else None,
            declared.get(name.split(".", 1)[0]),
        )
        if problem is not None:
            where = f"{locate(lines, ('signals', index, 'unit'), file)}: signals[{index}].unit"
            (errors if problem.severity == "error" else warnings).append(
                f"{where}: {problem.message}"
            )
    return errors, warnings


def _declared_units(data: dict[str, Any]) -> dict[str, tuple[str, SignalKind]]:
    """(unit, kind) of each well-formed custom signal declaration in the raw data."""
    from gateway.normalize import canonical_unit_problem

    out: dict[str, tuple[str, SignalKind]] = {}
    items = data.get("custom_signals")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        unit, kind = item.get("unit", ""), item.get("kind")
        if kind in set(SignalKind) and isinstance(unit, str) and not canonical_unit_problem(unit):
            out[item["name"]] = (unit.strip(), SignalKind(kind))
    return out


def _merge(
    base: dict[str, Any], base_lines: Lines, child: dict[str, Any], child_lines: Lines
) -> tuple[dict[str, Any], Lines]:
    """Child fields replace the base's; signals and groups merge by name, field by field."""
    merged = {k: v for k, v in base.items() if k != "abstract"}
    lines = dict(base_lines)
    for key, value in child.items():
        if key == "extends":
            continue
        if key in ("signals", "groups", "custom_signals") and isinstance(value, list):
            merged[key], lines = _merge_named(base.get(key) or [], value, key, lines, child_lines)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
            lines.update({p: v for p, v in child_lines.items() if p[:1] == (key,)})
        else:
            merged[key] = value
            lines = {p: v for p, v in lines.items() if p[:1] != (key,)}
            lines.update({p: v for p, v in child_lines.items() if p[:1] == (key,)})
    return merged, lines


def _merge_named(
    base_items: list[Any], child_items: list[Any], key: str, base_lines: Lines, child_lines: Lines
) -> tuple[list[Any], Lines]:
    lines = {p: v for p, v in base_lines.items() if p[:1] != (key,)}
    result: list[dict[str, Any]] = []
    origin: list[list[tuple[Lines, int]]] = []  # per merged item: (lines, source index) layers
    by_name: dict[Any, int] = {}
    for index, item in enumerate(base_items):
        by_name[item.get("name") if isinstance(item, dict) else None] = len(result)
        result.append(dict(item) if isinstance(item, dict) else item)
        origin.append([(base_lines, index)])
    for index, item in enumerate(child_items):
        name = item.get("name") if isinstance(item, dict) else None
        if name is not None and name in by_name:
            slot = by_name[name]
            if item.get("remove"):
                result[slot] = None  # type: ignore[call-overload]
                continue
            result[slot] = {**result[slot], **item}
            origin[slot].append((child_lines, index))
        else:
            by_name[name] = len(result)
            result.append(dict(item) if isinstance(item, dict) else item)
            origin.append([(child_lines, index)])
    kept = [(item, layers) for item, layers in zip(result, origin, strict=True) if item is not None]
    for new_index, (_, layers) in enumerate(kept):
        for src_lines, src_index in layers:
            for path, where in src_lines.items():
                if path[:2] == (key, src_index):
                    lines[(key, new_index, *path[2:])] = where
    return [item for item, _ in kept], lines


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_site(path: Path, extra_profile_paths: list[Path] | None = None) -> Site:
    """Read a site file: its settings sections, and every device with its profile resolved.

    Raises:
        ConfigError: listing every problem in the site file and the profiles it uses.
    """
    data = read_yaml(path)
    if not isinstance(data, CommentedMap):
        raise ConfigError([f"{path}:1: a site file is a mapping (gateway, mqtt, devices, ...)"])
    file = str(path)
    lines = record_lines(data, file)
    folders = [path.parent / p for p in data.get("profile_paths", [])] + (extra_profile_paths or [])
    resolver = ProfileResolver([*folders, path.parent])
    enterprise = str((data.get("gateway") or {}).get("enterprise", ""))
    problems: list[str] = []
    devices: list[DeviceConfig] = []
    specs: list[tuple[DeviceSpec, str, str, Path_ | None]] = []

    places = DevicePlaces(file, lines)
    for index, raw in enumerate(data.get("devices") or []):
        where = locate(lines, ("devices", index), file)
        try:
            spec = DeviceSpec.model_validate(_plain(raw))
        except ValidationError as exc:
            problems += validation_problems(exc, lines, file, prefix=("devices", index))
            continue
        specs.append(
            (
                spec,
                raw.get("enterprise", enterprise) if isinstance(raw, dict) else enterprise,
                where,
                ("devices", index),
            )
        )

    for index, raw in enumerate(data.get("fleets") or []):
        try:
            fleet = FleetSpec.model_validate(_plain(raw))
        except ValidationError as exc:
            problems += validation_problems(exc, lines, file, prefix=("fleets", index))
            continue
        try:
            specs += [(*s, None) for s in _fleet_devices(fleet, path.parent, enterprise)]
        except ConfigError as exc:
            problems += exc.problems

    def field_at(entry: Path_ | None, where: str, name: str) -> str:
        """``site.yaml:7: devices[2].profile``, or ``fleet.csv:3: profile`` for a CSV row."""
        if entry is None:
            return f"{where}: {name}"
        return f"{locate(lines, (*entry, name), file)}: {format_path((*entry, name))}"

    profiles: dict[str, LoadedProfile] = {}
    seen: dict[str, str] = {}
    for spec, ent, where, entry in specs:
        if spec.id in seen:
            problems.append(
                f"{field_at(entry, where, 'id')}: device {spec.id!r} is defined twice "
                f"(also {seen[spec.id]})"
            )
            continue
        seen[spec.id] = where
        if entry is not None:
            places.paths[spec.id] = entry
        if not spec.enabled:
            continue
        try:
            loaded = resolver.load(spec.profile, relative_to=path.parent)
        except ConfigError as exc:
            problems += [
                f"{field_at(entry, where, 'profile')}: {p}" if not p.startswith("/") else p
                for p in exc.problems
            ]
            continue
        profiles[loaded.profile.id] = loaded
        if not ent:
            problems.append(
                f"{field_at(entry, where, 'enterprise')}: missing (set gateway.enterprise or "
                "per device)"
            )
            continue
        devices.append(
            DeviceConfig(
                id=spec.id,
                enterprise=ent,
                endpoint=spec.endpoint,
                unit_id=spec.unit_id,
                line=spec.line,
                profile=bind_profile(loaded.profile, spec.id),
                settings=spec.settings,
                source=where,
            )
        )
    problems += check_devices(devices, profiles, places)
    if problems:
        raise ConfigError(problems)
    settings = {
        k: _plain(v) for k, v in data.items() if k not in ("devices", "fleets", "profile_paths")
    }
    return Site(file, settings, devices, profiles, places)


DEVICE_PLACEHOLDER = "{device}"
"""Stands for the device's id in a signal's address, where a server names nodes per machine."""
_NOT_ADDRESSES = frozenset({"name", "unit", "group", "description"})


def bind_profile(profile: ProfileBase, device_id: str) -> ProfileBase:
    """``profile`` with ``{device}`` in its signals' addresses replaced by ``device_id``.

    Servers that host several machines name their nodes per machine
    (``nsu=urn:line-server;s=grinder-07.Spindle.Speed``); a profile says
    ``s={device}.Spindle.Speed`` once and every device gets its own nodes. A profile without the
    placeholder is returned as it is.
    """
    signals = []
    changed = False
    for signal in profile.signals:
        updates = {
            key: value.replace(DEVICE_PLACEHOLDER, device_id)
            for key in type(signal).model_fields
            if key not in _NOT_ADDRESSES
            and isinstance(value := getattr(signal, key), str)
            and DEVICE_PLACEHOLDER in value
        }
        changed = changed or bool(updates)
        signals.append(signal.model_copy(update=updates) if updates else signal)
    return profile.model_copy(update={"signals": signals}) if changed else profile


def _sub(lines: Lines, prefix: Path_) -> Lines:
    """Lines under ``prefix`` re-rooted so that pydantic's relative locs find them."""
    out = {
        p[len(prefix) :]: v
        for p, v in lines.items()
        if p[: len(prefix)] == prefix and len(p) > len(prefix)
    }
    if prefix in lines:
        out[()] = lines[prefix]
    return out


def _fleet_devices(
    fleet: FleetSpec, folder: Path, enterprise: str
) -> list[tuple[DeviceSpec, str, str]]:
    csv_path = (folder / fleet.csv).resolve()
    if not csv_path.is_file():
        raise ConfigError([f"{csv_path}:1: fleet CSV not found"])
    out: list[tuple[DeviceSpec, str, str]] = []
    problems: list[str] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for row_number, row in enumerate(csv.DictReader(fh), start=2):
            line = f"{csv_path}:{row_number}"
            missing = [c for c in ("id", "host", "port") if not (row.get(c) or "").strip()]
            if missing:
                problems.append(f"{line}: missing column value(s) {missing}")
                continue
            scheme = (row.get("scheme") or fleet.scheme).strip()
            endpoint = f"{scheme}://{row['host'].strip()}:{row['port'].strip()}"
            try:
                spec = DeviceSpec(
                    id=row["id"].strip(), profile=fleet.profile, endpoint=endpoint,
                    unit_id=int(row["unit_id"]) if (row.get("unit_id") or "").strip() else None,
                    line=(row.get("line") or "").strip(),
                )  # fmt: skip
            except (ValidationError, ValueError) as exc:
                problems.append(f"{line}: {exc}")
                continue
            out.append((spec, (row.get("enterprise") or "").strip() or enterprise, line))
    if problems:
        raise ConfigError(problems)
    return out


def check_devices(
    devices: list[DeviceConfig],
    profiles: dict[str, LoadedProfile],
    places: DevicePlaces | None = None,
) -> list[str]:
    """Run each driver's static ``check``; map its field paths back to the profile's lines."""
    problems: list[str] = []
    for device in devices:
        entry = DRIVERS[device.profile.protocol]
        try:
            driver = entry.load()
        except ImportError as exc:
            problems.append(f"{device.source}: driver {entry.name!r} cannot load: {exc}")
            continue
        loaded = profiles.get(device.profile.id)
        for problem in driver.check(device):
            if problem.severity != "error":
                continue
            place = place_problem(problem.where, device, loaded, places)
            problems.append(f"{place}: {problem.message} (device {device.id})")
    return problems


def place_problem(
    where: str,
    device: DeviceConfig,
    loaded: LoadedProfile | None,
    places: DevicePlaces | None = None,
) -> str:
    """``file:line: field`` of a driver's problem.

    Paths into the profile (``signals[3].address``) point into the profile file; paths starting
    with ``device.`` (``device.settings.timeout_s``) are fields of the device's entry in the site
    file: with ``places``, at the line of that field and with its full path
    (``devices[3].settings.timeout_s``).
    """
    if where.startswith("device.") or loaded is None or not where:
        field = where.removeprefix("device.") or "device"
        placed = (
            places.where(device.id, field) if places is not None and field != "device" else None
        )
        return placed or f"{device.source}: {field}"
    return loaded.where(where)
