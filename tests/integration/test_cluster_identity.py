"""Misconfiguration fails at start (issue 20): two "hosts" share the test's broker; the one that
would not share the ledger or the Ray cluster is refused with a message that says what to set,
and the well-configured one works. Real Redis, Ray, SQLite/PostgreSQL and `sluice` processes."""

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update

from producers import Client
from producers.api import create_app
from schemas.errors import ClusterMismatchError
from schemas.settings import Settings
from storage import tables as t
from storage.clock import host_now
from storage.cluster_identity import BROKER_KEY, bound_ray, cluster_id, require_same_cluster
from storage.engine import make_engine, migrate
from tests.conftest import kill_group
from tests.integration.conftest import SLUICE, sluice, wait_until

pytestmark = pytest.mark.integration
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
TEXT_STATS = {"PYTHONPATH": str(PLUGINS), "SLUICE_TASK_MODULES": "sluice_text_stats"}
TEXTS = {"a": "the quick brown fox", "b": "extraordinary claims", "c": "tiny words here"}


def texts_file(tmp_path: Path) -> Path:
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    return data


def submit_and_wait(env: dict[str, str], data: Path) -> dict[str, Any]:
    """`sluice submit --wait` on host A: the job ran (its worker passed every check)."""
    done = sluice(
        {**env, **TEXT_STATS},
        "submit", str(data), "--task", "text-stats", "--key-column", "id", "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert view["status"] == "succeeded" and view["ok"] == len(TEXTS)
    return view


def worker_exit(env: dict[str, str], tmp_path: Path, name: str) -> tuple[int, str]:
    """Run `sluice worker` to its exit (it must stop by itself at start)."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [SLUICE, "worker", "--beat"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                kill_group(proc)
    return code, log.read_text(errors="replace")


def host_b(env: dict[str, str], tmp_path: Path, *unset: str) -> dict[str, str]:
    """Another host: the same broker, its own data dir, without the variables `unset`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    kept = {k: v for k, v in env.items() if k not in unset}
    return {**clean, **kept, **TEXT_STATS, "SLUICE_DATA_DIR": str(tmp_path / "host-b")}


def test_a_host_without_the_shared_ledger_is_refused_at_start(
    env: dict[str, str], start_worker: Callable[..., Any], tmp_path: Path
):
    start_worker(**TEXT_STATS)
    submit_and_wait(env, texts_file(tmp_path))  # host A: its CLI and worker work
    ours = cluster_id(make_engine(env["SLUICE_DATABASE_URL"]))
    b = host_b(env, tmp_path, "SLUICE_DATABASE_URL")

    submitted = subprocess.run(
        [SLUICE, "submit", str(texts_file(tmp_path)), "--task", "text-stats", "--key-column", "id"],
        env=b, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 2
    message = submitted.stderr
    theirs = cluster_id(make_engine(f"sqlite:///{tmp_path / 'host-b' / 'sluice.db'}"))
    assert f"serves Sluice cluster {ours} but this process's ledger (sqlite:///" in message
    assert f"host-b/sluice.db) is cluster {theirs}: the hosts do not share one ledger" in message
    assert "SQLite file, which only this host sees (with SLUICE_DATABASE_URL unset" in message
    assert "Set SLUICE_DATABASE_URL to the database every host uses" in message

    code, log = worker_exit(b, tmp_path, "worker-b")
    assert code == 2
    assert f"serves Sluice cluster {ours}" in log and f"is cluster {theirs}" in log
    assert "Set SLUICE_DATABASE_URL to the database every host uses" in log
    submit_and_wait(env, texts_file(tmp_path))  # host A still works


def test_a_worker_without_the_shared_ray_is_refused_at_start(
    env: dict[str, str], start_worker: Callable[..., Any], services: dict[str, str], tmp_path: Path
):
    start_worker(**TEXT_STATS)
    submit_and_wait(env, texts_file(tmp_path))  # host A's worker bound the session's Ray
    bound = bound_ray(make_engine(env["SLUICE_DATABASE_URL"]))
    assert bound is not None and bound.seen_seconds_ago < 120
    assert bound.address.endswith(":" + services["ray"].rsplit(":", 1)[1])  # the session's

    # host B: the same broker and ledger, no SLUICE_RAY_ADDRESS (Ray's own RAY_ADDRESS is
    # not read: a worker never joins whichever cluster its host happens to name)
    b = host_b(env, tmp_path, "SLUICE_RAY_ADDRESS", "SLUICE_RAY_AUTH_TOKEN_PATH")
    code, log = worker_exit({**b, "RAY_ADDRESS": services["ray"]}, tmp_path, "worker-b")
    assert code == 2, log
    assert (
        "this worker would start a private Ray instance (SLUICE_RAY_ADDRESS is unset; "
        "RAY_ADDRESS is not read) but this Sluice cluster's models run on Ray cluster "
        f"{bound.ray_id} at {bound.address}"
    ) in log
    assert f"Set SLUICE_RAY_ADDRESS={bound.address} on this host" in log


def test_a_worker_that_meets_another_ray_later_stops_and_keeps_the_chunk(
    env: dict[str, str],
    start_worker: Callable[..., Any],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """The binding changed after the worker started (another Ray became the cluster's while
    it was starting): its process refuses before it claims a chunk, and the worker stops; the
    chunk waits for a worker of the right Ray, no attempt spent."""
    engine = make_engine(env["SLUICE_DATABASE_URL"])
    migrate(engine)
    with engine.begin() as conn:  # no Ray bound (the PostgreSQL test database is shared)
        conn.execute(update(t.ClusterIdentity).values(ray_id=None, ray_seen_at=None))
    worker = start_worker(**TEXT_STATS)
    # the worker's start check binds the session's Ray before it consumes anything
    wait_until(
        lambda: bound_ray(engine) is not None or worker.poll() is not None,
        300,
        "the worker's start check",
    )
    assert worker.poll() is None
    with engine.begin() as conn:  # ...and now a worker of another Ray says it is live
        conn.execute(
            update(t.ClusterIdentity).values(
                ray_id="session_elsewhere", ray_address="10.9.9.9:6380", ray_seen_at=host_now()
            )
        )
    monkeypatch.syspath_prepend(str(PLUGINS))
    client = Client(settings.model_copy(update={"task_modules": "sluice_text_stats"}))
    job_id = client.submit_texts(TEXTS, "text-stats")
    worker.wait(timeout=300)  # it stops by itself
    log = (tmp_path / "worker-0.log").read_text(errors="replace")
    assert "but this Sluice cluster's models run on Ray cluster session_elsewhere at " in log
    assert re.search(
        r"10\.9\.9\.9:6380 \(seen \d+s ago\)\. Set SLUICE_RAY_ADDRESS=10\.9\.9\.9:6380 on this", log
    )
    assert "stopping this worker" in log
    view = client.status(job_id)
    assert view.status == "queued" and view.counts.processed == 0
    with engine.connect() as conn:
        chunks = [tuple(row) for row in conn.execute(select(t.Chunk.state, t.Chunk.attempts))]
    assert chunks == [("queued", 0)]  # not claimed: no attempt spent, nothing lost


def test_a_broker_that_lost_the_id_gets_it_again_and_another_ledger_is_refused(
    settings: Settings,
):
    broker = redis.Redis.from_url(settings.broker_url or "")
    client = Client(settings)  # a CLI or API never claims the broker: only workers do
    ours = cluster_id(client.ledger.engine)
    assert broker.get(BROKER_KEY) is None
    require_same_cluster(client.ledger.engine, settings.broker_url)  # a worker's start
    assert broker.get(BROKER_KEY) == ours.encode()
    broker.delete(BROKER_KEY)  # a Redis restarted without persistence
    Client(settings)  # not refused, not claimed
    require_same_cluster(client.ledger.engine, settings.broker_url)  # the next sweep
    assert broker.get(BROKER_KEY) == ours.encode()

    broker.set(BROKER_KEY, "0" * 32)  # the broker serves another ledger's cluster
    with pytest.raises(ClusterMismatchError, match=f"is cluster {ours}: the hosts do not"):
        Client(settings)
    with pytest.raises(ClusterMismatchError, match="Set SLUICE_DATABASE_URL"):
        create_app(settings)  # the REST API checks at start too
    assert broker.get(BROKER_KEY) == b"0" * 32  # a refused process changes nothing
    assert cluster_id(client.ledger.engine) == ours


def test_a_worker_of_a_shared_broker_without_a_ray_address_is_refused_even_alone(
    env: dict[str, str], tmp_path: Path
):
    # every host copied the same environment, without SLUICE_RAY_ADDRESS: nothing is bound
    # yet, and each worker process would start a private Ray of its own
    b = host_b(env, tmp_path, "SLUICE_RAY_ADDRESS", "SLUICE_RAY_AUTH_TOKEN_PATH")
    code, log = worker_exit(b, tmp_path, "worker-alone")
    assert code == 2, log
    assert "SLUICE_RAY_ADDRESS is unset (RAY_ADDRESS is not read)" in log
    assert "or to `local` to run this worker's processes on private Rays on purpose" in log
