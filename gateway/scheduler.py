"""Owns time for every device: poll timers, subscription sessions, watchdogs, reconnects with backoff.

One supervisor task per device, so a device that hangs or dies never stalls another. Devices on
one serial bus (or one serial-to-TCP converter) share a lock, so their requests never interleave.

- **POLL** drivers: one timer per group at ``interval_ms``, on a fixed grid (no drift); a cycle
  that overruns skips the missed ticks instead of queueing them (counted as overruns).
- **SUBSCRIBE** drivers: connect, subscribe each group with a sink into the pipeline, then
  ``await driver.watch()``, which returns or raises when the session is lost.
- A device is reported ``connected`` only after its first good read (a poll cycle that returned,
  or a subscription's first pushed values), not when its connection opens: a Modbus unit that
  never answers behind a live TCP connection stays ``disconnected`` with its last error.
- On a DriverError, a lost session or any bug: the device's retained status says so, the driver
  is closed (bounded), and the supervisor reconnects after an exponential backoff with jitter,
  capped at ``Backoff.max_s`` (``gateway.device_reconnect_max_s``, default 10 s), so data is back
  within that cap plus one interval after the device returns.
- A status (and its log line) goes out once per change of connection state, not per retry: while
  a device keeps failing, its retries neither publish nor log again (DEBUG only; counted in
  ``reconnects``); the retained status keeps the error that took it down. One refinement: when
  the staleness watch reported a poll device first ("no good read for 2.5 s"), the cause that
  follows (``no reply in 1.0 s after 3 tries. Check the unit id ...``) replaces it once.
- A poll device with no good read for 2.5 of its fastest intervals is reported disconnected (so
  within three intervals), even while a slow driver is still retrying.
- Every timer wakes on a shared grid of ``WAKE_GRID_S`` (poll ticks, staleness checks,
  heartbeats), so hundreds of devices cost tens of event-loop wake-ups a second, not thousands.
  A wake-up from idle is the dearest thing the loop does: 150-200 us of CPU on a virtual machine
  (cold caches and a halted vCPU), against 20-40 us for the Python work of a Modbus request.
  Within a tick, devices still start in their own phase order; the grid only rounds up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.drivers.base import Capability, Driver, DriverError, DriverMetrics, ProtocolError
from gateway.errors import DeviceTimeoutError, DeviceUnreachableError
from gateway.heap import CYCLES
from gateway.logs import DeviceLogger, RateLimitedLog, device_logger
from gateway.pipeline import DeviceCounters, DevicePipeline, now_ms
from gateway.profiles.models import DeviceConfig, GroupSpec
from wire.payloads import CustomSignal, DeviceConnection, DeviceStatus, Meaning
from wire.signals import base_name

log = logging.getLogger(__name__)

STALE_INTERVALS = 2.5
"""Poll intervals without a good read before the device is reported disconnected (so the report
goes out within three intervals of the last good read)."""
CLOSE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 15.0
HEARTBEAT_TICK_S = 1.0
WAKE_GRID_S = 0.02
"""Timers fire on multiples of this (on the loop's clock), so devices share wake-ups."""


def on_grid(t: float, grid_s: float = WAKE_GRID_S) -> float:
    """The first grid point at or after loop time ``t``."""
    return math.ceil(t / grid_s - 1e-9) * grid_s


async def sleep_until(loop: asyncio.AbstractEventLoop, t: float) -> None:
    """Sleep until loop time ``t`` rounded up to the wake-up grid."""
    delay = on_grid(t) - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with +-20 % jitter, so a fleet does not reconnect in lockstep."""

    min_s: float = 1.0
    max_s: float = 10.0
    """The cap of one delay, jitter included (``gateway.device_reconnect_max_s``)."""

    def delay(self, attempt: int) -> float:
        base = self.min_s * (2 ** min(attempt, 16))
        return float(min(self.max_s, base * random.uniform(0.8, 1.2)))


def bus_key(device: DeviceConfig, driver_cls: type[Driver]) -> str | None:
    """The shared-bus identity of a device, or None when its requests may run in parallel.

    A driver whose transport already serializes each request on a shared connection says so
    with ``serializes_requests = True`` (the Modbus driver): then no cycle-wide lock is taken,
    which would let one dead unit hold its neighbours for a whole cycle of timeouts. A driver may
    also define a static ``bus_key(device) -> str | None``; otherwise serial endpoints
    (``rtu://``, ``rtu+tcp://``) are one bus per endpoint.
    """
    if getattr(driver_cls, "serializes_requests", False) is True:
        return None
    custom = _driver_hook(driver_cls, "bus_key")
    if custom is not None:
        key = custom(device)
        return str(key) if key is not None else None
    scheme = device.endpoint.split("://", 1)[0]
    if scheme in ("rtu", "rtu+tcp", "ascii"):
        return device.endpoint.split("?", 1)[0]
    return None


def phase_key(device: DeviceConfig, driver_cls: type[Driver]) -> str | None:
    """What the device's polls are phased by, when not by device and group.

    A driver may define a static ``poll_phase_key(device) -> str | None``: devices (and groups)
    with equal keys poll at the same moment. The Modbus driver keys a connection that takes
    several requests in flight, so its units' requests go out as one burst and their replies
    come back together: one wake-up of the event loop instead of one per reply.
    """
    custom = _driver_hook(driver_cls, "poll_phase_key")
    key = custom(device) if custom is not None else None
    return str(key) if key is not None else None


def _driver_hook(driver_cls: type[Driver], name: str) -> Callable[[DeviceConfig], object] | None:
    """The driver class's own static (or class) method ``name``, if it defines one."""
    custom = driver_cls.__dict__.get(name)
    if isinstance(custom, staticmethod | classmethod):
        hook: Callable[[DeviceConfig], object] = custom.__get__(None, driver_cls)
        return hook
    return None


class ConnectPacer:
    """Spaces connection attempts ``1 / per_s`` apart across all devices.

    Thousands of devices starting at once overflow listen backlogs and converters (the issue 12
    gateway logged ~800 "no TCP connection" warnings for 1,600 devices); ``per_s`` 0 means no pacing.
    """

    def __init__(self, per_s: float = 0.0) -> None:
        self.gap_s = 1.0 / per_s if per_s > 0 else 0.0
        self._next_mono = 0.0

    async def wait(self) -> None:
        """Return when this caller may start its connection attempt."""
        if not self.gap_s:
            return
        now = time.monotonic()
        at = max(now, self._next_mono)
        self._next_mono = at + self.gap_s
        if at > now:
            await asyncio.sleep(at - now)


def custom_signal_declarations(device: DeviceConfig) -> list[CustomSignal]:
    """The wire form of the custom signals the device's profile declares and reads."""
    read = {base_name(s.name) for s in device.profile.signals}
    return [
        CustomSignal(
            name=c.name,
            kind=c.kind,
            unit=c.unit,
            meaning=Meaning(en=c.meaning.en, zh=c.meaning.zh),
            counts_as=c.counts_as,
        )
        for c in device.profile.custom_signals
        if c.name in read
    ]


class DeviceRunner:
    """The supervisor of one device: sessions, reconnects and its retained status."""

    def __init__(
        self,
        device: DeviceConfig,
        driver_cls: type[Driver],
        pipeline: DevicePipeline,
        on_status: Callable[[DeviceStatus], None],
        *,
        gateway: str,
        bus_lock: asyncio.Lock | None = None,
        backoff: Backoff = Backoff(),
        observe_latency: Callable[[float], None] | None = None,
        pacer: ConnectPacer | None = None,
    ) -> None:
        self.device = device
        self.pacer = pacer or ConnectPacer()
        self.driver_cls = driver_cls
        self.pipeline = pipeline
        self.on_status = on_status
        self.gateway = gateway
        self.bus_lock = bus_lock
        self.backoff = backoff
        self.observe_latency = observe_latency or (lambda _s: None)
        self.counters: DeviceCounters = pipeline.counters
        self.driver_metrics = DriverMetrics()
        self.log: DeviceLogger = device_logger(
            "gateway.device", device.id, device.endpoint, driver_cls.name
        )
        self.connection = DeviceConnection.DISCONNECTED
        self.error: str | None = None
        self.since_ms = now_ms()
        """When the connection state last changed (the status page's "since")."""
        self.last_error: str | None = None
        self.last_error_ms: int | None = None
        """The latest error, kept after the device recovers, and when it last happened."""
        self.last_good_mono = 0.0
        self.sessions = 0
        self.had_good_read = False
        self._error_is_stale = False
        """The error is the staleness watch's "no good read", which the real cause replaces."""
        self._task: asyncio.Task[None] | None = None
        self._repeats = RateLimitedLog(60.0)
        groups = [g for g in device.profile.groups if device.profile.signals_of(g.name)]
        self.groups: list[GroupSpec] = groups
        self.min_interval_s = min((g.interval_ms for g in groups), default=1000) / 1000
        self._phase_key = phase_key(device, driver_cls)
        self.custom_signals = custom_signal_declarations(device)
        """Sent in every status, so the ingest knows the custom signals before or with a value."""

    @property
    def is_connected(self) -> bool:
        return self.connection is DeviceConnection.CONNECTED

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"device:{self.device.id}")

    async def stop(self, timeout_s: float = CLOSE_TIMEOUT_S + 1) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await asyncio.wait_for(self._task, timeout_s)
        except (asyncio.CancelledError, TimeoutError):
            pass
        self._task = None

    # ------------------------------------------------------------------ status

    def _set_status(self, connection: DeviceConnection, error: str | None = None) -> None:
        """Publish (retained) and log a change of connection state; a repeat of the current state
        with another error text (the next retry of a dead unit) changes nothing."""
        if error is not None:
            self.last_error, self.last_error_ms = error, now_ms()
        if connection == self.connection and (
            error == self.error or (self.error is not None and not self._error_is_stale)
        ):
            return
        if connection is not self.connection:
            self.since_ms = now_ms()
        self.connection = connection
        self.error = error
        self._error_is_stale = False
        if connection is DeviceConnection.CONNECTED:
            self.log.info("device connected")
        else:
            self.log.warning("device %s", connection.value, extra={"error": error})
        self.on_status(
            DeviceStatus(
                gateway=self.gateway,
                device=self.device.id,
                connection=connection,
                ts_ms=now_ms(),
                profile=self.device.profile.id,
                last_good_ms=self.pipeline.last_good_ms,
                error=error,
                custom_signals=self.custom_signals,
                max_silence_s=self.device.profile.max_silence_s(),
            )
        )

    # --------------------------------------------------------------- supervisor

    async def run(self) -> None:
        attempt = 0
        while True:
            self.had_good_read = False
            try:
                await self._session()
                raise DeviceUnreachableError(
                    "session ended", where=self.device.describe(), hint="Reconnecting."
                )
            except asyncio.CancelledError:
                raise
            except DriverError as exc:
                self.counters.read_errors += 1
                kind = (
                    DeviceConnection.ERROR
                    if isinstance(exc, ProtocolError)
                    else DeviceConnection.DISCONNECTED
                )
                self._set_status(kind, str(exc))
                self.log.debug("session failed", extra={"error": str(exc)})
            except Exception as exc:  # the task boundary: a bug must not kill the device for good
                self.counters.read_errors += 1
                self._set_status(DeviceConnection.ERROR, f"internal error: {exc!r}")
                if self._repeats.allow("bug") is not None:
                    self.log.exception("device task failed; restarting it")
            CYCLES.session_ended()  # the closed session's cycles: collected in one go, soon
            if self.had_good_read:
                attempt = 0  # the device worked this time: start the backoff over
            delay = self.backoff.delay(attempt)
            attempt += 1
            self.counters.reconnects += 1
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One connection's life; returns (or raises) when it is over."""
        self.sessions += 1
        self.pipeline.rbe.forget()
        driver = self.driver_cls(self.device, self.log, self.driver_metrics)
        try:
            await self.pacer.wait()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await driver.connect()
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"connect took longer than {CONNECT_TIMEOUT_S:.0f} s",
                    where=self.device.describe(),
                ) from None
            if Capability.SUBSCRIBE in self.driver_cls.capabilities:
                return await self._subscribe_session(driver)
            return await self._poll_session(driver)
        finally:
            await self._close(driver)

    async def _close(self, driver: Driver) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await driver.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # closing a dead session may fail in many ways; none matter
            self.log.debug("close failed", extra={"error": repr(exc)})

    async def _poll_session(self, driver: Driver) -> bool:
        # Connected only after the first good read (``_poll_group``), not on connect: a unit
        # behind a live connection may never answer.
        self.last_good_mono = time.monotonic()
        tasks = [
            asyncio.create_task(
                self._poll_group(driver, group), name=f"{self.device.id}:{group.name}"
            )
            for group in self.groups
        ]
        tasks.append(asyncio.create_task(self._watch_staleness(), name=f"{self.device.id}:watch"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
            return self.had_good_read
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _phase(self, group: GroupSpec) -> float:
        """A stable offset within the interval, so hundreds of devices do not poll in one burst
        (except those the driver wants together: ``phase_key``)."""
        seed = zlib.crc32((self._phase_key or f"{self.device.id}/{group.name}").encode())
        return (seed % 1000) / 1000 * group.interval_ms / 1000

    async def _poll_group(self, driver: Driver, group: GroupSpec) -> None:
        loop = asyncio.get_running_loop()
        interval = group.interval_ms / 1000
        guard_s = max(10.0, 5 * interval)
        next_t = loop.time() + self._phase(group)
        while True:
            await sleep_until(loop, next_t)
            started = loop.time()
            try:
                async with asyncio.timeout(guard_s):
                    if self.bus_lock is not None:
                        async with self.bus_lock:
                            result = await driver.read(group)
                    else:
                        result = await driver.read(group)
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"read of group {group.name} took longer than {guard_s:.0f} s",
                    where=self.device.describe(),
                ) from None
            elapsed = loop.time() - started
            self.observe_latency(elapsed)
            self.counters.read_cycles += 1
            self.counters.requests += result.requests
            self.last_good_mono = time.monotonic()
            self.had_good_read = True
            self.pipeline.accept(result.readings)
            if self.connection is not DeviceConnection.CONNECTED:
                self._set_status(DeviceConnection.CONNECTED)
            next_t += interval
            now = loop.time()
            if now > next_t:
                missed = int((now - next_t) // interval) + 1
                self.counters.overruns += missed
                next_t += missed * interval

    async def _watch_staleness(self) -> None:
        # Sleep until the moment the device would become stale, not in small ticks: with
        # hundreds of fast-polled devices, ticking would cost thousands of wake-ups a second.
        limit = STALE_INTERVALS * self.min_interval_s
        loop = asyncio.get_running_loop()
        while True:
            delay = self.last_good_mono + limit - time.monotonic()
            if delay > 0:
                await sleep_until(loop, loop.time() + delay + 0.001)
                continue
            if self.connection is DeviceConnection.CONNECTED:
                silent = time.monotonic() - self.last_good_mono
                self._set_status(
                    DeviceConnection.DISCONNECTED,
                    f"{self.device.describe()}: no good read for {silent:.1f} s",
                )
                self._error_is_stale = True
            await asyncio.sleep(limit)

    async def _subscribe_session(self, driver: Driver) -> bool:
        subscribe = getattr(driver, "subscribe", None)
        watch = getattr(driver, "watch", None)
        if subscribe is None or watch is None:
            raise ProtocolError(
                f"driver {self.driver_cls.name} says it can subscribe but lacks subscribe/watch",
                where=self.device.describe(),
            )
        handles = []
        for group in self.groups:
            handles.append(await subscribe(group, self._sink))
        # Connected once the first values arrive (``_sink``; a server sends every item's
        # current value to a new subscription), not when the session opens.
        self.last_good_mono = time.monotonic()
        self.had_good_read = True
        heartbeat = asyncio.create_task(self._heartbeats(), name=f"{self.device.id}:heartbeat")
        try:
            await watch()
            return True
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            for handle in handles:
                try:
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await handle.cancel()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the session is gone; its subscriptions with it
                    self.log.debug("cancel failed", extra={"error": repr(exc)})

    def _sink(self, readings: list[Any]) -> None:
        self.last_good_mono = time.monotonic()
        self.counters.read_cycles += 1
        try:
            if self.connection is not DeviceConnection.CONNECTED:
                self._set_status(DeviceConnection.CONNECTED)
            self.pipeline.accept(readings)
        except Exception:  # called from the driver's callback: never let a bug escape into it
            self.counters.read_errors += 1
            if self._repeats.allow("sink") is not None:
                self.log.exception("processing pushed readings failed")

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await sleep_until(loop, on_grid(loop.time() + HEARTBEAT_TICK_S, HEARTBEAT_TICK_S))
            self.pipeline.heartbeat()


class Scheduler:
    """All device supervisors, and the locks of shared buses."""

    def __init__(self, connects_per_s: float = 0.0) -> None:
        self.pacer = ConnectPacer(connects_per_s)
        self.runners: dict[str, DeviceRunner] = {}
        self._bus_locks: dict[str, asyncio.Lock] = {}

    def bus_lock(self, device: DeviceConfig, driver_cls: type[Driver]) -> asyncio.Lock | None:
        key = bus_key(device, driver_cls)
        if key is None:
            return None
        return self._bus_locks.setdefault(key, asyncio.Lock())

    def add(self, runner: DeviceRunner) -> None:
        self.runners[runner.device.id] = runner
        runner.start()

    async def remove(self, device_id: str) -> DeviceRunner | None:
        runner = self.runners.pop(device_id, None)
        if runner is not None:
            await runner.stop()
        return runner

    async def stop_all(self) -> None:
        runners = list(self.runners.values())
        self.runners.clear()
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
