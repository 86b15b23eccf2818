"""`shulian demo`: the whole pipeline on one machine, from simulated factories to the live dashboard.

It starts, each as its own process: a broker (``MQTT_URL``, else a private Mosquitto, else amqtt),
a database (``DATABASE_URL``, else an embedded PostgreSQL, preloading TimescaleDB when the
extension is installed in it), the simulators of a scenario, one gateway per enterprise, the
ingest and the monitoring (two processes, as a deployment runs them; ``--one-process`` runs them
as ``shulian ingest run --with-monitoring``, the small-site way); then prints every URL it serves,
the storage path it runs on, and a live count of stored points until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from ruamel.yaml import YAML

from shulian import devservices

if TYPE_CHECKING:
    from ingest.db.timescale import PathChoice

log = logging.getLogger("shulian.demo")

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "simulators" / "scenarios" / "demo.yaml"

app = typer.Typer(help="Run the whole pipeline locally: simulated factories to live dashboard.")


class DemoError(RuntimeError):
    """The demo could not start or a part of it died; the message says which and why."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    logfile: Path

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Stack:
    """The demo's child processes, stopped in reverse order of start."""

    logdir: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        self.logdir.mkdir(parents=True, exist_ok=True)
        logfile = self.logdir / f"{name}.log"
        out = logfile.open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops children in order
        )
        child = Child(name, proc, logfile)
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise DemoError(
                    f"{child.name} exited with status {code}; its log ({child.logfile}) ends:\n"
                    f"{child.tail()}"
                )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the newest first, each before the next, so gateways flush while the broker and
        the simulators are still there."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
                try:
                    child.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        self.children.clear()


def shulian_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "shulian", *args]


@dataclass(frozen=True)
class Broker:
    url: str
    protocol: str  # "5" or "3.1.1"
    kind: str


def start_broker(
    stack: Stack, workdir: Path, choice: str
) -> tuple[Broker, devservices.Mosquitto | None]:
    if os.environ.get("MQTT_URL"):
        return Broker(os.environ["MQTT_URL"], "5", "given by MQTT_URL"), None
    if choice == "mosquitto" and not devservices.mosquitto_binary():
        raise DemoError(
            "--broker mosquitto: no mosquitto binary on PATH (apt-get install mosquitto)"
        )
    if choice in ("auto", "mosquitto") and devservices.mosquitto_binary():
        broker = devservices.Mosquitto(workdir / "mosquitto").start()
        return Broker(broker.url, "5", "Mosquitto (project config)"), broker
    port = devservices.free_port()
    code = f"from shulian.devservices import serve_amqtt; serve_amqtt({port})"
    stack.spawn("amqtt", [sys.executable, "-c", code])
    devservices.wait_listening("127.0.0.1", port, 30, "amqtt broker")
    return Broker(
        f"mqtt://127.0.0.1:{port}", "3.1.1", "amqtt (in-process fallback, MQTT 3.1.1)"
    ), None


NO_TIMESCALEDB_HINT = (
    "TimescaleDB is not installed in the embedded PostgreSQL (scripts/timescaledb install adds "
    "it; scripts/demo does so where it can build it)"
)


@contextlib.contextmanager
def database(workdir: Path) -> Iterator[tuple[str, str, str]]:
    """The database URL, what serves it, and why TimescaleDB is not offered ('' when it is).

    The embedded server runs with TimescaleDB preloaded when the extension is installed in the
    wheel's PostgreSQL; otherwise the demo runs on plain PostgreSQL.
    """
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"], "given by DATABASE_URL", ""
        return
    where = workdir / "pg"
    if devservices.timescaledb_bindir() is not None:
        settings = devservices.TIMESCALEDB_SERVER_SETTINGS
        with devservices.embedded_postgres(where, settings) as url:
            yield url, f"embedded PostgreSQL with TimescaleDB (data in {where})", ""
        return
    with devservices.embedded_postgres(where) as url:
        yield url, f"embedded PostgreSQL (data in {where})", NO_TIMESCALEDB_HINT


def storage_line(db_url: str, choice: PathChoice, no_timescaledb: str) -> str:
    """What the banner says about the storage path the database uses, and why."""
    import psycopg

    if choice.path == "timescaledb":
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
        version = f" {row[0]}" if row else ""
        return f"TimescaleDB{version} (hypertables, compression, continuous aggregates)"
    if no_timescaledb:
        why = no_timescaledb
    elif choice.why == "database created without timescaledb":
        why = f"{choice.why}; --fresh starts over on TimescaleDB"
    else:
        why = choice.why
    return f"plain PostgreSQL, TimescaleDB not used: {why}"


def plan_scenario(source: Path, workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Give every server a free port; return the scenario file to run and each device's endpoint."""
    from simulators.machines import KINDS
    from simulators.scenario import load_scenario

    scenario = load_scenario(source)
    lone = sum(1 for inst in scenario.instances if inst.server is None)
    ports = iter(devservices.free_ports(len(scenario.servers) + lone))
    servers = [s.model_copy(update={"port": next(ports)}) for s in scenario.servers]
    by_server = {s.name: s for s in servers}
    instances = []
    devices: list[dict[str, Any]] = []
    for inst in scenario.instances:
        if inst.server is None:
            inst = inst.model_copy(update={"port": next(ports)})
            port = inst.port
        else:
            port = by_server[inst.server].port
        protocol = KINDS[inst.kind].protocol
        instances.append(inst)
        devices.append(
            {
                "id": inst.id,
                "kind": inst.kind,
                "enterprise": inst.enterprise or "ent-demo",
                "line": inst.line or "",
                "protocol": protocol,
                "port": port,
                "unit_id": (inst.unit_id or 1) if protocol == "modbus" else None,
            }
        )
    planned = scenario.model_copy(update={"servers": servers, "instances": instances})
    path = workdir / "scenario.yaml"
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(planned.model_dump(mode="json", exclude_none=True), fh)
    return path, devices


def has_history(source: Path) -> bool:
    from simulators.scenario import load_scenario

    return load_scenario(source).history is not None


def write_site_files(
    devices: list[dict[str, Any]], broker: Broker, workdir: Path
) -> dict[str, tuple[Path, int, int]]:
    """One site file per enterprise; returns enterprise -> (site file, metrics port, status page
    port): each gateway needs its own ports, as they all run on this machine."""
    sites: dict[str, tuple[Path, int, int]] = {}
    folder = workdir / "gateways"
    folder.mkdir(parents=True, exist_ok=True)
    enterprises = sorted({d["enterprise"] for d in devices})
    ports = devservices.free_ports(2 * len(enterprises))
    for enterprise, metrics_port, status_port in zip(
        enterprises, ports[::2], ports[1::2], strict=True
    ):
        entries = []
        for d in (d for d in devices if d["enterprise"] == enterprise):
            scheme = "opc.tcp" if d["protocol"] == "opcua" else "tcp"
            entry: dict[str, Any] = {
                "id": d["id"],
                "profile": d["kind"],
                "endpoint": f"{scheme}://127.0.0.1:{d['port']}",
                "line": d["line"],
            }
            if d["unit_id"] is not None:
                entry["unit_id"] = d["unit_id"]
            entries.append(entry)
        site = {
            "gateway": {
                "id": f"gw-{enterprise}",
                "enterprise": enterprise,
                "data_dir": str(folder / enterprise),
            },
            "mqtt": {"url": broker.url, "protocol": broker.protocol},
            "metrics": {"port": metrics_port, "publish_interval_s": 15},
            "status": {"port": status_port},
            "devices": entries,
        }
        path = folder / f"{enterprise}.yaml"
        yaml = YAML(typ="safe")
        yaml.default_flow_style = False
        with path.open("w", encoding="utf-8") as fh:
            yaml.dump(site, fh)
        sites[enterprise] = (path, metrics_port, status_port)
    return sites


def profile_machine_kind(profile: str) -> str:
    """The ``machine_kind`` a shipped profile declares (``raceway_grinder`` -> ``grinder``): the
    pages label machine kinds, not profile names. Empty when no shipped profile has the name."""
    from importlib import resources

    root = Path(str(resources.files("device_profiles")))
    for path in sorted(root.glob(f"*/{profile}.yaml")):
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        return str(data.get("machine_kind") or "")
    return ""


def devices_csv(devices: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["enterprise", "device", "profile", "machine_kind", "line"])
    kinds = {d["kind"]: profile_machine_kind(d["kind"]) for d in devices}
    for d in devices:  # gateways register themselves when they first connect
        writer.writerow([d["enterprise"], d["id"], d["kind"], kinds[d["kind"]], d["line"]])
    return out.getvalue()


async def prepare_database(
    db_url: str, devices: list[dict[str, Any]]
) -> tuple[PathChoice, dict[str, str]]:
    """Migrate, register the demo's enterprises and devices, and issue sign-in tokens.

    Returns the storage path the database uses and the tokens.
    """
    import psycopg
    from psycopg import AsyncConnection

    from monitoring.api.csv_import import import_devices, import_enterprises
    from monitoring.api.registry import set_grant
    from monitoring.auth import Role, create_token
    from monitoring.db.migrate import migrate_all

    with psycopg.connect(db_url, autocommit=True) as conn:
        choice = migrate_all(conn).choice
    enterprises = (DEMO_DATA / "enterprises.csv").read_text(encoding="utf-8")
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await import_enterprises(conn, enterprises, "demo_data/enterprises.csv")
        await import_devices(conn, devices_csv(devices), "demo devices")
        first = sorted({d["enterprise"] for d in devices})[0]
        bureau = await create_token(conn, Role.BUREAU, name="demo bureau")
        own = await create_token(conn, Role.ENTERPRISE, enterprise=first, name="demo enterprise")
        for enterprise in demo_grants():
            # As if each had pressed "Grant" on its own page (the token records who did)
            issued = await create_token(
                conn, Role.ENTERPRISE, enterprise=enterprise, name="demo grant"
            )
            await set_grant(conn, enterprise, True, issued.token_id)
        await enter_demo_baselines(conn)
    return choice, {"bureau": bureau.secret, f"enterprise {first}": own.secret}


BASELINE_FIGURES: Final = ("utilization", "running_rate", "reject_rate", "fault_h_per_day")


async def enter_demo_baselines(conn: Any) -> None:
    """Enter each demo enterprise's before/after baseline from its (fictional) pre-transformation
    diagnosis (demo_data/baselines.csv), as admin would: with 30 days of history a baseline
    measured over the default 30 days would fill the whole history and leave no month to
    compare with it; an entered one is compared from the go-live month on."""
    from monitoring import evidence
    from monitoring.auth import Role, create_token

    rows = list(csv.DictReader(io.StringIO((DEMO_DATA / "baselines.csv").read_text("utf-8"))))
    entered = await evidence.latest_baselines(conn, [row["enterprise"] for row in rows])
    rows = [row for row in rows if row["enterprise"] not in entered]  # not again on a rerun
    if not rows:
        return
    # Its secret is never printed: the token only records who entered the baselines, under a
    # name that reads the same in both languages
    admin = await create_token(conn, Role.ADMIN, name="demo-diagnosis")
    for row in rows:
        entry: dict[str, Any] = {
            "method": "entered",
            "source": row["source"],
            "diagnosed_on": date.fromisoformat(row["diagnosed_on"]),
            "note": row["note"],
            **{name: float(row[name]) for name in BASELINE_FIGURES if row[name]},
        }
        await evidence.add_baseline(
            conn, row["enterprise"], entry, token_id=admin.token_id, role=Role.ADMIN.value,
            name="demo-diagnosis",
        )  # fmt: skip


def demo_grants() -> list[str]:
    """Enterprises that grant the bureau their device data in the demo (demo_data/grants.csv)."""
    text = (DEMO_DATA / "grants.csv").read_text(encoding="utf-8")
    return [row["enterprise"] for row in csv.DictReader(io.StringIO(text))]


def stored_points(db_url: str) -> int:
    import psycopg

    with psycopg.connect(db_url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


def _wait_ports(devices: list[dict[str, Any]], stack: Stack, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = {d["port"] for d in devices}
    while pending:
        stack.check()
        pending = {p for p in pending if not devservices.is_listening("127.0.0.1", p)}
        if time.monotonic() > deadline:
            raise DemoError(f"simulator ports {sorted(pending)} not listening after {timeout_s} s")
        time.sleep(0.2)


def run_demo(
    scenario: Path,
    workdir: Path,
    api_port: int,
    seconds: float | None,
    fresh: bool,
    broker_choice: str = "auto",
    history_enabled: bool = True,
    one_process: bool = False,
) -> int:
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir / "logs")
    mosquitto: devservices.Mosquitto | None = None
    try:
        broker, mosquitto = start_broker(stack, workdir, broker_choice)
        with database(workdir) as (db_url, db_kind, no_timescaledb):
            scenario_file, devices = plan_scenario(scenario, workdir)
            choice, tokens = asyncio.run(prepare_database(db_url, devices))
            storage = storage_line(db_url, choice, no_timescaledb)
            history = workdir / "history" if history_enabled and has_history(scenario) else None
            if history is not None and stored_points(db_url) > 0:
                # A second history would overlap the first run's days and its live counters
                typer.echo("history: the database has data from a previous run (--fresh: anew)")
                history = None
            sim_argv = shulian_argv("sim", "run", "--scenario", str(scenario_file))
            if history is not None:
                shutil.rmtree(history, ignore_errors=True)
                sim_argv += ["--history-dir", str(history)]
            stack.spawn("simulators", sim_argv)
            ingest_port = _start_cloud(stack, db_url, broker, api_port, one_process)
            # Meanwhile the simulators ran their history (about 20 s); then they listen
            _wait_ports(devices, stack, timeout_s=180)
            sites = write_site_files(devices, broker, workdir)
            backfills = _start_backfills(stack, sites, history) if history is not None else {}
            if not backfills:
                _start_gateways(stack, sites)
            _print_banner(
                broker,
                db_kind,
                storage,
                (api_port, ingest_port),
                sites,
                tokens,
                devices,
                stack.logdir,
            )
            if backfills:
                typer.echo(f"history: backfilling {len(backfills)} gateways from {history}")
            return _watch(stack, db_url, seconds, lambda: _after_backfills(stack, sites, backfills))
    except DemoError as exc:
        typer.echo(f"\ndemo failed: {exc}", err=True)
        return 1
    except Exception as exc:  # the one boundary: say what broke instead of a traceback
        log.debug("demo failed", exc_info=True)
        typer.echo(f"\ndemo failed: {type(exc).__name__}: {exc}", err=True)
        return 1
    finally:
        stack.stop()
        if mosquitto is not None:
            mosquitto.stop()


HISTORY_INGEST_ENV: Final = {
    # History reaches 30 days back: the ingest must accept it (its replay horizon) and keep
    # compression, retention and the batch ledger beyond that horizon, as it requires.
    "SHULIAN_INGEST_LIMITS__MAX_AGE_S": str(35 * 86_400),
    "SHULIAN_INGEST_STORAGE__COMPRESS_AFTER_DAYS": "40",
    "SHULIAN_INGEST_STORAGE__LEDGER_RETENTION_DAYS": "40",
    # Recompute late days within seconds of the backfill, not a minute later (both are cheap
    # at the demo's size)
    "SHULIAN_MONITORING_REFRESH__DAILY_S": "5",
    "SHULIAN_INGEST_STORAGE__ROLLUP_REFRESH_S": "5",
}


def _start_cloud(stack: Stack, db_url: str, broker: Broker, port: int, one_process: bool) -> int:
    """Start the ingest and the monitoring (the dashboard on ``port``); return the port of the
    ingest's /metrics and health (``port`` itself when one process serves both)."""
    ingest_port = port if one_process else devservices.free_port()
    env = {
        "SHULIAN_INGEST_DB__URL": db_url,
        "SHULIAN_INGEST_MQTT__URL": broker.url,
        "SHULIAN_INGEST_MQTT__PROTOCOL": broker.protocol,
        "SHULIAN_INGEST_MQTT__SHARE_GROUP": "ingest" if broker.protocol == "5" else "",
        "SHULIAN_INGEST_MQTT__CLIENT_ID": "shulian-demo-ingest",
        "SHULIAN_INGEST_REGISTRY__AUTO_REGISTER_GATEWAYS": "true",
        "SHULIAN_INGEST_API__ENABLED": "true",
        "SHULIAN_INGEST_API__PORT": str(ingest_port),
        "SHULIAN_MONITORING_DB__URL": db_url,
        "SHULIAN_MONITORING_HTTP__PORT": str(port),
        **HISTORY_INGEST_ENV,
    }
    if one_process:
        stack.spawn("ingest", shulian_argv("ingest", "run", "--with-monitoring"), env)
    else:
        stack.spawn("ingest", shulian_argv("ingest", "run"), env)
        devservices.wait_listening("127.0.0.1", ingest_port, 60, "the ingest's endpoint")
        stack.spawn("monitoring", shulian_argv("monitoring", "run"), env)
    devservices.wait_listening("127.0.0.1", port, 60, "the monitoring app")
    return ingest_port


def _start_gateways(stack: Stack, sites: dict[str, tuple[Path, int, int]]) -> None:
    for enterprise, (site, _, _) in sites.items():
        argv = shulian_argv("gateway", "run", "--config", str(site))
        stack.spawn(f"gateway-{enterprise}", argv)


def _start_backfills(
    stack: Stack, sites: dict[str, tuple[Path, int, int]], history: Path
) -> dict[str, Child]:
    """One ``gateway backfill`` per site, sending its devices' history logs through the broker."""
    return {
        enterprise: stack.spawn(
            f"backfill-{enterprise}",
            shulian_argv("gateway", "backfill", "--config", str(site), "--history", str(history)),
        )
        for enterprise, (site, _, _) in sites.items()
    }


def _after_backfills(
    stack: Stack, sites: dict[str, tuple[Path, int, int]], backfills: dict[str, Child]
) -> None:
    """Once every backfill has finished, start the live gateways (their counters then continue
    from the history's last readings); a failed backfill stops the demo with its log."""
    if not backfills:
        return
    for enterprise, child in list(backfills.items()):
        code = child.proc.poll()
        if code == 0:  # done: no longer a child whose exit means trouble
            stack.children.remove(child)
            del backfills[enterprise]
        elif code is not None:
            raise DemoError(
                f"backfill for {enterprise} exited with status {code}; its log "
                f"({child.logfile}) ends:\n{child.tail()}"
            )
    if backfills:
        return
    _start_gateways(stack, sites)
    typer.echo("history: backfilled; live gateways started")


def _print_banner(
    broker: Broker,
    db_kind: str,
    storage: str,
    ports: tuple[int, int],
    sites: dict[str, tuple[Path, int, int]],
    tokens: dict[str, str],
    devices: list[dict[str, Any]],
    logdir: Path,
) -> None:
    base, ingest = (f"http://127.0.0.1:{port}" for port in ports)
    lines = [
        "",
        "shulian demo is running",
        f"  broker      {broker.url}  ({broker.kind})",
        f"  database    {db_kind}",
        f"  storage     {storage}",
        f"  machines    {len(devices)} simulated in {len(sites)} enterprises",
        "",
        f"  dashboard   {base}/            (sign in with a token below)",
        f"  sign in     {base}/login",
        f"  API docs    {base}/docs",
        f"  health      {base}/api/health",
        f"  ingest      {ingest}/api/ingest/health  {ingest}/metrics"
        + ("  (the same process)" if ingest == base else ""),
    ]
    lines += [
        f"  gateway     http://127.0.0.1:{status}/  http://127.0.0.1:{port}/metrics  ({ent})"
        for ent, (_, port, status) in sites.items()
    ]
    lines += [""] + [f"  token       {who}: {secret}" for who, secret in tokens.items()]
    lines += ["", f"  logs        {logdir}", "  Ctrl-C stops everything.", ""]
    typer.echo("\n".join(lines))


def _watch(
    stack: Stack, db_url: str, seconds: float | None, tick: Callable[[], None] = lambda: None
) -> int:
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    last_print = 0.0
    while not stop["now"]:
        tick()
        stack.check()
        if seconds is not None and time.monotonic() - started >= seconds:
            break
        if time.monotonic() - last_print >= 2.0:
            last_print = time.monotonic()
            try:
                text = f"stored points: {stored_points(db_url):,}"
            except Exception as exc:  # the count is informative only; the check above is what fails
                text = f"stored points: (database not answering: {exc})"
            if sys.stdout.isatty():
                typer.echo(f"\r{text:<60}", nl=False)
            else:
                typer.echo(text)
        time.sleep(0.2)
    typer.echo("stopping ...")
    return 0


@app.callback(invoke_without_command=True)
def demo(
    scenario: Annotated[Path, typer.Option(help="Simulator scenario to run.")] = DEFAULT_SCENARIO,
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its data and logs.")] = Path(
        "var/demo"
    ),
    port: Annotated[int, typer.Option(help="Port of the dashboard and API.")] = 8080,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    fresh: Annotated[bool, typer.Option(help="Delete the previous run's data first.")] = False,
    broker: Annotated[
        str,
        typer.Option(
            help="auto: Mosquitto when installed, else amqtt; or force mosquitto or amqtt. "
            "MQTT_URL, when set, wins."
        ),
    ] = "auto",
    history: Annotated[
        bool,
        typer.Option(
            help="Start with the scenario's past days (30 in the demo scenario), backfilled "
            "through the gateways before they go live."
        ),
    ] = True,
    one_process: Annotated[
        bool,
        typer.Option(
            "--one-process",
            help="Run the ingest and the monitoring in one process (shulian ingest run "
            "--with-monitoring), as a small site may; default: two processes.",
        ),
    ] = False,
) -> None:
    """Start simulators, a gateway per enterprise, the ingest and the dashboard; print the URLs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if broker not in ("auto", "mosquitto", "amqtt"):
        raise typer.BadParameter("choose auto, mosquitto or amqtt", param_hint="--broker")
    raise typer.Exit(
        run_demo(
            scenario,
            workdir.resolve(),
            port,
            seconds,
            fresh,
            broker,
            history_enabled=history,
            one_process=one_process,
        )
    )
