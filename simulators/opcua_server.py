"""A real OPC UA server (asyncua) that serves simulated machines as objects below ``Objects``.

Every machine is an object ``Objects/<device id>`` in the namespace ``NAMESPACE_URI``, with folders
and variables as its kind's map lays them out. A variable's NodeId is a string NodeId
``<device id>.<path with dots>``, e.g. ``ns=2;s=lathe-01.Monitoring.Spindle.ActualSpeed``; the browse
path is ``0:Objects/2:lathe-01/2:Monitoring/2:Spindle/2:ActualSpeed``. The namespace is the first
one the server registers, so its index is 2; clients should still resolve it by URI.

Values are written straight into the address space (``write_attribute_value``), which also feeds
subscriptions; only changed values are written, each with the source timestamp the ground truth
records. Stopping the server closes its port and every session; starting it again reopens the same
port with the same address space.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from simulators.addressmap import OpcUaMap, Variable, VariantType
from simulators.ports import bind_with_retry

log = logging.getLogger(__name__)

NAMESPACE_URI: Final = "urn:shulian:simulators"

_VARIANT: Final[dict[VariantType, ua.VariantType]] = {
    VariantType.BOOLEAN: ua.VariantType.Boolean,
    VariantType.INT16: ua.VariantType.Int16,
    VariantType.UINT16: ua.VariantType.UInt16,
    VariantType.INT32: ua.VariantType.Int32,
    VariantType.UINT32: ua.VariantType.UInt32,
    VariantType.INT64: ua.VariantType.Int64,
    VariantType.FLOAT: ua.VariantType.Float,
    VariantType.DOUBLE: ua.VariantType.Double,
    VariantType.STRING: ua.VariantType.String,
}
_ZERO: Final[dict[VariantType, bool | int | float | str]] = {
    VariantType.BOOLEAN: False,
    VariantType.FLOAT: 0.0,
    VariantType.DOUBLE: 0.0,
    VariantType.STRING: "",
}

for _name in ("asyncua", "asyncua.server", "asyncua.server.address_space", "asyncua.uaprotocol"):
    # asyncua logs every session and every unsecured endpoint at INFO/WARNING; a simulator
    # serving hundreds of sessions would drown the useful lines.
    logging.getLogger(_name).setLevel(logging.ERROR)


class OpcUaServer:
    """One OPC UA endpoint serving any number of machines.

    Args:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one at the first start and keeps it for restarts.
        name: Server name, for logs and the server's application name.
    """

    def __init__(self, host: str, port: int, name: str) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.machines: dict[str, OpcUaMap] = {}
        self.namespace_index = 0
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._is_running = False

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._is_running

    def add_machine(self, device_id: str, address_map: OpcUaMap) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name}: add machines before the first start")
        if device_id in self.machines:
            raise ValueError(f"{self.name}: device {device_id} added twice")
        self.machines[device_id] = address_map

    async def start(self) -> None:
        if self._is_running:
            return
        if self._server is None:
            self._server = await self._build()
        self.port = await bind_with_retry(self.host, self.port, self._listen)
        self._is_running = True
        log.info("opcua server listening", extra={"server": self.name, "url": self.url})

    async def _listen(self, port: int) -> None:
        assert self._server is not None
        self._server.set_endpoint(f"opc.tcp://{self.host}:{port}/")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None and self._is_running:
            self._is_running = False
            await self._server.stop()

    async def write(
        self, device_id: str, variable: Variable, raw: bool | int | float | str, ts_ms: int
    ) -> None:
        """Write one value with its source timestamp (the server need not be running)."""
        assert self._server is not None, "start the server before writing"
        stamp = cast(ua.DateTime, datetime.fromtimestamp(ts_ms / 1000.0, UTC))
        value = ua.DataValue(
            Value=ua.Variant(raw, _VARIANT[variable.type]),
            SourceTimestamp=stamp,
            ServerTimestamp=stamp,
        )
        await self._server.write_attribute_value(self._nodes[(device_id, variable.path)], value)

    async def write_status(
        self, device_id: str, variable: Variable, status_name: str, ts_ms: int
    ) -> None:
        """Serve an OPC UA status with no value (``BadWaitingForInitialData``) for ``variable``
        until its next write, as a real server does for a value it cannot currently deliver."""
        assert self._server is not None, "start the server before writing"
        code = getattr(StatusCodes, status_name, None)
        if code is None:
            raise ValueError(f"{status_name!r} is not an OPC UA status code name (StatusCodes)")
        stamp = cast(ua.DateTime, datetime.fromtimestamp(ts_ms / 1000.0, UTC))
        value = ua.DataValue(
            StatusCode=ua.StatusCode(code), SourceTimestamp=stamp, ServerTimestamp=stamp
        )
        await self._server.write_attribute_value(self._nodes[(device_id, variable.path)], value)

    async def _build(self) -> Server:
        server = Server()
        await server.init()
        server.set_server_name(f"shulian simulator {self.name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        objects = server.nodes.objects
        for device_id, address_map in self.machines.items():
            folders: dict[str, Node] = {}
            root = await objects.add_object(
                self._node_id(device_id),
                ua.QualifiedName(device_id, self.namespace_index),
            )
            folders[""] = root
            for variable in address_map.variables:
                parent = await self._folder(folders, device_id, variable.path.rpartition("/")[0])
                node = await parent.add_variable(
                    self._node_id(variable.node_id(device_id)),
                    ua.QualifiedName(variable.path.rpartition("/")[2], self.namespace_index),
                    ua.Variant(_initial(variable), _VARIANT[variable.type]),
                )
                self._nodes[(device_id, variable.path)] = node.nodeid
        return server

    def _node_id(self, identifier: str) -> ua.NodeId:
        return ua.NodeId(ua.String(identifier), ua.Int16(self.namespace_index))

    async def _folder(self, folders: dict[str, Node], device_id: str, path: str) -> Node:
        """The folder node for ``path`` below the machine object, created on first use."""
        if path in folders:
            return folders[path]
        parent_path, _, name = path.rpartition("/")
        parent = await self._folder(folders, device_id, parent_path)
        folder = await parent.add_folder(
            self._node_id(f"{device_id}.{path.replace('/', '.')}"),
            ua.QualifiedName(name, self.namespace_index),
        )
        folders[path] = folder
        return folder


def _initial(variable: Variable) -> bool | int | float | str:
    """A constant's value (identification), else a zero of the variable's type."""
    if variable.constant is not None:
        return variable.to_raw(variable.constant)
    return _ZERO.get(variable.type, 0)


def node_ids(device_id: str, address_map: OpcUaMap) -> Iterable[tuple[Variable, str]]:
    """Each variable with its NodeId string (namespace by URI), for docs and tests."""
    for variable in address_map.variables:
        yield variable, f"nsu={NAMESPACE_URI};s={variable.node_id(device_id)}"
