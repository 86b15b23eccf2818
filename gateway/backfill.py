"""Backfill from devices' history logs: the same normalize, report-by-exception, buffer and publish
path as live readings, sent as historical data with the samples' own timestamps.

A history log is what a controller (or the simulators' ``--history-dir``) recorded: one JSONL file
per device, ``<dir>/<device id>.jsonl``, each line a snapshot of raw values (before scaling, as a
driver reads them) keyed by the profile's signal names::

    {"ts_ms": 1764806400000, "values": {"machine_state": 3, "part_count": 20431}}

Every batch goes into the disk buffer first and leaves it only as backlog, so the publisher marks
it ``historical: true``; the command returns when the broker acknowledged every batch. Run it
before the device's live gateway starts: the ingest counts a counter's increase from the newest
reading it holds, so readings older than live ones would only be placed late, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.app import GatewayApp
from gateway.drivers.base import RawReading
from gateway.errors import ConfigError
from gateway.pipeline import Batcher, DeviceCounters, DevicePipeline, Spool
from gateway.profiles.loader import Site
from gateway.rbe import ReportByException
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

DRAIN_EVERY_LINES = 200
"""Let the spool write to disk this often, so memory holds a few batches, not a month."""


@dataclass(frozen=True, slots=True)
class BackfillResult:
    devices: int
    readings: int
    samples: int
    batches: int
    missing: tuple[str, ...]
    """Devices of the site without a history log."""


async def backfill(
    settings: GatewaySettings, site: Site, history_dir: Path, *, publish_timeout_s: float = 600.0
) -> BackfillResult:
    """Pass every device's history log through the pipeline, then publish until acknowledged."""
    app = GatewayApp(settings, site)
    await app.buffer.open()
    spool = Spool(app.buffer, lambda _stored: None)  # never offered live: sent as backlog
    spool_task = asyncio.create_task(spool.run(), name="backfill-spool")
    batcher = Batcher(
        app.boot, settings.buffer.batch_max_samples, settings.buffer.batch_max_delay_ms, spool.put
    )
    readings = samples = 0
    missing: list[str] = []
    try:
        for device in site.devices:
            path = history_dir / f"{device.id}.jsonl"
            if not path.exists():
                missing.append(device.id)
                continue
            counters = DeviceCounters()
            pipeline = DevicePipeline(
                app.normalizers[device.id], ReportByException(device.profile), batcher, counters
            )
            await _feed(path, pipeline, spool)
            readings += counters.points_read
            samples += counters.points_reported
        batcher.flush()
        await spool.drain(timeout_s=60.0)
        batches = batcher.seq
        await _publish_all(app, publish_timeout_s)
    finally:
        spool_task.cancel()
        await asyncio.gather(spool_task, return_exceptions=True)
        await app.buffer.close()
    if missing:
        log.warning("no history log for some devices", extra={"devices": missing})
    return BackfillResult(
        len(site.devices) - len(missing), readings, samples, batches, tuple(missing)
    )


async def _feed(path: Path, pipeline: DevicePipeline, spool: Spool) -> None:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                ts_ms = int(record["ts_ms"])
                values = dict(record["values"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    [
                        f'{path}:{number}: not a history record {{"ts_ms": ..., "values": {{...}}}} '
                        f"({exc})"
                    ]
                ) from None
            pipeline.accept([RawReading(name, raw, ts_ms) for name, raw in values.items()])
            if number % DRAIN_EVERY_LINES == 0:
                await spool.drain(timeout_s=60.0)


async def _publish_all(app: GatewayApp, timeout_s: float) -> None:
    """Publish the buffer's backlog; return once the broker acknowledged all of it."""
    await app.publisher.start()
    deadline = time.monotonic() + timeout_s
    try:
        while (await app.buffer.stats()).batches:
            if time.monotonic() > deadline:
                left = app.buffer.last_stats.batches
                raise TimeoutError(
                    f"{left} history batches still unacknowledged after {timeout_s:g} s; "
                    "they stay in the buffer and the gateway sends them when it runs"
                )
            await asyncio.sleep(0.2)
    finally:
        await app.publisher.stop()
