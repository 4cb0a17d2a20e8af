"""The fault suite's rig: its own Ray head while tests/fault runs, and per test a Redis and a
ledger it may break (a throwaway Redis always; SQLite, or a database on a throwaway
PostgreSQL), `sluice worker` processes it may kill, and the tools that break things
(libfaketime's `faketime`). Timings are short, as in tests/integration: 3 s leases, a sweep
every second."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ops import stack
from producers import Client
from schemas.settings import Settings
from schemas.stack import StackInfo
from storage.engine import normalise_url
from storage.ledger import JobView
from tests.conftest import kill_group
from tests.fault.throwaway_servers import (
    ThrowawayPostgres,
    ThrowawayRedis,
    postgres_bin_dir,
    require_tool,
)
from tests.integration.conftest import SLUICE, assert_every_finished_job_has_its_rows
from tests.integration.test_pipeline import sample_rows

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PROBE_TASKS = "sluice_fault_probe"  # tests/plugins/sluice_fault_probe: the fault-probe task
LOG_TAIL = 4000
FAILED = pytest.StashKey[bool]()  # whether the test itself failed: then its logs are shown


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture(scope="package")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A local Ray head of the suite's own, for as long as tests/fault runs (ops/stack.py
    starts it; no Redis: each test brings its own broker)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("fault-ray"), broker_url="redis://-")
    info = stack.up(settings, worker=False)
    yield info
    # SIGTERM would have Ray drain its detached actors for up to 30 s: a throwaway cluster
    # is killed outright, every process of it.
    with contextlib.suppress(psutil.NoSuchProcess):
        head = psutil.Process(info.pids["ray"])
        for proc in [*head.children(recursive=True), head]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    stack.down(settings)


ASK_PID = """
import sys
import ray
from pathlib import Path
from workers.runtime import actor_directory as actors
actors.connect(sys.argv[1], Path(sys.argv[2]))
actor = ray.get_actor(sys.argv[3], namespace=actors.NAMESPACE)
print(ray.get(actor.stats.remote(), timeout=120)["pid"])
"""


@pytest.fixture
def actor_pid(ray_head: StackInfo) -> Callable[[str], int]:
    """The pid of a named model actor of the suite's Ray head, asked from a process of its
    own: Ray keeps the first cluster's token for the life of a process, so this test
    process must not join this cluster (the integration tests join theirs later)."""

    def ask(name: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", ASK_PID, ray_head.ray_address or "",
             str(ray_head.ray_auth_token_path or ""), name],
            capture_output=True, text=True, timeout=180, check=True,
        )  # fmt: skip
        return int(done.stdout.strip().splitlines()[-1])

    return ask


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    yield server
    server.kill()


@pytest.fixture(scope="package")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    bin_dir = require_tool(
        str(postgres_bin_dir() or ""),
        "PostgreSQL's server (initdb, pg_ctl in /usr/lib/postgresql/*/bin)",
        "apt-get install postgresql",
    )
    runuser = None
    if os.geteuid() == 0:  # the server will not run as root
        runuser = require_tool(shutil.which("runuser"), "runuser", "apt-get install util-linux")
    server = ThrowawayPostgres(Path(bin_dir), runuser)
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> Iterator[str]:
    """A new database on the throwaway server (running again, if a test left it stopped)."""
    if not postgres_server.running():
        postgres_server.start()
    name = f"fault_{uuid.uuid4().hex[:10]}"
    admin(postgres_server, f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    if not postgres_server.running():
        postgres_server.start()
    admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(server: ThrowawayPostgres, statement: str) -> None:
    """One statement on a new connection (the server may have restarted since the last)."""
    engine = create_engine(
        normalise_url(server.url()), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with engine.connect() as conn:
        conn.execute(text(statement))


@pytest.fixture(scope="session")
def faketime() -> str:
    return require_tool(
        shutil.which("faketime"), "faketime (libfaketime)", "apt-get install faketime"
    )


@dataclass
class Rig:
    """One test's Sluice: the SLUICE_* environment, an SDK client, and the worker
    processes started (each the leader of its process group)."""

    env: dict[str, str]
    client: Client
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker(self, *args: str, faketime: list[str] | None = None) -> subprocess.Popen[bytes]:
        """`sluice worker ARGS`, or `faketime ... sluice worker ARGS` (a wrong clock)."""
        with (self.logs / f"worker-{len(self.workers)}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*(faketime or []), SLUICE, "worker", *args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker's whole process group: the worker, its pool and its beat."""
        kill_group(worker, signal.SIGKILL)
        self.killed.append(worker)

    def wait(self, job_id: str, timeout: float) -> JobView:
        """The job once it has finished; fails at once if a worker exits on its own."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.client.status(job_id)
            if view.status.finished:
                return view
            exited = [w.args for w in self.workers if w.poll() is not None and w not in self.killed]
            assert not exited, f"workers exited by themselves: {exited}; see {self.logs}"
            assert time.monotonic() < deadline, (
                f"job {job_id} still {view.status} after {timeout}s "
                f"({view.counts.processed}/{view.counts.total} items)"
            )
            time.sleep(0.25)

    def pool_pids(self, worker: subprocess.Popen[bytes]) -> set[int]:
        """The worker's child processes (its Celery pool and, with --beat, the beat)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return {p.pid for p in psutil.Process(worker.pid).children()}
        return set()

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log"))
        )

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                kill_group(proc)
            for leftover in (f"faketime_shm_{proc.pid}", f"sem.faketime_sem_{proc.pid}"):
                Path("/dev/shm", leftover).unlink(missing_ok=True)  # a killed faketime's


def sample_texts(n: int) -> dict[str, str]:
    """{key: text}: short English messages, distinct, for the embed task."""
    return {row["id"]: row["text"] for row in sample_rows(n)}


def sluice_env(
    ray: StackInfo, broker_url: str, database_url: str, data_dir: Path
) -> dict[str, str]:
    return {
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_BROKER_URL": broker_url,
        "SLUICE_DATABASE_URL": database_url,
        "SLUICE_RAY_ADDRESS": ray.ray_address,
        "SLUICE_RAY_AUTH_TOKEN_PATH": str(ray.ray_auth_token_path or ""),
        "SLUICE_TASK_MODULES": PROBE_TASKS,
        "PYTHONPATH": os.pathsep.join(
            [str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "SLUICE_LEASE_SECONDS": "3",
        "SLUICE_SWEEP_INTERVAL": "1",
        "SLUICE_RETRY_BACKOFF": "1",
        "SLUICE_CHUNK_TIME_LIMIT": "120",
        "SLUICE_VISIBILITY_TIMEOUT": "600",
        "SLUICE_MAX_TEXT_CHARS": "2000",
    }


@pytest.fixture
def make_rig(
    ray_head: StackInfo,
    redis_server: ThrowawayRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Rig]]:
    """make_rig(database_url=None, **SLUICE_*): a Rig on the throwaway Redis and a ledger
    (SQLite in tmp_path unless given); extra settings apply to the workers and the client."""
    rigs: list[Rig] = []

    def make(database_url: str | None = None, **extra: str) -> Rig:
        database_url = database_url or f"sqlite:///{tmp_path / 'ledger.db'}"
        env = {
            **sluice_env(ray_head, redis_server.url, database_url, tmp_path / "data"),
            **extra,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(PLUGINS))
        rig = Rig(env, Client(Settings()), tmp_path)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()
        if request.node.stash.get(FAILED, False):
            print(f"--- worker logs ({rig.logs}), the last {LOG_TAIL} characters ---")
            print(rig.log_text()[-LOG_TAIL:])
        assert_every_finished_job_has_its_rows(rig.env["SLUICE_DATABASE_URL"])
        rig.client.ledger.engine.dispose()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    """The default: the ledger in SQLite."""
    return make_rig()


@pytest.fixture
def pg_rig(postgres_url: str, make_rig: Callable[..., Rig]) -> Rig:
    """The ledger on a database of the throwaway PostgreSQL (set up first, so it is
    dropped after the rig's workers are gone and its jobs checked)."""
    return make_rig(postgres_url)
