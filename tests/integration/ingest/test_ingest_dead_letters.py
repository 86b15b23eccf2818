"""Dead letters are bounded (issue 10): a prefix per row, and a per-gateway rate per minute.

Through a real Mosquitto (deploy/mosquitto/common.conf: max_packet_size 8 MiB) and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import time

import pytest
from ingest_support import machine_samples, now_ms, rows, scalar, wait_until

from wire import topics

MIB = 1024 * 1024


def test_a_6_mib_hostile_message_leaves_only_the_bounded_prefix(start_ingest, fake_gateway, pg_url):
    start_ingest()  # limits.max_message_bytes 4 MiB, dead_letter_prefix_bytes 4096
    gw = fake_gateway(enterprise="ent-h", gateway="gw-h", devices=["dev-1"])
    gw.birth()
    hostile = b'{"v":"1.0","gateway":"gw-h","samples":["' + b"A" * (6 * MIB) + b'"]}'
    gw.publish(topics.telemetry("ent-h", "gw-h"), hostile)
    gw.send(gw.batch(machine_samples(["dev-1"], now_ms(), 1)))
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT count(*) FROM dead_letters") == 1
            and scalar(pg_url, "SELECT count(*) FROM telemetry") == 4
        ),
        timeout_s=20,
        what="the hostile message dead-lettered and the good batch stored",
    )
    reason, gateway, prefix, size, digest, detail = rows(
        pg_url,
        "SELECT reason, gateway_id, payload, payload_bytes, payload_sha256, detail "
        "FROM dead_letters",
    )[0]
    assert (reason, gateway) == ("oversized", "gw-h")
    assert bytes(prefix) == hostile[:4096]
    assert size == len(hostile)
    assert bytes(digest) == hashlib.sha256(hostile).digest()
    assert f"message of {len(hostile)} bytes exceeds limits.max_message_bytes" in detail
    assert scalar(pg_url, "SELECT sum(octet_length(payload)) FROM dead_letters") == 4096


def test_the_prefix_length_is_a_setting_and_small_payloads_are_kept_whole(
    start_ingest, fake_gateway, pg_url
):
    start_ingest(limits={"dead_letter_prefix_bytes": 10})
    gw = fake_gateway(enterprise="ent-p", gateway="gw-p", devices=["dev-1"])
    gw.publish(topics.telemetry("ent-p", "gw-p"), b"not json at all")
    gw.publish(topics.metrics("ent-p", "gw-p"), b"{}")
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters") == 2, what="2 rows")
    assert sorted(
        (bytes(p), n) for p, n in rows(pg_url, "SELECT payload, payload_bytes FROM dead_letters")
    ) == [(b"not json a", 15), (b"{}", 2)]


def test_a_flood_from_one_gateway_is_rate_limited_while_others_are_recorded(
    start_ingest, fake_gateway, pg_url, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="ingest.writer")
    per_minute, flood = 20, 200
    service = start_ingest(limits={"dead_letters_per_minute": per_minute})
    started = time.monotonic()
    flooder = fake_gateway(enterprise="ent-f", gateway="gw-01", devices=["dev-1"])
    other = fake_gateway(enterprise="ent-g", gateway="gw-01", devices=["dev-1"])
    other.birth()
    infos = [
        flooder.publish(topics.telemetry("ent-f", "gw-01"), b"junk %d" % n, wait=False)
        for n in range(flood)
    ]
    for n in range(5):
        other.publish(topics.telemetry("ent-g", "gw-01"), b"bad %d" % n)
    other.send(other.batch(machine_samples(["dev-1"], now_ms(), 1)))
    for info in infos:
        info.wait_for_publish(10)

    def windows(enterprise: str) -> tuple[int, int, int]:
        row = rows(
            pg_url,
            "SELECT count(*), coalesce(sum(recorded), 0), coalesce(sum(suppressed), 0) "
            "FROM dead_letter_windows WHERE enterprise_id = %s AND gateway_id = 'gw-01'",
            (enterprise,),
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    wait_until(
        lambda: (
            sum(windows("ent-f")[1:]) == flood
            and windows("ent-g")[1] == 5
            and scalar(pg_url, "SELECT count(*) FROM telemetry") == 4
        ),
        timeout_s=30,
        what="the flood counted, the other gateway's dead letters and data stored",
    )
    minutes, recorded, suppressed = windows("ent-f")
    # the flood may straddle a minute boundary: at most per_minute rows in each minute
    assert recorded <= per_minute * minutes and minutes <= 2
    assert suppressed == flood - recorded > 0
    assert (
        scalar(pg_url, "SELECT count(*) FROM dead_letters WHERE enterprise_id = 'ent-f'")
        == recorded
    )
    assert rows(
        pg_url,
        "SELECT reason, count(*) FROM dead_letters WHERE enterprise_id = 'ent-g' GROUP BY 1",
    ) == [("malformed_json", 5)]
    assert windows("ent-g")[2] == 0
    counted = service.metrics.dead_letters_suppressed.labels("malformed_json")._value.get()
    assert counted == suppressed
    # every rejection is still counted as one, stored or not
    assert service.metrics.rejected.labels("malformed_json", "message")._value.get() == flood + 5
    warnings = [r for r in caplog.records if "dead_letters_per_minute" in r.getMessage()]
    assert warnings and "ent-f/gw-01" in warnings[0].getMessage()
    assert len(warnings) <= 1 + (time.monotonic() - started) // 10  # at most one every 10 s
