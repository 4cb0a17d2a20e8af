"""A new job's row from its JobSpec: the one place the spec's fields meet the table's, for a
job written whole (Ledger.create_job), while receiving (storage/receiving.py) or standing
(storage/standing_jobs.py)."""

from datetime import datetime, timedelta
from typing import Any

from schemas.jobs import JobSpec
from storage import tables as t


def new_job_row(
    job_id: str, spec: JobSpec, now: datetime, status: str, lane: int, **state: Any
) -> t.Job:
    """The row of a job with no item settled yet; `state`: counts and times it starts with
    (total, chunks_total, finished_at, standing...; zero or unset otherwise)."""
    return t.Job(
        id=job_id,
        task=spec.task,
        model=spec.model,
        model_version=spec.model_version,
        params=spec.params,
        explain_policy=spec.explain,
        priority=spec.priority,
        source=spec.source,
        status=status,
        ok=0,
        invalid=0,
        error=0,
        chunks_done=0,
        created_at=now,
        tenant=spec.tenant,
        api_key_id=spec.api_key_id,
        callback_url=spec.callback_url,
        parent_job_id=spec.parent_job_id,
        idempotency_key=spec.idempotency_key,
        lineage=spec.lineage,
        retention_s=spec.retention_s,
        lane=lane,
        deadline_at=None if spec.deadline_s is None else now + timedelta(seconds=spec.deadline_s),
        **{"total": 0, "chunks_total": 0, **state},
    )
