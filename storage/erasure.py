"""Erasure (issue 22): a job purged, every job of a tenant older than a date, or a job whose
retention has passed; and one key forgotten across a tenant's jobs. Every erasure is
recorded in `erasure_audit`, which names jobs and never a key (its keyed digest instead).

Where a job's data lies, by table (a test holds every table of the ledger to this list):
- removed with the job row (foreign keys, ON DELETE CASCADE): chunks (the items), results,
  explanations, callback_deliveries, result_cache (entries the job stored), exports;
- removed by job id (no foreign key: written too often to check one): job_keys,
  enrich_retries;
- unlinked (job_id set to null; they hold no row's data): enrich_runs, enrich_watermarks;
- other jobs that name it (`parent_job_id` of a retry) keep the id, which names nothing.

A purge is one transaction: a job is either wholly there or wholly gone. Objects Sluice
stored itself (exports) are removed first, and only while the object there still has the
stamp it was written with (a file someone replaced since is theirs). On SQLite the freed
pages are zeroed (secure_delete) and the write-ahead log is truncated after, so the values
survive in neither file; PostgreSQL keeps dead tuples until VACUUM (README: Retention).
"""

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from schemas.errors import JobNotFoundError, PurgeRefusedError
from schemas.states import ChunkState, JobStatus
from storage import tables as t
from storage.clock import db_now
from storage.engine import truncate_wal
from storage.openai_files import remove_files
from storage.tenant_secrets import tenant_secret

log = logging.getLogger("sluice.erasure")

# Tables whose rows go with their job row (ON DELETE CASCADE).
CASCADED = (
    "chunks", "results", "explanations", "callback_deliveries", "result_cache", "exports",
    "pipeline_inbox", "openai_batches",
)  # fmt: skip
# Tables holding a job's data by its id, without a foreign key.
BY_JOB_ID = ("job_keys", "enrich_retries")
# Tables that name a job but hold none of its rows' data: the id is set to null.
UNLINKED = ("enrich_runs", "enrich_watermarks", "pipeline_jobs")
# Tables with no row of any job's data (models, keys, secrets, counts, the audit itself).
NOT_JOB_DATA = (
    "api_keys",
    "training_runs",
    "model_versions",
    "model_shares",
    "tenant_secrets",
    "tenant_usage",
    "cluster_identity",
    "erasure_audit",
    "console_sessions",
)
# Files uploaded for OpenAI batches (storage/openai_files.py): a tenant's input, but no job's
# rows; removed by their own retention (the tenant's period from upload) or by a delete.
OWN_RETENTION = ("openai_files", "openai_file_parts")  # fmt: skip


@dataclass
class Erased:
    """What one erasure removed."""

    jobs: list[str] = field(default_factory=list)
    rows: int = 0
    exports: int = 0
    exports_kept: list[str] = field(default_factory=list)  # replaced since: not ours to remove
    files: int = 0  # uploaded for OpenAI batches (storage/openai_files.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "rows": self.rows,
            "exports_removed": self.exports,
            "exports_kept": self.exports_kept,
            "files_removed": self.files,
        }


# An export's object: its stamp now, or None if it is gone; and how to remove it.
StampOf = Callable[[str], str | None]
Remove = Callable[[str], None]


class Erasure:
    def __init__(self, engine: Engine, stamp_of: StampOf, remove: Remove) -> None:
        self.engine = engine
        self.stamp_of = stamp_of
        self.remove = remove

    def purge(self, job_id: str, tenant: str | None = None, by: str = "cli") -> Erased:
        """Remove job `job_id` (`tenant`: only a job of that tenant) and everything of it;
        refused while it runs."""
        with Session(self.engine) as s:
            job = s.get(t.Job, job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                raise JobNotFoundError(f"no job {job_id}")
            if not JobStatus(job.status).finished:
                raise PurgeRefusedError(
                    f"job {job_id} is still {job.status}: cancel it first "
                    f"(sluice cancel {job_id}), then purge it"
                )
        erased = Erased()
        self._purge_one(job_id, "purge", by, erased)
        if not erased.jobs:  # another purge took it meanwhile
            raise JobNotFoundError(f"no job {job_id}")
        truncate_wal(self.engine)
        return erased

    def purge_older_than(
        self, before: datetime, tenant: str | None = None, by: str = "cli"
    ) -> Erased:
        """Every finished job created before `before`, and every file uploaded before it for
        OpenAI batches (`tenant`: only its own)."""
        finished = [s.value for s in JobStatus if s.finished]
        query = select(t.Job.id).where(t.Job.created_at < before, t.Job.status.in_(finished))
        if tenant is not None:
            query = query.where(t.Job.tenant == tenant)
        with Session(self.engine) as s:
            ids = list(s.scalars(query.order_by(t.Job.created_at)))
        erased = Erased()
        for job_id in ids:
            self._purge_one(job_id, "purge", by, erased)
        files = [t.OpenAIFile.created_at < before]
        if tenant is not None:
            files.append(t.OpenAIFile.tenant == tenant)
        while removed := remove_files(self.engine, self.remove, *files):
            erased.files += removed
        truncate_wal(self.engine)
        return erased

    def expire(self, budget_s: float = 30.0, batch: int = 100) -> Erased:
        """Jobs whose retention has passed (`jobs.expires_at`, set when they end), oldest
        first, for at most `budget_s` (the beat task calls again). A job that cannot be
        removed now (its export's store unreachable) is logged and passed over: it never
        holds back the others."""
        started = time.monotonic()
        erased, failed = Erased(), set[str]()
        while time.monotonic() - started < budget_s:
            with Session(self.engine) as s:
                now = db_now(s)
                query = select(t.Job.id).where(
                    t.Job.expires_at.is_not(None), t.Job.expires_at <= now
                )
                if failed:
                    query = query.where(t.Job.id.not_in(failed))
                ids = list(s.scalars(query.order_by(t.Job.expires_at).limit(batch)))
            if not ids:
                break
            for job_id in ids:
                try:
                    self._purge_one(job_id, "retention", "retention", erased)
                except Exception:
                    log.warning(
                        "job %s: retention passed but not removed yet", job_id, exc_info=True
                    )
                    failed.add(job_id)
        if erased.jobs:
            truncate_wal(self.engine)
        return erased

    def forget(self, tenant: str, key: str, stored_as: list[str], by: str = "cli") -> Erased:
        """Remove every row of `tenant`'s jobs whose key is `key` or one of `stored_as` (what
        redaction stored it as): its result, explanation, item, key record and retries; and,
        as they may hold it, the cache entries and stored exports of those jobs. Refused
        while a job that holds it runs. Audited under the key's keyed digest, never the key."""
        keys = sorted({key, *stored_as})
        with Session(self.engine) as s:
            holding = dict(
                s.execute(
                    select(t.Result.job_id, t.Job.status)
                    .join(t.Job, t.Job.id == t.Result.job_id)
                    .where(t.Job.tenant == tenant, t.Result.item_key.in_(keys))
                    .distinct()
                ).all()
            )
            # items that never made a result: a running job's, a cancelled chunk's
            unsettled = s.execute(
                select(t.Job.id, t.Job.status, t.Chunk.items)
                .join(t.Chunk, t.Chunk.job_id == t.Job.id)
                .where(
                    t.Job.tenant == tenant,
                    t.Chunk.state.in_(
                        [ChunkState.QUEUED, ChunkState.RUNNING, ChunkState.CANCELLED]
                    ),
                )
            )
            for job_id, status, items in unsettled:
                if _holds(items, keys):
                    holding[job_id] = status
        busy = sorted(job for job, status in holding.items() if not JobStatus(status).finished)
        if busy:
            raise PurgeRefusedError(
                f"job {busy[0]} holds this key and is still running: let it end or cancel it "
                f"(sluice cancel {busy[0]}), then forget the key"
            )
        digest = key_digest(tenant_secret(self.engine, tenant), key)
        erased = Erased()
        for job_id in sorted(holding):
            exports = self._remove_exports(job_id, erased)
            with Session(self.engine) as s, s.begin():  # the rows and their audit together
                rows = _forget_in_job(s, job_id, keys)
                s.add(_audit(s, tenant, "forget", job_id, digest, rows, exports, by))
            erased.jobs.append(job_id)
            erased.rows += rows
            erased.exports += exports
        if not holding:  # asked, and nothing held it: on record too
            with Session(self.engine) as s, s.begin():
                s.add(_audit(s, tenant, "forget", None, digest, 0, 0, by))
        truncate_wal(self.engine)
        return erased

    def _remove_exports(self, job_id: str, erased: Erased) -> int:
        """The job's stored exports still as written (first: a purge that fails here leaves
        its rows to retry); those replaced since are named in `erased.exports_kept`."""
        with Session(self.engine) as s:
            exports = list(
                s.execute(select(t.Export.uri, t.Export.stamp).where(t.Export.job_id == job_id))
            )
        removed = 0
        for uri, stamp in exports:
            now = self.stamp_of(uri)
            if now is None:
                continue  # already gone
            if stamp is not None and now != stamp:
                erased.exports_kept.append(uri)
                continue
            self.remove(uri)
            removed += 1
        with Session(self.engine) as s, s.begin():
            s.execute(delete(t.Export).where(t.Export.job_id == job_id))
        return removed

    def _purge_one(self, job_id: str, kind: str, by: str, erased: Erased) -> None:
        removed = self._remove_exports(job_id, erased)
        with Session(self.engine) as s, s.begin():
            job = s.get(t.Job, job_id, with_for_update=True)
            if job is None:
                return  # purged meanwhile
            rows = s.scalar(select(func.count()).where(t.Result.job_id == job_id)) or 0
            for table in (t.JobKey, t.EnrichRetry):
                s.execute(delete(table).where(table.job_id == job_id))
            for linked in (t.EnrichRun, t.EnrichWatermark, t.PipelineJob):
                s.execute(update(linked).where(linked.job_id == job_id).values(job_id=None))
            s.delete(job)  # the rest by cascade, in this transaction
            s.add(_audit(s, job.tenant or "default", kind, job_id, None, rows, removed, by))
        erased.jobs.append(job_id)
        erased.rows += rows
        erased.exports += removed
        log.info("job %s: %s (%d rows, %d exports)", job_id, kind, rows, removed)


def _audit(
    s: Session,
    tenant: str,
    kind: str,
    job_id: str | None,
    digest: str | None,
    rows: int,
    exports: int,
    by: str,
) -> t.ErasureAudit:
    return t.ErasureAudit(
        at=db_now(s),
        tenant=tenant,
        kind=kind,
        job_id=job_id,
        key_digest=digest,
        rows=rows,
        exports=exports,
        by=by[:128],
    )


def key_digest(secret: bytes, key: str) -> str:
    """What the audit holds of a forgotten key: HMAC-SHA256 with the tenant's secret (the
    tenant can recompute it to show the key was forgotten; nobody can read it back)."""
    return hmac.new(secret, b"forget\n" + key.encode(), hashlib.sha256).hexdigest()


def _holds(items: list[dict[str, Any]] | None, keys: list[str]) -> bool:
    return any(item.get("key") in keys for item in items or [])


def _forget_in_job(s: Session, job_id: str, keys: list[str]) -> int:
    """Remove `keys`' rows from one finished job (locked): results, explanations, items,
    key records, and the job's cache entries (an entry's input cannot be told apart). The
    job's counts lose the rows; its status stands. Returns the results removed."""
    job = s.get(t.Job, job_id, with_for_update=True)
    if job is None:
        return 0
    if not JobStatus(job.status).finished:  # it was resumed (a retry of chunks) meanwhile
        raise PurgeRefusedError(f"job {job_id} holds this key and is running again: try later")
    s.execute(
        delete(t.EnrichRetry).where(
            t.EnrichRetry.job_id == job_id, t.EnrichRetry.item_key.in_(keys)
        )
    )
    gone = list(
        s.execute(
            select(t.Result.chunk_id, t.Result.status, t.Result.cached).where(
                t.Result.job_id == job_id, t.Result.item_key.in_(keys)
            )
        )
    )
    for table in (t.Explanation, t.Result, t.JobKey):
        s.execute(delete(table).where(table.job_id == job_id, table.item_key.in_(keys)))
    s.execute(  # a pipeline's record of the event: a redelivery of it would run again
        delete(t.PipelineEvent).where(
            t.PipelineEvent.job_id == job_id, t.PipelineEvent.event_key.in_(keys)
        )
    )
    s.execute(delete(t.ResultCacheEntry).where(t.ResultCacheEntry.job_id == job_id))
    cancelled = s.scalars(
        select(t.Chunk.id).where(t.Chunk.job_id == job_id, t.Chunk.state == ChunkState.CANCELLED)
    )
    for chunk_id in {chunk for chunk, _, _ in gone} | set(cancelled):
        chunk = s.get(t.Chunk, chunk_id)
        if chunk is not None and _holds(chunk.items, keys):
            chunk.items = [i for i in chunk.items or [] if i.get("key") not in keys]
    for _, status, cached in gone:
        job.total -= 1
        setattr(job, status, getattr(job, status) - 1)  # ok, invalid or error
        job.cached = (job.cached or 0) - bool(cached)
    return len(gone)
