"""CSV import of enterprises and devices (bureau and admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from monitoring.api import csv_import
from monitoring.api.access import Capability
from monitoring.api.deps import CallerDep, Conn
from monitoring.api.schemas import ImportOut

router = APIRouter(tags=["import"])

CsvBody = Annotated[str, Body(media_type="text/csv", description="UTF-8 CSV with a header row")]
FileName = Annotated[str, Query(description="Name used in error messages")]


@router.post("/import/enterprises", summary="Upsert enterprises from CSV", response_model=ImportOut)
async def import_enterprises(
    caller: CallerDep, conn: Conn, body: CsvBody, filename: FileName = "enterprises.csv"
) -> ImportOut:
    """Columns: id, name, district (id or Chinese name), segment, and optionally name_en,
    above_designated_size, specialized, little_giant (1/0), service_provider, credit_code (统一社会信用代码,
    checked with its check character).

    Good rows are written; refused rows come back as a 422 naming each ``file:line: column``."""
    caller.require(Capability.IMPORT)
    created, updated = await csv_import.import_enterprises(conn, body, filename)
    return ImportOut(created=created, updated=updated, file=filename)


@router.post("/import/devices", summary="Upsert devices from CSV", response_model=ImportOut)
async def import_devices(
    caller: CallerDep, conn: Conn, body: CsvBody, filename: FileName = "devices.csv"
) -> ImportOut:
    """Columns: enterprise, device, and optionally name, gateway, profile, machine_kind, line,
    rated_cycle_s. Good rows are written; refused rows come back as a 422 naming each row."""
    caller.require(Capability.IMPORT)
    created, updated = await csv_import.import_devices(conn, body, filename)
    return ImportOut(created=created, updated=updated, file=filename)
