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
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from simulators.addressmap import OpcUaMap, Variable, VariantType
from simulators.companion import NODESET_DIR, CompanionSpec
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
    VariantType.UINT64: ua.VariantType.UInt64,
    VariantType.LOCALIZED_TEXT: ua.VariantType.LocalizedText,
}
_ZERO: Final[dict[VariantType, bool | int | float | str]] = {
    VariantType.BOOLEAN: False,
    VariantType.FLOAT: 0.0,
    VariantType.DOUBLE: 0.0,
    VariantType.STRING: "",
    VariantType.LOCALIZED_TEXT: "",
}

for _name in ("asyncua", "asyncua.server", "asyncua.server.address_space", "asyncua.uaprotocol"):
    # asyncua logs every session and every unsecured endpoint at INFO/WARNING; a simulator
    # serving hundreds of sessions would drown the useful lines.
    logging.getLogger(_name).setLevel(logging.ERROR)
# asyncua 2.1 logs an ERROR ("Unknown datatype for field ... please report") for four Machinery
# Jobs structures whose field types come from ISA-95 job control while it loads the NodeSets;
# the nodes load all the same and no simulated value uses those structures.
logging.getLogger("asyncua.common.structures104").setLevel(logging.CRITICAL)


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
        self.companions: dict[str, tuple[CompanionSpec, str]] = {}
        """Machines served in a companion spec's form: device id -> (spec, serial number)."""
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

    def add_machine(
        self,
        device_id: str,
        address_map: OpcUaMap,
        *,
        companion: CompanionSpec | None = None,
        serial_number: str = "",
    ) -> None:
        """Serve a machine: in our own layout, or as ``companion`` defines (``address_map`` is
        then the spec's map, and ``serial_number`` goes into its identification)."""
        if self._server is not None:
            raise RuntimeError(f"{self.name}: add machines before the first start")
        if device_id in self.machines:
            raise ValueError(f"{self.name}: device {device_id} added twice")
        self.machines[device_id] = address_map
        if companion is not None:
            self.companions[device_id] = (companion, serial_number)

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
            Value=_variant(raw, variable.type), SourceTimestamp=stamp, ServerTimestamp=stamp
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
        await load_nodesets(server, [spec for spec, _ in self.companions.values()])
        objects = server.nodes.objects
        for device_id, address_map in self.machines.items():
            if device_id in self.companions:
                spec, serial = self.companions[device_id]
                nodes = await build_machine(server, self.namespace_index, device_id, spec, serial)
                self._nodes.update({(device_id, path): node for path, node in nodes.items()})
                continue
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
                    _variant(_initial(variable), variable.type),
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


def _variant(raw: bool | int | float | str, kind: VariantType) -> ua.Variant:
    if kind is VariantType.LOCALIZED_TEXT:
        return ua.Variant(ua.LocalizedText(str(raw)), ua.VariantType.LocalizedText)
    return ua.Variant(raw, _VARIANT[kind])


def _initial(variable: Variable) -> bool | int | float | str:
    """A constant's value (identification), else a zero of the variable's type."""
    if variable.constant is not None:
        return variable.to_raw(variable.constant)
    return _ZERO.get(variable.type, 0)


def node_ids(device_id: str, address_map: OpcUaMap) -> Iterable[tuple[Variable, str]]:
    """Each variable with its NodeId string (namespace by URI), for docs and tests."""
    for variable in address_map.variables:
        yield variable, f"nsu={NAMESPACE_URI};s={variable.node_id(device_id)}"


# -- companion specifications ---------------------------------------------------------------------


async def load_nodesets(server: Server, specs: Sequence[CompanionSpec]) -> None:
    """Import the NodeSets ``specs`` need, each once, in the order the machines need them (so a
    server whose first machine is a moulding machine numbers its namespaces differently from
    one whose first machine is a machine tool, as two vendors' servers do)."""
    files = list(dict.fromkeys(name for spec in specs for name in spec.nodesets))
    if not files:
        return
    started = time.monotonic()
    for name in files:
        # strict_mode=False: asyncua 2.1 refuses Machinery Jobs and GeneralTypes in strict mode.
        await server.import_xml(str(NODESET_DIR / name), strict_mode=False)
    log.info(
        "loaded companion-spec nodesets",
        extra={"files": len(files), "seconds": round(time.monotonic() - started, 2)},
    )


async def build_machine(
    server: Server, own_index: int, device_id: str, spec: CompanionSpec, serial_number: str
) -> dict[str, ua.NodeId]:
    """Create ``device_id`` as an instance of the spec's machine type, with its parts and
    identification; returns the node of every variable of the spec's map, by path."""
    array = await server.get_namespace_array()
    indexes = {alias: array.index(uri) for alias, uri in spec.namespaces.items()}
    indexes["machine"] = own_index
    folder = await server.nodes.root.get_child(_names(spec.folder, indexes))
    machine_type = await _find_type(server, spec.machine_type, indexes)
    machine = await folder.add_object(own_index, device_id, objecttype=machine_type)
    for part in spec.parts:
        parent_path, _, name = part.path.rpartition("/")
        parent = await machine.get_child(_names(parent_path, indexes))
        await parent.add_object(
            own_index,
            _names(name, indexes)[0].Name,
            objecttype=await _find_type(server, part.type, indexes),
        )
    constants = {**spec.identification, spec.serial_number: serial_number}
    for path, text in constants.items():
        node = await machine.get_child(_names(path, indexes))
        kind = await node.read_data_type_as_variant_type()
        value = ua.LocalizedText(text) if kind is ua.VariantType.LocalizedText else text
        await node.write_value(ua.Variant(value, kind))
    nodes: dict[str, ua.NodeId] = {}
    for variable in spec.address_map.variables:
        node = await _variable(machine, variable, indexes, own_index)
        await server.write_attribute_value(
            node.nodeid, ua.DataValue(Value=_variant(_initial(variable), variable.type))
        )
        nodes[variable.path] = node.nodeid
    return nodes


async def _variable(
    machine: Node, variable: Variable, indexes: dict[str, int], own_index: int
) -> Node:
    """The node of ``variable``, walking its path from the machine. A step the instance lacks
    is an optional part of the spec: it is added as its type declares it. A vendor variable
    (``machine:`` namespace) the spec does not define is added as a plain variable."""
    names = _names(variable.path, indexes)
    node = machine
    for depth, name in enumerate(names):
        try:
            node = await node.get_child([name])
            continue
        except UaError:
            pass
        if name.NamespaceIndex == own_index and depth == len(names) - 1:
            return await node.add_variable(
                own_index, name.Name, _variant(_initial(variable), variable.type)
            )
        node = await _add_declared(node, name)
    return node


async def _add_declared(parent: Node, name: ua.QualifiedName) -> Node:
    """Add the optional child ``name`` to ``parent`` as ``parent``'s type (or a supertype)
    declares it: an object of the declared type, or a variable or property of its data type."""

    def server_node(node_id: ua.NodeId) -> Node:
        return Node(parent.session, node_id)

    typedefs = await parent.get_references(refs=ObjectIds.HasTypeDefinition)
    type_node: Node | None = server_node(typedefs[0].NodeId) if typedefs else None
    while type_node is not None:
        try:
            declaration = await type_node.get_child([name])
            break
        except UaError:
            supers = await type_node.get_references(
                refs=ObjectIds.HasSubtype, direction=ua.BrowseDirection.Inverse
            )
            type_node = server_node(supers[0].NodeId) if supers else None
    else:
        raise LookupError(f"{name.to_string()} is declared by no type of {parent}")
    fresh = ua.NodeId(ua.Int32(0), parent.nodeid.NamespaceIndex)
    declared = await declaration.get_references(refs=ObjectIds.HasTypeDefinition)
    declared_type = declared[0].NodeId
    if await declaration.read_node_class() == ua.NodeClass.Object:
        return await parent.add_object(fresh, name, objecttype=declared_type)
    datatype = await declaration.read_data_type()
    if declared_type == ua.NodeId(ua.Int32(ObjectIds.PropertyType)):
        return await parent.add_property(fresh, name, None, datatype=datatype)
    return await parent.add_variable(fresh, name, None, datatype=datatype)


def _names(path: str, indexes: dict[str, int]) -> list[ua.QualifiedName]:
    names = []
    for step in path.split("/"):
        space, _, name = step.partition(":")
        index = int(space) if space.isdigit() else indexes[space]
        names.append(ua.QualifiedName(name, index))
    return names


async def _find_type(server: Server, written: str, indexes: dict[str, int]) -> ua.NodeId:
    """The ObjectType named ``alias:Name``, searched below BaseObjectType."""
    [wanted] = _names(written, indexes)
    pending = [server.nodes.base_object_type]
    while pending:
        node = pending.pop()
        for child in await node.get_children(refs=ObjectIds.HasSubtype):
            if await child.read_browse_name() == wanted:
                return child.nodeid
            pending.append(child)
    raise LookupError(f"object type {written} is not in the loaded nodesets")
