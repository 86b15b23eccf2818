"""Benchmark one gateway process: ~200 simulated devices of mixed profiles, ~10,000 points/s.

Runs, each as its own process: a private Mosquitto, the simulators (SimulatorHost with a
generated load scenario of mixed kinds on shared Modbus ports and OPC UA servers), and the gateway
(`python -m gateway run` with the real drivers). A subscriber in this process counts every sample
that arrives. The gateway process is measured from /proc: CPU share of one core (user and system),
peak RSS, and RSS drift (mean of the last fifth of the run minus the mean of the second fifth).
The simulators' CPU is measured the same way and reported apart: they share the machine.

Points: every value read is reported (the bench profiles set heartbeat_s to 1 ms, so report by
exception passes everything), stored in the disk buffer and published: points/s counts samples
received by the subscriber. Poll intervals are chosen so that the devices' signals add up to the
target rate. Read-to-publish latency is the subscriber's receive time minus the sample timestamp
(read time), so it includes batching (batch_max_delay_ms), the disk commit and the broker hop.

Layouts: by default 16 Modbus units share one TCP endpoint (one connection), as behind serial
converters and Modbus TCP gateways on a shop floor (``--units-per-port``), and each device allows
16 requests in flight (``--in-flight``; the simulators' server queues them as PLCs and Modbus TCP
gateways do; ``--in-flight 1`` runs requests in turn); the main load then runs again with one
endpoint per Modbus device, the worst case for the gateway (one connection each;
``--no-worst-case`` skips it). OPC UA machines share servers of up to 40.

Baselines measured in the same run: Modbus requests per cycle with the planner's block reads
versus one request per signal; and, after each main run, the same read plan executed by bare
pymodbus clients on asyncio's loop (no decoding, pipeline, buffer or MQTT) for
``--baseline-seconds``, with its CPU: ``ratios.gateway_cpu_vs_bare_pymodbus_reads`` is the whole
gateway's CPU over that.

Then (unless --no-ramp) the device count is raised step by step (same per-device rate) until the
rate falls short (under 90 % of the target, or the backlog grows); the highest sustained rate is
reported. On a shared machine the simulators and the broker compete with the gateway for CPU: the
JSON says how many cores the machine has.

    python bench/gateway.py --seconds 60 --devices 200
    python bench/gateway.py --seconds 10 --no-ramp --no-worst-case   # a quick run
    python bench/gateway.py --seconds 600 --no-ramp --no-worst-case  # the RSS drift run

``--scale N`` is the scale mode: N light Modbus devices on a bare responder (one port each by
default), the poll rate raised 1.5x per step; prints the highest sustained points/s and the
gateway's CPU µs per point (bench/README.md).

``BENCH_GATEWAY_PYTHON_ARGS`` is put between the Python executable and ``-m gateway`` (e.g. a
profiler's wrapper script). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402  (bench/ is on sys.path when run as a script)
    environment,
    percentile,
    proc_cpu,
    proc_sample,
    stop_process,
    subscribe,
    wait_for,
    watch_rss_until,
)

HEARTBEAT_S = 0.001
KINDS_ARG = [""]
INTERVAL_MS = [0]
"""--interval-ms of this bench run (0: chosen so the devices add up to --rate)."""
IN_FLIGHT = [1]
"""--in-flight of this bench run: each Modbus device's max_requests_in_flight."""
GATEWAY_PYTHON_ARGS: list[str] = os.environ.get("BENCH_GATEWAY_PYTHON_ARGS", "").split()
"""--kinds of this bench run, handed to the simulator processes."""


# ------------------------------------------------------------------ simulator role


def run_simulators(
    devices: int,
    out: Path,
    units_per_port: int = 1,
    part: int = 0,
    parts: int = 1,
    kinds: list[str] | None = None,
) -> None:
    """A simulator process: serve its share of a load scenario (whole enterprises, so energy
    meters stay with their machines), write its endpoints, run until SIGTERM."""
    from simulators.host import SimulatorHost
    from simulators.scenario import generate_load_scenario

    async def main() -> None:
        full = generate_load_scenario(
            devices,
            seed=11,
            kinds=kinds,
            tick_ms=100,
            gauge_period_s=0.5,
            units_per_modbus_port=units_per_port,
        )
        enterprises = sorted({i.enterprise or "" for i in full.instances})
        mine = {e for n, e in enumerate(enterprises) if n % parts == part}
        instances = [i for i in full.instances if (i.enterprise or "") in mine]
        used = {i.server for i in instances}
        scenario = full.model_copy(
            update={
                "instances": instances,
                "servers": [s for s in full.servers if s.name in used],
            }
        )
        async with SimulatorHost(scenario, truth_max_points=10) as host:
            listing = [
                {
                    "id": ep.device_id,
                    "kind": ep.kind,
                    "protocol": ep.protocol,
                    "host": ep.host,
                    "port": ep.port,
                    "unit_id": ep.unit_id,
                    "enterprise": ep.enterprise,
                }
                for ep in host.endpoints()
            ]
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(listing))
            tmp.replace(out)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())


# ------------------------------------------------------------------ site and profiles


def profile_signals(kind: str) -> tuple[Any, int]:
    from gateway.profiles.loader import ProfileResolver

    loaded = ProfileResolver().load(kind)
    return loaded, len(loaded.profile.signals)


def write_bench_site(
    workdir: Path, endpoints: list[dict[str, Any]], broker_url: str, rate: float, metrics_port: int
) -> dict[str, Any]:
    """Bench profiles (every group at one interval, RBE off) and the site file; returns the plan."""
    kinds = sorted({e["kind"] for e in endpoints})
    signals = {k: profile_signals(k)[1] for k in kinds}
    opcua_signals = sum(signals[e["kind"]] for e in endpoints if e["protocol"] == "opcua")
    modbus_signals = sum(signals[e["kind"]] for e in endpoints if e["protocol"] == "modbus")
    # OPC UA values arrive when they change and by heartbeat (once a second); Modbus fills the rest.
    modbus_rate = max(rate - opcua_signals, rate * 0.3)
    interval_ms = INTERVAL_MS[0] or max(100, round(modbus_signals / modbus_rate * 1000 / 10) * 10)
    folder = workdir / "profiles"
    folder.mkdir(exist_ok=True)
    for kind in kinds:
        loaded, _ = profile_signals(kind)
        groups = ", ".join(
            f"{{name: {g.name}, interval_ms: {interval_ms}}}" for g in loaded.profile.groups
        )
        (folder / f"bench_{kind}.yaml").write_text(
            f"id: bench_{kind}\nextends: {loaded.file}\nheartbeat_s: {HEARTBEAT_S}\n"
            f"groups: [{groups}]\n"
        )
    lines = [
        "gateway: {id: gw-bench, enterprise: ent-bench}",
        f"mqtt: {{url: '{broker_url}', max_inflight: 200}}",
        f"metrics: {{port: {metrics_port}, publish_interval_s: 5}}",
        "log: {level: WARNING, format: json}",
        "reload: {watch_interval_s: 0}",
        "profile_paths: [profiles]",
        "devices:",
    ]
    for e in endpoints:
        scheme = "opc.tcp" if e["protocol"] == "opcua" else "tcp"
        unit = f", unit_id: {e['unit_id']}" if e.get("unit_id") else ""
        window = (
            f", settings: {{max_requests_in_flight: {IN_FLIGHT[0]}}}"
            if e["protocol"] == "modbus" and IN_FLIGHT[0] > 1
            else ""
        )
        lines.append(
            f"  - {{id: {e['id']}, profile: bench_{e['kind']}, "
            f"endpoint: '{scheme}://{e['host']}:{e['port']}'{unit}{window}}}"
        )
    (workdir / "gateway.yaml").write_text("\n".join(lines) + "\n")
    return {
        "interval_ms": interval_ms,
        "modbus_signals": modbus_signals,
        "opcua_signals": opcua_signals,
        "expected_points_per_s": round(modbus_signals * 1000 / interval_ms + opcua_signals),
    }


def modbus_requests_per_cycle(site_file: Path, plan_file: Path) -> dict[str, int]:
    """Requests one cycle of every Modbus group costs, planned, versus one request per signal.

    Also writes the read plan (endpoint, unit, requests of each device) to ``plan_file``, for
    the bare-client baseline to run the very same requests.
    """
    from gateway.drivers.base import DriverMetrics
    from gateway.drivers.modbus.driver import ModbusDriver
    from gateway.profiles.loader import load_site

    site = load_site(site_file)
    planned = per_signal = 0
    log = logging.LoggerAdapter(logging.getLogger("bench"), {})
    read_plan = []
    for device in site.devices:
        if device.profile.protocol != "modbus":
            continue
        driver = ModbusDriver(device, log, DriverMetrics())
        requests = []
        for group in device.profile.groups:
            count = len(device.profile.signals_of(group.name))
            if count:
                blocks = driver.plan(group)
                planned += len(blocks)
                per_signal += count
                requests += [(r.function_code, r.start, r.count) for r in blocks]
        read_plan.append(
            {
                "host": driver.endpoint.host,
                "port": driver.endpoint.port,
                "unit_id": driver.unit_id,
                "interval_ms": min(g.interval_ms for g in device.profile.groups),
                "requests": requests,
            }
        )
    plan_file.write_text(json.dumps(read_plan))
    return {"planned": planned, "one_per_signal": per_signal}


# ------------------------------------------------------------------ baseline role


def run_bare_client(plan_file: Path, seconds: float, out: Path) -> None:
    """The in-run baseline: the gateway's Modbus read plan run by bare pymodbus clients.

    One AsyncModbusTcpClient per endpoint (units behind it take turns, as pymodbus's client
    allows one request at a time), every device's requests each interval on asyncio's own loop,
    values read and thrown away: no decoding, pipeline, disk buffer or MQTT. This is what reading
    the same register blocks costs a plain Python program; its CPU is measured from /proc by the
    bench.
    """
    from pymodbus.client import AsyncModbusTcpClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    plan = json.loads(plan_file.read_text())
    methods = {1: "read_coils", 2: "read_discrete_inputs", 3: "read_holding_registers",
               4: "read_input_registers"}  # fmt: skip
    done = {"requests": 0, "failures": 0}

    async def poll(client: Any, device: dict[str, Any], stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        interval = device["interval_ms"] / 1000
        next_t = loop.time() + interval * (device["unit_id"] * 37 % 100) / 100
        while next_t < stop_at:
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            for function, start, count in device["requests"]:
                try:
                    await getattr(client, methods[function])(
                        start, count=count, device_id=device["unit_id"]
                    )
                    done["requests"] += 1
                except Exception:  # the baseline counts failures; it must not stop
                    done["failures"] += 1
            next_t += interval
            if loop.time() > next_t:
                next_t = loop.time()

    async def main() -> None:
        clients: dict[tuple[str, int], Any] = {}
        for device in plan:
            key = (device["host"], device["port"])
            if key not in clients:
                clients[key] = AsyncModbusTcpClient(key[0], port=key[1], timeout=2, retries=0)
                await clients[key].connect()
        await asyncio.to_thread(out.with_suffix(".ready").write_text, "ready")
        stop_at = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(poll(clients[(d["host"], d["port"])], d, stop_at) for d in plan))
        for client in clients.values():
            client.close()

    asyncio.run(main())
    out.write_text(json.dumps(done))


def measure_bare_client(step: Path, seconds: float) -> dict[str, Any]:
    """Run the baseline (simulators still up, gateway stopped) and measure its CPU."""
    out = step / "baseline.json"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", "baseline", "--plan", str(step / "read-plan.json"),
         "--seconds", str(seconds), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=(step / "baseline.log").open("wb"),
    )  # fmt: skip
    try:
        wait_for(lambda: out.with_suffix(".ready").exists(), 60, "the baseline clients")
        cpu0, t0 = sum(proc_cpu(proc.pid)), time.monotonic()
        time.sleep(max(1.0, seconds - 2))
        cpu1, t1 = sum(proc_cpu(proc.pid)), time.monotonic()
        proc.wait(seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = json.loads(out.read_text()) if out.exists() else {"requests": 0, "failures": 0}
    return {
        "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 3),
        "requests_per_s": round(done["requests"] / seconds),
        "failures": done["failures"],
    }


# ------------------------------------------------------------------ measuring


@dataclass
class Counter:
    """Counts samples on the telemetry topic and keeps their read-to-arrival latency."""

    samples: int = 0
    batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    is_measuring: bool = False

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import orjson

        now_ms = time.time() * 1000
        batch = orjson.loads(msg.payload)
        with self.lock:
            self.batches += 1
            self.samples += len(batch["samples"])
            if self.is_measuring and not batch["historical"]:
                self.latencies_ms.extend(now_ms - s["ts_ms"] for s in batch["samples"][::10])


def metric_sum(port: int, name: str, label: str = "") -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not label or label in line) and not line.startswith("#"):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def start_simulators(
    step: Path, devices: int, units_per_port: int, part: int, parts: int
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, __file__, "--role", "sim", "--devices", str(devices),
        "--out", str(step / f"endpoints-{part}.json"), "--units-per-port", str(units_per_port),
        "--part", str(part), "--parts", str(parts), "--kinds", KINDS_ARG[0],
    ]  # fmt: skip
    log = (step / f"sim-{part}.log").open("wb")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


def run_step(
    broker: Any,
    workdir: Path,
    devices: int,
    rate: float,
    seconds: float,
    warmup_s: float,
    units_per_port: int = 1,
    sim_procs: int = 2,
    baseline_s: float = 0.0,
) -> dict[str, Any]:
    """One measured run: simulators + gateway for ``devices`` at ``rate`` points/s; then, if
    ``baseline_s``, the gateway stops and bare pymodbus clients run its read plan."""
    from shulian.devservices import free_port

    step = workdir / f"step-{devices}-u{units_per_port}"
    step.mkdir()
    sims = [
        start_simulators(step, devices, units_per_port, part, sim_procs)
        for part in range(sim_procs)
    ]
    gateway: subprocess.Popen[bytes] | None = None
    client = None
    try:
        files = [step / f"endpoints-{part}.json" for part in range(sim_procs)]
        wait_for(lambda: all(f.exists() for f in files), 120, "the simulators")
        endpoints = [e for f in files for e in json.loads(f.read_text())]
        metrics_port = free_port()
        plan = write_bench_site(step, endpoints, broker.url, rate, metrics_port)
        requests = modbus_requests_per_cycle(step / "gateway.yaml", step / "read-plan.json")
        counter = Counter()
        client = subscribe(
            broker.url, ["shulian/v1/ent-bench/gw-bench/telemetry"], counter.on_message
        )
        gateway = subprocess.Popen(
            [sys.executable, *GATEWAY_PYTHON_ARGS, "-m", "gateway", "run", "--config", str(step / "gateway.yaml"),
             "--data-dir", str(step / "var")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(step / "gateway.log").open("wb"),
        )  # fmt: skip
        pid = gateway.pid
        wait_for(lambda: counter.samples > 0, 60, "the first batch")
        time.sleep(warmup_s)  # let every device connect and the rate settle before measuring
        counter.is_measuring = True
        cpu0, _ = proc_sample(pid)
        split0 = proc_cpu(pid)
        sims0 = sum(sum(proc_cpu(s.pid)) for s in sims)
        samples0, t0 = counter.samples, time.monotonic()
        read0 = metric_sum(metrics_port, "shulian_gateway_points_read_total")
        req0 = metric_sum(metrics_port, "shulian_gateway_requests_total", 'driver="modbus"')
        rss = watch_rss_until(gateway, pid, t0 + seconds, step / "gateway.log")
        elapsed = time.monotonic() - t0
        cpu1, _ = proc_sample(pid)
        split1 = proc_cpu(pid)
        sims1 = sum(sum(proc_cpu(s.pid)) for s in sims)
        samples1 = counter.samples
        read1 = metric_sum(metrics_port, "shulian_gateway_points_read_total")
        req1 = metric_sum(metrics_port, "shulian_gateway_requests_total", 'driver="modbus"')
        backlog = metric_sum(metrics_port, "shulian_gateway_buffer_batches")
        connected = metric_sum(metrics_port, "shulian_gateway_device_connected")
        counter.is_measuring = False
        fifth = max(1, len(rss) // 5)
        drift = statistics.fmean(rss[-fifth:]) - statistics.fmean(rss[fifth : 2 * fifth] or rss)
        result = {
            "devices": devices,
            "units_per_port": units_per_port,
            "modbus_connections": len(
                {(e["host"], e["port"]) for e in endpoints if e["protocol"] == "modbus"}
            ),
            "opcua_servers": len(
                {(e["host"], e["port"]) for e in endpoints if e["protocol"] == "opcua"}
            ),
            "devices_connected": int(connected),
            "seconds": round(elapsed, 1),
            **plan,
            "points_per_s": round((samples1 - samples0) / elapsed),
            "points_read_per_s": round((read1 - read0) / elapsed),
            "gateway_cpu_share": round((cpu1 - cpu0) / elapsed, 3),
            "gateway_cpu_user_share": round((split1[0] - split0[0]) / elapsed, 3),
            "gateway_cpu_system_share": round((split1[1] - split0[1]) / elapsed, 3),
            "simulators_cpu_share": round((sims1 - sims0) / elapsed, 3),
            "gateway_peak_rss_mb": round(max(rss), 1),
            "gateway_rss_drift_mb": round(drift, 1),
            "latency_ms_p50": percentile(counter.latencies_ms, 0.5),
            "latency_ms_p99": percentile(counter.latencies_ms, 0.99),
            "backlog_batches_at_end": int(backlog),
            "modbus_requests_per_cycle": requests["planned"],
            "modbus_requests_per_cycle_one_per_signal": requests["one_per_signal"],
            "modbus_requests_per_s": round((req1 - req0) / elapsed),
        }
        if baseline_s > 0:
            stop_process(gateway)
            result["baseline_bare_pymodbus"] = measure_bare_client(step, baseline_s)
        return result
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        for proc in (gateway, *sims):
            if proc is not None:
                stop_process(proc)


# ------------------------------------------------------------------ scale mode (--scale N)

SCALE_REGISTERS = 10
"""Holding registers 0-9 of every light device: one request per cycle, ten points."""
SCALE_PROFILE = """\
id: bench_light
protocol: modbus
description: "bench/gateway.py --scale: a light power meter, ten holding registers in one block"
heartbeat_s: 0.001
groups:
  - {name: fast, interval_ms: INTERVAL}
signals:
  - {name: voltage.l1, group: fast, address: 0, unit: V}
  - {name: voltage.l2, group: fast, address: 1, unit: V}
  - {name: voltage.l3, group: fast, address: 2, unit: V}
  - {name: current.l1, group: fast, address: 3, unit: A}
  - {name: current.l2, group: fast, address: 4, unit: A}
  - {name: current.l3, group: fast, address: 5, unit: A}
  - {name: active_power, group: fast, address: 6, unit: kW}
  - {name: reactive_power, group: fast, address: 7, unit: kVA}
  - {name: frequency, group: fast, address: 8, unit: Hz}
  - {name: run_hours, group: fast, address: 9, unit: h}
"""


def run_fast_modbus(ports: int, out: Path) -> None:
    """A simulator process for --scale: a bare Modbus TCP responder on ``ports`` ports.

    It answers function 3/4 for any unit with changing register values and nothing else, so one
    process serves thousands of devices for a few µs each (the pymodbus simulators cost far more
    per request than the gateway does). It never imports the gateway.
    """
    import struct

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    class Responder(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = b""
            self.tick = 0
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data
            replies = []
            while len(buf) >= 8:
                tid, _proto, length, unit = struct.unpack(">HHHB", buf[:7])
                if len(buf) < 6 + length:
                    break
                pdu, buf = buf[7 : 6 + length], buf[6 + length :]
                fn = pdu[0]
                if fn in (3, 4) and len(pdu) >= 5:
                    count = min(125, struct.unpack(">H", pdu[3:5])[0])
                    self.tick = (self.tick + 1) & 0x3FFF
                    values = struct.pack(f">{count}H", *((self.tick + i) for i in range(count)))
                    body = bytes((fn, 2 * count)) + values
                else:
                    body = bytes((fn | 0x80, 1))  # illegal function
                replies.append(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
            self.buf = buf
            if replies:
                self.transport.write(b"".join(replies))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = [
            await loop.create_server(Responder, "127.0.0.1", 0, backlog=1024) for _ in range(ports)
        ]
        listing = [s.sockets[0].getsockname()[1] for s in servers]
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(listing))
        tmp.replace(out)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()

    asyncio.run(main())


def raise_open_files(want: int) -> int:
    """Raise this process's (and its children's) soft RLIMIT_NOFILE to ``want`` if allowed."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def run_scale_step(
    broker: Any,
    workdir: Path,
    ports: list[int],
    devices: int,
    units_per_port: int,
    interval_ms: int,
    seconds: float,
) -> dict[str, Any]:
    """One gateway run with ``devices`` light devices at ``interval_ms``."""
    from shulian.devservices import free_port

    step = workdir / f"scale-{devices}-{interval_ms}ms"
    (step / "profiles").mkdir(parents=True)
    (step / "profiles" / "bench_light.yaml").write_text(
        SCALE_PROFILE.replace("INTERVAL", str(interval_ms))
    )
    metrics_port = free_port()
    lines = [
        "gateway: {id: gw-bench, enterprise: ent-bench}",
        f"mqtt: {{url: '{broker.url}', max_inflight: 200}}",
        f"metrics: {{port: {metrics_port}, publish_interval_s: 5}}",
        "buffer: {batch_max_samples: 2000}",
        "log: {level: WARNING, format: json}",
        "reload: {watch_interval_s: 0}",
        "profile_paths: [profiles]",
        "devices:",
    ]
    for n in range(devices):
        port = ports[n // units_per_port]
        unit = n % units_per_port + 1
        lines.append(
            f"  - {{id: light-{n:05d}, profile: bench_light, "
            f"endpoint: 'tcp://127.0.0.1:{port}', unit_id: {unit}}}"
        )
    (step / "gateway.yaml").write_text("\n".join(lines) + "\n")
    counter = Counter()
    client = subscribe(broker.url, ["shulian/v1/ent-bench/gw-bench/telemetry"], counter.on_message)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        gateway = subprocess.Popen(
            [sys.executable, *GATEWAY_PYTHON_ARGS, "-m", "gateway", "run", "--config", str(step / "gateway.yaml"),
             "--data-dir", str(step / "var")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(step / "gateway.log").open("wb"),
        )  # fmt: skip
        pid = gateway.pid
        wait_for(lambda: counter.samples > 0, 120, "the first batch")
        # Connections open at gateway.connects_per_s (200/s by default): wait for all of them.
        deadline = time.monotonic() + 30 + devices / 100
        while metric_sum(metrics_port, "shulian_gateway_device_connected") < devices:
            if time.monotonic() > deadline or gateway.poll() is not None:
                break
            time.sleep(0.5)
        time.sleep(2.0)
        counter.is_measuring = True
        cpu0, _ = proc_sample(pid)
        samples0, t0 = counter.samples, time.monotonic()
        rss = watch_rss_until(gateway, pid, t0 + seconds, step / "gateway.log")
        elapsed = time.monotonic() - t0
        cpu1, _ = proc_sample(pid)
        points = counter.samples - samples0
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        log_text = (step / "gateway.log").read_text(errors="replace")
        backlog = metric_sum(metrics_port, "shulian_gateway_buffer_batches")
        connected = metric_sum(metrics_port, "shulian_gateway_device_connected")
        return {
            "devices": devices,
            "devices_connected": int(connected),
            "gateway_open_descriptors": fds,
            "connect_failures_logged": log_text.count("no TCP connection"),
            "interval_ms": interval_ms,
            "expected_points_per_s": round(devices * SCALE_REGISTERS * 1000 / interval_ms),
            "points_per_s": round(points / elapsed),
            "gateway_cpu_share": round((cpu1 - cpu0) / elapsed, 3),
            "cpu_us_per_point": round((cpu1 - cpu0) / points * 1e6, 2) if points else None,
            "gateway_peak_rss_mb": round(max(rss), 1) if rss else None,
            "backlog_batches_at_end": int(backlog),
            "latency_ms_p99": percentile(counter.latencies_ms, 0.99),
        }
    finally:
        client.disconnect()
        client.loop_stop()
        if gateway is not None:
            stop_process(gateway)


def scale_bench(args: argparse.Namespace) -> dict[str, Any]:
    """--scale N: N light Modbus devices; raise the poll rate ×1.5 while the gateway keeps up."""
    from shulian.devservices import Mosquitto

    devices = args.scale
    units = max(1, args.scale_units_per_port)
    n_ports = -(-devices // units)
    limit = raise_open_files(devices + n_ports + 1024)
    interval_ms = max(10, round(devices * SCALE_REGISTERS * 1000 / args.scale_rate))
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-gateway-scale-") as tmp:
        workdir = Path(tmp)
        listing = workdir / "ports.json"
        sim = subprocess.Popen(
            [sys.executable, __file__, "--role", "fastsim", "--scale", str(n_ports),
             "--out", str(listing)],
            stdout=subprocess.DEVNULL, stderr=(workdir / "fastsim.log").open("wb"),
        )  # fmt: skip
        try:
            wait_for(listing.exists, 120, "the fast Modbus simulator")
            ports = json.loads(listing.read_text())
            with Mosquitto(workdir / "mosquitto") as broker:
                for _ in range(max(1, args.ramp_steps)):
                    step = run_scale_step(
                        broker, workdir, ports, devices, units, interval_ms, args.seconds
                    )
                    steps.append(step)
                    print(json.dumps({"scale_step": step}), file=sys.stderr)
                    if not _sustained(step):
                        break
                    best = step
                    if interval_ms <= 10:
                        break
                    interval_ms = max(10, round(interval_ms / 1.5))
        finally:
            stop_process(sim)
    return {
        "bench": "gateway-scale",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {
            "devices": devices,
            "units_per_port": units,
            "ports": n_ports,
            "signals_per_device": SCALE_REGISTERS,
            "start_rate": args.scale_rate,
            "seconds": args.seconds,
            "ramp_steps": args.ramp_steps,
            "open_files_limit": limit,
        },
        "environment": environment(),
        "steps": steps,
        "max_sustained_points_per_s": best["points_per_s"] if best else 0,
        "cpu_us_per_point_at_max": best["cpu_us_per_point"] if best else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10_000.0, help="target points/s at --devices")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring")
    parser.add_argument("--ramp", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ramp-seconds", type=float, default=None)
    parser.add_argument("--max-devices", type=int, default=1600)
    parser.add_argument("--ramp-steps", type=int, default=4, help="runs the ramp may take")
    parser.add_argument(
        "--units-per-port",
        type=int,
        default=16,
        help="Modbus units behind one TCP endpoint, sharing its connection (16: as behind "
        "serial converters and Modbus TCP gateways on a shop floor)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=16,
        help="each Modbus device's max_requests_in_flight (16: the Modbus TCP endpoints queue "
        "requests, as PLCs and Modbus TCP gateways do; 1: one request at a time)",
    )
    parser.add_argument(
        "--worst-case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the main load with one port (one connection) per Modbus device",
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="seconds of the bare-pymodbus baseline after the main run (0: none; "
        "default: min(20, --seconds))",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        metavar="N",
        help="scale mode: N light Modbus devices (ten registers, one request per cycle) on a "
        "bare responder; raises the poll rate until the gateway falls short",
    )
    parser.add_argument(
        "--scale-units-per-port",
        type=int,
        default=1,
        help="scale mode: devices (units) behind one TCP port (1: a connection per device)",
    )
    parser.add_argument(
        "--scale-rate",
        type=float,
        default=20_000.0,
        help="scale mode: points/s of the first step (each next step polls 1.5x faster)",
    )
    parser.add_argument(
        "--role",
        choices=["bench", "sim", "baseline", "fastsim"],
        default="bench",
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default="", help="comma-separated machine kinds (default: all)")
    parser.add_argument(
        "--interval-ms",
        type=int,
        default=0,
        help="every group's interval (default: chosen so the devices add up to --rate)",
    )
    parser.add_argument(
        "--sim-procs", type=int, default=2, help="simulator processes (split by enterprise)"
    )
    args = parser.parse_args()
    if args.role == "sim":
        kinds = args.kinds.split(",") if args.kinds else None
        run_simulators(args.devices, args.out, args.units_per_port, args.part, args.parts, kinds)
        return
    if args.role == "baseline":
        run_bare_client(args.plan, args.seconds, args.out)
        return
    if args.role == "fastsim":
        run_fast_modbus(args.scale, args.out)
        return

    from shulian.devservices import Mosquitto

    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.scale:
        print(json.dumps(scale_bench(args)))
        return
    KINDS_ARG[0] = args.kinds
    INTERVAL_MS[0] = args.interval_ms
    IN_FLIGHT[0] = args.in_flight
    warmup = args.warmup if args.warmup is not None else min(10.0, max(3.0, args.seconds / 3))
    baseline_s = (
        args.baseline_seconds if args.baseline_seconds is not None else min(20.0, args.seconds)
    )
    per_device = args.rate / args.devices
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "mosquitto") as broker:
            main_run = run_step(
                broker,
                workdir,
                args.devices,
                args.rate,
                args.seconds,
                warmup,
                args.units_per_port,
                args.sim_procs,
                baseline_s,
            )
            worst: dict[str, Any] | None = None
            if args.worst_case and args.units_per_port != 1:
                worst = run_step(
                    broker, workdir, args.devices, args.rate, args.seconds, warmup, 1,
                    args.sim_procs, baseline_s,
                )  # fmt: skip
            ramp: list[dict[str, Any]] = []
            best = main_run["points_per_s"] if _sustained(main_run) else 0
            # Search: up by 1.5x while the rate is sustained; if even the main run fell short,
            # down by 1.5x until it is. At most --ramp-steps runs.
            going_up = _sustained(main_run)
            devices = args.devices
            for _ in range(args.ramp_steps if args.ramp else 0):
                devices = round(devices * 1.5) if going_up else round(devices / 1.5)
                if not 10 <= devices <= args.max_devices:
                    break
                step = run_step(
                    broker,
                    workdir,
                    devices,
                    per_device * devices,
                    args.ramp_seconds or max(10.0, args.seconds / 4),
                    warmup,
                    args.units_per_port,
                    args.sim_procs,
                )
                ramp.append({k: step[k] for k in RAMP_FIELDS})
                if _sustained(step):
                    best = max(best, step["points_per_s"])
                    if not going_up:
                        break
                elif going_up:
                    break
    result = {
        "bench": "gateway",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {
            "seconds": args.seconds,
            "devices": args.devices,
            "rate": args.rate,
            "units_per_port": args.units_per_port,
            "max_requests_in_flight": args.in_flight,
            "interval_ms": args.interval_ms,
            "sim_procs": args.sim_procs,
            "kinds": args.kinds or "all",
            "baseline_seconds": baseline_s,
        },
        "environment": environment(),
        **main_run,
        "modbus_request_ratio": round(
            main_run["modbus_requests_per_cycle"]
            / max(1, main_run["modbus_requests_per_cycle_one_per_signal"]),
            3,
        ),
        "ratios": ratios(main_run),
        "worst_case_layout": (
            {k: worst[k] for k in WORST_FIELDS if k in worst} | {"ratios": ratios(worst)}
            if worst
            else None
        ),
        "ramp": ramp,
        "max_sustained_points_per_s": best,
        "targets": TARGETS,
        "targets_met": targets_met(main_run),
    }
    print(json.dumps(result))


TARGETS = {"cpu_share_max": 0.25, "peak_rss_mb_max": 100.0, "rss_drift_mb_max": 1.0}
"""The issue's targets; "no RSS growth" is read as at most 1 MB of drift (allocator noise)."""
WORST_FIELDS = (
    "units_per_port",
    "modbus_connections",
    "devices_connected",
    "expected_points_per_s",
    "points_per_s",
    "gateway_cpu_share",
    "gateway_peak_rss_mb",
    "gateway_rss_drift_mb",
    "latency_ms_p50",
    "latency_ms_p99",
    "modbus_requests_per_s",
    "simulators_cpu_share",
    "baseline_bare_pymodbus",
)


def ratios(step: dict[str, Any]) -> dict[str, float | None]:
    """The gateway against baselines measured in the same run."""
    bare = step.get("baseline_bare_pymodbus") or {}
    bare_cpu = bare.get("cpu_share") or 0.0
    bare_rate = bare.get("requests_per_s") or 0
    gateway_rate = step["modbus_requests_per_s"]
    return {
        "modbus_requests_vs_one_per_signal": round(
            step["modbus_requests_per_cycle"]
            / max(1, step["modbus_requests_per_cycle_one_per_signal"]),
            3,
        ),
        # Whole gateway (Modbus + OPC UA + pipeline + disk + MQTT) against bare clients doing
        # only the Modbus reads: below 1 means the gateway does all of it for less.
        "gateway_cpu_vs_bare_pymodbus_reads": round(step["gateway_cpu_share"] / bare_cpu, 3)
        if bare_cpu
        else None,
        "bare_pymodbus_requests_per_s_vs_gateway": round(bare_rate / gateway_rate, 3)
        if gateway_rate
        else None,
    }


def targets_met(step: dict[str, Any]) -> dict[str, bool]:
    return {
        "rate": step["points_per_s"] >= 0.95 * step["expected_points_per_s"],
        "cpu": step["gateway_cpu_share"] <= TARGETS["cpu_share_max"],
        "peak_rss": step["gateway_peak_rss_mb"] <= TARGETS["peak_rss_mb_max"],
        "rss_drift": abs(step["gateway_rss_drift_mb"]) <= TARGETS["rss_drift_mb_max"],
    }


RAMP_FIELDS = (
    "devices",
    "expected_points_per_s",
    "points_per_s",
    "gateway_cpu_share",
    "gateway_peak_rss_mb",
    "latency_ms_p99",
    "backlog_batches_at_end",
    "modbus_requests_per_s",
    "simulators_cpu_share",
)


def _sustained(step: dict[str, Any]) -> bool:
    """The gateway kept up: at least 90 % of the expected rate and no growing backlog."""
    return bool(
        step["points_per_s"] >= 0.9 * step["expected_points_per_s"]
        and step["backlog_batches_at_end"] < 50
    )


if __name__ == "__main__":
    main()
