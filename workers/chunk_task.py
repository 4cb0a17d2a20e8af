"""The Celery task that processes one chunk: a thin adapter that owns the ledger, the chunk's
lease and its retries, and hands the items to the model actor the catalog names."""

import logging
import os
import socket
import time
from dataclasses import asdict
from functools import cached_property

from celery import Celery, Task

from schemas.catalog import Catalog, load_catalog
from schemas.jobs import Item, Outcome
from schemas.queues import PROCESS_CHUNK
from schemas.settings import Settings
from schemas.stack import Endpoints
from schemas.states import ItemStatus
from storage.engine import make_engine, migrate
from storage.ledger import JobView, Ledger
from workers.callback_delivery import deliver_due
from workers.leases import LeaseKeeper

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
        migrate(engine)
        return Ledger(engine)

    def run_on_actor(self, job: JobView, chunk_id: str, items: list[Item]) -> list[Outcome]:
        import ray

        from workers.runtime import actor_directory as actors

        actors.connect(
            self.endpoints.ray_address,
            self.endpoints.ray_auth_token_path,
            self.outside_code,
        )
        replica = actors.replica_for(chunk_id, self.settings.replicas)
        actor = actors.get_actor(
            self.catalog.get(job.task),
            job.model,
            job.params.get("model_path", ""),
            job.model_version,
            replica,
            self.settings,
        )
        # The worker's own limits travel with each chunk: the actor checks every media
        # reference against them again, whatever the producer accepted.
        params = {**job.params, "media_limits": asdict(self.settings.media_limits())}
        ref = actor.process.remote(
            job.id, [i.model_dump(exclude_none=True) for i in items], params, job.explain_policy
        )
        raw = ray.get(ref, timeout=self.settings.chunk_time_limit)
        return [Outcome.model_validate(r) for r in raw]


def compute_outcomes(
    state: WorkerState, job: JobView, chunk_id: str, items: list[Item]
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
        for outcome in state.run_on_actor(job, chunk_id, ready):
            known[outcome.key] = outcome
    return [known[i.key] for i in items]


def process_chunk(task: Task, state: WorkerState, chunk_id: str) -> str:
    settings, ledger = state.settings, state.ledger
    owner = f"{socket.gethostname()}:{os.getpid()}:{task.request.id}"
    claim = ledger.claim(chunk_id, owner, settings.lease_seconds)
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
    try:
        with LeaseKeeper(
            lambda: ledger.renew(chunk_id, owner, settings.lease_seconds),
            settings.lease_seconds,
            f"chunk {chunk_id}",
        ):
            outcomes = compute_outcomes(state, claim.job, chunk_id, claim.items)
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
    if not ledger.complete(chunk_id, owner, outcomes):
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
