"""Who may see what: the single place that decides each role's access to each kind of data.

Capabilities, by role (docs/monitoring.md has the full matrix with the endpoints):

============  ===========  ==================  =============  ===========  ======  =====  ========  ========
role          city KPIs    enterprise summary  device status  device data  import  grant  evidence  baseline
============  ===========  ==================  =============  ===========  ======  =====  ========  ========
admin         yes          any                 any            any          yes     no     any       any
bureau        yes          any                 if granted     if granted   yes     no     any       no
enterprise    no           own                 own            own          no      own    own       no
provider      no           no                  served         no           no      no     served    served
============  ===========  ==================  =============  ===========  ======  =====  ========  ========

Evidence (the before/after report, monitoring/evidence.py) is summary-level data: the bureau reads it
for every enterprise, but the devices behind it only where device status is allowed (a grant).
A baseline is entered from the pre-transformation diagnosis by admin or the enterprise's own
service provider, who made the diagnosis; the enterprise itself cannot set the bar it is judged by.

A service provider's page (``/provider``, ``/api/providers/{id}``: the enterprises that chose it,
with the status of their gateways and devices) is for that provider's tokens and admin; another
provider gets 404, the bureau and enterprises 403.

Remote configuration (``CONFIG_READ``, ``CONFIG_ASSIGN``, ``CONFIG_REFUSE``; docs/remote-config.md):
the serving provider reads and assigns, the enterprise reads and refuses its own, the bureau reads
only where granted, admin reads and assigns everywhere but refuses nothing.

Denials answer 403 when the caller may know the enterprise exists (a bureau asking for device data
that was not granted, an enterprise asking for city KPIs) and 404 when it may not (an enterprise
asking for another enterprise's device gets the same answer as for a device that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from monitoring.auth import Principal, Role


class Capability(StrEnum):
    CITY_KPIS = "city_kpis"
    """Overview, segments, districts, trends across enterprises, the daily export."""
    ENTERPRISE_SUMMARY = "enterprise_summary"
    """An enterprise's KPIs (networked rate, output, energy, warning colour)."""
    DEVICE_STATUS = "device_status"
    """Devices, gateways and profiles of an enterprise with connection and machine state."""
    DEVICE_DATA = "device_data"
    """A device's KPIs, signal values, series and state timeline."""
    IMPORT = "import"
    """CSV import of enterprises and devices."""
    GRANT = "grant"
    """Granting or withdrawing the bureau's access to device data."""
    EVIDENCE = "evidence"
    """An enterprise's before/after evidence: go-live, baseline, monthly figures, its report."""
    BASELINE = "baseline"
    """Entering an enterprise's before/after baseline (from its pre-transformation diagnosis)."""
    CONFIG_READ = "config_read"
    """Remote configuration of an enterprise's gateways: assignments, their audit log, reports."""
    CONFIG_ASSIGN = "config_assign"
    """Assigning configuration versions to an enterprise's gateways (docs/remote-config.md)."""
    CONFIG_REFUSE = "config_refuse"
    """Refusing an assignment the enterprise's provider made."""


@dataclass(frozen=True, slots=True)
class Reach:
    """Facts about the caller's relation to enterprises, loaded once per request."""

    served: frozenset[str] = field(default_factory=frozenset)
    """Enterprises a provider serves."""
    granted: frozenset[str] = field(default_factory=frozenset)
    """Enterprises that granted the bureau their device data."""


_CITY_ROLES = {Role.ADMIN, Role.BUREAU}


def can(principal: Principal, capability: Capability, enterprise: str | None, reach: Reach) -> bool:
    """Whether ``principal`` has ``capability`` (on ``enterprise`` when it is per enterprise)."""
    role = principal.role
    if role is Role.ADMIN:
        return capability not in (Capability.GRANT, Capability.CONFIG_REFUSE)
    if capability in (Capability.CITY_KPIS, Capability.IMPORT):
        return role in _CITY_ROLES
    if capability in _CONFIG:
        return _config_allowed(principal, capability, enterprise, reach)
    if capability is Capability.BASELINE:
        return role is Role.PROVIDER and enterprise in reach.served
    if capability is Capability.EVIDENCE and role is Role.PROVIDER:
        return enterprise in reach.served
    if role is Role.BUREAU:
        if capability in (Capability.ENTERPRISE_SUMMARY, Capability.EVIDENCE):
            return True
        if capability in (Capability.DEVICE_STATUS, Capability.DEVICE_DATA):
            return enterprise in reach.granted
        return False
    if role is Role.ENTERPRISE:
        return enterprise is not None and enterprise == principal.enterprise
    if role is Role.PROVIDER:
        return capability is Capability.DEVICE_STATUS and enterprise in reach.served
    return False


_CONFIG = {Capability.CONFIG_READ, Capability.CONFIG_ASSIGN, Capability.CONFIG_REFUSE}


def _config_allowed(
    principal: Principal, capability: Capability, enterprise: str | None, reach: Reach
) -> bool:
    """Remote configuration: the serving provider reads and assigns, the enterprise reads and
    refuses, the bureau reads only what an enterprise granted (admin, above, does all but refuse,
    which is the enterprise's own decision)."""
    role = principal.role
    if role is Role.PROVIDER:
        return capability is not Capability.CONFIG_REFUSE and enterprise in reach.served
    if role is Role.ENTERPRISE:
        return capability is not Capability.CONFIG_ASSIGN and enterprise == principal.enterprise
    if role is Role.BUREAU:
        return capability is Capability.CONFIG_READ and enterprise in reach.granted
    return False


def can_see_provider(principal: Principal, provider: str) -> bool:
    """Whether the caller may read the page of service provider ``provider``."""
    return principal.role is Role.ADMIN or (
        principal.role is Role.PROVIDER and principal.provider == provider
    )


def knows_of(principal: Principal, enterprise: str, reach: Reach) -> bool:
    """Whether the caller may learn that ``enterprise`` exists (decides 403 versus 404)."""
    return any(can(principal, cap, enterprise, reach) for cap in Capability)


def visible_enterprises_filter(principal: Principal, reach: Reach) -> frozenset[str] | None:
    """The enterprises a listing may show the caller: None means all of them."""
    if principal.role in _CITY_ROLES:
        return None
    if principal.role is Role.ENTERPRISE:
        return frozenset({principal.enterprise}) if principal.enterprise else frozenset()
    if principal.role is Role.PROVIDER:
        return reach.served
    return frozenset()
