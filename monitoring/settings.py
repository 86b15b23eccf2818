"""The monitoring's settings: one BaseSettings with a section per concern.

Precedence, highest first: CLI flags, ``SHULIAN_MONITORING_*`` environment variables (sections
joined with ``__``, e.g. ``SHULIAN_MONITORING_DB__URL``), the plain ``DATABASE_URL`` variable that
the demo and docker-compose use, a YAML settings file (``--config``), then the defaults. When the
ingest hosts the monitoring in its process (``shulian ingest run --with-monitoring``) the file is
the ingest's and these settings are its ``monitoring:`` section (shulian/hosting.py).
"""

from __future__ import annotations

import contextvars
import os
from datetime import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitoring.errors import ConfigError

HOUR_S = 3600
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/shulian"
ENV_PREFIX = "SHULIAN_MONITORING_"


class _Section(BaseModel):
    """A section of the settings: a misspelt key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class KpiSettings(_Section):
    """Thresholds that turn stored data into KPIs; docs/kpis.md explains each one."""

    online_window_s: int = Field(default=180, ge=5)
    """A device is online when its newest sample is at most this old."""
    networked_window_s: int = Field(default=86_400, ge=60)
    """A device is networked when it reported within this window (24 h by default)."""
    baseline_days: int = Field(default=14, ge=3, le=60)
    """Days before the evaluated day that form an enterprise's warning baseline."""
    min_baseline_days: int = Field(default=5, ge=1)
    """With fewer baseline days that have data, an enterprise gets no colour (grey)."""
    timezone: str = "Asia/Shanghai"
    """Calendar days (today, daily export) start at midnight in this zone."""
    evidence_baseline_days: int = Field(default=30, ge=1, le=365)
    """A measured before/after baseline covers this many days from an enterprise's go-live, unless
    its own baseline entry says otherwise (docs/kpis.md "Baseline")."""
    default_max_silence_s: float = Field(default=65.0, gt=0)
    """Data integration: how long a signal may stay unreported when the device's gateway does not
    say (wire before 1.2): the base profiles' 60 s heartbeat plus a 5 s poll interval."""
    silence_tolerance_s: float = Field(default=5.0, ge=0)
    """Data integration: slack beyond a signal's max silence before time counts as missing
    (slow reads, scheduling); docs/kpis.md "Completeness"."""


class ExportPushSettings(_Section):
    """The optional push of the daily export to an upward platform (docs/export.md)."""

    enabled: bool = False
    """Push each complete day once, after ``at`` local time, with the retries below."""
    url: str = ""
    """The receiver, ``https://host[:port]/path``; TLS is always verified."""
    token: SecretStr | None = None
    """Sent in ``auth_header`` as ``<auth_scheme> <token>`` (just the token when the scheme is
    empty)."""
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    ca_file: Path | None = None
    """PEM file of the CA that signed the receiver's certificate; None: the system trust store."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Per request: connect, send and wait for the answer."""
    attempts: int = Field(default=6, ge=1, le=100)
    """Tries per run; a run that used them all leaves the day ``failed`` for the next run."""
    backoff_s: float = Field(default=2.0, gt=0)
    """Wait after the first failed try; it doubles (with jitter) up to ``backoff_max_s``."""
    backoff_max_s: float = Field(default=300.0, gt=0)
    at: time = time(2, 0)
    """Local time (``kpi.timezone``) after which the previous day is pushed: late data from
    gateways that were offline has arrived by then."""
    backfill_days: int = Field(default=3, ge=1, le=35)
    """Days back that the service still pushes when they were missed (service down, receiver
    down past the retries)."""
    check_s: float = Field(default=60.0, gt=0)
    """How often the service looks for a due day."""

    @model_validator(mode="after")
    def _https_receiver(self) -> ExportPushSettings:
        parts = urlsplit(self.url)
        if self.url and (parts.scheme != "https" or not parts.hostname):
            raise ValueError(
                f"url {self.url!r}: use https://host[:port]/path (the push is always sent over "
                "verified TLS)"
            )
        if self.enabled and not self.url:
            raise ValueError("enabled needs url: the receiver's https:// address")
        return self


class DbSettings(_Section):
    """The database the ingest writes; the monitoring reads it and writes its own tables."""

    url: SecretStr = SecretStr(DEV_DATABASE_URL)
    """A libpq URL; also read from ``DATABASE_URL``. The KPI refresh and the monitoring's own
    tables (tokens, sessions, grants, KPI tables) need it to be able to write."""
    read_url: SecretStr | None = None
    """A libpq URL for the pages' and API's reads, e.g. a streaming replica with a read-only
    role; None: the same as ``url``."""

    @property
    def effective_read_url(self) -> SecretStr:
        """Where reads go: ``read_url`` when given, else ``url``."""
        return self.read_url if self.read_url is not None else self.url


class HttpSettings(_Section):
    """Where the pages and the API listen."""

    host: str = "127.0.0.1"
    """``0.0.0.0`` to listen on every interface (in a container, behind a proxy)."""
    port: int = Field(default=8080, ge=0, le=65535)


class RefreshSettings(_Section):
    """The background jobs that write: daily KPIs, integration measures, the export push."""

    enabled: bool = True
    """Run the jobs in this instance. Run them in exactly one instance of a deployment (the one
    whose ``db.url`` can write); web-only instances on a read replica set this to false."""
    daily_s: float = Field(default=60.0, ge=1)
    """How often the daily KPI table is refreshed for today and yesterday."""
    status_s: float = Field(default=5.0, ge=1, le=10)
    """How often what is happening now (online, running, alarms per enterprise and machine kind)
    is counted for the city, segment and district pages. Pages use a count at most 15 s old
    (``kpis.STATUS_FRESH_S``) and count live otherwise, so this stays well below that."""
    integration_s: float = Field(default=3600.0, ge=1)
    """How often the data-integration measures (monitoring/integration.py) are refreshed for today
    (and yesterday until 6 h after midnight); each refresh reads the day's raw telemetry so far
    (bench/integration.py), so they are daily figures refreshed hourly, not live ones. Past days
    that gain data are picked up every ``daily_s``."""


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "_monitoring_file_data", default=None
)


class _DictSource(PydanticBaseSettingsSource):
    """A settings source over a ready dict (the YAML file, DATABASE_URL, the host's defaults)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


def _plain_env_urls() -> dict[str, Any]:
    url = os.environ.get("DATABASE_URL")
    return {"db": {"url": url}} if url else {}


class MonitoringSettings(BaseSettings):
    """Everything the monitoring needs; build once with ``load_settings`` and pass down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["dev", "prod"] = "dev"
    db: DbSettings = Field(default_factory=DbSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    pool_size: int = Field(default=8, ge=1, le=100)
    """Database connections the pages, the API and the refresh jobs share."""
    live_poll_s: float = Field(default=1.0, gt=0, le=10)
    """How often the live hub checks for new data (SSE pushes within this plus compute time)."""
    live_recheck_s: float = Field(default=2.0, gt=0, le=10)
    """How often each open live stream re-checks its caller (token, session, grants, scope) and
    closes when the caller may no longer see it."""
    session_lifetime_s: int = Field(default=12 * HOUR_S, ge=60)
    """A browser session ends this long after sign-in, however active (12 h: one working day)."""
    session_idle_s: int = Field(default=2 * HOUR_S, ge=60)
    """A browser session ends after this long without a request from its pages (2 h)."""
    cookie_secure: bool | Literal["auto"] = "auto"
    """Mark the session cookie ``Secure``: ``true``, ``false``, or ``auto`` (when the request
    arrived over HTTPS, including ``X-Forwarded-Proto: https`` from a proxy uvicorn trusts)."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins besides the app's own (``scheme://host[:port]``) whose pages may send
    state-changing requests with the session cookie."""
    kpi: KpiSettings = Field(default_factory=KpiSettings)
    export: ExportPushSettings = Field(default_factory=ExportPushSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_data, defaults = _FILE_DATA.get() or {}, _DEFAULTS.get() or {}
        return (
            init_settings,
            env_settings,
            _DictSource(settings_cls, _plain_env_urls()),
            _DictSource(settings_cls, file_data),
            _DictSource(settings_cls, defaults),
        )

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringSettings:
        problems = settings_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


_DEFAULTS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "_monitoring_defaults", default=None
)
"""Defaults a host supplies under the file (the ingest's database URL, shulian/hosting.py)."""


def settings_problems(settings: MonitoringSettings) -> list[str]:
    """Every inconsistency between settings (each names the settings involved)."""
    problems: list[str] = []
    if settings.session_idle_s > settings.session_lifetime_s:
        problems.append(
            f"session_idle_s ({settings.session_idle_s}) must not exceed session_lifetime_s "
            f"({settings.session_lifetime_s}): lower the idle timeout or raise the lifetime"
        )
    for origin in settings.allowed_origins:
        if "://" not in origin or origin.rstrip("/").count("/") > 2:
            problems.append(
                f"allowed_origins: {origin!r} is not an origin; write scheme://host[:port], "
                "e.g. https://monitor.example.cn"
            )
    if settings.environment == "prod" and settings.db.url.get_secret_value() == DEV_DATABASE_URL:
        problems.append("db.url is the development default; set DATABASE_URL in production")
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


def load_settings(
    config_file: Path | None = None,
    *,
    file_data: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    where: str = "",
    **overrides: Any,
) -> MonitoringSettings:
    """Build the settings from all sources; ``overrides`` (CLI flags) win over everything.

    Args:
        config_file: the YAML file; or give its already-read ``file_data``.
        defaults: values under the file's (a host's: the ingest's database URL).
        where: prefix of every key a problem names (``monitoring.`` inside the ingest's file).

    Raises:
        ConfigError: listing every problem, each with the file and the setting's dotted path.
    """
    if file_data is None:
        file_data = read_settings_file(config_file) if config_file else {}
    file_token = _FILE_DATA.set(file_data)
    defaults_token = _DEFAULTS.set(defaults or {})
    try:
        return MonitoringSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, config_file, file_data, where)) from exc
    finally:
        _FILE_DATA.reset(file_token)
        _DEFAULTS.reset(defaults_token)


def _problems(
    exc: ValidationError, config_file: Path | None, file_data: dict[str, Any], where: str
) -> list[str]:
    """Each problem with its dotted key, after the file's name when the key is in the file."""
    problems: list[str] = []
    for error in exc.errors():
        message = str(error.get("ctx", {}).get("error", ""))
        if not error["loc"] and message:  # a check across settings: each line names its keys
            problems.extend(where + line for line in message.splitlines())
            continue
        in_file = config_file and _has(file_data, tuple(str(p) for p in error["loc"]))
        origin = f"{config_file}: " if in_file else ""
        key = where + (".".join(str(p) for p in error["loc"]) or "settings")
        if message.startswith(key.removeprefix(where)):
            problems.extend(origin + where + line for line in message.splitlines())
        else:
            problems.append(f"{origin}{key}: {message or error['msg']}")
    return problems


def setting_sources(
    settings: MonitoringSettings, config_file: Path | None = None
) -> list[tuple[str, Any, str]]:
    """``(dotted name, value, source)`` for every setting, in the order the model defines them.

    The source is what won, in ``load_settings``' order: ``env NAME``, the settings file, or
    ``default``. Values are masked as in ``masked_settings``.
    """
    env = {key.upper(): key for key in os.environ}
    file_data = read_settings_file(config_file) if config_file else {}
    return [
        (".".join(path), value, _source_of(path, env, file_data, config_file))
        for path, value in _leaves(masked_settings(settings), ())
    ]


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
    path: tuple[str, ...], env: dict[str, str], file_data: dict[str, Any], config_file: Path | None
) -> str:
    for depth in range(len(path), 0, -1):  # a variable may set a whole section (JSON)
        variable = ENV_PREFIX + "__".join(path[:depth])
        if variable.upper() in env:
            return f"env {env[variable.upper()]}"
    if path == ("db", "url") and os.environ.get("DATABASE_URL"):
        return "env DATABASE_URL"
    if _has(file_data, path):
        return str(config_file)
    return "default"


def masked_settings(settings: MonitoringSettings) -> dict[str, Any]:
    """The effective settings with secrets masked (passwords inside URLs too)."""
    data = settings.model_dump(mode="json")
    data["db"]["url"] = mask_url(settings.db.url.get_secret_value())
    if settings.db.read_url is not None:
        data["db"]["read_url"] = mask_url(settings.db.read_url.get_secret_value())
    return data


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
