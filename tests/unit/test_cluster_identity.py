"""The ledger's cluster identity (storage/cluster_identity.py), on SQLite and (when configured)
PostgreSQL: one id however many processes start at once, and the Ray binding a worker of
another Ray is refused by, which a stale or restarted Ray gives up."""

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, func, select, update

from schemas.errors import ClusterMismatchError
from schemas.settings import Settings
from schemas.stack import Endpoints
from storage import tables as t
from storage.clock import host_now
from storage.cluster_identity import (
    bound_ray,
    broker_mismatch_message,
    check_ray,
    cluster_id,
    live_binding,
    require_same_cluster,
    shown_url,
    stale_after,
)
from storage.engine import make_engine, migrate
from workers import cluster_guard
from workers.cluster_guard import RayGuard

STALE = 120.0


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated ledger without a cluster identity yet (the PostgreSQL test database is
    shared by the session: its row is removed first)."""
    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(delete(t.ClusterIdentity))
    yield engine
    engine.dispose()


def seen_ago(engine: Engine, seconds: float) -> None:
    """Make the bound Ray last seen `seconds` ago."""
    with engine.begin() as conn:
        conn.execute(
            update(t.ClusterIdentity).values(ray_seen_at=host_now() - timedelta(seconds=seconds))
        )


def test_processes_starting_at_once_get_one_cluster_id(engine: Engine, database_url: str):
    engines = [make_engine(database_url) for _ in range(8)]
    start = threading.Barrier(len(engines))
    ids: list[str] = []

    def first_start(own: Engine) -> None:
        start.wait()
        ids.append(cluster_id(own))

    threads = [threading.Thread(target=first_start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for own in engines:
        own.dispose()
    assert len(ids) == 8 and len(set(ids)) == 1 and len(ids[0]) == 32
    assert cluster_id(engine) == ids[0]  # and it stays
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(t.ClusterIdentity)) == 1


def test_the_first_ray_is_bound_and_another_live_one_is_refused(engine: Engine):
    assert bound_ray(engine) is None
    first = check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    assert first.bound and first.conflict is None and first.replaced is None
    other = check_ray(engine, "session_b", "10.0.0.9:6380", STALE)
    assert not other.bound and other.conflict is not None
    assert (other.conflict.ray_id, other.conflict.address) == ("session_a", "10.0.0.5:6380")
    assert other.conflict.seen_seconds_ago < 30
    bound = bound_ray(engine)
    assert bound is not None and bound.ray_id == "session_a"  # the refused one wrote nothing


def test_the_same_ray_refreshes_when_it_was_seen(engine: Engine):
    check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    seen_ago(engine, 100)
    bound = bound_ray(engine)
    assert bound is not None and bound.seen_seconds_ago >= 99
    assert check_ray(engine, "session_a", "10.0.0.5:6380", STALE).bound
    bound = bound_ray(engine)
    assert bound is not None and bound.seen_seconds_ago < 30


def test_a_stale_binding_is_replaced(engine: Engine):
    check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    seen_ago(engine, STALE + 60)  # no worker has seen it since: its cluster is gone
    taken = check_ray(engine, "session_b", "10.0.0.9:6380", STALE)
    assert taken.bound and taken.conflict is None
    assert taken.replaced is not None and taken.replaced.ray_id == "session_a"
    bound = bound_ray(engine)
    assert bound is not None and (bound.ray_id, bound.address) == ("session_b", "10.0.0.9:6380")
    assert check_ray(engine, "session_a", "10.0.0.5:6380", STALE).conflict is not None


def test_a_restarted_head_at_the_bound_address_replaces_its_binding_at_once(engine: Engine):
    check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    restarted = check_ray(engine, "session_a2", "10.0.0.5:6380", STALE)  # a new Ray id there
    assert restarted.bound and restarted.replaced is not None
    # ...but a loopback address names no one host: two hosts' 127.0.0.1 are two Rays
    seen_ago(engine, STALE + 1)
    check_ray(engine, "session_c", "127.0.0.1:6380", STALE)
    assert check_ray(engine, "session_d", "127.0.0.1:6380", STALE).conflict is not None


def test_a_private_ray_is_never_bound(engine: Engine):
    assert check_ray(engine, "session_p", "10.0.0.7:41000", STALE, may_bind=False).bound is False
    assert bound_ray(engine) is None and live_binding(engine, STALE) is None
    check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    assert live_binding(engine, STALE) is not None
    seen_ago(engine, STALE + 1)
    assert live_binding(engine, STALE) is None


def test_the_staleness_window_outlasts_several_sweeps():
    assert stale_after(15) == 120 and stale_after(60) == 240


def test_a_private_ray_worker_is_refused_while_a_shared_one_is_live(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(cluster_guard, "ray_joined", lambda: False)  # no private Ray started
    settings = Settings(sweep_interval=1)
    private = Endpoints(broker_url=None, database_url="", ray_address=None)
    guard = RayGuard(settings, private)
    guard.check(engine)  # nothing bound: it runs (with a warning)
    check_ray(engine, "session_a", "10.0.0.5:6380", STALE)
    guard.check(engine)  # checked less than 30 s ago: not asked again
    with pytest.raises(ClusterMismatchError) as refused:
        RayGuard(settings, private).check(engine)
    message = str(refused.value)
    assert "this worker would start a private Ray instance (SLUICE_RAY_ADDRESS is unset" in message
    assert "models run on Ray cluster session_a at 10.0.0.5:6380" in message
    assert "Set SLUICE_RAY_ADDRESS=10.0.0.5:6380 on this host" in message
    with pytest.raises(ClusterMismatchError, match="SLUICE_RAY_ADDRESS=10.0.0.5:6380"):
        cluster_guard.check_at_start(settings, private, engine)


def test_a_broker_that_does_not_answer_or_is_not_redis_is_not_checked(engine: Engine):
    assert require_same_cluster(engine, "redis://127.0.0.1:1/0") is None
    assert require_same_cluster(engine, "amqp://guest@127.0.0.1:1//") is None
    assert require_same_cluster(engine, None) is None


def test_the_broker_mismatch_says_what_to_set():
    sqlite = broker_mismatch_message(
        "redis://h:6379/0", "3f2a", "sqlite:////srv/b/.sluice/sluice.db", "9bc1"
    )
    assert sqlite.startswith(
        "the broker redis://h:6379/0 serves Sluice cluster 3f2a but this process's ledger "
        "(sqlite:////srv/b/.sluice/sluice.db) is cluster 9bc1: the hosts do not share one ledger."
    )
    assert "SQLite file, which only this host sees" in sqlite
    assert "Set SLUICE_DATABASE_URL to the database every host uses" in sqlite
    shared = broker_mismatch_message("redis://h:6379/0", "3f2a", "postgresql://u:***@db/s", "9bc1")
    assert "SQLite" not in shared and "Set SLUICE_DATABASE_URL" in shared
    assert shown_url("redis://:secret@h:6379/0") == "redis://:***@h:6379/0"
    assert shown_url("rediss://user:secret@h:6380/1") == "rediss://user:***@h:6380/1"
    assert shown_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
