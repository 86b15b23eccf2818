"""Dead-letter rows: a bounded payload prefix with size and hash; whom each one counts against."""

from __future__ import annotations

import hashlib

from ingest.dead_letters import dead_letter
from ingest.errors import Reason
from wire.topics import parse_topic


def test_a_row_keeps_the_prefix_size_and_hash_of_the_payload():
    payload = bytes(range(256)) * 40
    letter = dead_letter(
        "shulian/v1/ent-a/gw-01/telemetry",
        parse_topic("shulian/v1/ent-a/gw-01/telemetry"),
        payload,
        Reason.OVERSIZED,
        "message",
        "too big",
    )
    row = letter.row(4096)
    assert row[8] == payload[:4096]
    assert row[9:] == (len(payload), hashlib.sha256(payload).digest())
    assert row[:8] == ("oversized", "message", letter.topic, "ent-a", "gw-01", 0, None, "too big")
    assert letter.row(len(payload) + 1)[8] == payload  # shorter than the prefix: kept whole


def test_an_unparsed_topic_counts_against_its_enterprise_and_gateway_levels():
    hostile = "shulian/v1/ent a/" + "g" * 500 + "/telemetry\x00"
    letter = dead_letter(hostile, None, b"x", Reason.UNKNOWN_TOPIC, "message", "bad\x00id")
    assert letter.source == ("ent a", "g" * 64)
    assert (letter.enterprise_id, letter.gateway_id) == (None, None)
    assert "\x00" not in letter.topic and "\x00" not in letter.detail
    assert dead_letter("junk", None, b"", Reason.UNKNOWN_TOPIC, "message", "").source == ("", "")
