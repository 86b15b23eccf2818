"""Remote configuration in the cloud: versioned profiles and site files, and their assignments.

An upload is checked by ``shulian profile validate`` itself, run as a child process on the file
(a site file with the provider's library beside it), so the cloud refuses exactly what the
gateway would, with the same ``file:line: field: message`` texts. The ingest may not import the
gateway (the import-linter contract "gateway and ingest are independent"); the command is the
gateway's public interface, and running it keeps the two packages apart (docs/architecture.md).

Versions are immutable (a database trigger refuses UPDATE and DELETE). An assignment is a revision
of one gateway's whole configuration: the version of every file it runs. The newest assignment
not refused by the enterprise is in force; ``ingest/config_delivery.py`` publishes it.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from psycopg import AsyncConnection

from monitoring.api.registry import fetch_all, fetch_one
from monitoring.auth import Principal
from wire.payloads import file_hash

FileKind = Literal["profile", "site"]
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\.ya?ml$")
VALIDATE_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Validation:
    errors: list[str]
    warnings: list[str]


def name_problem(name: str) -> str | None:
    if NAME_RE.match(name):
        return None
    return (
        f"file name {name!r} is not allowed: use a plain name ending in .yaml "
        "(letters, digits, '_', '.', '-'; no folders)"
    )


async def validate_upload(
    name: str, content: str, library: dict[str, str], *, kind: FileKind
) -> Validation:
    """Run ``shulian profile validate`` on ``content`` saved as ``name``.

    ``library``: the provider's newest profiles (name -> text), written beside a site file so the
    profiles it names by id resolve as they will on the gateway. Messages name the file by
    ``name`` (the temporary folder is cut out).
    """
    with tempfile.TemporaryDirectory(prefix="shulian-upload-") as tmp:
        folder = Path(tmp)
        if kind == "site":
            for other, text in library.items():
                (folder / other).write_text(text, encoding="utf-8")
        target = folder / name
        target.write_text(content, encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shulian",
            "profile",
            "validate",
            str(target),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), VALIDATE_TIMEOUT_S)
        text = out.decode("utf-8", "replace").replace(f"{folder}/", "")
    errors = [line[len("error: ") :] for line in text.splitlines() if line.startswith("error: ")]
    warnings = [
        line[len("warning: ") :] for line in text.splitlines() if line.startswith("warning: ")
    ]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not errors):
        errors.append(f"{name}: the validator could not run: {text.strip()[-500:]}")
    return Validation(errors, warnings)


async def library(conn: AsyncConnection[Any], provider: str) -> dict[str, str]:
    """The provider's newest version of every profile (name -> content)."""
    rows = await fetch_all(
        conn,
        """SELECT DISTINCT ON (name) name, content FROM config_versions
           WHERE provider_id = %s AND kind = 'profile' ORDER BY name, version DESC""",
        (provider,),
    )
    return {r["name"]: r["content"] for r in rows}


async def store_version(
    conn: AsyncConnection[Any],
    provider: str,
    name: str,
    kind: FileKind,
    content: str,
    by: Principal,
) -> dict[str, Any]:
    """Store ``content`` as the next version of ``name`` in the provider's library."""
    async with conn.transaction():
        # One writer per provider at a time, so two uploads never take the same number.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('config:' || %s))", (provider,))
        row = await fetch_one(
            conn,
            """INSERT INTO config_versions (provider_id, name, version, kind, content, sha256,
                   uploaded_by, uploaded_by_role, uploaded_by_name)
               SELECT %(p)s, %(n)s, COALESCE(MAX(version), 0) + 1, %(k)s, %(c)s, %(h)s,
                   %(by)s, %(role)s, %(byname)s
               FROM config_versions WHERE provider_id = %(p)s AND name = %(n)s
               RETURNING id, provider_id AS provider, name, version, kind, sha256,
                   uploaded_by_role, uploaded_by_name, uploaded_at""",
            {
                "p": provider,
                "n": name,
                "k": kind,
                "c": content,
                "h": file_hash(content),
                "by": by.token_id,
                "role": by.role.value,
                "byname": by.name,
            },
        )
    assert row is not None
    return row


async def versions(conn: AsyncConnection[Any], provider: str) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        """SELECT id, name, version, kind, sha256, uploaded_by_role, uploaded_by_name, uploaded_at
           FROM config_versions WHERE provider_id = %s ORDER BY name, version""",
        (provider,),
    )


async def version(
    conn: AsyncConnection[Any], provider: str, name: str, number: int
) -> dict[str, Any] | None:
    return await fetch_one(
        conn,
        """SELECT id, name, version, kind, sha256, content, uploaded_by_role, uploaded_by_name,
               uploaded_at FROM config_versions
           WHERE provider_id = %s AND name = %s AND version = %s""",
        (provider, name, number),
    )


async def gateway_row(
    conn: AsyncConnection[Any], enterprise: str, gateway: str
) -> dict[str, Any] | None:
    """A gateway (ids are unique within an enterprise) with its enterprise's provider."""
    return await fetch_one(
        conn,
        """SELECT g.id, g.enterprise_id, e.service_provider_id AS provider_id
           FROM gateways g JOIN enterprises e ON e.id = g.enterprise_id
           WHERE g.enterprise_id = %s AND g.id = %s""",
        (enterprise, gateway),
    )


async def in_force(
    conn: AsyncConnection[Any], enterprise: str, gateway: str
) -> dict[str, Any] | None:
    """The newest assignment of ``gateway`` its enterprise did not refuse."""
    return await fetch_one(
        conn,
        """SELECT * FROM config_assignments
           WHERE enterprise_id = %s AND gateway_id = %s AND refused_at IS NULL
           ORDER BY id DESC LIMIT 1""",
        (enterprise, gateway),
    )


async def assign(
    conn: AsyncConnection[Any],
    gateway: dict[str, Any],
    files: dict[str, int],
    by: Principal,
) -> dict[str, Any]:
    """A new revision: the files in force with ``files`` (name -> version number) set over them.

    Raises LookupError naming a file version the provider's library does not have.
    """
    provider = gateway["provider_id"]
    async with conn.transaction():
        current = await in_force(conn, gateway["enterprise_id"], gateway["id"])
        chosen: dict[str, int] = {}
        if current is not None:
            rows = await fetch_all(
                conn,
                "SELECT id, name FROM config_versions WHERE id = ANY(%s)",
                (current["version_ids"],),
            )
            chosen = {r["name"]: r["id"] for r in rows}
        for name, number in files.items():
            row = await version(conn, provider, name, number)
            if row is None:
                raise LookupError(f"{name} version {number} is not in the library of {provider}")
            chosen[name] = row["id"]
        row = await fetch_one(
            conn,
            """INSERT INTO config_assignments (enterprise_id, gateway_id, provider_id, version_ids,
                   assigned_by, assigned_by_role, assigned_by_name)
               VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id AS revision, assigned_at""",
            (
                gateway["enterprise_id"],
                gateway["id"],
                provider,
                sorted(chosen.values()),
                by.token_id,
                by.role.value,
                by.name,
            ),
        )
    assert row is not None
    return {
        **row,
        "enterprise": gateway["enterprise_id"],
        "gateway": gateway["id"],
        "files": await _files_of(conn, sorted(chosen.values())),
    }


async def _files_of(conn: AsyncConnection[Any], ids: list[int]) -> list[dict[str, Any]]:
    return await fetch_all(
        conn,
        """SELECT name, version, kind, sha256 FROM config_versions WHERE id = ANY(%s)
           ORDER BY name""",
        (ids,),
    )


async def refuse(
    conn: AsyncConnection[Any], revision: int, by: Principal, reason: str
) -> dict[str, Any] | None:
    """Mark an assignment refused by its enterprise; the one before it is in force again."""
    return await fetch_one(
        conn,
        """UPDATE config_assignments SET refused_by = %s, refused_by_name = %s,
               refused_at = clock_timestamp(), refusal_reason = %s
           WHERE id = %s AND refused_at IS NULL RETURNING id AS revision, gateway_id, refused_at""",
        (by.token_id, by.name, reason, revision),
    )


async def assignment(conn: AsyncConnection[Any], revision: int) -> dict[str, Any] | None:
    return await fetch_one(
        conn,
        "SELECT id, enterprise_id, gateway_id FROM config_assignments WHERE id = %s",
        (revision,),
    )


async def audit(
    conn: AsyncConnection[Any], enterprises: frozenset[str] | None
) -> list[dict[str, Any]]:
    """Every assignment (newest first) of the enterprises given (None: all)."""
    rows = await fetch_all(
        conn,
        """SELECT a.id AS revision, a.enterprise_id AS enterprise, a.gateway_id AS gateway,
               a.provider_id AS provider, a.assigned_by_role, a.assigned_by_name, a.assigned_at,
               a.refused_by_name, a.refused_at, a.refusal_reason,
               (SELECT jsonb_agg(jsonb_build_object('name', v.name, 'version', v.version)
                       ORDER BY v.name)
                  FROM config_versions v WHERE v.id = ANY(a.version_ids)) AS files
           FROM config_assignments a
           WHERE %(all)s OR a.enterprise_id = ANY(%(ents)s)
           ORDER BY a.id DESC""",
        {"all": enterprises is None, "ents": sorted(enterprises or ())},
    )
    return rows


async def gateway_state(
    conn: AsyncConnection[Any], enterprise: str, gateway: str
) -> dict[str, Any]:
    """Assigned versus delivered versus applied, the last report's messages, and the history."""
    current = await in_force(conn, enterprise, gateway)
    delivered = await fetch_one(
        conn,
        """SELECT revision, published_at FROM config_deliveries
           WHERE enterprise_id = %s AND gateway_id = %s""",
        (enterprise, gateway),
    )
    reports = await fetch_all(
        conn,
        """SELECT revision, status, sha256, messages, restarted, reported_at, received_at
           FROM config_reports WHERE enterprise_id = %s AND gateway_id = %s
           ORDER BY id DESC LIMIT 20""",
        (enterprise, gateway),
    )
    applied = next((r for r in reports if r["status"] == "applied"), None)
    return {
        "enterprise": enterprise,
        "gateway": gateway,
        "assigned": None
        if current is None
        else {
            "revision": current["id"],
            "assigned_at": current["assigned_at"],
            "assigned_by_name": current["assigned_by_name"],
            "files": await _files_of(conn, list(current["version_ids"])),
        },
        "delivered": delivered,
        "applied_revision": applied["revision"] if applied else None,
        "last_report": reports[0] if reports else None,
        "reports": reports,
    }
