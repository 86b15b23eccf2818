"""The composition root: settings + site file -> buffer, publisher, pipelines, device supervisors; reload; stop.

Start-up order makes the guarantees hold: the disk buffer opens first (its backlog is replayed),
then the MQTT session, then the devices. Stop runs the other way: devices stop, the last partial
batch is sealed and committed, in-flight batches get a moment for their PUBACKs, the offline
status goes out, the buffer closes. Whatever was not acknowledged stays on disk for next time.

Reload (SIGHUP, or the site file or a profile it uses changing on disk) restarts only devices
whose resolved configuration changed, starts new ones and stops removed ones; the buffer, the
MQTT session and every other device are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Final

from gateway.buffer import AsyncBuffer, BufferStats, NewBatch
from gateway.drivers.base import Driver
from gateway.drivers.registry import get_driver
from gateway.errors import ConfigError
from gateway.metrics import GatewayMetricsHub
from gateway.normalize import DeviceNormalizer, compile_device
from gateway.pipeline import Batcher, DeviceCounters, DevicePipeline, Spool, now_ms
from gateway.profiles.loader import Site, load_site
from gateway.profiles.models import DeviceConfig
from gateway.publisher import Publisher
from gateway.rbe import ReportByException
from gateway.remote_config import RemoteConfig
from gateway.scheduler import Backoff, DeviceRunner, Scheduler
from gateway.settings import GatewaySettings
from gateway.sparkplug import SparkplugPublisher
from gateway.status import ReadRates, StatusServer, collect_status
from wire.payloads import DeviceConnection, DeviceStatus, GatewayStatus

log = logging.getLogger(__name__)

BUFFER_FILE = "buffer.sqlite3"
SPARKPLUG_BUFFER_FILE = "sparkplug-buffer.sqlite3"
"""With Sparkplug output beside our contract, its own store-and-forward buffer."""
PKI_FOLDER = "pki"
MAINTENANCE_S = 5.0


def gateway_version() -> str:
    try:
        return metadata.version("shulian")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def device_fingerprint(device: DeviceConfig) -> str:
    """Changes exactly when the device's spec or its resolved profile changes (not its line)."""
    text = device.model_dump_json(exclude={"source"})
    return hashlib.sha256(text.encode()).hexdigest()


def with_data_dir(device: DeviceConfig, data_dir: Path) -> DeviceConfig:
    """The device as its driver gets it: an OPC UA device keeps its client certificate and trust
    list in ``<gateway.data_dir>/pki`` unless its site entry or its profile names a ``pki_dir``
    (the driver alone would fall back to the working directory's var/gateway/pki)."""
    profile_pki_dir = getattr(getattr(device.profile, "opcua", None), "pki_dir", None)
    if device.profile.protocol != "opcua" or "pki_dir" in device.settings or profile_pki_dir:
        return device
    settings = {**device.settings, "pki_dir": str(data_dir / PKI_FOLDER)}
    return device.model_copy(update={"settings": settings})


def config_hash(devices: list[DeviceConfig]) -> str:
    digest = hashlib.sha256()
    for device in sorted(devices, key=lambda d: d.id):
        digest.update(device.id.encode() + b"=" + device_fingerprint(device).encode() + b";")
    return digest.hexdigest()[:16]


def compile_devices(devices: list[DeviceConfig]) -> dict[str, DeviceNormalizer]:
    """Every device's normalizer; all unit problems at once as one ConfigError."""
    problems: list[str] = []
    out: dict[str, DeviceNormalizer] = {}
    for device in devices:
        try:
            out[device.id] = compile_device(device)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return out


@dataclass
class _Watched:
    files: dict[Path, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, site: Site) -> _Watched:
        paths = {Path(site.file)} | {Path(p.file) for p in site.profiles.values()}
        return cls({p: _stamp(p) for p in paths})

    def changed(self) -> bool:
        return any(_stamp(p) != stamp for p, stamp in self.files.items())


def _stamp(path: Path) -> tuple[float, int]:
    try:
        st = path.stat()
    except OSError:
        return (0.0, -1)
    return (st.st_mtime, st.st_size)


class GatewayApp:
    """One gateway process."""

    def __init__(
        self,
        settings: GatewaySettings,
        site: Site,
        *,
        site_loader: Callable[[Path], Site] = load_site,
        driver_for: Callable[[str], type[Driver]] | None = None,
        device_backoff: Backoff | None = None,
        settle_heap: bool = False,
    ) -> None:
        """``settle_heap``: tune the process's garbage collector after start and each reload
        (``_settle_heap``); the gateway process does, an embedding test need not."""
        settings.require_identity()
        self.settle_heap = settle_heap
        self.settings = settings
        self.site = site
        self.site_loader = site_loader
        self.driver_for = driver_for or (lambda protocol: get_driver(protocol).load())
        section = settings.gateway
        self.device_backoff = device_backoff or Backoff(
            min(section.device_reconnect_min_s, section.device_reconnect_max_s),
            section.device_reconnect_max_s,
        )
        self.normalizers = compile_devices(site.devices)
        self.devices = {d.id: d for d in site.devices}
        self.fingerprints = {d.id: device_fingerprint(d) for d in site.devices}
        self.config_hash = config_hash(site.devices)
        self.boot = uuid.uuid4().hex
        self.started_ms = now_ms()
        self.version = gateway_version()
        gw = settings.gateway
        self.buffer = AsyncBuffer.at(
            Path(gw.data_dir) / BUFFER_FILE,
            settings.buffer.max_bytes,
            settings.buffer.max_age_s,
            settings.buffer.synchronous,
        )
        self.metrics = GatewayMetricsHub(
            buffer_stats=self.buffer_stats, buffer_max_bytes=settings.buffer.max_bytes
        )
        mode = settings.sparkplug.mode
        self.publisher: Publisher = (
            self._sparkplug_publisher(self.buffer) if mode == "only" else self._shulian_publisher()
        )
        self.spool = Spool(self.buffer, self.publisher.offer_live)
        self.outputs: list[tuple[Publisher, AsyncBuffer, Spool]] = [
            (self.publisher, self.buffer, self.spool)
        ]
        if mode == "beside":
            spb_buffer = AsyncBuffer.at(
                Path(gw.data_dir) / SPARKPLUG_BUFFER_FILE,
                settings.buffer.max_bytes,
                settings.buffer.max_age_s,
                settings.buffer.synchronous,
            )
            spb_publisher = self._sparkplug_publisher(spb_buffer)
            self.outputs.append(
                (spb_publisher, spb_buffer, Spool(spb_buffer, spb_publisher.offer_live))
            )
        self.batcher = Batcher(
            self.boot,
            settings.buffer.batch_max_samples,
            settings.buffer.batch_max_delay_ms,
            self._spool_everywhere if len(self.outputs) > 1 else self.spool.put,
        )
        self.scheduler = Scheduler(settings.gateway.connects_per_s)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watched = _Watched.of(site)
        self._published_dropped = 0
        self._settings_at_start = dict(site.settings)
        self.reloads = 0
        self.last_restarted: list[str] = []
        """Devices (re)started by the last successful reload."""
        self.remote: RemoteConfig | None = None
        if settings.remote_config.enabled:
            self.remote = RemoteConfig(self, Path(settings.gateway.data_dir) / "remote-config")
            self.publisher.on_config = self.remote.receive
        self.status_server: StatusServer | None = None

    def _shulian_publisher(self) -> Publisher:
        settings, gw = self.settings, self.settings.gateway
        return Publisher(
            settings.mqtt,
            settings.buffer,
            enterprise=gw.enterprise,
            gateway=gw.id,
            client_id=settings.client_id,
            buffer=self.buffer,
            metrics=self.metrics,
            status=self.gateway_status,
        )

    def _sparkplug_publisher(self, buffer: AsyncBuffer) -> SparkplugPublisher:
        settings, gw = self.settings, self.settings.gateway
        return SparkplugPublisher(
            settings.sparkplug.mqtt or settings.mqtt,
            settings.buffer,
            sparkplug=settings.sparkplug,
            enterprise=gw.enterprise,
            gateway=gw.id,
            client_id=(settings.sparkplug.mqtt and settings.sparkplug.mqtt.client_id)
            or f"{settings.client_id}-spb",
            buffer=buffer,
            metrics=self.metrics,
            status=self.gateway_status,
            signals_of=self._signals_of,
            data_dir=Path(gw.data_dir),
        )

    def _signals_of(self, device_id: str) -> list[str]:
        device = self.devices.get(device_id)
        return [s.name for s in device.profile.signals] if device is not None else []

    def _spool_everywhere(self, batch: NewBatch) -> None:
        for _, _, spool in self.outputs:
            spool.put(batch)

    def publish_device_status(self, status: DeviceStatus) -> None:
        for publisher, _, _ in self.outputs:
            publisher.publish_device_status(status)

    def buffer_stats(self) -> BufferStats:
        """The disk buffer's last figures, counting batches lost before reaching the disk too."""
        stats = self.buffer.last_stats
        lost_in_memory = self.spool.dropped_samples if hasattr(self, "spool") else 0
        return replace(stats, dropped_samples=stats.dropped_samples + lost_in_memory)

    def gateway_status(self, online: bool) -> GatewayStatus:
        gw = self.settings.gateway
        return GatewayStatus(
            gateway=gw.id,
            enterprise=gw.enterprise,
            online=online,
            boot=self.boot,
            ts_ms=now_ms(),
            version=self.version,
            config_hash=self.config_hash,
            started_ms=self.started_ms,
            devices=sorted(self.devices),
            buffer_dropped_samples=self.buffer_stats().dropped_samples,
        )

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        stats = await self.buffer.open()
        self._published_dropped = stats.dropped_samples
        log.info(
            "gateway starting",
            extra={
                "gateway": self.settings.gateway.id,
                "enterprise": self.settings.gateway.enterprise,
                "boot": self.boot,
                "devices": len(self.devices),
                "config_hash": self.config_hash,
                "backlog_batches": stats.batches,
                "dropped_samples_total": stats.dropped_samples,
            },
        )
        log_profile_warnings(self.site)
        if self.settings.metrics.port:
            self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
        if self.settings.status.port:
            await self._serve_status_page()
        for publisher, buffer, spool in self.outputs[1:]:
            await buffer.open()
            await publisher.start()
            self._tasks.append(asyncio.create_task(spool.run(), name="sparkplug-spool"))
        await self.publisher.start()
        self._tasks += [
            asyncio.create_task(self.spool.run(), name="spool"),
            asyncio.create_task(self._maintain(), name="maintenance"),
            asyncio.create_task(self._reloader(), name="reload"),
            asyncio.create_task(self._measure_loop_lag(), name="loop-lag"),
        ]
        if self.settings.metrics.publish_interval_s:
            self._tasks.append(asyncio.create_task(self._publish_metrics(), name="metrics"))
        for device in self.devices.values():
            self._start_device(device)
        if self.settle_heap:
            _settle_heap()

    async def _serve_status_page(self) -> None:
        server = StatusServer(self.settings.status, self._collect_status)
        if await server.start(lambda: self.scheduler.runners):
            self.status_server = server

    async def _collect_status(self, rates: ReadRates) -> dict[str, object]:
        return await collect_status(self, rates)

    async def stop(self) -> None:
        log.info("gateway stopping")
        if self.status_server is not None:
            await self.status_server.stop()
        await self.scheduler.stop_all()
        self.batcher.flush()
        for publisher, _, spool in self.outputs:
            try:
                await spool.drain()
            except TimeoutError:
                log.error("the last batches could not be written to the buffer in time")
            await publisher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, buffer, _ in self.outputs:
            await buffer.close()
        log.info("gateway stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (SIGHUP reloads), stop."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, self._stop.set)
            loop.add_signal_handler(signal.SIGINT, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # ------------------------------------------------------------------ devices

    def _start_device(self, device: DeviceConfig) -> None:
        device = with_data_dir(device, Path(self.settings.gateway.data_dir))
        driver_cls = self.driver_for(device.profile.protocol)
        counters = DeviceCounters()
        pipeline = DevicePipeline(
            self.normalizers[device.id], ReportByException(device.profile), self.batcher, counters
        )
        histogram = self.metrics.poll_latency.labels(device.id, driver_cls.name)
        runner = DeviceRunner(
            device,
            driver_cls,
            pipeline,
            self.publish_device_status,
            gateway=self.settings.gateway.id,
            bus_lock=self.scheduler.bus_lock(device, driver_cls),
            backoff=self.device_backoff,
            observe_latency=histogram.observe,
            pacer=self.scheduler.pacer,
        )
        self.metrics.add_device(
            device.id,
            driver_cls.name,
            counters,
            runner.driver_metrics,
            lambda: runner.is_connected,
        )
        self.scheduler.add(runner)

    async def _stop_device(self, device_id: str, *, removed: bool) -> None:
        await self.scheduler.remove(device_id)
        self.metrics.remove_device(device_id)
        if removed:
            self.publish_device_status(
                DeviceStatus(
                    gateway=self.settings.gateway.id,
                    device=device_id,
                    connection=DeviceConnection.DISCONNECTED,
                    ts_ms=now_ms(),
                    error="removed from the site configuration",
                )
            )
            for publisher, _, _ in self.outputs:
                publisher.forget_device(device_id)

    # ------------------------------------------------------------------- reload

    async def reload(self, path: Path | None = None) -> bool:
        """Apply the site file as it is now; returns False (and keeps running) if it is invalid.

        ``path``: another site file to run from now on (a remote configuration's); the devices
        whose configuration is unchanged keep running, the buffer is not touched.
        """
        path = path or Path(self.site.file)
        try:
            site = await asyncio.to_thread(self.site_loader, path)
            normalizers = compile_devices(site.devices)
        except ConfigError as exc:
            log.error(
                "site file has problems; keeping the running configuration",
                extra={"file": str(path), "problems": exc.problems},
            )
            return False
        new = {d.id: d for d in site.devices}
        new_prints = {d.id: device_fingerprint(d) for d in site.devices}
        removed = [d for d in self.devices if d not in new]
        added = [d for d in new if d not in self.devices]
        changed = [d for d in new if d in self.devices and new_prints[d] != self.fingerprints[d]]
        for device_id in removed:
            await self._stop_device(device_id, removed=True)
        for device_id in changed:
            await self._stop_device(device_id, removed=False)
        self.site = site
        self.devices = new
        self.fingerprints = new_prints
        self.normalizers = normalizers
        self.config_hash = config_hash(site.devices)
        for device_id in changed + added:
            self._start_device(new[device_id])
        self.last_restarted = sorted(changed + added)
        self._watched = _Watched.of(site)
        self.reloads += 1
        log_profile_warnings(site)
        if site.settings != self._settings_at_start:
            log.warning("settings sections changed; restart the gateway to apply them")
        log.info(
            "site reloaded",
            extra={
                "added": added,
                "removed": removed,
                "restarted": changed,
                "unchanged": len(new) - len(added) - len(changed),
                "config_hash": self.config_hash,
            },
        )
        self.publisher.publish_gateway_status()
        if self.settle_heap:
            _settle_heap()
        return True

    async def _reloader(self) -> None:
        interval = self.settings.reload.watch_interval_s
        while True:
            try:
                if interval:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._reload.wait(), interval)
                else:
                    await self._reload.wait()
                if self._reload.is_set() or self._watched.changed():
                    self._reload.clear()
                    # Take a fresh stamp first, so a file half-written now is seen again later.
                    self._watched = _Watched.of(self.site)
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # the task boundary: reload must keep working after a bug
                log.exception("reload failed; will retry on the next change")
                await asyncio.sleep(interval or 1.0)

    # -------------------------------------------------------------- maintenance

    async def _maintain(self) -> None:
        while True:
            try:
                await self.buffer.expire()
                await self.buffer.stats()
                stats = self.buffer_stats()
                if stats.dropped_samples != self._published_dropped:
                    self._published_dropped = stats.dropped_samples
                    self.publisher.publish_gateway_status()
            except asyncio.CancelledError:
                raise
            except Exception:  # the task boundary
                log.exception("buffer maintenance failed; retrying")
            await asyncio.sleep(MAINTENANCE_S)

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.1)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - start - 0.1))

    async def _publish_metrics(self) -> None:
        interval = self.settings.metrics.publish_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                self.publisher.publish_metrics(self.metrics.figures())
            except Exception:  # the task boundary
                log.exception("publishing metrics failed")


GC_YOUNG_THRESHOLD: Final = 50_000
"""Allocations between young collections (CPython's default: 700)."""


def log_profile_warnings(site: Site) -> None:
    """What works but should be written otherwise (a unit alias such as ``RPM``): the same
    warnings ``shulian profile validate`` prints, once per start or reload."""
    for warning in site.warnings:
        log.warning("Profile: %s", warning)


def _settle_heap() -> None:
    """Exempt what start-up (or a reload) built from the cyclic garbage collector, and collect
    the young generation less often.

    Profiles, unit registry, pydantic schemas and libraries are tens of MB of objects that live
    as long as the process; every full collection walked all of them. With the default
    thresholds the collector was a tenth of the gateway's CPU at 10,000 points/s (perf:
    gc_collect_main, visit_decref): the hot path allocates readings, samples and futures that
    reference counting frees at once, yet they trigger a young collection every 700. Frozen
    objects are still freed by reference counting; only cycles among them would stay.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def run_gateway(settings: GatewaySettings, site: Site) -> None:
    app = GatewayApp(settings, site, settle_heap=True)
    started = time.monotonic()
    try:
        await app.run()
    finally:
        log.info("gateway ran", extra={"seconds": round(time.monotonic() - started, 1)})
