"""What the console shows of one job beyond its counts (ops/console): its failures grouped by
message, its chunks' timeline, and its results filtered by status, label and score. Callers
check the job is the tenant's first (TenantReads.job)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from schemas.states import ChunkState, ItemStatus
from storage import tables as t
from storage.clock import db_now, utc
from storage.result_rows import result_row, results_after

SCAN_LIMIT = 5000  # rows read for one filtered page at most: a page never reads a whole job
TIMELINE_LIMIT = 200


@dataclass(frozen=True)
class ErrorGroup:
    status: str  # error or invalid
    message: str
    rows: int
    example_key: str


@dataclass(frozen=True)
class ChunkLine:
    seq: int
    state: str
    size: int
    attempts: int
    enqueued_at: datetime | None
    claimed_at: datetime | None
    finished_at: datetime | None
    last_error: str | None

    @property
    def phase(self) -> str:
        """queued, running, retried (a later attempt running or queued), done, dead-lettered,
        cancelled: what the timeline draws."""
        if self.state == ChunkState.DEAD:
            return "dead-lettered"
        return phase_of(self.state, self.attempts)


def phase_of(state: str, attempts: int) -> str:
    """A chunk's phase on the timeline: a queued chunk that was tried before, or a running
    one past its first try, is `retried`; a dead one `dead-lettered`."""
    if state == ChunkState.DEAD:
        return "dead-lettered"
    if (state == ChunkState.QUEUED and attempts >= 1) or (
        state == ChunkState.RUNNING and attempts > 1
    ):
        return "retried"
    return state


@dataclass(frozen=True)
class ResultFilter:
    status: str | None = None
    label: str | None = None
    score_min: float | None = None
    score_max: float | None = None

    @property
    def by_output(self) -> bool:
        return self.label is not None or self.score_min is not None or self.score_max is not None

    def admits(self, row: dict[str, Any]) -> bool:
        out = row.get("output") or {}
        if self.label is not None and str(out.get("label")) != self.label:
            return False
        raw: Any = out.get("score")
        score = float(raw) if _number(raw) else None
        if self.score_min is not None and (score is None or score < self.score_min):
            return False
        return self.score_max is None or (score is not None and score <= self.score_max)


@dataclass(frozen=True)
class ResultsPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None  # pass as `after` for the next page; None: no more rows
    scanned_to: int  # the last seq read (a filtered page may read past rows it does not show)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class JobInsight:
    def __init__(self, engine: Engine) -> None:
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def error_groups(self, job_id: str, limit: int = 20) -> list[ErrorGroup]:
        failed = (ItemStatus.ERROR.value, ItemStatus.INVALID.value)
        query = (
            select(t.Result.status, t.Result.error, func.count(), func.min(t.Result.item_key))
            .where(t.Result.job_id == job_id, t.Result.status.in_(failed))
            .group_by(t.Result.status, t.Result.error)
            .order_by(func.count().desc(), t.Result.error)
            .limit(limit)
        )
        with self._reader() as s:
            return [
                ErrorGroup(status, error or "(no message)", int(rows), example)
                for status, error, rows, example in s.execute(query)
            ]

    def timeline(
        self, job_id: str, limit: int = TIMELINE_LIMIT
    ) -> tuple[dict[str, int], list[ChunkLine]]:
        """Chunks per phase (counted in the database), and the first `limit` chunks."""
        tried = (t.Chunk.attempts > 1).label("tried")
        began = (t.Chunk.attempts >= 1).label("began")
        with self._reader() as s:
            counts = s.execute(
                select(t.Chunk.state, began, tried, func.count())
                .where(t.Chunk.job_id == job_id)
                .group_by(t.Chunk.state, began, tried)
            ).all()
            chunks = s.execute(
                select(
                    t.Chunk.seq,
                    t.Chunk.state,
                    t.Chunk.size,
                    t.Chunk.attempts,
                    t.Chunk.enqueued_at,
                    t.Chunk.claimed_at,
                    t.Chunk.finished_at,
                    t.Chunk.last_error,
                )  # fmt: skip
                .where(t.Chunk.job_id == job_id)
                .order_by(t.Chunk.seq)
                .limit(limit)
            ).all()
        phases: dict[str, int] = {}
        for state, was_begun, was_tried, n in counts:
            phase = phase_of(state, 2 if was_tried else 1 if was_begun else 0)
            phases[phase] = phases.get(phase, 0) + int(n)
        lines = [
            ChunkLine(seq, state, size, attempts or 0, utc(enq), utc(claimed), utc(fin), err)
            for seq, state, size, attempts, enq, claimed, fin, err in chunks
        ]
        return phases, lines

    def results(self, job_id: str, after: int, limit: int, where: ResultFilter) -> ResultsPage:
        """Up to `limit` rows with seq > after that pass the filter, in input order. Status
        filters in the database; label and score on the rows read, at most SCAN_LIMIT of
        them per page (then the page ends early, with a cursor to go on)."""
        rows: list[dict[str, Any]] = []
        last = after
        scan = SCAN_LIMIT if where.by_output else limit  # status filters in the database
        for seq, row in self._rows(job_id, after, where.status, scan):
            last = seq
            if where.admits(row):
                rows.append(row)
                if len(rows) == limit:
                    break
        more = bool(self._first_seq(job_id, last, where.status))
        return ResultsPage(rows, last if more else None, last)

    def _rows(
        self, job_id: str, after: int, status: str | None, limit: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        query = results_after(job_id, after, status).limit(limit)
        with self._reader() as s:
            for result, expl in s.execute(query):
                yield result.seq, result_row(result, expl)

    def _first_seq(self, job_id: str, after: int, status: str | None) -> int | None:
        query = select(t.Result.seq).where(t.Result.job_id == job_id, t.Result.seq > after)
        if status is not None:
            query = query.where(t.Result.status == status)
        with self._reader() as s:
            return s.scalar(query.order_by(t.Result.seq).limit(1))


def recent_throughput(engine: Engine, seconds: int) -> list[tuple[str, int]]:
    """Rows per task whose chunks ended in the last `seconds` (database time), every tenant:
    the operator's view of what the system has just done."""
    reader = sessionmaker(engine.execution_options(readonly=True))
    with reader() as s:
        since = db_now(s) - timedelta(seconds=seconds)
        query = (
            select(t.Job.task, func.sum(t.Chunk.size))
            .join(t.Job, t.Job.id == t.Chunk.job_id)
            .where(t.Chunk.finished_at >= since)
            .group_by(t.Job.task)
            .order_by(t.Job.task)
        )
        return [(task, int(rows or 0)) for task, rows in s.execute(query)]
