"""Callbacks, the sending side: POST a signed JSON payload to a finished job's callback_url.

The body is signed with HMAC-SHA256 under the submitting API key's secret; the signature is in
the `X-Sluice-Signature: sha256=<hex>` header. A failed attempt (a network error or a non-2xx
answer) is retried by the sweeper with exponential backoff, up to SLUICE_CALLBACK_MAX_ATTEMPTS;
every attempt is recorded in `callback_deliveries`.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx

from schemas.settings import Settings
from schemas.states import CallbackState
from storage.apikeys import ApiKeys
from storage.callback_ledger import SIGNATURE_HEADER, Callbacks, PendingDelivery, sign
from storage.ledger import Ledger

log = logging.getLogger("sluice.callbacks")
EVENT_SOURCE = "event"  # jobs made by POST /v1/events carry their one result in the payload


def payload(ledger: Ledger, delivery: PendingDelivery) -> dict[str, Any]:
    view = ledger.job(delivery.job_id)
    body: dict[str, Any] = {
        "type": "job.finished",
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
        "sent_at": datetime.now(UTC).isoformat(),
    }
    if view.source == EVENT_SOURCE:
        body["result"] = next(iter(ledger.iter_results(view.id)), None)
    return body


def deliver_due(
    ledger: Ledger,
    settings: Settings,
    job_ids: list[str] | None = None,
    http: httpx.Client | None = None,
) -> dict[str, int]:
    """Try every due callback (or those of `job_ids`) once. Returns counts by new state."""
    callbacks = Callbacks(ledger.engine)
    keys = ApiKeys(ledger.engine)
    counts: dict[str, int] = {}
    due = callbacks.due(job_ids)
    if not due:
        return counts
    client = http or httpx.Client(timeout=settings.callback_timeout, follow_redirects=False)
    try:
        for job_id in due:
            delivery = callbacks.claim(job_id, hold_seconds=settings.callback_timeout * 3)
            if delivery is None:
                continue
            state = _attempt(ledger, callbacks, keys, settings, delivery, client)
            counts[state] = counts.get(state, 0) + 1
    finally:
        if http is None:
            client.close()
    return counts


def _attempt(
    ledger: Ledger,
    callbacks: Callbacks,
    keys: ApiKeys,
    settings: Settings,
    delivery: PendingDelivery,
    client: httpx.Client,
) -> str:
    status_code: int | None = None
    error: str | None = None
    try:
        body = json.dumps(payload(ledger, delivery), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sluice-callbacks/1",
            "X-Sluice-Job": delivery.job_id,
            "X-Sluice-Attempt": str(delivery.attempt),
        }
        secret = keys.secret(delivery.api_key_id) if delivery.api_key_id else None
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
            headers["X-Sluice-Key-Id"] = delivery.api_key_id or ""
        status_code = client.post(delivery.url, content=body, headers=headers).status_code
    except Exception as exc:  # any failure to deliver is retried later
        error = f"{type(exc).__name__}: {exc}"[:2000]
    state = callbacks.record(
        delivery, status_code, error, settings.callback_max_attempts, settings.callback_backoff
    )
    if state != CallbackState.DELIVERED:
        log.warning(
            "callback for job %s, attempt %d: %s (%s)",
            delivery.job_id,
            delivery.attempt,
            error or f"HTTP {status_code}",
            state,
        )
    return state
