"""A real Modbus TCP server (pymodbus 3.x) that serves many simulated machines as distinct unit ids.

Each machine is one ``ModbusUnit``: a register image per data table, laid out from its kind's map,
served through pymodbus's ``SimDevice``. pymodbus 3.16 converts the older ``ModbusDeviceContext`` /
``ModbusServerContext`` datastores into ``SimDevice`` objects internally (and warns that they go away
in 4.0), so we build ``SimDevice`` directly. Addresses between a table's first and last mapped
ones read as 0, as on most PLCs (a client may read across gaps in one request); addresses outside
that span, and every unmapped address of a map that ``refuses_unmapped`` (some meters), are
marked invalid, so reading them answers exception 02 (illegal data address), as on a real device.

The tick loop writes changed values into the unit's own image (cheap: a few list slots); pymodbus
calls ``ModbusUnit.on_access`` on every request, which copies the requested range from the image
into pymodbus's registers. Unread units therefore cost nothing.

Requests pipelined on one connection (several sent before the first reply, as the Modbus TCP
specification allows and as PLCs and Modbus TCP gateways handle) are answered in order: pymodbus's
own handler takes only the first request of each TCP segment and leaves the rest waiting for more
data, so the server uses a handler that takes every complete request of a segment.

A unit can be made unreachable: it then stops answering (the client times out, as when the serial
device behind a Modbus gateway is dead) or answers exception 0x0B (gateway target failed to respond).
Unknown unit ids never answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.addressmap import ModbusMap, Register, RegisterType, Table
from simulators.ports import bind_with_retry

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE_INPUT}
_TABLE_OF_FUNCTION.update({fc: Table.HOLDING for fc in (3, 6, 16, 22, 23)})
_TABLE_OF_FUNCTION[4] = Table.INPUT
_TABLE_ORDER = (Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING, Table.INPUT)
"""The order of SimDevice's four data tables."""


class Unreachable(StrEnum):
    """How an unreachable unit behaves."""

    TIMEOUT = "timeout"
    """No answer at all: the client times out."""
    GATEWAY_EXCEPTION = "gateway_exception"
    """Exception 0x0B, as a Modbus TCP gateway answers when its serial device is silent."""


@dataclass(slots=True)
class RegisterImage:
    """The words of one data table: ``words[i]`` holds protocol register ``start + i``.

    For coils and discrete inputs the words hold packed bits (bit ``b`` of word ``i`` is bit address
    ``16 * (start + i) + b``), the layout pymodbus uses for bit tables.
    """

    start: int
    words: list[int]
    is_bits: bool

    def write(self, field: Register, raw: int | float | bool | str) -> None:
        if field.type == RegisterType.BOOL:
            self._set_bit(field.address // 16 - self.start, field.address % 16, bool(raw))
        elif field.type == RegisterType.BIT:
            assert field.bit is not None
            self._set_bit(field.address - self.start, field.bit, bool(raw))
        else:
            offset = field.address - self.start
            self.words[offset : offset + field.size] = field.pack(raw)

    def _set_bit(self, index: int, bit: int, is_on: bool) -> None:
        if is_on:
            self.words[index] |= 1 << bit
        else:
            self.words[index] &= ~(1 << bit) & 0xFFFF


def _image_and_blocks(
    table: Table, fields: list[Register], refuses_unmapped: bool
) -> tuple[RegisterImage, list[SimData]]:
    """The image of one table and the SimData blocks that make its addresses valid: the span
    from the first to the last mapped address, or only the mapped ones if ``refuses_unmapped``."""
    if table.is_bits:
        bits = sorted({f.address for f in fields})
        start = bits[0] // 16
        words = [0] * (bits[-1] // 16 - start + 1)
        if not refuses_unmapped:
            bits = list(range(bits[0], bits[-1] + 1))
        blocks = [
            SimData(address=run[0], values=[False] * len(run), datatype=DataType.BITS)
            for run in _runs(bits)
        ]
        return RegisterImage(start, words, True), blocks
    addresses = sorted({a for f in fields for a in range(f.address, f.address + f.size)})
    if not refuses_unmapped:
        addresses = list(range(addresses[0], addresses[-1] + 1))
    start = addresses[0]
    words = [0] * (addresses[-1] - start + 1)
    blocks = [
        SimData(
            address=run[0], count=len(run), values=0, datatype=DataType.REGISTERS, readonly=True
        )
        for run in _runs(addresses)
    ]
    return RegisterImage(start, words, False), blocks


def _runs(numbers: list[int]) -> list[list[int]]:
    """Sorted numbers split into runs of consecutive values."""
    runs: list[list[int]] = [[numbers[0]]]
    for number in numbers[1:]:
        if number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


class ModbusUnit:
    """One simulated device behind a Modbus TCP endpoint, as one unit id.

    Args:
        unit_id: The Modbus unit (slave) id, 1..247.
        device_id: The simulated device's id, for logs and errors.
        address_map: The kind's register map.
    """

    def __init__(self, unit_id: int, device_id: str, address_map: ModbusMap) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"{device_id}: Modbus unit id must be 1..247, got {unit_id}")
        self.unit_id = unit_id
        self.device_id = device_id
        self.unreachable: Unreachable | None = None
        self.images: dict[Table, RegisterImage] = {}
        tables: list[list[SimData]] = []
        for table in _TABLE_ORDER:
            fields = [f for f in address_map.registers if f.table == table]
            if not fields:
                # SimDevice wants four non-empty tables; on_access refuses this placeholder.
                placeholder = [False] * 16 if table.is_bits else 0
                kind = DataType.BITS if table.is_bits else DataType.REGISTERS
                tables.append([SimData(address=0, values=placeholder, datatype=kind)])
                continue
            image, blocks = _image_and_blocks(table, fields, address_map.refuses_unmapped)
            self.images[table] = image
            tables.append(blocks)
        self._tables = (tables[0], tables[1], tables[2], tables[3])
        for field in address_map.registers:
            if field.constant is not None:
                self.write(field, field.to_raw(field.constant))

    def sim_device(self) -> SimDevice:
        """A fresh pymodbus device for a (re)started server."""
        return SimDevice(id=self.unit_id, simdata=self._tables, action=self.on_access)

    def write(self, field: Register, raw: int | float | bool | str) -> None:
        self.images[field.table].write(field, raw)

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request that passed its address check."""
        if self.unreachable == Unreachable.TIMEOUT:
            raise NoSuchIdException(f"unit {self.unit_id} ({self.device_id}) is unreachable")
        if self.unreachable == Unreachable.GATEWAY_EXCEPTION:
            return ExcCodes.GATEWAY_NO_RESPONSE
        image = self.images.get(_TABLE_OF_FUNCTION[function_code])
        if image is None or set_values:
            return ExcCodes.ILLEGAL_ADDRESS  # no such table, or a write: the maps are read-only
        shift = image.start - start_address
        first = (address // 16 if image.is_bits else address) - start_address
        registers[first : first + count] = image.words[first - shift : first - shift + count]
        return None


async def _never_answer(*_args: object) -> ExcCodes | None:
    raise NoSuchIdException("no such unit")


def _catch_all_device() -> SimDevice:
    """Unit id 0 stands for every unknown unit; its action drops the request unanswered.

    Its registers must look valid, or pymodbus would answer exception 02 before calling the action.
    """
    every_register = SimData(address=0, count=65536, values=0, datatype=DataType.REGISTERS)
    return SimDevice(id=0, simdata=[every_register], action=_never_answer)


class _InOrderRequestHandler(ServerRequestHandler):
    """Answers every complete request of a TCP segment, in order, not just the first."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
        self._requests: deque[tuple[ModbusPDU, tuple[str, int] | None]] = deque()

    def callback_data(self, data: bytes, addr: tuple[str, int] | None = None) -> int:
        used = 0
        while used < len(data):
            # The parent parses one frame into last_pdu and schedules handle_request for it.
            cut = super().callback_data(data[used:], addr)
            if self.last_pdu:
                self._requests.append((self.last_pdu, self.last_addr))
            if cut <= 0:
                break
            used += cut
        return used

    async def handle_request(self) -> None:
        # One scheduled call per queued request, in arrival order. The datastore action never
        # suspends, so last_pdu stays this request's until the reply is sent.
        if not self._requests:
            return
        self.last_pdu, self.last_addr = self._requests.popleft()
        await super().handle_request()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped


class _InOrderTcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _InOrderRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ModbusServer:
    """One Modbus TCP port serving any number of units.

    Args:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one at the first start and keeps it for restarts.
        name: For logs.
    """

    def __init__(self, host: str, port: int, name: str) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.units: dict[int, ModbusUnit] = {}
        self._server: ModbusTcpServer | None = None

    def add_unit(self, unit: ModbusUnit) -> None:
        if unit.unit_id in self.units:
            other = self.units[unit.unit_id].device_id
            raise ValueError(
                f"{self.name}: unit id {unit.unit_id} used by both {other} and {unit.device_id}"
            )
        self.units[unit.unit_id] = unit

    @property
    def is_running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        self.port = await bind_with_retry(self.host, self.port, self._listen)
        log.info("modbus server listening", extra={"server": self.name, "port": self.port})

    async def _listen(self, port: int) -> None:
        devices = [unit.sim_device() for unit in self.units.values()]
        devices.append(_catch_all_device())
        server = _InOrderTcpServer(devices, address=(self.host, port), ignore_missing_devices=True)
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
            await asyncio.sleep(0)  # let the transport close before a restart binds again
