"""The Celery task that processes one chunk: a thin adapter that owns the ledger, the chunk's
lease and its retries, and hands the items to the model actor the catalog names."""

import logging
import os
import signal
import socket
import time
from functools import cached_property
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from schemas.catalog import Catalog, load_catalog
from schemas.errors import (
    ClusterMismatchError,
    ConfigError,
    IsolationUnfinished,
    MediaRefError,
    ModelChangedError,
    SchemaVersionError,
    WorkCancelled,
)
from schemas.explainer_settings import explainer_of
from schemas.jobs import ExplainPolicy, Item, Outcome, cache_enabled
from schemas.media_refs import MediaLimits
from schemas.object_refs import confined_uri, is_object_uri
from schemas.queues import PROCESS_CHUNK
from schemas.settings import Settings
from schemas.stack import Endpoints
from schemas.states import ClaimOutcome, DeliveryOutcome, ItemStatus
from schemas.task_spec import split_path
from storage.engine import make_engine, require_current_schema, truncate_wal
from storage.ledger import Claim, JobView, Ledger
from storage.lineage import input_digest, sluice_version
from storage.media_sources import item_bytes
from storage.object_store import ObjectStore
from storage.result_cache import CacheScope, CacheWrite, ResultCache, answer, item_digest
from storage.usage import ChunkUsage
from workers.actor_census import report_actors
from workers.actor_work import run_chunk
from workers.callback_delivery import callback_sender, enqueue_due
from workers.cluster_guard import RayGuard
from workers.code_digest import code_digest
from workers.isolation import ISOLATING
from workers.leases import LeaseKeeper
from workers.ledger_patience import OUTAGE, patiently
from workers.media_decoding import job_limits
from workers.pii_stage import stage_for
from workers.ray_calls import ActorCalls
from workers.runtime.options import actor_options, output_options

log = logging.getLogger("sluice.worker")


class WorkerState:
    """Per-process resources, made lazily: Celery forks its children after start-up, and a
    database pool or a Ray connection must not cross a fork."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.store = ObjectStore(settings.storage_options)
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

    @cached_property
    def cache(self) -> ResultCache:
        return ResultCache(self.ledger.engine)

    def cache_scope(self, job: JobView) -> CacheScope:
        """What `job`'s results depend on besides their input (storage/result_cache.py)."""
        spec = self.catalog.get(job.task)
        options = output_options(actor_options(self.settings, spec))
        if options.get("inference_dtype") == "auto":  # resolved by where actors run
            options["inference_dtype"] = "auto:gpu" if self.cluster_has_gpu() else "auto:cpu"
        handler_package = split_path(spec.handler)[0].split(".")[0]
        registered = job.params.get("registry") or {}
        return CacheScope(
            task=job.task,
            handler=spec.handler,
            model_digest=f"{job.model_version}:{registered.get('sha256', '')}",
            params=job.params,
            explainer=explainer_of(job.params, spec, self.settings) if spec.explainer else None,
            worker=options,
            redaction=job.params.get("redaction"),
            code=code_digest(handler_package),
        )

    def join_ray(self) -> None:
        from workers.runtime import actor_directory as actors

        actors.connect(
            self.endpoints.ray_address, self.endpoints.ray_auth_token_path, self.outside_code
        )
        report_actors(self.endpoints.broker_url)  # for the console (workers/actor_census.py)

    @cached_property
    def ray_guard(self) -> RayGuard:
        return RayGuard(self.settings, self.endpoints)

    def check_ray(self) -> None:
        """Join Ray (once per process) and make sure it is the one this Sluice cluster's
        models run on (workers/cluster_guard.py): ClusterMismatchError if it is not."""
        self.join_ray()
        self.ray_guard.check(self.ledger.engine)

    def cluster_has_gpu(self) -> bool:
        """Whether model actors get a GPU (`auto` precision is bfloat16 there)."""
        from workers.runtime import actor_directory as actors

        self.join_ray()
        return actors.cluster_has_gpu()

    def run_on_actor(
        self, job: JobView, chunk_id: str, items: list[Item], calls: ActorCalls, isolate: bool
    ) -> list[Outcome]:
        self.join_ray()
        spec = self.catalog.get(job.task)
        return run_chunk(self.settings, spec, job, chunk_id, items, calls, isolate)


def from_cache(
    state: WorkerState, job: JobView, items: list[Item]
) -> tuple[dict[str, Outcome], CacheWrite | None]:
    """The items the tenant's result cache answers (by key), and what to store for the rest.
    A job that turned the cache off reads nothing from it, and refreshes it with what its
    model made. The cache only saves work: if it fails, the model runs, as without it."""
    try:
        scope = state.cache_scope(job)
        encoded, by_key = scope.encoded(), scope.keys_by_item_key
        secret = state.cache.secret(job.tenant)
        limits = job_limits(state.settings, job.params)  # as the actor reads them
        digests: dict[str, str] = {}
        for item in items:
            media = None
            if item.path is not None or item.data is not None:
                try:  # the file's bytes are keyed, read under the job's roots
                    media = media_identity(item, limits, state.store)
                except MediaRefError:
                    continue  # the actor says why it cannot be read
            digests[item.key] = item_digest(secret, encoded, item, media, by_key)
        reads = cache_enabled(job.params)
        found = state.cache.lookup(job.tenant, digests.values()) if reads else {}
    except Exception:
        log.warning("job %s: result cache not read; the model runs", job.id, exc_info=True)
        return {}, None
    policy = ExplainPolicy.parse(job.explain_policy)
    hits: dict[str, Outcome] = {}
    for key, digest in digests.items():
        if (entry := found.get(digest)) and (outcome := answer(entry, policy, job.id, key)):
            hits[key] = outcome
    misses = {k: d for k, d in digests.items() if k not in hits}
    return hits, CacheWrite(job.tenant, job.explain_policy, misses)


def media_identity(item: Item, limits: MediaLimits, store: ObjectStore) -> bytes:
    """What the result cache keys an item's media by: a file's or inline item's bytes; an
    object's location and ETag (which changes with its bytes), so the object is not fetched
    here as well as in the actor. Raises MediaRefError where the job may not read it."""
    if item.data is None and item.path and item.stamp and is_object_uri(item.path):
        uri = confined_uri(item.path, limits.prefixes)
        return f"object\0{uri}\0{item.stamp}".encode()
    return item_bytes(item.data, item.path, item.stamp, limits, store)


def compute_outcomes(
    state: WorkerState, claim: Claim, chunk_id: str, calls: ActorCalls
) -> tuple[list[Outcome], CacheWrite | None, list[Item] | None]:
    """Invalid items are settled here, and those the result cache answers; the rest go to
    the model actor. Order is kept. Also returns what the completion stores in the cache,
    and the chunk's items redacted (workers/pii_stage.py) when its stored ones must change."""
    assert claim.job is not None and claim.items is not None
    cap = state.settings.max_text_chars
    modality = state.catalog.get(claim.job.task).modality
    problems = {item.key: modality.item_problem(item, cap) for item in claim.items}
    job = claim.job
    stage = stage_for(
        state.settings,
        state.catalog,
        job,
        lambda: state.cache.secret(job.tenant),
        chunk_id,
        calls,
    )
    items = claim.items
    if stage is not None:  # the entity model's types, before the task's model sees them
        try:
            items = stage.inputs(items, {key for key, problem in problems.items() if not problem})
        except ModelChangedError as exc:  # no retry brings the submitted PII model back
            changed = f"the PII entity model changed since submit ({exc}); submit again"
            problems = {key: problem or changed for key, problem in problems.items()}
            items = stage.inputs(items, set())  # every text dropped, no model called
    known: dict[str, Outcome] = {}
    ready = []
    for item in items:
        if problem := problems[item.key]:
            known[item.key] = Outcome(key=item.key, status=ItemStatus.INVALID, error=problem)
        else:
            ready.append(item)
    cache = None
    if ready:
        hits, cache = from_cache(state, job, ready)
        known.update(hits)
        ready = [item for item in ready if item.key not in hits]
    if ready:
        isolate = (claim.last_error or "").startswith(ISOLATING)
        try:
            done = state.run_on_actor(job, chunk_id, ready, calls, isolate)
        except ModelChangedError as exc:  # no retry brings the submitted model back
            done = [Outcome(key=i.key, status=ItemStatus.INVALID, error=str(exc)) for i in ready]
            cache = None
        for outcome in done:
            known[outcome.key] = outcome
        if calls.isolated:
            cache = None  # made on the private CPU actor: not what the shared one makes
    outcomes = [known[i.key] for i in items]
    if stage is not None:
        outcomes = stage.outputs(outcomes, items)
    outcomes = with_input_digests(outcomes, items, state.cache.secret(job.tenant))
    return outcomes, cache, items if stage is not None and stage.replaced else None


def with_input_digests(outcomes: list[Outcome], items: list[Item], secret: bytes) -> list[Outcome]:
    """Each outcome with the keyed digest of the input the model read (storage/lineage.py)."""
    return [
        o.model_copy(update={"input_digest": input_digest(secret, item)})
        for o, item in zip(outcomes, items, strict=True)
    ]


def chunk_made_by(state: WorkerState, job: JobView, calls: ActorCalls) -> dict[str, Any]:
    """The worker that made a chunk's rows, for their lineage (storage/lineage.py): its
    version, the digest of its output-making code, the options that can change an output,
    and whether the rows ran on a private actor (isolating a crash)."""
    made_by: dict[str, Any] = {"sluice_version": sluice_version(), "isolated": calls.isolated}
    try:
        scope = state.cache_scope(job)
        made_by.update(code=scope.code, options=scope.worker)
    except Exception:  # the lineage says less; the rows still count
        log.warning("job %s: the worker's code digest is not recorded", job.id, exc_info=True)
    return made_by


def task_deadline(settings: Settings) -> float:
    """When this task must be done with the ledger and the actors (time.monotonic()): before
    Celery's soft limit (the time limit less 5 s) and its hard kill."""
    limit = settings.chunk_time_limit
    return time.monotonic() + (limit - 10 if limit > 20 else limit / 2)


def _retry_later(task: Task, settings: Settings, exc: Exception) -> Exception:
    """Give the message back to Celery (a retry with backoff) after waiting in vain."""
    countdown = min(settings.retry_backoff ** min(task.request.retries + 1, 6), 60)
    return task.retry(exc=exc, countdown=countdown, max_retries=None)


def _stop_worker(chunk_id: str, exc: ConfigError) -> Exception:
    """A process of this worker found the ledger at another schema version (migrated after
    the worker started), or joined another Ray than its cluster's: stop the whole worker, and
    put the message back for a current one."""
    log.error("chunk %s: %s; stopping this worker", chunk_id, exc)
    os.kill(os.getppid(), signal.SIGTERM)  # the Celery main process: a warm shutdown
    return Reject(str(exc), requeue=True)


def _check_ray(state: WorkerState, chunk_id: str) -> None:
    """Refuse the chunk (the message goes back, the worker stops) in a process joined to
    another Ray than its cluster's. Any other failure here (Ray or the ledger unreachable) is
    left to the attempt, which meets it as it always did."""
    try:
        state.check_ray()
    except ClusterMismatchError:
        raise
    except Exception:
        log.warning("chunk %s: Ray's cluster binding not checked", chunk_id, exc_info=True)


def process_chunk(task: Task, state: WorkerState, chunk_id: str) -> ClaimOutcome | DeliveryOutcome:
    settings = state.settings
    deadline = task_deadline(settings)
    owner = f"{socket.gethostname()}:{os.getpid()}:{task.request.id}"
    claim_by = min(deadline, time.monotonic() + settings.ledger_patience)
    try:
        ledger = patiently(f"chunk {chunk_id}", lambda: state.ledger, claim_by)
        _check_ray(state, chunk_id)  # before the claim: a refused worker spends no attempt
        claim = patiently(
            f"chunk {chunk_id}",
            lambda: ledger.claim(chunk_id, owner, settings.lease_seconds),
            claim_by,
        )
    except (SchemaVersionError, ClusterMismatchError) as exc:
        raise _stop_worker(chunk_id, exc) from exc
    except OUTAGE as exc:
        log.warning("chunk %s: the ledger is still unreachable; retrying later", chunk_id)
        raise _retry_later(task, settings, exc) from exc
    if claim.outcome != ClaimOutcome.CLAIMED:
        log.info("chunk %s: %s, nothing to do", chunk_id, claim.outcome)
        return claim.outcome
    assert claim.job is not None and claim.items is not None
    if claim.attempts > settings.max_attempts:  # it killed its worker every time before
        ledger.dead_letter(
            chunk_id,
            owner,
            f"{settings.max_attempts} attempts used up (the worker holding it died each time)",
        )
        return DeliveryOutcome.DEAD
    started = time.perf_counter()
    calls = ActorCalls(deadline)
    with LeaseKeeper(
        lambda: ledger.renew(chunk_id, owner, settings.lease_seconds),
        settings.lease_seconds,
        f"chunk {chunk_id}",
        on_lost=calls.cancel,
    ):
        try:
            outcomes, cache, redacted = compute_outcomes(state, claim, chunk_id, calls)
            made_by = chunk_made_by(state, claim.job, calls)
        except WorkCancelled:
            log.warning("chunk %s: lease lost or job cancelled; its model work stopped", chunk_id)
            return DeliveryOutcome.LEASE_LOST
        except Exception as exc:
            return _attempt_failed(task, state, claim, chunk_id, owner, exc, deadline)
        computed = time.perf_counter()
        # The tenant's usage: this attempt's time with the model actor (tokens: not counted
        # yet, the actor does not report them).
        usage = ChunkUsage(model_seconds=computed - started)
        try:  # the lease keeper renews while the ledger is waited for
            completed = patiently(
                f"chunk {chunk_id}",
                lambda: ledger.complete(chunk_id, owner, outcomes, usage, cache, redacted, made_by),
                deadline,
            )
        except OUTAGE as exc:  # the lease runs out; the sweeper sends the chunk again
            log.warning("chunk %s: results not stored, the ledger is unreachable", chunk_id)
            raise _retry_later(task, settings, exc) from exc
    if not completed:
        log.warning("chunk %s: lease lost before completion; another worker finishes it", chunk_id)
        return DeliveryOutcome.LEASE_LOST
    if redacted is not None:
        _scrub_wal(ledger, chunk_id)
    log.info(
        "chunk %s: %d items (%d cached), model %.3fs, ledger %.3fs",
        chunk_id,
        len(outcomes),
        sum(o.cached for o in outcomes),
        computed - started,
        time.perf_counter() - computed,
    )
    if claim.job.callback_url:
        _send_callback(task.app, state, claim.job.id)
    return DeliveryOutcome.DONE


def _attempt_failed(
    task: Task,
    state: WorkerState,
    claim: Claim,
    chunk_id: str,
    owner: str,
    exc: Exception,
    deadline: float,
) -> DeliveryOutcome:
    """Dead-letter the chunk after its last attempt; otherwise give it back and retry."""
    settings, ledger = state.settings, state.ledger
    reason = (
        f"{type(exc).__name__}: {exc}" if not isinstance(exc, IsolationUnfinished) else str(exc)
    )
    last = claim.attempts >= settings.max_attempts
    try:
        if last:
            log.error(
                "chunk %s: dead-lettered after %d attempts: %s", chunk_id, claim.attempts, reason
            )
            patiently(
                f"chunk {chunk_id}", lambda: ledger.dead_letter(chunk_id, owner, reason), deadline
            )
            return DeliveryOutcome.DEAD
        log.warning("chunk %s: attempt %d failed, retrying: %s", chunk_id, claim.attempts, reason)
        patiently(f"chunk {chunk_id}", lambda: ledger.release(chunk_id, owner, reason), deadline)
    except OUTAGE as outage:  # the lease runs out; the sweeper sends the chunk again
        raise _retry_later(task, settings, outage) from exc
    raise task.retry(exc=exc, countdown=settings.retry_backoff**claim.attempts, max_retries=None)


def _scrub_wal(ledger: Ledger, chunk_id: str) -> None:
    """After a chunk's pending items were replaced by their redacted form: on SQLite, the
    originals must not stay in the write-ahead log either (storage/engine.truncate_wal)."""
    try:
        if not truncate_wal(ledger.engine):
            log.warning("chunk %s: SQLite's log not truncated (busy); the next one is", chunk_id)
    except Exception:
        log.warning("chunk %s: SQLite's log not truncated", chunk_id, exc_info=True)


def _send_callback(app: Celery, state: WorkerState, job_id: str) -> None:
    """The worker that finishes a job queues its callback at once, for the callback pool: no
    HTTP here, a slow receiver must never hold an inference slot. The sweeper retries."""
    try:
        enqueue_due(state.ledger, callback_sender(app), [job_id])
    except Exception:  # never fail a finished chunk over its callback
        log.warning("job %s: callback not queued; the sweeper does it", job_id, exc_info=True)


def register_chunk_task(app: Celery, state: WorkerState) -> None:
    @app.task(name=PROCESS_CHUNK, bind=True)
    def process_chunk_task(self: Task, chunk_id: str) -> str:
        return process_chunk(self, state, chunk_id).value  # a plain string in the result
