"""API tokens: issue, hash, verify and revoke the bearer tokens of the monitoring module.

A token is ``slk_`` plus 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, so a
stolen database cannot be replayed as credentials; verification looks the digest up by its unique
index and compares it again in constant time. Each token carries one role:

- ``bureau``: city-wide KPIs and enterprise summaries; device data only where an enterprise granted it;
- ``enterprise``: everything of its own enterprise, nothing of any other;
- ``provider``: profiles, gateways and device status of the enterprises it serves;
- ``admin``: everything, including imports.

A token may expire (``expires_at``, set at creation). The web UI never keeps a token: signing in
exchanges it for a browser session (``web_sessions``), whose random id (``sls_`` plus 43
characters) is the cookie and is stored as its SHA-256 like a token. A session ends at its
absolute expiry (never later than its token's), after an idle period, on sign-out, and with its
token: revoking a token deletes its sessions, and every lookup joins the token again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row

TOKEN_PREFIX: Final = "slk_"
SESSION_PREFIX: Final = "sls_"
SESSION_TOUCH_S: Final = 30
"""A session's last use is written at most this often (not on every request of a page)."""
_TOKEN_BYTES: Final = 32


class Role(StrEnum):
    BUREAU = "bureau"
    ENTERPRISE = "enterprise"
    PROVIDER = "provider"
    ADMIN = "admin"


class TokenError(ValueError):
    """A token could not be issued or revoked; the message names the field and the fix."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the role of their token and the enterprise or provider it is bound to."""

    token_id: int
    role: Role
    enterprise: str | None = None
    provider: str | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token; ``secret`` is shown once and never stored."""

    token_id: int
    secret: str
    role: Role
    enterprise: str | None
    provider: str | None


def new_secret(prefix: str = TOKEN_PREFIX) -> str:
    """A new random token (or, with ``SESSION_PREFIX``, session id) string."""
    return prefix + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_secret(secret: str) -> bytes:
    """The stored form of a token (SHA-256 is enough for 256 random bits: no guessing to slow)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _check_binding(role: Role, enterprise: str | None, provider: str | None) -> None:
    if role is Role.ENTERPRISE and not enterprise:
        raise TokenError("--enterprise is required for role 'enterprise' (its registry id)")
    if role is Role.PROVIDER and not provider:
        raise TokenError("--provider is required for role 'provider' (its registry id)")
    if role is not Role.ENTERPRISE and enterprise:
        raise TokenError(f"--enterprise only applies to role 'enterprise', not {role.value!r}")
    if role is not Role.PROVIDER and provider:
        raise TokenError(f"--provider only applies to role 'provider', not {role.value!r}")


async def _exists(conn: AsyncConnection[Any], sql: str, key: str) -> bool:
    cur = await conn.execute(sql, (key,))
    return await cur.fetchone() is not None


async def create_token(
    conn: AsyncConnection[Any],
    role: Role,
    *,
    enterprise: str | None = None,
    provider: str | None = None,
    name: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Store a new token's hash and return the token; the enterprise or provider must exist.

    ``expires_at`` (timezone-aware) ends the token and its sessions; None never expires.
    """
    _check_binding(role, enterprise, provider)
    if expires_at is not None and (
        expires_at.tzinfo is None or expires_at <= datetime.now(expires_at.tzinfo)
    ):
        raise TokenError(f"expiry {expires_at.isoformat()} must be a future, timezone-aware time")
    if enterprise and not await _exists(
        conn, "SELECT 1 FROM enterprises WHERE id = %s", enterprise
    ):
        raise TokenError(f"enterprise {enterprise!r} is not registered: import it first")
    if provider and not await _exists(
        conn, "SELECT 1 FROM service_providers WHERE id = %s", provider
    ):
        raise TokenError(f"service provider {provider!r} is not registered: import it first")
    secret = new_secret()
    cur = await conn.execute(
        """INSERT INTO api_tokens (token_hash, hint, role, enterprise, provider, name, expires_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (hash_secret(secret), secret[:8], role.value, enterprise, provider, name, expires_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return IssuedToken(int(row[0]), secret, role, enterprise, provider)


async def authenticate(conn: AsyncConnection[Any], secret: str) -> Principal | None:
    """The principal of a live token, or None for an unknown, revoked or expired one."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT id, token_hash, role, enterprise, provider, name FROM api_tokens
           WHERE token_hash = %s AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > now())""",
        (digest,),
    )
    row = await cur.fetchone()
    # The index lookup already matched; comparing again in constant time keeps the check honest
    # even if the lookup is ever replaced by a prefix scan.
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return _principal(row)


def _principal(row: dict[str, Any]) -> Principal:
    return Principal(
        token_id=row["id"],
        role=Role(row["role"]),
        enterprise=row["enterprise"],
        provider=row["provider"],
        name=row["name"],
    )


async def revoke_token(conn: AsyncConnection[Any], token_id: int) -> bool:
    """Revoke a token by id and end its browser sessions; False when no live token has that id."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        await conn.execute("DELETE FROM web_sessions WHERE token_id = %s", (token_id,))
    return cur.rowcount == 1


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new browser session; ``secret`` goes into the cookie and is never stored."""

    secret: str
    expires_at: datetime
    principal: Principal


async def create_session(
    conn: AsyncConnection[Any], principal: Principal, lifetime_s: int
) -> IssuedSession:
    """Start a session for a principal that just authenticated with its token.

    It expires ``lifetime_s`` from now, or when the token expires if that is sooner. Sessions
    that already ended (any token's) are deleted on the way.
    """
    secret = new_secret(SESSION_PREFIX)
    await conn.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
    cur = await conn.execute(
        """INSERT INTO web_sessions (session_hash, token_id, expires_at)
           SELECT %s, t.id, LEAST(now() + make_interval(secs => %s), t.expires_at)
           FROM api_tokens t WHERE t.id = %s
           RETURNING expires_at""",
        (hash_secret(secret), lifetime_s, principal.token_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise TokenError(f"token {principal.token_id} no longer exists; sign in with another one")
    return IssuedSession(secret, row[0], principal)


async def authenticate_session(
    conn: AsyncConnection[Any], secret: str, idle_s: int
) -> Principal | None:
    """The principal of a live session, or None when it ended (expired, idle, signed out,
    or its token revoked or expired). Records the use at most every ``SESSION_TOUCH_S``."""
    if not secret.startswith(SESSION_PREFIX) or len(secret) > 200:
        return None
    digest = hash_secret(secret)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT s.id AS session, s.session_hash,
                  s.last_seen_at < now() - make_interval(secs => %s) AS stale,
                  t.id, t.role, t.enterprise, t.provider, t.name
           FROM web_sessions s JOIN api_tokens t ON t.id = s.token_id
           WHERE s.session_hash = %s AND s.expires_at > now()
             AND s.last_seen_at > now() - make_interval(secs => %s)
             AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())""",
        (SESSION_TOUCH_S, digest, idle_s),
    )
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row["session_hash"]), digest):
        return None
    if row["stale"]:
        await conn.execute(
            "UPDATE web_sessions SET last_seen_at = now() WHERE id = %s", (row["session"],)
        )
    return _principal(row)


async def end_session(conn: AsyncConnection[Any], secret: str) -> bool:
    """Sign a session out (delete it); False when there was no such session."""
    cur = await conn.execute(
        "DELETE FROM web_sessions WHERE session_hash = %s", (hash_secret(secret),)
    )
    return cur.rowcount == 1


async def list_tokens(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every token's metadata (never the secret nor its hash)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT id, hint, role, enterprise, provider, name, created_at, expires_at, revoked_at
           FROM api_tokens ORDER BY id"""
    )
    return list(await cur.fetchall())
