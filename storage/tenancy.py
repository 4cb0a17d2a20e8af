"""Reads and look-ups the front doors need, always scoped to one tenant: another tenant's
job is indistinguishable from a job that does not exist."""

from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from schemas.errors import JobNotFoundError
from schemas.jobs import Item
from schemas.states import ItemStatus
from storage import tables as t
from storage.ledger import JobView, Ledger, job_view
from storage.progress import job_progress
from storage.result_rows import result_row, results_after


class TenantReads:
    def __init__(self, engine: Engine) -> None:
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def job(self, tenant: str, job_id: str) -> JobView:
        with self._reader() as s:
            job = s.get(t.Job, job_id)
            if job is None or job.tenant != tenant:
                raise JobNotFoundError(job_id)
            return job_view(job, job_progress(s, job))

    def jobs(self, tenant: str, limit: int = 20) -> list[JobView]:
        """This tenant's newest jobs."""
        return self.every_tenants_jobs(tenant, limit)

    def every_tenants_jobs(
        self, tenant: str | None, limit: int, status: str | None = None, task: str | None = None
    ) -> list[JobView]:
        """The newest jobs of one tenant, or (the operator's system view, None) of all; only
        those of a status or task when given."""
        query = select(t.Job).order_by(t.Job.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(t.Job.tenant == tenant)
        if status is not None:
            query = query.where(t.Job.status == status)
        if task is not None:
            query = query.where(t.Job.task == task)
        with self._reader() as s:
            return [job_view(j, job_progress(s, j)) for j in s.scalars(query)]

    def models(self, tenant: str) -> list[dict[str, Any]]:
        """The models this tenant's jobs used (a tenant never sees another's)."""
        query = (
            select(t.Job.task, t.Job.model, t.Job.model_version, func.count())
            .where(t.Job.tenant == tenant)
            .group_by(t.Job.task, t.Job.model, t.Job.model_version)
            .order_by(t.Job.task, t.Job.model)
        )
        with self._reader() as s:
            return [
                {"task": task, "model": model, "model_version": version, "jobs": n}
                for task, model, version, n in s.execute(query)
            ]

    def by_idempotency_key(self, tenant: str, key: str) -> str | None:
        with self._reader() as s:
            return s.scalar(
                select(t.Job.id).where(t.Job.tenant == tenant, t.Job.idempotency_key == key)
            )

    def results_page(self, job_id: str, after: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to `limit` result rows with seq > after, in input order (keyset pagination)."""
        query = results_after(job_id, after).limit(limit)
        with self._reader() as s:
            return [(r.seq, result_row(r, e)) for r, e in s.execute(query)]

    def failed_items(self, job_id: str) -> list[Item]:
        """The inputs of the items that ended `error`, in input order, for a retry job."""
        with self._reader() as s:
            failed = set(
                s.scalars(
                    select(t.Result.item_key).where(
                        t.Result.job_id == job_id, t.Result.status == ItemStatus.ERROR.value
                    )
                )
            )
            if not failed:
                return []
            chunks = s.scalars(
                select(t.Chunk).where(t.Chunk.job_id == job_id).order_by(t.Chunk.seq)
            )
            return [
                Item.model_validate(raw)
                for c in chunks
                for raw in c.items
                if raw.get("key") in failed and not raw.get("invalid")
            ]


def tenant_reads(ledger: Ledger) -> TenantReads:
    return TenantReads(ledger.engine)
