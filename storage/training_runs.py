"""Training runs: the only code that changes a run's state.

A run is leased like a chunk: the worker holding the lease trains it, and a run whose lease ran
out (its worker died) is sent again by the sweeper. Each public method is one transaction.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.orm import sessionmaker

from schemas.errors import RunNotFoundError
from schemas.states import RunStatus
from schemas.training import RUN_PREFIX
from storage import tables as t
from storage.clock import db_now, host_now, utc

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)
LIVE = (QUEUED, RUNNING)


@dataclass(frozen=True)
class RunView:
    id: str
    name: str
    task: str
    tenant: str
    status: str
    spec: dict[str, Any]
    progress: dict[str, Any]
    attempts: int
    error: str | None
    model_version: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status not in LIVE


def _view(run: t.TrainingRun) -> RunView:
    return RunView(
        id=run.id,
        name=run.name,
        task=run.task,
        tenant=run.tenant or "default",
        status=run.status,
        spec=dict(run.spec or {}),
        progress=dict(run.progress or {}),
        attempts=run.attempts,
        error=run.error,
        model_version=run.model_version,
        created_at=utc(run.created_at) or host_now(),
        started_at=utc(run.started_at),
        finished_at=utc(run.finished_at),
        lease_owner=run.lease_owner,
        lease_expires_at=utc(run.lease_expires_at),
    )


class TrainingRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        # Reads skip SQLite's write lock (see storage.engine), so `sluice status` never waits.
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def create(self, spec: dict[str, Any], name: str, task: str, tenant: str = "default") -> str:
        run_id = RUN_PREFIX + uuid.uuid4().hex[:24]
        with self._session.begin() as s:
            now = db_now(s)
            s.add(
                t.TrainingRun(
                    id=run_id,
                    name=name,
                    task=task,
                    tenant=tenant,
                    status=QUEUED,
                    spec=spec,
                    progress={},
                    attempts=0,
                    enqueued_at=now,
                    created_at=now,
                )
            )
        return run_id

    def get(self, run_id: str) -> RunView:
        with self._reader() as s:
            run = s.get(t.TrainingRun, run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            return _view(run)

    def is_cancelled(self, run_id: str) -> bool:
        return self.get(run_id).status == CANCELLED

    def holds(self, run_id: str, owner: str) -> bool:
        """Whether `owner` still runs it: running, under its lease (not cancelled, not taken
        over by another worker after its lease ran out)."""
        run = self.get(run_id)
        return run.status == RUNNING and run.lease_owner == owner

    # -- the training worker ----------------------------------------------------------------

    def claim(self, run_id: str, owner: str, lease_seconds: float) -> RunView | None:
        """Take the lease unless the run is finished or another owner's lease is still live.

        One conditional UPDATE decides, so two workers can never both win (PostgreSQL row
        lock; SQLite's BEGIN IMMEDIATE)."""
        with self._session.begin() as s:
            now = db_now(s)
            res = s.execute(
                update(t.TrainingRun)
                .where(
                    t.TrainingRun.id == run_id,
                    t.TrainingRun.status.in_(LIVE),
                    or_(
                        t.TrainingRun.status == QUEUED,
                        t.TrainingRun.lease_owner.is_(None),
                        t.TrainingRun.lease_owner == owner,
                        t.TrainingRun.lease_expires_at.is_(None),
                        t.TrainingRun.lease_expires_at < now,
                    ),
                )
                .values(
                    status=RUNNING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=t.TrainingRun.attempts + 1,
                )
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                return None
            s.execute(
                update(t.TrainingRun)
                .where(t.TrainingRun.id == run_id, t.TrainingRun.started_at.is_(None))
                .values(started_at=now)
            )
            run = s.get(t.TrainingRun, run_id, populate_existing=True)
            assert run is not None
            return _view(run)

    def renew(self, run_id: str, owner: str, lease_seconds: float) -> bool:
        return self._update(run_id, _held_by(owner), lease_for=lease_seconds)

    def update_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        """Replace the progress (written by the rank-0 process, which holds no lease)."""
        self._update(run_id, t.TrainingRun.status == RUNNING, progress=progress)

    def finish(self, run_id: str, owner: str, model_version: int) -> bool:
        return self._update(
            run_id,
            _held_by(owner),
            status=SUCCEEDED,
            model_version=model_version,
            stamp=("finished_at",),
            lease_owner=None,
            lease_expires_at=None,
        )

    def fail(self, run_id: str, owner: str | None, error: str) -> bool:
        """End a run as failed. Without an owner (cancel paths, the sweeper giving up on a
        run out of attempts) any live run is failed; a finished one is never changed."""
        guard = t.TrainingRun.status.in_(LIVE) if owner is None else _held_by(owner)
        return self._update(
            run_id,
            guard,
            status=FAILED,
            error=error[:4000],
            stamp=("finished_at",),
            lease_owner=None,
            lease_expires_at=None,
        )

    def release(self, run_id: str, owner: str, error: str) -> bool:
        """Give a run back to the queue after a failed attempt; the error is kept."""
        return self._update(
            run_id,
            _held_by(owner),
            status=QUEUED,
            error=error[:4000],
            stamp=("enqueued_at",),
            lease_owner=None,
            lease_expires_at=None,
        )

    def _update(
        self,
        run_id: str,
        guard: Any,
        *,
        stamp: tuple[str, ...] = (),
        lease_for: float | None = None,
        **values: Any,
    ) -> bool:
        """One guarded UPDATE. `stamp`: columns set to the database's time now; `lease_for`:
        a lease of that many seconds from it (storage.clock: one clock for every host)."""
        with self._session.begin() as s:
            if stamp or lease_for is not None:
                now = db_now(s)
                values.update(dict.fromkeys(stamp, now))
                if lease_for is not None:
                    values["lease_expires_at"] = now + timedelta(seconds=lease_for)
            res = s.execute(
                update(t.TrainingRun).where(t.TrainingRun.id == run_id, guard).values(**values)
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    # -- control and the sweeper --------------------------------------------------------------

    def cancel(self, run_id: str) -> RunView:
        """Stop a queued or running run; a finished one is left as it is."""
        with self._session.begin() as s:
            s.execute(
                update(t.TrainingRun)
                .where(t.TrainingRun.id == run_id, t.TrainingRun.status.in_(LIVE))
                .values(
                    status=CANCELLED, finished_at=db_now(s), lease_owner=None, lease_expires_at=None
                )
            )
            run = s.get(t.TrainingRun, run_id, populate_existing=True)
            if run is None:
                raise RunNotFoundError(run_id)
            return _view(run)

    def due_for_resend(self, requeue_after: float) -> list[str]:
        """Runs whose message may be lost (queued longer than `requeue_after` seconds) or
        whose worker died (running with an expired lease)."""
        with self._reader() as s:
            now = db_now(s)
            return list(
                s.scalars(
                    select(t.TrainingRun.id)
                    .where(
                        or_(_stale_queued(now - timedelta(seconds=requeue_after)), _expired(now))
                    )
                    .order_by(t.TrainingRun.created_at)
                )
            )

    def mark_enqueued(self, run_ids: list[str]) -> list[str]:
        """Record that these runs were sent again; a run with an expired lease goes back to
        queued (its worker is gone). Runs claimed or finished meanwhile are left alone."""
        if not run_ids:
            return []
        with self._session.begin() as s:
            now = db_now(s)
            return list(
                s.scalars(
                    update(t.TrainingRun)
                    .where(
                        t.TrainingRun.id.in_(run_ids),
                        or_(t.TrainingRun.status == QUEUED, _expired(now)),
                    )
                    .values(status=QUEUED, enqueued_at=now, lease_owner=None, lease_expires_at=None)
                    .returning(t.TrainingRun.id)
                )
            )

    # Last: inside the class body, `list` names this method from here on.
    def list(self, limit: int = 20, tenant: str | None = None) -> list[RunView]:
        """The newest runs first."""
        query = (
            select(t.TrainingRun)
            .order_by(t.TrainingRun.created_at.desc(), t.TrainingRun.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(t.TrainingRun.tenant == tenant)
        with self._reader() as s:
            return [_view(r) for r in s.scalars(query)]


def _held_by(owner: str) -> Any:
    return and_(t.TrainingRun.status == RUNNING, t.TrainingRun.lease_owner == owner)


def _expired(now: datetime) -> Any:
    return and_(
        t.TrainingRun.status == RUNNING,
        or_(t.TrainingRun.lease_expires_at.is_(None), t.TrainingRun.lease_expires_at < now),
    )


def _stale_queued(before: datetime) -> Any:
    return and_(
        t.TrainingRun.status == QUEUED,
        or_(t.TrainingRun.enqueued_at.is_(None), t.TrainingRun.enqueued_at < before),
    )
