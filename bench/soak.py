"""Reconnect soak: one gateway process through hundreds of OPC UA server restarts and Modbus outages.

Runs, each as its own process: a private Mosquitto (the project's config), one gateway
(``python -m shulian gateway run`` with a generated site file, default reconnect delays, INFO
text log), and the simulators, one process per server (``python -m simulators run --scenario``)
so a server can be stopped and started again on its port as a real one is:

- ``--opcua-servers`` OPC UA servers (3 machines each) that are restarted, in turn SIGTERM (an
  orderly stop) and SIGKILL (a crash), then started again at once;
- ``--modbus-servers`` Modbus TCP servers (4 units each) that are stopped for ``--outage-s``;
- one steady process (an OPC UA and a Modbus server) that is never touched: its devices must not
  lose a second of data while the others come and go.

Each server has its own worker thread (stop, start, wait until every device of that server is
back, stay up ``--up-s`` with jitter, again), so restarts of different servers overlap as they
would on a shop floor. A subscriber in this process receives the telemetry and device status
topics. Recovery time of one device = from the server being back (its process printed
"simulators ready") until the first good sample read after the stop arrives at the broker
(``sample``), and until the device's status says ``connected`` again (``status``).

Phases and RSS (from /proc, once a second): start (every device has sent a good sample), warm-up
(``--warmup-s``), a calm baseline of ``--calm-s`` with no restarts (the same gateway, the same
devices: what its RSS does without restarts), the restarts, and ``--settle-s`` after the last one.
"RSS settles" means the gateway's RSS grows by less than ``--settle-mb`` over the last half of the
restarts (least-squares line through the samples from the half-way restart to the end, times that
time). The baselines measured in the same run are the calm phase's growth and the first half's
growth; the line gives both and their ratios.

Also checked: duplicates (a sample of the same device, signal and timestamp received twice),
gaps (more than ``--gap-s`` without a good sample from a device while its server was up: lost
data), status reports per restart (a restart should be one ``disconnected``, never a
``connected`` while the server is down), ERROR lines, tracebacks and warnings in the gateway's log.

    python bench/soak.py                                   # 240 OPC UA restarts, 60 outages
    python bench/soak.py --opcua-restarts 200 --modbus-outages 50
    python bench/soak.py --quick                           # smoke: a few of each, < 60 s

Progress goes to stderr; the last line on stdout is one JSON object. ``BENCH_GATEWAY_PYTHON_ARGS``
is put between the Python executable and ``-m shulian`` (as in bench/gateway.py), e.g. a wrapper
that takes tracemalloc snapshots.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402  (bench/ is on sys.path when run as a script)
    environment,
    percentile,
    stop_process,
    subscribe,
    wait_for,
    watch_rss,
)

GATEWAY_ID, ENTERPRISE = "gw-soak", "ent-soak"
OPCUA_KINDS = ("machining_centre", "bearing_lathe", "injection_moulding")
MODBUS_KINDS = ("gear_hobber", "servo_press", "air_compressor", "welding_cell")
STEADY = (
    ("raceway_grinder", "opcua"),
    ("gear_grinder", "modbus"),
    ("tightening_station", "modbus"),
)
HEARTBEAT_S = 1.0
"""Every signal is published at least once a second, so a gap of a few seconds is lost data."""
RECOVERY_TIMEOUT_S = 90.0
GATEWAY_PYTHON_ARGS: list[str] = os.environ.get("BENCH_GATEWAY_PYTHON_ARGS", "").split()
"""Put between the Python executable and ``-m shulian`` (a profiler's or tracemalloc wrapper)."""
READY_LINE = b"simulators ready"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ------------------------------------------------------------------ simulator processes


@dataclass
class Server:
    """One simulator process serving one scenario (one server, or the steady pair)."""

    name: str
    protocol: str  # "opcua", "modbus" or "steady"
    scenario: Path
    devices: list[str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> float:
        """Start the process; returns the monotonic time it said it serves (raises after 60 s)."""
        self.starts += 1
        out = self.log_dir / f"{self.name}-{self.starts}.out"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators", "run", "--scenario", str(self.scenario)],
            cwd=REPO, stdout=out.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while READY_LINE not in out.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator {self.name} did not start: see {out}")
            time.sleep(0.02)
        return time.monotonic()

    def stop(self, crash: bool) -> None:
        """SIGKILL (a crash: no goodbye on the sockets) or SIGTERM (an orderly stop)."""
        assert self.proc is not None
        if crash:
            self.proc.kill()
            self.proc.wait()
        else:
            stop_process(self.proc)


def write_scenarios(workdir: Path, opcua: int, modbus: int) -> list[Server]:
    from shulian.devservices import free_ports

    ports = free_ports(opcua + modbus + 2)
    servers: list[Server] = []
    specs: list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]] = []
    for n in range(opcua):
        name = f"opcua-{n + 1}"
        machines = [{"id": f"{name}-{k}", "kind": k, "server": name} for k in OPCUA_KINDS]
        specs.append((name, "opcua", [{"name": name, "protocol": "opcua", "port": ports.pop()}],
                      machines))  # fmt: skip
    for n in range(modbus):
        name = f"modbus-{n + 1}"
        machines = [
            {"id": f"{name}-{k}", "kind": k, "server": name, "unit_id": u + 1}
            for u, k in enumerate(MODBUS_KINDS)
        ]
        specs.append((name, "modbus", [{"name": name, "protocol": "modbus", "port": ports.pop()}],
                      machines))  # fmt: skip
    steady_servers = [
        {"name": "steady-opcua", "protocol": "opcua", "port": ports.pop()},
        {"name": "steady-modbus", "protocol": "modbus", "port": ports.pop()},
    ]
    steady_machines = [
        {"id": f"steady-{k}", "kind": k, "server": f"steady-{p}", **({"unit_id": u + 1} if p == "modbus" else {})}
        for u, (k, p) in enumerate(STEADY)
    ]  # fmt: skip
    specs.append(("steady", "steady", steady_servers, steady_machines))
    for name, protocol, server_specs, machines in specs:
        scenario = {"name": name, "seed": 7, "tick_ms": 100, "gauge_period_s": 0.5,
                    "host": "127.0.0.1", "servers": server_specs, "instances": machines}  # fmt: skip
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(scenario))
        servers.append(Server(name, protocol, path, [m["id"] for m in machines], workdir))
    (workdir / "endpoints.json").write_text(
        json.dumps(
            [
                {"id": m["id"], "kind": m["kind"], "unit_id": m.get("unit_id"),
                 "protocol": next(s["protocol"] for s in ss if s["name"] == m["server"]),
                 "port": next(s["port"] for s in ss if s["name"] == m["server"])}
                for _, _, ss, ms in specs for m in ms
            ]
        )
    )  # fmt: skip
    return servers


def write_site(workdir: Path, broker_url: str) -> Path:
    """Profiles that extend the shipped ones with a 1 s heartbeat, and the site file."""
    from gateway.profiles.loader import ProfileResolver

    endpoints = json.loads((workdir / "endpoints.json").read_text())
    folder = workdir / "profiles"
    folder.mkdir(exist_ok=True)
    for kind in sorted({e["kind"] for e in endpoints}):
        loaded = ProfileResolver().load(kind)
        (folder / f"soak_{kind}.yaml").write_text(
            f"id: soak_{kind}\nextends: {loaded.file}\nheartbeat_s: {HEARTBEAT_S}\n"
        )
    lines = [
        f"gateway: {{id: {GATEWAY_ID}, enterprise: {ENTERPRISE}}}",
        f"mqtt: {{url: '{broker_url}'}}",
        "metrics: {port: 0}",
        "log: {level: INFO, format: text}",
        "reload: {watch_interval_s: 0}",
        "profile_paths: [profiles]",
        "devices:",
    ]
    for e in endpoints:
        scheme = "opc.tcp" if e["protocol"] == "opcua" else "tcp"
        unit = f", unit_id: {e['unit_id']}" if e.get("unit_id") else ""
        lines.append(
            f"  - {{id: {e['id']}, profile: soak_{e['kind']}, "
            f"endpoint: '{scheme}://127.0.0.1:{e['port']}'{unit}}}"
        )
    site = workdir / "site.yaml"
    site.write_text("\n".join(lines) + "\n")
    return site


# ------------------------------------------------------------------ what arrives at the broker


@dataclass
class Arm:
    """One device's watch during one restart or outage of its server."""

    stop_ms: int
    exited: bool = False
    """The server's process has exited (until then a SIGTERM'd server may still answer)."""
    back_mono: float | None = None
    sample_mono: float | None = None
    status_mono: float | None = None
    not_connected_reports: int = 0
    reconnected_while_stopping: int = 0
    connected_while_down: int = 0


@dataclass
class Watcher:
    """Receives telemetry and device status; fills the arms; counts duplicates and gaps."""

    gap_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    arms: dict[str, Arm] = field(default_factory=dict)
    good_seen: set[str] = field(default_factory=set)
    last_good_mono: dict[str, float] = field(default_factory=dict)
    last_status: dict[str, str] = field(default_factory=dict)
    gaps: list[tuple[str, float, float]] = field(default_factory=list)
    seen: dict[tuple[str, str, int], Any] = field(default_factory=dict)
    """Every (device, signal, timestamp) received, with its value."""
    batches_seen: set[tuple[str, int]] = field(default_factory=set)
    samples: int = 0
    duplicates: int = 0
    """Samples whose device, signal and timestamp arrived before, in a batch never seen before:
    the gateway produced them twice (a redelivered batch, same boot and seq, is MQTT's QoS 1)."""
    redelivered_batches: int = 0
    same_timestamp_other_value: int = 0
    """Samples whose device, signal and timestamp arrived before with another value: the server
    wrote the variable twice under one source timestamp (kept: the values differ)."""
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import orjson

        now = time.monotonic()
        payload = orjson.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/telemetry"):
                self._telemetry(payload, now)
            elif "/devices/" in msg.topic:
                self._status(payload, now)

    def _telemetry(self, batch: dict[str, Any], now: float) -> None:
        batch_key = (batch["boot"], batch["seq"])
        if batch_key in self.batches_seen:
            self.redelivered_batches += 1
            return
        self.batches_seen.add(batch_key)
        for sample in batch["samples"]:
            device = sample["device"]
            key = (device, sample["signal"], sample["ts_ms"])
            self.samples += 1
            if key in self.seen and self.seen[key] != sample["value"]:
                self.same_timestamp_other_value += 1
            elif key in self.seen:
                self.duplicates += 1
                if len(self.duplicate_examples) < 5:
                    self.duplicate_examples.append(
                        {"sample": key, "values": [self.seen[key], sample["value"]],
                         "quality": sample.get("quality", "good")}
                    )  # fmt: skip
            self.seen[key] = sample["value"]
            if sample.get("quality", "good") != "good":
                continue
            self.good_seen.add(device)
            last = self.last_good_mono.get(device)
            if last is not None and now - last > self.gap_s:
                self.gaps.append((device, last, now))
            self.last_good_mono[device] = now
            arm = self.arms.get(device)
            if (
                arm is not None
                and arm.back_mono is not None
                and arm.sample_mono is None
                and sample["ts_ms"] >= arm.stop_ms
            ):
                arm.sample_mono = now

    def _status(self, status: dict[str, Any], now: float) -> None:
        device, connection = status["device"], status["connection"]
        self.last_status[device] = connection
        arm = self.arms.get(device)
        if arm is None:
            return
        if connection != "connected":
            arm.not_connected_reports += 1
        elif not arm.exited:
            arm.reconnected_while_stopping += 1
        elif arm.back_mono is None:
            arm.connected_while_down += 1
        elif arm.status_mono is None:
            arm.status_mono = now


# ------------------------------------------------------------------ restart workers


@dataclass
class Budget:
    """How many events of one kind are left; the workers of that kind take from it."""

    left: int
    deadline_mono: float = float("inf")
    """No new event starts after this (``--max-minutes``)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0 or time.monotonic() > self.deadline_mono:
                return False
            self.left -= 1
            return True


@dataclass
class Soak:
    watcher: Watcher
    up_s: float
    outage_s: float
    events: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the bench ends early (an error, SIGTERM): workers start nothing new."""
    workers: list[threading.Thread] = field(default_factory=list)

    def start_workers(self, servers: list[Server], budgets: dict[str, Budget]) -> None:
        self.workers = [
            threading.Thread(target=self.run_worker, args=(s, budgets[s.protocol], n), daemon=True)
            for n, s in enumerate(servers)
            if s.protocol in budgets
        ]
        for worker in self.workers:
            worker.start()

    def stop_workers(self) -> None:
        """Let each worker finish the start it is in (so no simulator is left behind)."""
        self.stopping.set()
        for worker in self.workers:
            worker.join(RECOVERY_TIMEOUT_S)

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.events)

    def run_worker(self, server: Server, budget: Budget, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while budget.take():
                if self.stopping.wait(self.up_s * rng.uniform(0.5, 1.5)):
                    return
                self.one_event(server, crash=server.starts % 2 == 0)
        except Exception as exc:  # reported in the JSON line; the other workers go on
            self.errors.append(f"{server.name}: {exc!r}")

    def one_event(self, server: Server, crash: bool) -> None:
        """Stop the server, start it again (after the outage, for Modbus), wait for recovery."""
        watcher = self.watcher
        with watcher.lock:
            stop_ms = now_ms()
            for device in server.devices:
                watcher.arms[device] = Arm(stop_ms=stop_ms)
        stop_mono = time.monotonic()
        server.stop(crash)
        with watcher.lock:
            for device in server.devices:
                watcher.arms[device].exited = True
        if server.protocol == "modbus" and self.stopping.wait(self.outage_s):
            return
        back = server.start()
        with watcher.lock:
            for device in server.devices:
                watcher.arms[device].back_mono = back
        deadline = back + RECOVERY_TIMEOUT_S
        while time.monotonic() < deadline and not self._recovered(server):
            if self.stopping.wait(0.02):
                return
        with watcher.lock:
            arms = {d: watcher.arms.pop(d) for d in server.devices}
        end = max([a.sample_mono or time.monotonic() for a in arms.values()])
        event = {
            "server": server.name,
            "protocol": server.protocol,
            "stop": "kill" if crash else "term",
            "down_s": round(back - stop_mono, 2),
            "sample_s": [_since(back, a.sample_mono) for a in arms.values()],
            "status_s": [_since(back, a.status_mono) for a in arms.values()],
            "not_connected_reports": [a.not_connected_reports for a in arms.values()],
            "reconnected_while_stopping": [a.reconnected_while_stopping for a in arms.values()],
            "connected_while_down": sum(a.connected_while_down for a in arms.values()),
        }
        with self.lock:
            self.events.append(event)
            self.windows.setdefault(server.name, []).append((stop_mono, end))
            count = len(self.events)
        worst = max((s for s in event["sample_s"] if s is not None), default=None)
        print(f"soak: {count} {server.name} {event['stop']} down {event['down_s']} s, "
              f"data back after {worst} s", file=sys.stderr)  # fmt: skip

    def _recovered(self, server: Server) -> bool:
        with self.watcher.lock:
            arms = [self.watcher.arms[d] for d in server.devices]
            return all(
                a.sample_mono is not None
                and (a.status_mono is not None or a.not_connected_reports == 0)
                for a in arms
            )


def _since(start: float, end: float | None) -> float | None:
    return None if end is None else round(end - start, 3)


# ------------------------------------------------------------------ figures


def growth_mb(points: list[tuple[float, float]]) -> float | None:
    """RSS growth over the points' time span: the least-squares line's slope times the span."""
    if len(points) < 3:
        return None
    times, values = zip(*points, strict=True)
    slope, _ = statistics.linear_regression(times, values)
    return round(slope * (times[-1] - times[0]), 2)


def mean_rss(points: list[tuple[float, float]], last: int = 5) -> float | None:
    return round(statistics.fmean(v for _, v in points[-last:]), 1) if points else None


def recovery_figures(events: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    mine = [e for e in events if e["protocol"] == protocol]
    samples = [s for e in mine for s in e["sample_s"] if s is not None]
    statuses = [s for e in mine for s in e["status_s"] if s is not None]
    reports = [r for e in mine for r in e["not_connected_reports"]]
    return {
        "events": len(mine),
        "events_by_stop": dict(Counter(e["stop"] for e in mine)),
        "devices_per_event": len(mine[0]["sample_s"]) if mine else 0,
        "device_recoveries": len(samples),
        "device_not_recovered": sum(s is None for e in mine for s in e["sample_s"]),
        "sample_recovery_s": _spread(samples),
        "status_recovery_s": _spread(statuses),
        "down_s_p50": percentile([e["down_s"] for e in mine], 0.5),
        "not_connected_reports_per_device_event": dict(Counter(reports)),
        # A server stopping in order may take a reconnect before it exits: a second outage.
        "reconnected_while_stopping": sum(r for e in mine for r in e["reconnected_while_stopping"]),
        "extra_not_connected_reports": sum(
            max(0, n - 1 - r)
            for e in mine
            for n, r in zip(
                e["not_connected_reports"], e["reconnected_while_stopping"], strict=True
            )
        ),
        "connected_while_down": sum(e["connected_while_down"] for e in mine),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": round(max(values), 2) if values else None,
    }


def log_figures(log: Path, events: int) -> dict[str, Any]:
    """Counts of the gateway's log: levels, tracebacks, lines outside the log format."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    unformatted = 0
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            unformatted += 1
            continue
        levels[match.group(1)] += 1
        if match.group(1) in ("WARNING", "ERROR", "CRITICAL"):
            # The message without its variable parts: "level logger: text up to a digit or '('".
            head = re.split(r"[\d(\[]", line[match.end() :], maxsplit=1)[0]
            messages[f"{match.group(1)} {head.strip()[:90]}"] += 1
    return {
        "error_lines": levels["ERROR"] + levels["CRITICAL"],
        "tracebacks": text.count("Traceback (most recent call last)"),
        "warning_lines": levels["WARNING"],
        "warnings_per_event": round(levels["WARNING"] / events, 2) if events else None,
        "info_lines": levels["INFO"],
        "unformatted_lines": unformatted,
        "top_warnings_and_errors": dict(messages.most_common(8)),
    }


def unexplained_gaps(
    watcher: Watcher, servers: list[Server], windows: dict[str, list[tuple[float, float]]]
) -> list[dict[str, Any]]:
    """Gaps in a device's good samples that no stop of its own server explains: lost data."""
    server_of = {d: s.name for s in servers for d in s.devices}
    lost = []
    for device, start, end in watcher.gaps:
        own = windows.get(server_of.get(device, ""), [])
        if not any(start <= w_end + 2.0 and w_start <= end for w_start, w_end in own):
            lost.append({"device": device, "gap_s": round(end - start, 1)})
    return lost


# ------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    from shulian.devservices import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        workdir = args.keep_dir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        servers = write_scenarios(workdir, args.opcua_servers, args.modbus_servers)
        gateway: subprocess.Popen[bytes] | None = None
        client = None
        soak: Soak | None = None
        try:
            starting = [threading.Thread(target=s.start) for s in servers]
            for thread in starting:
                thread.start()
            for thread in starting:
                thread.join()
            with Mosquitto(workdir / "mosquitto") as broker:
                site = write_site(workdir, broker.url)
                watcher = Watcher(gap_s=args.gap_s)
                base = f"shulian/v1/{ENTERPRISE}/{GATEWAY_ID}"
                client = subscribe(
                    broker.url, [f"{base}/telemetry", f"{base}/devices/+/status"],
                    watcher.on_message,
                )  # fmt: skip
                log = workdir / "gateway.log"
                gateway = subprocess.Popen(
                    [sys.executable, *GATEWAY_PYTHON_ARGS, "-m", "shulian", "gateway", "run", "--config", str(site),
                     "--data-dir", str(workdir / "var")],
                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                )  # fmt: skip
                devices = [d for s in servers for d in s.devices]
                wait_for(lambda: watcher.good_seen >= set(devices), 120, "every device's data")
                soak = Soak(watcher, up_s=args.up_s, outage_s=args.outage_s)
                result = soak_phases(args, soak, servers, watcher, gateway, log)
                stop_process(gateway)
                result["gateway_log"] = log_figures(log, result["events"])
                result["gateway_exit_code"] = gateway.returncode
                return result
        finally:
            if soak is not None:
                soak.stop_workers()
            if client is not None:
                client.disconnect()
                client.loop_stop()
            if gateway is not None:
                stop_process(gateway)
            for server in servers:
                if server.proc is not None:
                    stop_process(server.proc)


def soak_phases(
    args: argparse.Namespace,
    soak: Soak,
    servers: list[Server],
    watcher: Watcher,
    gateway: subprocess.Popen[bytes],
    log: Path,
) -> dict[str, Any]:
    t0 = time.monotonic()
    rss: list[tuple[float, float, int]] = []  # (seconds since start, MB, events done)

    def sample_until(keep_going: Any) -> None:
        for mb in watch_rss(gateway, log, keep_going):
            rss.append((time.monotonic() - t0, mb, soak.done))

    sample_until(lambda: not rss)
    rss_start = rss[0][1]
    sample_until(lambda: time.monotonic() - t0 < args.warmup_s)
    warm = len(rss)
    sample_until(lambda: time.monotonic() - t0 < args.warmup_s + args.calm_s)
    calm = [(t, mb) for t, mb, _ in rss[warm - 1 :]]
    restarts_from = len(rss)
    deadline = time.monotonic() + args.max_minutes * 60 if args.max_minutes else float("inf")
    budgets = {
        "opcua": Budget(args.opcua_restarts, deadline),
        "modbus": Budget(args.modbus_outages, deadline),
    }
    load_before = os.getloadavg()
    soak.start_workers(servers, budgets)
    sample_until(lambda: any(w.is_alive() for w in soak.workers))
    last_event = len(rss)
    load_after = os.getloadavg()
    sample_until(lambda: time.monotonic() - t0 < rss[last_event - 1][0] + args.settle_s)
    total = soak.done
    during = [(t, mb) for t, mb, _ in rss[restarts_from - 1 :]]
    half_at = next((i for i, (_, _, n) in enumerate(rss) if n >= total / 2), len(rss) - 1)
    first_half = [(t, mb) for t, mb, _ in rss[restarts_from - 1 : half_at + 1]]
    last_half = [(t, mb) for t, mb, _ in rss[half_at:]]
    growth_last = growth_mb(last_half)
    growth_first = growth_mb(first_half)
    growth_calm = growth_mb(calm)
    rss_before = mean_rss(calm)
    rss_end = mean_rss(last_half)
    settles = growth_last is not None and growth_last < args.settle_mb
    lost = unexplained_gaps(watcher, servers, soak.windows)
    opcua = recovery_figures(soak.events, "opcua")
    modbus = recovery_figures(soak.events, "modbus")
    devices = [d for s in servers for d in s.devices]
    return {
        "events": total,
        "opcua_restarts": opcua["events"],
        "modbus_outages": modbus["events"],
        "seconds": round(rss[-1][0], 1),
        "restart_phase_s": round(during[-1][0] - during[0][0], 1) if during else None,
        "load_average_1_5_15": {
            "restarts_begin": [round(x, 1) for x in load_before],
            "restarts_end": [round(x, 1) for x in load_after],
        },
        "recovery": {"opcua": opcua, "modbus": modbus},
        "worker_errors": soak.errors,
        "rss_mb": {
            "start": round(rss_start, 1),
            "after_warmup": round(rss[warm - 1][1], 1),
            "before_restarts": rss_before,
            "at_half": round(rss[half_at][1], 1),
            "end": rss_end,
            "peak": round(max(mb for _, mb, _ in rss), 1),
        },
        "rss_growth_mb": {
            "calm_baseline": growth_calm,
            "calm_baseline_s": round(calm[-1][0] - calm[0][0], 1) if calm else None,
            "first_half": growth_first,
            "last_half": growth_last,
            "end_minus_before_restarts": round(rss_end - rss_before, 1)
            if rss_end is not None and rss_before is not None
            else None,
        },
        "rss_last_half_mb_per_100_events": round(growth_last / (total - rss[half_at][2]) * 100, 2)
        if growth_last is not None and total > rss[half_at][2]
        else None,
        "ratios": {
            "last_half_growth_vs_first_half": round(growth_last / growth_first, 2)
            if growth_last is not None and growth_first
            else None,
        },
        "rss_settle_threshold_mb": args.settle_mb,
        "verdict": "rss settles" if settles else "rss grows",
        "rss_series": [[round(t), round(mb, 1), n] for t, mb, n in rss[:: max(1, len(rss) // 60)]],
        "samples_received": watcher.samples,
        "duplicate_samples": watcher.duplicates,
        "redelivered_batches": watcher.redelivered_batches,
        "same_timestamp_other_value": watcher.same_timestamp_other_value,
        "duplicate_examples": watcher.duplicate_examples,
        "gaps_over_s": args.gap_s,
        "unexplained_gaps": len(lost),
        "unexplained_gap_examples": lost[:5],
        "devices": len(devices),
        "devices_connected_at_end": sum(watcher.last_status.get(d) == "connected" for d in devices),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opcua-restarts", type=int, default=240, help="OPC UA restarts in all")
    parser.add_argument("--modbus-outages", type=int, default=60, help="Modbus outages in all")
    parser.add_argument("--opcua-servers", type=int, default=3, help="restarted OPC UA servers")
    parser.add_argument("--modbus-servers", type=int, default=2, help="Modbus servers with outages")
    parser.add_argument(
        "--outage-s", type=float, default=3.0, help="how long a Modbus server is down"
    )
    parser.add_argument("--up-s", type=float, default=2.0,
                        help="mean time a server stays up after its devices recovered (x0.5-1.5)")  # fmt: skip
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--calm-s", type=float, default=60.0,
                        help="baseline: seconds of the same gateway without restarts")  # fmt: skip
    parser.add_argument("--settle-s", type=float, default=10.0, help="seconds after the last event")
    parser.add_argument("--settle-mb", type=float, default=1.0,
                        help="RSS settles when the last half grows less than this")  # fmt: skip
    parser.add_argument("--gap-s", type=float, default=5.0,
                        help="seconds without a good sample from a device that count as a gap")  # fmt: skip
    parser.add_argument("--max-minutes", type=float, default=0,
                        help="start no restart or outage after this many minutes of them (0: no limit)")  # fmt: skip
    parser.add_argument("--keep-dir", type=Path, default=None,
                        help="work in this folder and keep it (gateway.log, site file, simulator logs)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4 OPC UA restarts, 2 Modbus outages, short phases")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.opcua_restarts, args.modbus_outages = 4, 2
        args.opcua_servers, args.modbus_servers = 1, 1
        args.outage_s, args.up_s, args.warmup_s, args.calm_s, args.settle_s = 2, 0.5, 3, 3, 3
    return args


def main() -> None:
    args = parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures = run(args)
    inputs = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(json.dumps({"bench": "soak", "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "inputs": inputs, "environment": environment(), **figures}))  # fmt: skip


if __name__ == "__main__":
    main()
