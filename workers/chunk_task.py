"""The Celery task that processes one chunk: a thin adapter that owns the ledger, the chunk's
lease and its retries, and hands the items to the model actor the catalog names."""

import logging
import os
import socket
import time
from dataclasses import asdict
from functools import cached_property
from typing import Any

from celery import Celery, Task

from schemas.catalog import Catalog, load_catalog
from schemas.errors import SchemaVersionError
from schemas.jobs import Item, Outcome
from schemas.queues import PROCESS_CHUNK
from schemas.settings import Settings
from schemas.stack import Endpoints
from schemas.states import ItemStatus
from storage.engine import make_engine, require_current_schema
from storage.ledger import JobView, Ledger
from workers.callback_delivery import deliver_due
from workers.isolation import actor_died, isolate
from workers.leases import LeaseKeeper
from workers.ray_calls import ActorCalls, WorkCancelled

log = logging.getLogger("sluice.worker")


class WorkerState:
    """Per-process resources, made lazily: Celery forks its children after start-up, and a
    database pool or a Ray connection must not cross a fork."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.catalog: Catalog = load_catalog(settings.task_modules)

    @cached_property
    def outside_code(self) -> list[str]:
        """Packages of tasks from outside Sluice, shipped to Ray when this process joins."""
        from workers.runtime import actor_directory

        return actor_directory.outside_code(self.catalog)

    @cached_property
    def ledger(self) -> Ledger:
        engine = make_engine(self.endpoints.database_url)
        require_current_schema(engine)
        return Ledger(engine)

    def run_on_actor(
        self, job: JobView, chunk_id: str, items: list[Item], calls: ActorCalls
    ) -> list[Outcome]:
        """Outcomes from the shared model actor; if that actor dies during the call, from a
        private one that isolates any item that kills it (workers/isolation.py)."""
        from workers.runtime import actor_directory as actors

        actors.connect(
            self.endpoints.ray_address,
            self.endpoints.ray_auth_token_path,
            self.outside_code,
        )
        spec = self.catalog.get(job.task)
        model_path = job.params.get("model_path", "")
        replica = actors.replica_for(chunk_id, self.settings.replicas)
        shared = actors.get_actor(
            spec, job.model, model_path, job.model_version, replica, self.settings
        )
        # The worker's own limits travel with each chunk: the actor checks every media
        # reference against them again, whatever the producer accepted.
        params = {**job.params, "media_limits": asdict(self.settings.media_limits())}
        policy = job.explain_policy

        def run(actor: Any, part: list[Item]) -> list[Outcome]:
            raw = [i.model_dump(exclude_none=True) for i in part]
            got = calls.get(actor.process.remote(job.id, raw, params, policy))
            return [Outcome.model_validate(r) for r in got]

        try:
            return run(shared, items)
        except Exception as exc:
            if not actor_died(exc):
                raise
            log.warning("chunk %s: its model actor died; isolating the cause", chunk_id)
        private = actors.private_actor(
            spec, model_path, f"sluice-isolate:{chunk_id}:{os.getpid()}", self.settings
        )
        try:
            return isolate(lambda part: run(private, part), items)
        finally:
            import ray

            ray.kill(private, no_restart=True)


def compute_outcomes(
    state: WorkerState, job: JobView, chunk_id: str, items: list[Item], calls: ActorCalls
) -> list[Outcome]:
    """Invalid items are settled here; the rest go to the model actor. Order is kept."""
    cap = state.settings.max_text_chars
    modality = state.catalog.get(job.task).modality
    known: dict[str, Outcome] = {}
    ready = []
    for item in items:
        problem = modality.item_problem(item, cap)
        if problem:
            known[item.key] = Outcome(key=item.key, status=ItemStatus.INVALID, error=problem)
        else:
            ready.append(item)
    if ready:
        for outcome in state.run_on_actor(job, chunk_id, ready, calls):
            known[outcome.key] = outcome
    return [known[i.key] for i in items]


def _retry_later(task: Task, settings: Settings, exc: Exception) -> Exception:
    """Keep the message (a retry with backoff) when the ledger cannot be reached: acking a
    message whose chunk was never claimed would leave it to the sweeper's next re-send."""
    countdown = min(settings.retry_backoff ** min(task.request.retries + 1, 6), 60)
    return task.retry(exc=exc, countdown=countdown, max_retries=None)


def process_chunk(task: Task, state: WorkerState, chunk_id: str) -> str:
    settings = state.settings
    owner = f"{socket.gethostname()}:{os.getpid()}:{task.request.id}"
    try:
        ledger = state.ledger
        claim = ledger.claim(chunk_id, owner, settings.lease_seconds)
    except SchemaVersionError:
        raise
    except Exception as exc:
        log.warning("chunk %s: the ledger cannot be reached, retrying: %s", chunk_id, exc)
        raise _retry_later(task, settings, exc) from exc
    if claim.outcome != "claimed":
        log.info("chunk %s: %s, nothing to do", chunk_id, claim.outcome)
        return claim.outcome
    assert claim.job is not None and claim.items is not None
    if claim.attempts > settings.max_attempts:  # it killed its worker every time before
        ledger.dead_letter(
            chunk_id,
            owner,
            f"{settings.max_attempts} attempts used up (the worker holding it died each time)",
        )
        return "dead"
    started = time.perf_counter()
    calls = ActorCalls(settings.chunk_time_limit)
    try:
        with LeaseKeeper(
            lambda: ledger.renew(chunk_id, owner, settings.lease_seconds),
            settings.lease_seconds,
            f"chunk {chunk_id}",
            on_lost=calls.cancel,
        ):
            outcomes = compute_outcomes(state, claim.job, chunk_id, claim.items, calls)
    except WorkCancelled:
        log.warning("chunk %s: lease lost or job cancelled; its model work was cancelled", chunk_id)
        return "lease-lost"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if claim.attempts >= settings.max_attempts:
            log.error(
                "chunk %s: dead-lettered after %d attempts: %s", chunk_id, claim.attempts, reason
            )
            ledger.dead_letter(chunk_id, owner, reason)
            return "dead"
        log.warning("chunk %s: attempt %d failed, retrying: %s", chunk_id, claim.attempts, reason)
        ledger.release(chunk_id, owner, reason)
        raise task.retry(
            exc=exc, countdown=settings.retry_backoff**claim.attempts, max_retries=None
        ) from exc
    computed = time.perf_counter()
    try:
        completed = ledger.complete(chunk_id, owner, outcomes)
    except Exception as exc:  # an outage: the lease expires, and this message computes again
        log.warning("chunk %s: results not stored (the ledger failed), retrying: %s", chunk_id, exc)
        raise _retry_later(task, settings, exc) from exc
    if not completed:
        log.warning("chunk %s: lease lost before completion; another worker finishes it", chunk_id)
        return "lease-lost"
    log.info(
        "chunk %s: %d items, model %.3fs, ledger %.3fs",
        chunk_id,
        len(outcomes),
        computed - started,
        time.perf_counter() - computed,
    )
    if claim.job.callback_url:
        _send_callback(state, claim.job.id)
    return "done"


def _send_callback(state: WorkerState, job_id: str) -> None:
    """The worker that finishes a job tells its caller at once; the sweeper retries."""
    try:
        deliver_due(state.ledger, state.settings, [job_id])
    except Exception:  # never fail a finished chunk over its callback
        log.warning("job %s: callback not sent; the sweeper retries", job_id, exc_info=True)


def register_chunk_task(app: Celery, state: WorkerState) -> None:
    @app.task(name=PROCESS_CHUNK, bind=True)
    def process_chunk_task(self: Task, chunk_id: str) -> str:
        return process_chunk(self, state, chunk_id)
