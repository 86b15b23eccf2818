"""Find a companion-spec machine's object on a server by browsing, and explain paths that fail.

A profile written against a companion specification (OPC 40501-1 machine tools, OPC 40077
EUROMAP 77) names no node ids: it says which ObjectType the machine is (``mt:MachineToolType``),
in which folder machines live (``0:Objects/machinery:Machines``, OPC 40001-1), and addresses every
value by a browse path from the machine's object. Numeric node ids and namespace indexes differ
from server to server (and from one start of a server to the next); browse names by namespace URI
do not. This module does the browsing through the transport's plain-Python calls, once per
connection, so the rest of the driver sees node addresses as for any other profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.drivers.opcua.addresses import (
    MACHINE_ALIAS,
    BrowseStep,
    NodeAddress,
    bind_aliases,
    format_path,
    parse_browse_path,
)
from gateway.drivers.opcua.models import MachineLocator
from gateway.drivers.opcua.transport import BrowsedObject, Resolution, UaConnection

__all__ = ["MachineNotFoundError", "aliases_of", "explain_failed_paths", "locate_machine"]

NAME_KEY = "name"
"""``select_machine`` key that matches the machine object's browse name."""


class MachineNotFoundError(Exception):
    """No single machine of the profile's type matches; the message says what was found."""


@dataclass(frozen=True, slots=True)
class LocatedMachine:
    node: NodeAddress
    namespace: int
    """Namespace index of the machine object's browse name (the ``machine`` alias)."""
    name: str


def aliases_of(
    namespaces: Mapping[str, str], server_namespaces: list[str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Alias -> namespace index on this server, and alias -> URI for those the server lacks."""
    indexes: dict[str, int] = {}
    missing: dict[str, str] = {}
    for alias, uri in namespaces.items():
        if uri in server_namespaces:
            indexes[alias] = server_namespaces.index(uri)
        else:
            missing[alias] = uri
    return indexes, missing


def bind(
    text: str, indexes: Mapping[str, int], missing: Mapping[str, str]
) -> tuple[BrowseStep, ...]:
    """Parse a browse path and bind its aliases.

    Raises:
        MachineNotFoundError: an alias whose namespace this server does not have.
    """
    steps = parse_browse_path(text)
    for step in steps:
        if step.alias is not None and step.alias not in indexes:
            if step.alias in missing:
                raise MachineNotFoundError(
                    f"namespace {missing[step.alias]!r} ({step.alias}:) is not on this server"
                )
            raise MachineNotFoundError(f"namespace alias {step.alias!r} is not declared")
    return bind_aliases(steps, dict(indexes))


async def locate_machine(
    connection: UaConnection,
    locator: MachineLocator,
    indexes: Mapping[str, int],
    missing: Mapping[str, str],
    select: Mapping[str, str],
) -> LocatedMachine:
    """The one object of ``locator.type`` (or a subtype) in ``locator.folder`` matching ``select``.

    Raises:
        MachineNotFoundError: the folder or type is missing, or zero or several machines match.
    """
    folder_steps = bind(locator.folder, indexes, missing)
    [folder] = await connection.resolve([folder_steps])
    if folder.node is None:
        raise MachineNotFoundError(f"machine folder {locator.folder} not found ({folder.problem})")
    [type_step] = bind(locator.type, indexes, missing)
    wanted = (type_step.namespace, type_step.name)
    lineages: dict[NodeAddress, list[tuple[int, str]]] = {}
    candidates: list[BrowsedObject] = []
    for found in await connection.browse_objects(folder.node):
        type_node = found.type_definition
        if type_node is None:
            continue
        if type_node not in lineages:
            lineages[type_node] = await connection.type_lineage(type_node)
        if wanted in lineages[type_node]:
            candidates.append(found)
    if not candidates:
        raise MachineNotFoundError(
            f"no object of type {locator.type} (or a subtype) in {locator.folder}"
        )
    matches = [
        c for c in candidates if await _matches(connection, c, locator, indexes, missing, select)
    ]
    names = ", ".join(sorted(c.name for c in candidates))
    wished = ", ".join(f"{k}={v}" for k, v in select.items())
    if not matches:
        raise MachineNotFoundError(
            f"none of the {len(candidates)} machine(s) of type {locator.type} in "
            f"{locator.folder} ({names}) has {wished}"
        )
    if len(matches) > 1:
        raise MachineNotFoundError(
            f"{len(matches)} machines of type {locator.type} in {locator.folder} "
            f"({', '.join(sorted(m.name for m in matches))}); choose one with the device's "
            f"select_machine ({', '.join([NAME_KEY, *locator.identification])})"
        )
    chosen = matches[0]
    return LocatedMachine(chosen.node, chosen.namespace, chosen.name)


async def _matches(
    connection: UaConnection,
    candidate: BrowsedObject,
    locator: MachineLocator,
    indexes: Mapping[str, int],
    missing: Mapping[str, str],
    select: Mapping[str, str],
) -> bool:
    own = {**indexes, MACHINE_ALIAS: candidate.namespace}
    for key, expected in select.items():
        if key == NAME_KEY:
            if candidate.name != expected:
                return False
            continue
        steps = bind(locator.identification[key], own, missing)
        [where] = await connection.resolve([steps], start=candidate.node)
        if where.node is None:
            return False
        [sample] = await connection.read([where.node])
        if sample.value is None or str(sample.value) != expected:
            return False
    return True


async def explain_failed_paths(
    connection: UaConnection,
    failed: Mapping[str, tuple[tuple[BrowseStep, ...], tuple[BrowseStep, ...]]],
    start: NodeAddress | None,
) -> dict[str, Resolution]:
    """For each signal whose path did not resolve, which step failed (one request for all).

    TranslateBrowsePathsToNodeIds says only that a path has no match; resolving every prefix of
    the failed paths finds the first step that has none, which is what a provider must fix.
    """
    prefixes = list({steps[:n] for steps, _ in failed.values() for n in range(1, len(steps))})
    answers = await connection.resolve(prefixes, start=start) if prefixes else []
    resolved = dict(zip(prefixes, answers, strict=True))
    out: dict[str, Resolution] = {}
    for name, (steps, written) in failed.items():
        good = 0
        for n in range(1, len(steps)):
            if resolved[steps[:n]].node is None:
                break
            good = n
        below = format_path(written[:good]) if good else ("the machine" if start else "Root")
        out[name] = Resolution(
            None,
            f"browse path {format_path(written)}: step {good + 1} '{written[good]}' not found "
            f"below {below}",
        )
    return out
