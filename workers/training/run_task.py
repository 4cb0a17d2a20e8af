"""The Celery side of training: the `sluice.train_model` task on queue `sluice.train`, which
owns the run's lease and retries, and the sweeper's re-sending of runs whose worker died."""

import logging
import os
import socket
from collections.abc import Callable
from functools import cache

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from schemas.errors import SluiceError
from schemas.queues import TRAIN_TASK
from schemas.settings import Settings
from schemas.stack import Endpoints
from storage.engine import make_engine, require_current_schema
from storage.model_artifacts import join, remove
from storage.object_store import ObjectStore
from storage.registry import Registry
from storage.training_runs import TrainingRuns
from workers.leases import LeaseKeeper

log = logging.getLogger("sluice.train")


@cache
def _stores(database_url: str) -> tuple[TrainingRuns, Registry]:
    engine = make_engine(database_url)
    require_current_schema(engine)
    return TrainingRuns(engine), Registry(engine)


def train_model(task: Task, settings: Settings, endpoints: Endpoints, run_id: str) -> str:
    from schemas.errors import LeaseLost
    from workers.training.driver import run_training

    runs, registry = _stores(endpoints.database_url)
    owner = f"{socket.gethostname()}:{os.getpid()}:{task.request.id}"
    run = runs.claim(run_id, owner, settings.lease_seconds)
    if run is None:
        log.info("run %s: finished or running elsewhere, nothing to do", run_id)
        return "skipped"
    done = [v for v in registry.list(run.name) if v.training_run_id == run_id]
    if done:  # registered by an attempt whose worker died before marking the run finished
        runs.finish(run_id, owner, done[0].version)
        return f"registered {done[0].ref}"
    if run.attempts > settings.train_max_attempts:
        _end(
            runs,
            settings,
            run_id,
            owner,
            f"{settings.train_max_attempts} attempts used up "
            f"(the worker running it died each time); last error: {run.error or 'none'}",
        )
        return "failed"
    log.info("run %s: attempt %d, training %s", run_id, run.attempts, run.name)
    try:
        with LeaseKeeper(
            lambda: runs.renew(run_id, owner, settings.lease_seconds),
            settings.lease_seconds,
            f"run {run_id}",
        ):
            version = run_training(run, settings, endpoints, runs, registry, owner)
    except LeaseLost:
        log.warning("run %s: its lease was taken over; the new owner goes on", run_id)
        return "lease-lost"
    except SoftTimeLimitExceeded:
        _end(
            runs,
            settings,
            run_id,
            owner,
            f"ran past SLUICE_TRAIN_TIME_LIMIT "
            f"({settings.train_time_limit}s); raise it or train fewer epochs",
        )
        return "failed"
    except SluiceError as exc:  # the request or its data is wrong: a retry cannot help
        if runs.is_cancelled(run_id):
            _end(runs, settings, run_id, None, None)
            return "cancelled"
        log.error("run %s failed: %s", run_id, exc)
        _end(runs, settings, run_id, owner, str(exc))
        return "failed"
    except Exception as exc:
        reason = _reason(exc)
        if run.attempts >= settings.train_max_attempts:
            log.error("run %s failed after %d attempts: %s", run_id, run.attempts, reason)
            _end(runs, settings, run_id, owner, reason)
            return "failed"
        log.warning(
            "run %s: attempt %d failed, retrying from its last checkpoint: %s",
            run_id,
            run.attempts,
            reason,
        )
        runs.release(run_id, owner, reason)
        raise task.retry(
            exc=exc, countdown=settings.retry_backoff**run.attempts, max_retries=None
        ) from exc
    if not runs.finish(run_id, owner, version.version):
        log.warning(
            "run %s: registered %s, but the run was cancelled meanwhile", run_id, version.ref
        )
    return f"registered {version.ref}"


def _end(
    runs: TrainingRuns, settings: Settings, run_id: str, owner: str | None, error: str | None
) -> None:
    """A run that will not go on: failed (with its reason) and its checkpoints removed."""
    if error is not None:
        runs.fail(run_id, owner, error)
    remove(join(settings.training_location(), run_id), ObjectStore(settings.storage_options))


def _reason(exc: BaseException) -> str:
    """Ray wraps a worker's exception; the innermost one says what went wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"[:2000]


def resend_training(
    settings: Settings,
    database_url: str,
    send: Callable[[str], object],
    queue_is_empty: Callable[[], bool],
) -> int:
    """Re-send runs whose worker died (expired lease), and queued runs whose message may be
    lost, the latter only when the training queue is empty (a backlog is not a loss)."""
    runs, _ = _stores(database_url)
    due = runs.due_for_resend(settings.requeue_after)
    if due and not queue_is_empty():
        due = [run_id for run_id in due if runs.get(run_id).status != "queued"]
    for run_id in due:
        send(run_id)
    if due:
        runs.mark_enqueued(due)
        log.warning("sweep: re-sent training runs %s", due)
    return len(due)


def register_training(app: Celery, settings: Settings, endpoints: Endpoints) -> None:
    @app.task(
        name=TRAIN_TASK,
        bind=True,
        time_limit=settings.train_time_limit,
        soft_time_limit=max(1, settings.train_time_limit - 30),
    )
    def train_model_task(self: Task, run_id: str) -> str:
        return train_model(self, settings, endpoints, run_id)
