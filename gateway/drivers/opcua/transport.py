"""The one module that talks to asyncua: sessions, reads, subscriptions, and error mapping.

Everything the rest of the driver sees is plain Python (``DataSample``, ``NodeAddress``) and our
own errors (``DeviceUnreachableError``, ``DeviceTimeoutError``, ``ProtocolError``), each naming
the device, the endpoint and, for a bad status code, its name (``BadUserAccessDenied``).

asyncua 2.x quirks held here:

- ``Client.connect()`` always starts a supervisor task that probes the server; with
  ``auto_reconnect=False`` it only marks the client DISCONNECTED when the probe fails. We keep it
  as a backstop and never let asyncua reconnect on its own: the scheduler owns reconnects.
- ``Client.disconnect()`` on a dead transport logs warnings and can wait for request timeouts;
  ``UaConnection.close()`` bounds it and then cancels asyncua's own tasks (private attributes,
  checked with ``getattr`` so a rename degrades to a no-op rather than a crash).
- Subscriptions are created on the session directly (not ``Client.create_subscription``) so that
  one publish response becomes one batch for the sink, without a task per value, and so that
  asyncua's stale-subscription watchdog never recreates them behind the scheduler's back.
- asyncua warns "Received data for unknown subscription N" when a server sends a subscription's
  first keep-alive right after creating it (asyncua's own server does, at once): asyncua's
  publish loop sees that response before ``create_subscription`` has registered the callback.
  That message is empty (no notifications, nothing to acknowledge; the initial values follow
  once the monitored items exist), so the warning is logged at DEBUG instead (``_quiet_asyncua``).
- asyncua's publish loop logs an ERROR with a traceback each second after its connection drops
  (a server restart) until the session is closed; that expected loss becomes one WARNING line
  (``_PublishLoopLossFilter``); other publish-loop failures keep their traceback.

Sharing: devices on one server endpoint with the same settings (security, user, timeouts) share
one session (``_Session``, reference-counted in a per-loop pool), and groups with the same
publishing interval share one server subscription, each device's monitored items routed back to
it by client handle. Forty machines on one server cost one session and one publish stream instead
of forty (and eighty), which is most of the OPC UA CPU and memory of a gateway (bench/README.md).
Each device keeps its own ``UaConnection`` handle: its errors name the device, and closing it
removes only its monitored items. What a session's loss means is unchanged: the server or the
network is gone, so every device on it reports disconnected and reconnects with its own backoff
(the first one back opens a new session; the others join it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import enum
import logging
import math
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies
from asyncua.crypto.uacrypto import CertProperties
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from gateway.drivers.base import DriverMetrics
from gateway.drivers.opcua.addresses import BrowseStep, NodeAddress
from gateway.drivers.opcua.models import OpcUaSettings, SecurityMode, SecurityPolicy
from gateway.drivers.opcua.security import ClientIdentity, Pki
from gateway.errors import (
    DeviceTimeoutError,
    DeviceUnreachableError,
    DriverError,
    ProtocolError,
)

__all__ = [
    "BrowsedObject",
    "DataSample",
    "MonitorItem",
    "Resolution",
    "SessionPool",
    "UaConnection",
    "UaSubscription",
    "session_pool",
    "status_name",
]

RawValue = bool | int | float | str | None
SampleBatch = list[tuple[int, "DataSample"]]
_T = TypeVar("_T")

_log = logging.getLogger(__name__)

_CHUNK = 500
"""Nodes per Read / CreateMonitoredItems request; below every server limit we know of."""
_MAX_SHARED_ITEMS = 5000
"""Monitored items one shared server subscription takes before another one is opened."""
_CLOSE_TIMEOUT_S = 2.0
_ROOT = ua.NodeId(ua.Int32(ObjectIds.RootFolder))
_HIERARCHICAL = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
_DEAD_SERVER_STATES = {
    ua.ServerState.Failed,
    ua.ServerState.Shutdown,
    ua.ServerState.CommunicationFault,
}
_POLICY_CLASSES: dict[SecurityPolicy, type[security_policies.SecurityPolicy]] = {
    SecurityPolicy.NONE: security_policies.SecurityPolicyNone,
    SecurityPolicy.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
}
_MODES = {
    SecurityMode.NONE: ua.MessageSecurityMode.None_,
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_IDENTITY_CODES = {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
_CLIENT_CERT_CODES = {
    "BadSecurityChecksFailed",
    "BadCertificateUntrusted",
    "BadCertificateInvalid",
    "BadCertificateTimeInvalid",
    "BadCertificateHostNameInvalid",
    "BadCertificateUriInvalid",
    "BadCertificateUseNotAllowed",
    "BadCertificateRevoked",
    "BadCertificateIssuerRevoked",
    "BadCertificateRevocationUnknown",
}


@dataclass(frozen=True, slots=True)
class DataSample:
    """One OPC UA DataValue in plain Python."""

    value: RawValue
    status_code: int
    status_name: str
    source_ts: dt.datetime | None
    server_ts: dt.datetime | None
    problem: str | None = None
    """Set when the value has a type a signal cannot carry (an array, a structure)."""


@dataclass(frozen=True, slots=True)
class MonitorItem:
    handle: int
    node: NodeAddress
    sampling_interval_ms: float
    queue_size: int = 1
    deadband: float | None = None
    """Absolute data-change deadband (server-side), or None for every change."""


@dataclass(frozen=True, slots=True)
class BrowsedObject:
    """An object found by browsing: its node, browse name and type definition."""

    node: NodeAddress
    namespace: int
    name: str
    type_definition: NodeAddress | None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a configured address points on this server, or why it points nowhere."""

    node: NodeAddress | None
    problem: str | None = None


def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` for 0x80340000; the hex code when the name is unknown."""
    name = ua.StatusCode(ua.UInt32(code)).name
    return name if name else f"0x{code:08X}"


class _Session:
    """One client session to one server, shared by the devices whose settings match.

    Every await is bounded by ``timeout_s``. Errors name ``where`` (the device that opened it);
    each device's ``UaConnection`` renames them to itself.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        where: str,
        settings: OpcUaSettings,
        logger: logging.LoggerAdapter[Any],
        metrics: DriverMetrics,
        password: str | None = None,
        identity: ClientIdentity | None = None,
        pki: Pki | None = None,
        session_name: str = "shulian gateway",
    ) -> None:
        self.endpoint = endpoint
        self.where = where
        self.settings = settings
        self.log = logger
        self.metrics = metrics
        self._password = password
        self._identity = identity
        self._pki = pki
        self._session_name = session_name
        self._client: Client | None = None
        self._states: Any = None
        self._state_task: asyncio.Task[None] | None = None
        self._lost_reason: str | None = None
        self._lost = asyncio.Event()
        self._is_closing = False
        self._node_ids: dict[NodeAddress, ua.NodeId] = {}
        self._subscriptions: dict[tuple[float, int, int], list[_ServerSubscription]] = {}
        self._subscribing: dict[tuple[float, int, int], asyncio.Lock] = {}
        self._probe: asyncio.Future[None] | None = None
        self._probed_ok_mono = -math.inf

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check the server's certificate against the trust list, create the session.

        Raises:
            DriverError: the subclass says why; the message names device, endpoint and status.
        """
        settings = self.settings
        client = Client(
            self.endpoint, timeout=settings.timeout_s, watchdog_intervall=2 * settings.keepalive_s
        )
        client.session_timeout = int(settings.session_timeout_s * 1000)
        client.name = client.description = self._session_name
        client.product_uri = "urn:shulian:gateway"
        if settings.username:
            client.set_user(settings.username)
            if self._password is not None:
                client.set_password(self._password)
        self._client = client
        try:
            if settings.security_policy is not SecurityPolicy.NONE:
                await self._secure(client)
            try:
                await self._call(
                    client.connect(auto_reconnect=False),
                    "opening a session",
                    timeout_s=4 * settings.timeout_s,
                )
            except ProtocolError as exc:
                if not exc.what.startswith("the server offers no endpoint"):
                    raise
                # Say what the server does offer: the installer's next step.
                endpoints = await self._call(
                    client.connect_and_get_server_endpoints(), "asking for the server's endpoints"
                )
                self._matching_endpoint(endpoints)
                raise
            self._states = client.subscribe_state()
            await self._states.__aenter__()
            self._state_task = asyncio.create_task(self._follow_state(), name="opcua-state")
        except BaseException:
            await self.close()
            raise

    async def _follow_state(self) -> None:
        """Mark the session lost when asyncua says the connection left CONNECTED."""
        while True:
            state = await self._states.next_change()
            if state is not UaClientState.CONNECTED:
                self.mark_lost("the connection to the server was lost")
                return

    async def _secure(self, client: Client) -> None:
        if self._identity is None or self._pki is None:
            raise ProtocolError(
                "security is on but the gateway's certificate was not loaded", where=self.where
            )
        client.application_uri = self._identity.application_uri
        endpoints = await self._call(
            client.connect_and_get_server_endpoints(), "asking for the server's endpoints"
        )
        endpoint = self._matching_endpoint(endpoints)
        der = _first_certificate(endpoint.ServerCertificate or b"")
        decision = await asyncio.to_thread(
            self._pki.check_server_certificate, der, self.settings.trust_on_first_use
        )
        if not decision.is_trusted:
            raise ProtocolError(
                f"refused the server's certificate ({decision.info}): {decision.reason}; "
                f"saved as {decision.saved_to}",
                where=self.where,
                hint=(
                    f"If this is the right server, move that file to {self._pki.trusted_dir}/ "
                    "and the next connect accepts it (or set trust_on_first_use: true)."
                ),
            )
        if decision.saved_to is not None:
            self.log.warning(
                "trusted the server certificate on first use: %s (saved as %s)",
                decision.info,
                decision.saved_to,
            )
        await client.set_security(
            _POLICY_CLASSES[self.settings.security_policy],
            certificate=str(self._identity.cert_path),
            private_key=str(self._identity.key_path),
            server_certificate=CertProperties(der, extension="der"),
            mode=_MODES[self.settings.security_mode],
        )

    def _matching_endpoint(
        self, endpoints: Sequence[ua.EndpointDescription]
    ) -> ua.EndpointDescription:
        policy_uri = _POLICY_CLASSES[self.settings.security_policy].URI
        mode = _MODES[self.settings.security_mode]
        for endpoint in endpoints:
            if endpoint.SecurityPolicyUri == policy_uri and endpoint.SecurityMode == mode:
                return endpoint
        offered = sorted(
            {
                f"{e.SecurityPolicyUri.rpartition('#')[2]}/{ua.MessageSecurityMode(e.SecurityMode).name.rstrip('_')}"
                for e in endpoints
            }
        )
        raise ProtocolError(
            f"the server offers no endpoint with security {self.settings.security_policy}/"
            f"{self.settings.security_mode}; it offers {', '.join(offered) or 'none'}",
            where=self.where,
            hint="Set security_policy and security_mode to one the server offers.",
        )

    async def close(self) -> None:
        """Close the session; never takes longer than a few seconds, whatever the server does."""
        client, self._client = self._client, None
        if client is None:
            return
        self._is_closing = True
        if self._state_task is not None:
            self._state_task.cancel()
            await asyncio.gather(self._state_task, return_exceptions=True)
            self._state_task = None
        if self._states is not None:
            await self._states.__aexit__(None, None, None)
            self._states = None
        if client.state is UaClientState.CONNECTED:
            try:
                await asyncio.wait_for(
                    client.disconnect(), min(self.settings.timeout_s, _CLOSE_TIMEOUT_S)
                )
            except (TimeoutError, OSError, UaError) as exc:
                self.log.debug("closing the session failed: %r", exc)
        await _stop_client_tasks(client)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    # -- health --------------------------------------------------------------------------------

    async def wait_lost(self, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` for the session to be lost; return why, or None if it lived."""
        if self._lost_reason is not None:
            return self._lost_reason
        client = self._client
        if client is None or self._states is None:
            return "the connection is closed"
        if client.state is not UaClientState.CONNECTED:
            return self.mark_lost("the connection to the server was lost")
        try:
            await asyncio.wait_for(self._lost.wait(), timeout_s)
        except TimeoutError:
            return None
        return self._lost_reason

    @property
    def is_lost(self) -> bool:
        return self._lost_reason is not None

    def mark_lost(self, reason: str) -> str:
        """Record why the session is unusable and wake ``wait_lost``."""
        if self._lost_reason is None:
            self._lost_reason = reason
            self._lost.set()
            if self._client is not None and not self._is_closing:
                self._client.uaclient.notify_transport_lost()
        return self._lost_reason

    def subscription_ended(self, group: str, status: str) -> str:
        """A subscription reported a status change; say why in words an operator understands."""
        client = self._client
        if client is not None and client.state is not UaClientState.CONNECTED:
            # asyncua tells every subscription BadShutdown when it notices the socket is gone.
            return self.mark_lost("the connection to the server was lost")
        if status == "BadShutdown":
            return self.mark_lost("the server is shutting down (BadShutdown)")
        return self.mark_lost(f"the server ended the subscription of group {group} ({status})")

    async def probe(self, metrics: DriverMetrics) -> None:
        """Check the server answers and is not shutting down; raise if not.

        Every device on the session asks each ``keepalive_s``: one read answers all those that
        ask while it runs, and a good answer stands for half a keep-alive period.
        """
        if time.monotonic() - self._probed_ok_mono < self.settings.keepalive_s / 2:
            return
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._probe_once(metrics))
        await asyncio.shield(self._probe)

    async def _probe_once(self, metrics: DriverMetrics) -> None:
        client = self._require_client()
        timeout_s = min(self.settings.timeout_s, self.settings.keepalive_s)
        state = await self._call(
            client.nodes.server_state.read_value(),
            "checking the server is alive",
            timeout_s,
            metrics=metrics,
        )
        self._probed_ok_mono = time.monotonic()
        if state in _DEAD_SERVER_STATES:
            raise DeviceUnreachableError(
                f"the server reports state {ua.ServerState(state).name}", where=self.where
            )

    # -- services ------------------------------------------------------------------------------

    async def read(self, nodes: Sequence[NodeAddress], metrics: DriverMetrics) -> list[DataSample]:
        """Read the Value attribute of every node, in as few requests as the chunk size allows."""
        client = self._require_client()
        samples: list[DataSample] = []
        for start in range(0, len(nodes), _CHUNK):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [
                ua.ReadValueId(NodeId=self._node_id(node), AttributeId=AttributeIds.Value)
                for node in nodes[start : start + _CHUNK]
            ]
            values = await self._call(
                client.uaclient.read(params), "reading values", metrics=metrics
            )
            samples += [_sample(value) for value in values]
        return samples

    async def namespaces(self, metrics: DriverMetrics) -> list[str]:
        """The server's namespace array: index -> namespace URI."""
        client = self._require_client()
        node = client.get_node(ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray)))
        return list(
            await self._call(node.read_value(), "reading the namespace array", metrics=metrics)
        )

    async def browse_objects(
        self, node: NodeAddress, metrics: DriverMetrics
    ) -> list[BrowsedObject]:
        """The objects below ``node`` (hierarchical references), with their type definitions."""
        client = self._require_client()
        description = ua.BrowseDescription()
        description.NodeId = self._node_id(node)
        description.BrowseDirection = ua.BrowseDirection.Forward
        description.ReferenceTypeId = _HIERARCHICAL
        description.IncludeSubtypes = True
        description.NodeClassMask = ua.NodeClass.Object
        description.ResultMask = ua.BrowseResultMask.All
        params = ua.BrowseParameters()
        params.NodesToBrowse = [description]
        results = await self._call(
            client.uaclient.browse(params), f"browsing {node}", metrics=metrics
        )
        found: list[BrowsedObject] = []
        for result in results:
            for ref in result.References or []:
                if getattr(ref.NodeId, "ServerIndex", 0):
                    continue
                found.append(
                    BrowsedObject(
                        _from_ua_node_id(ref.NodeId),
                        ref.BrowseName.NamespaceIndex,
                        ref.BrowseName.Name or "",
                        _from_ua_node_id(ref.TypeDefinition) if ref.TypeDefinition else None,
                    )
                )
        return found

    async def type_lineage(
        self, type_node: NodeAddress, metrics: DriverMetrics, limit: int = 16
    ) -> list[tuple[int, str]]:
        """Browse names of ``type_node`` and its supertypes, nearest first (for subtype matches)."""
        client = self._require_client()
        lineage: list[tuple[int, str]] = []
        current: ua.NodeId | None = self._node_id(type_node)
        while current is not None and len(lineage) < limit:
            node = client.get_node(current)
            name = await self._call(
                node.read_browse_name(), "reading a type's name", metrics=metrics
            )
            lineage.append((name.NamespaceIndex, name.Name or ""))
            parents = await self._call(
                node.get_references(
                    refs=ObjectIds.HasSubtype, direction=ua.BrowseDirection.Inverse
                ),
                "reading a type's supertype",
                metrics=metrics,
            )
            current = parents[0].NodeId if parents else None
        return lineage

    async def resolve(
        self,
        addresses: Sequence[NodeAddress | tuple[BrowseStep, ...]],
        metrics: DriverMetrics,
        start: NodeAddress | None = None,
    ) -> list[Resolution]:
        """Turn configured addresses into this server's node ids (namespace URIs, browse paths);
        browse paths start at ``start`` (default: the Root folder)."""
        client = self._require_client()
        origin = _ROOT if start is None else self._node_id(start)
        out: list[Resolution | None] = [None] * len(addresses)
        namespaces: list[str] | None = None
        if any(isinstance(a, NodeAddress) and a.namespace_uri for a in addresses):
            node = client.get_node(ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray)))
            namespaces = list(
                await self._call(node.read_value(), "reading the namespace array", metrics=metrics)
            )
        paths: list[tuple[int, tuple[BrowseStep, ...]]] = []
        for index, address in enumerate(addresses):
            if isinstance(address, NodeAddress):
                out[index] = _resolve_namespace(address, namespaces)
            else:
                paths.append((index, address))
        for first in range(0, len(paths), _CHUNK):
            chunk = paths[first : first + _CHUNK]
            results = await self._call(
                client.uaclient.translate_browsepaths_to_nodeids(
                    [_browse_path(p, origin) for _, p in chunk]
                ),
                "resolving browse paths",
                metrics=metrics,
            )
            for (index, path), result in zip(chunk, results, strict=True):
                out[index] = _path_resolution(path, result)
        return [r if r is not None else Resolution(None, "not resolved") for r in out]

    async def subscribe(
        self,
        *,
        interval_ms: float,
        keepalive_count: int,
        lifetime_count: int,
        items: Sequence[MonitorItem],
        on_samples: Callable[[SampleBatch], None],
        on_status: Callable[[int, str], None],
        metrics: DriverMetrics,
    ) -> tuple[UaSubscription, list[tuple[int, str]]]:
        """Monitor ``items`` in a server subscription with these parameters (shared with other
        devices asking for the same ones); ``on_samples`` gets them with the caller's handles.

        Returns:
            The caller's share of the subscription, and the items the server refused, as
            (handle, status name).
        """
        key = (interval_ms, keepalive_count, lifetime_count)
        async with self._subscribing.setdefault(key, asyncio.Lock()):
            server = self._shared_subscription(key, len(items))
            if server is None:
                server = await self._create_subscription(key, metrics)
            member = UaSubscription(server, on_samples, on_status)
            server.members.add(member)
        try:
            refused = await self._add_items(server, member, items, metrics)
        except BaseException:
            await member.delete()
            raise
        return member, refused

    def _shared_subscription(
        self, key: tuple[float, int, int], count: int
    ) -> _ServerSubscription | None:
        live = [s for s in self._subscriptions.get(key, []) if not s.is_deleted]
        self._subscriptions[key] = live
        for server in live:
            if server.item_count + count <= _MAX_SHARED_ITEMS:
                return server
        return None

    async def _create_subscription(
        self, key: tuple[float, int, int], metrics: DriverMetrics
    ) -> _ServerSubscription:
        interval_ms, keepalive_count, lifetime_count = key
        session = self._require_client().uaclient.session
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms,
            RequestedLifetimeCount=lifetime_count,
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        server = _ServerSubscription(self)
        result = await self._call(
            session.create_subscription(params, server.on_publish),
            "creating a subscription",
            metrics=metrics,
        )
        server.started(result)
        self._subscriptions.setdefault(key, []).append(server)
        return server

    async def _add_items(
        self,
        server: _ServerSubscription,
        member: UaSubscription,
        items: Sequence[MonitorItem],
        metrics: DriverMetrics,
    ) -> list[tuple[int, str]]:
        session = self._require_client().uaclient.session
        refused: list[tuple[int, str]] = []
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            handles = [server.claim(member, item.handle) for item in chunk]
            create = ua.CreateMonitoredItemsParameters(
                SubscriptionId=server.subscription_id,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                ItemsToCreate=[
                    self._monitored_item(item, handle)
                    for item, handle in zip(chunk, handles, strict=True)
                ],
            )
            results = await self._call(
                session.create_monitored_items(create), "creating monitored items", metrics=metrics
            )
            for item, handle, res in zip(chunk, handles, results, strict=True):
                if res.StatusCode.is_good():
                    member.item_ids[handle] = res.MonitoredItemId
                else:
                    server.unclaim(handle)
                    refused.append((item.handle, status_name(res.StatusCode.value)))
        return refused

    def _monitored_item(self, item: MonitorItem, handle: int) -> ua.MonitoredItemCreateRequest:
        parameters = ua.MonitoringParameters(
            ClientHandle=handle,
            SamplingInterval=item.sampling_interval_ms,
            QueueSize=item.queue_size,
            DiscardOldest=True,
        )
        if item.deadband is not None:
            parameters.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=ua.DeadbandType.Absolute,
                DeadbandValue=item.deadband,
            )
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(
                NodeId=self._node_id(item.node), AttributeId=AttributeIds.Value
            ),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=parameters,
        )

    async def delete_items(self, server: _ServerSubscription, item_ids: list[int]) -> None:
        """Delete one device's monitored items; the subscription too if nobody else uses it."""
        client = self._client
        if client is None or client.state is not UaClientState.CONNECTED or self.is_lost:
            return  # the session (and its subscriptions) is gone or going anyway
        limit = min(self.settings.timeout_s, _CLOSE_TIMEOUT_S)
        session = client.uaclient.session
        if not server.members:
            server.is_deleted = True
            await self._call(
                session.delete_subscriptions([server.subscription_id]),
                "deleting a subscription",
                timeout_s=limit,
                metrics=self.metrics,
            )
        elif item_ids:
            await self._call(
                session.delete_monitored_items(
                    ua.DeleteMonitoredItemsParameters(
                        SubscriptionId=server.subscription_id, MonitoredItemIds=item_ids
                    )
                ),
                "deleting monitored items",
                timeout_s=limit,
                metrics=self.metrics,
            )

    # -- plumbing ------------------------------------------------------------------------------

    def _require_client(self) -> Client:
        if self._client is None:
            raise DeviceUnreachableError(
                "not connected", where=self.where, hint="connect() first (the scheduler does)."
            )
        return self._client

    def _node_id(self, node: NodeAddress) -> ua.NodeId:
        cached = self._node_ids.get(node)
        if cached is None:
            cached = self._node_ids[node] = _to_ua_node_id(node)
        return cached

    async def _call(
        self,
        awaitable: Awaitable[_T],
        action: str,
        timeout_s: float | None = None,
        *,
        metrics: DriverMetrics | None = None,
    ) -> _T:
        """Await one asyncua operation within a time limit, mapping its errors to ours; count
        it in ``metrics`` (the asking device's), else the session's own."""
        metrics = metrics or self.metrics
        limit = self.settings.timeout_s if timeout_s is None else timeout_s
        metrics.requests += 1
        try:
            return await asyncio.wait_for(awaitable, limit)
        except DriverError:
            metrics.errors += 1
            raise
        except TimeoutError as exc:
            metrics.errors += 1
            # Each request waits timeout_s; a longer limit only bounds a multi-request step.
            waited = min(limit, self.settings.timeout_s)
            raise DeviceTimeoutError(
                f"no answer within {waited:g} s while {action}",
                where=self.where,
                hint="Check that the server is running and reachable, or raise timeout_s.",
            ) from exc
        except (OSError, UaError) as exc:
            metrics.errors += 1
            raise self._map_error(exc, action) from exc

    def _map_error(self, exc: OSError | UaError, action: str) -> DriverError:
        where = self.where
        if isinstance(exc, ConnectionRefusedError):
            return DeviceUnreachableError(
                f"connection refused while {action}",
                where=where,
                hint="Check the endpoint's host and port, and that the OPC UA server is running.",
            )
        if isinstance(exc, socket.gaierror):
            return DeviceUnreachableError(
                f"host name not found ({exc.strerror})",
                where=where,
                hint="Check the host in the endpoint.",
            )
        if isinstance(exc, OSError):
            detail = str(exc) or type(exc).__name__
            return DeviceUnreachableError(
                f"connection failed while {action}: {detail}",
                where=where,
                hint="Check the network path to the server; the gateway retries with backoff.",
            )
        code = getattr(exc, "code", None)
        if isinstance(code, int):
            return self._status_error(status_name(code), action)
        text = str(exc.args[0]) if exc.args else type(exc).__name__
        if text.startswith("No matching endpoints"):
            return ProtocolError(
                f"the server offers no endpoint with security {self.settings.security_policy}/"
                f"{self.settings.security_mode}",
                where=where,
                hint="Set security_policy and security_mode to one the server offers.",
            )
        return ProtocolError(f"OPC UA error while {action}: {text}", where=where)

    def _status_error(self, name: str, action: str) -> DriverError:
        where = self.where
        if name in _IDENTITY_CODES:
            who = f"user {self.settings.username!r}" if self.settings.username else "anonymous user"
            return ProtocolError(
                f"the server refused the {who} ({name}): wrong user name or password, "
                "or the user may not log in",
                where=where,
                hint=(
                    "Check username and the password in password_file or "
                    "SHULIAN_GW_OPCUA_PASSWORD__<DEVICE_ID>."
                ),
            )
        if name in _CLIENT_CERT_CODES:
            cert = self._identity.cert_path if self._identity else "the gateway's certificate"
            return ProtocolError(
                f"the server refused the gateway's certificate ({name})",
                where=where,
                hint=f"Add {cert} to the server's trusted client certificates, then retry.",
            )
        if name in ("BadSecurityPolicyRejected", "BadSecurityModeRejected"):
            return ProtocolError(
                f"the server refused security {self.settings.security_policy}/"
                f"{self.settings.security_mode} ({name})",
                where=where,
                hint="Set security_policy and security_mode to one the server offers.",
            )
        if name in ("BadTooManySessions", "BadMaxConnectionsReached"):
            return DeviceUnreachableError(
                f"the server has no room for another session ({name})",
                where=where,
                hint="Close other clients of this server or raise its session limit.",
            )
        if name in ("BadTimeout", "BadRequestTimeout"):
            return DeviceTimeoutError(f"the server timed out while {action} ({name})", where=where)
        if name in ("BadSessionIdInvalid", "BadSessionClosed", "BadSecureChannelIdInvalid",
                    "BadConnectionClosed", "BadServerHalted", "BadShutdown"):  # fmt: skip
            return DeviceUnreachableError(f"the session ended while {action} ({name})", where=where)
        return ProtocolError(f"the server answered {name} while {action}", where=where)


class _ServerSubscription:
    """One subscription on the server, shared by the devices (members) that asked for its
    parameters. ``on_publish`` runs inside asyncua's publish loop: it converts a publish
    response and hands each member its own items at once, and never blocks."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self.subscription_id = 0
        self.interval_ms = 0.0
        self.keepalive_count = 0
        self.last_publish_mono = time.monotonic()
        self.is_deleted = False
        self.members: set[UaSubscription] = set()
        self._owners: dict[int, tuple[UaSubscription, int]] = {}
        """Client handle on the server -> (member, the member's own handle)."""
        self._next_handle = 0

    @property
    def item_count(self) -> int:
        return len(self._owners)

    def started(self, result: ua.CreateSubscriptionResult) -> None:
        self.subscription_id = result.SubscriptionId
        self.interval_ms = float(result.RevisedPublishingInterval)
        self.keepalive_count = int(result.RevisedMaxKeepAliveCount)
        self.last_publish_mono = time.monotonic()

    def claim(self, member: UaSubscription, handle: int) -> int:
        """A server-side client handle for a member's item."""
        self._next_handle += 1
        self._owners[self._next_handle] = (member, handle)
        return self._next_handle

    def unclaim(self, handle: int) -> None:
        self._owners.pop(handle, None)

    def on_publish(self, result: ua.PublishResult) -> None:
        self.last_publish_mono = time.monotonic()
        if self.is_deleted:
            return
        for notification in result.NotificationMessage.NotificationData or []:
            try:
                if isinstance(notification, ua.DataChangeNotification):
                    self._deliver(notification.MonitoredItems)
                elif isinstance(notification, ua.StatusChangeNotification):
                    code = notification.Status.value
                    for member in list(self.members):
                        member.status(code, status_name(code))
            except Exception:  # one bad batch must not stop the publish loop
                self._session.log.exception("handling a publish response failed")

    def _deliver(self, items: list[ua.MonitoredItemNotification]) -> None:
        batches: dict[UaSubscription, SampleBatch] = {}
        owners = self._owners
        for item in items:
            owner = owners.get(item.ClientHandle)
            if owner is not None:
                member, handle = owner
                batch = batches.get(member)
                if batch is None:
                    batch = batches[member] = []
                batch.append((handle, _sample(item.Value)))
        for member, batch in batches.items():
            member.deliver(batch)


class UaSubscription:
    """One device's share of a server subscription: its items, delivered with its handles."""

    def __init__(
        self,
        server: _ServerSubscription,
        on_samples: Callable[[SampleBatch], None],
        on_status: Callable[[int, str], None],
    ) -> None:
        self._server = server
        self._on_samples = on_samples
        self._on_status = on_status
        self.item_ids: dict[int, int] = {}
        """Server client handle -> monitored item id, for this device's items."""
        self.notifications = 0
        self.is_deleted = False

    @property
    def subscription_id(self) -> int:
        return self._server.subscription_id

    @property
    def interval_ms(self) -> float:
        return self._server.interval_ms

    @property
    def keepalive_count(self) -> int:
        return self._server.keepalive_count

    @property
    def last_publish_mono(self) -> float:
        return self._server.last_publish_mono

    @property
    def max_silence_s(self) -> float:
        """The longest the server may stay silent: one keep-alive period (data or not)."""
        return max(self.keepalive_count, 1) * self.interval_ms / 1000

    def deliver(self, batch: SampleBatch) -> None:
        if self.is_deleted:
            return
        self.notifications += len(batch)
        try:
            self._on_samples(batch)
        except Exception:  # one device's bug must not cost the others on the session their data
            self._server._session.log.exception("handling a publish response failed")

    def status(self, code: int, name: str) -> None:
        if not self.is_deleted:
            self._on_status(code, name)

    def detach(self) -> list[int]:
        """Stop delivering, without talking to the server; returns the monitored item ids."""
        self.is_deleted = True
        server = self._server
        server.members.discard(self)
        for handle in self.item_ids:
            server.unclaim(handle)
        item_ids, self.item_ids = list(self.item_ids.values()), {}
        return item_ids

    async def delete(self) -> None:
        """Remove this device's items from the server (bounded); a dead session makes this a
        quiet no-op. The last member to leave deletes the subscription."""
        if self.is_deleted and self not in self._server.members:
            return
        server = self._server
        item_ids = self.detach()
        if server.subscription_id:
            try:
                await server._session.delete_items(server, item_ids)
            except DriverError as exc:
                server._session.log.debug("deleting subscription items failed: %s", exc)


class UaConnection:
    """One device's handle on a (shared) session to its server.

    ``open`` joins the session of the devices with the same endpoint and settings, or opens it;
    ``close`` leaves it (the last device to leave closes it). Errors name this device, and the
    requests it makes are counted in its metrics.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        where: str,
        settings: OpcUaSettings,
        logger: logging.LoggerAdapter[Any],
        metrics: DriverMetrics,
        password: str | None = None,
        identity: ClientIdentity | None = None,
        pki: Pki | None = None,
        session_name: str = "shulian gateway",
    ) -> None:
        self.endpoint = endpoint
        self.where = where
        self.settings = settings
        self.log = logger
        self.metrics = metrics
        self._password = password
        self._identity = identity
        self._pki = pki
        self._session_name = session_name
        self._session: _Session | None = None

    def _key(self) -> Hashable:
        identity = (
            (str(self._identity.cert_path), str(self._identity.key_path))
            if self._identity
            else None
        )
        pki = str(self._pki.root) if self._pki else None
        return (self.endpoint, self.settings.model_dump_json(), self._password, identity, pki)

    def _new_session(self) -> _Session:
        return _Session(
            endpoint=self.endpoint,
            where=self.where,
            settings=self.settings,
            logger=self.log,
            metrics=self.metrics,
            password=self._password,
            identity=self._identity,
            pki=self._pki,
            session_name=self._session_name,
        )

    async def open(self) -> None:
        """Join or open the session. Raises a DriverError naming this device."""
        if self._session is not None:
            return
        with self._as_mine():
            self._session = await session_pool().acquire(self._key(), self._new_session)

    async def close(self) -> None:
        """Leave the session; bounded, idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session_pool().release(session)

    @property
    def is_open(self) -> bool:
        return self._session is not None

    @property
    def is_lost(self) -> bool:
        return self._session is None or self._session.is_lost

    async def wait_lost(self, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` for the session to be lost; return why, or None if it lived."""
        if self._session is None:
            return "the connection is closed"
        return await self._session.wait_lost(timeout_s)

    def mark_lost(self, reason: str) -> str:
        """Record why the session is unusable (for every device on it) and wake ``wait_lost``."""
        if self._session is None:
            return reason
        return self._session.mark_lost(reason)

    def subscription_ended(self, group: str, status: str) -> str:
        return self._require().subscription_ended(group, status)

    async def probe(self) -> None:
        with self._as_mine():
            await self._require().probe(self.metrics)

    async def read(self, nodes: Sequence[NodeAddress]) -> list[DataSample]:
        with self._as_mine():
            return await self._require().read(nodes, self.metrics)

    async def resolve(
        self,
        addresses: Sequence[NodeAddress | tuple[BrowseStep, ...]],
        start: NodeAddress | None = None,
    ) -> list[Resolution]:
        with self._as_mine():
            return await self._require().resolve(addresses, self.metrics, start)

    async def namespaces(self) -> list[str]:
        with self._as_mine():
            return await self._require().namespaces(self.metrics)

    async def browse_objects(self, node: NodeAddress) -> list[BrowsedObject]:
        with self._as_mine():
            return await self._require().browse_objects(node, self.metrics)

    async def type_lineage(self, type_node: NodeAddress) -> list[tuple[int, str]]:
        with self._as_mine():
            return await self._require().type_lineage(type_node, self.metrics)

    async def subscribe(
        self,
        *,
        interval_ms: float,
        keepalive_count: int,
        lifetime_count: int,
        items: Sequence[MonitorItem],
        on_samples: Callable[[SampleBatch], None],
        on_status: Callable[[int, str], None],
    ) -> tuple[UaSubscription, list[tuple[int, str]]]:
        """See ``_Session.subscribe``; the caller's handles come back in ``on_samples``."""
        with self._as_mine():
            return await self._require().subscribe(
                interval_ms=interval_ms,
                keepalive_count=keepalive_count,
                lifetime_count=lifetime_count,
                items=items,
                on_samples=on_samples,
                on_status=on_status,
                metrics=self.metrics,
            )

    def _require(self) -> _Session:
        if self._session is None:
            raise DeviceUnreachableError(
                "not connected", where=self.where, hint="connect() first (the scheduler does)."
            )
        return self._session

    @contextlib.contextmanager
    def _as_mine(self) -> Iterator[None]:
        """Say this device where a shared session's error names the device that opened it."""
        try:
            yield
        except DriverError as exc:
            if exc.where == self.where:
                raise
            raise type(exc)(exc.what, where=self.where, hint=exc.hint) from exc.__cause__


class _PoolEntry:
    def __init__(self, session: _Session) -> None:
        self.session = session
        self.users = 0
        self.opening: asyncio.Future[None] = asyncio.ensure_future(session.open())


class SessionPool:
    """The shared OPC UA sessions of one event loop, by endpoint and settings, with users."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _PoolEntry] = {}
        self._users: dict[_Session, _PoolEntry] = {}

    async def acquire(self, key: Hashable, make: Callable[[], _Session]) -> _Session:
        """The open session for ``key``: a live one, the one being opened, or a new one.

        Raises:
            DriverError: opening failed (every device waiting on that open gets the error).
        """
        entry = self._entries.get(key)
        if entry is not None and entry.session.is_lost:
            del self._entries[key]  # it closes when its last user leaves; start afresh
            entry = None
        if entry is None:
            entry = self._entries[key] = _PoolEntry(make())
            self._users[entry.session] = entry
        entry.users += 1
        try:
            await asyncio.shield(entry.opening)
        except BaseException:
            await self._leave(entry)
            if self._entries.get(key) is entry and entry.opening.done():
                del self._entries[key]
            raise
        return entry.session

    async def release(self, session: _Session) -> None:
        """Leave a session; the last user's release closes it."""
        entry = self._users.get(session)
        if entry is not None:
            await self._leave(entry)

    async def _leave(self, entry: _PoolEntry) -> None:
        entry.users -= 1
        if entry.users > 0:
            return
        self._users.pop(entry.session, None)
        for key, value in list(self._entries.items()):
            if value is entry:
                del self._entries[key]
        if not entry.opening.done():
            entry.opening.cancel()
        await asyncio.gather(entry.opening, return_exceptions=True)
        await entry.session.close()

    def sessions(self) -> int:
        """Open (or opening) sessions, for tests and status."""
        return len(self._users)


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SessionPool] = (
    weakref.WeakKeyDictionary()
)


def session_pool() -> SessionPool:
    """The session pool of the running event loop (sessions cannot outlive their loop)."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = SessionPool()
    return pool


# -- conversions ---------------------------------------------------------------------------------


def _sample(value: ua.DataValue | None) -> DataSample:
    if value is None:
        return DataSample(None, StatusCodes.BadNoData, "BadNoData", None, None)
    status = value.StatusCode
    code = status.value if status is not None else StatusCodes.Good
    raw = value.Value.Value if value.Value is not None else None
    plain, problem = plain_value(raw)
    return DataSample(
        plain,
        code,
        status_name(code),
        _utc(value.SourceTimestamp),
        _utc(value.ServerTimestamp),
        problem,
    )


def plain_value(raw: object) -> tuple[RawValue, str | None]:
    """A value a signal can carry, or None and why not."""
    if raw is None or isinstance(raw, bool | str):
        return raw, None
    if isinstance(raw, enum.Enum):
        return (int(raw.value), None) if isinstance(raw.value, int) else (str(raw.name), None)
    if isinstance(raw, int):
        return raw, None
    if isinstance(raw, float):
        return (raw, None) if math.isfinite(raw) else (None, f"not a finite number ({raw})")
    if isinstance(raw, ua.LocalizedText):
        return raw.Text, None
    if isinstance(raw, ua.QualifiedName):
        return raw.Name, None
    if isinstance(raw, dt.datetime):
        return (_utc(raw) or raw).isoformat(), None
    if isinstance(raw, list | tuple):
        return None, "an array value; address a single element node instead"
    return None, f"a {type(raw).__name__} value, which a signal cannot carry"


def _utc(stamp: dt.datetime | None) -> dt.datetime | None:
    if stamp is None:
        return None
    return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp


def _to_ua_node_id(node: NodeAddress) -> ua.NodeId:
    namespace = ua.Int16(node.namespace)
    if node.kind == "i":
        return ua.NodeId(ua.Int32(node.identifier), namespace, ua.NodeIdType.Numeric)
    if node.kind == "s":
        return ua.NodeId(ua.String(node.identifier), namespace, ua.NodeIdType.String)
    if node.kind == "g":
        return ua.NodeId(ua.Guid(node.identifier), namespace, ua.NodeIdType.Guid)
    ident = ua.ByteString(base64.b64decode(node.identifier))
    return ua.NodeId(ident, namespace, ua.NodeIdType.ByteString)


def _from_ua_node_id(node: ua.NodeId) -> NodeAddress:
    ident: Any = node.Identifier
    kind = node.NodeIdType
    if kind in (ua.NodeIdType.TwoByte, ua.NodeIdType.FourByte, ua.NodeIdType.Numeric):
        return NodeAddress("i", str(ident), node.NamespaceIndex)
    if kind == ua.NodeIdType.Guid:
        return NodeAddress("g", str(ident), node.NamespaceIndex)
    if kind == ua.NodeIdType.ByteString:
        return NodeAddress("b", base64.b64encode(ident).decode("ascii"), node.NamespaceIndex)
    return NodeAddress("s", str(ident), node.NamespaceIndex)


def _resolve_namespace(address: NodeAddress, namespaces: list[str] | None) -> Resolution:
    if address.namespace_uri is None:
        return Resolution(address)
    if namespaces is not None and address.namespace_uri in namespaces:
        return Resolution(address.with_namespace(namespaces.index(address.namespace_uri)))
    return Resolution(None, f"namespace {address.namespace_uri!r} is not on this server")


def _browse_path(steps: tuple[BrowseStep, ...], origin: ua.NodeId = _ROOT) -> ua.BrowsePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=_HIERARCHICAL,
            IsInverse=False,  # type: ignore[arg-type]  # asyncua's ua.Boolean is a marker class
            IncludeSubtypes=True,  # type: ignore[arg-type]  # (see above)
            TargetName=ua.QualifiedName(step.name, step.namespace),
        )
        for step in steps
    ]
    return ua.BrowsePath(StartingNode=origin, RelativePath=ua.RelativePath(Elements=elements))


def _path_resolution(steps: tuple[BrowseStep, ...], result: ua.BrowsePathResult) -> Resolution:
    path = "/".join(str(s) for s in steps)
    code = result.StatusCode.value
    if not result.StatusCode.is_good() or not result.Targets:
        return Resolution(None, f"browse path {path} not found ({status_name(code)})")
    target = result.Targets[0].TargetId
    if getattr(target, "ServerIndex", 0) or getattr(target, "NamespaceUri", None):
        return Resolution(None, f"browse path {path} points to another server")
    return Resolution(_from_ua_node_id(target))


class _StartupKeepAliveFilter(logging.Filter):
    """Turns asyncua's "Received data for unknown subscription" warning into a DEBUG line (see
    the module docstring: it is the empty first keep-alive of a subscription being created)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Received data for unknown subscription"):
            _log.debug("asyncua: %s", record.getMessage())
            return False
        return True


_STARTUP_KEEPALIVE_FILTER = _StartupKeepAliveFilter()

_LOST_SESSION_CODES = {
    "BadSessionClosed",
    "BadSessionIdInvalid",
    "BadConnectionClosed",
    "BadCommunicationError",
    "BadSecureChannelClosed",
    "BadServerHalted",
    "BadShutdown",
}
PUBLISH_LOSS_REPEAT_S: float = 10.0
"""Within this long after one, a further publish-loop loss is logged at DEBUG only."""


class _PublishLoopLossFilter(logging.Filter):
    """Turns asyncua's ERROR "Publish iteration crashed; retrying in 1s" with a traceback, logged
    each second until the session is closed whenever a server restarts or the network drops, into
    one WARNING line without a traceback; repeats within ``PUBLISH_LOSS_REPEAT_S`` go to DEBUG.
    The scheduler reports the device disconnected (once) and reconnects. Any other exception in
    the publish loop (a bug, a malformed response) keeps asyncua's ERROR and traceback.

    Third-party server restarts (issue 12): 200 such tracebacks over 100 restarts, all of which
    recovered within 5 s."""

    def __init__(self) -> None:
        super().__init__()
        self._last_mono = -math.inf
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Publish iteration crashed") or not record.exc_info:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, UaStatusCodeError):
            if status_name(exc.code) not in _LOST_SESSION_CODES:
                return True
        elif not isinstance(exc, ConnectionError | TimeoutError | OSError):
            return True
        now = time.monotonic()
        if now - self._last_mono < PUBLISH_LOSS_REPEAT_S:
            self.suppressed += 1
            _log.debug("asyncua publish loop failed again: %s: %s", type(exc).__name__, exc)
        else:
            _log.warning(
                "OPC UA publish loop lost its connection (%s: %s); expected while a server "
                "restarts; the device reconnects",
                type(exc).__name__,
                exc,
            )
        self._last_mono = now
        return False


_PUBLISH_LOSS_FILTER = _PublishLoopLossFilter()


def _quiet_asyncua() -> None:
    session_log = logging.getLogger("asyncua.client.ua_session.UaSession")
    session_log.addFilter(_STARTUP_KEEPALIVE_FILTER)
    session_log.addFilter(_PUBLISH_LOSS_FILTER)


_quiet_asyncua()


def _first_certificate(der: bytes) -> bytes:
    """The leading certificate of a DER blob that may carry the whole chain (some servers send it)."""
    if len(der) < 4 or der[0] != 0x30:
        return der
    first = der[1]
    if first < 0x80:
        return der[: 2 + first]
    size_bytes = first & 0x7F
    length = int.from_bytes(der[2 : 2 + size_bytes], "big")
    return der[: 2 + size_bytes + length]


async def _stop_client_tasks(client: Client) -> None:
    """Cancel what asyncua may still run for this client and drop its socket."""
    client.uaclient.request_disconnect()
    tasks = [
        getattr(client, "_supervisor_task", None),
        getattr(client, "_stale_watchdog_task", None),
        getattr(client, "_renew_channel_task", None),
        getattr(client.uaclient.session, "_publish_task", None),
    ]
    live = [t for t in tasks if isinstance(t, asyncio.Task) and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live, timeout=_CLOSE_TIMEOUT_S)
    client.disconnect_socket()
