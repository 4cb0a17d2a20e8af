"""Callbacks, the sending side: POST a signed JSON payload to a finished job's callback_url.

Sending is off the inference path. The worker that finishes a job, and the sweeper for due
retries, only `enqueue_due`: the ledger holds the callback as scheduled and a message goes to
the sluice.callbacks queue, which a pool of threads consumes (workers/callback_task.py,
started by `sluice worker` beside the inference pool). There, `attempt_delivery` makes one
attempt, bounded as a whole by SLUICE_CALLBACK_TIMEOUT (workers/callback_http.py), and records
it: a failure is retried by a later sweep after SLUICE_CALLBACK_BACKOFF x 2^n seconds, up to
SLUICE_CALLBACK_MAX_ATTEMPTS. The signature headers are Standard Webhooks'
(storage/callback_ledger.py).
"""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from schemas.queues import CALLBACK_QUEUE, DELIVER_CALLBACK
from schemas.settings import Settings
from schemas.states import CallbackState
from storage.apikeys import ApiKeys
from storage.callback_ledger import (
    ID_HEADER,
    LEGACY_SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Callbacks,
    PendingDelivery,
    message_id,
    sign_legacy,
    signature_headers,
)
from storage.clock import host_now
from storage.ledger import Ledger
from workers import callback_http
from workers.callback_http import Answer

log = logging.getLogger("sluice.callbacks")
EVENT_SOURCE = "event"  # jobs made by POST /v1/events carry their one result in the payload
EVENT = "job.finished"
# How long a scheduled callback waits for its message before a sweep sends another: longer
# than a busy callback queue takes to drain, short enough that a lost message is not forgotten.
QUEUED_HOLD_SECONDS = 600.0
SendCallback = Callable[[str, int], object]  # (job_id, attempts so far): one Celery message
Post = Callable[[str, bytes, dict[str, str], float, bool], Answer]


def payload(ledger: Ledger, delivery: PendingDelivery) -> dict[str, Any]:
    view = ledger.job(delivery.job_id)
    body: dict[str, Any] = {
        "type": EVENT,
        "job_id": view.id,
        "status": view.status.value,
        "task": view.task,
        "model": view.model,
        "model_version": view.model_version,
        "counts": view.as_dict()["counts"],
        "created_at": view.created_at.isoformat(),
        "finished_at": view.finished_at.isoformat() if view.finished_at else None,
        "parent_job_id": view.parent_job_id,
        "results_url": f"/v1/jobs/{view.id}/results",
        "attempt": delivery.attempt,
        "sent_at": host_now().isoformat(),
    }
    if view.source == EVENT_SOURCE:
        body["result"] = next(iter(ledger.iter_results(view.id)), None)
    return body


def enqueue_due(ledger: Ledger, send: SendCallback, job_ids: list[str] | None = None) -> int:
    """Schedule the due callbacks (or those of `job_ids`, when their jobs have finished) and
    send one message each to the callback queue. Makes no HTTP request. Returns how many."""
    scheduled = Callbacks(ledger.engine).schedule(QUEUED_HOLD_SECONDS, job_ids)
    for job_id, attempts in scheduled:
        send(job_id, attempts)
    return len(scheduled)


def callback_sender(app: Celery) -> SendCallback:
    """How the chunk task and the sweeper hand a callback to the callback pool (by name)."""

    def send(job_id: str, attempts: int) -> None:
        app.send_task(DELIVER_CALLBACK, args=[job_id, attempts], queue=CALLBACK_QUEUE)

    return send


def request_for(
    ledger: Ledger, settings: Settings, delivery: PendingDelivery
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt, signed with the submitting key's secret."""
    body = json.dumps(payload(ledger, delivery), separators=(",", ":")).encode()
    msg_id = message_id(delivery.job_id, EVENT)
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "sluice-callbacks/2",
        "X-Sluice-Job": delivery.job_id,
        "X-Sluice-Attempt": str(delivery.attempt),
        ID_HEADER: msg_id,  # for deduping, signed or not
        TIMESTAMP_HEADER: str(now),
    }
    secret = ApiKeys(ledger.engine).secret(delivery.api_key_id) if delivery.api_key_id else None
    if secret:
        headers.update(signature_headers(secret, msg_id, body, now))
        headers["X-Sluice-Key-Id"] = delivery.api_key_id or ""
        if settings.callback_legacy_signature:
            headers[LEGACY_SIGNATURE_HEADER] = sign_legacy(secret, body)
    return body, headers


def attempt_delivery(
    ledger: Ledger,
    settings: Settings,
    job_id: str,
    after_attempts: int | None = None,
    post: Post | None = None,
) -> str | None:
    """Make one attempt at a job's callback and record it; None when it is not ours to make
    (already delivered, given up, or attempted since it was scheduled)."""
    callbacks = Callbacks(ledger.engine)
    # Held past the attempt's deadline, so that nobody else tries while this one runs.
    delivery = callbacks.claim(job_id, settings.callback_timeout * 3, after_attempts)
    if delivery is None:
        return None
    body, headers = request_for(ledger, settings, delivery)
    send = post or callback_http.post  # looked up now: tests replace callback_http's seams
    started = time.monotonic()
    answer = send(
        delivery.url, body, headers, settings.callback_timeout, settings.callback_allow_private
    )
    state = callbacks.record(
        delivery,
        answer.status_code,
        answer.failure,
        settings.callback_max_attempts,
        settings.callback_backoff,
    )
    if state != CallbackState.DELIVERED:  # the full reason for the operator only
        log.warning(
            "callback for job %s, attempt %d, %.1fs: %s: %s (now %s)",
            delivery.job_id,
            delivery.attempt,
            time.monotonic() - started,
            answer.failure,
            answer.detail,
            state,
        )
    return state
