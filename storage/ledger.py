"""Ledger operations: the only code that changes job and chunk state.

Each public method is one transaction. The ledger, not Redis, says what is still to do.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import JobNotFoundError
from schemas.jobs import Item, JobCounts, JobSpec, Outcome, check_unique_keys, job_status_for
from schemas.states import ChunkState, ClaimOutcome, ItemStatus, JobStatus
from schemas.storable import storable_items, storable_outcome
from storage import tables as t
from storage.admission import FairShare, admit
from storage.clock import db_now, host_now, utc
from storage.job_rows import new_job_row
from storage.lineage import chunk_lineages, input_digest, job_part
from storage.progress import NO_PROGRESS, Progress, job_progress
from storage.receiving import Receiver, name_chunk
from storage.result_cache import CacheWrite, insert_stored_outputs
from storage.result_cache import store as store_in_cache
from storage.result_rows import iter_result_rows
from storage.tenant_secrets import stored_secret
from storage.token_counts import TokenCounts
from storage.usage import ChunkUsage
from storage.usage import record as record_usage

# The reason an unfinished row of a job past its deadline ended with (its error begins so)
EXPIRED = "expired"
REQUEUE_BATCH = 10_000  # chunk ids per statement: far below PostgreSQL's 65,535 parameters


@dataclass(frozen=True)
class JobView:
    id: str
    task: str
    model: str
    model_version: str
    params: dict[str, Any]
    explain_policy: str
    priority: int
    source: str | None
    status: JobStatus
    counts: JobCounts
    chunks_total: int
    chunks_done: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tenant: str = "default"
    parent_job_id: str | None = None
    callback_url: str | None = None
    lane: int = 0  # of its modality queue (storage/admission.py)
    tokens: TokenCounts | None = None  # tasks that count tokens (generate)
    lineage: dict[str, Any] | None = None  # what makes its rows, as of submit (lineage.py)
    retention_s: int | None = None  # its data goes this long after it ends (erasure.py)
    expires_at: datetime | None = None
    deadline_at: datetime | None = None  # unfinished then, its open rows end `expired`
    progress: Progress = NO_PROGRESS  # its rate and ETA while it runs (storage/progress.py)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds until it should end; None until that can be said (storage/progress.py)."""
        return self.progress.eta_seconds

    @property
    def rows_per_s(self) -> float | None:
        return self.progress.rows_per_s

    def as_dict(self) -> dict[str, Any]:
        elapsed = None
        if self.started_at:
            elapsed = ((self.finished_at or host_now()) - self.started_at).total_seconds()
        return {
            "job_id": self.id,
            "status": self.status.value,
            "task": self.task,
            "model": self.model,
            "model_version": self.model_version,
            "explain": self.explain_policy,
            "total": self.counts.total,
            "processed": self.counts.processed,
            "ok": self.counts.ok,
            "invalid": self.counts.invalid,
            "error": self.counts.error,
            "cached": self.counts.cached,
            "counts": {
                "total": self.counts.total,
                "ok": self.counts.ok,
                "invalid": self.counts.invalid,
                "error": self.counts.error,
                "cached": self.counts.cached,
            },
            "chunks_total": self.chunks_total,
            "chunks_done": self.chunks_done,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
            "tokens": self.tokens.as_dict() if self.tokens else None,
            # how its rows are explained (schemas/explainer_settings.py); None: not at all
            "explainer": self.params.get("explainer"),
            # when its data goes (storage/erasure.py); None: kept until purged
            "retention_s": self.retention_s,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            # its deadline (--deadline); None: none
            "deadline_at": self.deadline_at.isoformat() if self.deadline_at else None,
            # rows/s weighted over the last minute and seconds left; None until known
            **self.progress.as_dict(),
        }


@dataclass(frozen=True)
class Claim:
    """The answer to "may I work on this chunk?". `items` is set only when the answer is yes."""

    outcome: ClaimOutcome
    job: JobView | None = None
    items: list[Item] | None = None
    attempts: int = 0
    last_error: str | None = None  # why the previous attempt ended, if it failed


@dataclass(frozen=True)
class Stalled:
    chunk_id: str
    task: str
    priority: int
    attempts: int
    expired: bool  # its worker's lease ran out
    stale: bool  # queued for longer than requeue_after
    queued_for: float = 0.0  # seconds since it was last sent
    lane: int = 0  # its job's lane: the queue it was sent to (schemas.queues.lane_queue)


def job_view(job: t.Job, progress: Progress = NO_PROGRESS) -> JobView:
    """The public shape of a job row (shared with storage.tenancy)."""
    counts = JobCounts(
        total=job.total, ok=job.ok, invalid=job.invalid, error=job.error, cached=job.cached or 0
    )
    return JobView(
        id=job.id,
        task=job.task,
        model=job.model,
        model_version=job.model_version,
        params=dict(job.params or {}),
        explain_policy=job.explain_policy,
        priority=job.priority,
        source=job.source,
        status=JobStatus(job.status),
        counts=counts,
        chunks_total=job.chunks_total,
        chunks_done=job.chunks_done,
        created_at=utc(job.created_at) or host_now(),
        started_at=utc(job.started_at),
        finished_at=utc(job.finished_at),
        tenant=job.tenant or "default",
        tokens=TokenCounts.of(job),
        parent_job_id=job.parent_job_id,
        callback_url=job.callback_url,
        lane=job.lane or 0,
        lineage=job.lineage,
        retention_s=job.retention_s,
        expires_at=utc(job.expires_at),
        deadline_at=utc(job.deadline_at),
        progress=progress,
    )


def with_digests(
    s: Session, tenant: str, outcomes: list[Outcome], items: list[Item]
) -> list[Outcome]:
    """Outcomes made without a worker (a dead-lettered chunk's) with their inputs' keyed
    digests (storage/lineage.py), where the tenant has a secret (its worker made one)."""
    secret = stored_secret(s, tenant)
    if secret is None:
        return outcomes
    by_key = {i.key: input_digest(secret, i) for i in items}
    return [o.model_copy(update={"input_digest": by_key.get(o.key)}) for o in outcomes]


def expiry(end: datetime, retention_s: int | None) -> datetime | None:
    return end + timedelta(seconds=retention_s) if retention_s else None


def ended(job: t.Job, now: datetime) -> None:
    """A job has ended: when, and when its data goes (its retention, storage/erasure.py)."""
    job.finished_at = now
    job.expires_at = expiry(now, job.retention_s)


def end_by_counts(job: t.Job, now: datetime) -> None:
    """A job whose every chunk is settled ends: its status from its counts, and when."""
    counts = JobCounts(total=job.total, ok=job.ok, invalid=job.invalid, error=job.error)
    job.status = job_status_for(counts)
    ended(job, now)


def stored_items(items: list[Item]) -> list[dict[str, Any]]:
    """A chunk row's items, as written at submit and replaced by a redacting completion."""
    return [it.model_dump(exclude_none=True) for it in items]


class Ledger:
    def __init__(self, engine: Engine, fair_share: FairShare | None = None) -> None:
        self.engine = engine
        self.fair_share = fair_share or FairShare()  # how create_job admits (the producers')
        self.receiver = Receiver(engine, self.fair_share)  # large jobs, written in batches
        self._session = sessionmaker(engine, expire_on_commit=False)
        # Reads skip SQLite's write lock (see storage.engine), so polling never blocks workers.
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    # -- producers --------------------------------------------------------------------------

    def create_job(
        self, spec: JobSpec, items: list[Item], chunk_size: int
    ) -> tuple[str, list[str]]:
        """Write the job and all its chunks in one transaction, before anything is enqueued.
        Keys repeated within the job are refused (DuplicateKeysError): a job whose items
        share a key would count them twice but keep one result. The tenant's limit on items
        in flight is checked and the job's lane chosen in the same transaction
        (storage/admission.py; QuotaExceededError)."""
        items = storable_items(items)
        check_unique_keys(items)
        job_id = uuid.uuid4().hex
        chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
        chunk_ids = [name_chunk(job_id, n) for n in range(len(chunks))]
        with self._session.begin() as s:
            now = db_now(s)
            lane = admit(s, self.fair_share, spec.tenant, spec.task, len(items), now)
            s.add(
                new_job_row(
                    job_id,
                    spec,
                    now,
                    JobStatus.QUEUED if chunks else JobStatus.SUCCEEDED,
                    lane,
                    total=len(items),
                    chunks_total=len(chunks),
                    finished_at=None if chunks else now,
                    expires_at=None if chunks else expiry(now, spec.retention_s),
                )
            )
            s.flush()
            if chunks:
                s.execute(
                    insert(t.Chunk),
                    [
                        {
                            "id": cid,
                            "job_id": job_id,
                            "seq": n,
                            "state": ChunkState.QUEUED,
                            "first_item": n * chunk_size,
                            "size": len(chunk),
                            "attempts": 0,
                            "enqueued_at": now,
                            "items": stored_items(chunk),
                        }
                        for n, (cid, chunk) in enumerate(zip(chunk_ids, chunks, strict=True))
                    ],
                )
        return job_id, chunk_ids

    # -- workers ----------------------------------------------------------------------------

    def claim(self, chunk_id: str, owner: str, lease_seconds: float) -> Claim:
        """Take the lease on a chunk unless it is finished or another live worker holds it."""
        with self._session.begin() as s:
            job = _lock_job(s, job_id_of(chunk_id))
            now = db_now(s)  # after the lock: waiting for it must not age the lease
            chunk = s.get(t.Chunk, chunk_id, with_for_update=True, populate_existing=True)
            if job is None or chunk is None:
                return Claim(ClaimOutcome.MISSING)
            if ChunkState(chunk.state).terminal:
                return Claim(ClaimOutcome.DONE, job_view(job))
            if job.status == JobStatus.CANCELLED:
                return Claim(ClaimOutcome.CANCELLED, job_view(job))
            if job.status == JobStatus.RECEIVING:  # sent once its last batch commits
                return Claim(ClaimOutcome.RECEIVING, job_view(job))
            lease = utc(chunk.lease_expires_at)
            if chunk.state == ChunkState.RUNNING and lease is not None and lease > now:
                return Claim(ClaimOutcome.BUSY, job_view(job))
            chunk.state = ChunkState.RUNNING
            chunk.lease_owner = owner
            chunk.lease_expires_at = now + timedelta(seconds=lease_seconds)
            chunk.attempts += 1
            chunk.claimed_at = now
            if job.status == JobStatus.QUEUED:
                job.status = JobStatus.RUNNING
                job.started_at = now
            items = [Item.model_validate(raw) for raw in chunk.items]
            return Claim(
                ClaimOutcome.CLAIMED, job_view(job), items, chunk.attempts, chunk.last_error
            )

    def renew(self, chunk_id: str, owner: str, lease_seconds: float) -> bool:
        with self._session.begin() as s:
            res = s.execute(
                update(t.Chunk)
                .where(
                    t.Chunk.id == chunk_id,
                    t.Chunk.lease_owner == owner,
                    t.Chunk.state == ChunkState.RUNNING,
                )
                .values(lease_expires_at=db_now(s) + timedelta(seconds=lease_seconds))
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def release(self, chunk_id: str, owner: str, error: str) -> None:
        """Give a chunk back to the queue after a failed attempt (Celery will retry it)."""
        with self._session.begin() as s:
            s.execute(
                update(t.Chunk)
                .where(
                    t.Chunk.id == chunk_id,
                    t.Chunk.lease_owner == owner,
                    t.Chunk.state == ChunkState.RUNNING,
                )
                .values(
                    state=ChunkState.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    enqueued_at=db_now(s),
                    last_error=error[:4000],
                )
            )

    def complete(
        self,
        chunk_id: str,
        owner: str,
        outcomes: list[Outcome],
        usage: ChunkUsage | None = None,
        cache: CacheWrite | None = None,
        items: list[Item] | None = None,
        made_by: dict[str, Any] | None = None,
    ) -> bool:
        """Persist a chunk's outcomes (in the order of its items), mark it done and count it,
        all in one transaction. `made_by`: the worker that made them (storage/lineage.py).

        Returns False (and writes nothing) when this worker no longer holds the lease.
        `usage` (model seconds, tokens) is added to the tenant's usage in that transaction.
        `cache`: the digests of the items the model ran for; their `ok` outcomes are stored in
        the tenant's result cache in that transaction too (storage/result_cache.py), so an
        entry never outlives, nor comes before, the results it copies. `items`: the chunk's
        items redacted (workers/pii_stage.py), stored in place of the pending ones.

        Ending a chunk never depends on data that can fail: outcomes are made storable first
        (storable_outcome), and if the database still refuses them, the chunk ends with every
        item `error` and the reason, so its job ends.
        """

        def guard(now: datetime) -> Any:
            return t.Chunk.lease_owner == owner

        try:
            return self._finish(
                chunk_id,
                guard,
                ChunkState.DONE,
                outcomes=outcomes,
                usage=usage,
                cache=cache,
                items=items,
                made_by=made_by,
            )
        except (StatementError, ValueError, TypeError) as exc:
            # Only data the database refuses ends the chunk as errors; anything else (an
            # outage, a failover's read-only moment) is raised, and the worker retries.
            if isinstance(exc, DBAPIError) and not isinstance(exc, DataError):
                raise
            detail = exc.orig if isinstance(exc, StatementError) and exc.orig else exc
            first_line = (str(detail).splitlines() or [""])[0][:300]
            reason = f"the results could not be stored: {type(detail).__name__}: {first_line}"
            # _finish cleans the messages (storable_outcome)
            unstored = failed_outcomes(
                [(o.key, (o.error or "invalid") if o.status == ItemStatus.INVALID else None)
                 for o in outcomes],
                reason,
            )  # fmt: skip
            digests = {o.key: o.input_digest for o in outcomes}  # lineage: the input stands
            unstored = [o.model_copy(update={"input_digest": digests[o.key]}) for o in unstored]
            return self._finish(
                chunk_id,
                guard,
                ChunkState.DONE,
                outcomes=unstored,
                usage=usage,
                items=items,
                made_by=made_by,
            )

    def dead_letter(self, chunk_id: str, owner: str | None, error: str) -> bool:
        """Give up on a chunk: its items end `error` with the reason (`invalid` ones stay so).

        Without an owner (the sweeper), only a chunk nobody holds a live lease on is taken.
        """
        message = f"dead-lettered after repeated failures: {error}"

        def guard(now: datetime) -> Any:
            if owner is not None:
                return t.Chunk.lease_owner == owner
            return or_(t.Chunk.state == ChunkState.QUEUED, t.Chunk.lease_expires_at < now)

        def outcomes(items: list[Item]) -> list[Outcome]:
            return failed_outcomes([(i.key, i.invalid) for i in items], message)

        return self._finish(chunk_id, guard, ChunkState.DEAD, outcomes_for=outcomes)

    def _finish(
        self,
        chunk_id: str,
        guard: Callable[[datetime], Any],
        state: ChunkState,
        *,
        outcomes: list[Outcome] | None = None,
        outcomes_for: Callable[[list[Item]], list[Outcome]] | None = None,
        usage: ChunkUsage | None = None,
        cache: CacheWrite | None = None,
        items: list[Item] | None = None,
        made_by: dict[str, Any] | None = None,
    ) -> bool:
        """Settle a chunk with `outcomes` (in item order, from a worker) or with outcomes
        made from its stored items (dead-lettering). Only the latter reads the items back.
        `guard(now)` says which chunk row may be settled, at the database's time."""
        with self._session.begin() as s:
            job = _lock_job(s, job_id_of(chunk_id))  # lock order everywhere: job, then chunk
            now = db_now(s)
            if job is None or JobStatus(job.status).finished:
                return False
            settled = self._settle(
                s, job, chunk_id, guard(now), state, now,
                outcomes=outcomes, outcomes_for=outcomes_for, usage=usage, cache=cache,
                items=items, made_by=made_by,
            )  # fmt: skip
            if settled and job.chunks_done >= job.chunks_total and not job.standing:
                if expired_chunks(s, job, now):  # its expiry settled the others
                    job.status = JobStatus.EXPIRED
                    ended(job, now)
                else:  # a standing job waits for its pipeline: standing_jobs
                    end_by_counts(job, now)
            return settled

    def _settle(
        self,
        s: Session,
        job: t.Job,
        chunk_id: str,
        guard: Any,
        state: ChunkState,
        now: datetime,
        *,
        outcomes: list[Outcome] | None = None,
        outcomes_for: Callable[[list[Item]], list[Outcome]] | None = None,
        usage: ChunkUsage | None = None,
        cache: CacheWrite | None = None,
        items: list[Item] | None = None,
        made_by: dict[str, Any] | None = None,
    ) -> bool:
        """_finish's work on one chunk of the locked `job`, in the caller's transaction."""
        res = s.execute(
            update(t.Chunk)
            .where(
                t.Chunk.id == chunk_id,
                t.Chunk.state.in_([ChunkState.RUNNING, ChunkState.QUEUED]),
                guard,
            )
            .values(
                state=state,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                **({} if items is None else {"items": stored_items(items)}),
                **({} if made_by is None else {"made_by": made_by}),
            )
            .returning(t.Chunk.first_item)
        ).first()
        if res is None:
            return False
        first_item = res[0]
        if outcomes is None:
            assert outcomes_for is not None
            raw_items = s.scalar(select(t.Chunk.items).where(t.Chunk.id == chunk_id))
            stored = [Item.model_validate(raw) for raw in raw_items or []]
            outcomes = with_digests(s, job.tenant or "default", outcomes_for(stored), stored)
        outcomes = [storable_outcome(o) for o in outcomes]
        order = {o.key: first_item + n for n, o in enumerate(outcomes)}
        self._insert_outcomes(s, job.id, chunk_id, outcomes, order, now)
        if cache is not None:
            store_in_cache(s, job.id, cache, outcomes, now)
        n = {st: sum(o.status == st for o in outcomes) for st in ItemStatus}
        job.ok += n[ItemStatus.OK]
        job.invalid += n[ItemStatus.INVALID]
        job.error += n[ItemStatus.ERROR]
        job.cached = (job.cached or 0) + sum(
            o.cached and o.status == ItemStatus.OK for o in outcomes
        )
        job.chunks_done += 1
        # tokens fed to the model: a cached row's output is copied unread (stored_output)
        if (tokens := TokenCounts.of_outcomes(outcomes)) is not None:
            tokens.add_to(job)
            usage = replace(usage or ChunkUsage(), tokens=tokens.total)
        record_usage(s, job.tenant or "default", job.task, now, n, usage)
        return True

    # -- deadlines ------------------------------------------------------------------------------

    def overdue(self, limit: int = 100) -> list[str]:
        """Jobs past their deadline and not ended (a job still `receiving` waits until its
        input is whole), oldest deadline first."""
        with self._reader() as s:
            return list(
                s.scalars(
                    select(t.Job.id)
                    .where(
                        t.Job.deadline_at <= db_now(s),
                        t.Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                    )
                    .order_by(t.Job.deadline_at)
                    .limit(limit)
                )
            )

    def expire(self, job_id: str, chunks_per_transaction: int = 50) -> bool:
        """End a job past its deadline: its unfinished chunks a few per transaction (a large
        job never holds its locks long), their items `error` with the reason `expired`
        (`invalid` ones stay so; a worker still on one finds its lease gone and writes
        nothing), then, with none left, the job `expired`, in the transaction that settles
        the last. Finished rows stay. Until then the job runs on as it was (a sweep cut
        short resumes it); a worker that finishes its last chunk meanwhile ends it `expired`
        too (_finish). False when the job ended otherwise, or its deadline has not passed."""
        while True:
            with self._session.begin() as s:
                job = _lock_job(s, job_id)  # lock order everywhere: job, then chunk
                now = db_now(s)
                deadline = utc(job.deadline_at) if job is not None else None
                if job is None or deadline is None:
                    return False
                if JobStatus(job.status).finished or deadline > now:
                    return job.status == JobStatus.EXPIRED
                open_chunks = s.scalars(
                    select(t.Chunk.id)
                    .where(
                        t.Chunk.job_id == job_id,
                        t.Chunk.state.in_([ChunkState.QUEUED, ChunkState.RUNNING]),
                    )
                    .order_by(t.Chunk.seq)
                    .limit(chunks_per_transaction)
                ).all()
                outcomes = expired_outcomes(deadline)
                for chunk_id in open_chunks:
                    self._settle(
                        s, job, chunk_id, true(), ChunkState.EXPIRED, now, outcomes_for=outcomes
                    )
                if len(open_chunks) < chunks_per_transaction:  # none left
                    job.status = JobStatus.EXPIRED
                    ended(job, now)
                    return True

    def _insert_outcomes(
        self,
        s: Session,
        job_id: str,
        chunk_id: str,
        outcomes: list[Outcome],
        order: dict[str, int],
        now: datetime,
    ) -> None:
        if not outcomes:
            return
        upsert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
        rows = [
            {
                "job_id": job_id,
                "item_key": o.key,
                "chunk_id": chunk_id,
                "seq": order.get(o.key, 0),
                "status": o.status.value,
                "output": o.output,
                "error": o.error,
                "created_at": now,
                "cached": o.cached,
                "redactions": o.redactions,
                "input_digest": o.input_digest,
            }
            for o in outcomes
            if o.stored_output is None
        ]
        if rows:
            s.execute(upsert(t.Result).on_conflict_do_nothing(), rows)
        if copied := [o for o in outcomes if o.stored_output is not None]:
            insert_stored_outputs(s, job_id, chunk_id, copied, order, now)
        explained = [
            {"job_id": job_id, "item_key": o.key, **o.explanation.model_dump()}
            for o in outcomes
            if o.explanation is not None
        ]
        if explained:
            s.execute(upsert(t.Explanation).on_conflict_do_nothing(), explained)

    # -- the sweeper --------------------------------------------------------------------------

    def stalled(self, requeue_after: float, every_queued: bool = False) -> list[Stalled]:
        """Chunks of live jobs that may need sending again: expired leases (a dead worker) and
        queued chunks waiting longer than `requeue_after` (their message may be lost), or
        every queued chunk (`every_queued`: the broker lost its messages)."""
        with self._reader() as s:
            now = db_now(s)
            waited = requeue_after if not every_queued else -1.0
            rows = s.execute(
                select(
                    t.Chunk.id,
                    t.Chunk.state,
                    t.Chunk.enqueued_at,
                    t.Chunk.attempts,
                    t.Job.task,
                    t.Job.priority,
                    t.Job.lane,
                )
                .join(t.Job, t.Job.id == t.Chunk.job_id)
                .where(
                    t.Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                    or_(
                        and_(t.Chunk.state == ChunkState.RUNNING, t.Chunk.lease_expires_at < now),
                        and_(
                            t.Chunk.state == ChunkState.QUEUED,
                            or_(
                                t.Chunk.enqueued_at.is_(None),
                                t.Chunk.enqueued_at < now - timedelta(seconds=waited),
                            ),
                        ),
                    ),
                )
            ).all()
        return [
            Stalled(
                cid,
                task,
                prio,
                attempts,
                expired=state == ChunkState.RUNNING,
                stale=state == ChunkState.QUEUED
                and (enq is None or (now - (utc(enq) or now)).total_seconds() > requeue_after),
                queued_for=(now - (utc(enq) or now)).total_seconds(),
                lane=lane or 0,
            )
            for cid, state, enq, attempts, task, prio, lane in rows
        ]

    def requeue(self, chunk_ids: list[str]) -> list[str]:
        """Mark chunks as sent again, recording when; only those still queued or with an
        expired lease are (a chunk a worker finished or re-claimed meanwhile is left alone).
        Written in batches: PostgreSQL takes at most 65,535 parameters in one statement, and a
        wiped broker can leave many more chunks to send again."""
        marked: list[str] = []
        for start in range(0, len(chunk_ids), REQUEUE_BATCH):
            batch = chunk_ids[start : start + REQUEUE_BATCH]
            with self._session.begin() as s:
                now = db_now(s)
                marked += s.scalars(
                    update(t.Chunk)
                    .where(
                        t.Chunk.id.in_(batch),
                        or_(
                            t.Chunk.state == ChunkState.QUEUED,
                            and_(
                                t.Chunk.state == ChunkState.RUNNING, t.Chunk.lease_expires_at < now
                            ),
                        ),
                    )
                    .values(
                        state=ChunkState.QUEUED,
                        lease_owner=None,
                        lease_expires_at=None,
                        enqueued_at=now,
                    )
                    .returning(t.Chunk.id)
                ).all()
        return marked

    # -- reading and control ------------------------------------------------------------------

    def job(self, job_id: str) -> JobView:
        with self._reader() as s:
            job = s.get(t.Job, job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            return job_view(job, job_progress(s, job))

    def jobs(self, limit: int = 20) -> list[JobView]:
        with self._reader() as s:
            rows = s.scalars(select(t.Job).order_by(t.Job.created_at.desc()).limit(limit))
            return [job_view(j, job_progress(s, j)) for j in rows]

    def cancel(self, job_id: str) -> JobView:
        """Stop a job: chunks not yet finished are dropped; what is done stays done."""
        with self._session.begin() as s:
            job = _lock_job(s, job_id)
            now = db_now(s)
            if job is None:
                raise JobNotFoundError(job_id)
            if not JobStatus(job.status).finished:
                s.execute(
                    update(t.Chunk)
                    .where(
                        t.Chunk.job_id == job_id,
                        t.Chunk.state.in_([ChunkState.QUEUED, ChunkState.RUNNING]),
                    )
                    .values(state=ChunkState.CANCELLED, lease_owner=None, lease_expires_at=None)
                )
                job.status = JobStatus.CANCELLED
                ended(job, now)
            return job_view(job)

    def record_export(self, job_id: str, uri: str, stamp: str | None) -> None:
        """An export Sluice stored itself, removed with its job (storage/erasure.py)."""
        with self._session.begin() as s:
            s.add(t.Export(job_id=job_id, uri=uri, stamp=stamp, created_at=db_now(s)))

    def chunk_ids(self, job_id: str) -> list[str]:
        with self._reader() as s:
            return list(s.scalars(select(t.Chunk.id).where(t.Chunk.job_id == job_id)))

    def iter_items(self, job_id: str) -> Iterator[Item]:
        """A job's input items (their references, not media bytes), chunk by chunk."""
        query = (
            select(t.Chunk.items)
            .where(t.Chunk.job_id == job_id)
            .order_by(t.Chunk.seq)
            .execution_options(yield_per=1)
        )
        with self._reader() as s:
            for items in s.scalars(query):
                for raw in items:
                    yield Item.model_validate(raw)

    def final_results_before(self, job_id: str) -> int:
        """The input position before which every result of the job is final (the first item
        of its first chunk not yet done or dead; the job's total when there is none): a
        reader may take the results before it while the job still runs."""
        with self._reader() as s:
            first_open = s.scalar(
                select(func.min(t.Chunk.first_item)).where(
                    t.Chunk.job_id == job_id,
                    t.Chunk.state.not_in([ChunkState.DONE, ChunkState.DEAD]),
                )
            )
            if first_open is not None:
                return int(first_open)
            return int(s.scalar(select(t.Job.total).where(t.Job.id == job_id)) or 0)

    def iter_results(
        self,
        job_id: str,
        batch: int = 1000,
        embedding_as_text: bool = False,
        seqs: tuple[int, int] | None = None,
        lineage: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Stream a job's results in input order, with explanations, without loading them all.
        Each row names the model and the exact version that made it; with `lineage`, what
        made it besides (storage/lineage.py: its job's and its chunk's part, one object per
        chunk). `embedding_as_text`, `seqs`: see storage/result_rows.iter_result_rows."""
        by_chunk = None
        with self._reader() as s:
            job = s.get(t.Job, job_id)
            made_by = {"model": job.model, "model_version": job.model_version} if job else {}
            if lineage and job is not None:
                shared = job_part(job)
                by_chunk = {
                    chunk: {**shared, "made_by": worker}
                    for chunk, worker in chunk_lineages(s, job_id).items()
                }
        with self._reader() as s:
            rows = iter_result_rows(s, job_id, batch, embedding_as_text, seqs, by_chunk)
            for row in rows:
                row.update(made_by)
                yield row


def expired_outcomes(deadline: datetime) -> Callable[[list[Item]], list[Outcome]]:
    """The outcomes of a chunk its job's deadline ended: `error`, expired (`invalid` stay)."""
    message = f"{EXPIRED}: the job's deadline ({deadline.isoformat()}) passed before this row ran"

    def outcomes(items: list[Item]) -> list[Outcome]:
        return failed_outcomes([(i.key, i.invalid) for i in items], message)

    return outcomes


def expired_chunks(s: Session, job: t.Job, now: datetime) -> bool:
    """Whether a job past its deadline had chunks ended by it (looked up only then)."""
    deadline = utc(job.deadline_at)
    if deadline is None or deadline > now:
        return False
    found = s.scalar(
        select(t.Chunk.id)
        .where(t.Chunk.job_id == job.id, t.Chunk.state == ChunkState.EXPIRED)
        .limit(1)
    )
    return found is not None


def failed_outcomes(items: list[tuple[str, str | None]], message: str) -> list[Outcome]:
    """A chunk given up on: items already `invalid` (key, why) stay so; the rest end `error`
    with `message` (at most 4000 characters)."""
    return [
        Outcome(key=key, status=ItemStatus.INVALID, error=invalid)
        if invalid
        else Outcome(key=key, status=ItemStatus.ERROR, error=message[:4000])
        for key, invalid in items
    ]


def job_id_of(chunk_id: str) -> str:
    return chunk_id.rsplit("-", 1)[0]


def _lock_job(s: Session, job_id: str) -> t.Job | None:
    """The job row, locked for this transaction (PostgreSQL; SQLite's BEGIN IMMEDIATE already
    serialises writers). Every writer takes it first, so writers never deadlock."""
    return s.get(t.Job, job_id, with_for_update=True, populate_existing=True)
