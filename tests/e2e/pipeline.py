"""The pieces of an end-to-end run, for the drills: processes, site files, metrics, rows, truth.

Simulators run as ``tests/e2e/simctl.py`` (a process that takes fault commands on stdin), the
gateway as ``shulian gateway run``, the ingest as ``shulian ingest run``, each with its log in the
test's folder. The checks read what a user would: the gateway's Prometheus endpoint, its disk
buffer, and the ingest's database, and compare the stored rows with the simulators' ground truth.
"""

from __future__ import annotations

import bisect
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from monitoring.db.migrate import migrate_all
from simulators.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]
SIMCTL = Path(__file__).resolve().parent / "simctl.py"

ENTERPRISE = "ent-drill"
GATEWAY = "gw-drill"
FORCED_HEARTBEAT_S = 0.001
"""A heartbeat shorter than any poll interval: report by exception passes every read."""

# ------------------------------------------------------------------------------------ processes


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m shulian ARGS`` with its output appended to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "shulian", *args], cwd=REPO,
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )  # fmt: skip


def stop(proc: subprocess.Popen[Any] | None, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not end in time."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn_ingest(pg_url: str, mqtt_url: str, log: Path) -> subprocess.Popen[bytes]:
    """``ingest run --no-api`` over a database whose monitoring schema is migrated too (as an
    operator runs ``ingest migrate`` and ``monitoring migrate`` first): these tests read what the
    ingest stored through the monitoring's API, which runs in the test's own process."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate_all(conn, os.environ.get("SHULIAN_INGEST_STORAGE__PATH", "auto"))
    return spawn(
        ["ingest", "run", "--no-api", "--db", pg_url, "--mqtt", mqtt_url,
         "--auto-register-gateways"],
        log,
    )  # fmt: skip


def ingest_is_subscribed(log: Path) -> bool:
    """The ingest has its schema and has subscribed: from now on no gateway message is missed."""
    return log.exists() and "subscribed to" in log.read_text(errors="replace")


def spawn_gateway(site: Path, log: Path) -> subprocess.Popen[bytes]:
    return spawn(["gateway", "run", "--config", str(site)], log)


def log_tails(folder: Path, chars: int = 3000) -> str:
    """The end of every log in ``folder``, for an assertion message."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
        for p in sorted(folder.glob("*.log"))
    )


class Simulators:
    """``simctl.py`` serving a scenario; ``command`` sends it a fault command and returns the reply."""

    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.workdir = workdir
        self.spec = workdir / "scenario.json"
        self.spec.write_text(scenario.model_dump_json())
        self.truth_file = workdir / "truth.jsonl"
        self.proc: subprocess.Popen[str] | None = None
        self.endpoints: list[dict[str, Any]] = []
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self, timeout_s: float = 60) -> Simulators:
        self.proc = subprocess.Popen(
            [sys.executable, str(SIMCTL), str(self.spec), str(self.truth_file)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=(self.workdir / "sim.log").open("ab"), text=True,
        )  # fmt: skip
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self._reply(timeout_s)
        assert ready.get("ready"), f"simulators did not start: {ready}"
        self.endpoints = ready["endpoints"]
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = json.loads(self._lines.get(timeout=timeout_s))
        except queue.Empty:
            tail = (self.workdir / "sim.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"simulators gave no answer in {timeout_s} s:\n{tail}") from None
        return reply

    def command(self, line: str, timeout_s: float = 30) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self._reply(timeout_s)
        assert reply.get("ok"), f"simulator command {line!r} failed: {reply}"
        return reply

    def endpoint(self, device: str) -> dict[str, Any]:
        return next(e for e in self.endpoints if e["id"] == device)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                stop(self.proc)


# ---------------------------------------------------------------------------- profiles and site


def forced_profiles(folder: Path, kinds: Iterable[str], interval_ms: int) -> dict[str, str]:
    """Profiles extending each kind's shipped profile with every group at ``interval_ms`` and
    every read reported (heartbeat shorter than the interval); returns kind -> profile id."""
    from gateway.profiles.loader import ProfileResolver

    folder.mkdir(parents=True, exist_ok=True)
    resolver = ProfileResolver()
    ids = {}
    for kind in sorted(set(kinds)):
        loaded = resolver.load(kind)
        groups = ", ".join(
            f"{{name: {g.name}, interval_ms: {interval_ms}}}" for g in loaded.profile.groups
        )
        ids[kind] = f"drill_{kind}"
        (folder / f"drill_{kind}.yaml").write_text(
            f"id: drill_{kind}\nextends: {loaded.file}\nheartbeat_s: {FORCED_HEARTBEAT_S}\n"
            f"groups: [{groups}]\n"
        )
    return ids


def signals_of(kind: str) -> int:
    from gateway.profiles.loader import ProfileResolver

    return len(ProfileResolver().load(kind).profile.signals)


def write_site(
    path: Path,
    *,
    mqtt_url: str,
    metrics_port: int,
    endpoints: list[dict[str, Any]],
    profiles: dict[str, str] | None = None,
    profile_paths: list[Path] | None = None,
    data_dir: Path | None = None,
    mqtt: str = "",
    buffer: str = "",
) -> Path:
    """A site file with one device per simulator endpoint (``profiles`` maps kind -> profile)."""
    profiles = profiles or {}
    lines = [
        f"gateway: {{id: {GATEWAY}, enterprise: {ENTERPRISE}, "
        f"data_dir: '{data_dir or path.parent / 'gw'}'}}",
        f"mqtt: {{url: '{mqtt_url}', reconnect_min_s: 0.5, reconnect_max_s: 2{mqtt}}}",
        f"metrics: {{port: {metrics_port}, publish_interval_s: 5}}",
        # Off: tests start gateways side by side, and 8765 may be a real gateway's on this host.
        "status: {port: 0}",
        "reload: {watch_interval_s: 0}",
    ]
    if buffer:
        lines.append(f"buffer: {{{buffer}}}")
    if profile_paths:
        lines.append(f"profile_paths: [{', '.join(repr(str(p)) for p in profile_paths)}]")
    lines.append("devices:")
    for e in endpoints:
        scheme = "opc.tcp" if e["protocol"] == "opcua" else "tcp"
        unit = f", unit_id: {e['unit_id']}" if e.get("unit_id") else ""
        lines.append(
            f"  - {{id: {e['id']}, profile: {profiles.get(e['kind'], e['kind'])}, "
            f"endpoint: '{scheme}://{e['host']}:{e['port']}'{unit}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


# -------------------------------------------------------------------------------------- metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, label: str = "") -> float:
    """Sum of the samples of metric ``name`` (those whose labels contain ``label``)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or (label and label not in line):
            continue
        head = line.split(" ")[0]
        if head == name or head.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------- disk buffer


@dataclass(frozen=True)
class BufferedBatch:
    boot: str
    seq: int
    samples: list[dict[str, Any]]


def read_buffer(data_dir: Path) -> list[BufferedBatch]:
    """Every batch in a (stopped) gateway's disk buffer, samples decoded."""
    db = sqlite3.connect(f"file:{data_dir / 'buffer.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT boot, seq, payload FROM batches ORDER BY id").fetchall()
    finally:
        db.close()
    return [BufferedBatch(b, s, json.loads(zlib.decompress(p))) for b, s, p in rows]


# ---------------------------------------------------------------------------------- database


@dataclass(frozen=True)
class Row:
    device: str
    signal: str
    ts_ms: int
    value: Any
    quality: int


_ROWS_SQL = """
    SELECT d.device_id, s.name, (extract(epoch FROM t.ts) * 1000)::bigint,
           coalesce(t.value_text, t.value::text), t.quality
    FROM telemetry t JOIN devices d ON d.key = t.device_key JOIN signals s ON s.id = t.signal_id
    WHERE t.value_text IS DISTINCT FROM 'offline'  -- derived by the ingest, never served
"""


def rows(pg_url: str, where: str = "", params: tuple[Any, ...] = ()) -> list[Row]:
    """Stored samples (not the ingest's derived ``offline`` states), optionally filtered."""
    sql = _ROWS_SQL + (f" AND {where}" if where else "")
    with psycopg.connect(pg_url) as conn:
        return [Row(*r) for r in conn.execute(sql, params).fetchall()]


def count_rows(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM telemetry WHERE value_text IS DISTINCT FROM 'offline'"
        ).fetchone()
    return int(row[0]) if row else 0


def duplicates(pg_url: str) -> list[tuple[Any, ...]]:
    """Rows stored more than once: the same device, signal and timestamp (with their values)."""
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT d.device_id, s.name, t.ts, count(*), "
            "       array_agg(coalesce(t.value_text, t.value::text) || '/q' || t.quality) "
            "FROM telemetry t JOIN devices d ON d.key = t.device_key "
            "JOIN signals s ON s.id = t.signal_id "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1 LIMIT 10"
        ).fetchall()


def dead_letters(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute("SELECT reason, detail FROM dead_letters LIMIT 10").fetchall()


def boots(pg_url: str) -> dict[str, tuple[int, int]]:
    """Per boot of the drill gateway: (highest seq stored, batches stored)."""
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT boot, max_seq, batches FROM gateway_boots WHERE gateway_id = %s", (GATEWAY,)
        ).fetchall()
    return {b: (int(m), int(n)) for b, m, n in found}


def query(pg_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql, params).fetchall()


# ------------------------------------------------------------------------------- ground truth

Truth = dict[tuple[str, str], list[tuple[int, Any]]]


def load_truth(path: Path) -> Truth:
    series: Truth = defaultdict(list)
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "signal" in item:
            series[(item["device"], item["signal"])].append((item["ts_ms"], item["value"]))
    return series


def same(stored: Any, served: Any) -> bool:
    if isinstance(served, bool):
        return float(stored) == float(served)
    if isinstance(served, int | float):
        return abs(float(stored) - float(served)) <= 1e-6 * max(1.0, abs(float(served)))
    return str(stored) == str(served)


def served_between(points: list[tuple[int, Any]], start_ms: int, end_ms: int) -> list[Any]:
    """Values the simulator served at some moment in [start_ms, end_ms]."""
    times = [t for t, _ in points]
    first = max(0, bisect.bisect_right(times, start_ms) - 1)
    last = bisect.bisect_right(times, end_ms)
    return [v for _, v in points[first:last]]


def never_served(
    stored: Iterable[Row], truth: Truth, back_ms: int = 1500, ahead_ms: int = 50
) -> list[tuple[Any, ...]]:
    """Good stored rows whose value the simulator did not serve in [ts - back_ms, ts + ahead_ms]."""
    wrong: list[tuple[Any, ...]] = []
    for row in stored:
        if row.quality != 0:
            continue
        points = truth.get((row.device, row.signal))
        if points is None:
            wrong.append((row.device, row.signal, row.ts_ms, row.value, "signal never served"))
            continue
        candidates = served_between(points, row.ts_ms - back_ms, row.ts_ms + ahead_ms)
        if not any(same(row.value, v) for v in candidates):
            wrong.append((row.device, row.signal, row.ts_ms, row.value, candidates[-3:]))
    return wrong


def missed_changes(
    stored: Iterable[Row],
    truth: Truth,
    signals: set[str],
    start_ms: int,
    end_ms: int,
    lasting_ms: int,
    late_ms: int = 1500,
) -> list[tuple[Any, ...]]:
    """Served values of ``signals`` that held for ``lasting_ms`` within [start_ms, end_ms] but
    were never stored while they held."""
    by_series: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in stored:
        by_series[(row.device, row.signal)].append(row)
    missed = []
    for (device, sig), points in truth.items():
        if sig not in signals:
            continue
        series = by_series.get((device, sig), [])
        for (t0, value), (t1, _) in zip(points, [*points[1:], (end_ms, None)], strict=True):
            if min(t1, end_ms) - max(t0, start_ms) < lasting_ms:
                continue
            if not any(same(r.value, value) and t0 - 50 <= r.ts_ms <= t1 + late_ms for r in series):
                missed.append((device, sig, t0, value))
    return missed
