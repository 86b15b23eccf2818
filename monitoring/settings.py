"""Settings of the monitoring API and web UI (the ``api.monitoring`` section of the ingest's settings)."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator

HOUR_S = 3600


class KpiSettings(BaseModel):
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


class ExportPushSettings(BaseModel):
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


class MonitoringSettings(BaseModel):
    """How the monitoring app serves the live view and keeps browser sessions.

    Where it listens comes from the ingest's ``api.host`` and ``api.port``.
    """

    pool_size: int = Field(default=8, ge=1, le=100)
    live_poll_s: float = Field(default=1.0, gt=0, le=10)
    """How often the live hub checks for new data (SSE pushes within this plus compute time)."""
    live_recheck_s: float = Field(default=2.0, gt=0, le=10)
    """How often each open live stream re-checks its caller (token, session, grants, scope) and
    closes when the caller may no longer see it."""
    daily_refresh_s: float = Field(default=60.0, ge=1)
    """How often the daily KPI table is refreshed for today and yesterday."""
    integration_refresh_s: float = Field(default=3600.0, ge=1)
    """How often the data-integration measures (monitoring/integration.py) are refreshed for today
    (and yesterday until 6 h after midnight); each refresh reads the day's raw telemetry so far
    (bench/integration.py), so they are daily figures refreshed hourly, not live ones. Past days
    that gain data are picked up every ``daily_refresh_s``."""
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

    @model_validator(mode="after")
    def _idle_within_lifetime(self) -> MonitoringSettings:
        if self.session_idle_s > self.session_lifetime_s:
            raise ValueError(
                f"session_idle_s ({self.session_idle_s}) must not exceed session_lifetime_s "
                f"({self.session_lifetime_s}): lower the idle timeout or raise the lifetime"
            )
        for origin in self.allowed_origins:
            if "://" not in origin or origin.rstrip("/").count("/") > 2:
                raise ValueError(
                    f"allowed_origins: {origin!r} is not an origin; write scheme://host[:port], "
                    "e.g. https://monitor.example.cn"
                )
        return self


class AppSettings(BaseModel):
    """What ``create_app`` needs: the monitoring settings and the database URLs."""

    api: MonitoringSettings = Field(default_factory=MonitoringSettings)
    db_url: SecretStr
    """The write pool: sign-in and sign-out, session touches, the caller's token and grants,
    uploads, imports, grants, baselines, export deliveries, and the KPI and integration refresh
    jobs. Must reach a server that accepts writes (the primary)."""
    read_url: SecretStr | None = None
    """The read pool, when set: every page's and API GET's data queries and the live hub's polls
    (a streaming replica, or a read-only login on the primary). None: ``db_url`` serves both."""

    @classmethod
    def from_ingest(cls, settings: Any) -> AppSettings:
        """Take the ``api.monitoring`` section and the database URL from ``IngestSettings``."""
        return cls(api=settings.api.monitoring, db_url=settings.db.url)
