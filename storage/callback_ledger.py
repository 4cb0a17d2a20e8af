"""Callbacks, the ledger side: which finished jobs still owe their caller a POST, a claim so
two senders rarely send the same one at once, and the record of every attempt.

The HTTP sender lives with the workers (workers/callbacks.py): the worker that finishes a job
sends at once, and the sweeper (the `--beat` worker) retries with backoff.
"""

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from schemas.states import CallbackState, JobStatus
from storage import tables as t
from storage.clock import db_now

SIGNATURE_HEADER = "X-Sluice-Signature"
FINISHED = [s.value for s in JobStatus if s.finished]


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute over the raw body and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class PendingDelivery:
    job_id: str
    url: str
    attempt: int  # 1 for the first try
    api_key_id: str | None


class Callbacks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def due(self, job_ids: list[str] | None = None, limit: int = 100) -> list[str]:
        """Finished jobs with a callback_url not yet delivered whose next try is due (by the
        database's clock, as every hold: storage/clock.py)."""
        with self._reader() as s:
            return self._due(s, db_now(s), job_ids, limit)

    def _due(self, s: Session, now: datetime, job_ids: list[str] | None, limit: int) -> list[str]:
        d = t.CallbackDelivery
        query = (
            select(t.Job.id)
            .outerjoin(d, d.job_id == t.Job.id)
            .where(
                t.Job.callback_url.is_not(None),
                t.Job.status.in_(FINISHED),
                or_(
                    d.job_id.is_(None),
                    and_(d.state == CallbackState.PENDING, d.next_attempt_at <= now),
                ),
            )
            .limit(limit)
        )
        if job_ids is not None:
            query = query.where(t.Job.id.in_(job_ids))
        return list(s.scalars(query))

    def claim(self, job_id: str, hold_seconds: float) -> PendingDelivery | None:
        """Take the next attempt at this job's callback, or None when it is not due (done,
        given up, or another sender holds it for `hold_seconds`)."""
        with self._session.begin() as s:
            now = db_now(s)
            job = s.get(t.Job, job_id)
            if job is None or job.callback_url is None or job.status not in FINISHED:
                return None
            insert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
            s.execute(
                insert(t.CallbackDelivery)
                .values(
                    job_id=job_id,
                    url=job.callback_url,
                    state=CallbackState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                .on_conflict_do_nothing()
            )
            d = t.CallbackDelivery
            attempts = s.execute(
                update(d)
                .where(
                    d.job_id == job_id, d.state == CallbackState.PENDING, d.next_attempt_at <= now
                )
                .values(
                    attempts=d.attempts + 1, next_attempt_at=now + timedelta(seconds=hold_seconds)
                )
                .returning(d.attempts)
            ).scalar()
            if attempts is None:
                return None
            return PendingDelivery(job_id, job.callback_url, attempts, job.api_key_id)

    def record(
        self,
        delivery: PendingDelivery,
        status_code: int | None,
        error: str | None,
        max_attempts: int,
        backoff: float,
    ) -> str:
        """Note how an attempt went; returns the new state (delivered | pending | failed)."""
        ok = error is None and status_code is not None and 200 <= status_code < 300
        if ok:
            state = CallbackState.DELIVERED
        elif delivery.attempt >= max_attempts:
            state = CallbackState.FAILED
        else:
            state = CallbackState.PENDING
        delay = min(backoff * 2 ** (delivery.attempt - 1), 3600.0)
        with self._session.begin() as s:
            now = db_now(s)
            s.execute(
                update(t.CallbackDelivery)
                .where(t.CallbackDelivery.job_id == delivery.job_id)
                .values(
                    state=state,
                    last_status_code=status_code,
                    last_error=(error or (None if ok else f"HTTP {status_code}")),
                    delivered_at=now if ok else None,
                    next_attempt_at=now + timedelta(seconds=delay),
                )
            )
        return state

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._reader() as s:
            row = s.get(t.CallbackDelivery, job_id)
            if row is None:
                return None
            return {
                "url": row.url,
                "state": row.state,
                "attempts": row.attempts,
                "last_status_code": row.last_status_code,
                "last_error": row.last_error,
                "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            }
