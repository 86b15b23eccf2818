"""Build and parse every MQTT topic of the v1 namespace; no other module spells a topic.

Layout (``{e}`` enterprise id, ``{g}`` gateway id, ``{d}`` device id)::

    shulian/v1/{e}/{g}/telemetry            Batch, QoS 1, not retained
    shulian/v1/{e}/{g}/status               GatewayStatus, QoS 1, retained; also the Last Will
    shulian/v1/{e}/{g}/devices/{d}/status   DeviceStatus, QoS 1, retained
    shulian/v1/{e}/{g}/metrics              GatewayMetrics, QoS 0, not retained
    shulian/v1/{e}/{g}/config               ConfigBundle, cloud -> gateway, QoS 1, retained
    shulian/v1/{e}/{g}/config/report        ConfigReport, gateway -> cloud, QoS 1, not retained

Enterprise and gateway sit in the topic so a broker ACL pattern (``shulian/v1/%u/...``-style) can
confine a gateway's credentials to its own subtree. A major wire version gets a new namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

NAMESPACE: Final = "shulian/v1"
ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
_ID_RE: Final = re.compile(rf"^{ID_PATTERN}$")


class TopicError(ValueError):
    """A topic that is not ours, or an id that cannot be a topic level."""


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    GATEWAY_STATUS = "status"
    DEVICE_STATUS = "device_status"
    METRICS = "metrics"
    CONFIG = "config"
    CONFIG_REPORT = "config_report"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: which kind of message, and whose."""

    kind: TopicKind
    enterprise: str
    gateway: str
    device: str | None = None

    def __str__(self) -> str:
        base = f"{NAMESPACE}/{self.enterprise}/{self.gateway}"
        if self.kind is TopicKind.DEVICE_STATUS:
            return f"{base}/devices/{self.device}/status"
        if self.kind is TopicKind.CONFIG_REPORT:
            return f"{base}/config/report"
        return f"{base}/{self.kind.value}"


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it can be a topic level, else raise naming ``what`` was wrong."""
    if not _ID_RE.match(value):
        raise TopicError(
            f"{what} {value!r} is not a valid id: use 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit (no '/', '+', '#', spaces)"
        )
    return value


def telemetry(enterprise: str, gateway: str) -> str:
    return str(
        Topic(TopicKind.TELEMETRY, check_id(enterprise, "enterprise"), check_id(gateway, "gateway"))
    )


def gateway_status(enterprise: str, gateway: str) -> str:
    return str(
        Topic(
            TopicKind.GATEWAY_STATUS,
            check_id(enterprise, "enterprise"),
            check_id(gateway, "gateway"),
        )
    )


def device_status(enterprise: str, gateway: str, device: str) -> str:
    return str(
        Topic(
            TopicKind.DEVICE_STATUS,
            check_id(enterprise, "enterprise"),
            check_id(gateway, "gateway"),
            check_id(device, "device"),
        )
    )


def metrics(enterprise: str, gateway: str) -> str:
    return str(
        Topic(TopicKind.METRICS, check_id(enterprise, "enterprise"), check_id(gateway, "gateway"))
    )


def config(enterprise: str, gateway: str) -> str:
    """The gateway's own configuration topic: the cloud publishes its assigned bundle, retained."""
    return str(
        Topic(TopicKind.CONFIG, check_id(enterprise, "enterprise"), check_id(gateway, "gateway"))
    )


def config_report(enterprise: str, gateway: str) -> str:
    """Where the gateway answers applied or refused about a delivered configuration."""
    return str(
        Topic(
            TopicKind.CONFIG_REPORT,
            check_id(enterprise, "enterprise"),
            check_id(gateway, "gateway"),
        )
    )


def subscription(kind: TopicKind, share_group: str | None = None) -> str:
    """The wildcard filter for every enterprise's and gateway's topics of one kind.

    With ``share_group`` the filter is an MQTT 5 shared subscription, so several ingest workers
    split the messages between them.
    """
    if kind is TopicKind.DEVICE_STATUS:
        flt = f"{NAMESPACE}/+/+/devices/+/status"
    elif kind is TopicKind.CONFIG_REPORT:
        flt = f"{NAMESPACE}/+/+/config/report"
    else:
        flt = f"{NAMESPACE}/+/+/{kind.value}"
    if share_group:
        return f"$share/{check_id(share_group, 'share group')}/{flt}"
    return flt


def parse_topic(topic: str) -> Topic:
    """Parse one of our topics; raise TopicError saying why ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != NAMESPACE:
        raise TopicError(f"topic {topic!r} is not under {NAMESPACE}/")
    enterprise, gateway = parts[2], parts[3]
    check_id(enterprise, "enterprise")
    check_id(gateway, "gateway")
    rest = parts[4:]
    if rest == ["telemetry"]:
        return Topic(TopicKind.TELEMETRY, enterprise, gateway)
    if rest == ["status"]:
        return Topic(TopicKind.GATEWAY_STATUS, enterprise, gateway)
    if rest == ["metrics"]:
        return Topic(TopicKind.METRICS, enterprise, gateway)
    if rest == ["config"]:
        return Topic(TopicKind.CONFIG, enterprise, gateway)
    if rest == ["config", "report"]:
        return Topic(TopicKind.CONFIG_REPORT, enterprise, gateway)
    if len(rest) == 3 and rest[0] == "devices" and rest[2] == "status":
        return Topic(TopicKind.DEVICE_STATUS, enterprise, gateway, check_id(rest[1], "device"))
    raise TopicError(f"topic {topic!r}: unknown message kind {'/'.join(rest)!r}")
