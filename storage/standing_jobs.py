"""A pipeline's standing job and its inbox (issue 24): how events from a bus reach the ledger.

Each pipeline has one open job (`jobs.standing`), to which every micro-batch of events is
appended as one chunk. A standing job does not end while open, even when every chunk is done
between two events; its pipeline closes it (rolled over by count or age) and it then ends as
any job does. Appending records each event's key in `pipeline_inbox` in the same transaction
as its chunk, so:
- a message is acknowledged to its bus only after this commits (nothing acknowledged is lost);
- a redelivered message (the listener died before its ack) finds its key there and is
  acknowledged without work (never processed twice);
- the results still to publish are the inbox rows with a result and no `published_at`, in the
  order they arrived; one published and not yet marked (a crash in between) is published again
  with the same message id.

Lock order as in the ledger: the job row first.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import SluiceError
from schemas.jobs import Item, JobSpec
from schemas.states import ChunkState, ItemStatus, JobStatus
from schemas.storable import storable_items
from storage import json_codec
from storage import tables as t
from storage.admission import FairShare, admit
from storage.clock import db_now, utc
from storage.job_rows import new_job_row
from storage.ledger import end_by_counts, stored_items
from storage.receiving import name_chunk
from storage.result_rows import EXPLANATION_COLUMNS, RESULT_FIELDS, selected_result_row

KEYS_PER_LOOKUP = 1000
CANCELLED = "not run: the pipeline's job was cancelled before this event's turn"


@dataclass
class Appended:
    """What one append did: the chunk to send (None when nothing was new), the keys recorded,
    the keys seen before (redeliveries), and `closed` when the job no longer takes events."""

    chunk_id: str | None = None
    recorded: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    closed: bool = False


@dataclass(frozen=True)
class OpenJob:
    job_id: str
    opened_at: datetime
    total: int
    lane: int
    made_as: tuple[Any, ...] = ()  # what its items are run with (made_as): a change rolls over


def made_as(
    task: str, model: str, model_version: str, params: Any, explain: str
) -> tuple[Any, ...]:
    """What a pipeline's job runs its events with: a pipelines file edited since the job
    opened (another task, model or parameters) needs a new job, not the old one's settings."""
    return (task, model, model_version, json_codec.dumps(params), explain)


class StandingJobs:
    def __init__(self, engine: Engine, fair_share: FairShare | None = None) -> None:
        self.engine = engine
        self.fair_share = fair_share or FairShare()
        self._session = sessionmaker(engine, expire_on_commit=False)

    def current(self, pipeline: str, tenant: str) -> OpenJob | None:
        """The pipeline's open job, if it has one still open. A pipeline name is the
        deployment's: one run for another tenant is refused (SluiceError)."""
        with self._session() as s:
            state = s.get(t.PipelineJob, pipeline)
            if state is not None and state.tenant != tenant:
                raise SluiceError(
                    f"pipeline {pipeline!r} is tenant {state.tenant!r}'s: give this one another "
                    "name (a pipeline's events and results are kept under its name)"
                )
            job = s.get(t.Job, state.job_id) if state is not None and state.job_id else None
        if job is None or not job.standing or JobStatus(job.status).finished:
            return None
        return OpenJob(
            job.id,
            utc(state.opened_at or job.created_at),  # type: ignore[union-attr,arg-type]
            job.total,
            job.lane,
            made_as(job.task, job.model, job.model_version, job.params, job.explain_policy),
        )

    def open(self, pipeline: str, spec: JobSpec) -> OpenJob:
        """Close the pipeline's open job, if any, and open a new one (queued, no items)."""
        job_id = uuid.uuid4().hex
        with self._session.begin() as s:
            now = db_now(s)
            lane = admit(s, self.fair_share, spec.tenant, spec.task, 0, now)
            s.add(new_job_row(job_id, spec, now, JobStatus.QUEUED, lane, standing=True))
            s.flush()
            state = s.get(t.PipelineJob, pipeline, with_for_update=True)
            if state is None:
                state = t.PipelineJob(pipeline=pipeline, tenant=spec.tenant)
                s.add(state)
            elif state.tenant != spec.tenant:
                raise SluiceError(f"pipeline {pipeline!r} is tenant {state.tenant!r}'s")
            elif state.job_id is not None:
                self._close(s, state.job_id, now)
            state.job_id, state.opened_at = job_id, now
        shape = made_as(spec.task, spec.model, spec.model_version, spec.params, spec.explain)
        return OpenJob(job_id, now, 0, lane, shape)

    def close(self, job_id: str) -> None:
        """Take no more events into the job; it ends once its chunks are done."""
        with self._session.begin() as s:
            self._close(s, job_id, db_now(s))

    @staticmethod
    def _close(s: Session, job_id: str, now: datetime) -> None:
        job = s.get(t.Job, job_id, with_for_update=True, populate_existing=True)
        if job is None or not job.standing:
            return
        job.standing = False
        if not JobStatus(job.status).finished and job.chunks_done >= job.chunks_total:
            job.started_at = job.started_at or now
            end_by_counts(job, now)

    def append(self, pipeline: str, job_id: str, items: list[Item]) -> Appended:
        """Record new events as one chunk of the job, and their keys in the inbox, in one
        transaction. Keys already in the inbox (redeliveries) are left out."""
        with self._session.begin() as s:
            job = s.get(t.Job, job_id, with_for_update=True, populate_existing=True)
            if job is None or not job.standing or JobStatus(job.status).finished:
                return Appended(closed=True)
            now = db_now(s)
            items = storable_items(items)
            keys = [item.key for item in items]
            seen = known_keys(s, pipeline, keys)
            fresh = [item for item in items if item.key not in seen]
            repeated = [key for key in keys if key in seen]
            if not fresh:
                return Appended(repeated=repeated)
            chunk_id = name_chunk(job_id, job.chunks_total)
            s.execute(
                insert(t.Chunk),
                [
                    {
                        "id": chunk_id,
                        "job_id": job_id,
                        "seq": job.chunks_total,
                        "state": ChunkState.QUEUED,
                        "first_item": job.total,
                        "size": len(fresh),
                        "attempts": 0,
                        "enqueued_at": now,
                        "items": stored_items(fresh),
                    }
                ],
            )
            s.execute(
                insert(t.PipelineEvent),
                [
                    {"pipeline": pipeline, "event_key": item.key, "job_id": job_id,
                     "received_at": now}
                    for item in fresh
                ],
            )  # fmt: skip
            job.total += len(fresh)
            job.chunks_total += 1
        return Appended(chunk_id, [item.key for item in fresh], repeated)

    def ready(self, pipeline: str, limit: int = 500) -> list[dict[str, Any]]:
        """Results not yet published, oldest event first: each as the SDK reads a result,
        with its `job_id` and `model_version`. An event whose job was cancelled before it ran
        has no result: it comes as an `error` row saying so (else it would stay in flight)."""
        inbox = t.PipelineEvent
        columns = [getattr(t.Result, name) for name in RESULT_FIELDS]
        query = (
            select(inbox.job_id, t.Job.model_version, *columns, *EXPLANATION_COLUMNS)
            .join(t.Job, t.Job.id == inbox.job_id)
            .join(
                t.Result,
                and_(t.Result.job_id == inbox.job_id, t.Result.item_key == inbox.event_key),
            )
            .outerjoin(
                t.Explanation,
                and_(
                    t.Explanation.job_id == t.Result.job_id,
                    t.Explanation.item_key == t.Result.item_key,
                ),
            )
            .where(inbox.pipeline == pipeline, inbox.published_at.is_(None))
            .order_by(inbox.received_at)
            .limit(limit)
        )
        unrun = (
            select(inbox.event_key, inbox.job_id, t.Job.model_version)
            .join(t.Job, t.Job.id == inbox.job_id)
            .outerjoin(
                t.Result,
                and_(t.Result.job_id == inbox.job_id, t.Result.item_key == inbox.event_key),
            )
            .where(
                inbox.pipeline == pipeline,
                inbox.published_at.is_(None),
                t.Job.status == JobStatus.CANCELLED,
                t.Result.item_key.is_(None),
            )
            .limit(limit)
        )
        with self._session() as s:
            rows = [
                {
                    **selected_result_row(row),
                    "job_id": row.job_id,
                    "model_version": row.model_version,
                }
                for row in s.execute(query)
            ]
            rows += [
                {"key": key, "status": ItemStatus.ERROR.value, "output": None,
                 "error": CANCELLED, "job_id": job_id, "model_version": version}
                for key, job_id, version in s.execute(unrun)
            ]  # fmt: skip
        return rows

    def mark_published(self, pipeline: str, keys: list[str]) -> None:
        with self._session.begin() as s:
            now = db_now(s)
            for start in range(0, len(keys), KEYS_PER_LOOKUP):
                s.execute(
                    update(t.PipelineEvent)
                    .where(
                        t.PipelineEvent.pipeline == pipeline,
                        t.PipelineEvent.event_key.in_(keys[start : start + KEYS_PER_LOOKUP]),
                    )
                    .values(published_at=now)
                )

    def unpublished(self, pipeline: str) -> int:
        """Events recorded whose result is not yet published (in flight)."""
        with self._session() as s:
            return (
                s.scalar(
                    select(func.count()).where(
                        t.PipelineEvent.pipeline == pipeline, t.PipelineEvent.published_at.is_(None)
                    )
                )
                or 0
            )


def known_keys(s: Session, pipeline: str, keys: list[str]) -> set[str]:
    """Which of `keys` the pipeline recorded before."""
    seen: set[str] = set()
    for start in range(0, len(keys), KEYS_PER_LOOKUP):
        seen.update(
            s.scalars(
                select(t.PipelineEvent.event_key).where(
                    t.PipelineEvent.pipeline == pipeline,
                    t.PipelineEvent.event_key.in_(keys[start : start + KEYS_PER_LOOKUP]),
                )
            )
        )
    return seen


@dataclass(frozen=True)
class PipelineCounts:
    """A pipeline's figures as the ledger holds them (`sluice listen --status`, /metrics)."""

    pipeline: str
    job_id: str | None
    recorded: int
    in_flight: int
    published: int
    dead_lettered: int
    oldest_unpublished_s: float | None  # how long the oldest event in flight has waited

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def count_dead_letters(engine: Engine, pipeline: str, n: int) -> None:
    with Session(engine) as s, s.begin():
        s.execute(
            update(t.PipelineJob)
            .where(t.PipelineJob.pipeline == pipeline)
            .values(dead_lettered=t.PipelineJob.dead_lettered + n)
        )


def pipeline_counts(engine: Engine) -> list[PipelineCounts]:
    inbox = t.PipelineEvent
    with Session(engine) as s:
        now = db_now(s)
        figures = {
            row.pipeline: row
            for row in s.execute(
                select(
                    inbox.pipeline,
                    func.count().label("recorded"),
                    func.count(inbox.published_at).label("published"),
                ).group_by(inbox.pipeline)
            )
        }
        oldest = dict(
            s.execute(  # type: ignore[arg-type]
                select(inbox.pipeline, func.min(inbox.received_at))
                .where(inbox.published_at.is_(None))
                .group_by(inbox.pipeline)
            ).all()
        )
        states = list(s.scalars(select(t.PipelineJob).order_by(t.PipelineJob.pipeline)))
    out = []
    for state in states:
        row = figures.get(state.pipeline)
        recorded, published = (row.recorded, row.published) if row else (0, 0)
        first = oldest.get(state.pipeline)
        out.append(
            PipelineCounts(
                pipeline=state.pipeline,
                job_id=state.job_id,
                recorded=recorded,
                in_flight=recorded - published,
                published=published,
                dead_lettered=state.dead_lettered,
                oldest_unpublished_s=None if first is None else (now - utc(first)).total_seconds(),
            )
        )
    return out
