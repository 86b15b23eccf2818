"""The ingest service's settings: one BaseSettings with a section per component.

Precedence, highest first: CLI flags, ``SHULIAN_INGEST_*`` environment variables (sections joined
with ``__``, e.g. ``SHULIAN_INGEST_DB__URL``), the plain ``DATABASE_URL`` / ``MQTT_URL`` variables
that the demo and docker-compose use, a YAML settings file (``--config``), then the defaults.
"""

from __future__ import annotations

import contextvars
import os
import socket
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingest.errors import ConfigError

DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/shulian"
DEV_MQTT_URL = "mqtt://127.0.0.1:1883"
DAY_S = 86_400


class MqttSettings(BaseModel):
    """How the ingest connects and subscribes to the broker."""

    url: SecretStr = SecretStr(DEV_MQTT_URL)
    """``mqtt://[user[:password]@]host[:port]``, or ``mqtts://…`` for TLS (port 8883 by default);
    also read from ``MQTT_URL``."""
    username: str | None = None
    """Login name, instead of putting it in the URL (e.g. ``ingest@shulian``)."""
    password: SecretStr | None = None
    """Login password, instead of putting it in the URL."""
    password_file: Path | None = None
    """A file whose first line is the password (keeps it out of the environment and ``ps``)."""
    ca_file: Path | None = None
    """``mqtts://``: the CA certificate (PEM) that signed the broker's certificate; None uses the
    system's trust store. The broker's host name must be in its certificate either way."""
    cert_file: Path | None = None
    """``mqtts://``: a client certificate (PEM), for brokers that authenticate by certificate."""
    key_file: Path | None = None
    """The client certificate's private key (PEM)."""
    client_id: str = Field(default_factory=lambda: f"shulian-ingest-{socket.gethostname()}")
    """Stable per worker: the broker keeps un-acknowledged messages in this client's session.
    A broker with ``use_username_as_clientid`` (deploy/mosquitto/secure.conf) uses the login
    name instead, so each worker then needs a login of its own."""
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version; 3.1.1 for brokers without MQTT 5 (the demo's amqtt)."""
    share_group: str = "ingest"
    """Telemetry and metrics are subscribed as ``$share/<group>/...`` so workers split them;
    empty to subscribe plainly (one worker, or a broker without shared subscriptions)."""
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    """Un-acknowledged QoS 1 messages the broker may send us (MQTT 5 Receive Maximum); it must
    exceed one flush's worth of messages or batching stalls. Mosquitto also caps it with
    ``max_inflight_messages`` (1000 in deploy/mosquitto/common.conf)."""
    keepalive_s: int = Field(default=30, ge=5)
    session_expiry_s: int = Field(default=14 * DAY_S, ge=0)
    """How long the broker keeps our session (and queues for us) while we are down."""
    subscribe_metrics: bool = True
    reconnect_max_s: float = Field(default=2.0, ge=1)
    """Longest wait between reconnect attempts (paho doubles from 1 s up to it, whole seconds).
    Each attempt is one TCP connect, cheap for a broker; a short cap brings the worker back
    within about this long of the broker's return, while gateways' batches queue for it."""

    @model_validator(mode="after")
    def _consistent_login_and_tls(self) -> MqttSettings:
        parts = urlsplit(self.url.get_secret_value())
        problems = []
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            problems.append(
                f"mqtt.url: {_mask_url(self.url.get_secret_value())!r}: use "
                "mqtt://host[:port] or mqtts://host[:port] (TLS)"
            )
        if self.password is not None and self.password_file is not None:
            problems.append("mqtt.password and mqtt.password_file: give one of them, not both")
        if parts.password is not None and (self.password or self.password_file):
            problems.append(
                "mqtt.url holds a password and mqtt.password/password_file gives another: "
                "keep one of them"
            )
        if parts.username is not None and self.username and parts.username != self.username:
            problems.append(
                f"mqtt.url logs in as {parts.username!r} but mqtt.username is "
                f"{self.username!r}: keep one of them"
            )
        if (self.cert_file is None) != (self.key_file is None):
            problems.append(
                "mqtt.cert_file and mqtt.key_file go together (client certificate and its key)"
            )
        tls_files = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n)]
        if parts.scheme == "mqtt" and tls_files:
            problems.append(
                f"mqtt.{tls_files[0]} is set but mqtt.url is plaintext mqtt://: use "
                "mqtts://host:8883 so the connection is encrypted and the broker verified"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url.get_secret_value()).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url.get_secret_value())
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def is_tls(self) -> bool:
        return urlsplit(self.url.get_secret_value()).scheme == "mqtts"

    @property
    def address(self) -> str:
        """``mqtt[s]://host:port`` without the login, for log lines and error messages."""
        return f"{'mqtts' if self.is_tls else 'mqtt'}://{self.host}:{self.port}"

    def login(self) -> tuple[str | None, str | None]:
        """``(username, password)`` from the separate settings or the URL; read at connect.

        Raises:
            ConfigError: ``password_file`` cannot be read.
        """
        parts = urlsplit(self.url.get_secret_value())
        username = self.username or parts.username
        if self.password is not None:
            return username, self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    [f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}"]
                ) from None
            return username, (text.splitlines() or [""])[0]
        return username, parts.password


class DbSettings(BaseModel):
    """The PostgreSQL (optionally TimescaleDB) database and its connection pool."""

    url: SecretStr = SecretStr(DEV_DATABASE_URL)
    """A libpq URL; also read from ``DATABASE_URL``."""
    pool_min: int = Field(default=2, ge=1)
    pool_max: int = Field(default=6, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    """How long a flush waits for a connection before counting a database failure and retrying."""


class WriterSettings(BaseModel):
    """Batching across messages and retrying when the database fails."""

    max_batch_points: int = Field(default=50_000, ge=1)
    """Flush once this many samples are waiting (the transaction then holds about this many rows)."""
    max_delay_ms: int = Field(default=200, ge=1)
    """Flush at the latest this long after the oldest waiting message arrived."""
    lanes: int = Field(default=2, ge=1, le=32)
    """Parallel writers; a gateway always goes to the same lane, so its batches stay in order."""
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    delay_stats_flush_s: float = Field(default=60.0, ge=0)
    """How often the per-device delay statistics (ingest/delays.py) are added to the database;
    0 stores them after every flush (tests)."""
    delay_stats_timezone: str = "Asia/Shanghai"
    """The delay statistics are kept per calendar day in this zone; the monitoring reads them by
    its ``kpi.timezone``, so keep the two equal."""

    @field_validator("delay_stats_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone; write e.g. Asia/Shanghai") from None
        return value


class LimitsSettings(BaseModel):
    """What the ingest accepts; anything else is dead-lettered with a reason."""

    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_future_s: float = Field(default=300.0, ge=0)
    """Samples stamped further ahead than this (gateway clock wrong) are rejected as too_new."""
    max_age_s: float = Field(default=7 * DAY_S, gt=0)
    """Samples older than this are rejected as too_old: the replay horizon. Compression,
    retention and the ledger keep strictly more than this."""
    accept_unknown_signals: bool = False
    """Store signals whose base name is not in wire.signals (otherwise unknown_signal)."""
    dead_letter_prefix_bytes: int = Field(default=4096, ge=0)
    """A dead letter keeps this many bytes of its payload, with the payload's size and SHA-256."""
    dead_letters_per_minute: int = Field(default=60, ge=0)
    """Dead-letter rows one gateway (topic enterprise and gateway) may add per minute; the rest
    are counted in dead_letter_windows and the suppressed metric. 0: no limit."""


class RegistrySettings(BaseModel):
    """Which unknown identities the ingest registers by itself."""

    auto_register_gateways: bool = False
    """Register an unknown gateway (and its enterprise) under its topic's enterprise."""
    auto_register_devices: bool = True
    """Register devices that a known gateway announces (birth message or device status)."""
    refresh_s: float = Field(default=60.0, gt=0)
    """Reload the registry cache this often (picks up edits made through the API or CSV)."""


class SparkplugSettings(BaseModel):
    """Sparkplug B from third-party edge nodes (docs/sparkplug.md)."""

    mapping_file: Path | None = None
    """The Sparkplug mapping (YAML); None: the ingest does not subscribe to Sparkplug topics.
    Give it to one ingest worker: Sparkplug's births and seq need one reader per edge node."""
    rebirth_interval_s: float = Field(default=5.0, gt=0)
    """At most one rebirth request (NCMD) per edge node this often."""
    host_id: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.\-]{0,63})?$")
    """Publish this Sparkplug host application's STATE (``spBv1.0/STATE/<host_id>``, retained,
    offline as the Will), so edge nodes configured with it as their primary host send data only
    while the ingest is connected. Empty: no STATE."""


class StorageSettings(BaseModel):
    """Storage path, partitioning, compression, retention and rollups."""

    path: Literal["auto", "timescaledb", "postgresql"] = "auto"
    """``auto`` uses TimescaleDB when the server has the extension; a database keeps the path
    it was created with."""
    chunk_interval_h: int = Field(default=24, ge=1)
    """TimescaleDB chunk interval; plain PostgreSQL always uses daily partitions."""
    compress_after_days: float = Field(default=8.0, gt=0)
    retention_days: float = Field(default=90.0, gt=0)
    """Raw telemetry is dropped (whole chunks or partitions) after this."""
    rollup_1m_retention_days: float = Field(default=400.0, gt=0)
    rollup_1h_retention_days: float = Field(default=3650.0, gt=0)
    ledger_retention_days: float = Field(default=14.0, gt=0)
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
    partitions_ahead_days: int = Field(default=3, ge=1)
    rollup_refresh_s: float = Field(default=10.0, gt=0)
    """Plain PostgreSQL: how often closed rollup buckets are materialized."""
    rollup_grace_s: float = Field(default=60.0, ge=0)
    """Plain PostgreSQL: a bucket is materialized this long after it ends; until then (and for
    late data until the next refresh) the views aggregate raw rows on the fly."""
    maintenance_interval_s: float = Field(default=3600.0, gt=0)


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class ApiSettings(BaseModel):
    """The ingest's own HTTP endpoint: ``/metrics`` and ``/api/ingest/health`` (ingest/http.py).

    With ``--with-monitoring`` they are served on the monitoring's port instead (one process).
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=0, le=65535)


_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "_file_data", default=None
)


class _DictSource(PydanticBaseSettingsSource):
    """A settings source over a ready dict (the YAML file, or DATABASE_URL/MQTT_URL)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


def _plain_env_urls() -> dict[str, Any]:
    data: dict[str, Any] = {}
    if os.environ.get("DATABASE_URL"):
        data["db"] = {"url": os.environ["DATABASE_URL"]}
    if os.environ.get("MQTT_URL"):
        data["mqtt"] = {"url": os.environ["MQTT_URL"]}
    return data


class IngestSettings(BaseSettings):
    """Everything the ingest service needs; build once with ``load_settings`` and pass down."""

    model_config = SettingsConfigDict(
        env_prefix="SHULIAN_INGEST_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["dev", "prod"] = "dev"
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _DictSource(settings_cls, _plain_env_urls()),
            _DictSource(settings_cls, _FILE_DATA.get() or {}),
        )

    @model_validator(mode="after")
    def _consistent(self) -> IngestSettings:
        problems = settings_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def settings_problems(settings: IngestSettings) -> list[str]:
    """Every inconsistency between sections (each check names the settings involved)."""
    problems: list[str] = []
    max_age_days = settings.limits.max_age_s / DAY_S
    storage = settings.storage
    for name in ("compress_after_days", "retention_days", "ledger_retention_days"):
        if getattr(storage, name) <= max_age_days:
            problems.append(
                f"storage.{name} ({getattr(storage, name)}) must exceed limits.max_age_s "
                f"({max_age_days:g} days): replayed batches must never reach compressed, dropped "
                "or forgotten data"
            )
    if settings.mqtt.share_group and settings.mqtt.protocol == "3.1.1":
        problems.append(
            "mqtt.share_group needs MQTT 5 shared subscriptions: set mqtt.protocol to 5 or "
            "mqtt.share_group to an empty string"
        )
    if settings.db.pool_max < settings.writer.lanes + 1:
        problems.append(
            f"db.pool_max ({settings.db.pool_max}) must be at least writer.lanes + 1 "
            f"({settings.writer.lanes + 1}): each lane holds a connection while it flushes, and "
            "maintenance needs one more"
        )
    if settings.environment == "prod":
        if settings.db.url.get_secret_value() == DEV_DATABASE_URL:
            problems.append("db.url is the development default; set DATABASE_URL in production")
        if settings.mqtt.url.get_secret_value() == DEV_MQTT_URL:
            problems.append("mqtt.url is the development default; set MQTT_URL in production")
    return problems


def read_settings_file(path: Path) -> dict[str, Any]:
    """Load a YAML settings file into plain dicts; errors name the file and line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read settings file: {exc.strerror}"]) from exc
    except YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the settings file must be a mapping of sections"])
    return data


HOSTED_SECTIONS: Final = ("monitoring",)
"""Sections of the settings file that belong to an app the ingest can host in its process
(``run --with-monitoring``); the ingest's own settings skip them."""


def _own_sections(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in HOSTED_SECTIONS}


def load_settings(config_file: Path | None = None, **overrides: Any) -> IngestSettings:
    """Build the settings from all sources; ``overrides`` (CLI flags) win over everything.

    Raises:
        ConfigError: listing every problem, each with the setting's dotted path.
    """
    token = _FILE_DATA.set(_own_sections(read_settings_file(config_file)) if config_file else {})
    try:
        return IngestSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"] and "error" in error.get("ctx", {}):
                problems.extend(str(error["ctx"]["error"]).splitlines())  # cross-section checks
                continue
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            if "error" in error.get("ctx", {}) and str(error["ctx"]["error"]).startswith(where):
                problems.extend(str(error["ctx"]["error"]).splitlines())  # a section's own check
                continue
            problems.append(f"{where}: {error['msg']}")
        raise ConfigError(problems) from exc
    finally:
        _FILE_DATA.reset(token)


def setting_sources(
    settings: IngestSettings, config_file: Path | None = None, **overrides: Any
) -> list[tuple[str, Any, str]]:
    """``(dotted name, value, source)`` for every setting, in the order the model defines them.

    The source is what won, in ``load_settings``' order: ``command line``, ``env NAME``,
    the settings file, or ``default``. Values are masked as in ``masked_settings``. Nested
    sections are listed leaf by leaf.
    """
    env = {key.upper(): key for key in os.environ}
    file_data = _own_sections(read_settings_file(config_file)) if config_file else {}
    rows: list[tuple[str, Any, str]] = []
    for path, value in _leaves(masked_settings(settings), ()):
        rows.append(
            (".".join(path), value, _source_of(path, overrides, env, file_data, config_file))
        )
    return rows


def _leaves(node: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    if not isinstance(node, dict) or (path and not node):
        return [(path, node)]
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in node.items():
        found.extend(_leaves(value, (*path, key)))
    return found


def _has(tree: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _source_of(
    path: tuple[str, ...],
    overrides: dict[str, Any],
    env: dict[str, str],
    file_data: dict[str, Any],
    config_file: Path | None,
) -> str:
    if _has(overrides, path):
        return "command line"
    # A variable may set a whole section (JSON) or any level below it.
    for depth in range(len(path), 0, -1):
        variable = "SHULIAN_INGEST_" + "__".join(path[:depth])
        if variable.upper() in env:
            return f"env {env[variable.upper()]}"
    plain_names: dict[tuple[str, ...], str] = {
        ("db", "url"): "DATABASE_URL",
        ("mqtt", "url"): "MQTT_URL",
    }
    plain = plain_names.get(path)
    if plain and os.environ.get(plain):
        return f"env {plain}"
    if _has(file_data, path):
        return str(config_file)
    return "default"


def masked_settings(settings: IngestSettings) -> dict[str, Any]:
    """The effective settings with secrets masked (passwords inside URLs too)."""
    data = settings.model_dump(mode="json")
    data["db"]["url"] = _mask_url(settings.db.url.get_secret_value())
    data["mqtt"]["url"] = _mask_url(settings.mqtt.url.get_secret_value())
    return data


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
