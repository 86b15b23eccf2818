"""The registry decides who may send: auto-registration rules, identity checks, dead letters.

Gateway identity across enterprises is tested in test_ingest_identity.py."""

from __future__ import annotations

import psycopg
from ingest_support import machine_samples, now_ms, rows, scalar, wait_until

from wire import topics
from wire.payloads import Sample


def dead_letters(url: str) -> list[tuple[str, str, str | None, list[int] | None]]:
    return rows(
        url,
        "SELECT reason, scope, gateway_id, sample_indexes FROM dead_letters ORDER BY id",
    )


def test_unknown_gateways_are_dead_lettered_when_auto_registration_is_off(
    start_ingest, fake_gateway, pg_url
):
    start_ingest(registry={"auto_register_gateways": False})
    gw = fake_gateway(enterprise="ent-x", gateway="gw-stranger", devices=["d1"])
    gw.birth()
    gw.send(gw.batch(machine_samples(gw.devices, now_ms(), 1)))
    wait_until(lambda: len(dead_letters(pg_url)) == 2, what="two dead letters")
    assert dead_letters(pg_url) == [
        ("unknown_gateway", "message", "gw-stranger", None),
        ("unknown_gateway", "message", "gw-stranger", None),
    ]
    assert scalar(pg_url, "SELECT count(*) FROM gateways") == 0
    assert scalar(pg_url, "SELECT count(*) FROM telemetry") == 0
    detail = scalar(pg_url, "SELECT detail FROM dead_letters LIMIT 1")
    assert "auto_register_gateways" in detail


def test_only_announced_devices_are_registered(start_ingest, fake_gateway, pg_url):
    service = start_ingest()
    gw = fake_gateway(enterprise="ent-d", gateway="gw-d", devices=["dev-1"])
    gw.birth()
    t = now_ms()
    samples = [
        Sample(device="dev-1", signal="spindle_speed", ts_ms=t, value=1.0),
        Sample(device="dev-9", signal="spindle_speed", ts_ms=t, value=2.0),
        Sample(device="dev-9", signal="feed_rate", ts_ms=t, value=3.0),
    ]
    gw.send(gw.batch(samples))
    wait_until(lambda: dead_letters(pg_url), what="the unknown device's samples rejected")
    assert dead_letters(pg_url) == [("unknown_device", "sample", "gw-d", [1, 2])]
    assert scalar(pg_url, "SELECT count(*) FROM telemetry") == 1

    gw.device_status("dev-9", "connected", profile="gear_hobber")  # announced now
    wait_until(
        lambda: scalar(pg_url, "SELECT profile FROM devices WHERE device_id = 'dev-9'"),
        what="dev-9 registered from its status",
    )
    gw.send(gw.batch([Sample(device="dev-9", signal="spindle_speed", ts_ms=t + 1, value=4.0)]))
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM telemetry") == 2, what="dev-9's row")
    assert service.metrics.rejected.labels("unknown_device", "sample")._value.get() == 2


def test_devices_are_not_registered_when_auto_registration_is_off(
    start_ingest, fake_gateway, pg_url
):
    start_ingest(registry={"auto_register_devices": False})
    gw = fake_gateway(enterprise="ent-e", gateway="gw-e", devices=["dev-1"])
    gw.birth()
    gw.device_status("dev-1", "connected")
    wait_until(lambda: dead_letters(pg_url), what="the device status rejected")
    assert scalar(pg_url, "SELECT count(*) FROM devices") == 0
    assert scalar(pg_url, "SELECT online FROM gateways WHERE id = 'gw-e'") is True
    assert dead_letters(pg_url) == [("unknown_device", "message", "gw-e", None)]


def test_a_message_the_database_refuses_is_dead_lettered_alone(start_ingest, fake_gateway, pg_url):
    """A poison message must not block the messages flushed with it."""
    service = start_ingest(writer={"max_delay_ms": 300, "lanes": 1})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            """CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.value = 666 THEN RAISE EXCEPTION 'value 666 refused'; END IF;
               RETURN NEW; END $$"""
        )
        conn.execute(
            "CREATE TRIGGER refuse_666 BEFORE INSERT ON telemetry FOR EACH ROW "
            "EXECUTE FUNCTION refuse_666()"
        )
    gw = fake_gateway(enterprise="ent-p", gateway="gw-p", devices=["dev-1"])
    gw.birth()
    t = now_ms()
    for n in range(10):
        value = 666.0 if n == 6 else float(n)
        batch = gw.batch([Sample(device="dev-1", signal="spindle_speed", ts_ms=t + n, value=value)])
        gw.send(batch, wait=False)
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 9
            and scalar(pg_url, "SELECT count(*) FROM dead_letters") == 1
        ),
        timeout_s=20,
        what="nine batches stored and one dead-lettered",
    )
    reason, detail = rows(pg_url, "SELECT reason, detail FROM dead_letters")[0]
    assert reason == "storage_rejected" and "value 666 refused" in detail
    assert scalar(pg_url, "SELECT count(*) FROM telemetry") == 9
    assert service.metrics.flush_failures.labels("data")._value.get() >= 1
    assert topics.telemetry("ent-p", "gw-p") == scalar(pg_url, "SELECT topic FROM dead_letters")
