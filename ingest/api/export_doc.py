"""The versioned daily export document: one complete day's figures per enterprise, for upward
reporting to a provincial or national platform (pulled from the API or pushed, docs/export.md).

The pydantic models are the contract: docs/export.schema.json is generated from them
(``python -m ingest.api.export_doc > docs/export.schema.json``) and a test keeps the two in step.
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

from ingest import kpis
from ingest.api.settings import KpiSettings

__all__ = ["SCHEMA_VERSION", "DailyExport", "EnterpriseDay", "build_daily_export", "json_schema"]

SCHEMA_VERSION: Final = "1.0"
DOCUMENT_KIND: Final = "shulian.daily_export"


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
    integration: dict[str, float | None] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Reserved for the data-integration measures (数据贯通, docs/kpis.md). "
        "Omitted while this platform does not compute them; never sent empty or estimated.",
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
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(_REGISTRY)
    enterprises = []
    for row in await cursor.fetchall():
        figures_of = groups.get(row["id"]) or kpis.Kpis()
        enterprises.append(_enterprise_day(row, figures_of, warnings[row["id"]]))
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


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True))
