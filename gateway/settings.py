"""The gateway's settings: one pydantic-settings model, built once from CLI > env > site file > default.

Environment variables use the prefix ``SHULIAN_GW_`` and ``__`` between a section and its field::

    SHULIAN_GW_GATEWAY__ID=gw-01
    SHULIAN_GW_MQTT__URL=mqtts://broker.example:8883
    SHULIAN_GW_MQTT__PASSWORD_FILE=/etc/shulian/mqtt-password
    SHULIAN_GW_BUFFER__MAX_BYTES=2147483648

The site file (``gateway.yaml``) holds the same sections next to ``devices:`` and ``fleets:``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.errors import ConfigError

ENV_PREFIX = "SHULIAN_GW_"
ENV_DELIMITER = "__"
GIB = 1024**3


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """Who this gateway is, and where it keeps its files."""

    id: str = Field(default="", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    enterprise: str = Field(default="", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    data_dir: Path = Path("./var/gateway")
    """The disk buffer and the OPC UA client certificate live here; keep it across upgrades."""
    device_reconnect_min_s: float = Field(default=1.0, gt=0)
    """First delay before a failed device is connected again; it doubles per failure."""
    device_reconnect_max_s: float = Field(default=10.0, gt=0)
    """Cap of that delay (jitter included): data is back within it plus one poll interval after
    a device returns from an outage."""
    connects_per_s: float = Field(default=200.0, ge=0)
    """Device connection attempts started per second, all devices together; 0 = no pacing."""


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    """``mqtt://host:1883`` or ``mqtts://host:8883`` (TLS)."""
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    """``auto``: MQTT 5, falling back to 3.1.1 when the broker never answers an MQTT 5 CONNECT
    (amqtt); or pin ``5`` or ``3.1.1``."""
    client_id: str = ""
    """Empty: ``shulian-<enterprise>-<gateway id>``."""
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    """A file whose first line is the password (preferred to ``password``: it stays out of ps/env)."""
    ca_file: Path | None = None
    """CA bundle that signed the broker's certificate; None uses the system's trust store."""
    cert_file: Path | None = None
    """Client certificate, for brokers that authenticate gateways by certificate."""
    key_file: Path | None = None
    tls_insecure: bool = False
    """Skip the broker host name check (never in production)."""
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    max_inflight: int = Field(default=100, ge=1, le=65535)
    """Batches published but not yet acknowledged (PUBACK) at once."""
    replay_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the in-flight window that backlog replay may use; live batches get the rest first."""
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{url!r}: use mqtt://host[:port] or mqtts://host[:port]")
        return url

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate and its key)")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def is_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def resolve_password(self) -> str | None:
        """The password from ``password`` or ``password_file``; read at connect, never logged."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    [f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}"]
                ) from None
            return text.splitlines()[0] if text else ""
        return None


class BufferSettings(_Section):
    max_bytes: int = Field(default=2 * GIB, ge=64 * 1024)
    """Cap of the disk buffer; when reached the oldest batches are dropped (and counted)."""
    max_age_s: float | None = Field(default=None, gt=0)
    """Drop (and count) batches older than this; None keeps them until the byte cap."""
    batch_max_samples: int = Field(default=500, ge=1, le=20_000)
    batch_max_delay_ms: int = Field(default=200, ge=1, le=60_000)
    historical_after_s: float = Field(default=5.0, ge=0)
    """A batch published later than this after it was made is marked ``historical``."""
    synchronous: Literal["normal", "full"] = "full"
    """SQLite durability: ``full`` survives power loss; ``normal`` survives kill -9 only."""


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    """Prometheus endpoint port; 0 turns it off."""
    publish_interval_s: float = Field(default=30.0, ge=0)
    """How often GatewayMetrics goes out over MQTT; 0 turns it off."""


LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class StatusSettings(_Section):
    """The installer's status page (``http://127.0.0.1:8765/``) and ``/status.json``."""

    bind: str = "127.0.0.1"
    """Address the page listens on; anything but loopback needs ``allow_remote``."""
    port: int = Field(default=8765, ge=0, le=65535)
    """0 turns the page off."""
    allow_remote: bool = False
    """Serve on a non-loopback ``bind``: device endpoints and errors become visible to anyone
    who can reach that address (the page has no login)."""
    refresh_s: int = Field(default=5, ge=1, le=3600)
    """How often the HTML page reloads itself."""

    @model_validator(mode="after")
    def _local_unless_allowed(self) -> StatusSettings:
        if not is_loopback(self.bind) and not self.allow_remote:
            raise ValueError(
                f"bind {self.bind!r} is not a loopback address: the status page has no login "
                "and shows device endpoints and errors; set status.allow_remote: true to serve "
                "it there anyway"
            )
        return self


class LogSettings(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ReloadSettings(_Section):
    watch_interval_s: float = Field(default=2.0, ge=0)
    """How often the site file's mtime is checked; 0 reloads on SIGHUP only."""


class RemoteConfigSettings(_Section):
    """Remote configuration from the cloud (docs/remote-config.md); off unless the factory opts in."""

    enabled: bool = False
    """Subscribe to this gateway's config topic and apply what the provider assigns; off, the
    gateway runs its local files only."""


class SparkplugSettings(_Section):
    """Sparkplug B output (docs/sparkplug.md): the gateway as an edge node of ``group``."""

    mode: Literal["off", "beside", "only"] = "off"
    """``beside``: Sparkplug B as well as the shulian contract (each with its own disk buffer, so
    neither output waits for the other); ``only``: Sparkplug B instead of the shulian contract."""
    group: str = Field(default="", pattern=r"^[^/+#]{0,255}$")
    """Sparkplug group id; empty: the gateway's enterprise."""
    node: str = Field(default="", pattern=r"^[^/+#]{0,255}$")
    """Edge node id; empty: the gateway's id."""
    primary_host: str = Field(default="", pattern=r"^[^/+#]{0,255}$")
    """Host id of the primary host application (``spBv1.0/STATE/<id>``): births and data wait
    until it is online, and the node goes offline (NDEATH) when it is not. Empty: publish always."""
    mqtt: MqttSettings | None = None
    """The Sparkplug broker session; None uses the ``mqtt`` section's broker and login with the
    client id ``<mqtt client id>-spb``."""


SECTIONS = (
    "gateway",
    "mqtt",
    "buffer",
    "metrics",
    "status",
    "log",
    "reload",
    "remote_config",
    "sparkplug",
)


class GatewaySettings(BaseSettings):
    """Everything the gateway process needs besides its devices."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="ignore",
        frozen=True,
    )

    gateway: GatewaySection = GatewaySection()
    mqtt: MqttSettings = MqttSettings()
    buffer: BufferSettings = BufferSettings()
    metrics: MetricsSettings = MetricsSettings()
    status: StatusSettings = StatusSettings()
    log: LogSettings = LogSettings()
    reload: ReloadSettings = ReloadSettings()
    remote_config: RemoteConfigSettings = RemoteConfigSettings()
    sparkplug: SparkplugSettings = SparkplugSettings()

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"shulian-{self.gateway.enterprise}-{self.gateway.id}"

    def require_identity(self) -> None:
        """Raise ConfigError unless the gateway id and enterprise are set (needed to publish)."""
        missing = [f"gateway.{k}" for k in ("id", "enterprise") if not getattr(self.gateway, k)]
        if missing:
            raise ConfigError(
                [
                    f"{name}: missing; set it in the site file's `gateway:` section or as "
                    f"{ENV_PREFIX}{name.upper().replace('.', ENV_DELIMITER)}"
                    for name in missing
                ]
            )


class _DictSource(PydanticBaseSettingsSource):
    """The site file's settings sections, below the environment in precedence."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k in SECTIONS}


def env_values() -> dict[str, Any]:
    """The settings the environment gives, as nested sections."""
    return dict(EnvSettingsSource(GatewaySettings)())


def build_settings(
    file_data: dict[str, Any] | None = None,
    cli: dict[str, Any] | None = None,
    *,
    file_name: str = "site file",
    file_lines: dict[tuple[str | int, ...], tuple[str, int]] | None = None,
) -> GatewaySettings:
    """Build the effective settings: ``cli`` (nested dict) > environment > ``file_data`` > defaults.

    Raises:
        ConfigError: every invalid or unknown setting, naming the file and line or the variable.
    """
    data: dict[str, Any] = {
        k: v for k, v in (file_data or {}).items() if k in SECTIONS or k == "version"
    }
    problems = _unknown_keys(data, file_name, file_lines or {})
    cli = _prune(cli or {})

    class _Bound(GatewaySettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, data))

    try:
        settings = _Bound(**cli)
    except ValidationError as exc:
        env = env_values()
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            where = _where(loc, cli, env, data, file_name, file_lines or {})
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _prune(tree: dict[str, Any]) -> dict[str, Any]:
    """Drop None leaves (CLI options that were not given)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sub = _prune(value)
            if sub:
                out[key] = sub
        elif value is not None:
            out[key] = value
    return out


def _unknown_keys(
    data: dict[str, Any], file_name: str, lines: dict[tuple[str | int, ...], tuple[str, int]]
) -> list[str]:
    problems = []
    for section, body in data.items():
        if section == "version" or not isinstance(body, dict):
            continue
        known = GatewaySettings.model_fields[section].annotation
        fields = known.model_fields if isinstance(known, type) else {}
        for key in body:
            if key not in fields:
                line = lines.get((section, key), (file_name, 1))
                problems.append(
                    f"{line[0]}:{line[1]}: {section}.{key}: unknown setting; "
                    f"known: {', '.join(sorted(fields))}"
                )
    return problems


def _lookup(tree: dict[str, Any], loc: tuple[str, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _where(
    loc: tuple[str, ...],
    cli: dict[str, Any],
    env: dict[str, Any],
    file_data: dict[str, Any],
    file_name: str,
    lines: dict[tuple[str | int, ...], tuple[str, int]],
) -> str:
    dotted = ".".join(loc)
    if _lookup(cli, loc):
        return f"command line: {dotted}"
    if _lookup(env, loc):
        return f"environment: {ENV_PREFIX}{ENV_DELIMITER.join(loc).upper()}"
    if _lookup(file_data, loc):
        hit = lines.get(loc) or lines.get(loc[:1]) or (file_name, 1)
        return f"{hit[0]}:{hit[1]}: {dotted}"
    return dotted


def describe(
    settings: GatewaySettings,
    file_data: dict[str, Any] | None = None,
    cli: dict[str, Any] | None = None,
    file_name: str = "site file",
) -> Iterator[tuple[str, str, str]]:
    """Yield ``(setting, value, source)`` for every leaf setting, secrets masked."""
    env = env_values()
    cli = _prune(cli or {})
    file_data = file_data or {}
    for section in SECTIONS:
        model = getattr(settings, section)
        for name in type(model).model_fields:
            loc = (section, name)
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                shown = "**********"
            elif value is None:
                shown = "-"
            elif loc == ("mqtt", "client_id") and not value:
                shown = f"{settings.client_id} (derived)"
            else:
                shown = str(value)
            if _lookup(cli, loc):
                source = "cli"
            elif _lookup(env, loc):
                source = f"env {ENV_PREFIX}{section.upper()}{ENV_DELIMITER}{name.upper()}"
            elif _lookup(file_data, loc):
                source = f"file {file_name}"
            else:
                source = "default"
            yield f"{section}.{name}", shown, source
