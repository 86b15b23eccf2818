"""Push the daily export to an upward platform: HTTPS POST, retries with backoff, every attempt
recorded in ``export_deliveries`` (migration 0107), never two deliveries of one day.

One day is one delivery: its document is built once, stored, and resent unchanged (same bytes,
same ``Idempotency-Key``) by every later attempt, also after a restart, so a receiver that
accepted an attempt whose answer never reached us recognizes the resend. A session-level
advisory lock per day keeps two processes (the service and a CLI run) from pushing the same day
at once. docs/export.md describes the protocol for receivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from monitoring import integration, kpis
from monitoring.api.export_doc import SCHEMA_VERSION, build_daily_export
from monitoring.errors import MonitoringError
from monitoring.settings import ExportPushSettings, MonitoringSettings

__all__ = ["Delivery", "ExportPushError", "PushBusyError", "due_days", "push_day", "push_due"]

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SCHEMA_HEADER: Final = "X-Shulian-Schema-Version"
HASH_HEADER: Final = "X-Shulian-Content-SHA256"
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_ACK_CHARS: Final = 4000
_LOCK_NAMESPACE: Final = "shulian.export_push"


class ExportPushError(MonitoringError):
    """The push of a day could not be made (not configured, day not complete)."""


class PushBusyError(ExportPushError):
    """Another process is pushing this day right now."""


class _RetryableError(Exception):
    """The attempt failed in a way a later attempt may not (no answer, 5xx, 408, 429)."""


class _RefusedError(Exception):
    """The receiver refused the document itself (another 4xx): resending it will not help."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The stored record of one day's delivery."""

    day: date
    status: str
    """pending, accepted, failed (attempts used up) or refused (the receiver said 4xx)."""
    attempts: int
    schema_version: str
    content_sha256: str
    endpoint: str
    last_error: str | None
    last_attempt_at: datetime | None
    accepted_at: datetime | None
    ack_status: int | None
    ack_body: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "status": self.status,
            "attempts": self.attempts,
            "schema_version": self.schema_version,
            "content_sha256": self.content_sha256,
            "endpoint": self.endpoint,
            "last_error": self.last_error,
            "last_attempt_at": _iso(self.last_attempt_at),
            "accepted_at": _iso(self.accepted_at),
            "ack_status": self.ack_status,
            "ack_body": self.ack_body,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


_COLUMNS: Final = ", ".join(Delivery.__dataclass_fields__)


def idempotency_key(day: date) -> str:
    return f"shulian-daily-export-{day.isoformat()}"


async def load_delivery(conn: AsyncConnection[Any], day: date) -> Delivery | None:
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM export_deliveries WHERE day = %s", (day,))
    row = await cursor.fetchone()
    return Delivery(*row) if row else None


async def list_deliveries(conn: AsyncConnection[Any], limit: int = 60) -> list[Delivery]:
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM export_deliveries ORDER BY day DESC LIMIT %s", (limit,)
    )
    return [Delivery(*row) for row in await cursor.fetchall()]


async def push_day(
    db_url: str,
    settings: MonitoringSettings,
    day: date,
    *,
    now: datetime | None = None,
) -> Delivery:
    """Deliver ``day`` unless it was accepted before; returns the record as stored.

    Builds and stores the document on the first run (after refreshing the day's KPIs), then
    tries up to ``export.attempts`` times with backoff. An accepted day is never sent again.

    Raises:
        ExportPushError: no receiver configured, or ``day`` is not complete.
        PushBusyError: another process holds this day.
    """
    export = settings.export
    if not export.url:
        raise ExportPushError(
            "no receiver configured",
            where="export.url",
            hint="Set the upward platform's https:// address (docs/export.md).",
        )
    now = now or datetime.now(UTC)
    if day >= kpis.city_today(settings.kpi, now):
        raise ExportPushError(f"day {day} is not complete yet", hint="Push a day before today.")
    # A connection of its own: the advisory lock lives as long as the session, so a process
    # that dies mid-push frees the day at once.
    # JIT off as in the app's pool: compiling the KPI queries costs more than running them.
    async with await AsyncConnection.connect(db_url, autocommit=True, options="-c jit=off") as conn:
        cursor = await conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), %s)", (_LOCK_NAMESPACE, day.toordinal())
        )
        locked = await cursor.fetchone()
        if not (locked and locked[0]):
            raise PushBusyError(f"day {day} is being pushed by another process")
        delivery = await _stored_or_new(conn, settings, day, now)
        if delivery.status == "accepted":
            return delivery
        async with _client(export) as client:
            await _send_with_retries(conn, client, export, day)
        stored = await load_delivery(conn, day)
        assert stored is not None  # the row was created above and is never deleted
        return stored


async def _stored_or_new(
    conn: AsyncConnection[Any], settings: MonitoringSettings, day: date, now: datetime
) -> Delivery:
    """The day's record; on the first push, the document is built from freshly refreshed KPIs
    and integration measures, and stored."""
    stored = await load_delivery(conn, day)
    if stored is not None:
        return stored
    await kpis.refresh_day(conn, settings.kpi, day, now)
    await integration.refresh_day(conn, settings.kpi, day, now)
    body = (await build_daily_export(conn, settings.kpi, day, now)).to_bytes()
    await conn.execute(
        """INSERT INTO export_deliveries (day, schema_version, idempotency_key, endpoint, body,
               content_sha256) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (day) DO NOTHING""",
        (
            day,
            SCHEMA_VERSION,
            idempotency_key(day),
            settings.export.url,
            body.decode("utf-8"),
            hashlib.sha256(body).hexdigest(),
        ),
    )
    created = await load_delivery(conn, day)
    assert created is not None
    return created


def _client(export: ExportPushSettings) -> httpx.AsyncClient:
    """A client that verifies the receiver against ``ca_file`` or the system's trust store.

    Raises:
        ExportPushError: ``ca_file`` cannot be read as PEM certificates.
    """
    verify: ssl.SSLContext | bool = True  # the system's trust store
    if export.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(export.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ExportPushError(
                f"cannot load {export.ca_file}: {exc}",
                where="export.ca_file",
                hint="Give the PEM file of the CA that signed the receiver's certificate.",
            ) from None
    return httpx.AsyncClient(verify=verify, timeout=export.timeout_s)


def _headers(export: ExportPushSettings, day: date, sha256: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        IDEMPOTENCY_HEADER: idempotency_key(day),
        SCHEMA_HEADER: SCHEMA_VERSION,
        HASH_HEADER: sha256,
    }
    if export.token is not None:
        secret = export.token.get_secret_value()
        headers[export.auth_header] = (
            f"{export.auth_scheme} {secret}" if export.auth_scheme else secret
        )
    return headers


async def _send_with_retries(
    conn: AsyncConnection[Any], client: httpx.AsyncClient, export: ExportPushSettings, day: date
) -> None:
    cursor = await conn.execute(
        "SELECT body, content_sha256 FROM export_deliveries WHERE day = %s", (day,)
    )
    row = await cursor.fetchone()
    assert row is not None
    body, sha256 = row[0].encode("utf-8"), row[1]
    headers = _headers(export, day, sha256)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(export.attempts),
        # backoff_s, then doubling, each plus up to backoff_s of jitter so that many senders
        # released by one outage do not retry in step.
        wait=wait_exponential_jitter(
            multiplier=export.backoff_s, jitter=export.backoff_s, max=export.backoff_max_s
        ),
        retry=retry_if_exception_type(_RetryableError),
        before_sleep=lambda state: log.warning(
            "export push of %s failed (try %d), retrying in %.1f s",
            day,
            state.attempt_number,
            state.next_action.sleep if state.next_action else 0.0,
        ),
        reraise=True,
    )
    final = "accepted"
    try:
        async for attempt in retrying:
            with attempt:
                await _attempt(conn, client, export.url, day, body, headers)
    except _RetryableError:
        final = "failed"
    except _RefusedError:
        final = "refused"
    if final != "accepted":
        await conn.execute(
            "UPDATE export_deliveries SET status = %s WHERE day = %s AND status <> 'accepted'",
            (final, day),
        )
        log.error(
            "export push of %s %s; the service tries again later, or run "
            "`shulian monitoring export push --day %s`",
            day,
            "was refused by the receiver" if final == "refused" else "failed after all tries",
            day,
        )


async def _attempt(
    conn: AsyncConnection[Any],
    client: httpx.AsyncClient,
    url: str,
    day: date,
    body: bytes,
    headers: dict[str, str],
) -> None:
    """One POST; the attempt is counted before it is sent, so a crash mid-send still shows."""
    cursor = await conn.execute(
        """UPDATE export_deliveries SET attempts = attempts + 1, last_attempt_at = now(),
               endpoint = %s, status = 'pending' WHERE day = %s RETURNING attempts""",
        (url, day),
    )
    counted = await cursor.fetchone()
    assert counted is not None
    number = int(counted[0])
    await conn.execute(
        """INSERT INTO export_delivery_attempts (day, attempt, started_at, error)
           VALUES (%s, %s, now(), 'no answer recorded (stopped while sending)')""",
        (day, number),
    )
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:  # connection refused, TLS verification, timeout
        await _record(conn, day, number, None, f"{type(exc).__name__}: {exc}")
        raise _RetryableError(str(exc)) from exc
    if response.is_success:
        await _record(conn, day, number, response.status_code, None)
        await conn.execute(
            """UPDATE export_deliveries SET status = 'accepted', accepted_at = now(),
                   ack_status = %s, ack_body = %s, last_error = NULL WHERE day = %s""",
            (response.status_code, response.text[:_ACK_CHARS], day),
        )
        log.info("export of %s accepted by %s (try %d)", day, url, number)
        return
    error = f"HTTP {response.status_code}: {response.text[:500]}"
    await _record(conn, day, number, response.status_code, error)
    if response.status_code in _RETRYABLE_STATUS or response.status_code >= 500:
        raise _RetryableError(error)
    raise _RefusedError(error)


async def _record(
    conn: AsyncConnection[Any], day: date, number: int, status: int | None, error: str | None
) -> None:
    await conn.execute(
        "UPDATE export_delivery_attempts SET http_status = %s, error = %s "
        "WHERE day = %s AND attempt = %s",
        (status, error, day, number),
    )
    if error is not None:
        await conn.execute(
            "UPDATE export_deliveries SET last_error = %s WHERE day = %s", (error, day)
        )


async def due_days(
    conn: AsyncConnection[Any], settings: MonitoringSettings, now: datetime
) -> list[date]:
    """Complete days the service should push now: the last ``backfill_days`` (yesterday once
    ``at`` has passed), from the first day with KPIs on, not accepted, and not tried within
    ``backoff_max_s`` after their tries ran out."""
    export = settings.export
    local_now = now.astimezone(ZoneInfo(settings.kpi.timezone))
    today = local_now.date()
    last = today - timedelta(days=1 if local_now.time() >= export.at else 2)
    first = today - timedelta(days=export.backfill_days)
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        """SELECT g.day::date AS day FROM generate_series(%(first)s::date, %(last)s::date,
                  interval '1 day') AS g(day)
           LEFT JOIN export_deliveries x ON x.day = g.day::date
           WHERE g.day::date >= (SELECT min(day) FROM kpi_daily_state)
             AND (x.day IS NULL OR x.status = 'pending'
                  OR (x.status IN ('failed', 'refused')
                      AND x.last_attempt_at < %(retry_before)s))
           ORDER BY 1""",
        {
            "first": first,
            "last": last,
            "retry_before": now - timedelta(seconds=export.backoff_max_s),
        },
    )
    return [row["day"] for row in await cursor.fetchall()]


async def push_due(
    db_url: str, settings: MonitoringSettings, now: datetime | None = None
) -> list[Delivery]:
    """Push every due day in order; a day another process holds is left to it."""
    now = now or datetime.now(UTC)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        days = await due_days(conn, settings, now)
    done = []
    for day in days:
        try:
            done.append(await push_day(db_url, settings, day, now=now))
        except PushBusyError:
            log.info("export push of %s is already running elsewhere", day)
    return done


async def push_forever(db_url: str, settings: MonitoringSettings) -> None:
    """The service's daily push: every ``check_s``, push the due days (after their KPI refresh)."""
    while True:
        try:
            await push_due(db_url, settings)
        except asyncio.CancelledError:
            raise
        except Exception:  # one broad catch at the task boundary: log and look again later
            log.exception("export push failed; looking again in %.0f s", settings.export.check_s)
        await asyncio.sleep(settings.export.check_s)
