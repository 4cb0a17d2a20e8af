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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from schemas.errors import JobNotFoundError, PurgeRefusedError
from schemas.states import JobStatus
from storage import tables as t
from storage.clock import db_now
from storage.engine import truncate_wal

log = logging.getLogger("sluice.erasure")

# Tables whose rows go with their job row (ON DELETE CASCADE).
CASCADED = ("chunks", "results", "explanations", "callback_deliveries", "result_cache", "exports")
# Tables holding a job's data by its id, without a foreign key.
BY_JOB_ID = ("job_keys", "enrich_retries")
# Tables that name a job but hold none of its rows' data: the id is set to null.
UNLINKED = ("enrich_runs", "enrich_watermarks")
# Tables with no row of any job's data (models, keys, secrets, counts, the audit itself).
NOT_JOB_DATA = (
    "api_keys", "training_runs", "model_versions", "model_shares", "tenant_secrets",
    "tenant_usage", "cluster_identity", "erasure_audit",
)  # fmt: skip


@dataclass
class Erased:
    """What one erasure removed."""

    jobs: list[str] = field(default_factory=list)
    rows: int = 0
    exports: int = 0
    exports_kept: list[str] = field(default_factory=list)  # replaced since: not ours to remove

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "rows": self.rows,
            "exports_removed": self.exports,
            "exports_kept": self.exports_kept,
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
        truncate_wal(self.engine)
        return erased

    def purge_older_than(
        self, before: datetime, tenant: str | None = None, by: str = "cli"
    ) -> Erased:
        """Every finished job created before `before` (`tenant`: only its jobs)."""
        finished = [s.value for s in JobStatus if s.finished]
        query = select(t.Job.id).where(t.Job.created_at < before, t.Job.status.in_(finished))
        if tenant is not None:
            query = query.where(t.Job.tenant == tenant)
        with Session(self.engine) as s:
            ids = list(s.scalars(query.order_by(t.Job.created_at)))
        erased = Erased()
        for job_id in ids:
            self._purge_one(job_id, "purge", by, erased)
        truncate_wal(self.engine)
        return erased

    def expire(self, limit: int = 100) -> Erased:
        """Jobs whose retention has passed (`jobs.expires_at`, set when they end), at most
        `limit` a call (the beat task calls again)."""
        with Session(self.engine) as s:
            now = db_now(s)
            ids = list(
                s.scalars(
                    select(t.Job.id)
                    .where(t.Job.expires_at.is_not(None), t.Job.expires_at <= now)
                    .order_by(t.Job.expires_at)
                    .limit(limit)
                )
            )
        erased = Erased()
        for job_id in ids:
            self._purge_one(job_id, "retention", "retention", erased)
        if ids:
            truncate_wal(self.engine)
        return erased

    def _purge_one(self, job_id: str, kind: str, by: str, erased: Erased) -> None:
        with Session(self.engine) as s:
            exports = list(
                s.execute(select(t.Export.uri, t.Export.stamp).where(t.Export.job_id == job_id))
            )
        removed = 0
        for uri, stamp in exports:  # first: a purge that fails here leaves the rows to retry
            now = self.stamp_of(uri)
            if now is None:
                continue  # already gone
            if stamp is not None and now != stamp:
                erased.exports_kept.append(uri)
                continue
            self.remove(uri)
            removed += 1
        with Session(self.engine) as s, s.begin():
            job = s.get(t.Job, job_id, with_for_update=True)
            if job is None:
                return  # purged meanwhile
            rows = s.scalar(select(func.count()).where(t.Result.job_id == job_id)) or 0
            for table in (t.JobKey, t.EnrichRetry):
                s.execute(delete(table).where(table.job_id == job_id))
            for linked in (t.EnrichRun, t.EnrichWatermark):
                s.execute(update(linked).where(linked.job_id == job_id).values(job_id=None))
            s.delete(job)  # the rest by cascade, in this transaction
            s.add(
                t.ErasureAudit(
                    at=db_now(s),
                    tenant=job.tenant or "default",
                    kind=kind,
                    job_id=job_id,
                    key_digest=None,
                    rows=rows,
                    exports=removed,
                    by=by[:128],
                )
            )
        erased.jobs.append(job_id)
        erased.rows += rows
        erased.exports += removed
        log.info("job %s: %s (%d rows, %d exports)", job_id, kind, rows, removed)
