"""The ingest as a Sparkplug B host application: third-party edge nodes -> our decoded messages.

A mapping file (``sparkplug.mapping_file``, docs/sparkplug.md) says which Sparkplug group and edge
node is which enterprise and gateway, which Sparkplug device is which of our devices, and which
metric is which signal with what scaling. Nothing unmapped is guessed: it is dead-lettered with
the reason. ``SparkplugHost.route`` runs on the consumer's thread and turns each Sparkplug message
into the same decoded messages our own contract produces (``ingest.decode``), so the writer
stores them with its usual transaction, ledger and acknowledgement:

- NBIRTH -> the gateway online (boot ``spb-<bdSeq>``, its mapped devices registered); NDEATH with
  that bdSeq -> offline (an NDEATH of an older session is dropped, as an old boot's Will is).
- DBIRTH -> the device's alias table and datatypes, the device connected, and its values stored;
  DDEATH -> the device disconnected.
- NDATA/DDATA -> samples, by alias or name through the last birth, scaled, with the metric's own
  timestamp and quality (property ``Quality``).
- Births are kept in ``sparkplug_births`` (migration 0008), so a restarted ingest decodes at
  once; it still asks each node for a rebirth when it first hears from it again, in case a birth
  was published while it was away (births are QoS 0 by the spec, and a broker does not queue
  QoS 0 for an absent subscriber).
- Data that cannot be decoded (no birth known, or an alias the birth did not announce) is held
  unacknowledged while a rebirth is requested (NCMD ``Node Control/Rebirth``), then decoded after
  the birth; a ``seq`` gap also requests a rebirth (the data itself is stored). At most
  ``park_limit`` messages are held (half the broker's in-flight window by default: more would
  keep the broker from delivering the very birth they wait for); past it, and after ``PARK_S``,
  the oldest are dead-lettered (``sparkplug_undecodable``, payload prefix kept).

Exactly once: Sparkplug's ``seq`` is 0-255 and restarts at every birth, so it can only detect a
gap or reordering on one connection; it cannot name a message for ever. The ledger key of a
Sparkplug message is therefore its content: the mapped device and a 63-bit BLAKE2 hash of its
samples (signal, timestamp, value, quality). A redelivered message, or the same samples sent
again after a reconnect with a new ``seq`` or with ``is_historical``, is stored once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import psycopg

from ingest.decode import (
    Decoded,
    DeviceStatusMessage,
    GatewayStatusMessage,
    Incoming,
    Rejected,
    SampleRejection,
    TelemetryBatch,
    _check_samples,
)
from ingest.errors import ConfigError, Reason
from ingest.settings import LimitsSettings
from wire import sparkplug as spb
from wire.payloads import DeviceConnection, DeviceStatus, GatewayStatus, Quality, Sample
from wire.signals import lookup_signal
from wire.topics import Topic, TopicError, TopicKind, check_id

log = logging.getLogger(__name__)

NODE_DEVICE: Final = ""
"""The mapping's ``sparkplug`` name for an edge node's own metrics (NBIRTH/NDATA)."""
PARK_S: Final = 120.0
"""How long an undecodable message waits for a birth before it is dead-lettered."""


def subscriptions() -> list[str]:
    """Births, data and deaths of every group and node (not commands, not STATE)."""
    node = [f"{spb.NAMESPACE}/+/{t}/+" for t in ("NBIRTH", "NDATA", "NDEATH")]
    device = [f"{spb.NAMESPACE}/+/{t}/+/+" for t in ("DBIRTH", "DDATA", "DDEATH")]
    return node + device


# ------------------------------------------------------------------------------ mapping


@dataclass(frozen=True, slots=True)
class MetricMap:
    signal: str
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceMap:
    device: str
    metrics: dict[str, MetricMap]
    where: str


@dataclass(frozen=True, slots=True)
class NodeMap:
    group: str
    node: str
    enterprise: str
    gateway: str
    devices: dict[str, DeviceMap]
    where: str


@dataclass(frozen=True, slots=True)
class Mapping:
    file: str
    nodes: dict[tuple[str, str], NodeMap]


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file.

    Raises:
        ConfigError: every problem, as ``file:line: field: what``.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except (OSError, YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read the Sparkplug mapping: {exc}"]) from None
    problems: list[str] = []
    nodes: dict[tuple[str, str], NodeMap] = {}
    entries = data.get("edge_nodes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError([f"{path}:1: edge_nodes: missing; a list of edge node mappings"])
    for index, entry in enumerate(entries):
        node = _node(path, index, entry, problems)
        if node is None:
            continue
        key = (node.group, node.node)
        if key in nodes:
            problems.append(f"{node.where}: group/node {key[0]}/{key[1]} is mapped twice")
        nodes[key] = node
    if problems:
        raise ConfigError(problems)
    return Mapping(str(path), nodes)


def _line(node: Any, key: str | int, fallback: int = 0) -> int:
    try:
        return (
            int(node.lc.key(key)[0]) + 1 if isinstance(key, str) else int(node.lc.item(key)[0]) + 1
        )
    except (AttributeError, KeyError, IndexError, TypeError):
        return fallback


def _node(path: Path, index: int, entry: Any, problems: list[str]) -> NodeMap | None:
    at = f"edge_nodes[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{path}: {at}: not a mapping")
        return None
    base = _line(entry, "group", 1)

    def where(key: str) -> str:
        return f"{path}:{_line(entry, key, base)}: {at}.{key}"

    values: dict[str, str] = {}
    for key in ("group", "node", "enterprise", "gateway"):
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            problems.append(f"{where(key)}: missing")
            continue
        try:
            if key in ("group", "node"):
                spb.check_id(value, key)
            else:
                check_id(value, key)
        except (spb.SparkplugError, TopicError) as exc:
            problems.append(f"{where(key)}: {exc}")
            continue
        values[key] = value
    devices: dict[str, DeviceMap] = {}
    for d_index, device in enumerate(entry.get("devices") or []):
        mapped = _device(
            path, f"{at}.devices[{d_index}]", device, values.get("enterprise"), problems
        )
        if mapped is not None:
            sp_name, device_map = mapped
            if sp_name in devices:
                problems.append(f"{device_map.where}: Sparkplug device {sp_name!r} is mapped twice")
            devices[sp_name] = device_map
    if len(values) < 4:
        return None
    return NodeMap(
        values["group"],
        values["node"],
        values["enterprise"],
        values["gateway"],
        devices,
        where("group"),
    )


def _device(
    path: Path, at: str, entry: Any, enterprise: str | None, problems: list[str]
) -> tuple[str, DeviceMap] | None:
    if not isinstance(entry, dict):
        problems.append(f"{path}: {at}: not a mapping")
        return None
    base = _line(entry, "sparkplug", 1)

    def where(key: str) -> str:
        return f"{path}:{_line(entry, key, base)}: {at}.{key}"

    sp_name = entry.get("sparkplug")
    target = entry.get("device")
    if not isinstance(sp_name, str):
        problems.append(
            f"{where('sparkplug')}: missing (the Sparkplug device id; '' for the node's own metrics)"
        )
        return None
    if not isinstance(target, str) or not target:
        problems.append(f"{where('device')}: missing (our device id)")
        return None
    if "/" in target:
        owner, target = target.split("/", 1)
        if enterprise is not None and owner != enterprise:
            problems.append(
                f"{where('device')}: {owner}/{target} belongs to enterprise {owner!r}, but this "
                f"edge node belongs to {enterprise!r}; a mapping can only route into its own "
                "enterprise"
            )
            return None
    try:
        check_id(target, "device")
    except TopicError as exc:
        problems.append(f"{where('device')}: {exc}")
        return None
    metrics: dict[str, MetricMap] = {}
    raw_metrics = entry.get("metrics") or {}
    if not isinstance(raw_metrics, dict):
        problems.append(f"{where('metrics')}: a mapping of Sparkplug metric name -> signal")
        return None
    for name, spec in raw_metrics.items():
        here = f"{path}:{_line(raw_metrics, name, base)}: {at}.metrics[{name!r}]"
        if isinstance(spec, str):
            spec = {"signal": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("signal"), str):
            problems.append(f"{here}: give a signal name, or {{signal, scale, offset}}")
            continue
        unknown = set(spec) - {"signal", "scale", "offset"}
        if unknown:
            problems.append(f"{here}: unknown field(s) {', '.join(sorted(unknown))}")
            continue
        if lookup_signal(spec["signal"]) is None:
            problems.append(f"{here}.signal: {spec['signal']!r} is not in wire.signals")
            continue
        try:
            metrics[str(name)] = MetricMap(
                spec["signal"], float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0))
            )
        except (TypeError, ValueError):
            problems.append(f"{here}: scale and offset must be numbers")
    return sp_name, DeviceMap(target, metrics, where("device"))


def check_tenancy(mapping: Mapping, conn: psycopg.Connection) -> None:
    """Refuse a mapping that would route into another enterprise's registered device or gateway.

    Raises:
        ConfigError: naming the file, line and field.
    """
    problems: list[str] = []

    def owners(table: str, column: str, ident: str) -> set[str]:
        query = f"SELECT enterprise_id FROM {table} WHERE {column} = %s"  # fixed names only
        return {row[0] for row in conn.execute(query, (ident,)).fetchall()}

    for node in mapping.nodes.values():
        gateway_owners = owners("gateways", "id", node.gateway)
        if gateway_owners and node.enterprise not in gateway_owners:
            problems.append(
                f"{node.where}: gateway {node.gateway!r} is registered to enterprise "
                f"{', '.join(sorted(gateway_owners))}, not {node.enterprise!r}"
            )
        for device in node.devices.values():
            device_owners = owners("devices", "device_id", device.device)
            if device_owners and node.enterprise not in device_owners:
                problems.append(
                    f"{device.where}: device {device.device!r} is registered to enterprise "
                    f"{', '.join(sorted(device_owners))}, not to {node.enterprise!r} (the enterprise of "
                    f"edge node {node.group}/{node.node}); a mapping can only route into its own "
                    "enterprise"
                )
    if problems:
        raise ConfigError(problems)


# -------------------------------------------------------------------------- the host


@dataclass(slots=True)
class _Birth:
    names: dict[int, str] = field(default_factory=dict)
    """alias -> metric name"""
    types: dict[str, int] = field(default_factory=dict)
    """metric name -> datatype"""


@dataclass(slots=True)
class _NodeState:
    bdseq: int | None = None
    seq: int | None = None
    births: dict[str, _Birth] = field(default_factory=dict)
    """Sparkplug device ('' = the node itself) -> its birth."""
    parked: list[tuple[float, Incoming]] = field(default_factory=list)
    rebirth_asked_mono: float = -1e9
    unconfirmed: bool = False
    """Births loaded from the database: ask for a rebirth when the node is next heard."""


class BirthStore:
    """``sparkplug_births``: the births followed, kept across ingest restarts.

    Writing is best effort: a birth that cannot be saved (the database is away) is still followed
    in memory, and an ingest restarted without it asks the node for a rebirth."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def save(self, group: str, node: str, device: str, bdseq: int, birth: _Birth) -> None:
        self._best_effort(
            f"keep the Sparkplug birth of {group}/{node}/{device}",
            lambda: self._save(group, node, device, bdseq, birth),
        )

    def forget(self, group: str, node: str, device: str | None = None) -> None:
        self._best_effort(
            f"drop the Sparkplug births of {group}/{node}",
            lambda: self._forget(group, node, device),
        )

    @staticmethod
    def _best_effort(what: str, work: Callable[[], None]) -> None:
        try:
            work()
        except psycopg.Error as exc:  # psycopg_pool.PoolTimeout included
            log.warning("could not %s: %s", what, exc)

    def load(self) -> dict[tuple[str, str], _NodeState]:
        nodes: dict[tuple[str, str], _NodeState] = {}
        with self.pool.connection() as conn:
            found = conn.execute(
                "SELECT group_id, node_id, device, bdseq, aliases, datatypes FROM sparkplug_births"
            ).fetchall()
        for group, node, device, bdseq, aliases, datatypes in found:
            state = nodes.setdefault((group, node), _NodeState(bdseq=bdseq, unconfirmed=True))
            names = {int(alias): name for alias, name in aliases.items()}
            state.births[device] = _Birth(names, dict(datatypes))
        return nodes

    def _save(self, group: str, node: str, device: str, bdseq: int, birth: _Birth) -> None:
        from psycopg.types.json import Jsonb

        with self.pool.connection() as conn:
            if device == NODE_DEVICE:  # a new node birth voids every device birth before it
                conn.execute(
                    "DELETE FROM sparkplug_births WHERE group_id = %s AND node_id = %s",
                    (group, node),
                )
            conn.execute(
                """INSERT INTO sparkplug_births (group_id, node_id, device, bdseq, aliases, datatypes)
                   VALUES (%s, %s, %s, %s, %s, %s)
                   ON CONFLICT (group_id, node_id, device) DO UPDATE SET bdseq = EXCLUDED.bdseq,
                       aliases = EXCLUDED.aliases, datatypes = EXCLUDED.datatypes, born_at = now()""",
                (
                    group,
                    node,
                    device,
                    bdseq,
                    Jsonb({str(a): n for a, n in birth.names.items()}),
                    Jsonb(birth.types),
                ),
            )

    def _forget(self, group: str, node: str, device: str | None) -> None:
        with self.pool.connection() as conn:
            if device is None:
                conn.execute(
                    "DELETE FROM sparkplug_births WHERE group_id = %s AND node_id = %s",
                    (group, node),
                )
            else:
                conn.execute(
                    "DELETE FROM sparkplug_births WHERE group_id = %s AND node_id = %s "
                    "AND device = %s",
                    (group, node, device),
                )


class SparkplugHost:
    """Follows every mapped edge node's births and turns its messages into decoded ones."""

    def __init__(
        self,
        mapping: Mapping,
        limits: LimitsSettings,
        publish: Callable[[str, bytes], None],
        *,
        rebirth_interval_s: float = 5.0,
        park_limit: int = 500,
        store: BirthStore | None = None,
    ) -> None:
        self.mapping = mapping
        self.limits = limits
        self.publish = publish
        self.rebirth_interval_s = rebirth_interval_s
        self.park_limit = park_limit
        self.store = store
        self.nodes: dict[tuple[str, str], _NodeState] = store.load() if store else {}
        self.parked = 0
        self.rebirths_requested = 0
        self._lock = threading.Lock()

    def route(self, incoming: Incoming) -> list[Incoming]:
        """The messages to hand to the writer, each with its decoded form; the last one of a
        message carries its acknowledgement. Held messages come back after their birth."""
        with self._lock:
            now = time.monotonic()
            out = self._expire_parked(now)
            out += self._route(incoming, now)
            return out

    def _route(self, incoming: Incoming, now: float, *, replay: bool = False) -> list[Incoming]:
        try:
            topic = spb.parse_topic(incoming.topic)
        except spb.SparkplugError as exc:
            return [_with(incoming, Rejected(Reason.UNKNOWN_TOPIC, str(exc)))]
        node_map = self.mapping.nodes.get((topic.group, topic.node))
        if node_map is None:
            return [
                _with(
                    incoming,
                    Rejected(
                        Reason.SPARKPLUG_UNMAPPED,
                        f"edge node {topic.group}/{topic.node} is not in the Sparkplug mapping "
                        f"{self.mapping.file}",
                    ),
                )
            ]
        try:
            payload = spb.decode_payload(incoming.payload)
        except spb.SparkplugError as exc:
            self._ask_rebirth(topic, now)
            return [
                _with(incoming, Rejected(Reason.SPARKPLUG_UNDECODABLE, str(exc), _tel(node_map)))
            ]
        state = self.nodes.setdefault((topic.group, topic.node), _NodeState())
        if state.unconfirmed:
            state.unconfirmed = False
            self._ask_rebirth(topic, now)
        kind = topic.type
        if kind is spb.MessageType.NBIRTH:
            return self._nbirth(incoming, topic, node_map, state, payload, now)
        if kind is spb.MessageType.NDEATH:
            return self._ndeath(incoming, node_map, state, payload)
        device = topic.device if topic.device is not None else NODE_DEVICE
        if kind is spb.MessageType.DDEATH:
            if state.births.pop(device, None) is not None and self.store is not None:
                self.store.forget(topic.group, topic.node, device)
            self._check_seq(topic, state, payload, now)
            return [_with(incoming, self._device_status(node_map, device, payload, False))]
        if state.bdseq is None or (kind is spb.MessageType.DDATA and device not in state.births):
            return self._park(incoming, topic, state, now)
        if kind is spb.MessageType.DBIRTH:
            self._check_seq(topic, state, payload, now)
            return self._dbirth(incoming, node_map, state, device, payload, now)
        if not replay:
            self._check_seq(topic, state, payload, now)
        decoded = self._data(node_map, state, device, payload)
        if decoded is None:  # an alias no birth announced: the birth we have is stale
            return self._park(incoming, topic, state, now)
        return [_with(incoming, decoded)]

    # ------------------------------------------------------------------ births

    def _nbirth(
        self,
        incoming: Incoming,
        topic: spb.Topic,
        node_map: NodeMap,
        state: _NodeState,
        payload: Any,
        now: float,
    ) -> list[Incoming]:
        bdseq = _bdseq(payload)
        state.bdseq = bdseq if bdseq is not None else -1
        state.seq = payload.seq if payload.HasField("seq") else 0
        state.births = {NODE_DEVICE: _birth_of(payload)}
        if self.store is not None:
            self.store.save(
                topic.group, topic.node, NODE_DEVICE, state.bdseq, state.births[NODE_DEVICE]
            )
        status = GatewayStatus(
            gateway=node_map.gateway,
            enterprise=node_map.enterprise,
            online=True,
            boot=f"spb-{state.bdseq}",
            ts_ms=payload.timestamp or incoming.received_ms,
            version="sparkplug-b",
            devices=sorted({d.device for d in node_map.devices.values()}),
        )
        out = [
            _with(
                incoming, GatewayStatusMessage(_topic(node_map, TopicKind.GATEWAY_STATUS), status)
            )
        ]
        node_values = self._data(node_map, state, NODE_DEVICE, payload)
        if node_values is not None and NODE_DEVICE in node_map.devices:
            out = [replace(out[0], qos=0), _with(incoming, node_values)]
        log.info("Sparkplug NBIRTH from %s/%s (bdSeq %s)", topic.group, topic.node, state.bdseq)
        return out + self._unpark(
            state, now, lambda i: "/NDATA/" in i.topic or "/DBIRTH/" in i.topic
        )

    def _dbirth(
        self,
        incoming: Incoming,
        node_map: NodeMap,
        state: _NodeState,
        device: str,
        payload: Any,
        now: float,
    ) -> list[Incoming]:
        state.births[device] = _birth_of(payload)
        if self.store is not None and state.bdseq is not None:
            self.store.save(
                node_map.group, node_map.node, device, state.bdseq, state.births[device]
            )
        status = self._device_status(node_map, device, payload, True)
        values = self._data(node_map, state, device, payload, births_only=True)
        out = [_with(incoming, status)]
        if isinstance(status, DeviceStatusMessage) and isinstance(values, TelemetryBatch):
            out = [replace(out[0], qos=0), _with(incoming, values)]
        return out + self._unpark(state, now, lambda i: i.topic.endswith(f"/{device}"))

    def _ndeath(
        self, incoming: Incoming, node_map: NodeMap, state: _NodeState, payload: Any
    ) -> list[Incoming]:
        bdseq = _bdseq(payload)
        if state.bdseq is not None and bdseq == state.bdseq:
            state.bdseq, state.seq = None, None
            state.births.clear()
            if self.store is not None:
                self.store.forget(node_map.group, node_map.node)
        status = GatewayStatus(
            gateway=node_map.gateway,
            enterprise=node_map.enterprise,
            online=False,
            boot=f"spb-{bdseq if bdseq is not None else -1}",
            ts_ms=payload.timestamp or incoming.received_ms,
            version="sparkplug-b",
            will=True,
        )
        return [
            _with(
                incoming, GatewayStatusMessage(_topic(node_map, TopicKind.GATEWAY_STATUS), status)
            )
        ]

    def _device_status(self, node_map: NodeMap, device: str, payload: Any, online: bool) -> Decoded:
        device_map = node_map.devices.get(device)
        if device_map is None:
            return Rejected(
                Reason.SPARKPLUG_UNMAPPED,
                f"Sparkplug device {device!r} of edge node {node_map.group}/{node_map.node} is "
                f"not in the mapping {self.mapping.file}",
                _tel(node_map),
            )
        status = DeviceStatus(
            gateway=node_map.gateway,
            device=device_map.device,
            connection=DeviceConnection.CONNECTED if online else DeviceConnection.DISCONNECTED,
            ts_ms=payload.timestamp or int(time.time() * 1000),
            profile="sparkplug-b",
        )
        return DeviceStatusMessage(
            _topic(node_map, TopicKind.DEVICE_STATUS, device_map.device), status
        )

    # -------------------------------------------------------------------- data

    def _data(
        self,
        node_map: NodeMap,
        state: _NodeState,
        device: str,
        payload: Any,
        *,
        births_only: bool = False,
    ) -> TelemetryBatch | Rejected | None:
        """The payload's metrics as a telemetry batch; None when an alias is unknown."""
        device_map = node_map.devices.get(device)
        if device_map is None:
            what = (
                "the node's own metrics (sparkplug: '')"
                if device == NODE_DEVICE
                else f"Sparkplug device {device!r}"
            )
            return Rejected(
                Reason.SPARKPLUG_UNMAPPED,
                f"{what} of edge node {node_map.group}/{node_map.node} is not in the mapping "
                f"{self.mapping.file}",
                _tel(node_map),
            )
        birth = state.births.get(device, _Birth())
        samples: list[tuple[int, Sample]] = []
        rejections: list[SampleRejection] = []
        historical = False
        for index, metric in enumerate(payload.metrics):
            name = metric.name if metric.HasField("name") else birth.names.get(metric.alias)
            if name is None:
                return None
            if name in (spb.BDSEQ, spb.REBIRTH) or name.startswith("Node Control/"):
                continue
            mapped = device_map.metrics.get(name)
            if mapped is None:
                if not (births_only and metric.is_null):
                    rejections.append(
                        SampleRejection(
                            index,
                            Reason.SPARKPLUG_UNMAPPED,
                            f"metric {name!r} of {node_map.group}/{node_map.node}/{device} is not "
                            "mapped to a signal",
                        )
                    )
                continue
            if births_only and metric.is_null:
                continue  # a birth announcing a metric without a current value
            datatype = metric.datatype or birth.types.get(name, 0)
            try:
                value = _scaled(spb.metric_value(metric, datatype), mapped)
            except spb.SparkplugError as exc:
                rejections.append(SampleRejection(index, Reason.INVALID_SAMPLE, f"{name}: {exc}"))
                continue
            props = spb.properties(metric)
            code = props.get(spb.QUALITY)
            quality = spb.quality_of(int(code)) if isinstance(code, int | float) else "good"
            ts_ms = int(metric.timestamp or payload.timestamp)
            historical = historical or metric.is_historical
            try:
                samples.append(
                    (
                        index,
                        Sample(
                            device=device_map.device,
                            signal=mapped.signal,
                            ts_ms=ts_ms,
                            value=value,
                            quality=Quality(quality),
                        ),
                    )
                )
            except ValueError as exc:
                rejections.append(SampleRejection(index, Reason.INVALID_SAMPLE, f"{name}: {exc}"))
        good, more = _check_samples(samples, self.limits, int(time.time() * 1000))
        rejections.extend(more)
        rejections.sort(key=lambda r: r.index)
        return TelemetryBatch(
            _topic(node_map, TopicKind.TELEMETRY),
            node_map.gateway,
            f"sparkplug:{device_map.device}",
            _content_key(device_map.device, good),
            historical,
            good,
            rejections,
            len(payload.metrics),
        )

    # ------------------------------------------------- sequence, parking, rebirth

    def _check_seq(self, topic: spb.Topic, state: _NodeState, payload: Any, now: float) -> None:
        if not payload.HasField("seq"):
            return
        seq = int(payload.seq)
        expected = spb.next_seq(state.seq) if state.seq is not None else seq
        state.seq = seq
        if seq != expected:
            log.warning(
                "Sparkplug seq gap from %s/%s: expected %d, got %d; requesting a rebirth",
                topic.group,
                topic.node,
                expected,
                seq,
            )
            self._ask_rebirth(topic, now)

    def _park(
        self, incoming: Incoming, topic: spb.Topic, state: _NodeState, now: float
    ) -> list[Incoming]:
        self._ask_rebirth(topic, now)
        state.parked.append((now, incoming))
        self.parked += 1
        out: list[Incoming] = []
        while self.parked > self.park_limit:
            oldest = min((s for s in self.nodes.values() if s.parked), key=lambda s: s.parked[0][0])
            _, held = oldest.parked.pop(0)
            self.parked -= 1
            out.append(
                _with(
                    held,
                    Rejected(
                        Reason.SPARKPLUG_UNDECODABLE,
                        f"no birth from {topic.group}/{topic.node} to decode its aliases, and "
                        f"{self.park_limit} messages already wait for births (holding more would "
                        "keep the broker from delivering them)",
                    ),
                )
            )
        return out

    def _unpark(
        self, state: _NodeState, now: float, belongs: Callable[[Incoming], bool]
    ) -> list[Incoming]:
        ready = [i for _, i in state.parked if belongs(i)]
        if not ready:
            return []
        state.parked = [(t, i) for t, i in state.parked if not belongs(i)]
        self.parked -= len(ready)
        out: list[Incoming] = []
        for incoming in ready:
            out += self._route(incoming, now, replay=True)
        return out

    def _expire_parked(self, now: float) -> list[Incoming]:
        out: list[Incoming] = []
        for (group, node), state in self.nodes.items():
            if state.parked and now - state.parked[0][0] > PARK_S:
                old = [i for t, i in state.parked if now - t > PARK_S]
                state.parked = [(t, i) for t, i in state.parked if now - t <= PARK_S]
                self.parked -= len(old)
                for incoming in old:
                    out.append(
                        _with(
                            incoming,
                            Rejected(
                                Reason.SPARKPLUG_UNDECODABLE,
                                f"no birth from {group}/{node} within {PARK_S:.0f} s to decode "
                                "this message's aliases (rebirth requested)",
                            ),
                        )
                    )
        return out

    def _ask_rebirth(self, topic: spb.Topic, now: float) -> None:
        state = self.nodes.setdefault((topic.group, topic.node), _NodeState())
        if now - state.rebirth_asked_mono < self.rebirth_interval_s:
            return
        state.rebirth_asked_mono = now
        self.rebirths_requested += 1
        metric = spb.MetricOut(spb.DataType.BOOLEAN, True, name=spb.REBIRTH)
        body = spb.encode_payload(int(time.time() * 1000), [metric])
        log.info("requesting a rebirth from %s/%s", topic.group, topic.node)
        self.publish(spb.node_topic(topic.group, spb.MessageType.NCMD, topic.node), body)


def _with(incoming: Incoming, decoded: Decoded) -> Incoming:
    return replace(incoming, predecoded=decoded)


def _topic(node_map: NodeMap, kind: TopicKind, device: str | None = None) -> Topic:
    return Topic(kind, node_map.enterprise, node_map.gateway, device)


def _tel(node_map: NodeMap) -> Topic:
    return _topic(node_map, TopicKind.TELEMETRY)


def _bdseq(payload: Any) -> int | None:
    for metric in payload.metrics:
        if metric.name == spb.BDSEQ:
            value = spb.metric_value(metric, metric.datatype or spb.DataType.INT64)
            return int(value) if isinstance(value, int | float) else None
    return None


def _birth_of(payload: Any) -> _Birth:
    birth = _Birth()
    for metric in payload.metrics:
        if metric.HasField("alias"):
            birth.names[metric.alias] = metric.name
        birth.types[metric.name] = metric.datatype
    return birth


def _scaled(value: spb.Value, mapped: MetricMap) -> spb.Value:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if mapped.scale == 1.0 and mapped.offset == 0.0:
        return value
    return value * mapped.scale + mapped.offset


def _content_key(device: str, samples: list[Any]) -> int:
    """The ledger seq of a Sparkplug message: a 63-bit hash of what it stores."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(device.encode())
    for _index, _device, signal, ts_ms, value, quality in samples:
        digest.update(f"\x00{signal}\x00{ts_ms}\x00{value!r}\x00{quality}".encode())
    return int.from_bytes(digest.digest(), "big") & 0x7FFF_FFFF_FFFF_FFFF or 1
