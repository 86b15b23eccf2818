"""OPC UA driver: subscriptions per group, a session watchdog, Basic256Sha256 and user identity.

Only the profile models are imported here, so validating a profile never loads asyncua; the
driver itself is ``gateway.drivers.opcua.driver:OpcUaDriver`` (see the registry).
"""

from gateway.drivers.opcua.models import (
    OpcUaProfile,
    OpcUaSettings,
    OpcUaSignal,
    SecurityMode,
    SecurityPolicy,
)

__all__ = ["OpcUaProfile", "OpcUaSettings", "OpcUaSignal", "SecurityMode", "SecurityPolicy"]
