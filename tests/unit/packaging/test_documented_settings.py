"""Every setting in the settings tables of docs/*.md arrives from a YAML file and from the env.

The tables are parsed, not copied: a row someone adds to a settings table (a table whose first
header cell starts with ``setting``) is covered by this test as soon as it is written. A table
belongs to the deployable whose environment prefix (``SHULIAN_INGEST_``, ``SHULIAN_MONITORING_``
or ``SHULIAN_GW_``) its header or the text just above it names. Its first column holds the keys, either dotted
(``mqtt.url``) or as environment suffixes (``DB__URL``); ``(or `NAME`)`` after a key is a plain
environment variable that also sets it. The keys of one row are set together (they are
documented together, and some only make sense together, like a certificate and its key).

For each key the test picks a value that differs from the default and that the model accepts
(trying a few candidates per type, so cross-setting checks don't get in the way), writes it to a
settings file and, separately, to the environment variable, loads the settings the way the
service does, and asserts the value arrived.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

import gateway.cli
import gateway.settings
import ingest.settings
import monitoring.settings
from ingest.errors import ConfigError as IngestConfigError
from monitoring.errors import ConfigError as MonitoringConfigError

DOCS = Path(__file__).resolve().parents[3] / "docs"
PREFIXES = {
    "SHULIAN_INGEST_": "ingest",
    "SHULIAN_MONITORING_": "monitoring",
    "SHULIAN_GW_": "gateway",
}
_CODE = re.compile(r"`([^`]+)`")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*((\.|__)[A-Za-z0-9_]+)*$")


@dataclass
class Row:
    doc: str
    line: int
    deployable: str
    keys: list[tuple[str, ...]] = field(default_factory=list)
    aliases: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Plain environment variables that also set a key (``DATABASE_URL``)."""

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:" + ",".join(".".join(k) for k in self.keys)


def _path(key: str) -> tuple[str, ...]:
    parts = key.split(".") if "." in key else key.split("__")
    return tuple(part.lower() for part in parts)


def _parse_key_cell(cell: str, row: Row) -> None:
    # `A` (or `B`): B is a plain variable for A. Anything else in backticks is a key.
    aliases = {m.group(1) for m in re.finditer(r"\(or `([^`]+)`\)", cell)}
    for name in _CODE.findall(cell):
        if name in aliases:
            row.aliases[row.keys[-1]] = name
            continue
        assert _KEY.match(name), (
            f"{row.doc}:{row.line}: {name!r} in a settings table is not a setting key; "
            "write each key in full (e.g. `STORAGE__ROLLUP_1H_RETENTION_DAYS`), not abbreviated"
        )
        row.keys.append(_path(name))


def documented_rows() -> list[Row]:
    rows: list[Row] = []
    for doc in sorted(DOCS.glob("*.md")):
        lines = doc.read_text(encoding="utf-8").splitlines()
        deployable: str | None = None
        in_table = False
        for number, text in enumerate(lines, start=1):
            for prefix, name in PREFIXES.items():
                if prefix in text:
                    deployable = name
            if not text.startswith("|"):
                in_table = False
                continue
            cells = [c.strip() for c in text.strip().strip("|").split("|")]
            if not in_table:
                in_table = True
                is_settings = cells[0].lower().startswith("setting")
                if is_settings:
                    assert deployable, (
                        f"{doc.name}:{number}: settings table without an environment prefix; "
                        f"name one of {sorted(PREFIXES)} in its header or the text above it"
                    )
                table_of = deployable if is_settings else None
                continue
            if table_of is None or set(cells[0]) <= {"-", ":"}:
                continue
            row = Row(doc.name, number, table_of)
            _parse_key_cell(cells[0], row)
            if row.keys:
                rows.append(row)
    return rows


ROWS = documented_rows()


# ---- the model: find a key's field, pick values ------------------------------------------------


def _model_of(deployable: str) -> type[BaseModel]:
    models: dict[str, type[BaseModel]] = {
        "ingest": ingest.settings.IngestSettings,
        "monitoring": monitoring.settings.MonitoringSettings,
        "gateway": gateway.settings.GatewaySettings,
    }
    return models[deployable]


def _field(model: type[BaseModel], path: tuple[str, ...], where: str) -> FieldInfo:
    info: FieldInfo | None = None
    current: Any = model
    for depth, part in enumerate(path):
        fields = (
            current.model_fields
            if isinstance(current, type) and issubclass(current, BaseModel)
            else {}
        )
        assert part in fields, (
            f"{where}: {'.'.join(path)} is documented but {'.'.join(path[:depth]) or 'the settings'} "
            f"has no {part!r} (known: {', '.join(sorted(fields))}); fix the docs or the model"
        )
        info = fields[part]
        current = _unwrap(info.annotation)[0]
    assert info is not None
    return info


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of a union (``X | None`` gives ``[X]``), else ``[annotation]``."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def _numbers(default: float | None, kind: type) -> Iterator[Any]:
    base = default if default is not None else 0
    for value in (base + 1, base * 2, base - 1, base / 2, 1, 10, 100, 1000):
        if kind is int:
            value = int(value)
        if value != default and value > 0:
            yield kind(value)


def candidates(info: FieldInfo) -> Iterator[Any]:
    default = _default(info)
    plain = default.get_secret_value() if isinstance(default, SecretStr) else default
    for option in _unwrap(info.annotation):
        origin = get_origin(option)
        if option is bool:
            yield not bool(plain) if isinstance(plain, bool) else True
        elif origin is Literal:
            yield from (choice for choice in get_args(option) if choice != plain)
        elif option in (int, float):
            yield from _numbers(
                plain if isinstance(plain, int | float) and not isinstance(plain, bool) else None,
                option,
            )
        elif option in (str, SecretStr):
            if isinstance(plain, str) and "127.0.0.1" in plain:
                yield plain.replace("127.0.0.1", "192.0.2.7")  # a URL: keep its form, new host
            yield "probe-7"
            yield "https://probe.example.cn/path"  # settings that take only an https:// URL
            yield "Europe/Berlin"  # settings that take only a time zone
        elif option is time:
            yield "03:30:00"
        elif option is Path:
            yield "/tmp/shulian-probe/file-7"
        elif origin is list:
            yield ["https://probe.example.cn"]
        else:
            raise AssertionError(
                f"no probe value for a setting of type {option!r}; extend candidates()"
            )


def _normal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, time):
        return value.isoformat()
    return value


def _get(settings: BaseModel, path: tuple[str, ...]) -> Any:
    node: Any = settings
    for part in path:
        node = getattr(node, part)
    return _normal(node)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _nest(values: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in values.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _yaml(tree: dict[str, Any]) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    YAML(typ="safe", pure=True).dump(tree, out)
    return out.getvalue()


# ---- loading the way each service does ----------------------------------------------------------


def _load_ingest_file(path: Path) -> BaseModel:
    return ingest.settings.load_settings(path)


def _load_ingest_env() -> BaseModel:
    return ingest.settings.load_settings()


def _load_monitoring_file(path: Path) -> BaseModel:
    return monitoring.settings.load_settings(path)


def _load_monitoring_env() -> BaseModel:
    return monitoring.settings.load_settings()


def _load_gateway_file(path: Path) -> BaseModel:
    data, lines = gateway.cli._file_settings(path)
    return gateway.settings.build_settings(data, None, file_name=str(path), file_lines=lines)


def _load_gateway_env() -> BaseModel:
    return gateway.settings.build_settings({}, None)


LOADERS: dict[str, tuple[Callable[[Path], BaseModel], Callable[[], BaseModel], str]] = {
    "ingest": (_load_ingest_file, _load_ingest_env, "SHULIAN_INGEST_"),
    "monitoring": (_load_monitoring_file, _load_monitoring_env, "SHULIAN_MONITORING_"),
    "gateway": (_load_gateway_file, _load_gateway_env, "SHULIAN_GW_"),
}
_REFUSED = (IngestConfigError, MonitoringConfigError, gateway.settings.ConfigError)

# Settings whose every non-default value needs another setting changed with it (the model's
# cross-setting checks say why). Add an entry when a new key fails here for that reason.
COMPANIONS: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], Any]] = {
    ("ingest", ("mqtt", "protocol")): {("mqtt", "share_group"): ""},  # 3.1.1 has no $share
    # Files for TLS only make sense with an mqtts:// broker (keys of the mqtt TLS settings).
    ("ingest", ("mqtt", "ca_file")): {("mqtt", "url"): "mqtts://broker.example.cn:8883"},
    ("ingest", ("mqtt", "cert_file")): {("mqtt", "url"): "mqtts://broker.example.cn:8883"},
    ("ingest", ("mqtt", "key_file")): {("mqtt", "url"): "mqtts://broker.example.cn:8883"},
    # The push needs its receiver.
    ("monitoring", ("export", "enabled")): {("export", "url"): "https://platform.example.cn/daily"},
    ("ingest", ("environment",)): {  # prod refuses the development URLs
        ("db", "url"): "postgresql://shulian@db.example.cn/shulian",
        ("mqtt", "url"): "mqtt://broker.example.cn:1883",
    },
    ("monitoring", ("environment",)): {
        ("db", "url"): "postgresql://shulian@db.example.cn/shulian",
    },
}


def _refusal(row: Row, values: dict[tuple[str, ...], Any], file: Path) -> str | None:
    """None when the settings file with ``values`` loads, else the loader's complaint."""
    file.write_text(_yaml(_nest(values)), encoding="utf-8")
    try:
        LOADERS[row.deployable][0](file)
    except _REFUSED as exc:
        return str(exc)
    return None


def _accepted_groups(row: Row, tmp_path: Path) -> list[dict[tuple[str, ...], Any]]:
    """Values for the row's keys, each different from its default, that the model accepts.

    The row's keys are set together when the model accepts that; keys that exclude each other
    (a password and a password file) are then tried one at a time.

    Raises:
        AssertionError: naming the key whose every candidate value was refused, and why.
    """
    model = _model_of(row.deployable)
    options = {key: list(candidates(_field(model, key, row.id))) for key in row.keys}
    for key, values in options.items():
        assert values, f"{row.id}: no value to try for {'.'.join(key)}"
    file = tmp_path / "probe.yaml"

    def accept(keys: list[tuple[str, ...]]) -> tuple[dict[tuple[str, ...], Any], str | None]:
        chosen = {key: options[key][0] for key in keys}
        for key in keys:
            chosen.update(COMPANIONS.get((row.deployable, key), {}))
        refusal = _refusal(row, chosen, file)
        for key in keys:  # vary one key at a time until the whole set is accepted
            for value in options[key]:
                chosen[key] = value
                refusal = _refusal(row, chosen, file)
                if refusal is None:
                    break
        return chosen, refusal

    together, refusal = accept(row.keys)
    if refusal is None:
        return [together]
    groups = []
    for key in row.keys if len(row.keys) > 1 else []:
        alone, refusal_alone = accept([key])
        if refusal_alone is None:
            groups.append(alone)
    assert len(groups) == len(row.keys) > 1, (
        f"{row.id}: every value tried was refused, last with {_yaml(_nest(together))!r}: "
        f"{refusal}. If the key needs another setting changed with it, add it to COMPANIONS."
    )
    return groups


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(tuple(PREFIXES)) or name in ("DATABASE_URL", "MQTT_URL"):
            monkeypatch.delenv(name)


def test_the_settings_tables_are_found() -> None:
    keys = {(row.deployable, ".".join(k)) for row in ROWS for k in row.keys}
    for expected in [
        ("ingest", "db.url"),
        ("ingest", "api.port"),
        ("ingest", "environment"),
        ("monitoring", "db.url"),
        ("monitoring", "db.read_url"),
        ("monitoring", "http.port"),
        ("monitoring", "refresh.enabled"),
        ("monitoring", "cookie_secure"),
        ("monitoring", "export.url"),
        ("gateway", "mqtt.url"),
    ]:
        assert expected in keys
    assert {row.doc for row in ROWS} >= {"ingest.md", "gateway.md", "monitoring.md"}


def _check_arrives(
    row: Row,
    values: dict[tuple[str, ...], Any],
    load_file: Callable[[Path], BaseModel],
    load_env: Callable[[], BaseModel],
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = tmp_path / "settings.yaml"
    file.write_text(_yaml(_nest(values)), encoding="utf-8")
    from_file = load_file(file)
    for key, value in values.items():
        assert _get(from_file, key) == value, f"{row.id}: {'.'.join(key)} from the settings file"
    with monkeypatch.context() as env:
        for key, value in values.items():
            env.setenv(prefix + "__".join(key).upper(), _env_text(value))
        from_env = load_env()
    for key, value in values.items():
        variable = prefix + "__".join(key).upper()
        assert _get(from_env, key) == value, f"{row.id}: {'.'.join(key)} from {variable}"


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_documented_setting_arrives_from_file_and_environment(
    row: Row, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_file, load_env, prefix = LOADERS[row.deployable]
    groups = _accepted_groups(row, tmp_path)
    for values in groups:
        _check_arrives(row, values, load_file, load_env, prefix, tmp_path, monkeypatch)
    for key, alias in row.aliases.items():
        value = next(group[key] for group in groups if key in group)
        with monkeypatch.context() as env:
            env.setenv(alias, _env_text(value))
            assert _get(load_env(), key) == value, f"{row.id}: {'.'.join(key)} from {alias}"
