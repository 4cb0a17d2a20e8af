"""Admission of a new job (issue 12, fair share): its tenant's limit on items in flight, and
the lane of its modality queue its chunks go to. Called by Ledger.create_job inside the
transaction that writes the job, so every front door (CLI, SDK, REST, events, enrichment,
the API's retry) goes through it.

Lanes. Each modality queue has `lanes` lanes (schemas/queues.py); workers consume them all
and kombu serves them round-robin within a priority step. A job goes to:
  1. the lane its tenant's unfinished jobs already use (a tenant's jobs stay in FIFO order
     among themselves, and one tenant occupies one lane);
  2. else the lane with the fewest outstanding chunks among those no other tenant's
     unfinished job uses;
  3. else (more active tenants than lanes) the least loaded lane, shared.
Only jobs whose tasks share the new job's queue count: lane 3 of `sluice.text` and lane 3 of
`sluice.image` are different queues.

Races. The in-flight check is exact: on PostgreSQL the transaction first takes a
transaction-scoped advisory lock of the tenant (released at commit), so two submits of one
tenant are admitted one after the other and the second sees the first's items; SQLite's
BEGIN IMMEDIATE (storage/engine.py) already serialises every writer. Lane choice takes no
lock across tenants: two tenants submitting at the same moment may pick the same free lane,
which costs fairness between those two until their jobs end, never correctness.
Lock order: this advisory lock is taken before any row lock and only here, so it adds no
deadlock to the ledger's job-then-chunk order.
"""

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from schemas.errors import QuotaExceededError, TooManyItemsError
from schemas.settings import Settings
from schemas.states import JobStatus
from storage import tables as t
from storage.clock import utc

# Admitted and unfinished: a job still `receiving` is admitted when its last batch is in
# (storage/receiving.py), so it counts neither against its tenant nor in a lane before then.
UNFINISHED = [s for s in JobStatus if s.admitted]
THROUGHPUT_WINDOW = timedelta(minutes=10)  # the tenant's recent pace, for Retry-After
RETRY_AFTER_BOUNDS = (5, 3600)
RETRY_AFTER_UNKNOWN = 60  # nothing of the tenant finished lately: no pace to go by


@dataclass(frozen=True)
class FairShare:
    """How jobs are admitted. The default (one lane, no limit) is the behaviour before fair
    share, for ledgers that never create jobs (workers) and for tests."""

    lanes: int = 1
    tenant_max_in_flight: int | None = None
    queue_of: Mapping[str, str] = field(default_factory=dict)  # task -> its modality queue

    @classmethod
    def from_settings(cls, settings: Settings, queue_of: Mapping[str, str]) -> "FairShare":
        return cls(settings.fair_lanes, settings.tenant_max_in_flight, dict(queue_of))

    def tasks_sharing_queue(self, task: str) -> list[str]:
        queue = self.queue_of.get(task)
        if queue is None:
            return [task]
        return sorted({name for name, q in self.queue_of.items() if q == queue} | {task})


def admit(s: Session, policy: FairShare, tenant: str, task: str, items: int, now: datetime) -> int:
    """Check the tenant's limit (QuotaExceededError) and return the job's lane."""
    limit = policy.tenant_max_in_flight
    if limit is not None:
        if items > limit:
            # never admitted, so not a 429 a client would retry forever: 413
            raise TooManyItemsError(f"a job of {items} items", limit, "SLUICE_TENANT_MAX_IN_FLIGHT")
        lock_tenant(s, tenant)
        in_flight = tenant_in_flight(s, tenant)
        if in_flight + items > limit:
            wait = retry_after(s, tenant, in_flight + items - limit, now)
            raise QuotaExceededError(
                f"tenant {tenant!r} has {in_flight} items in flight; {items} more would pass "
                f"its limit of {limit} (SLUICE_TENANT_MAX_IN_FLIGHT); retry in about {wait} s, "
                "when enough of them are done",
                wait,
            )
    return choose_lane(s, policy, tenant, task)


def lock_tenant(s: Session, tenant: str) -> None:
    """Serialise the admissions of one tenant until this transaction ends (PostgreSQL)."""
    if s.bind.dialect.name != "postgresql":  # type: ignore[union-attr]
        return  # SQLite: BEGIN IMMEDIATE holds the database's only write lock already
    digest = hashlib.blake2b(f"sluice-tenant:{tenant}".encode(), digest_size=8).digest()
    s.execute(
        text("SELECT pg_advisory_xact_lock(:key)"),
        {"key": int.from_bytes(digest, "big", signed=True)},
    )


def tenant_in_flight(s: Session, tenant: str) -> int:
    """Items of the tenant's unfinished jobs that have no outcome yet."""
    remaining = t.Job.total - t.Job.ok - t.Job.invalid - t.Job.error
    total = s.scalar(
        select(func.coalesce(func.sum(remaining), 0)).where(
            t.Job.tenant == tenant, t.Job.status.in_(UNFINISHED)
        )
    )
    return int(total or 0)


def retry_after(s: Session, tenant: str, excess: int, now: datetime) -> int:
    """Seconds until `excess` of the tenant's items in flight are likely done, at the pace
    its chunks finished over the last THROUGHPUT_WINDOW; within RETRY_AFTER_BOUNDS."""
    since = now - THROUGHPUT_WINDOW
    recent_jobs = select(t.Job.id).where(
        t.Job.tenant == tenant,
        (t.Job.status.in_(UNFINISHED)) | (t.Job.finished_at >= since),
    )
    done, first = s.execute(
        select(func.coalesce(func.sum(t.Chunk.size), 0), func.min(t.Chunk.claimed_at)).where(
            t.Chunk.job_id.in_(recent_jobs), t.Chunk.finished_at >= since
        )
    ).one()
    low, high = RETRY_AFTER_BOUNDS
    if not done or first is None:
        return RETRY_AFTER_UNKNOWN
    elapsed = max(1.0, (now - max(utc(first), since)).total_seconds())
    seconds = math.ceil(excess / (int(done) / elapsed))
    return min(high, max(low, seconds))


def choose_lane(s: Session, policy: FairShare, tenant: str, task: str) -> int:
    if policy.lanes <= 1:
        return 0
    outstanding = func.sum(t.Job.chunks_total - t.Job.chunks_done)
    rows = s.execute(
        select(t.Job.lane, t.Job.tenant, outstanding, func.max(t.Job.created_at))
        .where(t.Job.status.in_(UNFINISHED), t.Job.task.in_(policy.tasks_sharing_queue(task)))
        .group_by(t.Job.lane, t.Job.tenant)
    ).all()
    load = [0] * policy.lanes
    others: set[int] = set()
    own: list[tuple[object, int]] = []  # (newest job's creation, lane)
    for lane, owner, chunks, newest in rows:
        lane = int(lane) % policy.lanes
        load[lane] += int(chunks or 0)
        if owner == tenant:
            own.append((newest, lane))
        else:
            others.add(lane)
    if own:
        return max(own, key=lambda pair: str(pair[0]))[1]  # its newest job's lane
    free = [n for n in range(policy.lanes) if n not in others]
    candidates = free or list(range(policy.lanes))
    return min(candidates, key=lambda n: (load[n], n))
