"""Parse the two ways a profile names an OPC UA node: a NodeId string or a browse path.

Pure and strict (stricter than asyncua's own parser, which accepts ``ns=-1`` or an empty string
identifier), so ``profile validate`` catches a typo before a device is ever contacted.

NodeId (OPC UA Part 6, 5.3.1.10)::

    ns=2;s=Grinder.Spindle.Speed     string identifier in namespace 2
    ns=3;i=1001                      numeric
    ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a   GUID
    ns=2;b=M/RbKBsRVkePCePcx24oRA==  opaque (base64)
    i=2258                           namespace 0 (the standard nodes)
    nsu=urn:vendor:grinder;s=Spindle.Speed   namespace by URI, resolved at each connect

Browse path, from the Root folder along hierarchical references, each step ``<ns>:<BrowseName>``::

    0:Objects/2:Grinder/2:Spindle/2:Speed

where ``<ns>`` is a namespace index or an alias the profile's ``namespaces`` maps to a namespace
URI (``mt:Monitoring/mt:MachineTool/mt:OperationMode``), so a path holds whatever index the
server gave the URI. The alias ``machine`` is the namespace of the machine object's own browse
name (a companion-spec profile's vendor-named children, such as a spindle or a channel).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MACHINE_ALIAS",
    "BrowseStep",
    "NodeAddress",
    "bind_aliases",
    "format_path",
    "parse_browse_path",
    "parse_node_id",
]

MACHINE_ALIAS = "machine"
"""The alias of the machine object's own namespace (see the module docstring)."""

IdKind = Literal["i", "s", "g", "b"]

_MAX_NAMESPACE = 65535
_MAX_NUMERIC = 2**32 - 1
_NODE_ID = re.compile(
    r"^(?:(?P<ns>ns|nsu)=(?P<space>[^;]*);)?(?P<kind>[isgb])=(?P<ident>.*)$", re.S
)
_STEP = re.compile(r"^(?P<ns>[0-9]+|[A-Za-z_][A-Za-z0-9_]*):(?P<name>.+)$", re.S)


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A parsed NodeId; ``namespace_uri`` is set instead of ``namespace`` for the ``nsu=`` form."""

    kind: IdKind
    identifier: str
    namespace: int = 0
    namespace_uri: str | None = None

    def with_namespace(self, index: int) -> NodeAddress:
        return NodeAddress(self.kind, self.identifier, index, None)

    def __str__(self) -> str:
        if self.namespace_uri is not None:
            return f"nsu={self.namespace_uri};{self.kind}={self.identifier}"
        prefix = f"ns={self.namespace};" if self.namespace else ""
        return f"{prefix}{self.kind}={self.identifier}"


@dataclass(frozen=True, slots=True)
class BrowseStep:
    """One step of a browse path; ``alias`` is set (and ``namespace`` unused) until bound."""

    namespace: int
    name: str
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.alias if self.alias is not None else self.namespace}:{self.name}"


def format_path(steps: tuple[BrowseStep, ...]) -> str:
    return "/".join(str(s) for s in steps)


def bind_aliases(steps: tuple[BrowseStep, ...], indexes: dict[str, int]) -> tuple[BrowseStep, ...]:
    """The steps with every alias replaced by its namespace index on this server.

    Raises:
        KeyError: naming the first alias ``indexes`` lacks.
    """
    return tuple(BrowseStep(indexes[s.alias], s.name) if s.alias is not None else s for s in steps)


def parse_node_id(text: str) -> NodeAddress:
    """Parse a NodeId string.

    Raises:
        ValueError: naming what is wrong, e.g. ``numeric identifier 'abc' is not a whole number``.
    """
    match = _NODE_ID.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a NodeId; write ns=<index>;<i|s|g|b>=<identifier>, "
            "e.g. 'ns=2;s=Grinder.Spindle.Speed' or 'ns=3;i=1001'"
        )
    kind: IdKind = match["kind"]  # type: ignore[assignment]  # the regex admits only i/s/g/b
    ident = match["ident"]
    _check_identifier(kind, ident)
    if match["ns"] == "nsu":
        uri = match["space"]
        if not uri:
            raise ValueError(f"{text!r}: nsu= needs a namespace URI")
        return NodeAddress(kind, ident, 0, uri)
    namespace = _namespace(match["space"]) if match["ns"] else 0
    return NodeAddress(kind, ident, namespace)


def _namespace(text: str) -> int:
    if not text.isdigit() or int(text) > _MAX_NAMESPACE:
        raise ValueError(f"namespace index {text!r} must be a whole number from 0 to 65535")
    return int(text)


def _check_identifier(kind: IdKind, ident: str) -> None:
    if kind == "i":
        if not ident.isdigit() or int(ident) > _MAX_NUMERIC:
            raise ValueError(
                f"numeric identifier {ident!r} must be a whole number from 0 to 2^32-1"
            )
    elif kind == "s":
        if not ident:
            raise ValueError("string identifier is empty (after 's=')")
    elif kind == "g":
        try:
            uuid.UUID(ident)
        except ValueError:
            raise ValueError(f"GUID identifier {ident!r} is not a GUID") from None
    else:
        try:
            if not ident or not base64.b64decode(ident, validate=True):
                raise ValueError
        except (ValueError, binascii.Error):
            raise ValueError(f"opaque identifier {ident!r} is not base64") from None


def parse_browse_path(text: str) -> tuple[BrowseStep, ...]:
    """Parse ``0:Objects/2:Grinder/2:Speed`` (a leading ``/`` is allowed) into steps.

    Raises:
        ValueError: naming the bad step.
    """
    body = text.strip().removeprefix("/")
    if not body:
        raise ValueError("browse path is empty; write e.g. '0:Objects/2:Grinder/2:Speed'")
    steps = []
    for index, chunk in enumerate(body.split("/")):
        match = _STEP.match(chunk)
        if match is None:
            raise ValueError(
                f"step {index + 1} {chunk!r} of {text!r} is not <namespace>:<BrowseName> "
                "(a namespace index or alias), e.g. '2:Grinder' or 'mt:Monitoring'"
            )
        space = match["ns"]
        if space.isdigit():
            steps.append(BrowseStep(_namespace(space), match["name"]))
        else:
            steps.append(BrowseStep(0, match["name"], space))
    return tuple(steps)
