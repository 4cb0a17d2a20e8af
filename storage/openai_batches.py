"""OpenAI-compatible batches (issue 25): each one's row beside the job that runs it (removed
with that job), and how many of its requests have ended ok or not."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.orm import Session

from schemas.errors import OpenAIRequestError
from schemas.openai_requests import split_key
from schemas.states import ItemStatus
from storage import tables as t
from storage.clock import db_now, utc


@dataclass(frozen=True)
class BatchRow:
    id: str
    tenant: str
    job_id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    model: str
    metadata: dict[str, Any] | None
    requests: int
    created_at: datetime
    cancelled_at: datetime | None

    @classmethod
    def of(cls, row: t.OpenAIBatch) -> "BatchRow":
        return cls(
            row.id, row.tenant, row.job_id, row.input_file_id, row.endpoint,
            row.completion_window, row.model, row.batch_metadata, row.requests,
            utc(row.created_at) or row.created_at, utc(row.cancelled_at),
        )  # fmt: skip


def request_outcomes(pairs: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """(completed, failed) requests from their items' (key, status): a request whose items
    are all ok is completed; one with any other is failed."""
    failed: dict[str, bool] = {}
    for key, status in pairs:
        parts = split_key(key)
        request = key if parts.part else (parts.custom_id or key)
        failed[request] = failed.get(request, False) or status != ItemStatus.OK
    bad = sum(failed.values())
    return len(failed) - bad, bad


class OpenAIBatches:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, row: t.OpenAIBatch) -> BatchRow:
        with Session(self.engine) as s, s.begin():
            row.created_at = db_now(s)
            s.add(row)
            s.flush()
            return BatchRow.of(row)

    def get(self, tenant: str, batch_id: str) -> BatchRow:
        with Session(self.engine) as s:
            row = s.get(t.OpenAIBatch, batch_id)
            if row is None or row.tenant != tenant:
                raise OpenAIRequestError(f"no such batch: {batch_id}", "batch_id", status=404)
            return BatchRow.of(row)

    def listed(self, tenant: str, after: str | None, limit: int) -> list[BatchRow]:
        """The tenant's batches, newest first, from after the batch `after` (a page's last)."""
        query = select(t.OpenAIBatch).where(t.OpenAIBatch.tenant == tenant)
        with Session(self.engine) as s:
            if after:
                last = s.get(t.OpenAIBatch, after)
                if last is None or last.tenant != tenant:
                    raise OpenAIRequestError(f"no such batch: {after}", "after", status=404)
                query = query.where(
                    or_(
                        t.OpenAIBatch.created_at < last.created_at,
                        and_(
                            t.OpenAIBatch.created_at == last.created_at,
                            t.OpenAIBatch.id < last.id,
                        ),
                    )
                )
            rows = s.scalars(
                query.order_by(t.OpenAIBatch.created_at.desc(), t.OpenAIBatch.id.desc()).limit(
                    limit
                )
            )
            return [BatchRow.of(r) for r in rows]

    def mark_cancelled(self, batch_id: str) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(t.OpenAIBatch)
                .where(t.OpenAIBatch.id == batch_id, t.OpenAIBatch.cancelled_at.is_(None))
                .values(cancelled_at=db_now(s))
            )

    def outcomes(self, job_id: str) -> tuple[int, int]:
        """(completed, failed) requests of a batch whose requests may span several items."""
        with Session(self.engine) as s:
            pairs = s.execute(
                select(t.Result.item_key, t.Result.status).where(t.Result.job_id == job_id)
            )
            return request_outcomes((k, st) for k, st in pairs)
