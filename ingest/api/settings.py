"""Settings of the monitoring API and web UI (the ``api`` section of the ingest's settings)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr


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


class MonitoringSettings(BaseModel):
    """Where the monitoring API listens and how it serves the live view."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    pool_size: int = Field(default=8, ge=1, le=100)
    live_poll_s: float = Field(default=1.0, gt=0, le=10)
    """How often the live hub checks for new data (SSE pushes within this plus compute time)."""
    daily_refresh_s: float = Field(default=60.0, ge=1)
    """How often the daily KPI table is refreshed for today and yesterday."""
    cookie_secure: bool = False
    """Mark the sign-in cookie Secure (set behind HTTPS)."""
    kpi: KpiSettings = Field(default_factory=KpiSettings)


class AppSettings(BaseModel):
    """What ``create_app`` needs: the monitoring settings and the database URL."""

    api: MonitoringSettings = Field(default_factory=MonitoringSettings)
    db_url: SecretStr

    @classmethod
    def from_ingest(cls, settings: Any) -> AppSettings:
        """Take host, port and database URL from the ingest's settings (``IngestSettings``).

        A ``monitoring`` field on the ingest's ``api`` section, when the lead adds one, supplies
        the rest; otherwise the defaults above apply.
        """
        api = settings.api
        monitoring = getattr(api, "monitoring", None)
        base = monitoring if isinstance(monitoring, MonitoringSettings) else MonitoringSettings()
        return cls(
            api=base.model_copy(update={"host": api.host, "port": api.port}),
            db_url=settings.db.url,
        )
