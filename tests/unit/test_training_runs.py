"""Training runs, on SQLite and (when configured) PostgreSQL: leases like chunks, statuses
that tell the truth, and the sweeper's view of runs whose worker died."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, update

from schemas.errors import RunNotFoundError
from schemas.training import RUN_PREFIX
from storage import tables as t
from storage.engine import make_engine, migrate
from storage.training_runs import TrainingRuns


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def runs(engine: Engine) -> TrainingRuns:
    return TrainingRuns(engine)


def new_run(runs: TrainingRuns, tenant: str = "default") -> str:
    return runs.create(
        {"name": "spam", "epochs": 3}, name="spam", task="classify-text", tenant=tenant
    )


def expire_lease(engine: Engine, run_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(t.TrainingRun)
            .where(t.TrainingRun.id == run_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=5))
        )


def test_a_new_run_is_queued_with_its_spec(runs: TrainingRuns):
    run_id = new_run(runs)
    assert run_id.startswith(RUN_PREFIX) and len(run_id) == len(RUN_PREFIX) + 24
    view = runs.get(run_id)
    assert (view.status, view.name, view.task, view.tenant) == (
        "queued",
        "spam",
        "classify-text",
        "default",
    )
    assert view.spec == {"name": "spam", "epochs": 3} and view.progress == {}
    assert view.attempts == 0 and view.started_at is None
    assert view.created_at.tzinfo is not None


def test_an_unknown_run_is_named_in_the_error(runs: TrainingRuns):
    with pytest.raises(RunNotFoundError, match="no training run with id 'tr_nope'"):
        runs.get("tr_nope")
    with pytest.raises(RunNotFoundError):
        runs.cancel("tr_nope")


def test_a_live_lease_of_another_worker_is_respected_until_it_expires(
    runs: TrainingRuns, engine: Engine
):
    run_id = new_run(runs)
    claimed = runs.claim(run_id, "w1", 60)
    assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
    assert claimed.lease_owner == "w1" and claimed.started_at is not None
    assert claimed.lease_expires_at and claimed.lease_expires_at > datetime.now(UTC)
    assert runs.claim(run_id, "w2", 60) is None
    expire_lease(engine, run_id)  # w1 died
    again = runs.claim(run_id, "w2", 60)
    assert again is not None and again.lease_owner == "w2" and again.attempts == 2
    assert again.started_at == claimed.started_at  # the first start is kept
    assert not runs.renew(run_id, "w1", 60) and runs.renew(run_id, "w2", 60)
    assert not runs.finish(run_id, "w1", 1)  # the old owner cannot settle it


def test_a_finished_run_cannot_be_claimed_again(runs: TrainingRuns):
    run_id = new_run(runs)
    assert runs.claim(run_id, "w1", 60)
    assert runs.finish(run_id, "w1", model_version=3)
    view = runs.get(run_id)
    assert (view.status, view.model_version, view.lease_owner) == ("succeeded", 3, None)
    assert view.finished_at is not None
    assert runs.claim(run_id, "w2", 60) is None
    assert not runs.fail(run_id, None, "too late")  # a finished run is never changed
    assert runs.get(run_id).status == "succeeded"


def test_progress_is_replaced_while_running_only(runs: TrainingRuns):
    run_id = new_run(runs)
    runs.update_progress(run_id, {"epoch": 1})
    assert runs.get(run_id).progress == {}
    runs.claim(run_id, "w1", 60)
    runs.update_progress(run_id, {"epoch": 1, "loss": 0.5})
    runs.update_progress(run_id, {"epoch": 2})
    assert runs.get(run_id).progress == {"epoch": 2}


def test_release_requeues_for_a_retry_and_fail_ends_the_run(runs: TrainingRuns):
    run_id = new_run(runs)
    runs.claim(run_id, "w1", 60)
    assert not runs.release(run_id, "w2", "not mine")
    assert runs.release(run_id, "w1", "CUDA out of memory")
    view = runs.get(run_id)
    assert (view.status, view.error, view.lease_owner) == ("queued", "CUDA out of memory", None)
    runs.claim(run_id, "w2", 60)
    assert not runs.fail(run_id, "w1", "boom")
    assert runs.fail(run_id, "w2", "boom")
    view = runs.get(run_id)
    assert (view.status, view.error, view.attempts) == ("failed", "boom", 2)


def test_cancel_stops_live_runs_and_leaves_finished_ones(runs: TrainingRuns):
    queued, running, done = new_run(runs), new_run(runs), new_run(runs)
    runs.claim(running, "w1", 60)
    runs.claim(done, "w1", 60)
    runs.finish(done, "w1", 1)
    assert runs.cancel(queued).status == "cancelled"
    assert runs.cancel(running).status == "cancelled" and runs.is_cancelled(running)
    assert runs.cancel(done).status == "succeeded" and not runs.is_cancelled(done)
    assert runs.claim(queued, "w2", 60) is None
    assert not runs.finish(running, "w1", 1)  # the worker learns it was cancelled
    assert runs.get(running).status == "cancelled"


def test_the_sweeper_resends_stale_queued_runs_and_runs_whose_worker_died(
    runs: TrainingRuns, engine: Engine
):
    fresh, stale, alive, dead, done = (new_run(runs) for _ in range(5))
    with engine.begin() as conn:
        conn.execute(
            update(t.TrainingRun)
            .where(t.TrainingRun.id == stale)
            .values(enqueued_at=datetime.now(UTC) - timedelta(minutes=10))
        )
    for run_id in (alive, dead, done):
        runs.claim(run_id, "w1", 60)
    runs.finish(done, "w1", 1)
    expire_lease(engine, dead)
    due = runs.due_for_resend(requeue_after=60)
    assert sorted(due) == sorted([stale, dead])
    assert sorted(runs.mark_enqueued(due)) == sorted(due)
    assert runs.due_for_resend(requeue_after=60) == []
    view = runs.get(dead)
    assert (view.status, view.lease_owner) == ("queued", None)
    assert runs.claim(dead, "w2", 60) is not None
    assert fresh not in due


def test_list_is_newest_first_and_filters_by_tenant(runs: TrainingRuns):
    first, second = new_run(runs, "acme"), new_run(runs, "globex")
    third = new_run(runs, "acme")
    assert [r.id for r in runs.list()] == [third, second, first]
    assert [r.id for r in runs.list(tenant="acme")] == [third, first]
    assert [r.id for r in runs.list(limit=1)] == [third]


def test_migration_matches_the_models(engine: Engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), t.Base.metadata)
    assert diff == []


def test_an_attempt_knows_when_its_run_was_taken_over_or_cancelled(
    runs: TrainingRuns, engine: Engine
):
    run_id = new_run(runs)
    assert runs.claim(run_id, "first", 30) is not None and runs.holds(run_id, "first")
    expire_lease(engine, run_id)
    assert runs.claim(run_id, "second", 30) is not None  # its worker went quiet: taken over
    assert not runs.holds(run_id, "first") and runs.holds(run_id, "second")
    runs.cancel(run_id)
    assert not runs.holds(run_id, "second")


def test_a_run_registers_at_most_one_version(engine: Engine):
    from sqlalchemy.exc import IntegrityError

    from storage.registry import Registry

    registry = Registry(engine)
    registry.register(
        "bc", "classify-records", uri="/a", sha256="0" * 64, metrics={}, training_run_id="tr_x"
    )
    with pytest.raises(IntegrityError):  # a second, overlapping attempt of the same run
        registry.register(
            "bc", "classify-records", uri="/b", sha256="1" * 64, metrics={}, training_run_id="tr_x"
        )
    assert [v.uri for v in registry.list("bc")] == ["/a"]
