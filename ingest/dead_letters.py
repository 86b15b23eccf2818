"""Dead letters: what the ingest keeps of rejected input, bounded per row and per gateway.

A row keeps a prefix of the payload (``limits.dead_letter_prefix_bytes``) with the payload's full
size and SHA-256, never the whole payload: the broker accepts messages of several MiB, and one
gateway login must not be able to fill the disk. Each gateway (the enterprise and gateway levels
of its topic, which the broker's ACL ties to a login) may add at most
``limits.dead_letters_per_minute`` rows per minute; the rest are counted, not stored, in
``dead_letter_windows`` (one row per gateway and minute, written in the same transaction, so the
limit holds across lanes and workers) and in ``shulian_ingest_dead_letters_suppressed_total``.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass, field
from typing import Final

import psycopg

from ingest.errors import Reason
from wire.topics import Topic

_COLUMNS: Final = (
    "reason, scope, topic, enterprise_id, gateway_id, samples, sample_indexes, detail, "
    "payload, payload_bytes, payload_sha256"
)
_SOURCE_LEVEL_CHARS: Final = 64
"""A topic level beyond this is no id of ours; an unparsed topic's levels are cut to it."""

Source = tuple[str, str]
"""(enterprise, gateway) as the topic names them: whom a dead letter counts against."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One row of ``dead_letters``, holding the whole payload until it is written (or not)."""

    reason: Reason
    scope: str
    """'message' (all of it) or 'sample' (the samples at ``sample_indexes``)."""
    topic: str
    enterprise_id: str | None
    gateway_id: str | None
    sample_indexes: list[int] | None
    detail: str
    payload: bytes
    source: Source

    def row(self, prefix_bytes: int) -> tuple[object, ...]:
        """The table row: the payload cut to ``prefix_bytes``, with its full size and hash."""
        return (
            self.reason.value,
            self.scope,
            self.topic,
            self.enterprise_id,
            self.gateway_id,
            len(self.sample_indexes) if self.sample_indexes else 0,
            self.sample_indexes,
            self.detail,
            self.payload[:prefix_bytes],
            len(self.payload),
            hashlib.sha256(self.payload).digest(),
        )


def dead_letter(
    topic: str,
    parsed: Topic | None,
    payload: bytes,
    reason: Reason,
    scope: str,
    detail: str,
    indexes: list[int] | None = None,
) -> DeadLetter:
    """A dead letter of the message received on ``topic`` (``parsed`` when the topic parsed)."""
    if parsed is not None:
        source = (parsed.enterprise, parsed.gateway)
    else:
        levels = topic.split("/", 4)
        source = (
            _clean(levels[2][:_SOURCE_LEVEL_CHARS]) if len(levels) > 2 else "",
            _clean(levels[3][:_SOURCE_LEVEL_CHARS]) if len(levels) > 3 else "",
        )
    return DeadLetter(
        reason,
        scope,
        _clean(topic),
        parsed.enterprise if parsed else None,
        parsed.gateway if parsed else None,
        indexes or None,
        _clean(detail),
        payload,
        source,
    )


@dataclass(slots=True)
class Admission:
    """Which dead letters of one flush are stored, and what the per-gateway limit held back."""

    kept: list[DeadLetter] = field(default_factory=list)
    suppressed: collections.Counter[tuple[Source, str]] = field(default_factory=collections.Counter)
    """(source, reason) -> dead letters not stored"""


def admit(conn: psycopg.Connection, letters: list[DeadLetter], per_minute: int) -> Admission:
    """Apply the per-gateway limit inside the flush transaction (0: no limit).

    Each source's row of the current minute in ``dead_letter_windows`` is locked (in key order,
    so concurrent flushes cannot deadlock) and tells how many rows it may still add.
    """
    if per_minute <= 0 or not letters:
        return Admission(kept=list(letters))
    sources = sorted({letter.source for letter in letters})
    recorded = {
        (e, g): n
        for e, g, n in conn.execute(
            """
            INSERT INTO dead_letter_windows AS w (enterprise_id, gateway_id, minute)
            SELECT e, g, date_trunc('minute', now()) FROM unnest(%s::text[], %s::text[]) AS u(e, g)
            ORDER BY e, g
            ON CONFLICT (enterprise_id, gateway_id, minute) DO UPDATE SET recorded = w.recorded
            RETURNING enterprise_id, gateway_id, recorded
            """,
            ([s[0] for s in sources], [s[1] for s in sources]),
        )
    }
    admission = Admission()
    added: collections.Counter[Source] = collections.Counter()
    dropped: collections.Counter[Source] = collections.Counter()
    dropped_bytes: collections.Counter[Source] = collections.Counter()
    for letter in letters:
        source = letter.source
        if recorded[source] + added[source] < per_minute:
            admission.kept.append(letter)
            added[source] += 1
        else:
            admission.suppressed[(source, letter.reason.value)] += 1
            dropped[source] += 1
            dropped_bytes[source] += len(letter.payload)
    conn.execute(
        """
        UPDATE dead_letter_windows w SET recorded = w.recorded + u.r,
            suppressed = w.suppressed + u.s, suppressed_bytes = w.suppressed_bytes + u.b
        FROM unnest(%s::text[], %s::text[], %s::int[], %s::int[], %s::bigint[]) AS u(e, g, r, s, b)
        WHERE w.enterprise_id = u.e AND w.gateway_id = u.g
          AND w.minute = date_trunc('minute', now())
        """,
        (
            [s[0] for s in sources],
            [s[1] for s in sources],
            [added[s] for s in sources],
            [dropped[s] for s in sources],
            [dropped_bytes[s] for s in sources],
        ),
    )
    return admission


def copy_dead_letters(
    conn: psycopg.Connection, letters: list[DeadLetter], prefix_bytes: int
) -> None:
    """Write ``letters`` (already admitted), each payload cut to ``prefix_bytes``."""
    with conn.cursor().copy(f"COPY dead_letters ({_COLUMNS}) FROM STDIN") as cp:
        for letter in letters:
            cp.write_row(letter.row(prefix_bytes))


def _clean(text: str) -> str:
    """Text columns cannot hold NUL; hostile topics and details may."""
    return text.replace("\x00", "\\0")
