"""OPC UA parts of a profile: which node each signal is, how it is sampled, and security."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

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
    """Alternative to ``node_id``, resolved at each connect: ``0:Objects/2:Grinder/2:SpindleSpeed``."""
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
    trust_on_first_use: bool = False
    """Trust a server's certificate the first time its application URI is seen (copied into
    trusted/); a different certificate later offered under the same URI is still refused."""


class OpcUaProfile(ProfileBase):
    protocol: Literal["opcua"]
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)
    signals: list[OpcUaSignal]  # type: ignore[assignment]  # narrowed from SignalBase
