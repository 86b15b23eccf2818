"""Benchmark one gateway process: ~200 simulated devices of mixed profiles, ~10,000 points/s.

Runs, each as its own process: a private Mosquitto, the simulators (SimulatorHost with a
generated load scenario of mixed kinds on shared Modbus ports and OPC UA servers), and the gateway
(`python -m gateway run` with the real drivers). A subscriber in this process counts every sample
that arrives. The gateway process is measured from /proc: CPU share of one core, peak RSS, and RSS
drift (mean of the last fifth of the run minus the mean of the second fifth).

Points: every value read is reported (the bench profiles set heartbeat_s to 1 ms, so report by
exception passes everything), stored in the disk buffer and published: points/s counts samples
received by the subscriber. Poll intervals are chosen so that the devices' signals add up to the
target rate. Read-to-publish latency is the subscriber's receive time minus the sample timestamp
(read time), so it includes batching (batch_max_delay_ms), the disk commit and the broker hop.

Baseline in the same run: Modbus requests per cycle with the planner's block reads versus one
request per signal.

Then (unless --no-ramp) the device count is raised step by step (same per-device rate) until the
rate falls short (under 90 % of the target, or the backlog grows); the highest sustained rate is
reported. On a shared machine the simulators and the broker compete with the gateway for CPU: the
JSON says how many cores the machine has.

    python bench/gateway.py --seconds 60 --devices 200
    python bench/gateway.py --seconds 10 --no-ramp          # a quick run

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
HEARTBEAT_S = 0.001
KINDS_ARG = [""]
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
    interval_ms = max(100, round(modbus_signals / modbus_rate * 1000 / 10) * 10)
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
        lines.append(
            f"  - {{id: {e['id']}, profile: bench_{e['kind']}, "
            f"endpoint: '{scheme}://{e['host']}:{e['port']}'{unit}}}"
        )
    (workdir / "gateway.yaml").write_text("\n".join(lines) + "\n")
    return {
        "interval_ms": interval_ms,
        "modbus_signals": modbus_signals,
        "opcua_signals": opcua_signals,
        "expected_points_per_s": round(modbus_signals * 1000 / interval_ms + opcua_signals),
    }


def modbus_requests_per_cycle(site_file: Path) -> dict[str, int]:
    """Requests one cycle of every Modbus group costs, planned, versus one request per signal."""
    from gateway.drivers.base import DriverMetrics
    from gateway.drivers.modbus.driver import ModbusDriver
    from gateway.profiles.loader import load_site

    site = load_site(site_file)
    planned = per_signal = 0
    log = logging.LoggerAdapter(logging.getLogger("bench"), {})
    for device in site.devices:
        if device.profile.protocol != "modbus":
            continue
        driver = ModbusDriver(device, log, DriverMetrics())
        for group in device.profile.groups:
            count = len(device.profile.signals_of(group.name))
            if count:
                planned += len(driver.plan(group))
                per_signal += count
    return {"planned": planned, "one_per_signal": per_signal}


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


def subscribe(broker_url: str, topic: str, counter: Counter) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5
    )
    ready = threading.Event()
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = counter.on_message
    client.connect(host, int(port))
    client.loop_start()
    if not ready.wait(10):
        raise RuntimeError("bench subscriber could not subscribe")
    return client


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, RSS in MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_mb = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024
    return cpu_s, rss_mb


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


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def wait_for(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(0.1)


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
) -> dict[str, Any]:
    """One measured run: simulators + gateway for ``devices`` at ``rate`` points/s."""
    from shulian.devservices import free_port

    step = workdir / f"step-{devices}"
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
        requests = modbus_requests_per_cycle(step / "gateway.yaml")
        counter = Counter()
        client = subscribe(broker.url, "shulian/v1/ent-bench/gw-bench/telemetry", counter)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(step / "gateway.yaml"),
             "--data-dir", str(step / "var")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(step / "gateway.log").open("wb"),
        )  # fmt: skip
        pid = gateway.pid
        wait_for(lambda: counter.samples > 0, 60, "the first batch")
        time.sleep(warmup_s)  # let every device connect and the rate settle before measuring
        counter.is_measuring = True
        cpu0, _ = proc_sample(pid)
        samples0, t0 = counter.samples, time.monotonic()
        read0 = metric_sum(metrics_port, "shulian_gateway_points_read_total")
        req0 = metric_sum(metrics_port, "shulian_gateway_requests_total", 'driver="modbus"')
        rss: list[float] = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            if gateway.poll() is not None:
                raise RuntimeError(f"gateway exited: see {step / 'gateway.log'}")
            rss.append(proc_sample(pid)[1])
        elapsed = time.monotonic() - t0
        cpu1, _ = proc_sample(pid)
        samples1 = counter.samples
        read1 = metric_sum(metrics_port, "shulian_gateway_points_read_total")
        req1 = metric_sum(metrics_port, "shulian_gateway_requests_total", 'driver="modbus"')
        backlog = metric_sum(metrics_port, "shulian_gateway_buffer_batches")
        connected = metric_sum(metrics_port, "shulian_gateway_device_connected")
        counter.is_measuring = False
        fifth = max(1, len(rss) // 5)
        drift = statistics.fmean(rss[-fifth:]) - statistics.fmean(rss[fifth : 2 * fifth] or rss)
        return {
            "devices": devices,
            "devices_connected": int(connected),
            "seconds": round(elapsed, 1),
            **plan,
            "points_per_s": round((samples1 - samples0) / elapsed),
            "points_read_per_s": round((read1 - read0) / elapsed),
            "gateway_cpu_share": round((cpu1 - cpu0) / elapsed, 3),
            "gateway_peak_rss_mb": round(max(rss), 1),
            "gateway_rss_drift_mb": round(drift, 1),
            "latency_ms_p50": percentile(counter.latencies_ms, 0.5),
            "latency_ms_p99": percentile(counter.latencies_ms, 0.99),
            "backlog_batches_at_end": int(backlog),
            "modbus_requests_per_cycle": requests["planned"],
            "modbus_requests_per_cycle_one_per_signal": requests["one_per_signal"],
            "modbus_requests_per_s": round((req1 - req0) / elapsed),
        }
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
        for proc in (gateway, *sims):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def environment() -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
        return "-"

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "commit": commit,
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pymodbus": version("pymodbus"),
        "asyncua": version("asyncua"),
        "paho-mqtt": version("paho-mqtt"),
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
        default=1,
        help="Modbus units behind one TCP endpoint (1: each device its own, as on a shop floor)",
    )
    parser.add_argument("--role", choices=["bench", "sim"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default="", help="comma-separated machine kinds (default: all)")
    parser.add_argument(
        "--sim-procs", type=int, default=2, help="simulator processes (split by enterprise)"
    )
    args = parser.parse_args()
    if args.role == "sim":
        kinds = args.kinds.split(",") if args.kinds else None
        run_simulators(args.devices, args.out, args.units_per_port, args.part, args.parts, kinds)
        return

    from shulian.devservices import Mosquitto

    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    KINDS_ARG[0] = args.kinds
    warmup = args.warmup if args.warmup is not None else min(10.0, max(3.0, args.seconds / 3))
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
            )
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
            "sim_procs": args.sim_procs,
            "kinds": args.kinds or "all",
        },
        "environment": environment(),
        **main_run,
        "modbus_request_ratio": round(
            main_run["modbus_requests_per_cycle"]
            / max(1, main_run["modbus_requests_per_cycle_one_per_signal"]),
            3,
        ),
        "ramp": ramp,
        "max_sustained_points_per_s": best,
        "targets": {"cpu_share_max": 0.25, "peak_rss_mb_max": 100, "rss_drift_mb": 0},
    }
    print(json.dumps(result))


RAMP_FIELDS = (
    "devices",
    "expected_points_per_s",
    "points_per_s",
    "gateway_cpu_share",
    "gateway_peak_rss_mb",
    "latency_ms_p99",
    "backlog_batches_at_end",
)


def _sustained(step: dict[str, Any]) -> bool:
    """The gateway kept up: at least 90 % of the expected rate and no growing backlog."""
    return bool(
        step["points_per_s"] >= 0.9 * step["expected_points_per_s"]
        and step["backlog_batches_at_end"] < 50
    )


if __name__ == "__main__":
    main()
