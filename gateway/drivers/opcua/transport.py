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
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import enum
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
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
from asyncua.ua.uaerrors import UaError

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
    "DataSample",
    "MonitorItem",
    "Resolution",
    "UaConnection",
    "UaSubscription",
    "status_name",
]

RawValue = bool | int | float | str | None
SampleBatch = list[tuple[int, "DataSample"]]
_T = TypeVar("_T")

_CHUNK = 500
"""Nodes per Read / CreateMonitoredItems request; below every server limit we know of."""
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
class Resolution:
    """Where a configured address points on this server, or why it points nowhere."""

    node: NodeAddress | None
    problem: str | None = None


def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` for 0x80340000; the hex code when the name is unknown."""
    name = ua.StatusCode(ua.UInt32(code)).name
    return name if name else f"0x{code:08X}"


class UaConnection:
    """One client session to one server; every await is bounded by ``timeout_s``."""

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
        self._lost_reason: str | None = None
        self._is_closing = False
        self._node_ids: dict[NodeAddress, ua.NodeId] = {}

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
        except BaseException:
            await self.close()
            raise

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (remaining := deadline - loop.time()) > 0:
            try:
                state = await self._states.next_change(remaining)
            except TimeoutError:
                return None
            if self._lost_reason is not None:
                return self._lost_reason
            if state is not UaClientState.CONNECTED:
                return self.mark_lost("the connection to the server was lost")
        return None

    @property
    def is_lost(self) -> bool:
        return self._lost_reason is not None

    def mark_lost(self, reason: str) -> str:
        """Record why the session is unusable and wake ``wait_lost``."""
        if self._lost_reason is None:
            self._lost_reason = reason
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

    async def probe(self) -> None:
        """Read the server's state once; raise if it does not answer in time or is shutting down."""
        client = self._require_client()
        timeout_s = min(self.settings.timeout_s, self.settings.keepalive_s)
        state = await self._call(
            client.nodes.server_state.read_value(), "checking the server is alive", timeout_s
        )
        if state in _DEAD_SERVER_STATES:
            raise DeviceUnreachableError(
                f"the server reports state {ua.ServerState(state).name}", where=self.where
            )

    # -- services ------------------------------------------------------------------------------

    async def read(self, nodes: Sequence[NodeAddress]) -> list[DataSample]:
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
            values = await self._call(client.uaclient.read(params), "reading values")
            samples += [_sample(value) for value in values]
        return samples

    async def resolve(
        self, addresses: Sequence[NodeAddress | tuple[BrowseStep, ...]]
    ) -> list[Resolution]:
        """Turn configured addresses into this server's node ids (namespace URIs, browse paths)."""
        client = self._require_client()
        out: list[Resolution | None] = [None] * len(addresses)
        namespaces: list[str] | None = None
        if any(isinstance(a, NodeAddress) and a.namespace_uri for a in addresses):
            node = client.get_node(ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray)))
            namespaces = list(await self._call(node.read_value(), "reading the namespace array"))
        paths: list[tuple[int, tuple[BrowseStep, ...]]] = []
        for index, address in enumerate(addresses):
            if isinstance(address, NodeAddress):
                out[index] = _resolve_namespace(address, namespaces)
            else:
                paths.append((index, address))
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            results = await self._call(
                client.uaclient.translate_browsepaths_to_nodeids(
                    [_browse_path(p) for _, p in chunk]
                ),
                "resolving browse paths",
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
    ) -> tuple[UaSubscription, list[tuple[int, str]]]:
        """Create one subscription with a monitored item per entry of ``items``.

        Returns:
            The subscription and the items the server refused, as (handle, status name).
        """
        client = self._require_client()
        session = client.uaclient.session
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms,
            RequestedLifetimeCount=lifetime_count,
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        subscription = UaSubscription(self, on_samples, on_status)
        result = await self._call(
            session.create_subscription(params, subscription.on_publish), "creating a subscription"
        )
        subscription.started(result)
        refused: list[tuple[int, str]] = []
        try:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                create = ua.CreateMonitoredItemsParameters(
                    SubscriptionId=result.SubscriptionId,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=[self._monitored_item(item) for item in chunk],
                )
                results = await self._call(
                    session.create_monitored_items(create), "creating monitored items"
                )
                refused += [
                    (item.handle, status_name(res.StatusCode.value))
                    for item, res in zip(chunk, results, strict=True)
                    if not res.StatusCode.is_good()
                ]
        except BaseException:
            await subscription.delete()
            raise
        return subscription, refused

    def _monitored_item(self, item: MonitorItem) -> ua.MonitoredItemCreateRequest:
        parameters = ua.MonitoringParameters(
            ClientHandle=item.handle,
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

    async def delete_subscription(self, subscription_id: int) -> None:
        client = self._client
        if client is None or client.state is not UaClientState.CONNECTED:
            return  # the session (and its subscriptions) is gone or going anyway
        await self._call(
            client.uaclient.session.delete_subscriptions([subscription_id]),
            "deleting a subscription",
            timeout_s=min(self.settings.timeout_s, _CLOSE_TIMEOUT_S),
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
        self, awaitable: Awaitable[_T], action: str, timeout_s: float | None = None
    ) -> _T:
        """Await one asyncua operation within a time limit, mapping its errors to ours."""
        limit = self.settings.timeout_s if timeout_s is None else timeout_s
        self.metrics.requests += 1
        try:
            return await asyncio.wait_for(awaitable, limit)
        except DriverError:
            self.metrics.errors += 1
            raise
        except TimeoutError as exc:
            self.metrics.errors += 1
            # Each request waits timeout_s; a longer limit only bounds a multi-request step.
            waited = min(limit, self.settings.timeout_s)
            raise DeviceTimeoutError(
                f"no answer within {waited:g} s while {action}",
                where=self.where,
                hint="Check that the server is running and reachable, or raise timeout_s.",
            ) from exc
        except (OSError, UaError) as exc:
            self.metrics.errors += 1
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


class UaSubscription:
    """One server subscription; ``on_publish`` runs on the event loop inside asyncua's publish
    loop, so it converts and hands over a whole publish response at once and never blocks."""

    def __init__(
        self,
        connection: UaConnection,
        on_samples: Callable[[SampleBatch], None],
        on_status: Callable[[int, str], None],
    ) -> None:
        self._connection = connection
        self._on_samples = on_samples
        self._on_status = on_status
        self.subscription_id = 0
        self.interval_ms = 0.0
        self.keepalive_count = 0
        self.last_publish_mono = time.monotonic()
        self.notifications = 0
        self.is_deleted = False

    def started(self, result: ua.CreateSubscriptionResult) -> None:
        self.subscription_id = result.SubscriptionId
        self.interval_ms = float(result.RevisedPublishingInterval)
        self.keepalive_count = int(result.RevisedMaxKeepAliveCount)
        self.last_publish_mono = time.monotonic()

    @property
    def max_silence_s(self) -> float:
        """The longest the server may stay silent: one keep-alive period (data or not)."""
        return max(self.keepalive_count, 1) * self.interval_ms / 1000

    def on_publish(self, result: ua.PublishResult) -> None:
        self.last_publish_mono = time.monotonic()
        if self.is_deleted:
            return
        for notification in result.NotificationMessage.NotificationData or []:
            try:
                if isinstance(notification, ua.DataChangeNotification):
                    batch = [
                        (item.ClientHandle, _sample(item.Value))
                        for item in notification.MonitoredItems
                    ]
                    self.notifications += len(batch)
                    self._on_samples(batch)
                elif isinstance(notification, ua.StatusChangeNotification):
                    code = notification.Status.value
                    self._on_status(code, status_name(code))
            except Exception:  # one bad batch must not stop the publish loop
                self._connection.log.exception("handling a publish response failed")

    async def delete(self) -> None:
        """Delete it on the server (bounded); a dead session makes this a quiet no-op."""
        if self.is_deleted:
            return
        self.is_deleted = True
        if self.subscription_id:
            try:
                await self._connection.delete_subscription(self.subscription_id)
            except DriverError as exc:
                self._connection.log.debug("deleting subscription failed: %s", exc)


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


def _browse_path(steps: tuple[BrowseStep, ...]) -> ua.BrowsePath:
    elements = [
        ua.RelativePathElement(
            ReferenceTypeId=_HIERARCHICAL,
            IsInverse=False,  # type: ignore[arg-type]  # asyncua's ua.Boolean is a marker class
            IncludeSubtypes=True,  # type: ignore[arg-type]  # (see above)
            TargetName=ua.QualifiedName(step.name, step.namespace),
        )
        for step in steps
    ]
    return ua.BrowsePath(StartingNode=_ROOT, RelativePath=ua.RelativePath(Elements=elements))


def _path_resolution(steps: tuple[BrowseStep, ...], result: ua.BrowsePathResult) -> Resolution:
    path = "/".join(str(s) for s in steps)
    code = result.StatusCode.value
    if not result.StatusCode.is_good() or not result.Targets:
        return Resolution(None, f"browse path {path} not found ({status_name(code)})")
    target = result.Targets[0].TargetId
    if getattr(target, "ServerIndex", 0) or getattr(target, "NamespaceUri", None):
        return Resolution(None, f"browse path {path} points to another server")
    return Resolution(_from_ua_node_id(target))


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
