"""Import enterprises and devices from CSV into the registry (upsert by id); errors name file:line: column.

Every row is checked; the good rows are written and the refused ones are reported together
(``RowsRejectedError``, 422), so one mistyped row neither blocks nor loses the rest of a file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any, Final, TypeVar

from psycopg import AsyncConnection

from monitoring.api.errors import BadInputError, RowsRejectedError
from monitoring.credit_code import CreditCodeError, check_credit_code

ENTERPRISE_COLUMNS: Final = ("id", "name", "district", "segment")
ENTERPRISE_OPTIONAL: Final = (
    "name_en",
    "above_designated_size",
    "specialized",
    "little_giant",
    "service_provider",
    "credit_code",
)
DEVICE_COLUMNS: Final = ("enterprise", "device")
DEVICE_OPTIONAL: Final = ("name", "gateway", "profile", "machine_kind", "line", "rated_cycle_s")
_TRUE = {"1", "true", "yes", "y", "是", "t"}
_FALSE = {"0", "false", "no", "n", "否", "f", ""}
Record = TypeVar("Record")


def _rows(text: str, filename: str, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise BadInputError(
            f"{filename}:1: missing column(s) {', '.join(missing)}",
            hint=f"The header needs {', '.join(required)}.",
        )
    return [
        (reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k})
        for row in reader
    ]


def header_of(text: str) -> set[str]:
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    return {h.strip() for h in next(csv.reader([first]), [])}


def _bool(value: str, where: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadInputError(
        f"{where}: {value!r} is not a yes/no value", hint="Use 1/0, true/false or 是/否."
    )


def _updates_keeping_omitted(header: set[str], table: str, columns: dict[str, str]) -> str:
    """The SET list of an upsert: a column the file has takes the file's value (blank included);
    one the file omits keeps the stored value, so a partial file changes only what it names."""
    return ", ".join(
        f"{column} = EXCLUDED.{column}" if name in header else f"{column} = {table}.{column}"
        for name, column in columns.items()
    )


def _checked(
    rows: list[tuple[int, dict[str, str]]],
    filename: str,
    check: Callable[[str, dict[str, str]], Record],
) -> tuple[list[Record], list[str]]:
    """Each row through ``check(where, row)``: the records of the good rows and the messages of
    the refused ones (``file:line: column: what``), in file order."""
    records: list[Record] = []
    rejected: list[str] = []
    for line, row in rows:
        try:
            records.append(check(f"{filename}:{line}", row))
        except BadInputError as exc:
            rejected.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    return records, rejected


def _credit_code(
    row: dict[str, str], where: str, owners: dict[str, str], enterprise: str
) -> str | None:
    """The row's credit code checked (blank: none), refused when another enterprise has it."""
    text = row.get("credit_code", "")
    if not text:
        return None
    try:
        code = check_credit_code(text)
    except CreditCodeError as exc:
        raise BadInputError(
            f"{where}: credit_code: {exc}",
            hint="Copy the 18 characters from the business licence (营业执照).",
        ) from None
    owner = owners.setdefault(code, enterprise)
    if owner != enterprise:
        raise BadInputError(f"{where}: credit_code: {code} is already the code of {owner!r}")
    return code


async def _known(conn: AsyncConnection[Any], table: str, column: str) -> set[str]:
    cur = await conn.execute(f"SELECT {column} FROM {table}")
    return {r[0] for r in await cur.fetchall()}


async def import_enterprises(
    conn: AsyncConnection[Any], text: str, filename: str
) -> tuple[int, int]:
    """Upsert enterprises; every row is checked before any is written. Returns (created, updated)."""
    rows = _rows(text, filename, ENTERPRISE_COLUMNS)
    districts = await _known(conn, "districts", "id")
    districts_by_name = dict(
        await (await conn.execute("SELECT name_zh, id FROM districts")).fetchall()
    )
    segments = await _known(conn, "segments", "code")
    providers = await _known(conn, "service_providers", "id")
    existing = await _known(conn, "enterprises", "id")
    cur = await conn.execute(
        "SELECT credit_code, id FROM enterprises WHERE credit_code IS NOT NULL"
    )
    owners: dict[str, str] = dict(await cur.fetchall())

    def check(where: str, row: dict[str, str]) -> tuple[Any, ...]:
        if not row.get("id"):
            raise BadInputError(f"{where}: id: empty")
        district = districts_by_name.get(row["district"], row["district"])
        if district not in districts:
            raise BadInputError(
                f"{where}: district: unknown district {row['district']!r}",
                hint=f"Use one of {', '.join(sorted(districts))}.",
            )
        if row["segment"] not in segments:
            raise BadInputError(
                f"{where}: segment: unknown segment {row['segment']!r}",
                hint="Use 345 or 367 (GB/T 4754-2017).",
            )
        provider = row.get("service_provider") or None
        if provider and provider not in providers:
            raise BadInputError(f"{where}: service_provider: unknown provider {provider!r}")
        return (
            row["id"],
            row["name"],
            row.get("name_en", ""),
            district,
            row["segment"],
            _bool(row.get("above_designated_size", ""), f"{where}: above_designated_size"),
            _bool(row.get("specialized", ""), f"{where}: specialized"),
            _bool(row.get("little_giant", ""), f"{where}: little_giant"),
            provider,
            _credit_code(row, where, owners, row["id"]),
        )

    records, rejected = _checked(rows, filename, check)
    updates = _updates_keeping_omitted(
        header_of(text),
        "enterprises",
        {
            "name_en": "name_en",
            "above_designated_size": "above_designated_size",
            "specialized": "specialized",
            "little_giant": "little_giant",
            "service_provider": "service_provider_id",
            "credit_code": "credit_code",
        },
    )
    async with conn.transaction(), conn.cursor() as cursor:
        await cursor.executemany(
            """INSERT INTO enterprises (id, name, name_en, district_id, segment_code,
                   above_designated_size, specialized, little_giant, service_provider_id,
                   credit_code)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
                   district_id = EXCLUDED.district_id, segment_code = EXCLUDED.segment_code, """
            + updates,
            records,
        )
    created = sum(1 for r in records if r[0] not in existing)
    if rejected:
        raise RowsRejectedError(filename, rejected, created, len(records) - created)
    return created, len(records) - created


async def import_devices(conn: AsyncConnection[Any], text: str, filename: str) -> tuple[int, int]:
    """Upsert devices by (enterprise, device); every row is checked first. Returns (created, updated)."""
    rows = _rows(text, filename, DEVICE_COLUMNS)
    enterprises = await _known(conn, "enterprises", "id")
    cur = await conn.execute("SELECT enterprise_id, id FROM gateways")
    gateways = {(e, g) for e, g in await cur.fetchall()}  # gateway ids are unique per enterprise
    cur = await conn.execute("SELECT enterprise_id || '/' || device_id FROM devices")
    existing = {r[0] for r in await cur.fetchall()}

    def check(where: str, row: dict[str, str]) -> tuple[Any, ...]:
        if row["enterprise"] not in enterprises:
            raise BadInputError(
                f"{where}: enterprise: unknown enterprise {row['enterprise']!r}",
                hint="Import the enterprises first.",
            )
        if not row["device"]:
            raise BadInputError(f"{where}: device: empty")
        gateway = row.get("gateway") or None
        if gateway and (row["enterprise"], gateway) not in gateways:
            raise BadInputError(
                f"{where}: gateway: enterprise {row['enterprise']!r} has no gateway {gateway!r}",
                hint="A gateway registers when it first connects (or leave the column empty); "
                "gateway ids are per enterprise.",
            )
        rated: float | None = None
        if row.get("rated_cycle_s"):
            try:
                rated = float(row["rated_cycle_s"])
            except ValueError:
                raise BadInputError(
                    f"{where}: rated_cycle_s: {row['rated_cycle_s']!r} is not a number"
                ) from None
            if rated <= 0:
                raise BadInputError(f"{where}: rated_cycle_s: must be positive seconds")
        return (
            row["enterprise"],
            row["device"],
            row.get("name", ""),
            gateway,
            row.get("profile", ""),
            row.get("machine_kind", ""),
            row.get("line", ""),
            rated,
        )

    records, rejected = _checked(rows, filename, check)
    updates = _updates_keeping_omitted(
        header_of(text),
        "devices",
        {
            "name": "name",
            "profile": "profile",
            "machine_kind": "machine_kind",
            "line": "line",
            "rated_cycle_s": "rated_cycle_s",
        },
    )
    async with conn.transaction(), conn.cursor() as cursor:
        await cursor.executemany(
            """INSERT INTO devices (enterprise_id, device_id, name, gateway_id, profile, machine_kind,
                   line, rated_cycle_s) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (enterprise_id, device_id) DO UPDATE SET
                   gateway_id = coalesce(EXCLUDED.gateway_id, devices.gateway_id), """
            + updates,
            records,
        )
    created = sum(1 for r in records if f"{r[0]}/{r[1]}" not in existing)
    if rejected:
        raise RowsRejectedError(filename, rejected, created, len(records) - created)
    return created, len(records) - created
