"""OpenAI-compatible batches (issue 25): each one's row beside the job that runs it (removed
with that job), and how many of its requests have ended ok or not."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

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
    settled: tuple[int, int] | None = None  # (completed, failed) once its job ended

    @classmethod
    def of(cls, row: t.OpenAIBatch) -> "BatchRow":
        settled = None if row.completed is None else (row.completed, row.failed or 0)
        return cls(
            row.id, row.tenant, row.job_id, row.input_file_id, row.endpoint,
            row.completion_window, row.model, row.batch_metadata, row.requests,
            utc(row.created_at) or row.created_at, utc(row.cancelled_at), settled,
        )  # fmt: skip


def request_outcomes(
    pairs: Iterable[tuple[str, str]], requests: int, ended: bool
) -> tuple[int, int]:
    """(completed, failed) of a batch's `requests` from its items' (key, status), by the
    rule its output and error files follow: a request is completed when every one of its
    items ended ok; failed when one did not, or, once the batch `ended`, when one never ran
    (cancelled, expired)."""
    ok: dict[str, int] = {}
    size: dict[str, int] = {}
    failed: set[str] = set()
    for key, status in pairs:
        parts = split_key(key)
        request = parts.request(key)
        size[request] = parts.of
        if status == ItemStatus.OK:
            ok[request] = ok.get(request, 0) + 1
        else:
            failed.add(request)
    completed = sum(1 for r, n in ok.items() if r not in failed and n == size[r])
    return completed, (requests - completed) if ended else len(failed)


class OpenAIBatches:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def add(self, row: t.OpenAIBatch) -> BatchRow:
        with Session(self.engine) as s, s.begin():
            row.created_at = db_now(s)
            s.add(row)
            s.flush()
            return BatchRow.of(row)

    def get(self, tenant: str, batch_id: str) -> BatchRow:
        with self._reader() as s:
            row = s.get(t.OpenAIBatch, batch_id)
            if row is None or row.tenant != tenant:
                raise OpenAIRequestError(f"no such batch: {batch_id}", "batch_id", status=404)
            return BatchRow.of(row)

    def listed(self, tenant: str, after: str | None, limit: int) -> list[BatchRow]:
        """The tenant's batches, newest first, from after the batch `after` (a page's last)."""
        query = select(t.OpenAIBatch).where(t.OpenAIBatch.tenant == tenant)
        with self._reader() as s:
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

    def outcomes(self, batch: BatchRow, ended: bool) -> tuple[int, int]:
        """(completed, failed) requests of a batch whose requests may span several items,
        its rows' keys and statuses streamed (never all held)."""
        query = (
            select(t.Result.item_key, t.Result.status)
            .where(t.Result.job_id == batch.job_id)
            .execution_options(yield_per=5000)
        )
        with self._reader() as s:
            pairs = ((k, st) for k, st in s.execute(query))
            return request_outcomes(pairs, batch.requests, ended)

    def settle(self, batch_id: str, completed: int, failed: int) -> None:
        """The counts of a batch whose job ended: counted once, read from then on."""
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(t.OpenAIBatch)
                .where(t.OpenAIBatch.id == batch_id)
                .values(completed=completed, failed=failed)
            )
