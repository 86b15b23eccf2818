"""The installer's status page: a small HTTP server on the gateway's own event loop.

``GET /`` is an HTML page (zh-CN or English by ``?lang=`` or Accept-Language, reloading itself),
``GET /status.json`` the same figures as JSON (``shulian gateway status`` prints them). Both are
read straight from the running objects on the loop, so nothing is copied on the hot path except
each signal's last reading (``DevicePipeline.last_raw`` / ``last_samples``).

No web framework: the gateway extra must stay free of FastAPI/uvicorn, and a page that answers a
few GETs needs only ``asyncio.start_server`` and a minimal HTTP/1.1 responder (one request per
connection, bounded header size and read time). It listens on 127.0.0.1 unless
``status.allow_remote`` is set; on a loopback address it also refuses requests whose Host header
is not a loopback name, so a web page elsewhere cannot read it through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson

from gateway.buffer import AsyncBuffer, BufferStats
from gateway.pipeline import now_ms
from gateway.settings import StatusSettings, is_loopback
from gateway.status_render import pick_language, render_html

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.publisher import Publisher
    from gateway.scheduler import DeviceRunner

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT_S = 5.0
RATE_TICK_S = 2.0
RATE_WINDOW = 5
"""Counter snapshots kept per device: reads per second are over the last ~10 s."""


def public_endpoint(endpoint: str) -> str:
    """The endpoint without a user name, password or query (which may carry a token)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return endpoint
    if not parts.netloc:
        return endpoint
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class ReadRates:
    """Reads and values per second per device, from counter snapshots every ``RATE_TICK_S``."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[float, int, int]]] = {}

    def tick(self, runners: dict[str, DeviceRunner]) -> None:
        now = time.monotonic()
        for device in list(self._seen):
            if device not in runners:
                del self._seen[device]
        for device, runner in runners.items():
            window = self._seen.setdefault(device, deque(maxlen=RATE_WINDOW))
            window.append((now, runner.counters.read_cycles, runner.counters.points_read))

    def rates(self, device: str, runner: DeviceRunner) -> tuple[float | None, float | None]:
        """(read cycles per second, values per second), None until two snapshots exist."""
        window = self._seen.get(device)
        if not window:
            return None, None
        then, cycles, points = window[0]
        span = time.monotonic() - then
        if span < 0.5:
            return None, None
        counters = runner.counters
        return (
            round((counters.read_cycles - cycles) / span, 2),
            round((counters.points_read - points) / span, 1),
        )


def _signals(runner: DeviceRunner) -> list[dict[str, Any]]:
    pipeline = runner.pipeline
    out = []
    for spec in runner.device.profile.signals:
        raw = pipeline.last_raw.get(spec.name)
        sample = pipeline.last_samples.get(spec.name)
        out.append(
            {
                "signal": spec.name,
                "raw": raw.raw if raw else None,
                # The profile's unit is that of raw * scale + offset: only an unscaled raw has it.
                "raw_unit": (spec.unit or "") if (spec.scale, spec.offset) == (1, 0) else "",
                "scale": spec.scale,
                "offset": spec.offset,
                "read_ms": raw.ts_ms if raw else None,
                "value": sample.value if sample else None,
                "unit": spec.canonical_unit,
                "quality": sample.quality.value if sample else None,
                "reason": getattr(sample, "reason", None) if sample else None,
            }
        )
    return out


def _device(runner: DeviceRunner, rates: ReadRates) -> dict[str, Any]:
    device = runner.device
    endpoint = public_endpoint(device.endpoint)

    def clean(text: str | None) -> str | None:
        return text.replace(device.endpoint, endpoint) if text else text

    reads_per_s, values_per_s = rates.rates(device.id, runner)
    return {
        "id": device.id,
        "profile": device.profile.id,
        "protocol": device.profile.protocol,
        "endpoint": endpoint,
        "unit_id": device.unit_id,
        "connection": runner.connection.value,
        "since_ms": runner.since_ms,
        "last_good_ms": runner.pipeline.last_good_ms,
        "error": clean(runner.error),
        "last_error": clean(runner.last_error),
        "last_error_ms": runner.last_error_ms,
        "reads_per_s": reads_per_s,
        "values_per_s": values_per_s,
        "read_errors": runner.counters.read_errors,
        "reconnects": runner.counters.reconnects,
        "signals": _signals(runner),
    }


def _buffer(stats: BufferStats, now: int) -> dict[str, Any]:
    return {
        "batches": stats.batches,
        "samples": stats.samples,
        "bytes": stats.bytes,
        "oldest_age_s": round((now - stats.oldest_ms) / 1000, 1) if stats.oldest_ms else None,
        "dropped_samples": stats.dropped_samples,
        "dropped_batches": stats.dropped_batches,
    }


def _broker(publisher: Publisher) -> dict[str, Any]:
    state = publisher.broker
    url = public_endpoint(publisher.mqtt.url)
    return {
        "url": url,
        "client_id": publisher.client_id,
        "connected": state.connected,
        "since_ms": state.since_ms,
        "last_error": state.last_error.replace(publisher.mqtt.url, url)
        if state.last_error
        else None,
        "last_error_ms": state.last_error_ms,
        "inflight_batches": len(publisher.inflight),
    }


async def _fresh_stats(buffer: AsyncBuffer, lost_in_memory: int) -> BufferStats:
    with contextlib.suppress(Exception):  # closing at shutdown: the last figures will do
        await buffer.stats()
    stats = buffer.last_stats
    return replace(stats, dropped_samples=stats.dropped_samples + lost_in_memory)


async def collect_status(app: GatewayApp, rates: ReadRates) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    now = now_ms()
    gw = app.settings.gateway
    outputs = []
    for index, (publisher, buffer, spool) in enumerate(app.outputs):
        stats = await _fresh_stats(buffer, spool.dropped_samples)
        is_shulian = index == 0 and app.settings.sparkplug.mode != "only"
        name = "shulian" if is_shulian else "sparkplug"
        outputs.append({"name": name, "broker": _broker(publisher), "buffer": _buffer(stats, now)})
    runners = app.scheduler.runners
    return {
        "gateway": gw.id,
        "enterprise": gw.enterprise,
        "version": app.version,
        "config_hash": app.config_hash,
        "boot": app.boot,
        "started_ms": app.started_ms,
        "now_ms": now,
        "reloads": app.reloads,
        "outputs": outputs,
        "devices": [_device(runners[d], rates) for d in sorted(runners)],
    }


async def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on the first of ``host``'s addresses (looked up off the loop) that can
    be had: ``localhost`` may name ::1 first on a host with IPv6 turned off."""
    found = await asyncio.get_running_loop().getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    failed: OSError | None = None
    for family, _, _, _, address in found:
        try:
            return socket.create_server(address[:2], family=family)
        except OSError as exc:
            failed = exc
    raise failed or OSError(f"{host!r} has no address")


class StatusServer:
    """The page's listener and its rate ticker, on the running event loop."""

    def __init__(self, settings: StatusSettings, collect: Callable[[ReadRates], Any]) -> None:
        self.settings = settings
        self.collect = collect
        self.rates = ReadRates()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = settings.port
        self.local_only = is_loopback(settings.bind)

    async def start(self, runners: Callable[[], dict[str, DeviceRunner]]) -> bool:
        """Listen; False (logged, the gateway runs on) when the address cannot be had."""
        bind, port = self.settings.bind, self.settings.port
        try:
            # Bound and listening before the loop sees it: two gateways started together on one
            # host both bind the port (SO_REUSEADDR) and the second fails at listen, which
            # uvloop's start_server did not raise (it left a server without a socket).
            sock = await _listening_socket(bind, port)
        except OSError as exc:
            log.error(
                "status page cannot listen on %s:%s: %s; the gateway runs without it "
                "(set status.port, or 0 to turn it off)",
                bind,
                port,
                exc.strerror or exc,
            )
            return False
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_REQUEST_BYTES)
        if not self.local_only:
            log.warning(
                "status page listens on %s, which is not loopback: anyone who reaches it sees "
                "device endpoints and errors (status.allow_remote is set)",
                bind,
            )
        log.info("status page listening", extra={"url": f"http://{bind}:{self.port}/"})
        self._ticker = asyncio.create_task(self._tick(runners), name="status-rates")
        return True

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _tick(self, runners: Callable[[], dict[str, DeviceRunner]]) -> None:
        while True:
            self.rates.tick(runners())
            await asyncio.sleep(RATE_TICK_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            status, ctype, body, is_head = await self._answer(head)
            writer.write(_response(status, ctype, b"" if is_head else body, len(body)))
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # the task boundary: a bug in a page must not touch the gateway
            log.exception("status page failed to answer")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes, bool]:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return "400 Bad Request", "text/plain", b"bad request line\n", False
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n", False
        if self.local_only and not is_loopback(_host_name(headers.get("host", ""))):
            return "403 Forbidden", "text/plain", b"this page answers local requests only\n", False
        url = urlsplit(target)
        is_head = method == "HEAD"
        if url.path == "/status.json":
            status = await self.collect(self.rates)
            body = orjson.dumps(status, option=orjson.OPT_INDENT_2, default=str)
            return "200 OK", "application/json", body, is_head
        if url.path in ("/", "/index.html"):
            status = await self.collect(self.rates)
            asked = parse_qs(url.query).get("lang", [""])[0]
            lang = pick_language(asked, headers.get("accept-language", ""))
            page = render_html(status, lang, self.settings.refresh_s)
            return "200 OK", "text/html; charset=utf-8", page.encode(), is_head
        return "404 Not Found", "text/plain", b"not found: try / or /status.json\n", is_head


def _host_name(host: str) -> str:
    """``127.0.0.1:8765`` -> ``127.0.0.1``; ``[::1]:8765`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _response(status: str, ctype: str, body: bytes, length: int) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
