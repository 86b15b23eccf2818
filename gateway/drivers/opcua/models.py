"""OPC UA parts of a profile: which node each signal is, how it is sampled, and security."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from gateway.profiles.models import ProfileBase, SignalBase, _Strict


class SecurityPolicy(StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"


class SecurityMode(StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class OpcUaSignal(SignalBase):
    node_id: str | None = None
    """A NodeId string: ``ns=2;s=Grinder.Spindle.Speed`` or ``nsu=urn:...;i=1234``."""
    browse_path: str | None = None
    """Alternative to ``node_id``, resolved at each connect: ``0:Objects/2:Grinder/2:SpindleSpeed``;
    steps may name their namespace by an alias from ``namespaces`` (``mt:Monitoring``). In a
    profile with ``machine``, the path starts at the machine object."""
    sampling_interval_ms: int | None = Field(default=None, ge=0)
    """None takes the group's interval."""
    data_change_deadband: float | None = Field(default=None, ge=0)
    """Absolute deadband applied by the server (in the server's units)."""

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaSignal:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of `node_id` or `browse_path`")
        return self


class OpcUaSettings(_Strict):
    security_policy: SecurityPolicy = SecurityPolicy.NONE
    security_mode: SecurityMode = SecurityMode.NONE
    username: str | None = None
    password_file: str | None = None
    """File holding the password; or set SHULIAN_GW_OPCUA_PASSWORD__<DEVICE_ID>."""
    session_timeout_s: float = Field(default=60, gt=0)
    keepalive_s: float = Field(default=5, gt=0)
    """How often the gateway checks the server is alive; a dead session is rebuilt."""
    timeout_s: float = Field(default=4, gt=0)
    pki_dir: str | None = None
    """Folder of the gateway's certificate (own/), trusted server certificates (trusted/) and
    refused ones (rejected/); default: ``<gateway.data_dir>/pki`` (var/gateway/pki)."""
    select_machine: dict[str, str] = Field(default_factory=dict)
    """Which machine of the profile's ``machine`` type this device is, when a server hosts
    several: ``{serial_number: VMC-0042}`` (keys from ``machine.identification``) or
    ``{name: VMC-0042}`` (the machine object's browse name)."""
    trust_on_first_use: bool = False
    """Trust a server's certificate the first time its application URI is seen (copied into
    trusted/); a different certificate later offered under the same URI is still refused."""


Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class MachineLocator(_Strict):
    """How to find the machine's object on a server that follows a companion specification."""

    type: str
    """BrowseName of the machine's ObjectType, ``<alias>:<name>`` (``mt:MachineToolType``);
    objects of a subtype match too."""
    folder: str = "0:Objects/machinery:Machines"
    """Browse path of the folder holding the machines (OPC 40001-1 Machinery: Objects/Machines)."""
    identification: dict[Alias, str] = Field(default_factory=dict)
    """Names for identification values a site file selects a machine by (``select_machine``),
    each a browse path from the machine object: ``serial_number: di:Identification/di:SerialNumber``."""


class OpcUaProfile(ProfileBase):
    protocol: Literal["opcua"]
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)
    namespaces: dict[Alias, str] = Field(default_factory=dict)
    """Aliases for namespace URIs, used in browse paths: ``mt: http://opcfoundation.org/UA/MachineTool/``."""
    machine: MachineLocator | None = None
    """Set for a companion-spec machine: browse paths then start at the machine object found."""
    signals: list[OpcUaSignal]  # type: ignore[assignment]  # narrowed from SignalBase
