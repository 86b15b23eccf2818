"""Gateway ids are unique per enterprise (issue 10): ent-b/gw-01 is not ent-a/gw-01.

Through a real Mosquitto and PostgreSQL: both store, each under its own enterprise's devices, the
exactly-once ledger keeps their (boot, seq) apart, and one's Last Will leaves the other alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from ingest_support import FakeGateway, now_ms, rows, scalar, wait_until

from ingest.db.migrate import INGEST_CHAIN, MIGRATIONS_DIR, Chain, migrate
from wire.payloads import Sample

SEQS = range(1, 6)


def stored(url: str) -> list[tuple[str, str, str, int, float]]:
    """(enterprise, gateway, device, ts_ms, value) of every spindle_speed row."""
    return rows(
        url,
        """SELECT d.enterprise_id, d.gateway_id, d.device_id,
                  (extract(epoch FROM t.ts) * 1000)::bigint, t.value
           FROM telemetry t JOIN devices d ON d.key = t.device_key
           JOIN signals s ON s.id = t.signal_id
           WHERE s.name = 'spindle_speed' ORDER BY 1, 2, 3, 4""",
    )


def send_seqs(gw: FakeGateway, t0: int, base: float) -> None:
    for seq in SEQS:
        samples = [
            Sample(device=d, signal="spindle_speed", ts_ms=t0 + seq, value=base + seq)
            for d in gw.devices
        ]
        gw.send(gw.batch(samples, seq=seq))


def test_two_enterprises_with_gateway_gw_01_both_store_exactly_once(
    start_ingest, fake_gateway, pg_url
):
    start_ingest()  # auto-registration on, as in the demo
    gw_a = fake_gateway(enterprise="ent-a", gateway="gw-01", devices=["dev-1", "dev-2"])
    gw_b = fake_gateway(enterprise="ent-b", gateway="gw-01", devices=["dev-1", "dev-3"])
    gw_b.boot = gw_a.boot  # even the same boot id: the ledger must still tell them apart
    gw_a.birth()
    gw_b.birth()
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM devices") == 4, what="both births applied"
    )
    t0 = now_ms()
    send_seqs(gw_a, t0, 100.0)
    send_seqs(gw_b, t0, 200.0)
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 2 * len(SEQS),
        what="both gateways' batches in the ledger",
    )
    expected = sorted(
        [("ent-a", "gw-01", d, t0 + s, 100.0 + s) for d in gw_a.devices for s in SEQS]
        + [("ent-b", "gw-01", d, t0 + s, 200.0 + s) for d in gw_b.devices for s in SEQS]
    )
    wait_until(lambda: stored(pg_url) == expected, what="both gateways' samples stored")
    assert rows(pg_url, "SELECT enterprise_id, id, online FROM gateways ORDER BY 1") == [
        ("ent-a", "gw-01", True),
        ("ent-b", "gw-01", True),
    ]
    assert rows(
        pg_url, "SELECT enterprise_id, gateway_id, max_seq, batches FROM gateway_boots ORDER BY 1"
    ) == [("ent-a", "gw-01", 5, 5), ("ent-b", "gw-01", 5, 5)]
    assert scalar(pg_url, "SELECT count(*) FROM dead_letters") == 0

    # Redeliveries of both gateways' seq 3 are skipped, each by its own ledger row.
    for gw, base in ((gw_a, 100.0), (gw_b, 200.0)):
        samples = [
            Sample(device=d, signal="spindle_speed", ts_ms=t0 + 3, value=base + 3)
            for d in gw.devices
        ]
        gw.send(gw.batch(samples, seq=3))
    late = [Sample(device="dev-3", signal="spindle_speed", ts_ms=t0 + 9, value=9)]
    gw_b.send(gw_b.batch(late, seq=len(SEQS) + 1))
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM batch_ledger") == 2 * len(SEQS) + 1,
        what="the new batch after the redeliveries",
    )
    assert stored(pg_url) == sorted([*expected, ("ent-b", "gw-01", "dev-3", t0 + 9, 9.0)])

    # ent-b's gateway dies: only ent-b's devices go offline, ent-a's stay as they were.
    gw_b.birth(online=False)
    wait_until(
        lambda: (
            rows(pg_url, "SELECT enterprise_id, online FROM gateways ORDER BY 1")
            == [("ent-a", True), ("ent-b", False)]
        ),
        what="ent-b's gateway offline",
    )
    offline = rows(
        pg_url,
        """SELECT d.enterprise_id, d.device_id FROM device_states s
           JOIN devices d ON d.key = s.device_key WHERE s.state = 'offline' ORDER BY 1, 2""",
    )
    assert offline == [("ent-b", "dev-1"), ("ent-b", "dev-3")]


def test_a_registered_gateway_id_admits_no_other_enterprise(start_ingest, fake_gateway, pg_url):
    start_ingest(registry={"auto_register_gateways": False})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO enterprises (id, name) VALUES ('ent-a', 'A'), ('ent-b', 'B')")
        conn.execute("INSERT INTO gateways (id, enterprise_id) VALUES ('gw-01', 'ent-a')")
        conn.execute(
            "INSERT INTO devices (enterprise_id, device_id, gateway_id) "
            "VALUES ('ent-a', 'dev-1', 'gw-01'), ('ent-b', 'dev-1', NULL)"
        )
    other = fake_gateway(enterprise="ent-b", gateway="gw-01", devices=["dev-1"])
    other.send(
        other.batch([Sample(device="dev-1", signal="spindle_speed", ts_ms=now_ms(), value=2)])
    )
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM dead_letters") == 1, what="rejected")
    reason, enterprise, detail = rows(
        pg_url, "SELECT reason, enterprise_id, detail FROM dead_letters"
    )[0]
    assert (reason, enterprise) == ("unknown_gateway", "ent-b")
    assert "gateway 'gw-01' of enterprise 'ent-b' is not registered" in detail

    own = fake_gateway(enterprise="ent-a", gateway="gw-01", devices=["dev-1"])
    own.send(own.batch([Sample(device="dev-1", signal="spindle_speed", ts_ms=now_ms(), value=1)]))
    wait_until(lambda: len(stored(pg_url)) == 1, what="ent-a's sample stored")
    assert [r[:3] for r in stored(pg_url)] == [("ent-a", "gw-01", "dev-1")]


def test_migration_0005_keeps_existing_gateways_boots_and_devices(pg_url, tmp_path: Path):
    """A database created before gateway ids were per enterprise keeps its data and ledger."""
    old = tmp_path / "migrations"
    old.mkdir()
    for file in MIGRATIONS_DIR.glob("*.sql"):
        if int(file.name[:4]) < 5:
            shutil.copy(file, old / file.name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, "auto", (Chain("ingest", old, INGEST_CHAIN.command),))
        conn.execute("INSERT INTO enterprises (id, name) VALUES ('ent-a', 'A'), ('ent-b', 'B')")
        conn.execute("INSERT INTO gateways (id, enterprise_id) VALUES ('gw-01', 'ent-a')")
        conn.execute(
            "INSERT INTO devices (enterprise_id, device_id, gateway_id) VALUES "
            "('ent-a', 'dev-1', 'gw-01')"
        )
        boot_key = conn.execute(
            "INSERT INTO gateway_boots (gateway_id, boot, max_seq, batches) "
            "VALUES ('gw-01', 'b1', 7, 7) RETURNING key"
        ).fetchone()
        result = migrate(conn, "auto")
        assert "0005_gateway_identity.sql" in result.applied
        assert conn.execute(
            "SELECT key, enterprise_id, gateway_id, boot, max_seq FROM gateway_boots"
        ).fetchall() == [(boot_key[0], "ent-a", "gw-01", "b1", 7)]
        # now ent-b may have its own gw-01, and a device may name it
        conn.execute("INSERT INTO gateways (id, enterprise_id) VALUES ('gw-01', 'ent-b')")
        conn.execute(
            "INSERT INTO devices (enterprise_id, device_id, gateway_id) VALUES "
            "('ent-b', 'dev-1', 'gw-01')"
        )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(  # a device naming a gateway its enterprise does not have
                "INSERT INTO devices (enterprise_id, device_id, gateway_id) VALUES "
                "('ent-b', 'dev-2', 'gw-02')"
            )
