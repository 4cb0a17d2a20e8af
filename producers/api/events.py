"""/v1/events: one item for event-driven callers. It is a one-item job on the same queue (the
Ray actor batches it with other traffic); the caller waits for it up to `?wait=` or gets 202
(and, with `callback_url`, a signed callback when it ends)."""

import asyncio
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from producers.adapters import adapter_for
from producers.api.bodies import EventOut
from producers.api.jobs import submit
from producers.api.params import IdempotencyKey, Principal
from producers.api.responses import AUTHENTICATED, SUBMITTING, errors
from producers.api.services import Services, services
from producers.api.task_bodies import parse_body, validation_error
from schemas.errors import SluiceError
from storage.ledger import JobView

router = APIRouter(prefix="/v1", tags=["events"])
WAIT = r"^([0-9]{1,6}(?:\.[0-9]{1,3})?)(ms|s|m)?$"
DURATION = re.compile(WAIT)
EVENT_SOURCE = "event"  # workers/callbacks.py puts the one result of these in the payload
POLL = 0.02


def parse_wait(text: str | None, cap: float) -> float:
    """`5s`, `500ms`, `1m` or plain seconds; a longer wait than SLUICE_API_MAX_WAIT is cut to
    it (the answer is then 202 with the job's URL, as for any event not done in time)."""
    if not text:
        return 0.0
    match = DURATION.fullmatch(text)
    if not match:
        raise SluiceError(f"bad wait {text!r}: use e.g. 5s, 500ms or 1m")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2) or "s"]
    return min(value, cap)


async def job_after(svc: Services, tenant: str, job_id: str, timeout: float) -> JobView:
    """The job once it has ended, or as it is after `timeout` seconds (read every POLL)."""
    deadline = time.monotonic() + timeout
    view = await run_in_threadpool(svc.reads.job, tenant, job_id)
    while not view.status.finished and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        view = await run_in_threadpool(svc.reads.job, tenant, job_id)
    return view


@router.post(
    "/events",
    response_model=EventOut,
    status_code=200,
    responses={
        202: {
            "model": EventOut,
            "description": "not finished within ?wait",
            "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}},
        },
        **errors(*AUTHENTICATED, *SUBMITTING),
    },
)
async def post_event(
    request: Request,
    key: Principal,
    wait: Annotated[
        str | None,
        Query(description="e.g. 5s, 500ms; at most SLUICE_API_MAX_WAIT", pattern=WAIT),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Process one item. 200 with its result when it ends within `wait`; 202 otherwise.
    The body is an EventRequest (below)."""
    svc = services(request)
    try:
        body = parse_body(svc.bodies.event, await request.body(), svc.client.catalog.names())
    except ValidationError as exc:
        raise validation_error(exc) from None
    timeout = parse_wait(wait, svc.settings.api_max_wait)
    job_id = (
        await run_in_threadpool(svc.reads.by_idempotency_key, key.tenant, idempotency_key)
        if idempotency_key
        else None
    )
    if job_id is None:
        adapter = adapter_for(svc.client.catalog.get(body.task).modality)
        row = {**adapter.body_fields(body.model_dump(), 1), "key": body.key}
        items = await run_in_threadpool(
            svc.client.items_from_rows,
            list(row),
            iter([row]),
            body.task,
            model=body.model,
            key_column="key",
            source="event",
            tenant=key.tenant,
        )
        try:
            job_id = await run_in_threadpool(
                submit, svc, key, body, items, EVENT_SOURCE, idempotency_key
            )
        except IntegrityError:  # the same Idempotency-Key, sent concurrently: that event
            job_id = svc.reads.by_idempotency_key(key.tenant, idempotency_key or "")
            if job_id is None:
                raise
    view = await job_after(svc, key.tenant, job_id, timeout)
    out: dict[str, Any] = {
        "job_id": job_id,
        "status": view.status.value,
        "result": None,
        "status_url": f"/v1/jobs/{job_id}",
        "results_url": f"/v1/jobs/{job_id}/results",
    }
    if view.status.finished:
        out["result"] = await run_in_threadpool(
            lambda: next(iter(svc.client.ledger.iter_results(job_id)), None)
        )
        return JSONResponse(out, status_code=200)
    return JSONResponse(out, status_code=202, headers={"Location": out["status_url"]})
