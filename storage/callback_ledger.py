"""Callbacks, the ledger side: which finished jobs still owe their caller a POST, a claim so
two senders never make the same attempt, the record of every attempt, and the signature.

The HTTP sender lives with the workers (workers/callback_delivery.py) and runs in its own
queue and pool (sluice.callbacks): the worker that finishes a job and the sweeper only
`schedule` a delivery here and send its Celery message.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): `webhook-id` (one per
job and event, the same on every retry), `webhook-timestamp` (unix seconds at send) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
bytes of the API key's callback secret. A receiver using the `standardwebhooks` package
verifies with `Webhook(standard_webhooks_key(secret))`.
"""

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from schemas.callback_failures import CallbackFailure
from schemas.states import CallbackState, JobStatus
from storage import tables as t
from storage.clock import db_now

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
LEGACY_SIGNATURE_HEADER = "X-Sluice-Signature"  # only with SLUICE_CALLBACK_LEGACY_SIGNATURE
TOLERANCE_SECONDS = 300  # what standardwebhooks accepts either side of its clock
FINISHED = [s.value for s in JobStatus if s.finished]


def message_id(job_id: str, event: str = "job.finished") -> str:
    """The webhook-id: stable for a job's event, so a receiver dedupes retries by it."""
    return f"msg_{job_id}_{event.replace('.', '_')}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secret: str, msg_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
    }


def verify(secret: str, body: bytes, headers: Mapping[str, str], now: float | None = None) -> bool:
    """What a receiver does: the timestamp is recent (a replay is refused), and one of the
    space-separated `v1,` signatures matches, compared in constant time."""
    found = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        found.get(h) for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    )
    if not (msg_id and stamp and signatures and stamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, msg_id, int(stamp), body)
    return any(hmac.compare_digest(expected, given) for given in signatures.split(" "))


def standard_webhooks_key(secret: str) -> str:
    """The key to give `standardwebhooks.Webhook(...)` for an API key's callback secret (that
    package base64-decodes what follows `whsec_`; Sluice signs with the secret's own bytes)."""
    return "whsec_" + base64.b64encode(secret.encode()).decode("ascii")


def sign_legacy(secret: str, body: bytes) -> str:
    """The old X-Sluice-Signature value: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class PendingDelivery:
    job_id: str
    url: str
    attempt: int  # 1 for the first try
    api_key_id: str | None


def shown_failure(stored: str | None, status_code: int | None) -> str | None:
    """The category a tenant sees for a stored last_error. Rows written before categories
    held exception text: that is never shown, only a category derived from it."""
    if stored is None:
        return None
    if stored in CallbackFailure.__members__.values():
        return stored
    if status_code is not None:
        return CallbackFailure.for_status(status_code).value
    return CallbackFailure.CONNECTION_ERROR.value


class Callbacks:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(engine.execution_options(readonly=True))

    def _due(self, s: Session, now: datetime, job_ids: list[str] | None, limit: int) -> list[str]:
        """Finished jobs with a callback_url not yet delivered whose next try is due (by the
        database's clock, as every hold: storage/clock.py)."""
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

    def schedule(
        self, hold_seconds: float, job_ids: list[str] | None = None, limit: int = 100
    ) -> list[tuple[str, int]]:
        """Take the due callbacks (or those of `job_ids`) for sending: each is held for
        `hold_seconds` so the next sweep does not queue it again while its message waits.
        Returns (job_id, attempts so far), the arguments of the delivery task: its claim
        succeeds only while the attempts are still that many, so a duplicate message is a
        no-op. If the message is lost, the hold runs out and a sweep schedules it again."""
        with self._session.begin() as s:
            now = db_now(s)
            ids = self._due(s, now, job_ids, limit)
            if not ids:
                return []
            urls = s.execute(select(t.Job.id, t.Job.callback_url).where(t.Job.id.in_(ids)))
            for job_id, url in urls.all():
                if url is not None:  # always, as _due asked for one
                    self._ensure_row(s, job_id, url, now)
            d = t.CallbackDelivery
            taken = s.execute(
                update(d)
                .where(
                    d.job_id.in_(ids), d.state == CallbackState.PENDING, d.next_attempt_at <= now
                )
                .values(next_attempt_at=now + timedelta(seconds=hold_seconds))
                .returning(d.job_id, d.attempts)
                .execution_options(synchronize_session=False)
            )
            return [(job_id, attempts) for job_id, attempts in taken.all()]

    @staticmethod
    def _ensure_row(s: Session, job_id: str, url: str, now: datetime) -> None:
        insert = postgresql.insert if s.bind.dialect.name == "postgresql" else sqlite.insert  # type: ignore[union-attr]
        s.execute(
            insert(t.CallbackDelivery)
            .values(
                job_id=job_id,
                url=url,
                state=CallbackState.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing()
        )

    def claim(
        self, job_id: str, hold_seconds: float, after_attempts: int | None = None
    ) -> PendingDelivery | None:
        """Take the next attempt at this job's callback, or None when it is not ours to make:
        done, given up, or (with `after_attempts`, from `schedule`) another attempt was made
        since it was scheduled; without it, when the next try is not due yet. The attempt is
        held for `hold_seconds`: if its sender dies, a sweep schedules it again after that."""
        with self._session.begin() as s:
            now = db_now(s)
            job = s.get(t.Job, job_id)
            if job is None or job.callback_url is None or job.status not in FINISHED:
                return None
            self._ensure_row(s, job_id, job.callback_url, now)
            d = t.CallbackDelivery
            ours = (
                d.attempts == after_attempts
                if after_attempts is not None
                else d.next_attempt_at <= now
            )
            attempts = s.execute(
                update(d)
                .where(d.job_id == job_id, d.state == CallbackState.PENDING, ours)
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
        failure: CallbackFailure | None,
        max_attempts: int,
        backoff: float,
    ) -> str:
        """Note how an attempt went: its HTTP status and, if it failed, only its category
        (what the tenant sees). Returns the new state (delivered | pending | failed)."""
        ok = failure is None and status_code is not None and 200 <= status_code < 300
        if ok:
            state = CallbackState.DELIVERED
        elif delivery.attempt >= max_attempts:
            state = CallbackState.FAILED
        else:
            state = CallbackState.PENDING
        if not ok and failure is None:
            failure = (
                CallbackFailure.for_status(status_code)
                if status_code is not None
                else CallbackFailure.CONNECTION_ERROR
            )
        delay = min(backoff * 2 ** (delivery.attempt - 1), 3600.0)
        with self._session.begin() as s:
            now = db_now(s)
            s.execute(
                update(t.CallbackDelivery)
                .where(t.CallbackDelivery.job_id == delivery.job_id)
                .values(
                    state=state,
                    last_status_code=status_code,
                    last_error=None if ok else failure,
                    delivered_at=now if ok else None,
                    next_attempt_at=now + timedelta(seconds=delay),
                )
            )
        return state

    def get(self, job_id: str) -> dict[str, Any] | None:
        """What the job's owner sees: the state, attempts, the last HTTP status and the last
        failure's category (schemas/callback_failures.py); never socket messages."""
        with self._reader() as s:
            row = s.get(t.CallbackDelivery, job_id)
            if row is None:
                return None
            return {
                "url": row.url,
                "state": row.state,
                "attempts": row.attempts,
                "last_status_code": row.last_status_code,
                "last_error": shown_failure(row.last_error, row.last_status_code),
                "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            }
