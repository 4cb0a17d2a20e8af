"""What every fault scenario ends with: each item accounted for exactly once, read from the
ledger (the job's counts, its result rows, its chunks)."""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from producers import Client
from schemas.states import ChunkState, ItemStatus, JobStatus
from storage import tables as t


@dataclass(frozen=True)
class ChunkRow:
    id: str
    state: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None

    @property
    def owner_pid(self) -> int | None:
        """The pool process holding the lease (`host:pid:celery-task-id`)."""
        if not self.lease_owner:
            return None
        return int(self.lease_owner.rsplit(":", 2)[1])


def processed(client: Client, job_id: str) -> int:
    return client.status(job_id).counts.processed


def chunk_rows(client: Client, job_id: str) -> list[ChunkRow]:
    with client.ledger.engine.connect() as conn:
        rows = conn.execute(
            select(t.Chunk.id, t.Chunk.state, t.Chunk.attempts, t.Chunk.lease_owner,
                   t.Chunk.lease_expires_at, t.Chunk.last_error)
            .where(t.Chunk.job_id == job_id)
            .order_by(t.Chunk.seq)
        ).all()  # fmt: skip
    return [ChunkRow(*r) for r in rows]


def assert_every_item_once(
    client: Client, job_id: str, keys: set[str], status: JobStatus = JobStatus.SUCCEEDED
) -> dict[str, dict[str, Any]]:
    """The job ended with `status`; every key has exactly one result row and no other key
    has one; the counts agree with the rows; every chunk is settled. Returns the rows."""
    view = client.status(job_id)
    assert view.status == status, view
    rows = list(client.results(job_id))
    twice = [k for k, n in Counter(r["key"] for r in rows).items() if n > 1]
    assert not twice, f"items with more than one result: {twice[:10]}"
    by_key = {r["key"]: r for r in rows}
    assert set(by_key) == keys, (
        f"missing: {sorted(keys - set(by_key))[:10]}, unknown: {sorted(set(by_key) - keys)[:10]}"
    )
    with client.ledger.engine.connect() as conn:
        stored = conn.scalar(
            select(func.count()).select_from(t.Result).where(t.Result.job_id == job_id)
        )
    assert stored == len(keys)
    by_status = Counter(r["status"] for r in rows)
    counts = view.counts
    assert (counts.total, counts.processed) == (len(keys), len(keys)), counts
    assert (counts.ok, counts.invalid, counts.error) == (
        by_status[ItemStatus.OK],
        by_status[ItemStatus.INVALID],
        by_status[ItemStatus.ERROR],
    ), (counts, by_status)
    chunks = chunk_rows(client, job_id)
    unsettled = [c for c in chunks if not ChunkState(c.state).terminal]
    assert not unsettled, f"chunks not settled: {unsettled[:5]}"
    assert view.chunks_done == view.chunks_total == len(chunks), view
    return by_key
