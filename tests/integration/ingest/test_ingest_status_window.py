"""Status messages get telemetry's time window (issue 10), through real Mosquitto and PostgreSQL.

Statuses apply newest-first, so one stamped far in the future used to win every later
comparison: that gateway's status (or device's connection) froze for every later boot.
"""

from __future__ import annotations

import uuid

import psycopg
from ingest_support import now_ms, rows, scalar, wait_until

from wire import topics
from wire.codec import encode
from wire.payloads import DeviceStatus, GatewayMetrics, GatewayStatus

DAY_MS = 86_400_000


def gateway_row(url: str) -> tuple[object, ...]:
    return tuple(rows(url, "SELECT online, boot FROM gateways WHERE enterprise_id = 'ent-s'")[0])


def test_a_far_future_status_is_rejected_and_later_boots_still_apply(
    start_ingest, fake_gateway, pg_url
):
    start_ingest()
    gw = fake_gateway(enterprise="ent-s", gateway="gw-s", devices=["dev-1"])
    gw.birth()
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM gateways") == 1, what="birth")
    first_boot = gw.boot

    wrong_clock = GatewayStatus(
        gateway="gw-s",
        enterprise="ent-s",
        online=False,
        boot="clock-wrong",
        ts_ms=now_ms() + DAY_MS,
    )
    gw.publish(topics.gateway_status("ent-s", "gw-s"), encode(wrong_clock), retain=True)
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters") == 1, what="rejected")
    reason, scope, detail = rows(pg_url, "SELECT reason, scope, detail FROM dead_letters")[0]
    assert (reason, scope) == ("too_new", "message")
    assert "status ts_ms" in detail and "check the gateway's clock" in detail
    assert gateway_row(pg_url) == (True, first_boot)

    gw.boot = uuid.uuid4().hex  # the gateway restarts with its clock right
    gw.birth()
    wait_until(lambda: gateway_row(pg_url) == (True, gw.boot), what="the new boot applied")


def test_far_future_device_status_and_metrics_are_rejected(start_ingest, fake_gateway, pg_url):
    start_ingest()
    gw = fake_gateway(enterprise="ent-s", gateway="gw-s", devices=["dev-1"])
    gw.birth()
    gw.device_status("dev-1", "connected")
    wait_until(
        lambda: scalar(pg_url, "SELECT connection FROM devices") == "connected", what="connected"
    )
    future = now_ms() + DAY_MS
    device = DeviceStatus(gateway="gw-s", device="dev-1", connection="error", ts_ms=future)
    gw.publish(topics.device_status("ent-s", "gw-s", "dev-1"), encode(device), retain=True)
    metrics = GatewayMetrics(gateway="gw-s", ts_ms=future, figures={"rss_bytes": 1.0})
    gw.publish(topics.metrics("ent-s", "gw-s"), encode(metrics))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters") == 2, what="rejected")
    assert rows(pg_url, "SELECT reason, topic FROM dead_letters ORDER BY topic") == [
        ("too_new", topics.device_status("ent-s", "gw-s", "dev-1")),
        ("too_new", topics.metrics("ent-s", "gw-s")),
    ]
    assert scalar(pg_url, "SELECT connection FROM devices") == "connected"
    assert scalar(pg_url, "SELECT metrics FROM gateways") is None

    gw.device_status("dev-1", "disconnected")
    wait_until(
        lambda: scalar(pg_url, "SELECT connection FROM devices") == "disconnected",
        what="the next real device status applied",
    )


def test_status_frozen_in_the_future_by_an_older_ingest_is_overridden(
    start_ingest, fake_gateway, pg_url
):
    """Rows stored before the window existed must not stay frozen either."""
    start_ingest()
    gw = fake_gateway(enterprise="ent-s", gateway="gw-s", devices=["dev-1"])
    gw.birth()
    gw.device_status("dev-1", "error")
    wait_until(lambda: scalar(pg_url, "SELECT connection FROM devices") == "error", what="error")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE gateways SET online = false, boot = 'old', status_at = now() + interval '1 year'"
        )
        conn.execute("UPDATE devices SET connection_at = now() + interval '1 year'")
    gw.boot = uuid.uuid4().hex
    gw.birth()
    gw.device_status("dev-1", "connected")
    wait_until(
        lambda: (
            gateway_row(pg_url) == (True, gw.boot)
            and scalar(pg_url, "SELECT connection FROM devices") == "connected"
        ),
        what="the frozen rows overridden by real statuses",
    )
