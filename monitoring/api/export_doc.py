"""The versioned daily export document: one complete day's figures per enterprise, for upward
reporting to a provincial or national platform (pulled from the API or pushed, docs/export.md).

The pydantic models are the contract: docs/export.schema.json is generated from them
(``python -m monitoring.api.export_doc > docs/export.schema.json``) and a test keeps the two in step.
A minor version adds optional fields; anything else is a new major version.

>>> DailyExport.model_fields["schema_version"].default
'1.0'
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from monitoring import integration, kpis
from monitoring.settings import KpiSettings

__all__ = [
    "SCHEMA_VERSION",
    "DailyExport",
    "EnterpriseDay",
    "IntegrationDay",
    "build_daily_export",
    "json_schema",
]

SCHEMA_VERSION: Final = "1.0"
DOCUMENT_KIND: Final = "shulian.daily_export"


class IntegrationDay(BaseModel):
    """An enterprise's data-integration measures for the day (docs/kpis.md "Data integration")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    networked_share: float | None = Field(
        description="设备联网率: devices that sent any sample / registered devices"
    )
    completeness: float | None = Field(
        description="数据完整率: covered / expected signal-seconds; null when nothing was expected"
    )
    expected_samples: float = Field(ge=0, description="Heartbeats the gateways owed at least")
    samples: int = Field(ge=0, description="Samples received (good or uncertain)")
    longest_gap_s: float | None = Field(
        description="最长中断: longest time without a sample of one expected signal"
    )
    longest_gap_signal: str | None = Field(description="The signal of that gap")
    deliveries: int = Field(ge=0, description="Live deliveries timed (one device, one commit)")
    delay_p50_s: float | None = Field(
        description="及时性: median delay sample -> storage (upper bucket edge), s"
    )
    delay_p95_s: float | None = Field(description="95th percentile delay (upper bucket edge), s")
    delay_max_s: float | None = Field(description="Longest live delay, s")
    class_coverage: float | None = Field(
        description="关键设备数据覆盖率: classes of the segment's catalogue present whose devices "
        "report state, counters and energy / classes present; null when none is present"
    )
    segment_classes: int = Field(ge=0, description="Machine classes in the segment's catalogue")
    unclassified_devices: int = Field(
        ge=0, description="Devices whose class is not in the segment's catalogue"
    )


class EnterpriseDay(BaseModel):
    """One enterprise's figures for the day; rates are fractions 0..1, null when undefined."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enterprise_id: str = Field(description="The platform's id of the enterprise (e.g. ent-001)")
    credit_code: str | None = Field(
        description="统一社会信用代码 (GB 32100-2015, check character verified on entry); "
        "null until entered in the registry",
        pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$",
    )
    name: str = Field(description="Registered name (Chinese)")
    name_en: str = Field(description="English name, empty when not registered")
    district_code: str | None = Field(
        description="County-level administrative division code (GB/T 2260)"
    )
    segment_code: str | None = Field(description="Industry class (GB/T 4754-2017), e.g. 345")
    devices_registered: int = Field(ge=0, description="Devices in the registry")
    devices_reported: int = Field(ge=0, description="Devices that reported during the day")
    online_rate: float | None = Field(
        description="设备在线率 of the day: devices that reported during it / registered devices"
    )
    running_rate: float | None = Field(
        description="开机率 of the day: devices that ran during it / devices that reported"
    )
    utilization: float | None = Field(
        description="设备利用率: running time / calendar time of the devices that reported"
    )
    running_h: float = Field(ge=0, description="Hours in the running state, all devices")
    output: float = Field(ge=0, description="产量: parts counted")
    good: float | None = Field(description="Good parts; null without quality counters")
    reject: float | None = Field(description="Rejected parts; null without quality counters")
    energy_kwh: float = Field(ge=0, description="用电: active energy, kWh")
    kwh_per_part: float | None = Field(description="单件电耗: energy / output")
    oee: float | None = Field(
        description="OEE over devices with a rated cycle time and quality counts; null when "
        "no device of the enterprise has them (docs/kpis.md)"
    )
    warning_colour: Literal["green", "blue", "orange", "red", "grey"] = Field(
        description="企业预警 of the day against the enterprise's own baseline (docs/kpis.md); "
        "grey: baseline too short"
    )
    warning_reason: str = Field(description="Why that colour (Chinese)")
    warning_reason_en: str = Field(description="Why that colour (English)")
    integration: IntegrationDay | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Data-integration measures of the day (数据贯通, docs/kpis.md); omitted when "
        "they were not computed to the day's end, never sent estimated",
    )


class DailyExport(BaseModel):
    """The document for one day: what the API serves and the push sends, byte for byte."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="shulian daily export",
        json_schema_extra={"$id": f"urn:shulian:daily-export:{SCHEMA_VERSION}"},
    )

    document: Literal["shulian.daily_export"] = DOCUMENT_KIND
    schema_version: Literal["1.0"] = Field(
        default=SCHEMA_VERSION,
        description="major.minor; a reader of 1.x accepts any 1.y and ignores fields it does not "
        "know",
    )
    day: date = Field(description="The calendar day reported, in ``timezone``")
    timezone: str = Field(description="IANA zone whose midnight starts the day")
    generated_at: datetime = Field(description="When the figures were read (UTC)")
    enterprises: list[EnterpriseDay]

    def to_bytes(self) -> bytes:
        """The exact bytes served and sent (UTF-8 JSON); their SHA-256 is the content hash."""
        return orjson.dumps(self.model_dump(mode="json"))


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (docs/export.schema.json)."""
    schema = DailyExport.model_json_schema(mode="serialization")
    # Always written although they have defaults: a reader dispatches on them.
    schema["required"] = ["document", "schema_version", *schema["required"]]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


_REGISTRY: Final = """
SELECT id, name, name_en, credit_code, district_id, segment_code FROM enterprises ORDER BY id"""


async def build_daily_export(
    conn: AsyncConnection[Any], settings: KpiSettings, day: date, now: datetime | None = None
) -> DailyExport:
    """The document for ``day`` (a complete day: before today) from the materialized figures.

    Raises:
        ValueError: ``day`` is today or later, so not complete.
    """
    now = now or datetime.now(UTC)
    if day >= kpis.city_today(settings, now):
        raise ValueError(f"day {day} is not complete yet; export a day before today")
    window = kpis.window_for(settings, now, day, day)
    figures = await kpis.device_figures(conn, settings, window, now)
    groups = kpis.aggregate(figures, lambda fig: fig.enterprise)
    # Colours "for yesterday" as seen just after the day ended.
    warnings = await kpis.enterprise_warnings(
        conn, settings, kpis.day_start(settings, day + timedelta(days=1))
    )
    measures = await _integration_of(conn, settings, day, now)
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(_REGISTRY)
    enterprises = []
    for row in await cursor.fetchall():
        figures_of = groups.get(row["id"]) or kpis.Kpis()
        day_figures = _enterprise_day(row, figures_of, warnings[row["id"]])
        if measures is not None:
            day_figures = day_figures.model_copy(update={"integration": measures.get(row["id"])})
        enterprises.append(day_figures)
    return DailyExport(
        day=day, timezone=settings.timezone, generated_at=now, enterprises=enterprises
    )


def _enterprise_day(
    row: dict[str, Any], figures: kpis.Kpis, warning: kpis.Warning_
) -> EnterpriseDay:
    summary = figures.as_dict()
    # A past day has no "now": online and running are counted over the day (docs/export.md).
    reported = figures.networked
    return EnterpriseDay(
        enterprise_id=row["id"],
        credit_code=row["credit_code"],
        name=row["name"],
        name_en=row["name_en"],
        district_code=row["district_id"],
        segment_code=row["segment_code"],
        devices_registered=figures.registered,
        devices_reported=reported,
        online_rate=_share(reported, figures.registered),
        running_rate=_share(figures.ran_today, reported),
        utilization=summary["utilization"],
        running_h=summary["running_h"],
        output=summary["output"],
        good=summary["good"],
        reject=summary["reject"],
        energy_kwh=summary["energy_kwh"],
        kwh_per_part=summary["kwh_per_part"],
        oee=summary["oee"],
        warning_colour=warning.colour,  # type: ignore[arg-type]  # one of kpis.WARNING_COLOURS or grey
        warning_reason=warning.reason,
        warning_reason_en=warning.reason_en,
    )


async def _integration_of(
    conn: AsyncConnection[Any], settings: KpiSettings, day: date, now: datetime
) -> dict[str, IntegrationDay] | None:
    """Each enterprise's measures for ``day``, or None when they were not refreshed to its end
    (a partial day would read as missing data: the block is then left out, not estimated)."""
    cursor = await conn.execute(
        "SELECT through FROM integration_daily_state WHERE day = %s", (day,)
    )
    row = await cursor.fetchone()
    if row is None or row[0] < kpis.day_start(settings, day + timedelta(days=1)):
        return None
    measured = await integration.enterprise_measures(conn, settings, day, day, now=now)
    return {m.enterprise: _integration_day(m) for m in measured}


def _integration_day(measures: integration.EnterpriseIntegration) -> IntegrationDay:
    gap = measures.longest_gap
    delay = measures.delay
    return IntegrationDay(
        networked_share=measures.networked_share,
        completeness=measures.completeness,
        expected_samples=round(measures.expected_samples, 1),
        samples=measures.samples,
        longest_gap_s=gap.seconds if gap else None,
        longest_gap_signal=gap.signal if gap else None,
        deliveries=delay.deliveries,
        delay_p50_s=delay.p50_s,
        delay_p95_s=delay.p95_s,
        delay_max_s=delay.max_s,
        class_coverage=measures.class_coverage,
        segment_classes=measures.segment_classes,
        unclassified_devices=measures.unclassified_devices,
    )


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True))
