"""Talk Modbus over TCP, RTU-over-TCP or a serial port: the only module that imports pymodbus.

Modbus TCP (``tcp://``) runs on our own asyncio protocol with ``mbap.py``'s framing: replies are
matched to requests by transaction id, and a request costs about half the CPU of pymodbus's
client (see mbap.py). Serial framings (``rtu://``, ``rtu+tcp://``) go through pymodbus.

One ``BusTransport`` per endpoint (``bus_key``) is shared by every device behind it, with a
reference count, so ten meters behind one serial-to-TCP converter use one TCP connection. Requests
on a bus are serialized by one ``asyncio.Lock`` (a serial line carries one request at a time) and
the lock is released between retries, so a dead unit delays its neighbours by at most one timeout.
A Modbus TCP endpoint whose settings allow ``max_requests_in_flight`` > 1 uses a semaphore of that
size instead: requests go out without waiting for earlier replies (matched by transaction id), so
a burst of replies costs one wake-up of the event loop rather than one each.

pymodbus quirks handled here (pymodbus 3.8-3.16):

- Its ``connect()`` swallows the reason for a failure and returns False; we probe the endpoint once
  more to tell "refused" from "no route".
- It retries and times out per client, not per request, and drops the connection after
  ``retries + 3`` unanswered requests, which would cut every healthy unit off a converter when one
  unit is dead. We run with ``retries=0``, time each request ourselves (per device ``timeout_s``),
  retry ourselves, and disable its auto-disconnect and auto-reconnect (the scheduler reconnects).
- A Modbus exception reply is returned as a PDU with ``isError()``, not raised.
- It matches a reply to the one outstanding request without checking the transaction id, so a
  late reply to a timed-out request could be taken for the next one's: our TCP link checks it.
- Its logger reports every unanswered request at ERROR; we report them ourselves (with device
  context), so its logger is quieted unless the application configured it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import socket
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from gateway.drivers.modbus import mbap
from gateway.drivers.modbus.endpoint import ModbusEndpoint
from gateway.drivers.modbus.models import ModbusSettings, Table
from gateway.errors import DeviceTimeoutError, DeviceUnreachableError, ProtocolError

__all__ = [
    "EXCEPTION_NAMES",
    "BlockReadError",
    "BusTransport",
    "MalformedReplyError",
    "ModbusExceptionError",
    "ShortReplyError",
    "TransportPool",
    "transport_pool",
    "window_of",
]

log = logging.getLogger(__name__)

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_EXCEPTION_HINTS: Final[dict[int, str]] = {
    1: "The device does not support this function code; check the signal's table.",
    2: "The device has no such register; check the addresses, or set max_gap: 0 if it rejects "
    "reads across unused registers.",
    3: "The device rejected the request's length; lower max_registers_per_request.",
    6: "The device is busy; raise request_pause_ms.",
}
_NO_REPLY_HINTS: Final[dict[str, str]] = {
    "tcp": "Check the unit id or raise timeout_s.",
    "rtu+tcp": "Check the unit id, the converter's serial settings and that it is a transparent "
    "(raw) converter (a Modbus TCP gateway needs tcp://), or raise timeout_s.",
    "rtu": "Check the unit id, the baud rate and parity, and the A/B wiring, or raise timeout_s.",
}
_PYMODBUS_TIMEOUT_S: Final = 3600.0
"""pymodbus's own per-request timeout; ours (``timeout_s``) always fires first."""
_NEVER_DISCONNECT: Final = 1 << 30


class BlockReadError(Exception):
    """One request failed on its own while the connection stays good: only its signals are bad.

    ``reason`` goes on each of the block's samples; ``hint`` says what to change.
    """

    @property
    def reason(self) -> str:
        return str(self)

    @property
    def hint(self) -> str:
        return ""


class ShortReplyError(BlockReadError):
    """The device answered a read with fewer registers (or bits) than asked for."""

    def __init__(self, table: Table, start: int, count: int, got: int) -> None:
        self.table = table
        self.start = start
        self.count = count
        self.got = got
        what = "bits" if table in (Table.COIL, Table.DISCRETE_INPUT) else "registers"
        super().__init__(f"short reply: {got} of {count} {what} from {table.value} {start}")

    @property
    def hint(self) -> str:
        return (
            "The device does not serve part of this range: check the signals' addresses and "
            "types against its register list."
        )


class MalformedReplyError(BlockReadError):
    """A well-framed reply whose content does not fit its request (function, byte count)."""

    def __init__(self, table: Table, start: int, count: int, problem: str) -> None:
        super().__init__(f"malformed reply to {table.value} {start}+{count}: {problem}")

    @property
    def hint(self) -> str:
        return (
            "The device answered this request with a reply that does not fit it; if every "
            "request fails so, check the endpoint's scheme (tcp:// or rtu+tcp://)."
        )


class ModbusExceptionError(BlockReadError):
    """The device answered one request with a Modbus exception: only that request's signals fail."""

    def __init__(self, code: int, function_code: int) -> None:
        self.code = code
        self.function_code = function_code
        super().__init__(self.reason)

    @property
    def name(self) -> str:
        return EXCEPTION_NAMES.get(self.code, "unknown exception code")

    @property
    def reason(self) -> str:
        """``Modbus exception 2: illegal data address``."""
        return f"Modbus exception {self.code}: {self.name}"

    @property
    def hint(self) -> str:
        return _EXCEPTION_HINTS.get(self.code, "")


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """How one device wants its requests run; devices on one bus may differ."""

    unit_id: int
    timeout_s: float
    retries: int
    pause_s: float
    where: str
    """The device, for messages: ``hobber-03 (tcp://10.2.0.7:502 unit 4)``."""


def seconds(value: float) -> str:
    """``1.0``, ``0.25``, ``3.0``: how a duration reads in a message."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


class _LinkClosedError(ConnectionError):
    """The Modbus TCP connection closed (or was closed) while a request waited."""


@dataclass(slots=True)
class _Waiting:
    """A request waiting for its reply: written (``sent``) or queued for a free slot."""

    future: asyncio.Future[mbap.Frame]
    timer: asyncio.TimerHandle
    sent: bool = False


class _TcpLink(asyncio.Protocol):
    """One Modbus TCP connection: requests go out framed, replies come back by transaction id.

    A reply nobody waits for any more (its request timed out) is dropped. A byte stream that
    is not Modbus TCP fails every waiting request and closes the connection.
    """

    def __init__(self, window: int = 1) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._window = window
        """Requests written and not yet answered, at most; more wait in ``_queued``."""
        self._waiting: dict[int, _Waiting] = {}
        self._queued: collections.deque[tuple[int, bytes]] = collections.deque()
        self._sent = 0
        self._outgoing = bytearray()
        """Requests of this turn of the event loop, written together (pipelined links)."""
        self._next_tid = 0
        self.late_replies = 0
        self.peak_in_flight = 0
        """The most requests that waited for replies at once on this connection."""

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike: no isinstance.
        transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # One small request at a time: never let Nagle hold it back for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail_all(_LinkClosedError(str(exc) if exc else "closed by the device"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            frames = mbap.split_frames(self._buffer)
        except mbap.FramingError as exc:
            self._buffer.clear()
            self._fail_all(exc)
            self.close()
            return
        waiting = self._waiting
        for frame in frames:
            entry = waiting.pop(frame.transaction_id, None)
            if entry is None or entry.future.done():
                self.late_replies += 1
                continue
            entry.timer.cancel()
            self._sent -= 1
            entry.future.set_result(frame)
        if self._queued:
            self._send_queued()

    def send(
        self, unit_id: int, function_code: int, start: int, count: int, timeout_s: float
    ) -> asyncio.Future[mbap.Frame]:
        """Send one read request; the future gets its reply, or TimeoutError after ``timeout_s``.

        With the window full the request waits in order for a reply to free a slot (its
        ``timeout_s`` runs from now). One timer handle per request rather than ``asyncio.timeout()`` around the await: the
        same bound for a fraction of the CPU, which counts at thousands of requests a second.
        """
        if self._transport is None:
            raise _LinkClosedError("not connected")
        self._next_tid = tid = self._next_tid % 0xFFFF + 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[mbap.Frame] = loop.create_future()
        entry = _Waiting(future, loop.call_later(timeout_s, self._expire, tid))
        self._waiting[tid] = entry
        request = mbap.read_request(tid, unit_id, function_code, start, count)
        if self._sent < self._window:
            self._write(entry, request)
        else:
            self._queued.append((tid, request))
        return future

    def _write(self, entry: _Waiting, request: bytes) -> None:
        assert self._transport is not None
        entry.sent = True
        self._sent += 1
        if self._sent > self.peak_in_flight:
            self.peak_in_flight = self._sent
        if self._window == 1:
            self._transport.write(request)
            return
        # One system call for a whole burst instead of one per request.
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._write_outgoing)
        self._outgoing += request

    def _write_outgoing(self) -> None:
        outgoing, self._outgoing = self._outgoing, bytearray()
        if self._transport is not None and outgoing:
            self._transport.write(bytes(outgoing))

    def _send_queued(self) -> None:
        while self._queued and self._sent < self._window and self._transport is not None:
            tid, request = self._queued.popleft()
            entry = self._waiting.get(tid)
            if entry is not None:  # else it timed out while queued
                self._write(entry, request)

    def _expire(self, transaction_id: int) -> None:
        entry = self._waiting.pop(transaction_id, None)
        if entry is None or entry.future.done():
            return
        if entry.sent:
            self._sent -= 1
        entry.future.set_exception(TimeoutError())
        if self._queued:
            self._send_queued()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail_all(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        self._queued.clear()
        self._sent = 0
        for entry in waiting.values():
            entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(exc)


class BusTransport:
    """One connection to one endpoint, shared by every device (unit id) behind it."""

    def __init__(self, endpoint: ModbusEndpoint, settings: ModbusSettings) -> None:
        self.endpoint = endpoint
        self.key = endpoint.bus_key
        self.lock = asyncio.Lock()
        """Held while connecting, and for each request (and its pause) unless pipelined."""
        self.users = 0
        self.settings = settings
        """The settings of the device that created the bus (its serial line settings and its
        ``max_requests_in_flight`` apply to every device on the bus)."""
        self.window = window_of(endpoint, settings)
        """How many requests may wait for replies at once on this connection (the link keeps
        the count; with 1, the bus lock is held for each request instead)."""
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        """pymodbus's client, for serial framings."""
        self._link: _TcpLink | None = None
        """Our own Modbus TCP connection, for tcp:// endpoints."""
        self._last_request_end_mono = 0.0
        self._silent_since_mono: float | None = None
        """When the first unanswered request since the last reply was sent."""
        self.silent_units: set[int] = set()
        """Units whose last request went unanswered after every try: tried once until they
        answer again."""

    @property
    def peak_in_flight(self) -> int:
        """The most requests that waited for replies at once on the current connection."""
        return self._link.peak_in_flight if self._link is not None else 0

    @property
    def is_connected(self) -> bool:
        if self._link is not None:
            return self._link.connected
        return self._client is not None and self._client.connected

    async def open(self, timeout_s: float, where: str) -> None:
        """Connect unless connected; reconnect a connection on which nobody got a reply lately.

        Raises:
            DeviceUnreachableError: refused, no route, no such serial port, or no connection in
                ``timeout_s``.
        """
        async with self.lock:
            if self.is_connected and self._is_silent(3 * timeout_s):
                log.info("Reconnecting silent bus %s", self.key)
                self.close()
            if self.is_connected:
                return
            self.close()
            if self.endpoint.scheme == "tcp":
                self._link = await self._open_link(timeout_s, where)
                self._silent_since_mono = None
                return
            client = self._new_client()
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout_s):
                    is_connected = await client.connect()
            except TimeoutError:
                client.close()
                raise self._connect_timeout(timeout_s, where) from None
            if not is_connected:
                client.close()
                remaining = max(0.1, timeout_s - (time.monotonic() - started))
                raise await self._diagnose(remaining, where)
            client.set_max_no_responses(_NEVER_DISCONNECT)
            self._client = client
            self._silent_since_mono = None

    def close(self) -> None:
        """Drop the connection (idempotent); the next ``open`` connects again."""
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _open_link(self, timeout_s: float, where: str) -> _TcpLink:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, link = await loop.create_connection(
                    lambda: _TcpLink(self.window),
                    self.endpoint.host,
                    self.endpoint.port,
                )
        except TimeoutError:
            raise self._connect_timeout(timeout_s, where) from None
        except OSError as exc:
            raise self._connect_error(exc, where) from exc
        return link

    def _is_silent(self, window_s: float) -> bool:
        since = self._silent_since_mono
        return since is not None and time.monotonic() - since >= window_s

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        _quiet_pymodbus_logger()
        if self.endpoint.scheme == "rtu":
            return AsyncModbusSerialClient(
                self.endpoint.serial_port,
                framer=FramerType.RTU,
                baudrate=self.settings.baudrate,
                bytesize=self.settings.bytesize,
                parity=self.settings.parity,
                stopbits=self.settings.stopbits,
                reconnect_delay=0,
                timeout=_PYMODBUS_TIMEOUT_S,
                retries=0,
                name=self.key,
            )
        framer = FramerType.RTU if self.endpoint.scheme == "rtu+tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            self.endpoint.host,
            port=self.endpoint.port,
            framer=framer,
            reconnect_delay=0,
            timeout=_PYMODBUS_TIMEOUT_S,
            retries=0,
            name=self.key,
        )

    def _connect_timeout(self, timeout_s: float, where: str) -> DeviceUnreachableError:
        if self.endpoint.scheme == "rtu":
            return DeviceUnreachableError(
                f"serial port {self.endpoint.serial_port} did not open in {seconds(timeout_s)} s",
                where=where,
                hint="Check the adapter and that no other program holds the port.",
            )
        return DeviceUnreachableError(
            f"no TCP connection to {self.endpoint.describe()} in {seconds(timeout_s)} s",
            where=where,
            hint="Check the address, the cabling and any firewall, or raise timeout_s.",
        )

    async def _diagnose(self, timeout_s: float, where: str) -> DeviceUnreachableError:
        """Find out why pymodbus could not connect (it does not say)."""
        if self.endpoint.scheme == "rtu":
            port = self.endpoint.serial_port
            if not await asyncio.to_thread(os.path.exists, port):
                return DeviceUnreachableError(
                    f"serial port {port} not found",
                    where=where,
                    hint="Check the USB/RS-485 adapter and the port name (ls /dev/ttyUSB* /dev/ttyS*).",
                )
            return DeviceUnreachableError(
                f"cannot open serial port {port}",
                where=where,
                hint="Check that no other program uses it and that the gateway's user may open it "
                "(group dialout).",
            )
        address = self.endpoint.describe()
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(self.endpoint.host, self.endpoint.port)
        except TimeoutError:
            return self._connect_timeout(timeout_s, where)
        except OSError as exc:
            return self._connect_error(exc, where)
        writer.close()
        return DeviceUnreachableError(
            f"could not connect to {address} (it accepts connections now; it may have been busy)",
            where=where,
            hint="Check that the device allows another Modbus TCP client.",
        )

    def _connect_error(self, exc: OSError, where: str) -> DeviceUnreachableError:
        """Why a TCP connect failed, in words with a next step."""
        address = self.endpoint.describe()
        if isinstance(exc, ConnectionRefusedError):
            return DeviceUnreachableError(
                f"connection refused by {address}",
                where=where,
                hint=f"Check that the device is on and serves Modbus on port {self.endpoint.port}.",
            )
        if isinstance(exc, socket.gaierror):
            return DeviceUnreachableError(
                f"cannot resolve host {self.endpoint.host!r} ({exc.strerror})",
                where=where,
                hint="Check the host name in the endpoint.",
            )
        unreachable = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        return DeviceUnreachableError(
            f"no route to {address}" if unreachable else f"cannot connect to {address}: {exc}",
            where=where,
            hint="Check the address and the network route to the device.",
        )

    async def read(
        self, table: Table, start: int, count: int, options: RequestOptions
    ) -> list[int] | list[bool]:
        """Read ``count`` registers (or bits) of ``table`` from ``start`` at one unit.

        Raises:
            ModbusExceptionError: the device answered with a Modbus exception (codes 1-8).
            ShortReplyError, MalformedReplyError: the reply does not hold what was asked for
                (only this request fails; the connection stays).
            DeviceTimeoutError: no reply after every try, or exception 11 from a gateway.
            DeviceUnreachableError: the connection is gone, or exception 10 from a gateway.
            ProtocolError: the reply does not match the request.
        """
        tries = self._tries(options)
        for _ in range(tries):
            # A pipelined link counts its own window; otherwise one request at a time.
            async with contextlib.nullcontext() if self.window > 1 else self.lock:
                values = await self._request(table, start, count, options)
            if values is not None:
                self.silent_units.discard(options.unit_id)
                return values
        raise self._no_reply(options, tries)

    async def _request(
        self, table: Table, start: int, count: int, options: RequestOptions
    ) -> list[int] | list[bool] | None:
        """One try on our Modbus TCP link or pymodbus' client; None when it went unanswered."""
        link = self._link
        if link is None:
            response = await self._request_once(table, start, count, options)
            return (
                None
                if response is None
                else self._values_of(response, table, start, count, options)
            )
        await self._pause(options)
        frame = await self._reply(
            self._send(link, table, start, count, options), table, start, count, options
        )
        return None if frame is None else self._values_of_frame(frame, table, start, count, options)

    async def _pause(self, options: RequestOptions) -> None:
        """The profile's mandated pause between requests, for slow devices."""
        wait_s = options.pause_s - (time.monotonic() - self._last_request_end_mono)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def read_blocks(
        self, blocks: Sequence[tuple[Table, int, int]], options: RequestOptions
    ) -> list[list[int] | list[bool] | BlockReadError]:
        """Read several blocks of one unit at once on a pipelined Modbus TCP link.

        Every request is sent before the first reply is awaited (the link queues what exceeds
        its window), and unanswered ones are sent again, up to ``retries`` more times. A Modbus
        exception, or a short or malformed reply, fails only its block: it is returned in the
        block's place.

        Raises:
            DeviceTimeoutError, DeviceUnreachableError, ProtocolError: as ``read``, for the
                first block that fails so.
        """
        link = self._link
        if link is None or self.window == 1:
            raise self._connection_lost(options)
        results: list[list[int] | list[bool] | BlockReadError | None] = [None] * len(blocks)
        todo = list(range(len(blocks)))
        tries = self._tries(options)
        for _ in range(tries):
            sent = [(i, self._send(link, *blocks[i], options)) for i in todo]
            todo = []
            for i, future in sent:
                frame = await self._reply(future, *blocks[i], options)
                if frame is None:
                    todo.append(i)
                    continue
                self.silent_units.discard(options.unit_id)
                try:
                    results[i] = self._values_of_frame(frame, *blocks[i], options)
                except BlockReadError as exc:
                    results[i] = exc
            if not todo:
                return cast("list[list[int] | list[bool] | BlockReadError]", results)
        raise self._no_reply(options, tries)

    def _note_unanswered(
        self, table: Table, start: int, count: int, options: RequestOptions
    ) -> None:
        if self._silent_since_mono is None:
            self._silent_since_mono = time.monotonic()
        log.debug("No reply from %s to %s %d+%d", options.where, table, start, count)

    def _unreadable(
        self, table: Table, start: int, count: int, exc: Exception, options: RequestOptions
    ) -> ProtocolError:
        return ProtocolError(
            f"unreadable reply to {table.value} {start}+{count}: {exc}",
            where=options.where,
            hint="Check the endpoint's scheme (tcp:// or rtu+tcp://) and the wiring.",
        )

    def _connection_lost(self, options: RequestOptions) -> DeviceUnreachableError:
        return DeviceUnreachableError(
            f"connection to {self.endpoint.describe()} lost",
            where=options.where,
            hint="The gateway reconnects with backoff.",
        )

    def _tries(self, options: RequestOptions) -> int:
        """One try for a unit that did not answer last time, so a dead unit holds a shared
        bus for one timeout per request, not ``retries + 1``; the full count once it answers."""
        return 1 if options.unit_id in self.silent_units else options.retries + 1

    def _no_reply(self, options: RequestOptions, tries: int) -> DeviceTimeoutError:
        was_silent = options.unit_id in self.silent_units
        self.silent_units.add(options.unit_id)
        again = " (silent since an earlier request)" if was_silent else ""
        return DeviceTimeoutError(
            f"no reply in {seconds(options.timeout_s)} s after {tries} "
            f"tr{'ies' if tries > 1 else 'y'}{again}",
            where=options.where,
            hint=_NO_REPLY_HINTS[self.endpoint.scheme],
        )

    def _send(
        self, link: _TcpLink, table: Table, start: int, count: int, options: RequestOptions
    ) -> asyncio.Future[mbap.Frame]:
        try:
            return link.send(options.unit_id, _FUNCTIONS[table], start, count, options.timeout_s)
        except _LinkClosedError as exc:
            raise self._connection_lost(options) from exc

    async def _reply(
        self,
        future: asyncio.Future[mbap.Frame],
        table: Table,
        start: int,
        count: int,
        options: RequestOptions,
    ) -> mbap.Frame | None:
        """The reply to a sent request; None when it went unanswered."""
        try:
            frame = await future
        except TimeoutError:
            self._note_unanswered(table, start, count, options)
            return None
        except _LinkClosedError as exc:
            raise self._connection_lost(options) from exc
        except mbap.FramingError as exc:
            raise self._unreadable(table, start, count, exc, options) from exc
        finally:
            self._last_request_end_mono = time.monotonic()
        self._silent_since_mono = None
        return frame

    def _values_of_frame(
        self, frame: mbap.Frame, table: Table, start: int, count: int, options: RequestOptions
    ) -> list[int] | list[bool]:
        function_code = _FUNCTIONS[table]
        code = mbap.exception_code(frame.pdu)
        if code is not None:
            _raise_for_gateway_code(code, options.where)
            raise ModbusExceptionError(code, frame.pdu[0] & 0x7F)
        if options.unit_id and frame.unit_id != options.unit_id:
            raise ProtocolError(
                f"the reply to {table.value} {start}+{count} comes from unit {frame.unit_id}, "
                f"not {options.unit_id}",
                where=options.where,
                hint="Check that no other client shares this connection's transaction ids.",
            )
        try:
            if table in (Table.COIL, Table.DISCRETE_INPUT):
                bits = mbap.reply_bits(frame.pdu, function_code)
                if len(bits) < count:
                    raise ShortReplyError(table, start, count, len(bits))
                return bits[:count]
            registers = mbap.reply_registers(frame.pdu, function_code)
        except mbap.ReplyError as exc:
            # The frame itself was whole (the link found the next one): only this block fails.
            raise MalformedReplyError(table, start, count, str(exc)) from exc
        if len(registers) != count:
            raise ShortReplyError(table, start, count, len(registers))
        return registers

    async def _request_once(
        self, table: Table, start: int, count: int, options: RequestOptions
    ) -> Any | None:
        """One request under the bus lock; None when it went unanswered."""
        client = self._client
        if client is None or not client.connected:
            raise self._connection_lost(options)
        await self._pause(options)
        method = _METHODS[table]
        try:
            async with asyncio.timeout(options.timeout_s):
                response = await getattr(client, method)(
                    start, count=count, device_id=options.unit_id
                )
        except TimeoutError:
            self._note_unanswered(table, start, count, options)
            return None
        except ConnectionException as exc:
            raise self._connection_lost(options) from exc
        except ModbusException as exc:
            raise self._unreadable(table, start, count, exc, options) from exc
        finally:
            self._last_request_end_mono = time.monotonic()
        self._silent_since_mono = None
        return response

    def _values_of(
        self, response: Any, table: Table, start: int, count: int, options: RequestOptions
    ) -> list[int] | list[bool]:
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            _raise_for_gateway_code(code, options.where)
            raise ModbusExceptionError(code, response.function_code & 0x7F)
        if table in (Table.COIL, Table.DISCRETE_INPUT):
            bits: list[bool] = list(response.bits)
            if len(bits) < count:
                raise ShortReplyError(table, start, count, len(bits))
            return bits[:count]
        registers: list[int] = list(response.registers)
        if len(registers) != count:
            raise ShortReplyError(table, start, count, len(registers))
        return registers


def window_of(endpoint: ModbusEndpoint, settings: ModbusSettings) -> int:
    """Requests allowed in flight: the setting on Modbus TCP without a pause, else one."""
    if endpoint.scheme != "tcp" or settings.request_pause_ms > 0:
        return 1
    return settings.max_requests_in_flight


def _raise_for_gateway_code(code: int, where: str) -> None:
    """Codes 10 and 11 come from a Modbus gateway: the unit behind it is gone, not one register."""
    if code == 10:
        raise DeviceUnreachableError(
            "Modbus exception 10: gateway path unavailable",
            where=where,
            hint="The converter has no route to this unit id; check the unit id and the converter.",
        )
    if code == 11:
        raise DeviceTimeoutError(
            "Modbus exception 11: gateway target device failed to respond",
            where=where,
            hint="Check the unit id, the serial wiring behind the converter and its baud rate.",
        )


_FUNCTIONS: Final[dict[Table, int]] = {
    Table.COIL: 1,
    Table.DISCRETE_INPUT: 2,
    Table.HOLDING: 3,
    Table.INPUT: 4,
}
_METHODS: Final[dict[Table, str]] = {
    Table.COIL: "read_coils",
    Table.DISCRETE_INPUT: "read_discrete_inputs",
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
}


def _quiet_pymodbus_logger() -> None:
    """Silence pymodbus's per-request ERROR lines unless the application set its level."""
    logger = logging.getLogger("pymodbus.logging")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def _line_of(settings: ModbusSettings) -> str:
    """``9600 8N1``: how a serial line is written."""
    return f"{settings.baudrate} {settings.bytesize}{settings.parity}{settings.stopbits}"


class TransportPool:
    """The shared transports of one event loop, by bus key, with reference counts."""

    def __init__(self) -> None:
        self._transports: dict[str, BusTransport] = {}

    def acquire(self, endpoint: ModbusEndpoint, settings: ModbusSettings) -> BusTransport:
        """The bus transport for ``endpoint``, created on first use; pair with ``release``."""
        transport = self._transports.get(endpoint.bus_key)
        if transport is None:
            transport = BusTransport(endpoint, settings)
            self._transports[endpoint.bus_key] = transport
        elif endpoint.scheme == "rtu" and _line_of(settings) != _line_of(transport.settings):
            log.warning(
                "Serial bus %s runs at %s; a device asking for %s gets the bus's settings",
                transport.key,
                _line_of(transport.settings),
                _line_of(settings),
            )
        elif window_of(endpoint, settings) != transport.window:
            log.warning(
                "Connection %s allows %d request(s) in flight; a device asking for %d gets the "
                "connection's setting (set max_requests_in_flight alike for every unit behind it)",
                transport.key,
                transport.window,
                window_of(endpoint, settings),
            )
        transport.users += 1
        return transport

    def release(self, transport: BusTransport) -> None:
        """Give back a transport; the last user's release closes the connection."""
        transport.users -= 1
        if transport.users <= 0:
            transport.close()
            if self._transports.get(transport.key) is transport:
                del self._transports[transport.key]

    def users(self, bus_key: str) -> int:
        """How many devices currently hold the bus (for tests and status)."""
        transport = self._transports.get(bus_key)
        return transport.users if transport else 0


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TransportPool] = (
    weakref.WeakKeyDictionary()
)


def transport_pool() -> TransportPool:
    """The pool of the running event loop (transports cannot outlive their loop)."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = TransportPool()
    return pool
